"""What an approver reads before deciding: the promotion, what it changes against what runs in
the environment now (component by component, full digests), the gates, the approvals so far and
the release's digests. The page fetches; this widget only shows what it is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from stella_core.errors import NotFoundError
from stella_desk.chrome import Card, label
from stella_desk.evidence.detail import SubjectLine
from stella_desk.promotions.detail import approval_html, signature_pill
from stella_desk.promotions.diff import tag_text, tags_for
from stella_desk.promotions.gates import GateList
from stella_desk.promotions.status import GREEN, RED, set_status_pill, status_pill, when_text
from stella_desk.promotions.why import approvers_text
from stella_desk.theme import mono_font

if TYPE_CHECKING:
    from stella_core.bootstrap import Stella
    from stella_core.promotions.model import Promotion
    from stella_core.releases.model import Release

ADDED = "#15803d"
REMOVED = "#b91c1c"
CHANGED = "#a15c04"


@dataclass(frozen=True)
class Case:
    """Everything an approver reads about one promotion, read together."""

    promotion: Promotion
    changes: dict[str, Any]
    why: dict[str, Any]
    # component -> tag, as the release recorded it (None: pinned by digest alone), for the
    # release being promoted and for the one running in the environment now.
    tags: dict[str, str | None] = field(default_factory=dict)
    current_tags: dict[str, str | None] = field(default_factory=dict)


# --- worker-thread functions (called inside `ops.run`) ---------------------------------------
def read_case(stella: Stella, promotion_id: UUID) -> Case:
    promotion = stella.promotions.get(promotion_id)
    changes = stella.promotions.changes(promotion_id)
    release = _release(stella, promotion.release)
    current_name = changes.get("current_release")
    current = _release(stella, current_name) if current_name else None
    current_components = {
        **dict(changes.get("removed") or {}),
        **{c: m["from"] for c, m in (changes.get("changed") or {}).items()},
        **{c: promotion.components[c] for c in changes.get("unchanged") or []},
    }
    return Case(
        promotion,
        changes,
        stella.promotions.why(promotion_id),
        tags_for(promotion.components, release),
        tags_for(current_components, current),
    )


def _release(stella: Stella, name: str) -> Release | None:
    try:
        return stella.releases.get_release(name)
    except NotFoundError:
        return None  # tags are a help to read digests: without them the digests still show


def digest_label(digest: str, colour: str | None = None) -> QLabel:
    widget = label(digest, "digest", selectable=True)
    widget.setFont(mono_font(8.5))
    if colour:
        widget.setStyleSheet(f"color: {colour};")
    return widget


def tag_label(text: str) -> QLabel:
    """A digest's tag: what people call the image; the digest is what runs."""
    widget = label(text, "muted")
    widget.setStyleSheet("font-size: 11px;")
    widget.setToolTip("the tag each digest was resolved from when its release was created")
    return widget


