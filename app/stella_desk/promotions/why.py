"""Why a promotion is not moving: gate by gate as it stands now, what would unblock each, and who
may still approve. Reading it records nothing; "Decide again" records a new decision (a freeze
may have ended, the release may have reached the previous environment since).

When the predecessor or schedule gate fails, an admin may grant a signed, expiring exception
here (a reason and an expiry are required; the exception is signed with the admin's own key and
the promotion is decided again at once). Anyone else is told that an admin can.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from PySide6.QtCore import QDateTime
from PySide6.QtWidgets import (
    QComboBox,
    QDateTimeEdit,
    QDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from stella_core.promotions.model import EXCEPTION_GATES
from stella_core.tenancy.model import ProductRole
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
    if any("NO_APPROVAL_REQUIRED" in (g.get("reason_codes") or []) for g in why.get("gates") or []):
        return ""  # nobody's approval is asked for
    if not names:
        return "Nobody else may approve it."
    return f"May still approve: {', '.join(names)}"


DEFAULT_EXCEPTION_HOURS = 24


def waivable(why: dict[str, Any]) -> list[str]:
    """The failing gates of an open promotion that an admin's exception may waive."""
    if str(why.get("status")) not in OPEN_STATUSES:
        return []
    return [
        str(g["type"])
        for g in why.get("gates") or []
        if g.get("status") == "fail" and g.get("type") in EXCEPTION_GATES
    ]


class ExceptionForm(QFrame):
    """An admin's signed, expiring exception to one failing gate, with its reason."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("exceptionForm")
        self.setStyleSheet(
            "QFrame#exceptionForm { background: #f6f4fe; border: 1px solid #ddd6fe;"
            " border-radius: 8px; }"
        )
        outer = QVBoxLayout(self)
        outer.setContentsMargins(14, 10, 14, 10)
        outer.addWidget(label("GRANT AN EXCEPTION", "section"))
        note = label(
            "Signed with your key and kept as evidence. It lets this release pass the gate in "
            "this environment until it expires; approvals are still needed.",
            "muted",
        )
        note.setWordWrap(True)
        outer.addWidget(note)
        form = QFormLayout()
        self.gate = QComboBox()
        form.addRow("Gate", self.gate)
        self.reason = QLineEdit()
        self.reason.setPlaceholderText("Why this release may pass, for the auditor (required)")
        form.addRow("Reason", self.reason)
        self.expires = QDateTimeEdit()
        self.expires.setCalendarPopup(True)
        self.expires.setDisplayFormat("yyyy-MM-dd HH:mm t")  # local time, zone shown
        form.addRow("Expires", self.expires)
        outer.addLayout(form)
        row = QHBoxLayout()
        row.addStretch(1)
        self.cancel_button = QPushButton("Cancel")
        self.grant_button = QPushButton("Sign and grant")
        self.grant_button.setProperty("kind", "primary")
        row.addWidget(self.cancel_button)
        row.addWidget(self.grant_button)
        outer.addLayout(row)
        self.reason.textChanged.connect(self.update_grant_button)

    def reset(self, gates: list[str]) -> None:
        self.gate.clear()
        self.gate.addItems(gates)
        self.reason.clear()
        later = datetime.now(UTC) + timedelta(hours=DEFAULT_EXCEPTION_HOURS)
        self.expires.setDateTime(QDateTime.fromSecsSinceEpoch(int(later.timestamp())))
        self.expires.setMinimumDateTime(QDateTime.currentDateTime())
        self.update_grant_button()

    def expires_at(self) -> datetime:
        return datetime.fromtimestamp(self.expires.dateTime().toSecsSinceEpoch(), UTC)

    def update_grant_button(self) -> None:
        self.grant_button.setEnabled(bool(self.reason.text().strip()) and self.gate.count() > 0)


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
        self.exception_hint = label(
            "An admin may grant a signed, expiring exception to this gate.", "muted"
        )
        self.exception_hint.setWordWrap(True)
        self.exception_hint.hide()
        outer.addWidget(self.exception_hint)
        self.exception_form = ExceptionForm()
        self.exception_form.hide()
        outer.addWidget(self.exception_form)
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
        self.exception_button = QPushButton("Grant exception…")
        self.exception_button.setToolTip(
            "Admins: let this release pass the failing gate here until a time you choose"
        )
        self.exception_button.hide()
        row.addWidget(self.exception_button)
        row.addStretch(1)
        self.close_button = QPushButton("Close")
        self.close_button.setDefault(True)
        row.addWidget(self.close_button)
        outer.addLayout(row)
        self.close_button.clicked.connect(self.accept)
        self.again_button.clicked.connect(lambda: self.ops.spawn(self.decide_again()))
        self.exception_button.clicked.connect(self.open_exception_form)
        self.exception_form.cancel_button.clicked.connect(self._close_exception_form)
        self.exception_form.grant_button.clicked.connect(
            lambda: self.ops.spawn(self.grant_exception())
        )

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
        gates = waivable(why)
        admin = self._is_admin()
        self.exception_button.setVisible(bool(gates) and admin)
        self.exception_hint.setVisible(bool(gates) and not admin)
        if not gates:
            self.exception_form.hide()
        self.fit_contents()

    def _is_admin(self) -> bool:
        identity = self.session.identity
        return identity is not None and identity.role is ProductRole.ADMIN

    def open_exception_form(self) -> None:
        if self.why is None:
            return
        self.exception_form.reset(waivable(self.why))
        self.exception_form.show()
        self.exception_button.setEnabled(False)
        self.exception_form.reason.setFocus()
        self.fit_contents()

    def _close_exception_form(self) -> None:
        self.exception_form.hide()
        self.exception_button.setEnabled(True)
        self.fit_contents()

    async def grant_exception(self) -> dict[str, Any] | None:
        """Sign and record the exception; the core decides the promotion again at once."""
        why = self.why
        if why is None:
            return None
        stella = self.session.require()
        form = self.exception_form
        release, environment = str(why["release"]), str(why["environment"])
        gate, reason, expires_at = form.gate.currentText(), form.reason.text(), form.expires_at()
        form.grant_button.setEnabled(False)
        self.error_box.hide()
        try:
            granted: dict[str, Any] = await self.ops.run(
                lambda _report: stella.promotions.grant_exception(
                    release, environment, reason=reason, expires_at=expires_at, gate=gate
                ),
                label="Signing the exception",
                changes=[Change.PROMOTIONS],
                present_errors=False,
            )
        except OpFailed as exc:
            self._show_error(exc.message)
            form.update_grant_button()
            return None
        self._close_exception_form()
        await self.load()
        return granted

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
        if self.exception_hint.isVisible():
            lines.append(self.exception_hint.text())
        return "\n".join(lines)

    def _show_error(self, message: str) -> None:
        self.error.setText(message)
        self.error_box.show()
        self.fit_contents()

    def fit_contents(self) -> None:
        fit_height(self, self._outer)
