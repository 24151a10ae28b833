"""Per-target progress of a run's deploy steps: each target's tasks and their log lines, live.

A deploy step writes one task per target and purpose (deploy, write-sticker, ...) into
`deploy.tasks`, naming the run and the step; the target's agent (or, agentless, the worker)
appends progress and log lines to `deploy.task_events`. `TaskWatch` reads both for the run
shown (`DeployService.run_tasks_in`, then `task_events_in(after=seq)`: only what is new) every
`POLL_MS` while the monitor is on screen and anything is still open, always on a worker thread
through `Ops`. `TargetsPanel` shows one row per step and target, and the selected row's lines.

What an agent sends is untrusted text: lines are shown as plain text, control characters
removed and length bounded.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QColor, QTextCursor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QPlainTextEdit,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from stella_desk import humane, theme
from stella_desk.chrome import label
from stella_desk.ops import OpFailed, Ops
from stella_desk.session import Session

if TYPE_CHECKING:
    from stella_core.bootstrap import Stella
    from stella_core.deploy.tasks import TaskState

AnyIndex = QModelIndex | QPersistentModelIndex
POLL_MS = 700
RETRY_MS = 3000
MAX_LINE = 2000  # characters of one line shown
MAX_LINES = 20_000
OPEN = frozenset({"queued", "delivered", "running"})
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]|\x1b\[[0-9;?]*[A-Za-z]")

# A target's status (from its tasks) -> text colour.
STATUS_COLOURS = {
    "queued": "#6b7280",
    "delivered": "#1d4ed8",
    "running": "#1d4ed8",
    "succeeded": "#15803d",
    "failed": "#b91c1c",
    "expired": "#b91c1c",
    "cancelled": "#374151",
}
MARKS = {"succeeded": "✓", "failed": "✕", "expired": "✕", "cancelled": "-"}


def clean(text: object) -> str:
    """An agent's line made safe to show: no control characters or colour codes, bounded."""
    line = _CONTROL.sub("", str(text)).replace("\t", "  ")
    return line if len(line) <= MAX_LINE else line[:MAX_LINE] + "…"


@dataclass(frozen=True)
class TaskLine:
    seq: int
    task_id: UUID
    kind: str
    text: str
    at: datetime | None

    def shown(self, task_type: str) -> str:
        return f"{humane.clock(self.at)}  {task_type:<13} {self.text}".rstrip()


def line_of(event: dict[str, Any]) -> TaskLine:
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    kind = str(event.get("kind") or "")
    assert isinstance(data, dict)
    if kind == "log":
        text = clean(data.get("line", ""))
    elif kind == "progress":
        fraction = data.get("fraction")
        share = f" ({float(fraction):.0%})" if isinstance(fraction, int | float) else ""
        text = clean(data.get("message", "")) + share
    elif kind == "result":
        ok = data.get("ok")
        why = clean(data.get("error") or data.get("error_type") or "")
        text = "[done]" if ok else f"[failed] {why}".rstrip()
    else:  # queued, delivered, started, expired, cancelled, refused
        words = ", ".join(f"{k}={clean(v)}" for k, v in sorted(data.items()) if v is not None)
        text = f"[{kind}]" + (f" {words}" if words else "")
    return TaskLine(
        seq=int(event["seq"]),
        task_id=UUID(str(event["task_id"])),
        kind=kind,
        text=text,
        at=event.get("at"),
    )


@dataclass(frozen=True)
class TargetRow:
    """One target's tasks in one step, oldest first."""

    node_id: str
    target: str
    tasks: tuple[TaskState, ...]
    last_line: str = ""

    @property
    def status(self) -> str:
        states = [t.status.value for t in self.tasks]
        for bad in ("failed", "expired", "cancelled"):
            if bad in states:
                return bad
        for going in ("running", "delivered", "queued"):
            if going in states:
                return "running" if going == "delivered" else going
        return "succeeded" if states else "queued"

    @property
    def error(self) -> str:
        for task in self.tasks:
            if task.outcome is not None and not task.outcome.ok and task.outcome.error:
                return clean(task.outcome.error)
        return ""

    def tasks_text(self) -> str:
        return "  ".join(f"{t.type} {MARKS.get(t.status.value, '…')}".strip() for t in self.tasks)


@dataclass
class RunTasks:
    """What is known of a run's tasks: their states and every line read so far."""

    tasks: list[tuple[str | None, TaskState]] = field(default_factory=list)
    lines: list[TaskLine] = field(default_factory=list)

    @property
    def last_seq(self) -> int:
        return self.lines[-1].seq if self.lines else 0

    @property
    def open(self) -> bool:
        return any(state.status.value in OPEN for _node, state in self.tasks)

    def rows(self) -> list[TargetRow]:
        last: dict[UUID, str] = {}
        for line in self.lines:
            if line.kind in ("log", "progress"):
                last[line.task_id] = line.text
        grouped: dict[tuple[str, str], list[TaskState]] = {}
        for node, state in self.tasks:
            grouped.setdefault((node or "", state.target), []).append(state)
        rows = []
        for (node, target), states in grouped.items():
            latest = [last[s.id] for s in states if s.id in last]
            rows.append(TargetRow(node, target, tuple(states), latest[-1] if latest else ""))
        return rows


