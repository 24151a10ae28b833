"""The workflow engine: workers that claim ready steps, run them and move runs along their DAG.

Claiming. A step is claimable when it is `ready` (and past `not_before`), `running` with an
expired lease (its worker died: claimed again once the earlier attempt is fenced, see
`fencing.py`; a lost lease is not a failed attempt) or `waiting` with a timer that fired.
Workers claim one with `FOR UPDATE SKIP LOCKED` and take a lease; several workers in several
processes share the work with no other coordination. LISTEN/NOTIFY (one channel per
tenant) wakes idle workers; a poll bounded by the next timer, retry or lease expiry is the
fallback.

Locking. Every state change of a run happens while holding the run's row lock (`FOR NO KEY
UPDATE`), taken after at most one step-row lock: the step being claimed, completed or approved.
That order never cycles, makes "is anything left to do?" race-free, and keeps the run log's
`seq` gap-free in commit order. Rows other transactions are claiming are skipped by the bulk
closers (cancel, fail, rollback); their claimers see the run's new state under the lock and close
them.

Executing. `instant` handlers (notify, fail, wait, approval) run inside the claiming transaction;
the others (script, http-check) run outside any transaction while a heartbeat thread extends the
lease and watches for cancellation. Completion checks the lease is still ours and applies the
result in one transaction, so a completed step is never run again.

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

import contextlib
import hashlib
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, TypeVar
from uuid import UUID

import psycopg
import sqlalchemy.exc
from jsonschema import Draft202012Validator
from psycopg import sql
from sqlalchemy import Connection, text

from stella_core.db.engine import Database, translate
from stella_core.errors import ConnectorError, DatabaseError, StellaError
from stella_core.workflows.executors import Executors
from stella_core.workflows.fencing import (
    FENCE_GRACE_S,
    AttemptStillRunningError,
    attempt_token,
    fence,
    host_identity,
)
from stella_core.workflows.model import Node, OnFailure, Template
from stella_core.workflows.steps.builtin import (
    Failed,
    StepContext,
    StepHandler,
    StepResult,
    Succeeded,
    Waiting,
    builtin_handlers,
)
from stella_core.workflows.steps.registry import StepRegistry
from stella_core.workflows.store import (
    ClaimedStep,
    Event,
    RunRow,
    WorkflowStore,
    channel,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
# Called after the transaction that ended a run commits: (run id, final status). The single
# place later issues hook evidence into.
RunFinishedHook = Callable[[UUID, str], None]
# Called inside the transaction that ends a run, so what it writes (the run's evidence packet)
# commits or rolls back with the ending itself.
RunEndWriter = Callable[[Connection, UUID, str], object]

DEFAULT_LEASE_S = 30.0
HEARTBEAT_S = 1.0
WORKER_BEAT_S = 5.0
IDLE_POLL_S = 5.0
_WATCH_TICK_S = 0.1
# A step whose worker vanished this many times is failed rather than tried forever.
MAX_LOST_LEASES = 5
LIVE = ("succeeded", "continued")
_TX_ATTEMPTS = 5


class _Skipped:
    """Internal result: the step's condition was false."""


