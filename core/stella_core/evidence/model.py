"""Records of the evidence ledger: packets, their inputs and references, checkpoints, the
filter to find packets by, and what a decision must offer to be recorded. Pure types, no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from stella_core.workflows.model import RunInfo


@dataclass(frozen=True, slots=True)
class Input:
    """A document a packet references by digest."""

    media_type: str
    body: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.body).hexdigest()


@dataclass(frozen=True, slots=True)
class Refs:
    """What a packet is about, for finding it again (not part of what is signed)."""

    release: str | None = None
    environment: str | None = None
    promotion_id: UUID | None = None
    run_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class PacketRow:
    id: UUID
    seq: int
    type: str
    predicate_type: str
    subject_digests: tuple[str, ...]
    release: str | None
    environment: str | None
    promotion_id: UUID | None
    run_id: UUID | None
    actor: str
    signer_key_id: str
    created_at: datetime
    bundle_digest: str
    prev_hash: str
    hash: str
    bundle: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        """The `stella evidence list` shape (a stable contract), plus context fields."""
        return {
            "id": str(self.id),
            "type": self.type,
            "subject_digests": list(self.subject_digests),
            "signer_key_id": self.signer_key_id,
            "created_at": self.created_at.isoformat(),
            "seq": self.seq,
            "release": self.release,
            "environment": self.environment,
            "promotion_id": str(self.promotion_id) if self.promotion_id else None,
            "run_id": str(self.run_id) if self.run_id else None,
            "actor": self.actor,
            "bundle_digest": self.bundle_digest,
        }


@dataclass(frozen=True, slots=True)
class ChainEntry:
    seq: int
    bundle_digest: str
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    tree_size: int
    root_hash: str
    note: str
    signer_key_id: str
    created_at: datetime
    created_by: str

    def to_json(self) -> dict[str, Any]:
        return {
            "tree_size": self.tree_size,
            "root_hash": self.root_hash,
            "signer_key_id": self.signer_key_id,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class Filter:
    type: str | None = None
    release: str | None = None
    environment: str | None = None
    person: str | None = None
    promotion_id: UUID | None = None
    run_id: UUID | None = None
    since: datetime | None = None
    until: datetime | None = None
    ids: tuple[UUID, ...] | None = None
    bundle_digests: tuple[str, ...] | None = None
    limit: int | None = None


class RunRecords(Protocol):
    """How evidence reads a run that just ended, inside that transaction (the workflows service
    is given by bootstrap: workflows sits below evidence, and offline paths need no engine)."""

    def run_in(self, conn: Any, run_id: UUID) -> RunInfo | None: ...

    def template_document_in(self, conn: Any, version_id: UUID) -> dict[str, Any] | None: ...

    def promotion_of_in(self, conn: Any, run_id: UUID) -> UUID | None: ...


class Decided(Protocol):
    """A decision as evidence records it (the promotions module's `Decision`): its verdict,
    the time it was evaluated at, and the full record that replay re-runs it from."""

    @property
    def verdict(self) -> Any: ...

    @property
    def evaluated_at(self) -> str: ...

    def record(self, policy: Any, inputs: Mapping[str, Any]) -> dict[str, Any]: ...
