"""Promotion domain: the state machine, an environment's policy, and the records the CLI and the
desktop show. Pure (no I/O): the database enforces the same transitions again (migration 0005).

    requested -> blocked | awaiting_approval | approved | rejected | cancelled
    blocked -> blocked | awaiting_approval | approved | rejected | cancelled
    awaiting_approval -> awaiting_approval | blocked | approved | rejected | cancelled
    approved -> deploying | deployed | cancelled | failed
    deploying -> deployed | failed | rolled_back | cancelled

`blocked` is a deny by a gate that may clear by itself (a freeze window ends, the release reaches
the previous environment): the promotion stays open, is re-evaluated on every decision, and never
proceeds while any gate fails. An approver's rejection ends it (`rejected`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from stella_core.errors import AuthorizationError, DefinitionError
from stella_core.workflows.model import RunStatus

# Gates an admin's signed exception may waive (a freeze has its own `allow` list; approvals are
# never waived).
EXCEPTION_GATES = ("predecessor", "schedule")


class PromotionStatus(StrEnum):
    REQUESTED = "requested"
    BLOCKED = "blocked"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    DEPLOYING = "deploying"
    DEPLOYED = "deployed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


S = PromotionStatus
OPEN = frozenset({S.REQUESTED, S.BLOCKED, S.AWAITING_APPROVAL})
TERMINAL = frozenset({S.DEPLOYED, S.REJECTED, S.CANCELLED, S.FAILED, S.ROLLED_BACK})
TRANSITIONS: dict[PromotionStatus, frozenset[PromotionStatus]] = {
    S.REQUESTED: frozenset({S.BLOCKED, S.AWAITING_APPROVAL, S.APPROVED, S.REJECTED, S.CANCELLED}),
    S.BLOCKED: frozenset({S.BLOCKED, S.AWAITING_APPROVAL, S.APPROVED, S.REJECTED, S.CANCELLED}),
    S.AWAITING_APPROVAL: frozenset(
        {S.AWAITING_APPROVAL, S.BLOCKED, S.APPROVED, S.REJECTED, S.CANCELLED}
    ),
    S.APPROVED: frozenset({S.DEPLOYING, S.DEPLOYED, S.CANCELLED, S.FAILED}),
    S.DEPLOYING: frozenset({S.DEPLOYED, S.FAILED, S.ROLLED_BACK, S.CANCELLED}),
}
# A finished workflow run decides how its promotion ends.
RUN_OUTCOME: dict[str, PromotionStatus] = {
    RunStatus.SUCCEEDED: S.DEPLOYED,
    RunStatus.FAILED: S.FAILED,
    RunStatus.TIMED_OUT: S.FAILED,
    RunStatus.CANCELLED: S.CANCELLED,
    RunStatus.ROLLED_BACK: S.ROLLED_BACK,
}


class IllegalTransitionError(DefinitionError):
    """A promotion cannot move from its status to the one asked."""


class ApprovalRefusedError(AuthorizationError):
    """A decision this person may not take: self-approval under separation of duties, not
    eligible, already decided. Exit code 3, so scripts can tell a refusal from a failure."""

    exit_code = 3


def check_transition(old: PromotionStatus, new: PromotionStatus) -> None:
    if new not in TRANSITIONS.get(old, frozenset()):
        raise IllegalTransitionError(f"a promotion cannot go from {old.value} to {new.value}")


def approvers_of(policy: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The roles and the people the policy's approval gate lets decide (both empty: anyone)."""
    gate = next(g for g in policy["gates"] if g["type"] == "approval")
    config = gate.get("config") or {}
    return list(config.get("eligibleRoles") or []), list(config.get("eligiblePersons") or [])


def eligible(policy: Mapping[str, Any], person: str, role: str) -> bool:
    roles, persons = approvers_of(policy)
    return (not roles and not persons) or role in roles or person in persons


