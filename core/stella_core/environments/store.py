"""Rows of the `env` schema."""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    DateTime,
    FetchedValue,
    Integer,
    MetaData,
    Table,
    Text,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, BYTEA, JSONB
from sqlalchemy.dialects.postgresql import UUID as PgUUID

from stella_core.environments.model import Environment, Freeze, Target, TargetType, WinrmAuth

metadata = MetaData(schema="env")

environments = Table(
    "environments",
    metadata,
    Column("id", PgUUID(as_uuid=True), primary_key=True, server_default=FetchedValue()),
    Column("tenant_id", PgUUID(as_uuid=True), nullable=False),
    Column("name", Text, nullable=False),
    Column("promotion_order", Integer, nullable=False),
    Column("required_approvals", Integer, nullable=False),
    Column("separation_of_duties", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True)),
    Column("created_by", Text),
    Column("workflow", Text),
    Column("approver_roles", ARRAY(Text), server_default=FetchedValue()),
    Column("approver_persons", ARRAY(Text), server_default=FetchedValue()),
    Column("quorum", JSONB, server_default=FetchedValue()),
    Column("schedule", JSONB),
    Column("auto_promote_from", Text),
    Column("policy_version", Integer, server_default=FetchedValue()),
    Column("policy_packet_id", PgUUID(as_uuid=True)),
)

freezes = Table(
    "freezes",
    metadata,
    Column("id", PgUUID(as_uuid=True), primary_key=True, server_default=FetchedValue()),
    Column("tenant_id", PgUUID(as_uuid=True), nullable=False),
    Column("environment", Text, nullable=False),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True), nullable=False),
    Column("reason", Text, nullable=False),
    Column("allow", ARRAY(Text), nullable=False),
    Column("created_at", DateTime(timezone=True), server_default=FetchedValue()),
    Column("created_by", Text, server_default=FetchedValue()),
)

# Each freeze as its latest change leaves it (a view over `freezes` and `freeze_changes`).
current_freezes = Table(
    "current_freezes",
    metadata,
    Column("id", PgUUID(as_uuid=True), primary_key=True),
    Column("tenant_id", PgUUID(as_uuid=True)),
    Column("environment", Text),
    Column("starts_at", DateTime(timezone=True)),
    Column("ends_at", DateTime(timezone=True)),
    Column("reason", Text),
    Column("allow", ARRAY(Text)),
    Column("created_at", DateTime(timezone=True)),
    Column("created_by", Text),
    Column("lifted_at", DateTime(timezone=True)),
    Column("changed_at", DateTime(timezone=True)),
    Column("changed_by", Text),
    Column("change_reason", Text),
    Column("changes", Integer),
)

freeze_changes = Table(
    "freeze_changes",
    metadata,
    Column("seq", Integer, primary_key=True, server_default=FetchedValue()),
    Column("tenant_id", PgUUID(as_uuid=True), nullable=False),
    Column("freeze_id", PgUUID(as_uuid=True), nullable=False),
    Column("lift", Boolean, nullable=False),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True), nullable=False),
    Column("reason", Text, nullable=False),
    Column("allow", ARRAY(Text), nullable=False),
    Column("why", Text, nullable=False),
    Column("changed_at", DateTime(timezone=True), server_default=FetchedValue()),
    Column("changed_by", Text, server_default=FetchedValue()),
)

