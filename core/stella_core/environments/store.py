"""Rows of the `env` schema."""

from __future__ import annotations

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
from sqlalchemy.dialects.postgresql import UUID as PgUUID

from stella_core.environments.model import Environment

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
    )


class EnvironmentStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def insert(
        self, tenant_id: UUID, name: str, order: int, required_approvals: int, sod: bool
    ) -> Environment:
        row = self.conn.execute(
            environments.insert()
            .values(
                tenant_id=tenant_id,
                name=name,
                promotion_order=order,
                required_approvals=required_approvals,
                separation_of_duties=sod,
            )
            .returning(*environments.c)
        ).one()
        return _env(row)

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
