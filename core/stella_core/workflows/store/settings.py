"""A tenant's workflow settings and the workers serving it."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy import text

from stella_core.workflows.store.base import Rows

WORKER_LIVE_SECONDS = 15


class SettingsRows(Rows):
    def local_executor_enabled(self) -> bool:
        value = self.conn.execute(
            text("SELECT local_executor_enabled FROM workflow.settings")
        ).scalar()
        return bool(value)

    def set_local_executor(self, tenant_id: UUID, enabled: bool) -> None:
        self.conn.execute(
            text(
                "INSERT INTO workflow.settings (tenant_id, local_executor_enabled) "
                "VALUES (:t, :e) ON CONFLICT (tenant_id) "
                "DO UPDATE SET local_executor_enabled = EXCLUDED.local_executor_enabled"
            ),
            {"t": tenant_id, "e": enabled},
        )

    def unsandboxed_allowed(self) -> bool:
        value = self.conn.execute(text("SELECT allow_unsandboxed FROM workflow.settings")).scalar()
        return bool(value)

    def set_unsandboxed(self, tenant_id: UUID, allowed: bool) -> None:
        self.conn.execute(
            text(
                "INSERT INTO workflow.settings (tenant_id, allow_unsandboxed) "
                "VALUES (:t, :a) ON CONFLICT (tenant_id) "
                "DO UPDATE SET allow_unsandboxed = EXCLUDED.allow_unsandboxed"
            ),
            {"t": tenant_id, "a": allowed},
        )

    def register_worker(
        self, worker_id: str, tenant_id: UUID, host: str, pid: int, run_id: UUID | None
    ) -> None:
        # Workers killed without a goodbye leave rows behind: forget them after a day.
        self.conn.execute(
            text("DELETE FROM workflow.workers WHERE heartbeat_at < now() - interval '1 day'")
        )
        self.conn.execute(
            text(
                "INSERT INTO workflow.workers (id, tenant_id, host, pid, run_id) "
                "VALUES (:id, :t, :h, :p, :r) ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()"
            ),
            {"id": worker_id, "t": tenant_id, "h": host, "p": pid, "r": run_id},
        )

    def worker_heartbeat(self, worker_id: str) -> None:
        self.conn.execute(
            text("UPDATE workflow.workers SET heartbeat_at = now() WHERE id = :id"),
            {"id": worker_id},
        )

    def unregister_worker(self, worker_id: str) -> None:
        self.conn.execute(text("DELETE FROM workflow.workers WHERE id = :id"), {"id": worker_id})

    def live_workers(self) -> int:
        """Workers serving the whole tenant (not one run) that beat recently."""
        return int(
            self.conn.execute(
                text(
                    "SELECT count(*) FROM workflow.workers WHERE run_id IS NULL "
                    "AND heartbeat_at > now() - make_interval(secs => :s)"
                ),
                {"s": WORKER_LIVE_SECONDS},
            ).scalar_one()
        )

    def enable_local_executor_everywhere(self) -> None:
        """The embedded default runs scripts on this machine: on for every tenant not yet set.

        Runs on the administrative connection (it sees every tenant); an admin's explicit choice,
        stored as a row, is never overwritten.
        """
        self.conn.execute(
            text(
                "INSERT INTO workflow.settings (tenant_id, local_executor_enabled) "
                "SELECT id, true FROM tenancy.tenants ON CONFLICT (tenant_id) DO NOTHING"
            )
        )
