"""Rows of the `promotion` schema and the queries over them."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, text

from stella_core.promotions.model import PromotionStatus

_COLUMNS = (
    "id, release_id, release_name, components, environment, status, reason, requested_by, "
    "requested_at, updated_at, required_approvals, separation_of_duties, policy, last_decision, "
    "status_reason, run_id"
)


class PromotionStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def insert(
        self,
        tenant_id: UUID,
        release_id: UUID,
        release_name: str,
        components: dict[str, str],
        environment: str,
        reason: str,
        required_approvals: int,
        separation_of_duties: bool,
        policy: dict[str, Any],
    ) -> UUID:
        value = self.conn.execute(
            text(
                "INSERT INTO promotion.promotions (tenant_id, release_id, release_name,"
                " components, environment, reason, required_approvals, separation_of_duties,"
                " policy) VALUES (:t, :rid, :rn, CAST(:c AS jsonb), :env, :reason, :req, :sod,"
                " CAST(:policy AS jsonb)) RETURNING id"
            ),
            {
                "t": tenant_id,
                "rid": release_id,
                "rn": release_name,
                "c": json.dumps(components),
                "env": environment,
                "reason": reason,
                "req": required_approvals,
                "sod": separation_of_duties,
                "policy": json.dumps(policy),
            },
        ).scalar_one()
        return UUID(str(value))

    def row(self, promotion_id: UUID, *, lock: bool = False) -> Any | None:
        sql = f"SELECT {_COLUMNS} FROM promotion.promotions WHERE id = :id"
        if lock:
            sql += " FOR UPDATE"
        return self.conn.execute(text(sql), {"id": promotion_id}).first()

    def rows(
        self,
        *,
        statuses: list[str] | None = None,
        environment: str | None = None,
        release: str | None = None,
        limit: int | None = None,
    ) -> list[Any]:
        clauses: list[str] = []
        params: dict[str, Any] = {}
        if statuses:
            clauses.append("status = ANY(:statuses)")
            params["statuses"] = statuses
        if environment:
            clauses.append("environment = :env")
            params["env"] = environment
        if release:
            clauses.append("release_name = :release")
            params["release"] = release
        sql = f"SELECT {_COLUMNS} FROM promotion.promotions"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY requested_at DESC, id"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return list(self.conn.execute(text(sql), params))

    def update(
        self,
        promotion_id: UUID,
        status: PromotionStatus,
        *,
        decision: dict[str, Any] | None = None,
        status_reason: str | None = None,
        run_id: UUID | None = None,
    ) -> None:
        self.conn.execute(
            text(
                "UPDATE promotion.promotions SET status = :s,"
                " last_decision = COALESCE(CAST(:d AS jsonb), last_decision),"
                " status_reason = COALESCE(:why, status_reason),"
                " run_id = COALESCE(:run, run_id) WHERE id = :id"
            ),
            {
                "id": promotion_id,
                "s": status.value,
                "d": json.dumps(decision) if decision is not None else None,
                "why": status_reason,
                "run": run_id,
            },
        )

    def insert_approval(
        self,
        tenant_id: UUID,
        promotion_id: UUID,
        decision: str,
        comment: str,
        packet_id: UUID | None,
    ) -> None:
        self.conn.execute(
            text(
                "INSERT INTO promotion.approvals (tenant_id, promotion_id, decision, comment,"
                " packet_id) VALUES (:t, :p, :d, :c, :packet)"
            ),
            {"t": tenant_id, "p": promotion_id, "d": decision, "c": comment, "packet": packet_id},
        )

    def approvals(self, promotion_ids: list[UUID]) -> list[Any]:
        return list(
            self.conn.execute(
                text(
                    "SELECT a.promotion_id, a.approver, a.role, a.decision, a.comment, a.at,"
                    " a.packet_id, p.bundle FROM promotion.approvals a"
                    " LEFT JOIN evidence.packets p ON p.id = a.packet_id"
                    " WHERE a.promotion_id = ANY(:ids) ORDER BY a.at, a.approver"
                ),
                {"ids": promotion_ids},
            )
        )

    def insert_exception(
        self,
        tenant_id: UUID,
        exception_id: UUID,
        environment: str,
        release_name: str,
        gate: str,
        reason: str,
        expires_at: Any,
        packet_id: UUID,
    ) -> None:
        self.conn.execute(
            text(
                "INSERT INTO promotion.exceptions (id, tenant_id, environment, release_name, gate,"
                " reason, expires_at, packet_id) VALUES (:id, :t, :env, :rel, :gate, :reason,"
                " :expires, :packet)"
            ),
            {
                "id": exception_id,
                "t": tenant_id,
                "env": environment,
                "rel": release_name,
                "gate": gate,
                "reason": reason,
                "expires": expires_at,
                "packet": packet_id,
            },
        )

    def exceptions(self, release_name: str, environment: str) -> list[Any]:
        return list(
            self.conn.execute(
                text(
                    "SELECT e.id, e.environment, e.release_name, e.gate, e.reason, e.expires_at,"
                    " e.granted_by, e.granted_at, e.packet_id, p.bundle"
                    " FROM promotion.exceptions e JOIN evidence.packets p ON p.id = e.packet_id"
                    " WHERE e.release_name = :r AND e.environment = :env"
                    " ORDER BY e.granted_at, e.id"
                ),
                {"r": release_name, "env": environment},
            )
        )

    def reached(self, release_name: str) -> list[str]:
        """Environments this release has been deployed to."""
        rows = self.conn.execute(
            text(
                "SELECT DISTINCT environment FROM promotion.promotions"
                " WHERE release_name = :r AND status = 'deployed' ORDER BY environment"
            ),
            {"r": release_name},
        )
        return [str(r.environment) for r in rows]

    def current(self) -> dict[str, Any]:
        """Per environment, the latest deployed promotion (what runs there now)."""
        rows = self.conn.execute(
            text(
                f"SELECT DISTINCT ON (environment) {_COLUMNS} FROM promotion.promotions"
                " WHERE status = 'deployed' ORDER BY environment, updated_at DESC, id"
            )
        )
        return {str(r.environment): r for r in rows}

    def row_of_run(self, run_id: UUID) -> Any | None:
        return self.conn.execute(
            text(f"SELECT {_COLUMNS} FROM promotion.promotions WHERE run_id = :r"), {"r": run_id}
        ).first()

    def by_run(self, run_id: UUID) -> Any | None:
        return self.conn.execute(
            text(f"SELECT {_COLUMNS} FROM promotion.promotions WHERE run_id = :r FOR UPDATE"),
            {"r": run_id},
        ).first()
