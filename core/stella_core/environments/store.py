"""Rows of the `env` schema."""

from __future__ import annotations

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
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import UUID as PgUUID

from stella_core.environments.model import Environment, Freeze

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
        query = select(freezes).order_by(freezes.c.starts_at, freezes.c.id)
        if environment is not None:
            query = query.where(freezes.c.environment == environment)
        if ending_after is not None:
            query = query.where(freezes.c.ends_at > ending_after)
        return [_freeze(r) for r in self.conn.execute(query)]

    def list(self) -> list[Environment]:
        rows = self.conn.execute(select(environments).order_by(environments.c.promotion_order))
        return [_env(r) for r in rows]

    def get(self, name: str) -> Environment | None:
        row = self.conn.execute(select(environments).where(environments.c.name == name)).first()
        return _env(row) if row else None

    def order_taken(self, order: int) -> str | None:
        row = self.conn.execute(
            select(environments.c.name).where(environments.c.promotion_order == order)
        ).first()
        return str(row.name) if row else None