# ------------------------------------------------------------------------------- plans
@dataclass(frozen=True)
class Plan:
    """What the engine needs of one (immutable) template version, computed once."""

    template: Template
    nodes: Mapping[str, Node]
    deps: Mapping[str, tuple[str, ...]]
    dependants: Mapping[str, tuple[str, ...]]
    has_expressions: Mapping[str, bool]
    key_part: Mapping[str, str]
    order: tuple[str, ...]  # topological

    @classmethod
    def of(cls, template: Template) -> Plan:
        nodes = {n.id: n for n in template.nodes}
        deps: dict[str, list[str]] = {n: [] for n in nodes}
        dependants: dict[str, list[str]] = {n: [] for n in nodes}
        for edge in template.edges:
            a, b = nodes.get(edge.source), nodes.get(edge.target)
            # The rollback path has its own edges; edges across the two paths order nothing.
            if a is None or b is None or a.rollback != b.rollback:
                continue
            if edge.source not in deps[edge.target]:
                deps[edge.target].append(edge.source)
                dependants[edge.source].append(edge.target)
        order: list[str] = []
        remaining = {n: len(d) for n, d in deps.items()}
        queue = [n for n, c in remaining.items() if c == 0]
        while queue:
            current = queue.pop()
            order.append(current)
            for d in dependants[current]:
                remaining[d] -= 1
                if remaining[d] == 0:
                    queue.append(d)
        return cls(
            template=template,
            nodes=nodes,
            deps={n: tuple(d) for n, d in deps.items()},
            dependants={n: tuple(d) for n, d in dependants.items()},
            has_expressions={n.id: _has_expression(n) for n in template.nodes},
            key_part={n.id: _key_part(n) for n in template.nodes},
            order=tuple(order),
        )

    def rollback_ids(self) -> list[str]:
        return [n for n, node in self.nodes.items() if node.rollback]

    def idempotency_key(self, run_id: UUID, node_id: str) -> str:
        return f"{run_id}:{node_id}:{self.key_part[node_id]}"


def _has_expression(node: Node) -> bool:
    return node.condition is not None or "${{" in json.dumps(node.inputs)