targets = Table(
    "targets",
    metadata,
    Column("id", PgUUID(as_uuid=True), primary_key=True, server_default=FetchedValue()),
    Column("tenant_id", PgUUID(as_uuid=True), nullable=False),
    Column("name", Text, nullable=False),
    Column("environment", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("labels", JSONB, nullable=False),
    Column("target_group", Text),
    Column("runtime", Text, nullable=False),
    Column("directory", Text, nullable=False),
    Column("agent", Text),
    Column("host", Text),
    Column("port", Integer),
    Column("username", Text),
    Column("url", Text),
    Column("known_hosts", Text),
    Column("auth", Text),
    Column("ca_cert", Text),
    # Readable by the orchestrator only (a column privilege): never select it in a person's
    # query (`TARGET_COLUMNS` leaves it out).
    Column("secret_ciphertext", BYTEA),
    Column("has_secret", Boolean, server_default=FetchedValue()),
    Column("created_at", DateTime(timezone=True), server_default=FetchedValue()),
    Column("created_by", Text, server_default=FetchedValue()),
)
TARGET_COLUMNS = [c for c in targets.c if c.name != "secret_ciphertext"]


def _target(row: Any) -> Target:
    return Target(
        id=row.id,
        name=row.name,
        environment=row.environment,
        type=TargetType(row.type),
        labels=dict(row.labels or {}),
        group=row.target_group,
        runtime=row.runtime,
        directory=row.directory,
        agent=row.agent,
        host=row.host,
        port=row.port,
        user=row.username,
        url=row.url,
        known_hosts=row.known_hosts,
        auth=WinrmAuth(row.auth) if row.auth else None,
        ca_cert=row.ca_cert,
        has_secret=bool(row.has_secret),
        created_at=row.created_at,
        created_by=row.created_by,
    )


def _env(row: Any) -> Environment:
    return Environment(
        id=row.id,
        name=row.name,
        order=row.promotion_order,
        required_approvals=row.required_approvals,
        separation_of_duties=row.separation_of_duties,
        created_at=row.created_at,
        created_by=row.created_by,
        workflow=row.workflow,
        approver_roles=tuple(row.approver_roles),
        approver_persons=tuple(row.approver_persons),
        quorum=dict(row.quorum or {}),
        schedule=row.schedule,
        auto_promote_from=row.auto_promote_from,
        policy_version=row.policy_version,
    )


def _freeze(row: Any) -> Freeze:
    return Freeze(
        id=row.id,
        environment=row.environment,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        reason=row.reason,
        allow=tuple(row.allow),
        created_at=row.created_at,
        created_by=row.created_by,
        lifted_at=getattr(row, "lifted_at", None),
        changed_at=getattr(row, "changed_at", None),
        changed_by=getattr(row, "changed_by", None),
        change_reason=getattr(row, "change_reason", None),
        changes=getattr(row, "changes", 0) or 0,
    )


class EnvironmentStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def insert(
        self,
        tenant_id: UUID,
        name: str,
        order: int,
        required_approvals: int,
        sod: bool,
        **policy: Any,
    ) -> Environment:
        row = self.conn.execute(
            environments.insert()
            .values(
                tenant_id=tenant_id,
                name=name,
                promotion_order=order,
                required_approvals=required_approvals,
                separation_of_duties=sod,
                **{k: v for k, v in policy.items() if v is not None},
            )
            .returning(*environments.c)
        ).one()
        return _env(row)

    def add_freeze(
        self,
        tenant_id: UUID,
        environment: str,
        starts_at: datetime,
        ends_at: datetime,
        reason: str,
        allow: list[str],
    ) -> Freeze:
        row = self.conn.execute(
            freezes.insert()
            .values(
                tenant_id=tenant_id,
                environment=environment,
                starts_at=starts_at,
                ends_at=ends_at,
                reason=reason,
                allow=allow,
            )
            .returning(*freezes.c)
        ).one()
        return _freeze(row)

    def freezes(
        self, environment: str | None = None, *, ending_after: datetime | None = None
    ) -> list[Freeze]:
        """Freezes as their latest change leaves them (a lifted one ends when it was lifted)."""
        view = current_freezes
        query = select(view).order_by(view.c.starts_at, view.c.id)
        if environment is not None:
            query = query.where(view.c.environment == environment)
        if ending_after is not None:
            query = query.where(view.c.ends_at > ending_after)
        return [_freeze(r) for r in self.conn.execute(query)]

    def get_freeze(self, freeze_id: UUID) -> Freeze | None:
        row = self.conn.execute(
            select(current_freezes).where(current_freezes.c.id == freeze_id)
        ).first()
        return _freeze(row) if row else None

    def freeze_ids(self, prefix: str) -> builtins.list[UUID]:
        """Freezes whose id, written without dashes, starts with `prefix` (lowercase hex)."""
        rows = self.conn.execute(
            select(freezes.c.id).where(
                text("replace(env.freezes.id::text, '-', '') LIKE :p").bindparams(p=prefix + "%")
            )
        )
        return [r.id for r in rows]

    def change_freeze(
        self,
        tenant_id: UUID,
        freeze: Freeze,
        *,
        lift: bool,
        why: str,
    ) -> Freeze:
        """Record a change (the database stamps who and when, and for a lift keeps the dates);
        the freeze as it now is."""
        self.conn.execute(
            freeze_changes.insert().values(
                tenant_id=tenant_id,
                freeze_id=freeze.id,
                lift=lift,
                starts_at=freeze.starts_at,
                ends_at=freeze.ends_at,
                reason=freeze.reason,
                allow=list(freeze.allow),
                why=why,
            )
        )
        changed = self.get_freeze(freeze.id)
        assert changed is not None  # the row was just read under the same transaction
        return changed

    # targets ------------------------------------------------------------------------------
    def insert_target(self, tenant_id: UUID, values: dict[str, Any]) -> Target:
        row = self.conn.execute(
            targets.insert().values(tenant_id=tenant_id, **values).returning(*TARGET_COLUMNS)
        ).one()
        return _target(row)

    def targets(self, environment: str | None = None) -> builtins.list[Target]:
        query = select(*TARGET_COLUMNS).order_by(targets.c.environment, targets.c.name)
        if environment is not None:
            query = query.where(targets.c.environment == environment)
        return [_target(r) for r in self.conn.execute(query)]

    def target(self, name: str) -> Target | None:
        row = self.conn.execute(select(*TARGET_COLUMNS).where(targets.c.name == name)).first()
        return _target(row) if row else None

    def target_secret(self, name: str) -> bytes | None:
        """The sealed secret (the orchestrator's connection only)."""
        value = self.conn.execute(
            select(targets.c.secret_ciphertext).where(targets.c.name == name)
        ).scalar()
        return bytes(value) if value is not None else None

    def delete_target(self, name: str) -> bool:
        done = self.conn.execute(targets.delete().where(targets.c.name == name))
        return bool(done.rowcount)

    def list(self) -> list[Environment]:
        rows = self.conn.execute(select(environments).order_by(environments.c.promotion_order))
        return [_env(r) for r in rows]

    def get(self, name: str, *, lock: bool = False) -> Environment | None:
        query = select(environments).where(environments.c.name == name)
        if lock:
            query = query.with_for_update()
        row = self.conn.execute(query).first()
        return _env(row) if row else None

    def policy_version(self, name: str) -> int:
        value = self.conn.execute(
            select(environments.c.policy_version).where(environments.c.name == name)
        ).scalar_one()
        return int(value)

    def update_policy(self, name: str, settings: dict[str, Any], packet_id: UUID) -> Environment:
        row = self.conn.execute(
            environments.update()
            .where(environments.c.name == name)
            .values(
                promotion_order=settings["order"],
                required_approvals=settings["required_approvals"],
                separation_of_duties=settings["separation_of_duties"],
                workflow=settings["workflow"],
                approver_roles=list(settings["approver_roles"]),
                approver_persons=list(settings["approver_persons"]),
                quorum=dict(settings["quorum"]),
                schedule=settings["schedule"],
                auto_promote_from=settings["auto_promote_from"],
                policy_packet_id=packet_id,
            )
            .returning(*environments.c)
        ).one()
        return _env(row)

    def policy_document(self, name: str) -> dict[str, Any] | None:
        """The policy the database derives for this environment (what promotions copy)."""
        value = self.conn.execute(
            text("SELECT env.policy_document(tenancy.current_tenant(), :n)"), {"n": name}
        ).scalar()
        return dict(value) if value is not None else None

    def policy_versions(self, name: str) -> builtins.list[dict[str, Any]]:
        rows = self.conn.execute(
            text(
                "SELECT v.version, v.policy, v.changed_by, v.changed_at, v.packet_id,"
                " p.bundle_digest FROM env.policy_versions v"
                " LEFT JOIN evidence.packets p ON p.id = v.packet_id AND p.tenant_id = v.tenant_id"
                " WHERE v.environment = :n ORDER BY v.version"
            ),
            {"n": name},
        )
        return [
            {
                "version": r.version,
                "policy": r.policy,
                "changed_by": r.changed_by,
                "changed_at": r.changed_at.isoformat(),
                "packet_id": str(r.packet_id) if r.packet_id else None,
                "packet": r.bundle_digest,
            }
            for r in rows
        ]

    def policy_packet(self, name: str, version: int) -> str | None:
        """The bundle digest of the signed packet of one policy version (None: unsigned)."""
        value = self.conn.execute(
            text(
                "SELECT p.bundle_digest FROM env.policy_versions v"
                " JOIN evidence.packets p ON p.id = v.packet_id AND p.tenant_id = v.tenant_id"
                " WHERE v.environment = :n AND v.version = :v"
            ),
            {"n": name, "v": version},
        ).scalar()
        return str(value) if value is not None else None

    def order_taken(self, order: int) -> str | None:
        row = self.conn.execute(
            select(environments.c.name).where(environments.c.promotion_order == order)
        ).first()
        return str(row.name) if row else None

    # drift remediation (issue 12) -----------------------------------------------------------
    def remediate_drift(self) -> dict[str, bool]:
        """environment -> whether it opted into drift remediation."""
        rows = self.conn.execute(text("SELECT name, remediate_drift FROM env.environments"))
        return {str(r.name): bool(r.remediate_drift) for r in rows}

    def set_remediate_drift(self, name: str, on: bool) -> bool:
        done = self.conn.execute(
            text("UPDATE env.environments SET remediate_drift = :on WHERE name = :n"),
            {"on": on, "n": name},
        )
        return bool(done.rowcount)