class ChangeList(QWidget):
    """Component by component: added, changed (from → to), removed, and what stays."""

    def __init__(
        self,
        changes: dict[str, Any],
        parent: QWidget | None = None,
        *,
        tags: dict[str, str | None] | None = None,
        current_tags: dict[str, str | None] | None = None,
    ) -> None:
        super().__init__(parent)
        self.changes = changes
        self.tags = tags or {}
        self.current_tags = current_tags or {}
        self.lines: list[tuple[str, str]] = []  # (mark, component), in the order shown
        self.tag_lines: list[tuple[str, str | None, str | None]] = []  # (component, now, after)
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(6)
        environment = changes.get("environment")
        current = changes.get("current_release")
        added = dict(changes.get("added") or {})
        changed = dict(changes.get("changed") or {})
        removed = dict(changes.get("removed") or {})
        unchanged = list(changes.get("unchanged") or [])
        if current is None:
            self.summary = label(
                f"Nothing runs in {environment} yet: every component arrives new "
                "(see the release's digests)."
            )
        else:
            count = len(added) + len(changed) + len(removed)
            self.summary = label(
                f"{environment} runs <b>{current}</b> now; this release changes "
                f"{count} component{'s' if count != 1 else ''}."
            )
        self.summary.setWordWrap(True)
        column.addWidget(self.summary)
        if current is None:
            return  # every digest is in the release's own list: no need to show them twice
        grid = QGridLayout()
        grid.setHorizontalSpacing(10)
        grid.setVerticalSpacing(2)
        grid.setColumnStretch(2, 1)
        row = 0
        for name, move in changed.items():
            pair = [self.current_tags.get(name), self.tags.get(name)]
            row = self._line(grid, row, "~", name, CHANGED, [move["from"], move["to"]], pair)
        for name, digest in added.items():
            row = self._line(grid, row, "+", name, ADDED, [digest], [self.tags.get(name)])
        for name, digest in removed.items():
            row = self._line(grid, row, "-", name, REMOVED, [digest], [self.current_tags.get(name)])
        column.addLayout(grid)
        if unchanged:
            kept = [f"{name} {tag_text(self.tags.get(name))}" for name in unchanged]
            self.unchanged = label(f"Unchanged: {', '.join(unchanged)}", "muted")
            self.unchanged.setToolTip("\n".join(kept))
            column.addWidget(self.unchanged)

    def _line(
        self,
        grid: QGridLayout,
        row: int,
        mark: str,
        name: str,
        colour: str,
        digests: list[str],
        tags: list[str | None],
    ) -> int:
        self.lines.append((mark, name))
        sign = label(mark)
        sign.setStyleSheet(f"color: {colour}; font-weight: 700; font-size: 14px;")
        title = label(name)
        title.setStyleSheet("font-weight: 600;")
        grid.addWidget(sign, row, 0, Qt.AlignmentFlag.AlignTop)
        # The tags under the name: what people call the images, beside what runs (digests).
        name_cell = QWidget()
        name_box = QVBoxLayout(name_cell)
        name_box.setContentsMargins(0, 0, 0, 0)
        name_box.setSpacing(0)
        name_box.addWidget(title)
        if len(digests) == 2:
            name_box.addWidget(tag_label(f"{tag_text(tags[0])} → {tag_text(tags[1])}"))
        else:
            name_box.addWidget(tag_label(tag_text(tags[0])))
        grid.addWidget(
            name_cell, row, 1, 2 if len(digests) == 2 else 1, 1, Qt.AlignmentFlag.AlignTop
        )
        if len(digests) == 2:
            before = digest_label(digests[0], "#8a93a8")
            before.setStyleSheet("color: #8a93a8; text-decoration: line-through;")
            before.setToolTip("what runs there now: replaced")
            after = digest_label(digests[1])
            after.setToolTip("what this release brings")
            grid.addWidget(before, row, 2)
            grid.addWidget(after, row + 1, 2)
            self.tag_lines.append((name, tags[0], tags[1]))
            return row + 2
        grid.addWidget(digest_label(digests[0]), row, 2)
        self.tag_lines.append((name, tags[0], tags[0]) if mark == "-" else (name, None, tags[0]))
        return row + 1


