"""What a promotion changes in its environment, component by component, with tags beside the
digests: the wizard shows it before the request, the approver reads it before deciding.

Pure: releases in, lines out (the core's `promotions.changes` says the same in digests alone).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QGridLayout, QLabel, QVBoxLayout, QWidget

from stella_desk.chrome import label
from stella_desk.theme import mono_font

if TYPE_CHECKING:
    from stella_core.releases.model import Release

ADDED, REMOVED, CHANGED, UNCHANGED = "added", "removed", "changed", "unchanged"
MARKS = {ADDED: "+", REMOVED: "-", CHANGED: "~", UNCHANGED: "="}
COLOURS = {ADDED: "#15803d", REMOVED: "#b91c1c", CHANGED: "#a15c04", UNCHANGED: "#687086"}


@dataclass(frozen=True)
class ComponentChange:
    name: str
    kind: str  # added | removed | changed | unchanged
    before: str | None  # the digest running there now
    after: str | None  # the digest the release brings
    before_tag: str | None = None
    after_tag: str | None = None


def tags_of(release: Release | None) -> dict[str, str | None]:
    return {c.name: c.tag for c in release.components} if release is not None else {}


def digests_of(release: Release | None) -> dict[str, str]:
    return {c.name: c.digest for c in release.components} if release is not None else {}


def component_changes(current: Release | None, new: Release) -> list[ComponentChange]:
    """Changed first, then added, removed and unchanged; by name within each."""
    before, after = digests_of(current), digests_of(new)
    old_tags, new_tags = tags_of(current), tags_of(new)
    lines = []
    for name in sorted(before.keys() | after.keys()):
        if name not in before:
            kind = ADDED
        elif name not in after:
            kind = REMOVED
        else:
            kind = CHANGED if before[name] != after[name] else UNCHANGED
        lines.append(
            ComponentChange(
                name,
                kind,
                before.get(name),
                after.get(name),
                old_tags.get(name),
                new_tags.get(name),
            )
        )
    order = {CHANGED: 0, ADDED: 1, REMOVED: 2, UNCHANGED: 3}
    return sorted(lines, key=lambda c: (order[c.kind], c.name))


def short_digest(digest: str | None) -> str:
    """`sha256:` and the first 12 hex digits: enough to tell digests apart at a glance."""
    if not digest:
        return ""
    algorithm, _, hexdigits = digest.partition(":")
    return f"{algorithm}:{hexdigits[:12]}…" if hexdigits else digest


def tag_text(tag: str | None) -> str:
    return f":{tag}" if tag else "(no tag)"


def summary(changes: list[ComponentChange], environment: str, current: str | None) -> str:
    if current is None:
        return (
            f"Nothing runs in {environment} yet: all {len(changes)} component"
            f"{'s' if len(changes) != 1 else ''} arrive new."
        )
    counts = {kind: sum(1 for c in changes if c.kind == kind) for kind in MARKS}
    if counts[UNCHANGED] == len(changes):
        return f"{environment} runs {current} now, with the same digests: nothing changes."
    words = {
        CHANGED: "{n} changed",
        ADDED: "{n} new",
        REMOVED: "{n} removed",
        UNCHANGED: "{n} unchanged",
    }
    parts = [words[kind].format(n=n) for kind, n in counts.items() if n]
    return f"{environment} runs {current} now. Components: {', '.join(parts)}."


class ChangeTable(QWidget):
    """The compact form (the wizard): one line per component, tag → tag with short digests;
    the full digests are in each line's tooltip."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.changes: list[ComponentChange] = []
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(4)
        self.summary = label("", "muted")
        self.summary.setWordWrap(True)
        column.addWidget(self.summary)
        self._grid_host = QWidget()
        self._grid = QGridLayout(self._grid_host)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setHorizontalSpacing(10)
        self._grid.setVerticalSpacing(2)
        self._grid.setColumnStretch(4, 1)
        column.addWidget(self._grid_host)

    def clear(self, text: str = "") -> None:
        self.changes = []
        self.summary.setText(text)
        while self._grid.count():
            item = self._grid.takeAt(0)
            widget = item.widget() if item is not None else None
            if widget is not None:
                widget.hide()
                widget.deleteLater()

    def show_changes(
        self, changes: list[ComponentChange], environment: str, current: str | None
    ) -> None:
        self.clear(summary(changes, environment, current))
        self.changes = list(changes)
        mono = mono_font(8.5)
        for row, change in enumerate(changes):
            colour = COLOURS[change.kind]
            mark = label(MARKS[change.kind])
            mark.setStyleSheet(f"color: {colour}; font-weight: 700;")
            name = label(change.name)
            name.setStyleSheet("font-weight: 600;")
            kind = label(change.kind)
            kind.setStyleSheet(f"color: {colour};")
            if change.kind == CHANGED:
                tags = f"{tag_text(change.before_tag)} → {tag_text(change.after_tag)}"
                digests = f"{short_digest(change.before)} → {short_digest(change.after)}"
            elif change.kind == REMOVED:
                tags, digests = tag_text(change.before_tag), short_digest(change.before)
            else:
                tags, digests = tag_text(change.after_tag), short_digest(change.after)
            tag = label(tags)
            digest = label(digests, "digest")
            digest.setFont(mono)
            tip = "\n".join(
                part
                for part in (
                    f"now: {change.before}" if change.before else "",
                    f"after: {change.after}" if change.after else "",
                )
                if part
            )
            for col, widget in enumerate((mark, name, kind, tag, digest)):
                widget.setToolTip(tip)
                self._grid.addWidget(widget, row, col, Qt.AlignmentFlag.AlignVCenter)

    def line_texts(self) -> list[str]:
        """Each line as read: 'mark name kind tags digests'."""
        lines = []
        for row in range(self._grid.rowCount()):
            cells = []
            for col in range(5):
                item = self._grid.itemAtPosition(row, col)
                widget = item.widget() if item is not None else None
                if isinstance(widget, QLabel):
                    cells.append(widget.text())
            if cells:
                lines.append(" ".join(cells))
        return lines


def tags_for(components: Mapping[str, str], release: Release | None) -> dict[str, str | None]:
    """Tags of `components` (name -> digest) as `release` recorded them, where the digests match."""
    recorded = {c.name: c for c in release.components} if release is not None else {}
    return {
        name: recorded[name].tag if name in recorded and recorded[name].digest == digest else None
        for name, digest in components.items()
    }
