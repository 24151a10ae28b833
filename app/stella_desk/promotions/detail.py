"""One promotion: who asked and why, its approvals (each with whether its signature verifies),
its gates, its workflow run, and what can be done to it (decide, cancel).

The gates of an open promotion are read as they stand now (`promotions.why`); an ended one shows
the gates of the decision that moved it last. While it is approved or deploying the dialog reads
it again every `POLL_MS`, so "deploying" turns into "deployed" in front of the person.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from stella_core.errors import NotFoundError
from stella_core.promotions.model import PromotionStatus
from stella_desk.chrome import InlineError, label
from stella_desk.evidence.detail import SubjectLine
from stella_desk.ops import Change, OpFailed, Ops
from stella_desk.promotions.decide import DECIDE_STYLE, DecisionBar
from stella_desk.promotions.diff import tag_text, tags_for
from stella_desk.promotions.gates import GateList
from stella_desk.promotions.status import (
    ENDED_STATUSES,
    GREEN,
    MOVING_STATUSES,
    OPEN_STATUSES,
    RED,
    escape,
    may_request,
    set_status_pill,
    status_pill,
    when_text,
)
from stella_desk.promotions.why import approvers_text
from stella_desk.runs.status import RUN_BADGES
from stella_desk.runs.status import status_text as run_status_text
from stella_desk.session import Session

if TYPE_CHECKING:
    from stella_core.bootstrap import Stella
    from stella_core.promotions.model import Approval, Promotion
    from stella_core.workflows.model import RunInfo

POLL_MS = 1500

DETAIL_STYLE = (
    DECIDE_STYLE
    + """
