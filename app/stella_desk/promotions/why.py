"""Why a promotion is not moving: gate by gate as it stands now, what would unblock each, and who
may still approve. Reading it records nothing; "Decide again" records a new decision (a freeze
may have ended, the release may have reached the previous environment since).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID

from PySide6.QtWidgets import QDialog, QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from stella_desk.chrome import InlineError, fit_height, label
from stella_desk.ops import Change, OpFailed, Ops
from stella_desk.promotions.gates import GateList
from stella_desk.promotions.status import OPEN_STATUSES, status_text
from stella_desk.session import Session

if TYPE_CHECKING:
    from stella_core.promotions.model import Promotion


def summary(why: dict[str, Any]) -> tuple[str, str]:
    """(sentence, colour) for the top of the panel."""
    status = str(why.get("status"))
    if status not in OPEN_STATUSES:
        return f"It is {status_text(status)}: no gate holds it any more.", "#4b5563"
    failing = [g for g in why.get("gates") or [] if g.get("status") == "fail"]
    if failing:
        count = len(failing)
        return (
            f"Blocked: {count} gate{'s' if count != 1 else ''} fail{'s' if count == 1 else ''}. "
            "It stays open and goes ahead once every gate passes.",
            "#b91c1c",
        )
    if why.get("verdict") == "pending":
        return f"Waiting for approvals: {why.get('approval_progress')}.", "#a15c04"
    return "Nothing blocks it any more: “Decide again” lets it go ahead.", "#15803d"


def approvers_text(why: dict[str, Any]) -> str:
    names = list(why.get("eligible_approvers") or [])
    if str(why.get("status")) not in OPEN_STATUSES:
        return ""
    if not names:
        return "Nobody else may approve it."
    return f"May still approve: {', '.join(names)}"


class WhyDialog(QDialog):
    def __init__(
        self,
        ops: Ops,
        session: Session,
        promotion_id: UUID,
        title: str,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.ops = ops
        self.session = session
        self.promotion_id = promotion_id
        self.why: dict[str, Any] | None = None
        self.setWindowTitle("Why is it blocked?")
        self.setMinimumWidth(600)
        outer = self._outer = QVBoxLayout(self)
        outer.setContentsMargins(24, 20, 24, 18)
        outer.setSpacing(10)
        heading = label(title, "title")
        heading.setWordWrap(True)
        outer.addWidget(heading)
        self.summary = label("Reading the gates…", "muted")
        self.summary.setWordWrap(True)
        outer.addWidget(self.summary)
        outer.addWidget(label("GATES, AS THEY STAND NOW", "section"))
        self.gates = GateList()
        outer.addWidget(self.gates)
        self.approvers = label("", selectable=True)
        self.approvers.setWordWrap(True)
        outer.addWidget(self.approvers)
        self.error_box = InlineError()
        self.error = self.error_box.text
        outer.addWidget(self.error_box)
        outer.addStretch(1)
        row = QHBoxLayout()
        self.again_button = QPushButton("Decide again")
        self.again_button.setToolTip(
            "Evaluate the gates now and record the decision: a freeze may have ended, or the "
            "release reached the previous environment since"
        )
        self.again_button.setEnabled(False)
        row.addWidget(self.again_button)
        row.addStretch(1)
        self.close_button = QPushButton("Close")
        self.close_button.setDefault(True)
        row.addWidget(self.close_button)
        outer.addLayout(row)
        self.close_button.clicked.connect(self.accept)
        self.again_button.clicked.connect(lambda: self.ops.spawn(self.decide_again()))

    async def load(self) -> dict[str, Any] | None:
        stella = self.session.require()
        promotion_id = self.promotion_id
        try:
            why: dict[str, Any] = await self.ops.run(
                lambda _report: stella.promotions.why(promotion_id),
                label="Reading why the promotion waits",
                present_errors=False,
            )
        except OpFailed as exc:
            self.summary.setText("")
            self._show_error(exc.message)
            return None
        self.show_why(why)
        return why

    def show_why(self, why: dict[str, Any]) -> None:
        self.why = why
        sentence, colour = summary(why)
        self.summary.setText(sentence)
        self.summary.setStyleSheet(f"color: {colour}; font-weight: 600;")
        self.gates.set_gates(why.get("gates") or [])
        text = approvers_text(why)
        self.approvers.setText(text)
        self.approvers.setVisible(bool(text))
        self.again_button.setEnabled(str(why.get("status")) in OPEN_STATUSES)
        self.fit_contents()

    async def decide_again(self) -> Promotion | None:
        stella = self.session.require()
        promotion_id = self.promotion_id
        self.again_button.setEnabled(False)
        self.error_box.hide()
        try:
            promotion: Promotion = await self.ops.run(
                lambda _report: stella.promotions.evaluate(promotion_id),
                label="Deciding the promotion again",
                changes=[Change.PROMOTIONS],
                present_errors=False,
            )
        except OpFailed as exc:
            self._show_error(exc.message)
            self.again_button.setEnabled(True)
            return None
        await self.load()
        return promotion

    def text(self) -> str:
        """Everything the panel says, as plain text (what a person reads)."""
        lines = [self.summary.text()]
        lines += [row.plain() for row in self.gates.rows]
        lines.append(self.approvers.text())
        return "\n".join(lines)

    def _show_error(self, message: str) -> None:
        self.error.setText(message)
        self.error_box.show()
        self.fit_contents()

    def fit_contents(self) -> None:
        fit_height(self, self._outer)
