"""What deployment is made of, as data: task types and states, a task and its outcome.

One task model for the three transports (DESIGN decision 6): the orchestrator writes every task
to `deploy.tasks`, signed; an agent runs the ones addressed to it, the orchestrator runs the SSH
and WinRM ones itself, and each answer is kept. Pure data, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID


class TaskType(StrEnum):
    DEPLOY = "deploy"
    HEALTH_CHECK = "health-check"
    INSPECT = "inspect"
    EXECUTE_COMMAND = "execute-command"
    UPLOAD_FILES = "upload-files"
    WRITE_STICKER = "write-sticker"
    READ_STICKER = "read-sticker"


class TaskStatus(StrEnum):
    QUEUED = "queued"  # written, not yet handed to an agent (or not yet run over SSH/WinRM)
    DELIVERED = "delivered"  # sent on an agent's stream; re-sent after a reconnect until done
    RUNNING = "running"  # the agent (or the worker, agentless) said it started
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"  # nobody answered before its expiry
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in _FINISHED


_FINISHED = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.EXPIRED})
_FINISHED |= {TaskStatus.CANCELLED}


@dataclass(frozen=True)
class TaskSpec:
    """A task as the orchestrator signs it and a target receives it."""

    id: UUID
    type: TaskType
    target: str  # the target's name (messages, stickers)
    target_id: UUID
    agent_id: UUID | None  # the addressee; None for SSH and WinRM targets
    # Same key, same task: a re-delivered task is answered from the agent's journal.
    idempotency_key: str
    payload: dict[str, Any]
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class TaskOutcome:
    """What a target answered (or what became of a task nobody answered)."""

    ok: bool
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    # A short machine word for the error's kind ("digest-mismatch", "runtime-missing",
    # "not-allowed", "expired", "unreachable"), for the step and the desktop to act on.
    error_type: str | None = None
    retryable: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class Placement:
    """What a deployment left on one target (`deploy.placements`): the newest that succeeded
    is what should run there."""

    deployment_id: UUID
    target_id: UUID
    target: str
    environment: str
    release_id: UUID
    release_name: str
    digests: dict[str, str]
    lockfile_digest: str
    status: str  # succeeded | failed | rolled-back
    error: str | None
    placed_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "deployment_id": str(self.deployment_id),
            "target": self.target,
            "environment": self.environment,
            "release": self.release_name,
            "digests": dict(self.digests),
            "lockfile_digest": self.lockfile_digest,
            "status": self.status,
            "error": self.error,
            "placed_at": self.placed_at.isoformat(),
        }


@dataclass(frozen=True)
class Deployment:
    """One deployment (`deploy.deployments`): a deploy step's, a rollback's or a remediation's."""

    id: UUID
    kind: str  # deploy | rollback | remediation
    environment: str
    environment_id: UUID
    release_id: UUID
    release_name: str
    strategy: str
    run_id: UUID | None
    promotion_id: UUID | None
    status: str  # running | succeeded | failed | rolled-back | cancelled
    lockfile_digest: str
    packet_id: UUID | None
    detail: dict[str, Any]
    started_at: datetime
    finished_at: datetime | None
    created_by: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "kind": self.kind,
            "environment": self.environment,
            "release": self.release_name,
            "strategy": self.strategy,
            "run_id": str(self.run_id) if self.run_id else None,
            "promotion_id": str(self.promotion_id) if self.promotion_id else None,
            "status": self.status,
            "lockfile_digest": self.lockfile_digest,
            "evidence_packet": str(self.packet_id) if self.packet_id else None,
            "detail": self.detail,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }
