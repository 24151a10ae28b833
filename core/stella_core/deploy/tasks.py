"""The task queue (`deploy.tasks`), acting as the orchestrator: one model for the three
transports. A task is written once, signed (`taskwire.seal_task`); an agent's tasks are handed
out by the gateway (and handed out again after a reconnect until answered), SSH and WinRM tasks
are run and finished by the worker that runs them. Every step of a task is kept as an event.

Nothing is lost when a link, an agent or a worker drops: a task stays open until an answer is
recorded or it expires.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Connection

from stella_core.clock import Clock, SystemClock
from stella_core.crypto.keys import SigningKey
from stella_core.db.engine import Database
from stella_core.deploy import store
from stella_core.deploy.model import TaskOutcome, TaskSpec, TaskStatus
from stella_core.deploy.taskwire import seal_task
from stella_core.errors import NotFoundError

# How often `wait` looks at its task (the answer is recorded by another thread or process).
POLL_SECONDS = 0.2
MAX_LOG_LINE = 8192


@dataclass(frozen=True)
class TaskState:
    id: UUID
    type: str
    target: str
    agent_id: UUID | None
    status: TaskStatus
    deliveries: int
    expires_at: datetime
    outcome: TaskOutcome | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "type": self.type,
            "target": self.target,
            "agent_id": str(self.agent_id) if self.agent_id else None,
            "status": self.status.value,
            "deliveries": self.deliveries,
            "expires_at": self.expires_at.isoformat(),
            "outcome": store.outcome_json(self.outcome) if self.outcome else None,
        }


def task_state(row: Any) -> TaskState:
    return TaskState(
        id=UUID(str(row.id)),
        type=row.type,
        target=row.target,
        agent_id=UUID(str(row.agent_id)) if row.agent_id else None,
        status=TaskStatus(row.status),
        deliveries=row.deliveries,
        expires_at=row.expires_at,
        outcome=store.outcome_from(row.outcome) if row.outcome is not None else None,
    )


def _expired(now: datetime) -> TaskOutcome:
    return TaskOutcome(
        ok=False,
        error="nobody answered the task before it expired",
        error_type="expired",
        retryable=True,
        finished_at=now,
    )


class TaskQueue:
    """`db` acts as the orchestrator (the database refuses anyone else's writes)."""

    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self.db = db
        self.clock = clock or SystemClock()

    def submit(
        self,
        conn: Connection,
        spec: TaskSpec,
        envelope: bytes,
        *,
        run_id: UUID | None = None,
        node_id: str | None = None,
    ) -> UUID:
        """Queue a signed task in the caller's transaction; the same idempotency key gives the
        task already queued (and its id), never a second one. `run_id`/`node_id`: the workflow
        step it serves (its run's monitor shows it)."""
        return store.insert_task(conn, spec, envelope, run_id=run_id, node_id=node_id)

    def submit_signed(self, spec: TaskSpec, signer: Callable[[Connection], SigningKey]) -> UUID:
        """Sign `spec` with the key `signer` gives inside the transaction (the orchestrator's:
        `EvidenceService.orchestrator_signer`) and queue it, in one transaction."""
        with self.db.transaction() as conn:
            return store.insert_task(conn, spec, seal_task(spec, signer(conn)))

    def get(self, task_id: UUID) -> TaskState:
        with self.db.transaction() as conn:
            row = store.task_row(conn, task_id)
        if row is None:
            raise NotFoundError(f"no task {task_id}")
        return task_state(row)

    def events(self, task_id: UUID) -> list[dict[str, Any]]:
        with self.db.transaction() as conn:
            return store.events(conn, task_id)

    def wait(
        self, task_id: UUID, *, timeout: float, cancel: threading.Event | None = None
    ) -> TaskOutcome | None:
        """The task's outcome once it is finished (an expired task finishes as expired), or
        None when `timeout` seconds pass or `cancel` is set first."""
        cancel = cancel or threading.Event()
        deadline = threading.Event()
        timer = threading.Timer(max(0.0, timeout), deadline.set)
        timer.daemon = True
        timer.start()
        try:
            while True:
                state = self.get(task_id)
                if state.status.finished:
                    return state.outcome or _expired(self.clock.now())
                if self.clock.now() >= state.expires_at:
                    self.expire(task_id)
                    continue
                if deadline.is_set() or cancel.wait(POLL_SECONDS) or deadline.is_set():
                    return None
        finally:
            timer.cancel()

    def for_agent(self, agent_id: UUID) -> list[tuple[UUID, bytes]]:
        """The agent's open tasks (queued, or delivered and not answered yet), oldest first."""
        with self.db.transaction() as conn:
            rows = store.open_for_agent(conn, agent_id, self.clock.now())
        return [(UUID(str(r[0])), bytes(r[1])) for r in rows]

    def for_agents(self, agent_ids: list[UUID]) -> dict[UUID, list[tuple[UUID, bytes]]]:
        """`for_agent` for many agents in one query (the gateway's poll of all its links);
        agents with no open task are absent."""
        if not agent_ids:
            return {}
        with self.db.transaction() as conn:
            rows = store.open_for_agents(conn, agent_ids, self.clock.now())
        found: dict[UUID, list[tuple[UUID, bytes]]] = {}
        for agent_id, task_id, envelope in rows:
            found.setdefault(UUID(str(agent_id)), []).append((UUID(str(task_id)), bytes(envelope)))
        return found

    def mark_delivered(self, task_id: UUID) -> None:
        with self.db.transaction() as conn:
            store.mark_delivered(conn, task_id, self.clock.now())
            store.add_event(conn, task_id, "delivered", {})

    def mark_started(self, task_id: UUID, *, agent_id: UUID | None = None) -> bool:
        with self.db.transaction() as conn:
            if not self._belongs(conn, task_id, agent_id):
                return False
            moved = store.set_status(conn, task_id, TaskStatus.RUNNING, started_at=self.clock.now())
            if moved:
                store.add_event(conn, task_id, "started", {})
            return moved

    def record_event(
        self, task_id: UUID, kind: str, data: dict[str, Any], *, agent_id: UUID | None = None
    ) -> bool:
        """A progress or log line of an open task (of `agent_id`'s, when given)."""
        if kind == "log" and isinstance(data.get("line"), str):
            data = {**data, "line": data["line"][:MAX_LOG_LINE]}
        with self.db.transaction() as conn:
            if not self._belongs(conn, task_id, agent_id):
                return False
            store.add_event(conn, task_id, kind, data)
            return True

    def finish(self, task_id: UUID, outcome: TaskOutcome, *, agent_id: UUID | None = None) -> bool:
        """Record the answer; False when the task is not open (answered already, expired,
        cancelled) or, with `agent_id`, not that agent's."""
        status = TaskStatus.SUCCEEDED if outcome.ok else TaskStatus.FAILED
        with self.db.transaction() as conn:
            if not self._belongs(conn, task_id, agent_id):
                return False
            done = store.set_status(
                conn,
                task_id,
                status,
                outcome=store.outcome_json(outcome),
                finished_at=self.clock.now(),
            )
            if done:
                store.add_event(
                    conn, task_id, "result", {"ok": outcome.ok, "error_type": outcome.error_type}
                )
            return done

    def cancel(self, task_id: UUID) -> bool:
        outcome = TaskOutcome(
            ok=False,
            error="the task was cancelled",
            error_type="cancelled",
            finished_at=self.clock.now(),
        )
        with self.db.transaction() as conn:
            done = store.set_status(
                conn,
                task_id,
                TaskStatus.CANCELLED,
                outcome=store.outcome_json(outcome),
                finished_at=self.clock.now(),
            )
            if done:
                store.add_event(conn, task_id, "cancelled", {})
            return done

    def expire(self, task_id: UUID) -> bool:
        now = self.clock.now()
        with self.db.transaction() as conn:
            done = store.set_status(
                conn,
                task_id,
                TaskStatus.EXPIRED,
                outcome=store.outcome_json(_expired(now)),
                finished_at=now,
            )
            if done:
                store.add_event(conn, task_id, "expired", {})
            return done

    def expire_overdue(self) -> int:
        """Every open task past its expiry finishes as expired; how many did."""
        now = self.clock.now()
        with self.db.transaction() as conn:
            ids = store.overdue(conn, now)
            for task_id in ids:
                store.set_status(
                    conn,
                    task_id,
                    TaskStatus.EXPIRED,
                    outcome=store.outcome_json(_expired(now)),
                    finished_at=now,
                )
                store.add_event(conn, task_id, "expired", {})
        return len(ids)

    @staticmethod
    def _belongs(conn: Connection, task_id: UUID, agent_id: UUID | None) -> bool:
        row = store.task_row(conn, task_id, lock=True)
        if row is None:
            return False
        return agent_id is None or (
            row.agent_id is not None and UUID(str(row.agent_id)) == agent_id
        )
