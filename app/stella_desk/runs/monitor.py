"""The run monitor: the run's graph painted with live step states, its timeline, its log, and
what a person can do to it (cancel, retry a failed step, approve or reject a waiting approval).

The graph reuses the editor's document, scene, items and view, read-only: the template is
opened in a document of its own that nothing edits, cards cannot be moved, and the status of
each step is painted on its card from the engine's records (`NodeItem.set_status`), never stored
in the template. All state comes from a `RunWatch`; this widget only shows it and sends actions
through `Ops`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QResizeEvent, QShowEvent
from PySide6.QtWidgets import (
    QFrame,
    QGraphicsItem,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from stella_core.tenancy.model import ProductRole
from stella_desk import theme
from stella_desk.chrome import Card, label
from stella_desk.ops import OpFailed, Ops
from stella_desk.runs.live import RunSnapshot, RunWatch
from stella_desk.runs.log import RunLog
from stella_desk.runs.status import (
    FAILED_STEP,
    clock_text,
    duration_text,
    run_badge,
    run_terminal,
    status_text,
)
from stella_desk.runs.table import release_name
from stella_desk.runs.targets import TargetsPanel, TaskWatch
from stella_desk.runs.timeline import Timeline
from stella_desk.session import Session
from stella_desk.workflows.document import WorkflowDocument
from stella_desk.workflows.editor import ConfirmBar
from stella_desk.workflows.items import NodeItem
from stella_desk.workflows.scene import WorkflowScene
from stella_desk.workflows.steps import Registry
from stella_desk.workflows.view import CanvasView

if TYPE_CHECKING:
    from uuid import UUID

    from stella_core.workflows.model import RunInfo, StepRunInfo

WRITERS = (ProductRole.RELEASE_MANAGER, ProductRole.ADMIN)
PULSE_MS = 80  # a running card's halo breathes (only while a step runs)
PULSE_PERIOD_S = 1.4
CLOCK_MS = 1000  # the elapsed time and the growing timeline bars (while the run goes on)


class ApprovalStrip(QFrame):
    """A waiting approval: who may decide, a comment, Approve and Reject."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setProperty("kind", "approval")
        row = QHBoxLayout(self)
        row.setContentsMargins(12, 6, 8, 6)
        row.setSpacing(8)
        self.text = label()
        self.text.setWordWrap(True)
        row.addWidget(self.text, 1)
        self.comment = QLineEdit()
        self.comment.setPlaceholderText("Comment (optional)")
        self.comment.setMinimumWidth(220)
        row.addWidget(self.comment)
        self.approve = QPushButton("Approve")
        self.approve.setProperty("kind", "primary")
        self.reject = QPushButton("Reject")
        row.addWidget(self.approve)
        row.addWidget(self.reject)
        self.step_id: str | None = None
        self.hide()


