"""SQL of the `deploy` schema's task queue (private to `deploy`). The database lets only the
orchestrator write here (migration 0016); people read their tenant's tasks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from sqlalchemy import Connection, text

from stella_core.deploy.model import TaskOutcome, TaskSpec, TaskStatus

_OPEN = ("queued", "delivered", "running")


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def outcome_json(outcome: TaskOutcome) -> dict[str, Any]:
    return {
        "ok": outcome.ok,
        "outputs": outcome.outputs,
        "error": outcome.error,
        "error_type": outcome.error_type,
        "retryable": outcome.retryable,
        "started_at": outcome.started_at.isoformat() if outcome.started_at else None,
        "finished_at": outcome.finished_at.isoformat() if outcome.finished_at else None,
    }


def outcome_from(doc: dict[str, Any]) -> TaskOutcome:
    def when(value: object) -> datetime | None:
        return datetime.fromisoformat(value) if isinstance(value, str) else None

    outputs = doc.get("outputs")
    return TaskOutcome(
        ok=bool(doc.get("ok")),
        outputs=outputs if isinstance(outputs, dict) else {},
        error=doc.get("error"),
        error_type=doc.get("error_type"),
        retryable=bool(doc.get("retryable")),
        started_at=when(doc.get("started_at")),
        finished_at=when(doc.get("finished_at")),
    )


def insert_task(conn: Connection, spec: TaskSpec, envelope: bytes) -> UUID:
    """The task's id: the new row's, or the existing one's with the same idempotency key."""
    row = conn.execute(
        text(
            "INSERT INTO deploy.tasks (id, tenant_id, type, target, target_id, agent_id,"
            " idempotency_key, payload, envelope, issued_at, expires_at)"
            " VALUES (:id, current_setting('app.tenant_id')::uuid, :type, :target, :target_id,"
            " :agent_id, :key, CAST(:payload AS jsonb), :envelope, :issued, :expires)"
            " ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING id"
        ),
        {
            "id": spec.id,
            "type": spec.type.value,
            "target": spec.target,
            "target_id": spec.target_id,
            "agent_id": spec.agent_id,
            "key": spec.idempotency_key,
            "payload": _json(spec.payload),
            "envelope": envelope,
            "issued": spec.issued_at,
            "expires": spec.expires_at,
        },
    ).first()
    if row is not None:
        add_event(conn, row[0], "queued", {})
        return UUID(str(row[0]))
    return UUID(
        str(
            conn.execute(
                text("SELECT id FROM deploy.tasks WHERE idempotency_key = :key"),
                {"key": spec.idempotency_key},
            ).scalar_one()
        )
    )


def add_event(conn: Connection, task_id: UUID, kind: str, data: dict[str, Any]) -> None:
    conn.execute(
        text(
            "INSERT INTO deploy.task_events (tenant_id, task_id, kind, data)"
            " VALUES (current_setting('app.tenant_id')::uuid, :task, :kind, CAST(:data AS jsonb))"
        ),
        {"task": task_id, "kind": kind, "data": _json(data)},
    )


def open_for_agent(conn: Connection, agent_id: UUID, now: datetime) -> Sequence[Any]:
    return conn.execute(
        text(
            "SELECT id, envelope FROM deploy.tasks WHERE agent_id = :agent"
            " AND status IN ('queued', 'delivered', 'running') AND expires_at > :now"
            " ORDER BY created_at, id"
        ),
        {"agent": agent_id, "now": now},
    ).all()


def task_row(conn: Connection, task_id: UUID, *, lock: bool = False) -> Any:
    return conn.execute(
        text(
            "SELECT id, type, agent_id, status, expires_at, outcome, deliveries, target,"
            " idempotency_key, created_at, started_at, finished_at FROM deploy.tasks"
            " WHERE id = :id" + (" FOR UPDATE" if lock else "")
        ),
        {"id": task_id},
    ).first()


def set_status(conn: Connection, task_id: UUID, status: TaskStatus, **columns: Any) -> bool:
    """Move an open task to `status` (with extra columns); False when it was finished already."""
    sets = ", ".join(f"{name} = :{name}" for name in columns)
    params = {"id": task_id, "status": status.value, **columns}
    if "outcome" in params:
        params["outcome"] = _json(params["outcome"])
        sets = sets.replace(":outcome", "CAST(:outcome AS jsonb)")
    result = conn.execute(
        text(
            f"UPDATE deploy.tasks SET status = :status{', ' + sets if sets else ''}"
            " WHERE id = :id AND status IN ('queued', 'delivered', 'running')"
        ),
        params,
    )
    return result.rowcount == 1


def mark_delivered(conn: Connection, task_id: UUID, now: datetime) -> None:
    conn.execute(
        text(
            "UPDATE deploy.tasks SET deliveries = deliveries + 1, delivered_at = :now,"
            " status = CASE WHEN status = 'queued' THEN 'delivered' ELSE status END"
            " WHERE id = :id AND status IN ('queued', 'delivered', 'running')"
        ),
        {"id": task_id, "now": now},
    )


def overdue(conn: Connection, now: datetime) -> list[UUID]:
    rows = conn.execute(
        text(
            "SELECT id FROM deploy.tasks WHERE status IN ('queued', 'delivered', 'running')"
            " AND expires_at <= :now FOR UPDATE SKIP LOCKED"
        ),
        {"now": now},
    ).all()
    return [UUID(str(r[0])) for r in rows]


def events(conn: Connection, task_id: UUID) -> list[dict[str, Any]]:
    rows = conn.execute(
        text("SELECT kind, data, at FROM deploy.task_events WHERE task_id = :id ORDER BY id"),
        {"id": task_id},
    ).all()
    return [{"kind": r[0], "data": r[1], "at": r[2].isoformat()} for r in rows]


OPEN_STATUSES = _OPEN
