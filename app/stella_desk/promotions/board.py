"""The Promotions page: the pipeline board. One column per environment, in promotion order: what
runs there and since when, an active freeze, and the promotions on their way in.

The board reads `promotions.pipeline()` when it is shown and whenever a promotion or an
environment changes, here or in another process (the change feed, `stella_desk.feed`), and
rebuilds its columns only when what it read differs. Only while that feed is down does it poll,
every `POLL_MS` (faster while a promotion deploys, so "deploying" becomes "deployed" unaided).
A promotion card opens the promotion; a blocked one says why in one line and opens the
gate-by-gate panel from "Why?". "Promote…" opens the wizard.
While a promotion is blocked, a read every `RECHECK_SECONDS` first decides it again if its gates
have cleared (the recheck `stella serve` does), so a freeze that ends lets it go on by itself.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QHideEvent, QKeyEvent, QMouseEvent, QShowEvent
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QPushButton,
    QScrollArea,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from stella_core.promotions.model import PromotionStatus
from stella_desk import theme
from stella_desk.chrome import PAGE_MARGINS, Card, EmptyState, PageHeader, label
from stella_desk.fit import ElidedLabel, slim_scrollbar
from stella_desk.humane import clock, short_id, when, when_recent
from stella_desk.ops import Change, OpChanges, OpFailed, Ops
from stella_desk.promotions.detail import PromotionDialog
from stella_desk.promotions.status import (
    ENDED_STATUSES,
    MOVING_STATUSES,
    gate_reasons,
    is_blocked,
    main_reason,
    status_pill,
    status_text,
)
from stella_desk.promotions.why import WhyDialog
from stella_desk.promotions.wizard import PromoteDialog, describe_request
from stella_desk.session import Session
from stella_desk.targets import drift
from stella_desk.targets.drift import DriftSummary

if TYPE_CHECKING:
    from stella_core.bootstrap import Stella

RECENT_READ = 30  # ended promotions read per refresh, newest first
RECENT_SHOWN = 3  # of those, shown per environment
COLUMN_WIDTH = 290
POLL_MS = 2000
MOVING_POLL_MS = 700  # while a promotion is approved or deploying
RETRY_MS = 5000  # after a failed read
RECHECK_SECONDS = 30.0  # how often a poll first decides blocked promotions again (as serve does)

BOARD_STYLE = f"""
QLabel[kind="env"] {{ font-size: 18px; font-weight: 600; }}
QLabel[kind="release"] {{ font-size: 15px; font-weight: 600; }}
QLabel[kind="fact"] {{
    background: #eef0f6; border-radius: 8px; padding: 1px 8px; font-size: 11px; color: #4b5563;
}}
QLabel[kind="sod"] {{
    background: #efe9fd; border-radius: 8px; padding: 1px 8px; font-size: 11px;
    color: #6d28d9; font-weight: 600;
}}
QFrame[kind="promotion"], QFrame[kind="promotion-blocked"] {{
    background: #fbfbfd; border: 1px solid {theme.BORDER}; border-radius: 8px;
}}
QFrame[kind="promotion-blocked"] {{ background: #fffafa; border-color: #f3c4c4; }}
QFrame[kind="history"] {{ border: 1px solid transparent; border-radius: 6px; }}
QFrame[kind="history"]:hover {{ border-color: {theme.BORDER}; background: #fbfbfd; }}
QFrame[kind="promotion"]:hover, QFrame[kind="promotion-blocked"]:hover {{
    border-color: {theme.ACCENT};
}}
QFrame[kind="promotion"] QLabel, QFrame[kind="promotion-blocked"] QLabel,
QFrame[kind="history"] QLabel {{
    background: transparent;
}}
QFrame[kind="freeze"] {{
    background: #e8f1fd; border: 1px solid #b8d2f4; border-radius: 8px;
}}
QFrame[kind="freeze"] QLabel {{ color: #1e4f91; background: transparent; }}
QPushButton[kind="why"] {{ padding: 2px 10px; font-size: 12px; }}
"""


@dataclass(frozen=True)
class Board:
    """One read: the pipeline's columns and each environment's latest ended promotions."""

    columns: list[dict[str, Any]]
    recent: dict[str, list[dict[str, Any]]]
    # Each environment's latest drift findings counted; None: drift checks unavailable.
    drift: dict[str, DriftSummary] | None = None


# --- worker-thread functions (called inside `ops.run`) ---------------------------------------
def read_board(stella: Stella, *, recheck: bool = False) -> Board:
    """The board; with `recheck`, blocked promotions whose gates have cleared (a freeze ended)
    are decided again first, as `stella serve` does, so the desk alone moves them on."""
    if recheck:
        stella.promotions.recheck_blocked()
    columns = stella.promotions.pipeline()
    ended = stella.promotions.find(statuses=sorted(ENDED_STATUSES), limit=RECENT_READ)
    recent: dict[str, list[dict[str, Any]]] = {}
    for promotion in ended:  # newest first
        shown = recent.setdefault(promotion.environment, [])
        if len(shown) < RECENT_SHOWN:
            shown.append(promotion.to_json())
    return Board(columns, recent, drift.summaries(drift.latest(stella)))


def approval_wait(promotion: dict[str, Any]) -> str:
    """Whose approvals it still waits for, in the approval gate's own words."""
    for gate in promotion.get("gates") or []:
        if gate.get("type") == "approval" and gate.get("status") == "pending":
            steps = gate.get("unblock") or []
            if steps:
                return f"Waiting for {steps[0]}"
            reasons = gate_reasons(gate)
            return reasons[0][1] if reasons else ""
    return ""


class PromotionFrame(QFrame):
    """A promotion on the board; a click (or Enter) opens it."""

    open_requested = Signal(object)  # UUID

    def __init__(self, promotion: dict[str, Any], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.promotion = promotion
        self.promotion_id = UUID(promotion["promotion_id"])
        self.status = str(promotion["status"])
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setToolTip("Open the promotion: approvals, gates, its run")

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton and self.rect().contains(
            event.position().toPoint()
        ):
            self.open_requested.emit(self.promotion_id)
        super().mouseReleaseEvent(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Space):
            self.open_requested.emit(self.promotion_id)
            return
        super().keyPressEvent(event)


class PromotionCard(PromotionFrame):
    """A promotion on its way into an environment: status, approvals, what holds it."""

    why_requested = Signal(object)  # UUID

    def __init__(self, promotion: dict[str, Any], parent: QWidget | None = None) -> None:
        super().__init__(promotion, parent)
        self.blocked = is_blocked(promotion)
        self.setProperty("kind", "promotion-blocked" if self.blocked else "promotion")
        column = QVBoxLayout(self)
        column.setContentsMargins(12, 9, 12, 10)
        column.setSpacing(3)
        top = QHBoxLayout()
        top.setSpacing(8)
        self.release = ElidedLabel(promotion["release"])
        self.release.setStyleSheet("font-weight: 600;")
        top.addWidget(self.release, 1)
        self.pill = status_pill(self.status)
        top.addWidget(self.pill, 0, Qt.AlignmentFlag.AlignVCenter)
        column.addLayout(top)
        required = int(promotion.get("required_approvals") or 0)
        self.progress = str(promotion.get("approval_progress") or "")
        approvals = f"{self.progress} approvals" if required else "no approval needed"
        self.facts = label(f"{approvals} · by {promotion['requested_by']}", "muted")
        column.addWidget(self.facts)
        self.reason = label("")
        self.reason.setWordWrap(True)
        self.why_button: QPushButton | None = None
        if self.blocked:
            self.reason.setText(main_reason(promotion))
            self.reason.setStyleSheet(f"color: {theme.DANGER};")
            column.addWidget(self.reason)
            row = QHBoxLayout()
            row.addStretch(1)
            self.why_button = QPushButton("Why?")
            self.why_button.setProperty("kind", "why")
            self.why_button.setToolTip("Gate by gate: what blocks it and what would unblock it")
            self.why_button.clicked.connect(lambda: self.why_requested.emit(self.promotion_id))
            row.addWidget(self.why_button)
            column.addLayout(row)
        else:
            self.reason.setText(self._progress_words())
            self.reason.setProperty("kind", "muted")
            column.addWidget(self.reason)
            self.reason.setVisible(bool(self.reason.text()))

    def _progress_words(self) -> str:
        if self.status == "awaiting_approval":
            return approval_wait(self.promotion)
        if self.status in MOVING_STATUSES:
            return str(self.promotion.get("status_reason") or "starting the deployment")
        return ""


class HistoryLine(PromotionFrame):
    """An ended promotion: how it ended and when."""

    def __init__(self, promotion: dict[str, Any], parent: QWidget | None = None) -> None:
        super().__init__(promotion, parent)
        self.setProperty("kind", "history")
        row = QHBoxLayout(self)
        row.setContentsMargins(6, 3, 6, 3)
        row.setSpacing(8)
        self.release = ElidedLabel(promotion["release"])
        row.addWidget(self.release, 1)
        self.pill = status_pill(self.status)
        row.addWidget(self.pill, 0, Qt.AlignmentFlag.AlignVCenter)
        self.when = label(when_recent(promotion.get("updated_at")), "muted")
        row.addWidget(self.when)
        self.setToolTip(
            f"{promotion['release']} {status_text(self.status)} on "
            f"{when(promotion.get('updated_at'))}: open it"
        )


class FreezeBanner(QFrame):
    def __init__(self, freeze: dict[str, Any], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setProperty("kind", "freeze")
        column = QVBoxLayout(self)
        column.setContentsMargins(10, 7, 10, 8)
        column.setSpacing(2)
        self.title = label(f"❄ Frozen until {when(freeze['end'])}")
        self.title.setStyleSheet("font-weight: 600;")
        column.addWidget(self.title)
        self.reason = label(str(freeze.get("reason") or ""))
        self.reason.setWordWrap(True)
        column.addWidget(self.reason)
        allow = list(freeze.get("allow") or [])
        if allow:
            column.addWidget(label(f"Allowed to promote anyway: {', '.join(allow)}"))
        self.setToolTip(f"freeze {short_id(freeze['id'])}, from {when(freeze['start'])}")

    def text(self) -> str:
        return f"{self.title.text()} {self.reason.text()}"


class EnvironmentColumn(Card):
    """One environment: its rules, what runs there, a freeze, and what is on its way."""

    def __init__(
        self,
        column: dict[str, Any],
        recent: list[dict[str, Any]],
        parent: QWidget | None = None,
        *,
        drift_summary: DriftSummary | None = None,
        drift_available: bool = False,
    ) -> None:
        super().__init__(parent=parent)
        env = column["environment"]
        self.name = str(env["name"])
        self.cards: list[PromotionCard] = []
        self.history: list[HistoryLine] = []
        self.freezes: list[FreezeBanner] = []
        # Fixed width: eight columns scroll sideways rather than squeeze or widen the window.
        self.setFixedWidth(COLUMN_WIDTH)
        body = self.body
        body.setSpacing(6)
        self.title = ElidedLabel(self.name, "env")
        body.addWidget(self.title)
        facts = QHBoxLayout()
        facts.setSpacing(6)
        required = int(env.get("required_approvals") or 0)
        approvals = (
            f"{required} approval{'s' if required != 1 else ''}" if required else "no approval"
        )
        self.approvals = label(approvals, "fact")
        self.approvals.setToolTip(
            "Approvals needed from: " + ", ".join(env.get("approver_roles") or [])
        )
        facts.addWidget(self.approvals)
        self.sod = label("separation of duties", "sod")
        self.sod.setToolTip("Whoever requests a promotion here cannot approve it")
        self.sod.setVisible(bool(env.get("separation_of_duties")))
        facts.addWidget(self.sod)
        facts.addStretch(1)
        body.addLayout(facts)
        workflow = env.get("workflow")
        self.workflow = label(
            f"deploys with {workflow}" if workflow else "no workflow: promoted at once", "muted"
        )
        body.addWidget(self.workflow)

        body.addSpacing(6)
        body.addWidget(label("RUNS NOW", "section"))
        current = column.get("current")
        self.current_release: str | None = current["release"] if current else None
        self.current = ElidedLabel(current["release"] if current else "Nothing yet", "release")
        if not current:
            self.current.setProperty("kind", "muted")
        body.addWidget(self.current)
        self.since = label(f"since {when(current['since'])}" if current else "", "muted")
        self.since.setVisible(bool(current))
        body.addWidget(self.since)
        # Whether that is what really runs: the last drift checks of its targets (the worst).
        text, tip, fg, bg = drift.summary_pill(drift_summary, drift_available)
        self.drift = label(text, "fact" if not fg else None)
        if fg:
            self.drift.setStyleSheet(drift.pill_style(fg, bg))
        self.drift.setToolTip(tip)
        self.drift.setVisible(drift_available)
        drift_row = QHBoxLayout()
        drift_row.addWidget(self.drift)
        drift_row.addStretch(1)
        body.addLayout(drift_row)

        for freeze in column.get("freezes") or []:
            banner = FreezeBanner(freeze)
            self.freezes.append(banner)
            body.addWidget(banner)
        for freeze in column.get("upcoming_freezes") or []:
            planned = label(
                f"Freeze planned {when(freeze['start'])} to {when(freeze['end'])}: "
                f"{freeze.get('reason') or ''}",
                "muted",
            )
            planned.setWordWrap(True)
            body.addWidget(planned)

        body.addSpacing(6)
        pending = list(column.get("pending") or [])
        self.pending_title = label(
            f"ON ITS WAY HERE · {len(pending)}" if pending else "ON ITS WAY HERE", "section"
        )
        body.addWidget(self.pending_title)
        if not pending:
            body.addWidget(label("No promotion waiting.", "muted"))
        for promotion in pending:
            card = PromotionCard(promotion)
            self.cards.append(card)
            body.addWidget(card)
        if recent:
            body.addSpacing(6)
            body.addWidget(label("RECENTLY", "section"))
            for promotion in recent:
                line = HistoryLine(promotion)
                self.history.append(line)
                body.addWidget(line)
        body.addStretch(1)


class PromotionsPage(QWidget):
    loaded = Signal()  # after every (re)load of the board
    status_message = Signal(str)
    run_requested = Signal(object)  # a run's UUID: the window opens the run monitor

    def __init__(self, ops: Ops, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("page")
        self.setStyleSheet(BOARD_STYLE)
        self.ops = ops
        self.session = session
        self.data: Board | None = None
        self.columns: dict[str, EnvironmentColumn] = {}
        self.wizard: PromoteDialog | None = None
        self.dialog: PromotionDialog | None = None
        self.why_dialog: WhyDialog | None = None
        self._generation = 0
        self._shown_generation = 0  # the generation of the read the board shows
        self._loads = 0  # reads in flight
        self._poll_task: asyncio.Task[Any] | None = None
        self._failing = False
        self._rechecked_at = time.monotonic()
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._tick)

        page = QVBoxLayout(self)
        page.setContentsMargins(*PAGE_MARGINS)
        page.setSpacing(10)
        header = PageHeader(
            "Promotions", "What runs where, and what is on its way: releases move left to right."
        )
        self.live = label("", "muted")
        header.action_row.addWidget(self.live, 0, Qt.AlignmentFlag.AlignVCenter)
        self.promote_button = QPushButton("Promote…")
        self.promote_button.setProperty("kind", "primary")
        self.promote_button.setToolTip(
            "Choose a release and an environment, see the gates, request the promotion"
        )
        header.action_row.addWidget(self.promote_button)
        page.addWidget(header)

        self.stack = QStackedWidget()
        self.board_scroll = QScrollArea()
        self.board_scroll.setWidgetResizable(True)
        self.board_scroll.setFrameShape(QFrame.Shape.NoFrame)
        slim_scrollbar(self.board_scroll)
        board = QWidget()
        self._row = QHBoxLayout(board)
        self._row.setContentsMargins(0, 0, 0, 0)
        self._row.setSpacing(8)
        self.board_scroll.setWidget(board)
        self.empty = EmptyState()
        self.empty.say(
            "No environments yet",
            "Promotions move releases through environments in order (dev, stage, prod). An "
            "admin adds them with 'stella env add NAME --order N'.",
        )
        self.stack.addWidget(self.board_scroll)
        self.stack.addWidget(self.empty)
        page.addWidget(self.stack, 1)

        self.promote_button.clicked.connect(lambda _checked=False: self.open_wizard())
        ops.changed.connect(self._on_changes)

    # --- loading ---------------------------------------------------------------------------
    async def refresh(self, *, poll: bool = False) -> Board | None:
        """Read the pipeline; rebuild the board only when it changed. Returns what the board
        shows once it is at least as new as this call (a newer read may have superseded it)."""
        self._generation += 1
        generation = self._generation
        stella = self.session.require()
        self._loads += 1
        recheck = poll and self._recheck_due()
        try:
            board = await self.ops.run(
                lambda _report: read_board(stella, recheck=recheck),
                label="Reading the pipeline",
                # A poll that fails says so on the page, not as a banner every two seconds.
                present_errors=not poll,
            )
        except OpFailed as exc:
            if poll and generation == self._generation:
                self._failing = True
                self._set_live(f"Live updates paused: {exc.message}", error=True)
                self._schedule()
            return None
        finally:
            self._loads -= 1
        if generation != self._generation:
            # A newer read (a change heard meanwhile) is on its way: its board is the answer.
            while self._shown_generation < generation and self._loads:
                await asyncio.sleep(0.02)
            return self.data if self._shown_generation >= generation else None
        self._shown_generation = generation
        self._failing = False
        if board != self.data:
            self._show(board)
        self._set_live(f"Updated {clock(datetime.now().astimezone())}")
        self._schedule()
        self.loaded.emit()
        return board

    def _show(self, board: Board) -> None:
        self.data = board
        columns = board.columns
        while self._row.count():
            item = self._row.takeAt(0)
            widget = item.widget() if item is not None else None
            if widget is not None:
                widget.hide()
                widget.deleteLater()
        self.columns = {}
        for i, column in enumerate(columns):
            if i:
                arrow = label("→", "arrow")
                arrow.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignHCenter)
                arrow.setContentsMargins(0, 14, 0, 0)
                self._row.addWidget(arrow)
            name = column["environment"]["name"]
            widget = EnvironmentColumn(
                column,
                board.recent.get(name, []),
                drift_summary=(board.drift or {}).get(name),
                drift_available=board.drift is not None,
            )
            for card in widget.cards:
                card.open_requested.connect(self.open_promotion)
                card.why_requested.connect(self.open_why)
            for line in widget.history:
                line.open_requested.connect(self.open_promotion)
            self.columns[widget.name] = widget
            self._row.addWidget(widget, 1)
        self.stack.setCurrentWidget(self.board_scroll if columns else self.empty)

    def _set_live(self, text: str, *, error: bool = False) -> None:
        self.live.setText(text)
        self.live.setProperty("kind", "error" if error else "muted")
        theme.repolish(self.live)

    def _pending_statuses(self) -> set[str]:
        columns = self.data.columns if self.data else []
        return {str(p.get("status")) for column in columns for p in column.get("pending") or []}

    def _moving(self) -> bool:
        return not MOVING_STATUSES.isdisjoint(self._pending_statuses())

    def _recheck_due(self) -> bool:
        blocked = PromotionStatus.BLOCKED.value in self._pending_statuses()
        now = time.monotonic()
        # (A tenth of slack: the timer that asks may fire a hair early.)
        if not blocked or now - self._rechecked_at < RECHECK_SECONDS * 0.9:
            return False
        self._rechecked_at = now
        return True

    def _schedule(self) -> None:
        if not (self.isVisible() and self.session.ready):
            self._timer.stop()
            return
        if self.session.live and not self._failing:
            # Changes arrive by themselves; only a blocked promotion needs a timed look (a
            # freeze ends by the clock, not by a write).
            if PromotionStatus.BLOCKED.value not in self._pending_statuses():
                self._timer.stop()
                return
            interval = int(RECHECK_SECONDS * 1000)
        else:
            interval = RETRY_MS if self._failing else MOVING_POLL_MS if self._moving() else POLL_MS
        if self._timer.interval() != interval:
            self._timer.setInterval(interval)
        if not self._timer.isActive():
            self._timer.start()

    def _tick(self) -> None:
        polling = self._poll_task is not None and not self._poll_task.done()
        if polling or self._loads or not self.isVisible() or not self.session.ready:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # the loop has ended (shutdown): nothing may be started now
            self._timer.stop()
            return
        # Kept: a timer that fires again before this task starts must not start a second one.
        self._poll_task = self.ops.spawn(self.refresh(poll=True))

    def _on_changes(self, changes: OpChanges) -> None:
        if not self.session.ready:
            return
        # Off screen, the next showEvent reads the board anyway.
        if changes.touches(Change.PERSON) or (
            changes.touches(Change.PROMOTIONS, Change.ENVIRONMENTS) and self.isVisible()
        ):
            self.ops.spawn(self.refresh())

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self.session.ready:
            self.ops.spawn(self.refresh())

    def hideEvent(self, event: QHideEvent) -> None:
        super().hideEvent(event)
        self._timer.stop()

    # --- reading the board -----------------------------------------------------------------
    def column(self, environment: str) -> EnvironmentColumn | None:
        return self.columns.get(environment)

    def card(self, promotion_id: UUID) -> PromotionCard | None:
        cards = (c for column in self.columns.values() for c in column.cards)
        return next((c for c in cards if c.promotion_id == promotion_id), None)

    # --- dialogs ---------------------------------------------------------------------------
    def open_wizard(
        self, release: str | None = None, environment: str | None = None
    ) -> PromoteDialog:
        if self.wizard is not None and self.wizard.isVisible():
            self.wizard.raise_()
            return self.wizard
        dialog = PromoteDialog(
            self.ops, self.session, release=release, environment=environment, parent=self
        )
        dialog.requested.connect(lambda p: self.status_message.emit(describe_request(p)))
        self.wizard = dialog
        dialog.open()  # window-modal but asynchronous: the loop keeps running
        self.ops.spawn(dialog.load())
        return dialog

    def open_promotion(self, promotion_id: UUID) -> PromotionDialog:
        if self.dialog is not None and self.dialog.isVisible():
            self.dialog.reject()
        dialog = PromotionDialog(self.ops, self.session, promotion_id, parent=self)
        dialog.run_requested.connect(self.run_requested)
        dialog.copied.connect(lambda text: self.status_message.emit(f"Copied {text}"))
        self.dialog = dialog
        dialog.open()
        self.ops.spawn(dialog.load())
        return dialog

    def open_why(self, promotion_id: UUID) -> WhyDialog:
        if self.why_dialog is not None and self.why_dialog.isVisible():
            self.why_dialog.reject()
        card = self.card(promotion_id)
        title = (
            f"Why is {card.promotion['release']} not in {card.promotion['environment']} yet?"
            if card is not None
            else "Why is it not moving?"
        )
        dialog = WhyDialog(self.ops, self.session, promotion_id, title, parent=self)
        self.why_dialog = dialog
        dialog.open()
        self.ops.spawn(dialog.load())
        return dialog
