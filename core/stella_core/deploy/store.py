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


def insert_task(
    conn: Connection,
    spec: TaskSpec,
    envelope: bytes,
    *,
    run_id: UUID | None = None,
    node_id: str | None = None,
) -> UUID:
    """The task's id: the new row's, or the existing one's with the same idempotency key."""
    row = conn.execute(
        text(
            "INSERT INTO deploy.tasks (id, tenant_id, type, target, target_id, agent_id,"
            " idempotency_key, payload, envelope, issued_at, expires_at, run_id, node_id)"
            " VALUES (:id, current_setting('app.tenant_id')::uuid, :type, :target, :target_id,"
            " :agent_id, :key, CAST(:payload AS jsonb), :envelope, :issued, :expires, :run_id,"
            " :node_id) ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING id"
        ),
        {
            "run_id": run_id,
            "node_id": node_id,
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


def open_for_agents(conn: Connection, agent_ids: Sequence[UUID], now: datetime) -> Sequence[Any]:
    """`open_for_agent` for many agents in one statement: (agent_id, id, envelope) rows."""
    return conn.execute(
        text(
            "SELECT agent_id, id, envelope FROM deploy.tasks WHERE agent_id = ANY(:agents)"
            " AND status IN ('queued', 'delivered', 'running') AND expires_at > :now"
            " ORDER BY created_at, id"
        ),
        {"agents": list(agent_ids), "now": now},
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


def run_tasks(conn: Connection, run_id: UUID) -> Sequence[Any]:
    return conn.execute(
        text(
            "SELECT id, type, agent_id, status, expires_at, outcome, deliveries, target,"
            " idempotency_key, created_at, started_at, finished_at, node_id FROM deploy.tasks"
            " WHERE run_id = :run ORDER BY created_at, id"
        ),
        {"run": run_id},
    ).all()


def events_after(conn: Connection, task_ids: Sequence[UUID], after: int) -> list[dict[str, Any]]:
    """Events of several tasks after event id `after`, in order (a run monitor's live view)."""
    if not task_ids:
        return []
    rows = conn.execute(
        text(
            "SELECT id, task_id, kind, data, at FROM deploy.task_events"
            " WHERE task_id = ANY(:ids) AND id > :after ORDER BY id"
        ),
        {"ids": list(task_ids), "after": after},
    ).all()
    return [
        {"seq": r[0], "task_id": UUID(str(r[1])), "kind": r[2], "data": r[3], "at": r[4]}
        for r in rows
    ]


# -- deployments and placements (migration 0018) -------------------------------------------


def insert_deployment(conn: Connection, **values: Any) -> bool:
    """A deployment's row, once (a worker that takes a step over finds it written)."""
    result = conn.execute(
        text(
            "INSERT INTO deploy.deployments (id, tenant_id, kind, environment, environment_id,"
            " release_id, release_name, strategy, run_id, promotion_id, lockfile_digest)"
            " VALUES (:id, current_setting('app.tenant_id')::uuid, :kind, :environment,"
            " :environment_id, :release_id, :release_name, :strategy, :run_id, :promotion_id,"
            " :lockfile_digest) ON CONFLICT (id) DO NOTHING"
        ),
        values,
    )
    return result.rowcount == 1


def finish_deployment(
    conn: Connection,
    deployment_id: UUID,
    status: str,
    packet_id: UUID | None,
    detail: dict[str, Any],
) -> bool:
    result = conn.execute(
        text(
            "UPDATE deploy.deployments SET status = :status, packet_id = :packet,"
            " detail = CAST(:detail AS jsonb) WHERE id = :id AND status = 'running'"
        ),
        {"id": deployment_id, "status": status, "packet": packet_id, "detail": _json(detail)},
    )
    return result.rowcount == 1


_DEPLOYMENT_COLUMNS = (
    "id, kind, environment, environment_id, release_id, release_name, strategy, run_id,"
    " promotion_id, status, lockfile_digest, packet_id, detail, started_at, finished_at,"
    " created_by"
)


def deployment_row(conn: Connection, deployment_id: UUID) -> Any:
    return conn.execute(
        text(f"SELECT {_DEPLOYMENT_COLUMNS} FROM deploy.deployments WHERE id = :id"),
        {"id": deployment_id},
    ).first()


def deployment_rows(conn: Connection, environment: str | None, limit: int) -> Sequence[Any]:
    return conn.execute(
        text(
            f"SELECT {_DEPLOYMENT_COLUMNS} FROM deploy.deployments"
            " WHERE (CAST(:env AS text) IS NULL OR environment = :env)"
            " ORDER BY started_at DESC, id LIMIT :limit"
        ),
        {"env": environment, "limit": limit},
    ).all()


def insert_placement(conn: Connection, **values: Any) -> None:
    values = {**values, "digests": _json(values["digests"])}
    conn.execute(
        text(
            "INSERT INTO deploy.placements (tenant_id, deployment_id, target_id, target,"
            " environment, release_id, release_name, digests, lockfile_digest, status, error)"
            " VALUES (current_setting('app.tenant_id')::uuid, :deployment_id, :target_id,"
            " :target, :environment, :release_id, :release_name, CAST(:digests AS jsonb),"
            " :lockfile_digest, :status, :error)"
        ),
        values,
    )


_PLACEMENT_COLUMNS = (
    "id, deployment_id, target_id, target, environment, release_id, release_name, digests,"
    " lockfile_digest, status, error, placed_at"
)


def placement_rows(
    conn: Connection,
    *,
    target_id: UUID | None = None,
    environment: str | None = None,
    status: str | None = None,
    limit: int = 1000,
) -> Sequence[Any]:
    """Placements, newest first."""
    return conn.execute(
        text(
            f"SELECT {_PLACEMENT_COLUMNS} FROM deploy.placements"
            " WHERE (CAST(:target AS uuid) IS NULL OR target_id = :target)"
            " AND (CAST(:env AS text) IS NULL OR environment = :env)"
            " AND (CAST(:status AS text) IS NULL OR status = :status)"
            " ORDER BY id DESC LIMIT :limit"
        ),
        {"target": target_id, "env": environment, "status": status, "limit": limit},
    ).all()


def current_placement_rows(conn: Connection, environment: str | None) -> Sequence[Any]:
    """Each target's newest placement that succeeded: what should run there."""
    return conn.execute(
        text(
            f"SELECT DISTINCT ON (target_id) {_PLACEMENT_COLUMNS} FROM deploy.placements"
            " WHERE status = 'succeeded' AND (CAST(:env AS text) IS NULL OR environment = :env)"
            " ORDER BY target_id, id DESC"
        ),
        {"env": environment},
    ).all()


OPEN_STATUSES = _OPEN


def deployment_lockfile(conn: Connection, key_pattern: str) -> str | None:
    """The lockfile a deployment's deploy tasks carry (their keys match `key_pattern`)."""
    return conn.execute(
        text(
            "SELECT payload->>'lockfile' FROM deploy.tasks WHERE type = 'deploy'"
            " AND idempotency_key LIKE :pattern ORDER BY created_at LIMIT 1"
        ),
        {"pattern": key_pattern},
    ).scalar()


def run_deployments(conn: Connection, run_id: UUID) -> Sequence[Any]:
    """A run's deployments, newest first."""
    return conn.execute(
        text(
            f"SELECT {_DEPLOYMENT_COLUMNS} FROM deploy.deployments WHERE run_id = :run"
            " ORDER BY started_at DESC"
        ),
        {"run": run_id},
    ).all()


def live_group(conn: Connection, environment: str) -> str | None:
    return conn.execute(
        text(
            "SELECT live_group FROM deploy.group_switches WHERE environment = :env"
            " ORDER BY id DESC LIMIT 1"
        ),
        {"env": environment},
    ).scalar()


def insert_group_switch(conn: Connection, **values: Any) -> None:
    """Which blue-green group is live from now (once per deployment)."""
    conn.execute(
        text(
            "INSERT INTO deploy.group_switches (tenant_id, environment, live_group,"
            " previous_group, deployment_id, run_id)"
            " VALUES (current_setting('app.tenant_id')::uuid, :environment, :live_group,"
            " :previous_group, :deployment_id, :run_id) ON CONFLICT DO NOTHING"
        ),
        values,
    )
