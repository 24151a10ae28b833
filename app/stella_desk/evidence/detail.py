"""One packet: whether it verifies, who signed it, where it sits in the chain, what it claims.

The left side is the summary an auditor reads first (badge, signer, chain position, subjects
with their full digests, replay); the right side is the predicate as signed and the raw bundle.
The page fetches and replays; this widget only shows what it is given.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFontMetrics, QGuiApplication
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QStackedWidget,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from stella_desk.chrome import Card, label
from stella_desk.evidence.table import local_time, type_words
from stella_desk.theme import mono_font

GOOD = ("#15803d", "#e2f6e8")
BAD = ("#b91c1c", "#fde6e6")

DETAIL_STYLE = """
QFrame[kind="replay-same"] {
    background: #effaf2; border: 1px solid #bfe5cb; border-radius: 8px;
}
QFrame[kind="replay-differs"] {
    background: #fdeeee; border: 1px solid #f3c4c4; border-radius: 8px;
}
QFrame[kind="replay-same"] QLabel, QFrame[kind="replay-differs"] QLabel {
    background: transparent;
}
QPlainTextEdit[kind="json"] {
    background: palette(base); border: 1px solid palette(mid); border-radius: 8px;
    selection-background-color: palette(highlight); selection-color: palette(highlighted-text);
}
QTabWidget::pane { border: none; }
QTabBar::tab {
    background: transparent; color: #687086; padding: 5px 12px; border: none;
    border-bottom: 2px solid transparent; font-weight: 600;
}
QTabBar::tab:selected { color: #4f46e5; border-bottom: 2px solid #4f46e5; }
"""


def pill(text: str, colours: tuple[str, str]) -> QLabel:
    widget = label(text)
    set_pill(widget, text, colours)
    return widget


def set_pill(widget: QLabel, text: str, colours: tuple[str, str]) -> None:
    fg, bg = colours
    widget.setText(text)
    # Inline: the colour depends on the value, which a static sheet cannot express.
    widget.setStyleSheet(
        f"color: {fg}; background: {bg}; border-radius: 10px; padding: 2px 10px;"
        "font-size: 12px; font-weight: 600;"
    )


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def claimed_statement(bundle_text: str) -> dict[str, Any] | None:
    """The statement a bundle carries, decoded without checking it (for a packet that failed
    verification: the person still wants to see what it claims, marked as unverified)."""
    try:
        bundle = json.loads(bundle_text)
        payload = base64.b64decode(bundle["dsseEnvelope"]["payload"], validate=True)
        value = json.loads(payload)
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    return value if isinstance(value, dict) else None


def bundle_pretty(bundle_text: str) -> str:
    try:
        return pretty_json(json.loads(bundle_text))
    except ValueError:
        return bundle_text


def json_view(name: str) -> QPlainTextEdit:
    view = QPlainTextEdit()
    view.setObjectName(name)
    view.setProperty("kind", "json")
    view.setReadOnly(True)
    view.setFont(mono_font(9))
    view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
    view.setTextInteractionFlags(
        Qt.TextInteractionFlag.TextSelectableByMouse
        | Qt.TextInteractionFlag.TextSelectableByKeyboard
    )
    return view


def short_value(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class SubjectLine:
    """One subject: its name and full digest, never elided, with a copy button."""

    def __init__(
        self,
        name: str,
        digest: str,
        grid: QGridLayout,
        row: int,
        on_copied: Callable[[str], None],
        *,
        tag: str | None = None,
    ) -> None:
        self.name = name
        self.digest_text = digest
        self._on_copied = on_copied
        title = label(name or "—")
        title.setStyleSheet("font-weight: 600;")
        self.digest = label(digest, "digest", selectable=True)
        self.digest.setFont(mono_font(8.5))
        self.digest.setMinimumWidth(QFontMetrics(self.digest.font()).horizontalAdvance(digest) + 4)
        self.copy_button = QToolButton()
        self.copy_button.setProperty("kind", "copy")
        self.copy_button.setText("Copy")
        self.copy_button.setToolTip(f"Copy {digest}")
        self.copy_button.clicked.connect(lambda _checked=False: self.copy())
        align = Qt.AlignmentFlag.AlignVCenter
        self.tag: QLabel | None = None
        if tag is None:
            grid.addWidget(title, row, 0, align)
        else:  # a release's component: its tag under its name (the digest keeps the width)
            cell = QWidget()
            box = QVBoxLayout(cell)
            box.setContentsMargins(0, 0, 0, 0)
            box.setSpacing(0)
            self.tag = label(tag, "muted")
            self.tag.setStyleSheet("font-size: 11px;")
            self.tag.setToolTip("the tag this digest was resolved from")
            box.addWidget(title)
            box.addWidget(self.tag)
            grid.addWidget(cell, row, 0, align)
        grid.addWidget(self.digest, row, 1, align)
        grid.addWidget(self.copy_button, row, 2, align)

    def copy(self) -> str:
        QGuiApplication.clipboard().setText(self.digest_text)
        self._on_copied(self.digest_text)
        return self.digest_text


class PacketDetail(QWidget):
    copied = Signal(str)
    replay_requested = Signal(object)  # the packet id (UUID)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setStyleSheet(DETAIL_STYLE)
        self.detail: dict[str, Any] | None = None
        self.subjects: list[SubjectLine] = []
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.stack = QStackedWidget()
        outer.addWidget(self.stack)

        self.hint = label("", "muted")
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hint.setWordWrap(True)
        self.stack.addWidget(self.hint)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.setChildrenCollapsible(False)
        self._scroll = QScrollArea()
        self._scroll.setWidgetResizable(True)
        self._scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        split.addWidget(self._scroll)

        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        predicate_page = QWidget()
        column = QVBoxLayout(predicate_page)
        column.setContentsMargins(0, 6, 0, 0)
        column.setSpacing(4)
        self.predicate_type = label("", "muted", selectable=True)
        # Never wider than the pane: a long line here would squeeze the summary to nothing.
        self.predicate_type.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        column.addWidget(self.predicate_type)
        self.predicate = json_view("predicateText")
        column.addWidget(self.predicate, 1)
        self.tabs.addTab(predicate_page, "Predicate")
        bundle_page = QWidget()
        column = QVBoxLayout(bundle_page)
        column.setContentsMargins(0, 6, 0, 0)
        column.setSpacing(4)
        row = QHBoxLayout()
        self.bundle_note = label("", "muted", selectable=True)
        self.bundle_note.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        row.addWidget(self.bundle_note, 1)
        self.copy_bundle = QPushButton("Copy bundle")
        self.copy_bundle.setToolTip("Copy the bundle exactly as stored (the bytes that are hashed)")
        self.copy_bundle.clicked.connect(lambda _checked=False: self._copy_bundle())
        row.addWidget(self.copy_bundle)
        column.addLayout(row)
        self.bundle = json_view("bundleText")
        column.addWidget(self.bundle, 1)
        self.tabs.addTab(bundle_page, "Bundle")
        split.addWidget(self.tabs)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        # The summary gets what a full digest and its copy button need; the JSON scrolls.
        split.setSizes([670, 350])
        self.stack.addWidget(split)
        self._split = split
        self.show_hint(
            "Select a packet to see who signed it, where it sits in the chain and what it claims."
        )

    # --- states ----------------------------------------------------------------------------
    def show_hint(self, text: str) -> None:
        self.detail = None
        self.subjects = []
        self.hint.setProperty("kind", "muted")
        self.hint.setText(text)
        self.stack.setCurrentWidget(self.hint)

    def show_loading(self, seq: int) -> None:
        # The previous packet stays up until the next one arrives: no flash of an empty panel.
        if self.detail is None:
            self.hint.setText(f"Reading packet #{seq}…")
            self.stack.setCurrentWidget(self.hint)

    def show_packet(self, detail: dict[str, Any]) -> None:
        self.detail = detail
        self.subjects = []
        page = QWidget()
        column = QVBoxLayout(page)
        column.setContentsMargins(0, 0, 2, 4)
        column.setSpacing(8)
        card = Card()
        card.body.setContentsMargins(18, 14, 18, 14)
        card.body.setSpacing(8)
        card.body.addLayout(self._heading(detail))
        self.subline = label(self._subline(detail), "muted", selectable=True)
        self.subline.setWordWrap(True)
        card.body.addWidget(self.subline)
        self.problem = label(detail.get("problem") or "", "error", selectable=True)
        self.problem.setWordWrap(True)
        self.problem.setVisible(not detail["verified"])
        card.body.addWidget(self.problem)
        card.body.addLayout(self._facts(detail))
        card.body.addSpacing(4)
        card.body.addWidget(label("SUBJECTS", "section"))
        grid = QGridLayout()
        grid.setHorizontalSpacing(14)
        grid.setVerticalSpacing(6)
        for row, (name, digest) in enumerate(self._subjects(detail)):
            self.subjects.append(SubjectLine(name, digest, grid, row, self.copied.emit))
        grid.setColumnStretch(1, 1)
        card.body.addLayout(grid)
        self.replay_box = QFrame()
        box = QVBoxLayout(self.replay_box)
        box.setContentsMargins(12, 8, 12, 8)
        box.setSpacing(4)
        self.replay_text = label(selectable=True)
        self.replay_text.setWordWrap(True)
        self.replay_text.setTextFormat(Qt.TextFormat.RichText)
        box.addWidget(self.replay_text)
        self.replay_box.hide()
        card.body.addWidget(self.replay_box)
        column.addWidget(card)
        column.addStretch(1)
        old = self._scroll.takeWidget()
        self._scroll.setWidget(page)
        if old is not None:
            old.deleteLater()

        statement = detail.get("statement")
        verified = statement is not None
        if statement is None:
            statement = claimed_statement(detail.get("bundle") or "")
        predicate = (statement or {}).get("predicate")
        kind = (statement or {}).get("predicateType") or detail.get("predicate_type") or ""
        self.predicate_type.setText(
            kind if verified else f"{kind}  (not verified: shown as the bundle claims it)"
        )
        self.predicate.setPlainText(
            pretty_json(predicate) if predicate is not None else "(the bundle cannot be decoded)"
        )
        bundle_text = detail.get("bundle") or ""
        self.bundle_note.setText(
            f"Sigstore bundle v0.3 · {len(bundle_text.encode()):,} bytes, shown indented"
        )
        self.bundle_note.setToolTip(f"stored as {detail.get('bundle_digest', '')}")
        self.bundle.setPlainText(bundle_pretty(bundle_text))
        self.stack.setCurrentIndex(1)

    def _heading(self, detail: dict[str, Any]) -> QHBoxLayout:
        row = QHBoxLayout()
        row.setSpacing(10)
        title = label(f"{type_words(detail['type']).capitalize()} packet #{detail['seq']}")
        title.setObjectName("packetTitle")
        title.setStyleSheet("font-size: 17px; font-weight: 600;")
        row.addWidget(title)
        verified = bool(detail["verified"])
        self.badge = pill("verified" if verified else "not verified", GOOD if verified else BAD)
        self.badge.setToolTip(
            "The signature verifies against the signer's registered key"
            if verified
            else "The signature does not verify: see the problem below"
        )
        row.addWidget(self.badge, 0, Qt.AlignmentFlag.AlignVCenter)
        row.addStretch(1)
        self.replay_button = QPushButton("Replay")
        self.replay_button.setToolTip(
            "Evaluate the packet again from its recorded inputs and compare the outcome"
        )
        self.replay_button.clicked.connect(
            lambda _checked=False: self.replay_requested.emit(UUID(detail["id"]))
        )
        row.addWidget(self.replay_button)
        return row

    @staticmethod
    def _subline(detail: dict[str, Any]) -> str:
        created = local_time(datetime.fromisoformat(detail["created_at"]))
        return f"recorded {created} by {detail['actor']}"

    def _facts(self, detail: dict[str, Any]) -> QGridLayout:
        grid = QGridLayout()
        grid.setHorizontalSpacing(14)
        grid.setVerticalSpacing(6)
        signer = detail.get("signer") or {}
        owner = signer.get("owner")
        if owner:
            kind = signer.get("owner_kind") or ""
            who = owner if kind != "person" else f"{owner} (personal key)"
        else:
            who = "a key not registered in this tenant"
        self.signer_owner = label(who)
        self.signer_key = label(detail["signer_key_id"], "digest", selectable=True)
        self.signer_key.setFont(mono_font(8.5))
        signed = QVBoxLayout()
        signed.setSpacing(1)
        signed.addWidget(self.signer_owner)
        signed.addWidget(self.signer_key)
        self.chain = label(self.chain_html(detail))
        self.chain.setWordWrap(True)
        self.packet_id = label(detail["id"], "digest", selectable=True)
        self.packet_id.setFont(mono_font(8.5))
        self.bundle_digest = label(f"bundle {detail['bundle_digest']}", "digest", selectable=True)
        self.bundle_digest.setFont(mono_font(8.5))
        self.bundle_digest.setToolTip("The digest of the bundle's bytes, as the chain records it")
        packet = QVBoxLayout()
        packet.setSpacing(1)
        packet.addWidget(self.packet_id)
        packet.addWidget(self.bundle_digest)
        rows: list[tuple[str, QWidget | QVBoxLayout]] = [("SIGNED BY", signed)]
        about = self._about(detail)
        if about is not None:
            rows.append(("ABOUT", about))
        rows += [("CHAIN", self.chain), ("PACKET", packet)]
        for row, (name, value) in enumerate(rows):
            grid.addWidget(label(name, "section"), row, 0, Qt.AlignmentFlag.AlignTop)
            if isinstance(value, QVBoxLayout):
                grid.addLayout(value, row, 1)
            else:
                grid.addWidget(value, row, 1)
        grid.setColumnStretch(1, 1)
        return grid

    @staticmethod
    def _about(detail: dict[str, Any]) -> QVBoxLayout | None:
        """What the packet is about: release and environment, then the run or promotion."""
        words = []
        if detail.get("release"):
            words.append(f"release <b>{_escape(detail['release'])}</b>")
        if detail.get("environment"):
            words.append(f"environment <b>{_escape(detail['environment'])}</b>")
        ids = [
            f"{name} {detail[key]}"
            for name, key in (("run", "run_id"), ("promotion", "promotion_id"))
            if detail.get(key)
        ]
        if not words and not ids:
            return None
        column = QVBoxLayout()
        column.setSpacing(1)
        if words:
            column.addWidget(label(" · ".join(words), selectable=True))
        for text in ids:
            line = label(text, "digest", selectable=True)
            line.setFont(mono_font(8.5))
            column.addWidget(line)
        return column

    @staticmethod
    def chain_html(detail: dict[str, Any]) -> str:
        link = (
            f'<span style="color: {GOOD[0]}">link ok</span>'
            if detail["chain_ok"]
            else f'<span style="color: {BAD[0]}">link does not recompute</span>'
        )
        covered = detail.get("checkpoint")
        sealed = (
            f"sealed by checkpoint {covered}"
            if covered is not None
            else '<span style="color: #a15c04">not yet sealed</span>'
        )
        return f"#{detail['seq']} · {link} · {sealed}"

    @staticmethod
    def chain_text(detail: dict[str, Any]) -> str:
        link = "link ok" if detail["chain_ok"] else "link does not recompute"
        covered = detail.get("checkpoint")
        sealed = f"sealed by checkpoint {covered}" if covered is not None else "not yet sealed"
        return f"#{detail['seq']} · {link} · {sealed}"

    @staticmethod
    def _subjects(detail: dict[str, Any]) -> list[tuple[str, str]]:
        statement = detail.get("statement")
        if statement is not None:
            return [
                (str(s.get("name", "")), "sha256:" + str(s.get("digest", {}).get("sha256", "")))
                for s in statement.get("subject", [])
            ]
        return [("", d) for d in detail.get("subject_digests", [])]

    # --- replay ----------------------------------------------------------------------------
    def show_replaying(self) -> None:
        self.replay_button.setEnabled(False)
        self._replay_result("replay-same", "Replaying from the recorded inputs…")

    def show_replay(self, result: dict[str, Any]) -> None:
        self.replay_button.setEnabled(True)
        notes = [p.get("note") for p in result.get("packets", []) if p.get("note")]
        if result.get("same"):
            text = "<b>Replay: same outcome.</b> Evaluated again from the recorded inputs, it "
            text += "reaches what the packet records."
            if notes:
                text += " " + _escape(" ".join(notes))
            self._replay_result("replay-same", text)
            return
        differences = result.get("differences", [])
        lines = [
            f"<b>Replay differs</b> in {len(differences)} place"
            f"{'s' if len(differences) != 1 else ''}:"
        ]
        for d in differences:
            lines.append(
                f"• {_escape(str(d.get('kind')))} <b>{_escape(str(d.get('name')))}</b>: "
                f"recorded {_escape(short_value(d.get('recorded')))}, "
                f"replayed {_escape(short_value(d.get('replayed')))}"
            )
        lines.extend(_escape(n) for n in notes)
        self._replay_result("replay-differs", "<br>".join(lines))

    def show_replay_error(self, message: str) -> None:
        self.replay_button.setEnabled(True)
        self._replay_result("replay-differs", f"<b>Replay failed:</b> {_escape(message)}")

    def _replay_result(self, kind: str, html: str) -> None:
        self.replay_box.setProperty("kind", kind)
        self.replay_box.style().unpolish(self.replay_box)
        self.replay_box.style().polish(self.replay_box)
        colour = GOOD[0] if kind == "replay-same" else BAD[0]
        self.replay_text.setStyleSheet(f"color: {colour};")
        self.replay_text.setText(html)
        self.replay_box.show()

    def replay_summary(self) -> str:
        return self.replay_text.text() if not self.replay_box.isHidden() else ""

    # --- copying ---------------------------------------------------------------------------
    def _copy_bundle(self) -> None:
        if self.detail is None:
            return
        QGuiApplication.clipboard().setText(self.detail.get("bundle") or "")
        self.copied.emit("the bundle")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
