"""Agents as data: what an enrolled agent is and how it shows. Pure data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

# An agent heard from within this long is online (it sends a heartbeat every 10 s).
ONLINE_WITHIN = timedelta(seconds=45)
HEARTBEAT_SECONDS = 10


class AgentStatus(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    REVOKED = "revoked"


@dataclass(frozen=True)
class Agent:
    id: UUID
    name: str
    labels: dict[str, str]
    hostname: str
    version: str
    generation: int
    generation_in_use: int
    cert_not_after: datetime
    enrolled_at: datetime
    connected: bool
    last_heartbeat: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None
    revoke_reason: str | None
    key_fingerprint: str = field(repr=False)

    def status(self, now: datetime) -> AgentStatus:
        if self.revoked_at is not None:
            return AgentStatus.REVOKED
        if (
            self.connected
            and self.last_heartbeat is not None
            and now - self.last_heartbeat <= ONLINE_WITHIN
        ):
            return AgentStatus.ONLINE
        return AgentStatus.OFFLINE

    def to_json(self, now: datetime) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "status": self.status(now).value,
            "labels": dict(self.labels),
            "last_heartbeat": self.last_heartbeat.isoformat() if self.last_heartbeat else None,
            "cert_expires_at": self.cert_not_after.isoformat(),
            "generation": self.generation_in_use,
            "hostname": self.hostname,
            "version": self.version,
            "enrolled_at": self.enrolled_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "revoke_reason": self.revoke_reason,
        }


@dataclass(frozen=True)
class IssuedToken:
    """A new enrollment token: shown once, stored only as its hash."""

    token: str = field(repr=False)
    name: str
    expires_at: datetime
    ca_fingerprint: str

    def to_json(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "expires_at": self.expires_at.isoformat(),
            "ca_fingerprint": self.ca_fingerprint,
            "name": self.name,
        }
