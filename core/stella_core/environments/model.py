"""Environment domain types."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_APPROVER_ROLES = ("approver", "admin")
# Promotion order is a PostgreSQL integer; more approvals than this is a typo, not a policy.
MAX_ORDER = 2**31 - 1
MAX_REQUIRED_APPROVALS = 1000


class Environment(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: UUID
    name: str
    order: int = Field(ge=0)
    required_approvals: int = Field(ge=0)
    separation_of_duties: bool
    created_at: datetime
    created_by: str
    workflow: str | None = None
    approver_roles: tuple[str, ...] = DEFAULT_APPROVER_ROLES
    approver_persons: tuple[str, ...] = ()
    quorum: dict[str, int] = Field(default_factory=dict)
    schedule: list[dict[str, Any]] | None = None
    auto_promote_from: str | None = None
    policy_version: int = Field(default=1, ge=1)

    def to_json(self) -> dict[str, object]:
        return {
            "id": str(self.id),
            "name": self.name,
            "order": self.order,
            "required_approvals": self.required_approvals,
            "separation_of_duties": self.separation_of_duties,
            "workflow": self.workflow,
            "approver_roles": list(self.approver_roles),
            "approver_persons": list(self.approver_persons),
            "quorum": dict(self.quorum),
            "schedule": self.schedule,
            "auto_promote_from": self.auto_promote_from,
            "policy_version": self.policy_version,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
        }


class Freeze(BaseModel):
    """A freeze window: no promotion into the environment between start and end, except by the
    people it allows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: UUID
    environment: str
    starts_at: datetime
    ends_at: datetime
    reason: str
    allow: tuple[str, ...]
    created_at: datetime
    created_by: str
    # The latest change (an admin's edit or lift), if any: the fields above are as it left them.
    lifted_at: datetime | None = None
    changed_at: datetime | None = None
    changed_by: str | None = None
    change_reason: str | None = None
    changes: int = Field(default=0, ge=0)

    def active(self, at: datetime) -> bool:
        return self.starts_at <= at < self.ends_at

    @property
    def lifted(self) -> bool:
        return self.lifted_at is not None

    def to_json(self) -> dict[str, object]:
        return {
            "id": str(self.id),
            "environment": self.environment,
            "start": self.starts_at.isoformat(),
            "end": self.ends_at.isoformat(),
            "reason": self.reason,
            "allow": list(self.allow),
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "lifted_at": self.lifted_at.isoformat() if self.lifted_at else None,
            "changed_at": self.changed_at.isoformat() if self.changed_at else None,
            "changed_by": self.changed_by,
            "change_reason": self.change_reason,
            "changes": self.changes,
        }


def environment_policy(
    environment: str,
    *,
    previous: str | None,
    required_approvals: int,
    separation_of_duties: bool,
    approver_roles: Sequence[str],
    approver_persons: Sequence[str] = (),
    quorum: Mapping[str, int] | None = None,
    schedule: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The gate configuration an environment is decided by, before the decision engine checks
    it (the environment service is given that check)."""
    approval: dict[str, Any] = {
        "required": required_approvals,
        "separationOfDuties": separation_of_duties,
        "eligibleRoles": sorted(set(approver_roles)),
        "eligiblePersons": sorted(set(approver_persons)),
    }
    if quorum:
        approval["quorum"] = dict(sorted(quorum.items()))
    gates: list[dict[str, Any]] = [
        {"id": "freeze-window", "type": "freeze-window", "config": {}},
        {"id": "predecessor", "type": "predecessor", "config": {"previous": previous}},
        {"id": "approval", "type": "approval", "config": approval},
    ]
    if schedule is not None:
        gates.append({"id": "schedule", "type": "schedule", "config": {"windows": schedule}})
    return {"environment": environment, "gates": gates}


DEFAULT_RUNTIME = "podman-compose"
DEFAULT_SSH_PORT = 22


class TargetType(StrEnum):
    AGENT = "agent"
    SSH = "ssh"
    WINRM = "winrm"


class WinrmAuth(StrEnum):
    NTLM = "ntlm"
    KERBEROS = "kerberos"
    BASIC = "basic"  # over HTTPS only


def default_directory(target: str) -> str:
    """Where a target keeps its lockfile and sticker unless told: relative, so resolved on the
    target against the login's home (SSH, WinRM) or the agent's working directory."""
    return f"stella/{target}"


class Target(BaseModel):
    """Where an environment's release runs, and how it is reached. The connection secret (an SSH
    private key, a WinRM password) is never part of it: only whether one is held."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: UUID
    name: str
    environment: str
    type: TargetType
    labels: dict[str, str] = Field(default_factory=dict)
    group: str | None = None
    runtime: str = DEFAULT_RUNTIME
    directory: str
    agent: str | None = None
    host: str | None = None
    port: int | None = None
    user: str | None = None
    url: str | None = None
    # The pinned host keys (known_hosts text): public, not a secret.
    known_hosts: str | None = None
    # WinRM only: how it authenticates, and the CA its HTTPS certificate is checked against
    # (PEM; None: the system's trust store).
    auth: WinrmAuth | None = None
    ca_cert: str | None = None
    has_secret: bool = False
    created_at: datetime | None = None
    created_by: str | None = None

    @property
    def description(self) -> str:
        if self.type is TargetType.AGENT:
            return f"agent {self.agent}"
        if self.type is TargetType.SSH:
            return f"ssh {self.user}@{self.host}:{self.port}"
        return f"winrm {self.url}"

    def to_json(self) -> dict[str, object]:
        """What `target list` shows: never the secret, only whether one is held."""
        return {
            "name": self.name,
            "environment": self.environment,
            "type": self.type.value,
            "labels": dict(self.labels),
            "group": self.group,
            "runtime": self.runtime,
            "directory": self.directory,
            "agent": self.agent,
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "url": self.url,
            "has_secret": self.has_secret,
        }
