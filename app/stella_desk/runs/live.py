"""One run, kept current: its record, its steps and its log, polled from the run log.

The watch reads `run_events(run_id, after_seq=last)` every `POLL_MS` while the run is shown and
has not settled; only when new entries arrived does it read the run again, and then it tells the
views which steps differ and which entries are new, so a card repaints only when its step
changed and the log only appends. Every read goes through `Ops` on a worker thread; results are
applied on the UI thread. A newer `open` supersedes an older one still in flight.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

from PySide6.QtCore import QObject, QTimer, Signal

from stella_desk.ops import OpFailed, Ops
from stella_desk.runs.status import run_terminal
from stella_desk.session import Session

if TYPE_CHECKING:
    from stella_core.bootstrap import Stella
    from stella_core.workflows.model import RunEvent, RunInfo, StepRunInfo, Template

POLL_MS = 500
RETRY_MS = 3000  # after a failed poll: try again, less often


@dataclass(frozen=True)
class RunSnapshot:
    run: RunInfo
    template: Template
    events: list[RunEvent]


# --- worker-thread functions (called inside `ops.run`) ---------------------------------------
def load_run(stella: Stella, run_id: UUID) -> RunSnapshot:
    service = stella.workflows
    events = service.run_events(run_id)
    run = service.get_run(run_id, steps=True)
    template = service.get_template(run.template, run.template_version)
    return RunSnapshot(run, template, events)


def poll_run(stella: Stella, run_id: UUID, after_seq: int) -> tuple[list[RunEvent], RunInfo | None]:
    """New log entries; the run again only when there are any (it changed)."""
    service = stella.workflows
    events = service.run_events(run_id, after_seq=after_seq)
    return events, (service.get_run(run_id, steps=True) if events else None)


class RunWatch(QObject):
    opened = Signal(object)  # RunSnapshot: views start over
    run_changed = Signal(object)  # RunInfo: the run's own fields (status, error, times)
    steps_changed = Signal(list)  # list[StepRunInfo]: only the steps that differ
    events_added = Signal(list)  # list[RunEvent]: only the new entries, in order
    poll_state = Signal(str)  # why live updates pause ("" once they work again)
    live_changed = Signal(bool)  # polling started or stopped

    def __init__(self, ops: Ops, session: Session, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.ops = ops
        self.session = session
        self.run: RunInfo | None = None
        self.template: Template | None = None
        self.steps: dict[str, StepRunInfo] = {}
        self.events: list[RunEvent] = []
        self.last_seq = 0
        self.polls = 0  # completed polls (tests and the status line read it)
        self.last_changed: list[str] = []  # step ids the last change touched
        self._generation = 0
        self._polling = False
        self._active = False
        self._failing = False
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._tick)

    # --- state ---------------------------------------------------------------------------------
    @property
    def run_id(self) -> UUID | None:
        return self.run.id if self.run is not None else None

    @property
    def settled(self) -> bool:
        """Nothing more will happen: the run ended and no step is still running (a step that
        was running when its run was cancelled settles a moment later)."""
        if self.run is None:
            return True
        running = any(s.status == "running" for s in self.steps.values())
        return run_terminal(self.run.status) and not running

    @property
    def live(self) -> bool:
        """Polling now (a shown run that has not ended)."""
        return self._timer.isActive()

    def set_active(self, active: bool) -> None:
        """Poll only while the run is on screen."""
        self._active = active
        self._schedule()

    def clear(self) -> None:
        self._generation += 1
        self.run = None
        self.template = None
        self.steps = {}
        self.events = []
        self.last_seq = 0
        self._schedule()

    def _schedule(self) -> None:
        was = self._timer.isActive()
        wanted = self._active and not self.settled
        if not wanted:
            self._timer.stop()
        elif not was:
            self._timer.start(RETRY_MS if self._failing else POLL_MS)
        if was != self._timer.isActive():
            self.live_changed.emit(self._timer.isActive())

    # --- reading ---------------------------------------------------------------------------
    async def open(self, run_id: UUID) -> RunSnapshot | None:
        """Load a run, its template and its whole log; None when superseded or failed."""
        self._generation += 1
        generation = self._generation
        stella = self.session.require()
        snapshot = await self.ops.run(
            lambda _report: load_run(stella, run_id), label="Opening the run"
        )
        if generation != self._generation:
            return None
        self.run = snapshot.run
        self.template = snapshot.template
        self.steps = {s.id: s for s in snapshot.run.steps}
        self.events = list(snapshot.events)
        self.last_seq = self.events[-1].seq if self.events else 0
        self._failing = False
        self.opened.emit(snapshot)
        self._schedule()
        return snapshot

    def _tick(self) -> None:
        if self._polling or self.run is None:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # the loop has ended (shutdown): nothing may be started now
            self._timer.stop()
            return
        self.ops.spawn(self.poll())

    async def poll(self) -> bool:
        """Read what is new once; True when anything changed."""
        if self.run is None or self._polling:
            return False
        self._polling = True
        generation = self._generation
        run_id, after = self.run.id, self.last_seq
        stella = self.session.require()
        try:
            events, run = await self.ops.run(
                lambda _report: poll_run(stella, run_id, after),
                label="Watching the run",
                present_errors=False,  # shown on the monitor, not as a banner twice a second
            )
        except OpFailed as exc:
            if generation == self._generation:
                self._failing = True
                self._timer.setInterval(RETRY_MS)
                self.poll_state.emit(f"Live updates paused: {exc.message}")
            return False
        finally:
            self._polling = False
        if generation != self._generation:
            return False
        self.polls += 1
        if self._failing:
            self._failing = False
            self._timer.setInterval(POLL_MS)
            self.poll_state.emit("")
        changed = self._apply(events, run)
        self._schedule()
        return changed

    async def refresh(self) -> bool:
        """Poll now, after any poll in flight (which may have read before an action)."""
        while self._polling:
            await asyncio.sleep(0.02)
        return await self.poll()

    def apply_run(self, run: RunInfo) -> None:
        """A run an action returned (cancel, retry, approve): show it before the next poll."""
        if run.id == self.run_id:
            self._apply([], run)
            self._schedule()

    def _apply(self, events: list[RunEvent], run: RunInfo | None) -> bool:
        fresh = [e for e in events if e.seq > self.last_seq]
        changed_steps: list[StepRunInfo] = []
        if run is not None:
            for step in run.steps:
                if self.steps.get(step.id) != step:
                    self.steps[step.id] = step
                    changed_steps.append(step)
        self.last_changed = [s.id for s in changed_steps]
        run_moved = run is not None and (
            self.run is None or run.model_copy(update={"steps": ()}) != self._slim(self.run)
        )
        if run is not None:
            self.run = run
        if fresh:
            self.events.extend(fresh)
            self.last_seq = fresh[-1].seq
        if changed_steps:
            self.steps_changed.emit(changed_steps)
        if run_moved and run is not None:
            self.run_changed.emit(run)
        if fresh:
            self.events_added.emit(fresh)
        return bool(fresh or changed_steps or run_moved)

    @staticmethod
    def _slim(run: RunInfo) -> RunInfo:
        return run.model_copy(update={"steps": ()})