def status_for(verdict: str, gates: Sequence[Mapping[str, Any]]) -> PromotionStatus:
    """Where a decision puts an open promotion."""
    if verdict == "allow":
        return S.APPROVED
    if verdict == "pending":
        return S.AWAITING_APPROVAL
    rejected = any(
        any(r.get("code") == "REJECTED" for r in gate.get("reasons") or []) for gate in gates
    )
    return S.REJECTED if rejected else S.BLOCKED


@dataclass(frozen=True, slots=True)
class Approval:
    by: str
    role: str | None
    decision: str  # "approve" | "reject"
    comment: str
    at: datetime
    packet_id: UUID | None
    signature_ok: bool
    # The approval row and its packet's bundle digest (what a decision names), and whether the
    # orchestrator counted it after checking the signature and the approver's eligibility.
    id: UUID | None = None
    packet: str | None = None
    counted: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "role": self.role,
            "decision": self.decision,
            "comment": self.comment,
            "at": self.at.isoformat(),
            "signature_ok": self.signature_ok,
            "packet_id": str(self.packet_id) if self.packet_id else None,
            "packet": self.packet,
            "counted": self.counted,
        }


def reason_texts(gate: Mapping[str, Any]) -> list[str]:
    """`CODE: message` per reason: stable code first, then the words for people."""
    return [f"{r.get('code')}: {r.get('message')}" for r in gate.get("reasons") or []]


@dataclass(frozen=True, slots=True)
class Promotion:
    id: UUID
    release: str
    release_id: UUID
    components: dict[str, str]
    environment: str
    status: PromotionStatus
    reason: str
    requested_by: str
    requested_at: datetime
    updated_at: datetime
    required_approvals: int
    separation_of_duties: bool
    policy: dict[str, Any]
    last_decision: dict[str, Any] | None
    status_reason: str | None
    run_id: UUID | None
    approvals: tuple[Approval, ...] = field(default=())
    kind: str = "promotion"  # promotion | rollback (back to a release every target ran)

    @property
    def open(self) -> bool:
        return self.status in OPEN

    def counted_approvals(self) -> list[str]:
        """Who counts towards the required number, as the approval gate last decided."""
        seen: list[str] = []
        for a in self.approvals:
            if a.decision != "approve" or not a.signature_ok or a.by in seen:
                continue
            if self.separation_of_duties and a.by == self.requested_by:
                continue
            seen.append(a.by)
        return seen

    def progress(self) -> str:
        return f"{len(self.counted_approvals())} of {self.required_approvals}"

    def gates_json(self) -> list[dict[str, Any]]:
        gates = (self.last_decision or {}).get("gates") or []
        return [
            {
                "gate": g.get("gate"),
                "type": g.get("type"),
                "status": g.get("status"),
                "reasons": reason_texts(g),
                "reason_codes": [r.get("code") for r in g.get("reasons") or []],
                "unblock": list(g.get("unblock") or []),
            }
            for g in gates
        ]

    def to_json(self) -> dict[str, Any]:
        """The `stella promotion show` shape (a stable contract), plus context fields."""
        return {
            "promotion_id": str(self.id),
            "release": self.release,
            "environment": self.environment,
            "status": self.status.value,
            "requested_by": self.requested_by,
            "requested_at": self.requested_at.isoformat(),
            "reason": self.reason,
            "approvals": [a.to_json() for a in self.approvals],
            "gates": self.gates_json(),
            "verdict": (self.last_decision or {}).get("verdict"),
            "evaluated_at": (self.last_decision or {}).get("evaluatedAt"),
            "required_approvals": self.required_approvals,
            "separation_of_duties": self.separation_of_duties,
            "approval_progress": self.progress(),
            "status_reason": self.status_reason,
            "run_id": str(self.run_id) if self.run_id else None,
            "components": dict(self.components),
            "updated_at": self.updated_at.isoformat(),
            "kind": self.kind,
        }
