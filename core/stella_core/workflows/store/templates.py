"""Templates and their versions (a version's document is immutable once written)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import text

from stella_core.workflows.model import TemplateSummary, TemplateVersionInfo
from stella_core.workflows.store.base import Rows, as_json


class TemplateRows(Rows):
    def template_id(self, name: str) -> UUID | None:
        value = self.conn.execute(
            text("SELECT id FROM workflow.templates WHERE name = :n"), {"n": name}
        ).scalar()
        return UUID(str(value)) if value else None

    def insert_template(self, tenant_id: UUID, name: str) -> UUID:
        value = self.conn.execute(
            text("INSERT INTO workflow.templates (tenant_id, name) VALUES (:t, :n) RETURNING id"),
            {"t": tenant_id, "n": name},
        ).scalar_one()
        return UUID(str(value))

    def retired(self, template_id: UUID) -> bool:
        value = self.conn.execute(
            text("SELECT retired_at IS NOT NULL FROM workflow.templates WHERE id = :t"),
            {"t": template_id},
        ).scalar()
        return bool(value)

    def rename_template(self, template_id: UUID, name: str) -> None:
        self.conn.execute(
            text("UPDATE workflow.templates SET name = :n WHERE id = :t"),
            {"n": name, "t": template_id},
        )

    def set_retired(self, template_id: UUID, retired: bool) -> None:
        self.conn.execute(
            text(
                # The database stamps when and by whom (workflow.stamp_retired).
                "UPDATE workflow.templates SET retired_at = CASE WHEN :r THEN now() END "
                "WHERE id = :t"
            ),
            {"r": retired, "t": template_id},
        )

    def runs_of(self, template_id: UUID) -> int:
        value = self.conn.execute(
            text(
                "SELECT count(*) FROM workflow.runs r JOIN workflow.template_versions v "
                "ON v.id = r.template_version_id WHERE v.template_id = :t"
            ),
            {"t": template_id},
        ).scalar()
        return int(value or 0)

    def lock_template(self, template_id: UUID) -> None:
        """Serialise version numbering of one template (the row itself is never updated)."""
        self.conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended('workflow.template:' || :t, 0))"),
            {"t": str(template_id)},
        )

    def latest_version(self, template_id: UUID) -> TemplateVersionInfo | None:
        rows = self._versions("v.template_id = :t ORDER BY v.version DESC LIMIT 1", t=template_id)
        return rows[0] if rows else None

    def insert_version(
        self,
        tenant_id: UUID,
        template_id: UUID,
        version: int,
        document: dict[str, Any],
        digest: str,
    ) -> UUID:
        value = self.conn.execute(
            text(
                "INSERT INTO workflow.template_versions "
                "(tenant_id, template_id, version, document, digest) "
                "VALUES (:t, :tpl, :v, CAST(:d AS jsonb), :g) RETURNING id"
            ),
            {"t": tenant_id, "tpl": template_id, "v": version, "d": as_json(document), "g": digest},
        ).scalar_one()
        return UUID(str(value))

    def versions(self, name: str) -> list[TemplateVersionInfo]:
        return self._versions("t.name = :n ORDER BY v.version", n=name)

    def version(self, name: str, version: int | None) -> TemplateVersionInfo | None:
        if version is None:
            # "The workflow called NAME" is a live one: a retired workflow is not started or
            # chosen by name (its versions stay readable by number for the runs that used them).
            rows = self._versions(
                "t.name = :n AND t.retired_at IS NULL ORDER BY v.version DESC LIMIT 1", n=name
            )
        else:
            # A run names its workflow as it was called when it ran: a renamed workflow's
            # versions are found by that name too (the current name first).
            rows = self._versions(
                "(t.name = :n OR v.document->>'name' = :n) AND v.version = :v "
                "ORDER BY (t.name = :n) DESC LIMIT 1",
                n=name,
                v=version,
            )
        return rows[0] if rows else None

    def _versions(self, where: str, **params: Any) -> list[TemplateVersionInfo]:
        rows = self.conn.execute(
            text(
                "SELECT v.id, v.template_id, t.name, v.version, v.digest, v.created_at, "
                "v.created_by FROM workflow.template_versions v "
                f"JOIN workflow.templates t ON t.id = v.template_id WHERE {where}"
            ),
            params,
        )
        return [
            TemplateVersionInfo(
                id=r.id,
                template_id=r.template_id,
                name=r.name,
                version=r.version,
                digest=r.digest,
                created_at=r.created_at,
                created_by=r.created_by,
            )
            for r in rows
        ]

    def document(self, version_id: UUID) -> dict[str, Any] | None:
        value = self.conn.execute(
            text("SELECT document FROM workflow.template_versions WHERE id = :id"),
            {"id": version_id},
        ).scalar()
        return dict(value) if value is not None else None

    def list_templates(self) -> list[TemplateSummary]:
        rows = self.conn.execute(
            text(
                "SELECT DISTINCT ON (t.name) t.id, t.name, v.version, v.digest, v.created_at, "
                "v.created_by FROM workflow.templates t "
                "JOIN workflow.template_versions v ON v.template_id = t.id "
                "WHERE t.retired_at IS NULL ORDER BY t.name, v.version DESC"
            )
        )
        return [
            TemplateSummary(
                id=r.id,
                name=r.name,
                latest_version=r.version,
                latest_digest=r.digest,
                updated_at=r.created_at,
                updated_by=r.created_by,
            )
            for r in rows
        ]
