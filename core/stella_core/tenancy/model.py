"""Tenancy domain types."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, ConfigDict


class ProductRole(StrEnum):
    RELEASE_MANAGER = "release-manager"
    APPROVER = "approver"
    AUDITOR = "auditor"
    ADMIN = "admin"


# Names PostgreSQL or we reserve; a person may not take them.
RESERVED_NAMES = frozenset(
    {"postgres", "public", "none", "current_user", "session_user", "orchestrator"}
)
RESERVED_PREFIXES = ("pg_", "stella_", "stella-")


class User(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: UUID
    tenant_id: UUID
    name: str
    role: ProductRole
    disabled: bool
    created_at: datetime
    created_by: str


class AuditEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    chain_index: int
    at: datetime
    actor: str
    action: str
    entity_type: str
    entity_id: str
    details: dict[str, object]
    prev_hash: str
    hash: str


class Identity(BaseModel):
    """Who the current connection is: taken from the database, never from the client."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user: str
    role: ProductRole
    tenant_id: UUID
    tenant_name: str
