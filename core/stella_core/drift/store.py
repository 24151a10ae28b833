"""SQL of the `drift` schema (private to this module)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import orjson
from sqlalchemy import Connection, text


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def lock_target(conn: Connection, target_id: UUID) -> None:
    """One recorder per target at a time (several `stella serve` may check together): the
    second sees the first's finding, so a change is one packet, not two."""
    conn.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
        {"k": f"drift:{target_id}"},
    )


def insert_report(
    conn: Connection,
    *,
    digest: str,
    target_id: UUID,
    target: str,
    observer_kind: str,
    observer: str,
    agent_id: UUID | None,
    task_id: UUID,
    report: dict[str, Any],
    signature: str | None,
    certificate: str | None,
) -> None:
    conn.execute(
        text(
            "INSERT INTO drift.reports (tenant_id, digest, target_id, target, observer_kind,"
            " observer, agent_id, task_id, report, signature, certificate)"
            " VALUES (tenancy.current_tenant(), :digest, :target_id, :target, :kind, :observer,"
            " :agent_id, :task_id, CAST(:report AS jsonb), :signature, :certificate)"
            " ON CONFLICT DO NOTHING"
        ),
        {
            "digest": digest,
            "target_id": target_id,
            "target": target,
            "kind": observer_kind,
            "observer": observer,
            "agent_id": agent_id,
            "task_id": task_id,
            "report": _json(report),
            "signature": signature,
            "certificate": certificate,
        },
    )


def insert_finding(conn: Connection, values: dict[str, Any]) -> Any:
    return conn.execute(
        text(
            "INSERT INTO drift.findings (tenant_id, check_id, target_id, target, environment,"
            " status, differences, reason, expected_release, report_digest, packet_id,"
            " remediation_id)"
            " VALUES (tenancy.current_tenant(), :check_id, :target_id, :target, :environment,"
            " :status, CAST(:differences AS jsonb), :reason, :expected_release, :report_digest,"
            " :packet_id, :remediation_id)"
            " RETURNING *"
        ),
        {**values, "differences": _json(values["differences"])},
    ).one()


def latest_findings(conn: Connection, environment: str | None = None) -> list[Any]:
    """Each target's newest finding (of `environment`), by target name."""
    return list(
        conn.execute(
            text(
                "SELECT * FROM (SELECT DISTINCT ON (f.target_id) f.*, r.observer"
                " FROM drift.findings f LEFT JOIN drift.reports r"
                " ON r.tenant_id = f.tenant_id AND r.digest = f.report_digest"
                " WHERE (CAST(:env AS text) IS NULL OR f.environment = :env)"
                " ORDER BY f.target_id, f.id DESC) x ORDER BY x.target"
            ),
            {"env": environment},
        ).all()
    )


def latest_finding(conn: Connection, target_id: UUID) -> Any:
    return conn.execute(
        text("SELECT status FROM drift.findings WHERE target_id = :t ORDER BY id DESC LIMIT 1"),
        {"t": target_id},
    ).first()


def report(conn: Connection, digest: str) -> Any:
    return conn.execute(
        text("SELECT * FROM drift.reports WHERE digest = :d"), {"d": digest}
    ).first()
