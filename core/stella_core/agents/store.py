"""SQL of the `agent` schema (private to `agents`). The database decides who may write what
(migration 0016): the orchestrator enrolls, renews and records heartbeats; admins create tokens
and revoke; nobody un-revokes or takes a generation back."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from sqlalchemy import Connection, text

from stella_core.agents.model import Agent

_AGENT_COLUMNS = (
    "id, name, labels, hostname, version, generation, generation_in_use, cert_not_after,"
    " enrolled_at, connected, last_heartbeat, revoked_at, revoked_by, revoke_reason,"
    " key_fingerprint, runtimes"
)


def _agent(row: Any) -> Agent:
    return Agent(
        id=UUID(str(row.id)),
        name=row.name,
        labels={str(k): str(v) for k, v in (row.labels or {}).items()},
        hostname=row.hostname,
        version=row.version,
        generation=row.generation,
        generation_in_use=row.generation_in_use,
        cert_not_after=row.cert_not_after,
        enrolled_at=row.enrolled_at,
        connected=row.connected,
        last_heartbeat=row.last_heartbeat,
        revoked_at=row.revoked_at,
        revoked_by=row.revoked_by,
        revoke_reason=row.revoke_reason,
        key_fingerprint=row.key_fingerprint,
        runtimes=tuple(row.runtimes) if row.runtimes is not None else None,
    )


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


# --- the CA ---------------------------------------------------------------------------------
def authority_pem(conn: Connection) -> bytes | None:
    """The tenant's newest agent CA certificate."""
    row = conn.execute(
        text("SELECT certificate FROM agent.authorities ORDER BY created_at DESC LIMIT 1")
    ).first()
    return row[0].encode() if row else None


def add_authority(conn: Connection, fingerprint: str, pem: bytes) -> None:
    conn.execute(
        text(
            "INSERT INTO agent.authorities (tenant_id, fingerprint, certificate)"
            " VALUES (current_setting('app.tenant_id')::uuid, :fp, :pem)"
        ),
        {"fp": fingerprint, "pem": pem.decode()},
    )


def lock_tenant(conn: Connection, what: str) -> None:
    """Serialise one kind of change per tenant (making the CA: two processes may try at once)."""
    conn.execute(
        text(
            "SELECT pg_advisory_xact_lock(hashtextextended("
            "'stella.agent:' || :what || current_setting('app.tenant_id'), 0))"
        ),
        {"what": what},
    )


# --- tokens ---------------------------------------------------------------------------------
def add_token(
    conn: Connection, token_hash: str, name: str, labels: dict[str, str], expires_at: datetime
) -> None:
    conn.execute(
        text(
            "INSERT INTO agent.tokens (tenant_id, token_hash, name, labels, expires_at)"
            " VALUES (current_setting('app.tenant_id')::uuid, :hash, :name,"
            " CAST(:labels AS jsonb), :expires)"
        ),
        {"hash": token_hash, "name": name, "labels": _json(labels), "expires": expires_at},
    )


def token_for_use(conn: Connection, token_hash: str) -> Any:
    return conn.execute(
        text(
            "SELECT id, name, labels, expires_at, used_at FROM agent.tokens"
            " WHERE token_hash = :hash FOR UPDATE"
        ),
        {"hash": token_hash},
    ).first()


def use_token(conn: Connection, token_id: UUID, agent_id: UUID, now: datetime) -> None:
    conn.execute(
        text("UPDATE agent.tokens SET used_at = :now, used_by = :agent WHERE id = :id"),
        {"now": now, "agent": agent_id, "id": token_id},
    )


# --- agents ---------------------------------------------------------------------------------
def add_agent(
    conn: Connection,
    agent_id: UUID,
    name: str,
    labels: dict[str, str],
    hostname: str,
    version: str,
    key_fingerprint: str,
    not_after: datetime,
    token_id: UUID,
) -> None:
    conn.execute(
        text(
            "INSERT INTO agent.agents (id, tenant_id, name, labels, hostname, version,"
            " key_fingerprint, cert_not_after, token_id)"
            " VALUES (:id, current_setting('app.tenant_id')::uuid, :name, CAST(:labels AS jsonb),"
            " :hostname, :version, :fp, :not_after, :token)"
        ),
        {
            "id": agent_id,
            "name": name,
            "labels": _json(labels),
            "hostname": hostname,
            "version": version,
            "fp": key_fingerprint,
            "not_after": not_after,
            "token": token_id,
        },
    )


