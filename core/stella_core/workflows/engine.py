"""The workflow engine: workers that claim ready steps, run them and move runs along their DAG.

Claiming. A step is claimable when it is `ready` (and past `not_before`), `running` with an
expired lease (its worker died: claimed again once the earlier attempt is fenced, see
`fencing.py`; a lost lease is not a failed attempt) or `waiting` with a timer that fired.
Workers claim one with `FOR UPDATE SKIP LOCKED` and take a lease; several workers in several
processes share the work with no other coordination. LISTEN/NOTIFY (one channel per
tenant) wakes idle workers; a poll bounded by the next timer, retry or lease expiry is the
fallback.

Executing. `instant` handlers (notify, fail, wait, approval) run inside the claiming transaction;
the others (script, http-check) run outside any transaction while a heartbeat thread extends the
lease and watches for cancellation. Completion checks the lease is still ours and applies the
result in one transaction, so a completed step is never run again.

The run state machine is `coordinator.py`, plans are `plan.py`, transactions `transactions.py`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any
from uuid import UUID

import psycopg
from jsonschema import Draft202012Validator
from psycopg import sql
from sqlalchemy import Connection, text

from stella_core.db.engine import Database
from stella_core.errors import ConnectorError, StellaError
from stella_core.workflows.coordinator import (
    Changes,
    Coordinator,
    RunEndWriter,
    Skipped,
    StepState,
    moved_on,
)
from stella_core.workflows.executors import Executors
from stella_core.workflows.fencing import (
    FENCE_GRACE_S,
    AttemptStillRunningError,
    attempt_token,
    fence,
    host_identity,
)
from stella_core.workflows.plan import Plan, Plans
from stella_core.workflows.steps.builtin import (
    Failed,
    StepContext,
    StepHandler,
    StepResult,
    builtin_handlers,
)
from stella_core.workflows.steps.registry import StepRegistry
from stella_core.workflows.store import ClaimedStep, RunRow, WorkflowStore, channel
from stella_core.workflows.transactions import RunFinishedHook, run_tx

__all__ = [
    "DEFAULT_LEASE_S",
    "Changes",
    "Coordinator",
    "Plans",
    "RunEndWriter",
    "RunFinishedHook",
    "StepState",
    "Worker",
    "listen",
    "new_worker_id",
    "run_tx",
]

log = logging.getLogger(__name__)

DEFAULT_LEASE_S = 30.0
HEARTBEAT_S = 1.0
WORKER_BEAT_S = 5.0
IDLE_POLL_S = 5.0
_WATCH_TICK_S = 0.1
# A step whose worker vanished this many times is failed rather than tried forever.
MAX_LOST_LEASES = 5


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
        if not moved_on(run, claimed.rollback) and run.status == "pending":
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
        if moved_on(run, claimed.rollback):
            self.coordinator.settle(ch, plan, state, Failed("the run moved on", cancelled=True))
            return None
        node = plan.nodes[node_id]
        spec = self.registry.get(node.type)
        handler = self.handlers.get(node.type)
        early: StepResult | Skipped | None = None
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
                    early = Skipped()
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
        if moved_on(run, claimed.rollback):
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
