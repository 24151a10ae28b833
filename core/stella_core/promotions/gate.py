"""What a promotion gate is: its status, reason codes, result, and the protocol a gate type
implements. Pure types, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from stella_core.errors import DefinitionError


class GateStatus(StrEnum):
    PASS = "pass"  # noqa: S105 - a status, not a password
    FAIL = "fail"
    # Only the approval gate waits: every other gate can be decided from the facts at hand.
    PENDING = "pending"


class Code(StrEnum):
    """Built-in reason codes. Stable: scripts and replay compare codes, never messages."""

    POLICY_INVALID = "POLICY_INVALID"
    INPUT_MISSING = "INPUT_MISSING"
    INPUT_INVALID = "INPUT_INVALID"
    GATE_UNKNOWN = "GATE_UNKNOWN"
    GATE_CONFIG_INVALID = "GATE_CONFIG_INVALID"
    NO_ACTIVE_FREEZE = "NO_ACTIVE_FREEZE"
    FREEZE_ACTIVE = "FREEZE_ACTIVE"
    FREEZE_OVERRIDDEN = "FREEZE_OVERRIDDEN"
    FIRST_ENVIRONMENT = "FIRST_ENVIRONMENT"
    PREDECESSOR_REACHED = "PREDECESSOR_REACHED"
    PREDECESSOR_NOT_REACHED = "PREDECESSOR_NOT_REACHED"
    EXCEPTION_APPLIED = "EXCEPTION_APPLIED"
    EXCEPTION_EXPIRED = "EXCEPTION_EXPIRED"
    NO_APPROVAL_REQUIRED = "NO_APPROVAL_REQUIRED"
    APPROVED = "APPROVED"
    APPROVALS_PENDING = "APPROVALS_PENDING"
    QUORUM_PENDING = "QUORUM_PENDING"
    REJECTED = "REJECTED"
    SIGNATURE_INVALID = "SIGNATURE_INVALID"
    NOT_ELIGIBLE = "NOT_ELIGIBLE"
    SELF_APPROVAL_REFUSED = "SELF_APPROVAL_REFUSED"
    DUPLICATE_APPROVAL = "DUPLICATE_APPROVAL"
    IN_WINDOW = "IN_WINDOW"
    OUTSIDE_WINDOW = "OUTSIDE_WINDOW"


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": str(self.code), "message": self.message}


@dataclass(frozen=True, slots=True)
class GateResult:
    """One gate's verdict. `unblock` says in words what would turn it into a pass."""

    gate: str
    type: str
    status: GateStatus
    reasons: tuple[Reason, ...] = ()
    unblock: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "type": self.type,
            "status": str(self.status),
            "reasons": [reason.to_json() for reason in self.reasons],
            "unblock": list(self.unblock),
        }


class Gate(Protocol):
    """A gate type. The engine calls `check_config` first, then `evaluate`, and stamps the
    policy's gate id on the result (a gate does not know its id)."""

    @property
    def type(self) -> str: ...

    def check_config(self, config: Any) -> None:
        """Raise DefinitionError saying what is wrong with `config`."""

    def evaluate(self, config: Any, inputs: Mapping[str, Any], evaluated_at: str) -> GateResult: ...


class InputError(DefinitionError):
    """An input part a gate needs is missing (`INPUT_MISSING`) or malformed (`INPUT_INVALID`)."""

    def __init__(self, code: Code, part: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.part = part