def _key_part(node: Node) -> str:
    """Stable across attempts (and retries by hand): derived from the node's definition."""
    body = json.dumps(node.model_dump(mode="json", by_alias=True), sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


class Plans:
    """Plans by template version id; versions are immutable, so entries never go stale."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._plans: OrderedDict[UUID, Plan] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, store: WorkflowStore, version_id: UUID) -> Plan:
        with self._lock:
            plan = self._plans.get(version_id)
            if plan is not None:
                self._plans.move_to_end(version_id)
                return plan
        document = store.document(version_id)
        if document is None:
            raise StellaError(f"template version {version_id} is not visible")
        plan = Plan.of(Template.model_validate(document))
        with self._lock:
            self._plans[version_id] = plan
            while len(self._plans) > self.size:
                self._plans.popitem(last=False)
        return plan


# ------------------------------------------------------------------------------- state changes
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


def _moved_on(run: RunRow, rollback_step: bool) -> bool:
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
        self, ch: Changes, plan: Plan, step: StepState, result: StepResult | _Skipped
    ) -> None:
        node = plan.nodes[step.node_id]
        node_id = step.node_id
        store = ch.store
        fast = isinstance(result, Succeeded | _Skipped)
        if not fast or _moved_on(ch.run, step.rollback):
            # Anything but the hot path writes directly: what is batched goes first.
            self.drain(ch, plan)
            ch.write_inputs()
        run = ch.run
        if _moved_on(run, step.rollback):
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
        if isinstance(result, _Skipped):
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
        statuses = {s.id: s.status for s in store.step_infos(run.id)}
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


# ------------------------------------------------------------------------------- transactions
def _retryable(exc: BaseException) -> bool:
    cause = exc.__cause__
    orig = getattr(cause, "orig", cause)
    return isinstance(orig, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure)


@contextlib.contextmanager
def _bare_transaction(db: Database) -> Iterator[Connection]:
    """A transaction whose first statement selects the tenant itself (the claim pipelines it)."""
    try:
        with db.engine.begin() as conn:
            yield conn
    except sqlalchemy.exc.DBAPIError as exc:
        raise translate(exc) from exc
    except psycopg.Error as exc:  # raised by statements sent on the driver connection
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else "database error"
        raise DatabaseError(message) from exc


def run_tx(
    db: Database,
    work: Callable[[Connection], T],
    hooks: Sequence[RunFinishedHook] = (),
    *,
    tenant: bool = True,
) -> T:
    """Run `work` in one transaction (retried on deadlock); then the run-finished hooks.
    With `tenant=False` the work must select the tenant itself, first thing."""
    for attempt in range(_TX_ATTEMPTS):
        finished: list[tuple[UUID, str]] = []
        try:
            with db.transaction() if tenant else _bare_transaction(db) as conn:
                conn.info["stella.finished"] = finished
                try:
                    value = work(conn)
                finally:
                    conn.info.pop("stella.finished", None)
        except StellaError as exc:
            if attempt + 1 < _TX_ATTEMPTS and _retryable(exc):
                time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))  # noqa: S311
                continue
            raise
        for run_id, status in finished:
            for hook in hooks:
                try:
                    hook(run_id, status)
                except Exception:
                    log.exception("run-finished hook failed for run %s", run_id)
        return value
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------- the worker
@dataclass
class _Job:
    claimed: ClaimedStep
    plan: Plan
    handler: StepHandler
    ctx: StepContext
    resume: bool
    lost: bool = False
    shutdown: bool = False
    # When the lease we know of runs out (monotonic): past it, the step is stopped.
    lease_deadline: float = float("inf")


_DONE = object()


class Worker:
    """Claims and runs steps of its tenant's runs (or of one run) as the person it acts for."""

    def __init__(
        self,
        db: Database,
        registry: StepRegistry,
        executors: Executors,
        worker_id: str | None = None,
        *,
        handlers: Mapping[str, StepHandler] | None = None,
        plans: Plans | None = None,
        hooks: Sequence[RunFinishedHook] = (),
        run_end: RunEndWriter | None = None,
        lease_seconds: float = DEFAULT_LEASE_S,
        heartbeat_seconds: float = HEARTBEAT_S,
        idle_poll_seconds: float = IDLE_POLL_S,
        run_id: UUID | None = None,
        shutdown_grace_seconds: float = 10.0,
        batch_size: int = 32,
    ) -> None:
        if db.tenant_id is None:
            raise StellaError("a worker needs a tenant (its person's profile)")
        self.db = db
        self.tenant_id: UUID = db.tenant_id
        self.registry = registry
        self.executors = executors
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.handlers = dict(handlers) if handlers is not None else builtin_handlers()
        self.plans = plans or Plans()
        self.coordinator = Coordinator(self.plans, run_end)
        self.hooks = tuple(hooks)
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = min(heartbeat_seconds, lease_seconds / 3)
        self.idle_poll_seconds = idle_poll_seconds
        self.run_id = run_id
        self.shutdown_grace_seconds = shutdown_grace_seconds
        self.batch_size = max(1, batch_size)
        self._instant = sorted(
            name for name, h in self.handlers.items() if h.instant and name in registry
        )
        self._contexts: OrderedDict[UUID, tuple[dict[str, Any], dict[str, Any] | None]] = (
            OrderedDict()
        )
        self._validators: dict[str, Draft202012Validator] = {}
        self._stopping = threading.Event()
        self._announced = False
        # Where this worker's commands run (who can fence them), and how long it leaves an
        # expired lease of another host alone (see fencing.py).
        self.host = host_identity()
        self.fence_grace_seconds = FENCE_GRACE_S

    # one step ---------------------------------------------------------------------------
    def run_once(self) -> bool:
        """Claim one step and take it as far as it goes; False when nothing was claimable."""
        claiming = time.monotonic()
        job = run_tx(self.db, self._claim, self.hooks, tenant=False)
        if job is None:
            return False
        if not isinstance(job, _Job):
            return True
        job.lease_deadline = claiming + self.lease_seconds
        result = self._execute(job)
        run_tx(self.db, lambda conn: self._complete(conn, job, result), self.hooks)
        return True

    def _claim(self, conn: Connection) -> _Job | object | None:
        store = WorkflowStore(conn)
        found = store.claim(
            self.tenant_id,
            self.worker_id,
            self.lease_seconds,
            self.run_id,
            host=self.host,
            grace_seconds=self.fence_grace_seconds,
        )
        if found is None:
            return None
        claimed, run = found
        plan = self.plans.get(store, claimed.template_version_id)
        ch = Changes(store, run, worker_continues=True)
        if claimed.previous_status == "running":
            ch.event(
                "step.lease_expired",
                claimed.node_id,
                previous_owner=claimed.previous_owner,
                attempt=claimed.attempts,
                **self._fence(claimed),
            )
        if not _moved_on(run, claimed.rollback) and run.status == "pending":
            store.set_run_started(run.id)
            ch.run = replace(run, status="running")
            ch.event("run.started")
        job = self._process(ch, plan, claimed)
        if job is None and self.batch_size > 1 and not ch.run.terminal:
            # Instant steps of the same run ride along in this transaction: the run is locked
            # already and SKIP LOCKED never waits, so this costs one statement, not a transaction.
            more = store.claim_more(
                run.id,
                self.worker_id,
                self.lease_seconds,
                self._instant,
                self.batch_size - 1,
                self.host,
            )
            for extra in more:
                self._process(ch, plan, extra)
        self.coordinator.flush(conn, ch, plan)
        return job or _DONE

    def _fence(self, claimed: ClaimedStep) -> dict[str, Any]:
        """The earlier attempt of a step whose lease expired must have ended before this one
        starts: on this host, kill what is left of it and remove its scratch directory (the
        claim rolls back if it will not die); elsewhere the claim waited for the grace."""
        if claimed.previous_host != self.host:
            return {"fenced": "lease expired and its grace passed"}
        try:
            killed = fence(claimed.run_id, claimed.node_id, claimed.generation)
        except AttemptStillRunningError as exc:
            raise StellaError(str(exc)) from exc
        if killed:
            log.warning(
                "killed %d process(es) left by the earlier attempt of %s/%s",
                len(killed),
                claimed.run_id,
                claimed.node_id,
            )
        return {"fenced": f"on this host: {len(killed)} process(es) killed"}

    def _process(self, ch: Changes, plan: Plan, claimed: ClaimedStep) -> _Job | None:
        """Take one claimed step as far as this transaction can: settle it, or hand back a job
        to run outside the transaction."""
        store, run = ch.store, ch.run
        node_id = claimed.node_id
        state = StepState(node_id, claimed.attempts, claimed.lost_leases, claimed.rollback)
        if _moved_on(run, claimed.rollback):
            self.coordinator.settle(ch, plan, state, Failed("the run moved on", cancelled=True))
            return None
        node = plan.nodes[node_id]
        spec = self.registry.get(node.type)
        handler = self.handlers.get(node.type)
        early: StepResult | _Skipped | None = None
        inputs: dict[str, Any] = claimed.inputs or {}
        if spec is None or handler is None:
            early = Failed(f"unknown step type {node.type!r}", retryable=False)
        elif claimed.lost_leases > MAX_LOST_LEASES:
            early = Failed(
                f"its worker was lost {claimed.lost_leases} times; giving up", retryable=False
            )
        elif not claimed.resume:
            try:
                if plan.has_expressions[node_id]:
                    # Outputs finished earlier in this batch must be visible.
                    self.coordinator.drain(ch, plan)
                context = self._context(store, claimed, plan)
                if node.condition is not None and not _evaluate_condition(node.condition, context):
                    early = _Skipped()
                else:
                    inputs = _resolve_inputs(node.inputs, context)
                    problem = self._check_inputs(node.type, spec.input_schema, inputs)
                    if problem:
                        early = Failed(problem, retryable=False)
            except StellaError as exc:  # expression errors are typed and say what went wrong
                early = Failed(exc.message, retryable=False)
        if early is None and not claimed.resume:
            ch.inputs = (node_id, inputs)
            ch.event("step.started", node_id, attempt=claimed.attempts, worker=self.worker_id)
        if early is not None:
            self.coordinator.settle(ch, plan, state, early)
            return None
        assert handler is not None
        assert spec is not None
        ctx = StepContext(
            run_id=run.id,
            node_id=node_id,
            step_type=node.type,
            attempt=claimed.attempts,
            inputs=inputs,
            idempotency_key=claimed.idempotency_key if spec.side_effects else None,
            timeout_seconds=node.timeout_seconds,
            executors=self.executors,
            local_executor_enabled=self._local_executor_enabled,
            unsandboxed_allowed=self._unsandboxed_allowed,
            approved_by=run.approved_by,
            attempt_token=attempt_token(run.id, node_id, claimed.generation),
        )
        if claimed.resume:
            elapsed = claimed.db_now - claimed.started_at
            limit = node.timeout_seconds
            if limit is not None and elapsed >= timedelta(seconds=limit):
                timed_out = Failed(f"timed out after {limit} s", timed_out=True)
                self.coordinator.settle(ch, plan, state, timed_out)
                return None
            ctx.started_monotonic -= elapsed.total_seconds()
        if handler.instant:
            self.coordinator.settle(ch, plan, state, _call(handler, ctx, claimed.resume))
            return None
        ch.write_inputs()
        return _Job(claimed, plan, handler, ctx, claimed.resume)

    def _context(self, store: WorkflowStore, claimed: ClaimedStep, plan: Plan) -> dict[str, Any]:
        run_inputs, release = self._run_context(store, claimed.run_id)
        steps: dict[str, Any] = {}
        if plan.has_expressions[claimed.node_id]:
            steps = {k: {"outputs": v} for k, v in store.step_outputs(claimed.run_id).items()}
        return {"inputs": run_inputs, "release": release, "environment": None, "steps": steps}

    def _run_context(
        self, store: WorkflowStore, run_id: UUID
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        cached = self._contexts.get(run_id)
        if cached is None:
            cached = store.run_context(run_id)
            self._contexts[run_id] = cached
            while len(self._contexts) > 128:
                self._contexts.popitem(last=False)
        return cached

    def _check_inputs(
        self, type_name: str, schema: Mapping[str, Any], inputs: dict[str, Any]
    ) -> str | None:
        validator = self._validators.get(type_name)
        if validator is None:
            validator = self._validators[type_name] = Draft202012Validator(dict(schema))
        error = next(iter(validator.iter_errors(inputs)), None)
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path)
        return f"input {where!r}: {error.message}" if where else f"inputs: {error.message}"

    def _local_executor_enabled(self) -> bool:
        return run_tx(self.db, lambda conn: WorkflowStore(conn).local_executor_enabled())

    def _unsandboxed_allowed(self) -> bool:
        return run_tx(self.db, lambda conn: WorkflowStore(conn).unsandboxed_allowed())

    def _execute(self, job: _Job) -> StepResult:
        done = threading.Event()
        watcher = threading.Thread(target=self._watch, args=(job, done), daemon=True)
        watcher.start()
        try:
            return _call(job.handler, job.ctx, job.resume)
        finally:
            done.set()
            watcher.join()

    def _watch(self, job: _Job, done: threading.Event) -> None:
        """While a step runs: extend its lease; stop it when its run is cancelled or moved on or
        the lease was lost (another worker owns the step now); on shutdown, give it a grace
        period, then stop it and hand it back."""
        next_beat = time.monotonic() + self.heartbeat_seconds
        next_announce = time.monotonic() + WORKER_BEAT_S
        stop_at: float | None = None
        beat: threading.Thread | None = None
        while not done.wait(_WATCH_TICK_S):
            now = time.monotonic()
            if job.lost:
                return
            if now >= job.lease_deadline:
                # The lease could not be renewed in time (database unreachable, a stall):
                # another worker may take the step over now, so this attempt stops here.
                log.warning("lease on %s/%s ran out", job.claimed.run_id, job.claimed.node_id)
                job.lost = True
                job.ctx.cancel.set()
                return
            if self._announced and now >= next_announce:
                # A long step must not make this worker look dead to `stella run wait`.
                next_announce = now + WORKER_BEAT_S
                self._beat()
            if stop_at is None and self._stopping.is_set():
                stop_at = now + self.shutdown_grace_seconds
            if stop_at is not None and now >= stop_at and not job.ctx.cancel.is_set():
                job.shutdown = True
                job.ctx.cancel.set()
            if now >= next_beat and (beat is None or not beat.is_alive()):
                # In a thread of its own: a heartbeat stuck on the database must not keep the
                # watcher from stopping the step when the lease runs out.
                next_beat = now + self.heartbeat_seconds
                beat = threading.Thread(target=self._beat_lease, args=(job,), daemon=True)
                beat.start()

    def _beat_lease(self, job: _Job) -> bool:
        """One heartbeat; False when the lease is lost."""
        claimed = job.claimed
        sent = time.monotonic()
        try:
            state = run_tx(
                self.db,
                lambda conn: WorkflowStore(conn).heartbeat(
                    claimed.run_id,
                    claimed.node_id,
                    self.worker_id,
                    self.lease_seconds,
                    claimed.generation,
                ),
            )
        except StellaError as exc:
            log.warning("heartbeat for %s failed: %s", claimed.node_id, exc.message)
            return True
        if state is None:
            log.warning("lost the lease on %s/%s", claimed.run_id, claimed.node_id)
            job.lost = True
            job.ctx.cancel.set()
            return False
        job.lease_deadline = sent + self.lease_seconds
        status, phase, cancel_requested = state
        run = RunRow(
            claimed.run_id,
            claimed.tenant_id,
            claimed.template_version_id,
            status,
            phase,
            cancel_requested,
        )
        if _moved_on(run, claimed.rollback):
            job.ctx.cancel.set()
        return True

    def _complete(self, conn: Connection, job: _Job, result: StepResult) -> None:
        store = WorkflowStore(conn)
        claimed = job.claimed
        if job.lost or not store.owns(
            claimed.run_id, claimed.node_id, self.worker_id, claimed.generation
        ):
            log.warning(
                "result of %s/%s dropped: another worker owns the step now",
                claimed.run_id,
                claimed.node_id,
            )
            return
        run = store.lock_run(claimed.run_id)
        assert run is not None
        ch = Changes(store, run, worker_continues=True)
        if job.shutdown and isinstance(result, Failed) and result.cancelled:
            store.release_step(claimed.run_id, claimed.node_id, job.resume)
            ch.event("step.released", claimed.node_id, worker=self.worker_id)
            ch.wake = True
            self.coordinator.flush(conn, ch)
            return
        state = StepState(claimed.node_id, claimed.attempts, claimed.lost_leases, claimed.rollback)
        self.coordinator.settle(ch, job.plan, state, result)
        self.coordinator.flush(conn, ch, job.plan)

    # serving ----------------------------------------------------------------------------
    def stop(self) -> None:
        self._stopping.set()
        self._wake()

    def _wake(self) -> None:
        """NOTIFY our channel so a worker idling in LISTEN notices the stop at once."""
        with contextlib.suppress(Exception), self.db.engine.connect() as conn:
            conn.execute(text("SELECT pg_notify(:c, 'stop')"), {"c": channel(self.tenant_id)})
            conn.commit()

    def run_forever(self, stop_event: threading.Event | None = None) -> None:
        """Work until `stop_event` is set; idle, wait for a NOTIFY or the next timer."""
        stop = stop_event or self._stopping
        if stop is not self._stopping:
            threading.Thread(target=self._relay_stop, args=(stop,), daemon=True).start()
        listener = _Listener.open(self.db, channel(self.tenant_id))
        self._announce()
        last_beat = time.monotonic()
        failures = 0
        try:
            while not stop.is_set():
                if time.monotonic() - last_beat > WORKER_BEAT_S:
                    self._beat()
                    last_beat = time.monotonic()
                try:
                    busy = self.run_once()
                    failures = 0
                except StellaError as exc:
                    failures += 1
                    log.warning("worker %s: %s", self.worker_id, exc.message)
                    stop.wait(min(5.0, 0.2 * 2**failures))
                    continue
                if busy:
                    continue
                try:
                    due, ready_now = run_tx(
                        self.db,
                        lambda conn: WorkflowStore(conn).next_due(
                            self.run_id, self.host, self.fence_grace_seconds
                        ),
                    )
                except StellaError:
                    due, ready_now = None, False
                # Ready rows we could not claim are being claimed by others right now.
                timeout = 0.05 if ready_now else self.idle_poll_seconds
                if due is not None:
                    timeout = min(timeout, max(0.01, due + 0.01))
                if listener is None:
                    stop.wait(min(timeout, 1.0))
                    listener = _Listener.open(self.db, channel(self.tenant_id))
                elif not listener.wait(timeout):
                    listener.close()
                    listener = None
        finally:
            if listener is not None:
                listener.close()
            self._retire()

    def _relay_stop(self, stop: threading.Event) -> None:
        stop.wait()
        self.stop()

    def _announce(self) -> None:
        host, pid = socket.gethostname(), os.getpid()
        try:
            run_tx(
                self.db,
                lambda conn: WorkflowStore(conn).register_worker(
                    self.worker_id, self.tenant_id, host, pid, self.run_id
                ),
            )
            self._announced = True
        except StellaError as exc:
            log.warning("could not register worker %s: %s", self.worker_id, exc.message)

    def _beat(self) -> None:
        with contextlib.suppress(StellaError):
            run_tx(self.db, lambda conn: WorkflowStore(conn).worker_heartbeat(self.worker_id))

    def _retire(self) -> None:
        self._announced = False
        with contextlib.suppress(StellaError):
            run_tx(self.db, lambda conn: WorkflowStore(conn).unregister_worker(self.worker_id))


def _call(handler: StepHandler, ctx: StepContext, resume: bool) -> StepResult:
    """Run a handler; whatever it raises becomes a failed attempt with its reason."""
    try:
        return handler.resume(ctx) if resume else handler.start(ctx)
    except ConnectorError as exc:
        return Failed(exc.message, retryable=exc.retryable)
    except StellaError as exc:
        return Failed(exc.message, retryable=False)
    except Exception as exc:
        log.exception("step %s (%s) raised", ctx.node_id, ctx.step_type)
        return Failed(f"{type(exc).__name__}: {exc}")


def _evaluate_condition(src: str, context: dict[str, Any]) -> bool:
    from stella_core.workflows.expressions import evaluate_condition

    return evaluate_condition(src, context)


def _resolve_inputs(inputs: Mapping[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    from stella_core.workflows.expressions import resolve_inputs

    return resolve_inputs(inputs, context)


class _Listener:
    """LISTEN on a dedicated autocommit connection (never a pooled one)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    @classmethod
    def open(cls, db: Database, name: str) -> _Listener | None:
        url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            log.warning("LISTEN failed (%s); polling instead", exc)
            return None
        return cls(conn)

    def wait(self, timeout: float) -> bool:
        """Wait for one notification or the timeout; False when the connection broke."""
        try:
            for _ in self.conn.notifies(timeout=max(0.0, timeout), stop_after=1):
                pass
        except psycopg.Error as exc:
            log.warning("LISTEN connection lost (%s)", exc)
            return False
        return True

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self.conn.close()


def listen(db: Database) -> _Listener | None:
    """A listener on the tenant's channel (for waiting on runs)."""
    if db.tenant_id is None:
        return None
    return _Listener.open(db, channel(db.tenant_id))


def new_worker_id(kind: str = "worker") -> str:
    return f"{kind}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