# --- worker-thread function (called inside `ops.run`) ----------------------------------------
def read_tasks(
    stella: Stella, run_id: UUID, after: int
) -> tuple[list[tuple[str | None, TaskState]], list[dict[str, Any]]]:
    from stella_core.deploy.service import DeployService

    with stella.db.transaction() as conn:
        tasks = DeployService.run_tasks_in(conn, run_id)
        events = DeployService.task_events_in(conn, [s.id for _n, s in tasks], after=after)
    return tasks, events


class TaskWatch(QObject):
    """A run's deploy tasks, kept current while it is shown (see the module's docstring)."""

    changed = Signal()  # tasks or lines changed
    lines_added = Signal(list)  # list[TaskLine], in order

    def __init__(self, ops: Ops, session: Session, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.ops = ops
        self.session = session
        self.run_id: UUID | None = None
        self.data = RunTasks()
        self.enabled = False  # the run's workflow has a deploy step
        self.run_settled = True
        self.polls = 0
        self._active = False
        self._polling = False
        self._generation = 0
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._tick)

    def open(self, run_id: UUID, *, enabled: bool, settled: bool) -> None:
        """Another run: start over (and read at once, when it deploys)."""
        self._generation += 1
        self.run_id = run_id
        self.enabled = enabled
        self.run_settled = settled
        self.data = RunTasks()
        self.changed.emit()
        self._schedule()
        if enabled:
            self._tick()

    def clear(self) -> None:
        self._generation += 1
        self.run_id = None
        self.enabled = False
        self.data = RunTasks()
        self.changed.emit()
        self._schedule()

    def set_active(self, active: bool) -> None:
        self._active = active
        self._schedule()

    def set_settled(self, settled: bool) -> None:
        was = self.run_settled
        self.run_settled = settled
        if settled and not was and self.enabled:
            self._tick()  # the last lines written as the step ended
        self._schedule()

    @property
    def live(self) -> bool:
        return self._timer.isActive()

    def _schedule(self) -> None:
        wanted = self._active and self.enabled and (not self.run_settled or self.data.open)
        if not wanted:
            self._timer.stop()
        elif not self._timer.isActive():
            self._timer.start()

    def _tick(self) -> None:
        if self._polling or self.run_id is None or not self.session.ready:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # the loop has ended (shutdown)
            self._timer.stop()
            return
        self.ops.spawn(self.poll())

    async def poll(self) -> bool:
        """Read what is new once; True when anything changed."""
        run_id = self.run_id
        if run_id is None or self._polling:
            return False
        self._polling = True
        generation = self._generation
        after = self.data.last_seq
        stella = self.session.require()
        try:
            tasks, events = await self.ops.run(
                lambda _report: read_tasks(stella, run_id, after),
                label="Watching the run's targets",
                present_errors=False,  # the run's own watch says when reads fail
            )
        except OpFailed:
            if generation == self._generation:
                self._timer.setInterval(RETRY_MS)
            return False
        finally:
            self._polling = False
        if generation != self._generation:
            return False
        self.polls += 1
        self._timer.setInterval(POLL_MS)
        fresh = [line_of(e) for e in events if int(e["seq"]) > after]
        moved = tasks != self.data.tasks
        self.data.tasks = list(tasks)
        self.data.lines.extend(fresh)
        if moved or fresh:
            self.changed.emit()
        if fresh:
            self.lines_added.emit(fresh)
        self._schedule()
        return bool(moved or fresh)

    async def refresh(self) -> bool:
        while self._polling:
            await asyncio.sleep(0.02)
        return await self.poll()


class TargetModel(QAbstractTableModel):
    HEADERS = ("Step", "Target", "Status", "Tasks", "Last line")

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.rows: list[TargetRow] = []

    def set_rows(self, rows: list[TargetRow]) -> None:
        if [(r.node_id, r.target) for r in rows] == [(r.node_id, r.target) for r in self.rows]:
            self.rows = rows  # same rows: repaint in place, the selection stays
            if rows:
                self.dataChanged.emit(self.index(0, 0), self.index(len(rows) - 1, 4))
            return
        self.beginResetModel()
        self.rows = rows
        self.endResetModel()

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008 (Qt's signature)
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.HEADERS)

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return (row.node_id, row.target, row.status, row.tasks_text(), row.last_line)[column]
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == 2 and row.error:
                return row.error
            if column == 4:
                return row.last_line or None
            return None
        if role == Qt.ItemDataRole.ForegroundRole and column == 2:
            return QColor(STATUS_COLOURS.get(row.status, theme.MUTED))
        return None

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.HEADERS[section]
        return None