def active_name_taken(conn: Connection, name: str) -> bool:
    return (
        conn.execute(
            text("SELECT 1 FROM agent.agents WHERE name = :name AND revoked_at IS NULL"),
            {"name": name},
        ).first()
        is not None
    )


def agents(conn: Connection) -> list[Agent]:
    rows = conn.execute(
        text(f"SELECT {_AGENT_COLUMNS} FROM agent.agents ORDER BY name, enrolled_at")
    ).all()
    return [_agent(r) for r in rows]


def agent(conn: Connection, agent_id: UUID, *, lock: bool = False) -> Agent | None:
    row = conn.execute(
        text(
            f"SELECT {_AGENT_COLUMNS} FROM agent.agents WHERE id = :id"
            + (" FOR UPDATE" if lock else "")
        ),
        {"id": agent_id},
    ).first()
    return _agent(row) if row else None


def agents_named(conn: Connection, name: str) -> list[Agent]:
    rows = conn.execute(
        text(
            f"SELECT {_AGENT_COLUMNS} FROM agent.agents WHERE name = :name"
            " ORDER BY revoked_at IS NULL DESC, enrolled_at DESC"
        ),
        {"name": name},
    ).all()
    return [_agent(r) for r in rows]


def revoked_among(conn: Connection, ids: list[UUID]) -> set[UUID]:
    if not ids:
        return set()
    rows = conn.execute(
        text("SELECT id FROM agent.agents WHERE id = ANY(:ids) AND revoked_at IS NOT NULL"),
        {"ids": ids},
    ).all()
    return {UUID(str(r[0])) for r in rows}


def update_agent(conn: Connection, agent_id: UUID, **columns: Any) -> None:
    sets = ", ".join(f"{name} = :{name}" for name in columns)
    conn.execute(
        text(f"UPDATE agent.agents SET {sets} WHERE id = :id"), {"id": agent_id, **columns}
    )


def revoke(conn: Connection, agent_id: UUID, reason: str) -> bool:
    result = conn.execute(
        text(
            "UPDATE agent.agents SET revoked_at = now(), revoke_reason = :reason, connected = false"
            " WHERE id = :id AND revoked_at IS NULL"
        ),
        {"id": agent_id, "reason": reason},
    )
    return result.rowcount == 1


def revoke_as_person(conn: Connection, agent_id: UUID, reason: str) -> bool:
    # A person may change the revocation only (the database refuses the rest).
    result = conn.execute(
        text(
            "UPDATE agent.agents SET revoked_at = now(), revoke_reason = :reason"
            " WHERE id = :id AND revoked_at IS NULL"
        ),
        {"id": agent_id, "reason": reason},
    )
    return result.rowcount == 1


def add_certificate(
    conn: Connection,
    serial: str,
    agent_id: UUID,
    generation: int,
    not_before: datetime,
    not_after: datetime,
    reason: str,
) -> None:
    conn.execute(
        text(
            "INSERT INTO agent.certificates (tenant_id, serial, agent_id, generation, not_before,"
            " not_after, reason) VALUES (current_setting('app.tenant_id')::uuid, :serial, :agent,"
            " :generation, :nb, :na, :reason)"
        ),
        {
            "serial": serial,
            "agent": agent_id,
            "generation": generation,
            "nb": not_before,
            "na": not_after,
            "reason": reason,
        },
    )


def certificate(conn: Connection, serial: str) -> Any:
    return conn.execute(
        text(
            "SELECT serial, agent_id, generation, not_after FROM agent.certificates"
            " WHERE serial = :serial"
        ),
        {"serial": serial},
    ).first()


def add_event(conn: Connection, agent_id: UUID, kind: str, detail: dict[str, Any]) -> None:
    conn.execute(
        text(
            "INSERT INTO agent.events (tenant_id, agent_id, kind, detail)"
            " VALUES (current_setting('app.tenant_id')::uuid, :agent, :kind,"
            " CAST(:detail AS jsonb))"
        ),
        {"agent": agent_id, "kind": kind, "detail": _json(detail)},
    )


def events(conn: Connection, agent_id: UUID) -> list[dict[str, Any]]:
    rows = conn.execute(
        text(
            "SELECT kind, detail, at, actor FROM agent.events WHERE agent_id = :agent ORDER BY id"
        ),
        {"agent": agent_id},
    ).all()
    return [{"kind": r[0], "detail": r[1], "at": r[2].isoformat(), "actor": r[3]} for r in rows]


def mark_all_disconnected(conn: Connection, ids: list[UUID]) -> None:
    if ids:
        conn.execute(
            text("UPDATE agent.agents SET connected = false WHERE id = ANY(:ids)"), {"ids": ids}
        )
