"""Rows of the `tenancy` schema and the queries over them."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    FetchedValue,
    MetaData,
    Table,
    Text,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import UUID as PgUUID

from stella_core.crypto.keys import PublicKey
from stella_core.tenancy.keys import RegisteredKey
from stella_core.tenancy.model import AuditEntry, Identity, ProductRole, User

metadata = MetaData(schema="tenancy")

tenants = Table(
    "tenants",
    metadata,
    Column("id", PgUUID(as_uuid=True), primary_key=True, server_default=FetchedValue()),
    Column("name", Text, nullable=False),
    Column("created_at", DateTime(timezone=True)),
    Column("demo", Boolean, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", PgUUID(as_uuid=True), primary_key=True, server_default=FetchedValue()),
    Column("tenant_id", PgUUID(as_uuid=True), nullable=False),
    Column("name", Text, nullable=False),
    Column("db_role", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("disabled", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True)),
    Column("created_by", Text),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", PgUUID(as_uuid=True), primary_key=True, server_default=FetchedValue()),
    Column("tenant_id", PgUUID(as_uuid=True), nullable=False),
    Column("chain_index", BigInteger),
    Column("at", DateTime(timezone=True)),
    Column("actor", Text),
    Column("action", Text, nullable=False),
    Column("entity_type", Text, nullable=False),
    Column("entity_id", Text, nullable=False),
    Column("details", JSONB, nullable=False),
    Column("prev_hash", Text),
    Column("hash", Text),
)

GENESIS_HASH = "0" * 64


def _user(row: Any) -> User:
    return User(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        role=ProductRole(row.role),
        disabled=row.disabled,
        created_at=row.created_at,
        created_by=row.created_by,
    )


class TenancyStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def identity(self) -> Identity | None:
        row = self.conn.execute(
            text(
                "SELECT u.name, u.role, t.id AS tenant_id, t.name AS tenant_name "
                "FROM tenancy.users u JOIN tenancy.tenants t ON t.id = u.tenant_id "
                "WHERE u.db_role = session_user AND t.id = tenancy.current_tenant()"
            )
        ).first()
        if row is None:
            return None
        return Identity(
            user=row.name,
            role=ProductRole(row.role),
            tenant_id=row.tenant_id,
            tenant_name=row.tenant_name,
        )

    def is_demo(self) -> bool:
        value = self.conn.execute(
            text("SELECT demo FROM tenancy.tenants WHERE id = tenancy.current_tenant()")
        ).scalar()
        return bool(value)

    def list_users(self) -> list[User]:
        rows = self.conn.execute(select(users).order_by(users.c.name))
        return [_user(r) for r in rows]

    def get_user(self, name: str) -> User | None:
        row = self.conn.execute(select(users).where(users.c.name == name)).first()
        return _user(row) if row else None

    def insert_user(self, tenant_id: UUID, name: str, db_role: str, role: ProductRole) -> User:
        row = self.conn.execute(
            users.insert()
            .values(tenant_id=tenant_id, name=name, db_role=db_role, role=role.value)
            .returning(*users.c)
        ).one()
        return _user(row)

    def append_audit(
        self,
        tenant_id: UUID,
        action: str,
        entity_type: str,
        entity_id: str,
        details: dict[str, object] | None = None,
    ) -> None:
        self.conn.execute(
            audit_log.insert().values(
                tenant_id=tenant_id,
                action=action,
                entity_type=entity_type,
                entity_id=entity_id,
                details=details or {},
                # The trigger fills these; the columns are NOT NULL so we pass placeholders.
                chain_index=0,
                at=datetime.now(UTC),
                actor="",
                prev_hash="",
                hash="",
            )
        )

    def audit_entries(self, limit: int | None = None) -> list[tuple[AuditEntry, str]]:
        """Entries in chain order with the exact `details::text` the hash covered."""
        sql = (
            "SELECT chain_index, at, actor, action, entity_type, entity_id, details, "
            "details::text AS details_text, prev_hash, hash, tenant_id "
            "FROM tenancy.audit_log ORDER BY tenant_id, chain_index"
        )
        if limit:
            sql += f" LIMIT {int(limit)}"
        out = []
        for r in self.conn.execute(text(sql)):
            entry = AuditEntry(
                chain_index=r.chain_index,
                at=r.at,
                actor=r.actor,
                action=r.action,
                entity_type=r.entity_type,
                entity_id=r.entity_id,
                details=r.details,
                prev_hash=r.prev_hash,
                hash=r.hash,
            )
            out.append((entry, f"{r.tenant_id}\n{r.details_text}"))
        return out


def audit_hash(entry: AuditEntry, tenant_id: str, details_text: str) -> str:
    """Recompute an entry's hash exactly as `tenancy.audit_hash` does in the database."""
    at = entry.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    fields = [
        entry.prev_hash,
        tenant_id,
        str(entry.chain_index),
        at,
        entry.actor,
        entry.action,
        entry.entity_type,
        entry.entity_id,
        details_text,
    ]
    return hashlib.sha256("\n".join(fields).encode()).hexdigest()


def verify_chain(entries: list[tuple[AuditEntry, str]]) -> list[str]:
    """Every break in the chain, not only the first."""
    problems: list[str] = []
    last: dict[str, tuple[int, str]] = {}
    for entry, extra in entries:
        tenant_id, details_text = extra.split("\n", 1)
        prev_index, prev_hash = last.get(tenant_id, (0, GENESIS_HASH))
        if entry.chain_index != prev_index + 1:
            problems.append(
                f"audit entry {entry.chain_index}: expected index {prev_index + 1} (entry missing)"
            )
        if entry.prev_hash != prev_hash:
            problems.append(f"audit entry {entry.chain_index}: previous hash does not match")
        if audit_hash(entry, tenant_id, details_text) != entry.hash:
            problems.append(f"audit entry {entry.chain_index}: content does not match its hash")
        last[tenant_id] = (entry.chain_index, entry.hash)
    return problems


class KeyStore:
    """Registered public keys (RLS: the caller's tenant only); the private keys stay in files
    (`keys.LocalKeys`)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def register(self, tenant_id: UUID, owner_kind: str, owner: str, key: PublicKey) -> None:
        self.conn.execute(
            text(
                "INSERT INTO tenancy.signing_keys"
                " (tenant_id, key_id, owner_kind, owner, public_key)"
                " VALUES (:t, :k, :kind, :owner, :pem) ON CONFLICT DO NOTHING"
            ),
            {
                "t": tenant_id,
                "k": key.key_id,
                "kind": owner_kind,
                "owner": owner,
                "pem": key.pem().decode("ascii"),
            },
        )

    def registered(self, owner: str | None = None) -> list[RegisteredKey]:
        rows = self.conn.execute(
            text(
                "SELECT key_id, owner_kind, owner, public_key, registered_at, created_by"
                " FROM tenancy.signing_keys WHERE (CAST(:o AS text) IS NULL OR owner = :o)"
                " ORDER BY registered_at, key_id"
            ),
            {"o": owner},
        ).all()
        return [
            RegisteredKey(
                key_id=r.key_id,
                owner_kind=r.owner_kind,
                owner=r.owner,
                public_key=PublicKey.from_pem(r.public_key.encode("ascii")),
                registered_at=r.registered_at,
                registered_by=r.created_by,
            )
            for r in rows
        ]

    def active(self, owner: str) -> RegisteredKey | None:
        keys = self.registered(owner)
        return keys[-1] if keys else None

    def public_keys(self) -> dict[str, PublicKey]:
        return {k.key_id: k.public_key for k in self.registered()}
