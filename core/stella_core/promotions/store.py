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
    "status_reason, run_id, policy_version, kind"
)


class PromotionStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def insert(
        self,
        tenant_id: UUID,
        release_id: UUID,
        environment: str,
        reason: str,
        kind: str = "promotion",
    ) -> UUID:
        """A request: the database copies the release's digests and the environment's policy
        and stamps the requester (whatever else a client would send is overwritten); it
        accepts kind `rollback` only for a release every target of the environment ran."""
        value = self.conn.execute(
            text(
                "INSERT INTO promotion.promotions (tenant_id, release_id, environment, reason,"
                " kind) VALUES (:t, :rid, :env, :reason, :kind) RETURNING id"
            ),
            {"t": tenant_id, "rid": release_id, "env": environment, "reason": reason, "kind": kind},
        ).scalar_one()
        return UUID(str(value))

    def cancel(self, promotion_id: UUID, reason: str) -> None:
        """A person cancels an open request (the database allows only their own, or an
        admin's, and writes who did it into the reason)."""
        self.conn.execute(
            text(
                "UPDATE promotion.promotions SET status = 'cancelled', status_reason = :why"
                " WHERE id = :id"
            ),
            {"id": promotion_id, "why": reason},
        )

    def count_approval(
        self, tenant_id: UUID, promotion_id: UUID, approval_id: UUID, approver: str, packet: str
    ) -> None:
        """The orchestrator counts an approval it verified (written once)."""
        self.conn.execute(
            text(
                "INSERT INTO promotion.counted_approvals (tenant_id, promotion_id, approval_id,"
                " approver, packet_digest) VALUES (:t, :p, :a, :who, :packet)"
                " ON CONFLICT DO NOTHING"
            ),
            {
                "t": tenant_id,
                "p": promotion_id,
                "a": approval_id,
                "who": approver,
                "packet": packet,
            },
        )

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
                    "SELECT a.id, a.promotion_id, a.approver, a.role, a.decision, a.comment, a.at,"
                    " a.packet_id, p.bundle, p.bundle_digest, c.approval_id IS NOT NULL AS counted"
                    " FROM promotion.approvals a"
                    " LEFT JOIN evidence.packets p"
                    "   ON p.id = a.packet_id AND p.tenant_id = a.tenant_id"
                    " LEFT JOIN promotion.counted_approvals c"
                    "   ON c.approval_id = a.id AND c.tenant_id = a.tenant_id"
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

    def undecided(self) -> list[UUID]:
        """Open promotions that nobody decided since their request or their latest approval
        or rejection (a person's machine without the orchestrator leaves them to serve)."""
        rows = self.conn.execute(
            text(
                "SELECT p.id FROM promotion.promotions p"
                " WHERE p.status IN ('requested', 'awaiting_approval')"
                "   AND (p.last_decision IS NULL OR EXISTS ("
                "     SELECT 1 FROM promotion.approvals a"
                "      WHERE a.promotion_id = p.id AND a.tenant_id = p.tenant_id"
                "        AND a.at > p.updated_at))"
                " ORDER BY p.requested_at, p.id"
            )
        )
        return [UUID(str(r.id)) for r in rows]

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

    # canary rung approvals ----------------------------------------------------------------
    def insert_rung_approval(
        self, tenant_id: UUID, promotion_id: UUID, rung: int, comment: str, packet_id: UUID
    ) -> None:
        self.conn.execute(
            text(
                "INSERT INTO promotion.rung_approvals (tenant_id, promotion_id, rung, comment,"
                " packet_id) VALUES (:t, :p, :r, :c, :packet)"
            ),
            {"t": tenant_id, "p": promotion_id, "r": rung, "c": comment, "packet": packet_id},
        )

    def rung_approvals(self, promotion_id: UUID, rung: int | None = None) -> list[Any]:
        return list(
            self.conn.execute(
                text(
                    "SELECT a.id, a.promotion_id, a.rung, a.approver, a.role, a.comment, a.at,"
                    " a.packet_id, p.bundle FROM promotion.rung_approvals a"
                    " LEFT JOIN evidence.packets p"
                    "   ON p.id = a.packet_id AND p.tenant_id = a.tenant_id"
                    " WHERE a.promotion_id = :p AND (CAST(:r AS integer) IS NULL OR a.rung = :r)"
                    " ORDER BY a.rung, a.at"
                ),
                {"p": promotion_id, "r": rung},
            )
        )

    # rollbacks ------------------------------------------------------------------------
    def insert_rollback_state(
        self,
        tenant_id: UUID,
        promotion_id: UUID,
        environment: str,
        trigger: str,
        before: dict[str, Any],
    ) -> None:
        """The orchestrator records what ran before a rollback (written once)."""
        self.conn.execute(
            text(
                "INSERT INTO promotion.rollbacks (tenant_id, promotion_id, environment,"
                " trigger_kind, before) VALUES (:t, :p, :env, :trigger, CAST(:before AS jsonb))"
            ),
            {
                "t": tenant_id,
                "p": promotion_id,
                "env": environment,
                "trigger": trigger,
                "before": json.dumps(before),
            },
        )

    def rollback_state(self, promotion_id: UUID) -> Any | None:
        return self.conn.execute(
            text(
                "SELECT promotion_id, environment, trigger_kind, before, recorded_at"
                " FROM promotion.rollbacks WHERE promotion_id = :p"
            ),
            {"p": promotion_id},
        ).first()