class RunMonitor(QWidget):
    back_requested = Signal()
    status_message = Signal(str)

    def __init__(
        self,
        ops: Ops,
        session: Session,
        registry: Registry,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("page")
        self.ops = ops
        self.session = session
        self.watch = RunWatch(ops, session, self)
        # The editor's model and canvas, read-only: a document nothing edits and a scene that
        # follows it, parented here so the view never paints a collected scene.
        self.document = WorkflowDocument(self)
        self.scene = WorkflowScene(self.document, registry, self)
        self.view = CanvasView(self.scene)
        self.view.setAcceptDrops(False)
        self.log = RunLog()
        self.timeline = Timeline()
        # Each target's tasks and log lines, for the run's deploy steps.
        self.tasks = TaskWatch(ops, session, self)
        self.targets = TargetsPanel(self.tasks)
        self.selected: str | None = None
        self._titles: dict[str, str] = {}
        self._autofit = True
        self._fitting = False
        self._poll_error = ""
        self._pulse = QTimer(self)
        self._pulse.setInterval(PULSE_MS)
        self._pulse.timeout.connect(self._on_pulse)
        self._clock = QTimer(self)
        self._clock.setInterval(CLOCK_MS)
        self._clock.timeout.connect(self._on_clock)

        self._build()
        self._connect()
        self._show_run(None)

    # --- building --------------------------------------------------------------------------
    def _build(self) -> None:
        page = QVBoxLayout(self)
        page.setContentsMargins(18, 12, 18, 12)
        page.setSpacing(8)

        bar = QHBoxLayout()
        bar.setSpacing(10)
        self.back_button = QPushButton("← All runs")
        self.back_button.setProperty("kind", "link")
        self.back_button.setToolTip("Back to the list of runs")
        bar.addWidget(self.back_button)
        self.title = label("", "docname")
        bar.addWidget(self.title)
        self.badge = label("")
        bar.addWidget(self.badge)
        self.meta = label("", "muted")
        # The room that is left (its tooltip names the run): with Cancel shown for a running
        # run, its full width would widen the window past a 1280-pixel screen.
        self.meta.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        bar.addWidget(self.meta, 1)
        self.live_label = label("", "muted")
        bar.addWidget(self.live_label)
        self.retry_button = QPushButton("Retry step")
        self.retry_button.setToolTip("Run the failed step again; what succeeded stays done")
        self.cancel_button = QPushButton("Cancel run")
        self.cancel_button.setProperty("kind", "danger")
        self.cancel_button.setToolTip("Stop the run: running steps are stopped, none start")
        bar.addWidget(self.retry_button)
        bar.addWidget(self.cancel_button)
        page.addLayout(bar)

        self.error_label = label(kind="error", selectable=True)
        self.error_label.setWordWrap(True)
        self.error_label.hide()
        page.addWidget(self.error_label)
        self.confirm = ConfirmBar()
        page.addWidget(self.confirm)
        self.approval = ApprovalStrip()
        page.addWidget(self.approval)
        self.notice = label(kind="error", selectable=True)
        self.notice.setWordWrap(True)
        self.notice.hide()
        page.addWidget(self.notice)

        canvas = QFrame()
        canvas.setProperty("kind", "canvas")
        canvas_box = QVBoxLayout(canvas)
        canvas_box.setContentsMargins(1, 1, 1, 1)
        canvas_box.addWidget(self.view)

        log_card = Card()
        log_card.body.setContentsMargins(12, 10, 10, 10)
        log_card.body.addWidget(self.log, 1)
        log_card.setMinimumWidth(280)

        top = QSplitter(Qt.Orientation.Horizontal)
        top.addWidget(canvas)
        top.addWidget(log_card)
        top.setStretchFactor(0, 3)
        top.setStretchFactor(1, 2)
        top.setSizes([640, 360])
        top.setChildrenCollapsible(False)

        timeline_card = Card()
        timeline_card.body.setContentsMargins(12, 6, 10, 8)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(self.timeline)
        self.timeline_scroll = scroll
        # The timeline, and beside it (for a run that deploys) each target's progress.
        self.bottom_tabs = QTabWidget()
        self.bottom_tabs.setDocumentMode(True)
        self.bottom_tabs.addTab(scroll, "Timeline")
        self.bottom_tabs.addTab(self.targets, "Targets")
        self.bottom_tabs.setTabVisible(1, False)
        timeline_card.body.addWidget(self.bottom_tabs, 1)

        body = QSplitter(Qt.Orientation.Vertical)
        body.addWidget(top)
        body.addWidget(timeline_card)
        body.setStretchFactor(0, 3)
        body.setStretchFactor(1, 2)
        body.setSizes([400, 230])
        body.setChildrenCollapsible(False)
        page.addWidget(body, 1)

    def _connect(self) -> None:
        w = self.watch
        w.opened.connect(self._on_opened)
        w.run_changed.connect(self._on_run_changed)
        w.steps_changed.connect(self._on_steps_changed)
        w.events_added.connect(self.log.append)
        w.events_added.connect(self.timeline.add_events)
        w.poll_state.connect(self._on_poll_state)
        w.live_changed.connect(lambda _live: self._show_live())
        self.tasks.changed.connect(self._show_targets_tab)
        # Connected after the scene's own slot: the cards exist when this runs.
        self.document.reset.connect(self._lock_cards)
        self.scene.selected_nodes_changed.connect(self._on_selection)
        self.timeline.step_clicked.connect(self.select_step)
        self.back_button.clicked.connect(self.back_requested)
        self.cancel_button.clicked.connect(self.request_cancel)
        self.retry_button.clicked.connect(lambda: self.ops.spawn(self.retry()))
        self.approval.approve.clicked.connect(lambda: self.ops.spawn(self.approve()))
        self.approval.reject.clicked.connect(lambda: self.ops.spawn(self.reject()))
        self.view.zoom_changed.connect(self._on_zoom)

    # --- opening ---------------------------------------------------------------------------
    @property
    def run(self) -> RunInfo | None:
        return self.watch.run

    async def open_run(self, run_id: UUID) -> bool:
        """Show a run (its graph, states, timeline and log); then follow it live."""
        self.notice.hide()
        self.confirm.dismiss()
        if self.watch.run_id != run_id:
            self._show_run(None)
            self.title.setText("Opening the run…")
        try:
            snapshot = await self.watch.open(run_id)
        except OpFailed:
            self.title.setText("The run could not be opened")
            return False
        return snapshot is not None

    def clear(self) -> None:
        self.watch.clear()
        self.tasks.clear()
        self._show_run(None)

    def _on_opened(self, snapshot: RunSnapshot) -> None:
        template = snapshot.template
        self.selected = None
        self._titles = {n.id: n.name or n.id for n in template.nodes}
        self.document.open(template, origin=(template.name, template.version))
        for card in self.scene.item_for_node.values():
            card.set_status(None)
        self._paint_steps(list(snapshot.run.steps))
        self.timeline.set_run(snapshot.run.started_at, list(snapshot.run.steps), self._titles)
        self.timeline.add_events(snapshot.events)
        self.timeline.select(None)
        deploys = any(n.type == "deploy" for n in template.nodes)
        self.tasks.open(snapshot.run.id, enabled=deploys, settled=self.watch.settled)
        self.bottom_tabs.setTabVisible(1, deploys)
        if not deploys:
            self.bottom_tabs.setCurrentIndex(0)
        self._show_selection()
        self._show_run(snapshot.run)
        self._autofit = True
        QTimer.singleShot(0, self.fit)

    def _lock_cards(self) -> None:
        """Read-only canvas: cards select (to filter the log) but never move or connect."""
        for card in self.scene.item_for_node.values():
            card.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsMovable, False)
            for port in (card.input_port, card.output_port):
                port.setToolTip("")
                port.setAcceptHoverEvents(False)
                port.setCursor(Qt.CursorShape.ArrowCursor)

    def fit(self) -> None:
        self._fitting = True
        try:
            self.view.fit()
        finally:
            self._fitting = False

    def _on_zoom(self, _zoom: float) -> None:
        if not self._fitting:
            self._autofit = False  # the person zoomed: keep their view

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if self._autofit and self.run is not None:
            QTimer.singleShot(0, self.fit)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self._update_clock()

    def set_active(self, active: bool) -> None:
        """The page is on screen (or not): poll and animate only then."""
        self.watch.set_active(active)
        self.tasks.set_active(active)
        self._update_clock()

    # --- showing ---------------------------------------------------------------------------
    def card(self, step_id: str) -> NodeItem | None:
        return self.scene.item_for_node.get(step_id)

    def _paint_steps(self, steps: list[StepRunInfo]) -> None:
        for step in steps:
            card = self.scene.item_for_node.get(step.id)
            if card is None:
                continue
            status = None if step.status == "pending" else step.status
            card.set_status(status, f"{step.attempts} tries" if step.attempts > 1 else "")
            if status != "running":
                card.set_pulse(0.0)

    def _on_steps_changed(self, steps: list[StepRunInfo]) -> None:
        self.tasks.set_settled(self.watch.settled)
        self._paint_steps(steps)
        self.timeline.update_steps(steps)
        if self.selected is not None and any(s.id == self.selected for s in steps):
            self._show_selection(reset_log=False)
        self._update_actions()
        self._update_clock()

    def _on_run_changed(self, run: RunInfo) -> None:
        self.tasks.set_settled(self.watch.settled)
        self._show_run(run)

    def _show_run(self, run: RunInfo | None) -> None:
        if run is None:
            self.title.setText("")
            self.badge.setText("")
            self.badge.setStyleSheet("")
            self.meta.setText("")
            self.error_label.hide()
            self._update_actions()
            return
        release = release_name(run)
        self.title.setText(
            f"{run.template} v{run.template_version}" + (f" · {release}" if release else "")
        )
        fg, bg = run_badge(run.status)
        self.badge.setText(status_text(run.status))
        self.badge.setStyleSheet(
            f"color: {fg.name()}; background: {bg.name()}; border-radius: 9px;"
            "padding: 2px 10px; font-size: 12px; font-weight: 600;"
        )
        self._update_meta()
        self.error_label.setText(run.error or "")
        self.error_label.setVisible(bool(run.error))
        self._update_actions()
        self._update_clock()

    def _update_meta(self) -> None:
        run = self.run
        if run is None:
            return
        if run.started_at is None:
            text = f"created {clock_text(run.created_at)} by {run.created_by} · not started yet"
        else:
            end = run.finished_at
            span = (end or datetime.now(UTC)) - run.started_at
            verb = "ran" if end is not None else "running for"
            text = (
                f"started {run.started_at.astimezone():%Y-%m-%d %H:%M:%S} by {run.created_by}"
                f" · {verb} {duration_text(span)}"
            )
        self.meta.setText(text)
        self.meta.setToolTip(f"run {run.id}")

    def _on_poll_state(self, message: str) -> None:
        self._poll_error = message
        self._show_live()

    def _show_live(self) -> None:
        message = self._poll_error
        self.live_label.setText(message or ("● live" if self.watch.live else ""))
        self.live_label.setProperty("kind", "error" if message else "live")
        theme.repolish(self.live_label)

    # --- selection -------------------------------------------------------------------------
    def select_step(self, step_id: str | None) -> None:
        """Select a step as a click on its card would (None: the whole run)."""
        self.scene.select_nodes([step_id] if step_id else [])
        card = self.card(step_id) if step_id else None
        if card is not None:
            self.view.ensureVisible(card, 40, 40)

    def _on_selection(self, ids: list[str]) -> None:
        chosen = ids[0] if len(ids) == 1 else None
        if chosen == self.selected:
            return
        self.selected = chosen
        self._show_selection()

    def _show_selection(self, *, reset_log: bool = True) -> None:
        step = self.watch.steps.get(self.selected) if self.selected else None
        self.log.show_step(self.selected, step, self._titles.get(self.selected or "", ""))
        if reset_log:
            self.log.reset(self.watch.events)
        self.timeline.select(self.selected)
        self.targets.set_step(self.selected)
        if step is not None and step.type == "deploy" and self.bottom_tabs.isTabVisible(1):
            self.bottom_tabs.setCurrentIndex(1)  # a deploy step: its targets are the story
        self._update_actions()

    def _show_targets_tab(self) -> None:
        rows = self.tasks.data.rows()
        targets = len({r.target for r in rows})
        self.bottom_tabs.setTabText(1, f"Targets · {targets}" if targets else "Targets")

    # --- what can be done ------------------------------------------------------------------
    def _can_write(self) -> bool:
        identity = self.session.identity
        return identity is not None and identity.role in WRITERS

    def retry_target(self) -> str | None:
        """The failed step a retry would run again: the selected one, else the run's."""
        run = self.run
        if run is None or run.status not in ("failed", "timed_out") or run.phase != "main":
            return None
        steps = self.watch.steps
        if self.selected and steps.get(self.selected) is not None:
            chosen = steps[self.selected]
            return chosen.id if chosen.status in FAILED_STEP and not chosen.rollback else None
        failed = [s for s in steps.values() if s.status in FAILED_STEP and not s.rollback]
        return failed[0].id if failed else None

    def approval_target(self) -> StepRunInfo | None:
        """The waiting approval to decide: the selected one, else the run's first."""
        run = self.run
        if run is None or run_terminal(run.status):
            return None
        steps = self.watch.steps
        waiting = [s for s in steps.values() if s.type == "approval" and s.status == "waiting"]
        if self.selected is not None:
            chosen = steps.get(self.selected)
            if chosen is not None and chosen in waiting:
                return chosen
        return waiting[0] if waiting else None

    def may_decide(self, step: StepRunInfo) -> tuple[bool, str]:
        identity = self.session.identity
        approvers = [str(a) for a in (step.inputs or {}).get("approvers") or []]
        if identity is None:
            return False, "Not connected"
        if identity.user in approvers or identity.role.value in approvers:
            return True, ""
        return False, f"Only {', '.join(approvers) or 'its approvers'} may decide this step"

    def _update_actions(self) -> None:
        run = self.run
        writer = self._can_write()
        active = run is not None and not run_terminal(run.status)
        self.cancel_button.setVisible(active)
        self.cancel_button.setEnabled(active and writer)
        self.cancel_button.setToolTip(
            "Stop the run: running steps are stopped, none start"
            if writer
            else "Only a release manager or an admin can cancel a run"
        )
        target = self.retry_target()
        self.retry_button.setEnabled(target is not None and writer)
        self.retry_button.setText(f"Retry {target}" if target else "Retry step")
        self.retry_button.setVisible(run is not None and run.status in ("failed", "timed_out"))

        approval = self.approval_target()
        if approval is None:
            self.approval.hide()
            self.approval.step_id = None
            return
        inputs = approval.inputs or {}
        approvers = ", ".join(str(a) for a in inputs.get("approvers") or []) or "its approvers"
        required = inputs.get("required") or 1
        allowed, why = self.may_decide(approval)
        title = self._titles.get(approval.id, approval.id)
        text = f"<b>{title}</b> is waiting for a decision by {approvers} ({required} needed)."
        if not allowed:
            text += f" <i>{why}.</i>"
        if approval.id != self.approval.step_id:
            self.approval.comment.clear()
        self.approval.step_id = approval.id
        self.approval.text.setText(text)
        for widget in (self.approval.approve, self.approval.reject, self.approval.comment):
            widget.setEnabled(allowed)
        self.approval.show()

    # --- acting ----------------------------------------------------------------------------
    def request_cancel(self) -> None:
        run = self.run
        if run is None or run_terminal(run.status):
            return
        self.confirm.go.setText("Cancel run")
        self.confirm.keep.setText("Keep running")
        self.confirm.ask(
            f"Cancel this run of {run.template}? Running steps are stopped and no step starts.",
            self._spawn_cancel,
        )

    def _spawn_cancel(self) -> None:
        self.ops.spawn(self.cancel())

    async def cancel(self) -> RunInfo | None:
        run = self.run
        if run is None:
            return None
        stella = self.session.require()
        return await self._act(
            lambda: stella.workflows.cancel_run(run.id),
            f"Cancelling the run of {run.template}",
            "Run cancelled",
        )

    async def retry(self, step_id: str | None = None) -> RunInfo | None:
        run = self.run
        target = step_id or self.retry_target()
        if run is None or target is None:
            return None
        stella = self.session.require()
        return await self._act(
            lambda: stella.workflows.retry_step(run.id, target),
            f"Retrying {target}",
            f"Retrying {target}",
        )

    async def approve(
        self, step_id: str | None = None, comment: str | None = None
    ) -> RunInfo | None:
        return await self._decide(True, step_id, comment)

    async def reject(
        self, step_id: str | None = None, comment: str | None = None
    ) -> RunInfo | None:
        return await self._decide(False, step_id, comment)

    async def _decide(
        self, approve: bool, step_id: str | None, comment: str | None
    ) -> RunInfo | None:
        run = self.run
        target = step_id or self.approval.step_id
        if target is None:
            chosen = self.approval_target()
            target = chosen.id if chosen else None
        if run is None or target is None:
            return None
        text = self.approval.comment.text().strip() if comment is None else comment
        stella = self.session.require()
        service = stella.workflows
        decide = service.approve if approve else service.reject
        verb = "Approved" if approve else "Rejected"
        result = await self._act(
            lambda: decide(run.id, target, text),
            f"{'Approving' if approve else 'Rejecting'} {target}",
            f"{verb} {target}",
        )
        if result is not None:
            self.approval.comment.clear()
        return result

    async def _act(self, call: Callable[[], RunInfo], what: str, done: str) -> RunInfo | None:
        self.notice.hide()
        buttons = [
            self.cancel_button,
            self.retry_button,
            self.approval.approve,
            self.approval.reject,
        ]
        for button in buttons:
            button.setEnabled(False)
        try:
            run = await self.ops.run(
                lambda _report: call(),
                label=what,
                present_errors=False,  # shown here, next to the run it is about
            )
        except OpFailed as exc:
            self.notice.setText(f"{what} failed: {exc.message}")
            self.notice.show()
            self.status_message.emit(f"{what} failed")
            self._update_actions()
            return None
        self.watch.apply_run(run)
        self.status_message.emit(done)
        with contextlib.suppress(OpFailed):
            await self.watch.refresh()
        self._update_actions()
        return self.run

    # --- animation and the clock -----------------------------------------------------------
    def _running_cards(self) -> list[NodeItem]:
        return [c for c in self.scene.item_for_node.values() if c.status == "running"]

    def _update_clock(self) -> None:
        """Animate running cards and tick the clock only while there is something to show."""
        visible = self.isVisible() and self.run is not None
        running = self._running_cards() if visible else []
        self._set_timer(self._pulse, bool(running))
        self._set_timer(self._clock, visible and not self.watch.settled)
        if not running:
            for card in self.scene.item_for_node.values():
                if card.pulse:
                    card.set_pulse(0.0)
        self._show_live()

    @staticmethod
    def _set_timer(timer: QTimer, on: bool) -> None:
        if on and not timer.isActive():
            timer.start()
        elif not on and timer.isActive():
            timer.stop()

    def _on_pulse(self) -> None:
        phase = 0.5 + 0.5 * math.sin(2 * math.pi * time.monotonic() / PULSE_PERIOD_S)
        for card in self._running_cards():
            card.set_pulse(round(phase, 2))

    def _on_clock(self) -> None:
        self._update_meta()
        if self.timeline.running:
            self.timeline.update()