class CaseView(QWidget):
    copied = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.case: Case | None = None
        self.subjects: list[SubjectLine] = []
        self.change_list: ChangeList | None = None
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.stack = QStackedWidget()
        outer.addWidget(self.stack)
        self.hint = label("", "muted")
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hint.setWordWrap(True)
        self.stack.addWidget(self.hint)
        self._scroll = QScrollArea()
        self._scroll.setWidgetResizable(True)
        self._scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.stack.addWidget(self._scroll)
        self.show_hint("Select a promotion to see what it changes and decide it.")

    def show_hint(self, text: str) -> None:
        self.case = None
        self.subjects = []
        self.change_list = None
        self.hint.setText(text)
        self.stack.setCurrentWidget(self.hint)

    def show_loading(self, what: str) -> None:
        if self.case is None:  # the previous case stays up until the next arrives: no flash
            self.hint.setText(f"Reading {what}…")
            self.stack.setCurrentWidget(self.hint)

    def show_case(self, case: Case) -> None:
        self.case = case
        p = case.promotion
        page = QWidget()
        column = QVBoxLayout(page)
        column.setContentsMargins(0, 0, 4, 4)
        column.setSpacing(10)

        card = Card()
        card.body.setSpacing(6)
        head = QHBoxLayout()
        head.setSpacing(10)
        self.title = label(f"{p.release} → {p.environment}")
        self.title.setStyleSheet("font-size: 17px; font-weight: 600;")
        head.addWidget(self.title)
        self.pill = status_pill(p.status.value)
        head.addWidget(self.pill, 0, Qt.AlignmentFlag.AlignVCenter)
        head.addStretch(1)
        self.progress = label(f"{p.progress()} approvals")
        self.progress.setStyleSheet("font-size: 14px; font-weight: 600;")
        head.addWidget(self.progress)
        card.body.addLayout(head)
        sub = f"requested by {p.requested_by} · {when_text(p.requested_at)}"
        if p.separation_of_duties:
            sub += " · separation of duties: the requester cannot decide it"
        self.subline = label(sub, "muted", selectable=True)
        self.subline.setWordWrap(True)
        card.body.addWidget(self.subline)
        if p.reason:
            self.reason = label(f"“{p.reason}”", selectable=True)
            self.reason.setWordWrap(True)
            card.body.addWidget(self.reason)

        # What the second approver weighs first: who signed already, then what changes.
        for section in (self._approvals, self._change, self._gates, self._digests):
            card.body.addSpacing(4)
            section(card, case)
        column.addWidget(card)
        column.addStretch(1)

        old = self._scroll.takeWidget()
        self._scroll.setWidget(page)
        if old is not None:
            old.deleteLater()
        self.stack.setCurrentWidget(self._scroll)

    def _approvals(self, card: Card, case: Case) -> None:
        p = case.promotion
        card.body.addWidget(label(f"APPROVALS · {p.progress()}", "section"))
        if not p.approvals:
            card.body.addWidget(label("No decision yet: yours would be the first.", "muted"))
        for approval in p.approvals:
            row = QHBoxLayout()
            row.setSpacing(8)
            ok = approval.decision == "approve"
            mark = label("✓" if ok else "✕")
            mark.setStyleSheet(f"color: {(GREEN if ok else RED)[0]}; font-weight: 700;")
            row.addWidget(mark, 0, Qt.AlignmentFlag.AlignTop)
            text = label(approval_html(approval), selectable=True)
            text.setTextFormat(Qt.TextFormat.RichText)
            text.setWordWrap(True)
            row.addWidget(text, 1)
            row.addWidget(signature_pill(approval.signature_ok), 0, Qt.AlignmentFlag.AlignTop)
            card.body.addLayout(row)
        self.approvers = label(approvers_text(case.why), "muted")
        self.approvers.setWordWrap(True)
        card.body.addWidget(self.approvers)

    def _change(self, card: Card, case: Case) -> None:
        environment = case.promotion.environment
        card.body.addWidget(label(f"CHANGE IN {environment.upper()}", "section"))
        self.change_list = ChangeList(case.changes, tags=case.tags, current_tags=case.current_tags)
        card.body.addWidget(self.change_list)

    def _gates(self, card: Card, case: Case) -> None:
        card.body.addWidget(label("GATES, AS THEY STAND NOW", "section"))
        self.gates = GateList()
        self.gates.set_gates(case.why.get("gates") or [])
        card.body.addWidget(self.gates)

    def _digests(self, card: Card, case: Case) -> None:
        card.body.addWidget(label("RELEASE DIGESTS", "section"))
        grid = QGridLayout()
        grid.setHorizontalSpacing(12)
        grid.setVerticalSpacing(4)
        grid.setColumnStretch(1, 1)
        components = sorted(case.promotion.components.items())
        self.subjects = [
            SubjectLine(
                name, digest, grid, row, self.copied.emit, tag=tag_text(case.tags.get(name))
            )
            for row, (name, digest) in enumerate(components)
        ]
        card.body.addLayout(grid)

    def update_status(self, promotion: Promotion) -> None:
        """A decision taken here: show its outcome before the next read."""
        if self.case is not None and self.case.promotion.id == promotion.id:
            set_status_pill(self.pill, promotion.status.value)
            self.progress.setText(f"{promotion.progress()} approvals")
