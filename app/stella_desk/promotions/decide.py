"""Approve or reject a promotion: a comment, two buttons and the core's refusal shown in place.

The core decides who may decide (separation of duties, eligible roles, one decision each, open
promotions only) and signs the decision with the person's own key; this bar never guesses, it
asks and shows the answer where the person is looking.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLineEdit, QPushButton, QVBoxLayout, QWidget

from stella_desk.chrome import InlineError, label
from stella_desk.ops import Change, OpFailed, Ops
from stella_desk.session import Session

if TYPE_CHECKING:
    from stella_core.promotions.model import Promotion

NEEDS_REASON = "A rejection needs a reason: say in the comment why it should not go ahead."

DECIDE_STYLE = """
QFrame[kind="decide"] {
    background: palette(base); border: 1px solid palette(mid); border-radius: 10px;
}
QPushButton[kind="danger"] { color: #c42b2b; }
QPushButton[kind="danger"]:hover { border-color: #c42b2b; }
QPushButton[kind="danger"]:disabled { color: #c9a3a3; }
"""


class DecisionBar(QFrame):
    decided = Signal(object)  # Promotion, as the core returned it

    def __init__(self, ops: Ops, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ops = ops
        self.session = session
        self.promotion_id: UUID | None = None
        self.setProperty("kind", "decide")
        self.setStyleSheet(DECIDE_STYLE)
        column = QVBoxLayout(self)
        column.setContentsMargins(14, 10, 14, 12)
        column.setSpacing(6)
        self.title = label("YOUR DECISION", "section")
        column.addWidget(self.title)
        row = QHBoxLayout()
        row.setSpacing(8)
        self.comment = QLineEdit()
        self.comment.setPlaceholderText("Comment (optional to approve, needed to reject)")
        self.comment.setClearButtonEnabled(True)
        row.addWidget(self.comment, 1)
        self.approve_button = QPushButton("Approve")
        self.approve_button.setProperty("kind", "primary")
        self.approve_button.setToolTip("Sign your approval with your own key")
        self.reject_button = QPushButton("Reject")
        self.reject_button.setProperty("kind", "danger")
        self.reject_button.setToolTip("End the promotion; your reason is recorded and signed")
        row.addWidget(self.approve_button)
        row.addWidget(self.reject_button)
        column.addLayout(row)
        self.error_box = InlineError()
        self.error = self.error_box.text
        column.addWidget(self.error_box)
        self.approve_button.clicked.connect(lambda: self.ops.spawn(self.approve()))
        self.reject_button.clicked.connect(lambda: self.ops.spawn(self.reject()))
        self.comment.textEdited.connect(lambda _text: self.error_box.hide())
        self._busy = False
        self._own = False  # the acting person requested the promotion shown

    def set_promotion(self, promotion_id: UUID | None, requested_by: str | None = None) -> None:
        """Decide this promotion next; a different one clears the comment and any refusal.
        The person who requested it is not offered Approve (they may still reject it)."""
        if promotion_id != self.promotion_id:
            self.comment.clear()
            self.error_box.hide()
        self.promotion_id = promotion_id
        identity = self.session.identity
        self._own = identity is not None and requested_by == identity.user
        self.approve_button.setToolTip(
            "You requested this promotion: someone else approves it"
            if self._own
            else "Sign your approval with your own key"
        )
        self._set_busy(False)

    async def approve(self) -> Promotion | None:
        return await self._decide(approve=True)

    async def reject(self) -> Promotion | None:
        return await self._decide(approve=False)

    async def _decide(self, *, approve: bool) -> Promotion | None:
        promotion_id = self.promotion_id
        if promotion_id is None or self._busy or (approve and self._own):
            return None
        comment = self.comment.text().strip()
        if not approve and not comment:
            self.show_refusal(NEEDS_REASON)
            self.comment.setFocus()
            return None
        stella = self.session.require()
        self.error_box.hide()
        self._set_busy(True)
        try:
            if approve:
                promotion = await self.ops.run(
                    lambda _report: stella.promotions.approve(promotion_id, comment),
                    label="Approving the promotion",
                    changes=[Change.PROMOTIONS],
                    initiator=self,
                    present_errors=False,  # a refusal is shown here, next to the buttons
                )
            else:
                promotion = await self.ops.run(
                    lambda _report: stella.promotions.reject(promotion_id, comment),
                    label="Rejecting the promotion",
                    changes=[Change.PROMOTIONS],
                    initiator=self,
                    present_errors=False,
                )
        except OpFailed as exc:
            self._set_busy(False)
            if promotion_id == self.promotion_id:
                self.show_refusal(exc.message)
            return None
        self._set_busy(False)
        if promotion_id == self.promotion_id:
            self.comment.clear()
        self.decided.emit(promotion)
        return promotion

    def show_refusal(self, message: str) -> None:
        self.error.setText(message)
        self.error_box.show()

    def refusal(self) -> str:
        return self.error.text() if not self.error_box.isHidden() else ""

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        for widget in (self.comment, self.approve_button, self.reject_button):
            widget.setEnabled(not busy and self.promotion_id is not None)
        if self._own:
            self.approve_button.setEnabled(False)