def _table(model: QAbstractTableModel, widths: Iterable[int]) -> QTableView:
    """A read-only, single-selection table, as the desk's other record tables are."""
    view = QTableView()
    view.setModel(model)
    view.setShowGrid(False)
    view.setWordWrap(False)
    view.setTextElideMode(Qt.TextElideMode.ElideRight)
    view.setCornerButtonEnabled(False)
    rows = view.verticalHeader()
    rows.hide()
    rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
    rows.setDefaultSectionSize(28)
    view.setAlternatingRowColors(True)
    view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    head = view.horizontalHeader()
    head.setHighlightSections(False)
    head.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    head.setStretchLastSection(True)
    for column, width in enumerate(widths):
        head.resizeSection(column, width)
    return view


class TargetsPanel(QWidget):
    """The rows of the step selected on the graph (every deploy step's when none is), and the
    lines of the row selected (every shown row's when none is)."""

    def __init__(self, watch: TaskWatch, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.watch = watch
        self.step_id: str | None = None
        self.model = TargetModel(self)
        self.view = _table(self.model, (80, 90, 95, 170))
        self.view.setMinimumWidth(240)
        self.log = QPlainTextEdit()
        self.log.setObjectName("runLog")
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(MAX_LINES)
        self.log.setFont(theme.mono_font(8.5))
        self.log.setMinimumWidth(200)
        self.log.setPlaceholderText("Log lines of the targets' tasks appear here as they come.")
        self.heading = label("", "section")
        self.empty = label("", "muted")
        self.empty.setWordWrap(True)

        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(4)
        column.addWidget(self.empty)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.view)
        right = QWidget()
        box = QVBoxLayout(right)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(4)
        box.addWidget(self.heading)
        box.addWidget(self.log, 1)
        split.addWidget(right)
        split.setSizes([520, 460])
        split.setChildrenCollapsible(False)
        column.addWidget(split, 1)

        watch.changed.connect(self._show_rows)
        watch.lines_added.connect(self._append)
        self.view.selectionModel().currentRowChanged.connect(lambda *_: self._reset_log())
        self._show_rows()

    # --- what is shown ---------------------------------------------------------------------
    def set_step(self, step_id: str | None) -> None:
        self.step_id = step_id
        self._show_rows()

    def rows(self) -> list[TargetRow]:
        rows = self.watch.data.rows()
        if self.step_id is not None and any(r.node_id == self.step_id for r in rows):
            rows = [r for r in rows if r.node_id == self.step_id]
        return rows

    def selected_row(self) -> TargetRow | None:
        index = self.view.currentIndex()
        return self.model.rows[index.row()] if index.isValid() else None

    def select_target(self, target: str) -> bool:
        for i, row in enumerate(self.model.rows):
            if row.target == target:
                self.view.selectRow(i)
                return True
        return False

    def _show_rows(self) -> None:
        keep = self.selected_row()
        rows = self.rows()
        before = [(r.node_id, r.target) for r in self.model.rows]
        self.model.set_rows(rows)
        if [(r.node_id, r.target) for r in rows] != before:
            if keep is not None:
                self.select_target(keep.target)
            self._reset_log()
        if not self.watch.enabled:
            self.empty.setText("This run's workflow deploys nowhere: it has no deploy step.")
        elif not rows:
            self.empty.setText("No target has been given a task yet.")
        else:
            done = sum(1 for r in rows if r.status == "succeeded")
            failed = sum(1 for r in rows if r.status in ("failed", "expired"))
            words = f"{done} of {len(rows)} targets done"
            self.empty.setText(words + (f" · {failed} failed" if failed else ""))

    def _task_types(self) -> dict[UUID, str]:
        return {s.id: s.type for _n, s in self.watch.data.tasks}

    def _chosen_tasks(self) -> set[UUID]:
        row = self.selected_row()
        rows = [row] if row is not None else self.model.rows
        return {t.id for r in rows for t in r.tasks}

    def _reset_log(self) -> None:
        row = self.selected_row()
        self.heading.setText(
            f"LOG · {row.target.upper()} · {row.node_id.upper()}" if row else "LOG · EVERY TARGET"
        )
        self.log.clear()
        self._write(self.watch.data.lines)

    def _append(self, lines: list[TaskLine]) -> None:
        self._write(lines)

    def _write(self, lines: Iterable[TaskLine]) -> None:
        chosen = self._chosen_tasks()
        types = self._task_types()
        row = self.selected_row()
        shown = [line for line in lines if line.task_id in chosen]
        if not shown:
            return
        bar = self.log.verticalScrollBar()
        at_end = bar.value() >= bar.maximum() - 4
        for line in shown:
            prefix = "" if row is not None else f"{self._target_of(line.task_id)}  "
            self.log.appendPlainText(prefix + line.shown(types.get(line.task_id, "")))
        if at_end:
            self.log.moveCursor(QTextCursor.MoveOperation.End)
            bar.setValue(bar.maximum())

    def _target_of(self, task_id: UUID) -> str:
        for _n, state in self.watch.data.tasks:
            if state.id == task_id:
                return state.target
        return "?"

    def plain_text(self) -> str:
        return self.log.toPlainText()
