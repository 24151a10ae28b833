"""The run state machine, shared by workers and by the service (approvals, cancel, retry).

Locking. Every state change of a run happens while holding the run's row lock (`FOR NO KEY
UPDATE`), taken after at most one step-row lock: the step being claimed, completed or approved.
That order never cycles, makes "is anything left to do?" race-free, and keeps the run log's
`seq` gap-free in commit order. Rows other transactions are claiming are skipped by the bulk
closers (cancel, fail, rollback); their claimers see the run's new state under the lock and close
them.

Advancing. Each step row counts its dependencies still open and those finished live (succeeded
or continued). Finishing a step counts its dependants down in one statement: at zero they become
ready if one dependency was live, else skipped (and so on, within the transaction). When nothing
of the current phase is open the run ends: `succeeded`, or `rolled_back` after a rollback.

Failing. A failed attempt is retried after its backoff (`not_before`) while attempts remain (a
lost worker does not use up an attempt; a step that loses its worker too often fails). Then
`on_failure`: `continue` counts as live for the dependants; `rollback` cancels what is left of
the main path and readies the rollback nodes, which see the failed run's outputs as `steps.*`;
`fail` ends the run `failed` (`timed_out` when the step timed out). Whatever had not started is
cancelled; running steps notice at their next heartbeat and are stopped.

Waiting. `wait` and `approval` park their step (`waiting`, holding no worker) until a timer
(`wake_at`: the wait's end or the step's timeout) or, for approvals, until the service records
enough decisions and settles the step under the same locks.

Batching. A worker that claimed an instant step also claims up to `batch_size - 1` more ready
instant steps of the same run in the same transaction (it holds the run lock already, and SKIP
LOCKED never waits), and one statement writes all their outcomes, counts their dependants down,
appends the log and NOTIFYs. Wide graphs of cheap steps cost a few statements per batch rather
than a transaction per step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from uuid import UUID

from sqlalchemy import Connection

from stella_core.workflows.model import Node, OnFailure
from stella_core.workflows.plan import Plan, Plans
from stella_core.workflows.steps.builtin import Failed, StepResult, Succeeded, Waiting
from stella_core.workflows.store import Event, RunRow, WorkflowStore

# Called inside the transaction that ends a run, so what it writes (the run's evidence packet)
# commits or rolls back with the ending itself.
RunEndWriter = Callable[[Connection, UUID, str], object]
LIVE = ("succeeded", "continued")


class Skipped:
    """Internal result: the step's condition was false."""


@dataclass
class Changes:
    """What one transaction did to one run: the log entries to append, whether to wake workers
    and waiters, and whether the run ended (hooks run after commit)."""

    store: WorkflowStore
    run: RunRow
    events: list[Event] = field(default_factory=list)
    wake: bool = False
    finished: str | None = None
    # Resolved inputs of an instant step, written with its outcome (one statement fewer).
    inputs: tuple[str, dict[str, Any]] | None = None
    # Finished steps not written yet: one statement writes them all (see Coordinator.drain).
    batch: list[Finished] = field(default_factory=list)
    # A worker claims again right after its transaction: one step made ready is its own next
    # step, so others are woken only when there is more than one.
    worker_continues: bool = False

    def event(self, kind: str, node: str | None = None, **details: Any) -> None:
        self.events.append(Event(kind, node, details or None))

    def write_inputs(self) -> None:
        if self.inputs is not None:
            self.store.set_step_inputs(self.run.id, *self.inputs)
            self.inputs = None

    def flush(self) -> None:
        self.write_inputs()
        self.store.append_events(self.run.id, self.run.tenant_id, self.events)
        self.events = []
        if self.wake or self.finished:
            self.store.notify(self.run.tenant_id, self.run.id)


@dataclass(frozen=True)
class Finished:
    node_id: str
    status: str
    outputs: dict[str, Any] | None
    inputs: dict[str, Any] | None
    error: str | None
    live: bool


@dataclass(frozen=True)
class StepState:
    node_id: str
    attempts: int
    lost_leases: int
    rollback: bool


def moved_on(run: RunRow, rollback_step: bool) -> bool:
    """The run ended, was cancelled, or left the phase this step belongs to."""
    return run.terminal or run.cancel_requested or rollback_step != (run.phase == "rollback")


