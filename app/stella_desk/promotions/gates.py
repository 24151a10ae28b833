"""Gate by gate: a symbol for pass, fail or pending, the reasons in words, and what would turn
it into a pass. The wizard's preview, the why-blocked panel, a promotion's detail and the inbox
all show gates with this one widget."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QGridLayout, QVBoxLayout, QWidget

from stella_desk.chrome import label
from stella_desk.promotions.status import GATE_LOOKS, escape, gate_reasons, gate_title


class GateRow:
    """One gate's lines in the list's grid; kept so tests read what a person reads."""

    def __init__(self, gate: Mapping[str, Any], grid: QGridLayout, row: int) -> None:
        self.gate = str(gate.get("gate") or "")
        self.status = str(gate.get("status") or "")
        symbol, colour, word = GATE_LOOKS.get(self.status, ("?", "#4b5563", self.status))
        self.symbol = label(symbol)
        self.symbol.setStyleSheet(f"color: {colour}; font-size: 15px; font-weight: 700;")
        self.symbol.setToolTip(word)
        self.symbol.setFixedWidth(20)
        self.reasons = gate_reasons(gate)
        self.unblock = [str(u) for u in gate.get("unblock") or []]
        lines = [
            f"<b>{escape(gate_title(gate))}</b> "
            f'<span style="color: {colour}; font-weight: 600;">{escape(word)}</span>'
        ]
        for code, message in self.reasons:
            code_html = f' <span style="color: #8a93a8;">{escape(code)}</span>' if code else ""
            lines.append(f"{escape(message)}{code_html}")
        for step in self.unblock:
            lines.append(f'<span style="color: #4f46e5;">To unblock: {escape(step)}</span>')
        self.text = label("<br>".join(lines), selectable=True)
        self.text.setTextFormat(Qt.TextFormat.RichText)
        self.text.setWordWrap(True)
        grid.addWidget(self.symbol, row, 0, Qt.AlignmentFlag.AlignTop)
        grid.addWidget(self.text, row, 1)

    def plain(self) -> str:
        """What the row says, as plain text (tests, tooltips)."""
        parts = [f"{self.gate} {self.status}"]
        parts += [message for _code, message in self.reasons]
        parts += [f"To unblock: {u}" for u in self.unblock]
        return "\n".join(parts)


class GateList(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows: list[GateRow] = []
        self._box = QVBoxLayout(self)
        self._box.setContentsMargins(0, 0, 0, 0)
        self._inner: QWidget | None = None
        self.note = label("", "muted")
        self.note.setWordWrap(True)
        self._box.addWidget(self.note)
        self.note.hide()

    def set_gates(self, gates: Sequence[Mapping[str, Any]]) -> None:
        self.clear()
        inner = QWidget()
        grid = QGridLayout(inner)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setHorizontalSpacing(8)
        grid.setVerticalSpacing(10)
        grid.setColumnStretch(1, 1)
        for row, gate in enumerate(gates):
            self.rows.append(GateRow(gate, grid, row))
        self._inner = inner
        self._box.insertWidget(0, inner)
        if self.isVisible():
            # Now, not on the loop's next turn: a dialog measures its height right after this.
            inner.show()
        if not gates:
            self.show_note("This environment has no gates: nothing is checked.")

    def show_note(self, text: str) -> None:
        """A line instead of (or under) the gates: loading, or why there are none."""
        self.note.setText(text)
        self.note.setVisible(bool(text))

    def clear(self) -> None:
        self.rows = []
        self.note.hide()
        if self._inner is not None:
            self._inner.hide()
            self._inner.deleteLater()
            self._inner = None

    def row(self, gate: str) -> GateRow | None:
        return next((r for r in self.rows if r.gate == gate), None)

    def statuses(self) -> dict[str, str]:
        return {r.gate: r.status for r in self.rows}