QFrame[kind="confirm"] { background: #fff8e6; border: 1px solid #f1d48a; border-radius: 8px; }
QPushButton[kind="link"] {
    border: none; background: transparent; color: #4f46e5; font-weight: 600; padding: 2px;
}
QPushButton[kind="link"]:hover { text-decoration: underline; }
"""
)


@dataclass(frozen=True)
class PromotionView:
    promotion: Promotion
    why: dict[str, Any]  # the gates as they stand now, who may still approve
    run: RunInfo | None
    tags: dict[str, str | None] = field(default_factory=dict)  # component -> its tag


# --- worker-thread functions (called inside `ops.run`) ---------------------------------------
def read_promotion(stella: Stella, promotion_id: UUID) -> PromotionView:
    promotion = stella.promotions.get(promotion_id)
    why = stella.promotions.why(promotion_id)
    run = stella.workflows.get_run(promotion.run_id) if promotion.run_id else None
    try:
        release = stella.releases.get_release(promotion.release)
    except NotFoundError:
        release = None  # the digests still show; the tags are a help to read them
    return PromotionView(promotion, why, run, tags_for(promotion.components, release))


def approval_html(approval: Approval) -> str:
    verb = "approved" if approval.decision == "approve" else "rejected"
    role = f" ({escape(approval.role)})" if approval.role else ""
    text = f"<b>{escape(approval.by)}</b>{role} {verb} · {when_text(approval.at)}"
    if approval.comment:
        text += f"<br>“{escape(approval.comment)}”"
    return text


def signature_pill(ok: bool) -> QWidget:
    fg, bg = GREEN if ok else RED
    pill = label("signature verifies" if ok else "signature does not verify")
    pill.setStyleSheet(
        f"color: {fg}; background: {bg}; border-radius: 8px; padding: 1px 9px;"
        "font-size: 11px; font-weight: 600;"
    )
    pill.setToolTip(
        "Signed with the approver's own registered key, over this promotion, this environment "
        "and these exact digests"
        if ok
        else "This approval does not count: its signature does not verify"
    )
    return pill


class PromotionDialog(QDialog):
    run_requested = Signal(object)  # the run's UUID: the window opens its monitor
    copied = Signal(str)

    def __init__(
        self, ops: Ops, session: Session, promotion_id: UUID, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.ops = ops
        self.session = session
        self.promotion_id = promotion_id
        self.view: PromotionView | None = None
        self.subjects: list[SubjectLine] = []
        self._loading = False
        self.setWindowTitle("Promotion")
        self.setStyleSheet(DETAIL_STYLE)
        self.setMinimumWidth(760)
        self.resize(800, 680)
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._tick)
        self.finished.connect(lambda _result: self._timer.stop())
        self._build()

    # --- building --------------------------------------------------------------------------
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(24, 20, 24, 18)
        outer.setSpacing(8)
        head = QHBoxLayout()
        head.setSpacing(10)
        self.title = label("Reading the promotion…", "title")
        head.addWidget(self.title)
        self.pill = status_pill("requested")
        self.pill.hide()
        head.addWidget(self.pill, 0, Qt.AlignmentFlag.AlignVCenter)
        head.addStretch(1)
        outer.addLayout(head)
        self.subline = label("", "muted", selectable=True)
        self.subline.setWordWrap(True)
        outer.addWidget(self.subline)

        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        body = QWidget()
        column = QVBoxLayout(body)
        column.setContentsMargins(0, 6, 6, 6)
        column.setSpacing(8)

        column.addWidget(label("WORKFLOW RUN", "section"))
        run_row = QHBoxLayout()
        run_row.setSpacing(10)
        self.run_text = label("", selectable=True)
        self.run_text.setWordWrap(True)
        run_row.addWidget(self.run_text, 1)
        self.run_pill = label("")
        self.run_pill.hide()
        run_row.addWidget(self.run_pill)
        self.open_run_button = QPushButton("Open run →")
        self.open_run_button.setProperty("kind", "link")
        self.open_run_button.setToolTip("Watch the deployment's run in the run monitor")
        self.open_run_button.hide()
        run_row.addWidget(self.open_run_button)
        column.addLayout(run_row)

        column.addSpacing(4)
        self.approvals_title = label("APPROVALS", "section")
        column.addWidget(self.approvals_title)
        self._approvals_box = QVBoxLayout()
        self._approvals_box.setSpacing(6)
        self._approvals: QWidget | None = None
        column.addLayout(self._approvals_box)
        self.approvers = label("", "muted", selectable=True)
        self.approvers.setWordWrap(True)
        column.addWidget(self.approvers)

        column.addSpacing(4)
        self.gates_title = label("GATES", "section")
        column.addWidget(self.gates_title)
        self.gates = GateList()
        column.addWidget(self.gates)

        column.addSpacing(4)
        column.addWidget(label("RELEASE DIGESTS", "section"))
        self._digests = QGridLayout()
        self._digests.setHorizontalSpacing(12)
        self._digests.setVerticalSpacing(4)
        self._digests.setColumnStretch(1, 1)
        column.addLayout(self._digests)
        column.addStretch(1)
        scroll.setWidget(body)
        outer.addWidget(scroll, 1)

        self.decision = DecisionBar(self.ops, self.session)
        self.decision.hide()
        outer.addWidget(self.decision)

        self.confirm = QFrame()
        self.confirm.setProperty("kind", "confirm")
        confirm_row = QHBoxLayout(self.confirm)
        confirm_row.setContentsMargins(12, 6, 8, 6)
        confirm_row.addWidget(label("Cancel this promotion?"))
        self.cancel_reason = QLineEdit()
        self.cancel_reason.setPlaceholderText("Reason (optional)")
        confirm_row.addWidget(self.cancel_reason, 1)
        self.confirm_cancel = QPushButton("Cancel promotion")
        self.confirm_cancel.setProperty("kind", "danger")
        self.keep_button = QPushButton("Keep it")
        confirm_row.addWidget(self.confirm_cancel)
        confirm_row.addWidget(self.keep_button)
        self.confirm.hide()
        outer.addWidget(self.confirm)
        self.error_box = InlineError()
        self.error = self.error_box.text
        outer.addWidget(self.error_box)

        buttons = QHBoxLayout()
        self.cancel_button = QPushButton("Cancel promotion…")
        self.cancel_button.setProperty("kind", "danger")
        self.cancel_button.setToolTip("Stop the promotion (and its run, if one is going)")
        self.cancel_button.hide()
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        self.close_button = QPushButton("Close")
        buttons.addWidget(self.close_button)
        outer.addLayout(buttons)

        self.close_button.clicked.connect(self.accept)
        self.open_run_button.clicked.connect(self._open_run)
        self.cancel_button.clicked.connect(self._ask_cancel)
        self.keep_button.clicked.connect(self.confirm.hide)
        self.confirm_cancel.clicked.connect(lambda: self.ops.spawn(self.cancel()))
        self.decision.decided.connect(self._on_decided)

    # --- loading ---------------------------------------------------------------------------
    async def load(self) -> PromotionView | None:
        stella = self.session.require()
        promotion_id = self.promotion_id
        self._loading = True
        try:
            view = await self.ops.run(
                lambda _report: read_promotion(stella, promotion_id),
                label="Reading the promotion",
                present_errors=False,
            )
        except OpFailed as exc:
            if self.view is None:
                self.title.setText("The promotion could not be read")
            self._show_error(exc.message)
            return None
        finally:
            self._loading = False
        self.show_view(view)
        return view

    def _tick(self) -> None:
        if not self._loading and self.isVisible() and self.session.ready:
            self.ops.spawn(self.load())

    def show_view(self, view: PromotionView) -> None:
        previous = self.view
        self.view = view
        p = view.promotion
        self.title.setText(f"{p.release} → {p.environment}")
        set_status_pill(self.pill, p.status.value)
        self.pill.show()
        sub = f"requested by {p.requested_by} · {when_text(p.requested_at)}"
        if p.reason:
            sub += f" · “{p.reason}”"
        if p.status_reason and p.status is not PromotionStatus.AWAITING_APPROVAL:
            sub += f"\n{p.status_reason}"  # awaiting: the progress says it already
        self.subline.setText(sub)
        self._show_run(view)
        if previous is None or previous.promotion.approvals != p.approvals:
            self._show_approvals(p)
        self.approvals_title.setText(f"APPROVALS · {p.progress()}")
        self.approvers.setText(approvers_text(view.why))
        self.approvers.setVisible(bool(self.approvers.text()))
        is_open = p.status.value in OPEN_STATUSES
        self.gates_title.setText("GATES, AS THEY STAND NOW" if is_open else "GATES, AS DECIDED")
        self.gates.set_gates(view.why["gates"] if is_open else p.gates_json())
        if previous is None:
            self._show_digests(p, view.tags)
        identity = self.session.identity
        # Auditors read decisions and take none: no decision bar for them.
        audits = identity is not None and identity.role.value == "auditor"
        self.decision.setVisible(is_open and not audits)
        self.decision.set_promotion(p.id if is_open else None, p.requested_by)
        can_cancel = identity is not None and may_request(identity.role)
        self.cancel_button.setVisible(can_cancel and p.status.value not in ENDED_STATUSES)
        if p.status.value in ENDED_STATUSES:
            self.confirm.hide()
        if p.status.value in MOVING_STATUSES:
            if not self._timer.isActive():
                self._timer.start()
        else:
            self._timer.stop()

    def _show_run(self, view: PromotionView) -> None:
        run = view.run
        if run is None:
            p = view.promotion
            self.run_text.setText(
                "The environment's workflow starts once every gate passes."
                if p.status.value in OPEN_STATUSES
                else "No workflow run."
            )
            self.run_pill.hide()
            self.open_run_button.hide()
            return
        self.run_text.setText(f"{run.template} v{run.template_version} · run {run.id}")
        fg, bg = RUN_BADGES.get(run.status, ("#374151", "#eceef3"))
        self.run_pill.setText(run_status_text(run.status))
        self.run_pill.setStyleSheet(
            f"color: {fg}; background: {bg}; border-radius: 8px; padding: 1px 9px;"
            "font-size: 11px; font-weight: 600;"
        )
        self.run_pill.show()
        self.open_run_button.show()

    def _show_approvals(self, p: Promotion) -> None:
        if self._approvals is not None:
            self._approvals.hide()
            self._approvals.deleteLater()
        box = QWidget()
        grid = QGridLayout(box)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setHorizontalSpacing(10)
        grid.setVerticalSpacing(8)
        grid.setColumnStretch(1, 1)
        if not p.approvals:
            grid.addWidget(label("No decision yet.", "muted"), 0, 0, 1, 3)
        for row, approval in enumerate(p.approvals):
            approved = approval.decision == "approve"
            symbol = label("✓" if approved else "✕")
            colour = GREEN[0] if approved else RED[0]
            symbol.setStyleSheet(f"color: {colour}; font-size: 15px; font-weight: 700;")
            text = label(approval_html(approval), selectable=True)
            text.setTextFormat(Qt.TextFormat.RichText)
            text.setWordWrap(True)
            grid.addWidget(symbol, row, 0, Qt.AlignmentFlag.AlignTop)
            grid.addWidget(text, row, 1)
            grid.addWidget(signature_pill(approval.signature_ok), row, 2, Qt.AlignmentFlag.AlignTop)
        self._approvals = box
        self._approvals_box.addWidget(box)

    def _show_digests(self, p: Promotion, tags: dict[str, str | None] | None = None) -> None:
        self.subjects = [
            SubjectLine(
                name,
                digest,
                self._digests,
                row,
                self.copied.emit,
                tag=tag_text((tags or {}).get(name)),
            )
            for row, (name, digest) in enumerate(sorted(p.components.items()))
        ]

    def approval_lines(self) -> list[tuple[str, str, bool]]:
        """(who, decision, signature verifies) per approval shown."""
        if self.view is None:
            return []
        return [(a.by, a.decision, a.signature_ok) for a in self.view.promotion.approvals]

    # --- actions ---------------------------------------------------------------------------
    def _open_run(self) -> None:
        if self.view is not None and self.view.run is not None:
            self.run_requested.emit(self.view.run.id)
            self.accept()

    def _ask_cancel(self) -> None:
        self.error_box.hide()
        self.confirm.show()
        self.cancel_reason.setFocus()

    async def cancel(self) -> Promotion | None:
        stella = self.session.require()
        promotion_id = self.promotion_id
        reason = self.cancel_reason.text().strip()
        self.confirm_cancel.setEnabled(False)
        try:
            promotion: Promotion = await self.ops.run(
                lambda _report: stella.promotions.cancel(promotion_id, reason),
                label="Cancelling the promotion",
                changes=[Change.PROMOTIONS],
                present_errors=False,
            )
        except OpFailed as exc:
            self._show_error(exc.message)
            return None
        finally:
            self.confirm_cancel.setEnabled(True)
        self.confirm.hide()
        await self.load()
        return promotion

    def _on_decided(self, _promotion: Promotion) -> None:
        self.ops.spawn(self.load())

    def _show_error(self, message: str) -> None:
        self.error.setText(message)
        self.error_box.show()