class Coordinator:
    """The run state machine, shared by workers and by the service (approvals, cancel, retry).
    Every method runs inside a transaction that holds the run's lock."""

    def __init__(self, plans: Plans, run_end: RunEndWriter | None = None) -> None:
        self.plans = plans
        self.run_end = run_end

    # starting --------------------------------------------------------------------------
    def start(self, ch: Changes, plan: Plan) -> None:
        run = ch.run
        steps = []
        ready = []
        for node_id, node in plan.nodes.items():
            deps = len(plan.deps[node_id])
            status = "ready" if deps == 0 and not node.rollback else "pending"
            if status == "ready":
                ready.append(node_id)
            key = plan.idempotency_key(run.id, node_id)
            steps.append((node_id, node.type, node.rollback, deps, status, key))
        ch.store.insert_steps(run.id, run.tenant_id, steps)
        ch.event("run.created")
        for node_id in sorted(ready):
            ch.event("step.ready", node_id)
        if ready:
            ch.wake = True
        else:
            self._maybe_finish(ch, plan)

    # settling a step -------------------------------------------------------------------
    def settle(
        self, ch: Changes, plan: Plan, step: StepState, result: StepResult | Skipped
    ) -> None:
        node = plan.nodes[step.node_id]
        node_id = step.node_id
        store = ch.store
        fast = isinstance(result, Succeeded | Skipped)
        if not fast or moved_on(ch.run, step.rollback):
            # Anything but the hot path writes directly: what is batched goes first.
            self.drain(ch, plan)
            ch.write_inputs()
        run = ch.run
        if moved_on(run, step.rollback):
            # The run moved on (cancelled, failed elsewhere, rolling back) while this step ran:
            # record what really happened, move nothing along.
            if isinstance(result, Succeeded):
                store.finish_step(run.id, node_id, "succeeded", result.outputs, None)
                ch.event("step.succeeded", node_id, attempt=step.attempts, late=True)
            else:
                outputs = result.outputs if isinstance(result, Failed) else None
                reason = f"the run is {run.status}"
                store.finish_step(run.id, node_id, "cancelled", outputs, reason)
                ch.event("step.cancelled", node_id, reason=reason)
            return
        if isinstance(result, Skipped):
            ch.event("step.skipped", node_id, reason="condition is false")
            self._finished(ch, node_id, "skipped", None, None, live=False)
        elif isinstance(result, Succeeded):
            for kind, details in result.events:
                ch.event(kind, node_id, **details)
            ch.event("step.succeeded", node_id, attempt=step.attempts)
            self._finished(ch, node_id, "succeeded", result.outputs, None)
        elif isinstance(result, Waiting):
            wake_at = store.set_waiting(run.id, node_id, result.seconds, node.timeout_seconds, None)
            ch.event("step.waiting", node_id, wake_at=wake_at.isoformat() if wake_at else None)
        else:
            self._failed(ch, plan, step, node, result)

    @staticmethod
    def _finished(
        ch: Changes,
        node_id: str,
        status: str,
        outputs: dict[str, Any] | None,
        error: str | None,
        *,
        live: bool = True,
    ) -> None:
        inputs = ch.inputs[1] if ch.inputs is not None else None
        ch.inputs = None
        ch.batch.append(Finished(node_id, status, outputs, inputs, error, live))

    def drain(self, ch: Changes, plan: Plan) -> None:
        """The hot path: every batched step's outcome, their dependants counted down, the log
        entries and the wake-up in one statement; only skips that cascade and the end of the run
        take more."""
        if not ch.batch:
            return
        batch, ch.batch = ch.batch, []
        counts: dict[str, tuple[int, int]] = {}
        for done in batch:
            for d in plan.dependants[done.node_id]:
                dec, inc = counts.get(d, (0, 0))
                counts[d] = (dec + 1, inc + int(done.live))
        changed, still_open = ch.store.finish_and_advance(
            ch.run,
            [(f.node_id, f.status, f.outputs, f.inputs, f.error) for f in batch],
            decrements=counts,
            events=ch.events,
            notify_min=2 if ch.worker_continues else 1,
        )
        ch.events = []
        skipped = [(n, False) for n, st in changed if st == "skipped"]
        if skipped:
            self._advance(ch, plan, skipped)
        elif not still_open and not any(st == "ready" for _, st in changed):
            self.end_run(ch, "rolled_back" if ch.run.phase == "rollback" else "succeeded", None)

    def flush(self, conn: Connection, ch: Changes, plan: Plan | None = None) -> None:
        """Write what the transaction still holds (the batch, the log entries, the NOTIFY) and
        remember a finished run for the hooks."""
        if ch.batch:
            assert plan is not None, "a batch needs its plan"
            self.drain(ch, plan)
        ch.flush()
        if ch.finished and self.run_end is not None:
            self.run_end(conn, ch.run.id, ch.finished)
        if ch.finished:
            finished = conn.info.get("stella.finished")
            if finished is not None:
                finished.append((ch.run.id, ch.finished))

    def _failed(self, ch: Changes, plan: Plan, step: StepState, node: Node, result: Failed) -> None:
        run, store, node_id = ch.run, ch.store, step.node_id
        used = step.attempts  # lost leases never counted an attempt
        if result.retryable and not result.cancelled and used < node.retry.max_attempts:
            delay = node.retry.delay_ms(max(used, 1))
            store.retry_later(run.id, node_id, delay, result.outputs, result.error)
            ch.event(
                "step.retrying", node_id, attempt=step.attempts, error=result.error, delay_ms=delay
            )
            return
        if node.on_failure is OnFailure.CONTINUE:
            ch.event("step.continued", node_id, attempt=step.attempts, error=result.error)
            self._finished(ch, node_id, "continued", result.outputs, result.error)
            return
        status = "timed_out" if result.timed_out else "failed"
        store.finish_step(run.id, node_id, status, result.outputs, result.error)
        ch.event(f"step.{status}", node_id, attempt=step.attempts, error=result.error)
        error = f"step {node_id} {status.replace('_', ' ')}: {result.error}"
        if node.on_failure is OnFailure.ROLLBACK and run.phase == "main":
            self._start_rollback(ch, plan, node_id, error)
        elif run.phase == "rollback":
            self.end_run(ch, "failed", f"rollback {error}")
        else:
            self.end_run(ch, status, error)

    def _advance(self, ch: Changes, plan: Plan, finished: list[tuple[str, bool]]) -> None:
        became_ready = False
        frontier = finished
        while frontier:
            counts: dict[str, list[int]] = {}
            for node_id, live in frontier:
                for d in plan.dependants[node_id]:
                    entry = counts.setdefault(d, [0, 0])
                    entry[0] += 1
                    entry[1] += int(live)
            if not counts:
                break
            changed = ch.store.advance(ch.run.id, {k: (v[0], v[1]) for k, v in counts.items()})
            frontier = []
            for node_id, status in changed:
                if status == "ready":
                    became_ready = True
                    ch.event("step.ready", node_id)
                elif status == "skipped":
                    ch.event("step.skipped", node_id, reason="only reachable through skipped steps")
                    frontier.append((node_id, False))
        if became_ready:
            ch.wake = True
        else:
            self._maybe_finish(ch, plan)

    def _maybe_finish(self, ch: Changes, plan: Plan) -> None:
        run = ch.run
        if ch.store.any_open(run.id, rollback=run.phase == "rollback"):
            return
        self.end_run(ch, "rolled_back" if run.phase == "rollback" else "succeeded", None)

    def _start_rollback(self, ch: Changes, plan: Plan, node_id: str, error: str) -> None:
        run, store = ch.run, ch.store
        rollback = plan.rollback_ids()
        if not rollback:
            self.end_run(ch, "failed", f"{error}; the template has no rollback path")
            return
        store.start_rollback(run.id, node_id, error)
        ch.run = replace(run, status="rolling_back", phase="rollback")
        ch.event("run.rolling_back", None, failed_step=node_id, error=error)
        for closed in store.close_open_steps(
            run.id, "cancelled", rollback=False, statuses=("pending", "ready", "waiting")
        ):
            ch.event("step.cancelled", closed, reason="the run is rolling back")
        roots = sorted(n for n in rollback if not plan.deps[n])
        store.make_ready(run.id, roots)
        for root in roots:
            ch.event("step.ready", root)
        ch.wake = True

    def end_run(self, ch: Changes, status: str, error: str | None) -> None:
        """End the run; steps not running are closed (running ones notice at their next
        heartbeat and are stopped)."""
        run, store = ch.run, ch.store
        store.finish_run(run.id, status, error)
        ch.run = replace(run, status=status, cancel_requested=run.cancel_requested)
        closing: list[tuple[bool | None, str]]
        if status == "cancelled":
            closing = [(None, "cancelled")]
        elif run.phase == "main":
            # Unused rollback steps are skipped; what the failure cut short is cancelled.
            closing = [(False, "cancelled"), (True, "skipped")]
        else:
            closing = [(True, "cancelled")]
        for rollback, step_status in closing:
            for closed in store.close_open_steps(
                run.id, step_status, rollback=rollback, statuses=("pending", "ready", "waiting")
            ):
                ch.event(f"step.{step_status}", closed, reason=f"the run is {status}")
        details: dict[str, Any] = {"error": error} if error else {}
        ch.event(f"run.{status}", None, **details)
        ch.finished = status

    def reset_for_retry(self, ch: Changes, plan: Plan) -> list[str]:
        """A failed run resumes: its failed and cut-short steps run again, what succeeded stays.
        Dependency counters are recomputed from the statuses, so nothing done is lost."""
        store, run = ch.store, ch.run
        statuses: dict[str, str] = {s.id: s.status for s in store.step_infos(run.id)}
        updates: list[tuple[str, str, int, int]] = []
        for node_id in plan.order:
            node = plan.nodes[node_id]
            deps = plan.deps[node_id]
            if node.rollback:
                if statuses.get(node_id) != "pending":
                    updates.append((node_id, "pending", len(deps), 0))
                    statuses[node_id] = "pending"
                continue
            if statuses.get(node_id) in (*LIVE, "skipped"):
                continue
            open_ = sum(1 for d in deps if statuses.get(d) not in (*LIVE, "skipped"))
            live = sum(1 for d in deps if statuses.get(d) in LIVE)
            if open_:
                status = "pending"
            elif live or not deps:
                status = "ready"
            else:
                status = "skipped"
            statuses[node_id] = status
            updates.append((node_id, status, open_, live))
        store.reset_steps(run.id, updates)
        for node_id, status, _, _ in updates:
            ch.event(f"step.{status}", node_id, reason="retry")
        ch.wake = True
        return [u[0] for u in updates if u[1] == "ready"]
