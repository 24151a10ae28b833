"""The Runs page: every run of the tenant's workflows, newest first, and the live monitor.

The list and the monitor share the page (a stack): choosing a run opens its monitor over the
whole page, since a graph, a log and a timeline need the room; "All runs" goes back. "Start run"
starts a stored template on a release. The list follows the monitor (a run it watches updates
its own row) and reloads itself every few seconds while it shows runs that are still going.
Above both, a notice says when script steps may run without a sandbox, or cannot run here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from PySide6.QtCore import (
    QItemSelectionModel,
    QModelIndex,
    QPersistentModelIndex,
    QTimer,
    Signal,
)
from PySide6.QtGui import QHideEvent, QShowEvent
from PySide6.QtWidgets import (
    QLineEdit,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from stella_desk import theme
from stella_desk.chrome import PAGE_MARGINS, PageHeader, label
from stella_desk.ops import Change, OpChanges, OpFailed, Ops, Reads
from stella_desk.runs.monitor import WRITERS, RunMonitor
from stella_desk.runs.sandbox import SandboxNotice, sandbox_notice
from stella_desk.runs.start import StartRunDialog
from stella_desk.runs.status import ACTIVE_RUN
from stella_desk.runs.table import (
    Column,
    RunFilterProxy,
    RunRole,
    RunTableModel,
    StatusBadgeDelegate,
)
from stella_desk.runs.worker import DeskWorker, reason_not_to_serve
from stella_desk.session import Session
from stella_desk.tables import record_view
from stella_desk.workflows.steps import Registry

if TYPE_CHECKING:
    from stella_core.workflows.model import RunInfo

RUN_LIMIT = 10_000  # newest runs listed
LIST_REFRESH_MS = 5000  # while the list shows runs still going and the change feed is down

COLUMN_WIDTHS = {
    Column.TEMPLATE: 220,
    Column.VERSION: 80,
    Column.RELEASE: 190,
    Column.STATUS: 140,
    Column.STARTED: 160,
}

RUNS_STYLE = f"""
QLabel[kind="docname"] {{ font-size: 18px; font-weight: 600; }}
QLabel[kind="live"] {{ color: #16a34a; font-weight: 600; }}
QPushButton[kind="link"] {{
    border: none; background: transparent; color: {theme.ACCENT}; font-weight: 600;
    padding: 4px 2px;
}}
QPushButton[kind="link"]:hover {{ color: {theme.ACCENT_DARK}; text-decoration: underline; }}
QPushButton[kind="danger"] {{ color: {theme.DANGER}; }}
QPushButton[kind="danger"]:hover {{ border-color: {theme.DANGER}; }}
QPushButton[kind="danger"]:disabled {{ color: #c9a3a3; }}
QFrame[kind="canvas"] {{
    background: {theme.BACKGROUND}; border: 1px solid {theme.BORDER}; border-radius: 10px;
}}
QFrame[kind="confirm"] {{ background: #fff8e6; border: 1px solid #f1d48a; border-radius: 8px; }}
QFrame[kind="approval"] {{ background: #fff8eb; border: 1px solid #f3cf8c; border-radius: 8px; }}
QPlainTextEdit#runLog {{
    background: {theme.SURFACE}; border: 1px solid {theme.BORDER}; border-radius: 8px;
    selection-background-color: #e7e6fd; selection-color: {theme.TEXT};
}}
QScrollBar:vertical {{ background: transparent; width: 8px; margin: 0; }}
QScrollBar::handle:vertical {{ background: #cfd4e0; border-radius: 4px; min-height: 24px; }}
QScrollBar::add-line, QScrollBar::sub-line {{ height: 0; width: 0; }}
QScrollBar::add-page, QScrollBar::sub-page {{ background: transparent; }}
"""


class RunsPage(QWidget):
    loaded = Signal()  # after every (re)load of the list
    status_message = Signal(str)

    def __init__(
        self,
        ops: Ops,
        session: Session,
        registry: Registry,
        *,
        worker: DeskWorker | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("page")
        self.setStyleSheet(RUNS_STYLE)
        self.ops = ops
        self.session = session
        self.worker = worker
        self.model = RunTableModel(self)
        self.proxy = RunFilterProxy(self.model, self)
        self.dialog: StartRunDialog | None = None
        self._generation = 0
        self._reads = Reads()
        self._list_timer = QTimer(self)
        self._list_timer.setInterval(LIST_REFRESH_MS)
        self._list_timer.timeout.connect(self._refresh_tick)

        self.stack = QStackedWidget()
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        self.sandbox_notice = SandboxNotice()
        column.addWidget(self.sandbox_notice)
        column.addWidget(self.stack)
        self.list_page = self._build_list()
        self.monitor = RunMonitor(ops, session, registry)
        self.stack.addWidget(self.list_page)
        self.stack.addWidget(self.monitor)

        self.monitor.back_requested.connect(self.show_list)
        self.monitor.status_message.connect(self.status_message)
        self.monitor.watch.run_changed.connect(self.model.upsert)
        self.monitor.watch.opened.connect(lambda snap: self.model.upsert(snap.run))
        ops.changed.connect(self._on_changes)
        self._update_count()

    def _build_list(self) -> QWidget:
        page = QWidget()
        page.setObjectName("page")
        box = QVBoxLayout(page)
        box.setContentsMargins(*PAGE_MARGINS)
        box.setSpacing(12)
        header = PageHeader(
            "Runs", "Every run of your workflows: start one on a release, watch it live."
        )
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter: template, release, status or person")
        self.filter.setClearButtonEnabled(True)
        self.filter.setMinimumWidth(300)
        self.start_button = QPushButton("Start run")
        self.start_button.setProperty("kind", "primary")
        header.action_row.addWidget(self.filter)
        header.action_row.addWidget(self.start_button)
        box.addWidget(header)

        self.view = record_view(
            self.proxy, column_widths=COLUMN_WIDTHS, sort_column=Column.STARTED, row_height=32
        )
        self.view.setItemDelegateForColumn(Column.STATUS, StatusBadgeDelegate(self.view))
        self.view.setToolTip("Click a run to watch it")
        box.addWidget(self.view, 1)

        footer = QVBoxLayout()
        footer.setSpacing(2)
        self.count = label(kind="muted")
        self.worker_label = label(kind="muted")
        self.worker_label.setWordWrap(True)
        footer.addWidget(self.count)
        footer.addWidget(self.worker_label)
        box.addLayout(footer)

        self.filter.textChanged.connect(self._on_filter)
        self.start_button.clicked.connect(lambda _checked=False: self.open_start_dialog())
        # A click (or Enter) opens the monitor; moving with the arrow keys only selects.
        self.view.clicked.connect(self._on_activated)
        self.view.activated.connect(self._on_activated)
        self.proxy.modelReset.connect(self._update_count)
        self.proxy.rowsInserted.connect(self._update_count)
        self.proxy.layoutChanged.connect(self._update_count)
        return page

    # --- loading ---------------------------------------------------------------------------
    async def refresh(self) -> None:
        """Fetch the list; start this window's worker the first time, if it should run one."""
        generation = self._generation = self._reads.begin()
        stella = self.session.require()
        self._serve()
        self._update_actions()
        try:
            runs, settings = await self.ops.run(
                lambda _report: (
                    stella.workflows.list_runs(RUN_LIMIT),
                    stella.workflows.settings(),
                ),
                label="Loading runs",
            )
        except OpFailed:
            return  # presented by the window's banner
        finally:
            self._reads.end()
        if generation != self._generation:
            await self._reads.settle(generation)  # a newer read: its result is the answer
            return
        self._reads.land(generation)
        runs_here = self.worker is not None and self.worker.running
        self.sandbox_notice.show_notice(sandbox_notice(settings, runs_here=runs_here))
        selected = self.selected_run()
        self.model.set_runs(runs)
        if selected is not None:
            self._select_row(selected.id)
        self._update_count()
        self._schedule_list()
        self.loaded.emit()

    def _serve(self) -> None:
        stella = self.session.stella
        if self.worker is None or stella is None:
            self.worker_label.setText("")
            return
        note = ""
        if not self.worker.running:
            reason = reason_not_to_serve(stella, self.session.identity)
            if reason is not None:
                self.worker_label.setText(f"This window runs no steps: {reason}.")
                return
            if self.worker.error:
                note = f" It stopped once ({self.worker.error}) and was started again."
            self.worker.start(stella)
        self.worker_label.setText(
            "Steps run in this window (an in-process worker), and on any 'stella serve' "
            f"sharing this database.{note}"
        )

    def _refresh_tick(self) -> None:
        if self.isVisible() and self.stack.currentWidget() is self.list_page and self.session.ready:
            self.ops.spawn(self.refresh())

    def _schedule_list(self) -> None:
        # Polled only while changes made elsewhere are not heard (the change feed is down).
        going = not self.session.live and any(r.status in ACTIVE_RUN for r in self.model.runs())
        on_screen = self.isVisible() and self.stack.currentWidget() is self.list_page
        if going and on_screen:
            if not self._list_timer.isActive():
                self._list_timer.start()
        else:
            self._list_timer.stop()

    def _on_changes(self, changes: OpChanges) -> None:
        if not self.session.ready:
            return
        if changes.touches(Change.PERSON):
            self._update_actions()
            self.ops.spawn(self.refresh())
            if self.monitor.run is not None:
                self.ops.spawn(self.monitor.open_run(self.monitor.run.id))
        elif (
            changes.touches(Change.RUNS)
            and self.isVisible()
            and self.stack.currentWidget() is self.list_page
        ):
            # Off screen or in the monitor, showing the list reads it again anyway.
            self.ops.spawn(self.refresh())

    # --- list and monitor ------------------------------------------------------------------
    def selected_run(self) -> RunInfo | None:
        index = self.view.currentIndex()
        run = index.data(RunRole) if index.isValid() else None
        return run if run is not None else None

    def _select_row(self, run_id: UUID) -> bool:
        row = self.model.row_of(run_id)
        if row is None:
            return False
        index = self.proxy.mapFromSource(self.model.index(row, 0))
        if not index.isValid():
            self.filter.clear()
            index = self.proxy.mapFromSource(self.model.index(row, 0))
        flags = (
            QItemSelectionModel.SelectionFlag.ClearAndSelect
            | QItemSelectionModel.SelectionFlag.Rows
        )
        self.view.selectionModel().setCurrentIndex(index, flags)
        self.view.scrollTo(index)
        return True

    def _on_activated(self, index: QModelIndex | QPersistentModelIndex) -> None:
        if self.stack.currentWidget() is self.monitor:
            return  # a click that also activates (some platforms): opened already
        run = index.data(RunRole) if index.isValid() else None
        if run is not None:
            self.ops.spawn(self.open_run(run.id))

    async def open_run(self, run_id: UUID) -> bool:
        """Show a run's monitor (and select its row for when the person comes back)."""
        self._select_row(run_id)
        self.stack.setCurrentWidget(self.monitor)
        self._list_timer.stop()
        self.monitor.set_active(self.isVisible())
        return await self.monitor.open_run(run_id)

    def show_list(self) -> None:
        self.monitor.set_active(False)
        self.stack.setCurrentWidget(self.list_page)
        self.view.setFocus()
        self._schedule_list()
        if self.session.ready:
            self.ops.spawn(self.refresh())

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self.monitor.set_active(self.stack.currentWidget() is self.monitor)
        self._schedule_list()

    def hideEvent(self, event: QHideEvent) -> None:
        super().hideEvent(event)
        self.monitor.set_active(False)
        self._list_timer.stop()

    async def shutdown(self, timeout: float) -> bool:
        """Stop polling and this window's worker (bounded); True when the worker has ended."""
        self.monitor.set_active(False)
        self._list_timer.stop()
        if self.worker is None:
            return True
        return await self.worker.stop(timeout)

    # --- filter and counts -----------------------------------------------------------------
    def _on_filter(self, text: str) -> None:
        self.proxy.set_filter_text(text)
        self._update_count()

    def _update_count(self) -> None:
        total = self.model.rowCount()
        shown = self.proxy.rowCount()
        going = sum(1 for r in self.model.runs() if r.status in ACTIVE_RUN)
        if total == 0:
            self.count.setText("No runs yet. Start one with Start run.")
            return
        text = f"{shown:,} of {total:,} runs match" if self.proxy.terms else f"{total:,} runs"
        if going:
            text += f" · {going} still going"
        if total >= RUN_LIMIT:
            text += f" (the newest {RUN_LIMIT:,})"
        self.count.setText(text)

    def _update_actions(self) -> None:
        identity = self.session.identity
        writer = identity is not None and identity.role in WRITERS
        self.start_button.setEnabled(writer)
        self.start_button.setToolTip(
            "Start a stored workflow template, on a release"
            if writer
            else "Only a release manager or an admin can start a run"
        )

    # --- starting --------------------------------------------------------------------------
    def open_start_dialog(self, release: str | None = None) -> StartRunDialog:
        if self.dialog is not None and self.dialog.isVisible():
            self.dialog.raise_()
            return self.dialog
        dialog = StartRunDialog(self.ops, self.session, release=release, parent=self)
        dialog.started.connect(self._on_started)
        self.dialog = dialog
        dialog.open()  # window-modal but asynchronous: the loop keeps running
        self.ops.spawn(dialog.load())
        return dialog

    def _on_started(self, run: RunInfo) -> None:
        self.model.upsert(run)
        self._update_count()
        self.status_message.emit(f"Started {run.template} v{run.template_version}")
        self.ops.spawn(self.open_run(run.id))
