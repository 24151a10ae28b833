"""Agents as data: what an enrolled agent is and how it shows. Pure data, no I/O."""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

# An agent heard from within this long is online (it sends a heartbeat every 10 s).
ONLINE_WITHIN = timedelta(seconds=45)
HEARTBEAT_SECONDS = 10
# The container runtimes an agent says it can run (on each link), in this order.
RUNTIMES = ("podman-compose", "podman", "docker compose", "docker")


def known_runtimes(values: Iterable[str]) -> tuple[str, ...]:
    """What an agent reported, kept to the runtimes known here (it came over the wire)."""
    given = {v for v in values if isinstance(v, str)}
    return tuple(r for r in RUNTIMES if r in given)


def runtime_program(runtime: str) -> str | None:
    """The known runtime a target's runtime command line runs (`/usr/bin/docker compose` ->
    `docker compose`), or None for a command this cannot judge."""
    try:
        argv = shlex.split(runtime)
    except ValueError:
        return None
    if not argv:
        return None
    program = posixpath.basename(argv[0])
    if program == "docker" and argv[1:2] == ["compose"]:
        return "docker compose"
    return program if program in RUNTIMES else None


def runtime_problem(runtime: str, agent: str, reported: tuple[str, ...] | None) -> str | None:
    """Why a target of agent `agent` cannot deploy with `runtime`, from what the agent last
    reported (None: nothing wrong is known; also when it has not reported yet). The deploy
    itself fails with the runner's own sentence; this says it before anyone tries."""
    program = runtime_program(runtime)
    if reported is None or program is None:
        return None
    # The compose tool and the engine it drives (the runner checks both).
    engine = "docker" if program.startswith("docker") else "podman"
    for needed in (program, engine):
        if needed not in reported:
            return f"{needed} is not installed on the machine of agent {agent}"
    return None


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
    # Reported by the agent on its last link; None until it has said.
    runtimes: tuple[str, ...] | None = None

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
            "runtimes": list(self.runtimes or ()),
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
