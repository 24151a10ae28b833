"""The promotion decision engine: policy + inputs + an explicit time -> allow, deny or pending.

Pure and deterministic: no clock, no environment, no database, no network. The same policy,
inputs and `evaluated_at` always give the same decision, byte for byte, which is what lets a
decision record be replayed (and re-run against a "what if" policy) years later.

It fails closed: a malformed policy, an unknown gate type, a bad gate configuration, a missing or
malformed input part all end in `deny` with a stable reason code; `decide` never raises for them.
Problems that belong to no gate are reported by two pseudo-gates whose ids no policy can use:
`@policy` (the policy itself is unusable) and `@inputs` (an input part or the time is malformed).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from stella_core.errors import AlreadyExistsError, DefinitionError
from stella_core.evidence.packets import canonical_json
from stella_core.promotions.gate import Code, Gate, GateResult, GateStatus, Reason
from stella_core.promotions.gate_inputs import (
    INPUT_PARTS,
    parse_release,
    parse_request,
    parse_time,
)
from stella_core.promotions.gates import BUILTIN_GATES

__all__ = [
    "DECISION_RECORD_TYPE",
    "GATES",
    "Code",
    "Decision",
    "Gate",
    "GateResult",
    "GateStatus",
    "Reason",
    "ReplayResult",
    "Verdict",
    "check_policy",
    "decide",
    "decision_record",
    "policy_digest",
    "register_gate",
    "replay",
    "why",
]

DECISION_RECORD_TYPE = "https://stella-desk.dev/evidence/decision-record/v1"
POLICY_GATE = "@policy"
INPUTS_GATE = "@inputs"

# Gate ids appear in reports and replay diffs; `@` is kept for the engine's pseudo-gates.
_GATE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_TYPE_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{0,62}")

# Later modules (the security gate, plugins) add theirs through `register_gate`; callers that
# want an isolated set pass `gates=` to `check_policy`, `decide` and `replay` instead.
_REGISTRY: dict[str, Gate] = {gate.type: gate for gate in BUILTIN_GATES}
GATES: Mapping[str, Gate] = MappingProxyType(_REGISTRY)


def register_gate(gate: Gate) -> None:
    """Add a gate type to `GATES`; a second gate with the same type is refused."""
    if not isinstance(gate.type, str) or not _TYPE_NAME.fullmatch(gate.type):
        raise DefinitionError(f"gate type {gate.type!r} is not a lowercase name")
    if gate.type in _REGISTRY:
        raise AlreadyExistsError(f"gate type '{gate.type}' is registered already")
    _REGISTRY[gate.type] = gate


class Verdict(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    PENDING = "pending"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    gates: tuple[GateResult, ...]
    evaluated_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": str(self.verdict),
            "evaluatedAt": self.evaluated_at,
            "gates": [result.to_json() for result in self.gates],
        }

    def record(self, policy: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Everything replay needs (see `decision_record`): what evidence stores by digest."""
        return decision_record(policy, inputs, self)


# --- policy --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    id: str
    type: str
    config: Any


def _policy_shape(policy: Any) -> tuple[str, list[_Entry]]:
    """The environment and gate entries of a structurally valid policy; DefinitionError else.
    Gate types and configurations are not checked here: `decide` reports those per gate."""
    if not isinstance(policy, Mapping):
        raise DefinitionError("the policy must be a JSON object")
    canonical_json(policy)  # floats, non-string keys, non-JSON values
    unknown = sorted(set(policy) - {"environment", "gates"})
    if unknown:
        raise DefinitionError(f"the policy has unknown key(s): {', '.join(unknown)}")
    environment = policy.get("environment")
    if not isinstance(environment, str) or not environment:
        raise DefinitionError("the policy must name its environment")
    if "gates" not in policy:
        # An absent list is a mistake; only an explicit `"gates": []` means "no requirements".
        raise DefinitionError('the policy has no "gates" list (write "gates": [] for none)')
    gates = policy["gates"]
    if not isinstance(gates, list | tuple):
        raise DefinitionError('the policy\'s "gates" must be a JSON array')
    entries: list[_Entry] = []
    seen: set[str] = set()
    for index, gate in enumerate(gates):
        where = f"gates[{index}]"
        if not isinstance(gate, Mapping):
            raise DefinitionError(f"{where} must be a JSON object")
        unknown = sorted(set(gate) - {"id", "type", "config"})
        if unknown:
            raise DefinitionError(f"{where} has unknown key(s): {', '.join(unknown)}")
        gate_id, gate_type = gate.get("id"), gate.get("type")
        if not isinstance(gate_id, str) or not _GATE_ID.fullmatch(gate_id):
            raise DefinitionError(
                f"{where}.id must be a name of letters, digits, '.', '_' or '-' (got {gate_id!r})"
            )
        if gate_id in seen:
            raise DefinitionError(f"gate id '{gate_id}' is used twice")
        seen.add(gate_id)
        if not isinstance(gate_type, str) or not gate_type:
            raise DefinitionError(f"{where}.type must be a non-empty string")
        entries.append(_Entry(gate_id, gate_type, gate.get("config", {})))
    return environment, entries


def check_policy(policy: Any, *, gates: Mapping[str, Gate] | None = None) -> dict[str, Any]:
    """Validate a policy document and return it normalised (every gate has a `config`).
    Raises DefinitionError naming the gate and the problem."""
    registry = GATES if gates is None else gates
    environment, entries = _policy_shape(policy)
    for entry in entries:
        gate = registry.get(entry.type)
        if gate is None:
            known = ", ".join(sorted(registry))
            raise DefinitionError(
                f"gate '{entry.id}': unknown gate type '{entry.type}' (known: {known})"
            )
        try:
            gate.check_config(entry.config)
        except DefinitionError as exc:
            raise DefinitionError(f"gate '{entry.id}' ({entry.type}): {exc.message}") from exc
    normalised = {
        "environment": environment,
        "gates": [{"id": e.id, "type": e.type, "config": e.config} for e in entries],
    }
    copy: dict[str, Any] = json.loads(canonical_json(normalised))
    return copy


def policy_digest(policy: Any) -> str:
    """`sha256:<hex>` of the policy's canonical JSON (RFC 8785)."""
    return _digest(policy)


def _digest(value: Any) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(value)).hexdigest()


# --- deciding ------------------------------------------------------------------------------------


def decide(
    policy: Any,
    inputs: Mapping[str, Any],
    evaluated_at: str,
    *,
    gates: Mapping[str, Gate] | None = None,
) -> Decision:
    """Evaluate every gate of `policy`, in policy order, against `inputs` at `evaluated_at`."""
    registry = GATES if gates is None else gates
    at = evaluated_at if isinstance(evaluated_at, str) else str(evaluated_at)
    try:
        environment, entries = _policy_shape(policy)
    except DefinitionError as exc:
        invalid = GateResult(
            POLICY_GATE,
            "policy",
            GateStatus.FAIL,
            (Reason(Code.POLICY_INVALID, exc.message),),
            ("fix the policy",),
        )
        return Decision(Verdict.DENY, (invalid,), at)

    results: list[GateResult] = []
    problems = _input_problems(inputs, evaluated_at, environment)
    if problems:
        results.append(
            GateResult(
                INPUTS_GATE,
                "inputs",
                GateStatus.FAIL,
                tuple(Reason(Code.INPUT_INVALID, problem) for problem in problems),
                ("correct the inputs named above",),
            )
        )
    parts: Mapping[str, Any] = inputs if isinstance(inputs, Mapping) else {}
    results += [_evaluate(entry, registry, parts, at) for entry in entries]

    statuses = {result.status for result in results}
    if statuses <= {GateStatus.PASS}:
        verdict = Verdict.ALLOW
    # A status outside the three (a faulty plugin gate) counts as a failure.
    elif GateStatus.FAIL in statuses or not statuses <= set(GateStatus):
        verdict = Verdict.DENY
    else:
        verdict = Verdict.PENDING
    return Decision(verdict, tuple(results), at)


def _input_problems(inputs: Any, evaluated_at: Any, environment: str) -> list[str]:
    """Every malformed part, whichever gate reads it (or none does: the release is what is
    being promoted, a bad digest there is never harmless)."""
    problems: list[str] = []
    try:
        parse_time(evaluated_at, "evaluatedAt")
    except DefinitionError as exc:
        problems.append(exc.message)
    if not isinstance(inputs, Mapping):
        return [*problems, "the inputs must be a JSON object of named parts"]
    for name, value in inputs.items():
        try:
            canonical_json(value)
            if name in INPUT_PARTS:
                INPUT_PARTS[name](value)
        except DefinitionError as exc:
            problems.append(f"{name}: {exc.message}")
    # A request for another environment or release must not borrow this decision.
    try:
        request = parse_request(inputs["request"])
    except (KeyError, DefinitionError):
        return problems
    if request.environment != environment:
        problems.append(
            f"request: the promotion is to {request.environment}, the policy is for {environment}"
        )
    try:
        release = parse_release(inputs["release"])
    except (KeyError, DefinitionError):
        return problems
    if release.name != request.release:
        problems.append(f"release: it is {release.name}, the request is for {request.release}")
    return problems


def _evaluate(
    entry: _Entry, registry: Mapping[str, Gate], inputs: Mapping[str, Any], evaluated_at: str
) -> GateResult:
    def failed(code: Code, message: str, unblock: str) -> GateResult:
        return GateResult(
            entry.id, entry.type, GateStatus.FAIL, (Reason(code, message),), (unblock,)
        )

    gate = registry.get(entry.type)
    if gate is None:
        return failed(
            Code.GATE_UNKNOWN,
            f"gate type '{entry.type}' is not known to this engine",
            "install the gate type or fix the policy",
        )
    try:
        gate.check_config(entry.config)
    except DefinitionError as exc:
        return failed(
            Code.GATE_CONFIG_INVALID, exc.message, "fix the gate's configuration in the policy"
        )
    try:
        result = gate.evaluate(entry.config, inputs, evaluated_at)
    except DefinitionError as exc:
        # Built-in gates report their input problems; a plugin gate may raise them instead.
        return failed(Code.INPUT_INVALID, exc.message, "correct the inputs")
    return replace(result, gate=entry.id, type=entry.type)


# --- records and replay --------------------------------------------------------------------------


def decision_record(policy: Any, inputs: Mapping[str, Any], decision: Decision) -> dict[str, Any]:
    """Everything needed to replay `decision`: policy, inputs, time, each by digest too.
    Raises DefinitionError if the policy or an input part is not JSON fit for signing."""
    if not isinstance(inputs, Mapping):
        raise DefinitionError("the inputs must be a JSON object of named parts")
    record = {
        "_type": DECISION_RECORD_TYPE,
        "evaluatedAt": decision.evaluated_at,
        "policy": policy,
        "policyDigest": policy_digest(policy),
        "inputs": dict(inputs),
        "inputDigests": {name: _digest(value) for name, value in inputs.items()},
        "verdict": str(decision.verdict),
        "gates": decision.to_json()["gates"],
    }
    # A plain copy: later changes to the caller's objects must not alter the record.
    copy: dict[str, Any] = json.loads(canonical_json(record))
    return copy


@dataclass(frozen=True, slots=True)
class ReplayResult:
    same: bool
    differences: list[dict[str, Any]]
    recorded_verdict: Any
    replayed_verdict: str
    decision: Decision

    def to_json(self) -> dict[str, Any]:
        return {
            "same": self.same,
            "differences": self.differences,
            "verdict": {"recorded": self.recorded_verdict, "replayed": self.replayed_verdict},
        }


def replay(
    record: Mapping[str, Any],
    policy: Any | None = None,
    *,
    gates: Mapping[str, Gate] | None = None,
) -> ReplayResult:
    """Re-decide a recorded decision, with its own policy or a "what if" `policy`, and list
    what differs: tampered inputs (digest mismatch), then gates in policy order, then the
    verdict. Gates are compared by type, status and reason codes; messages are prose and may be
    reworded between releases. Raises DefinitionError only for a document that is no record."""
    if not isinstance(record, Mapping) or record.get("_type") != DECISION_RECORD_TYPE:
        raise DefinitionError(f"not a decision record (expected _type {DECISION_RECORD_TYPE})")
    inputs, digests = record.get("inputs"), record.get("inputDigests")
    recorded_gates = record.get("gates")
    if not isinstance(inputs, Mapping) or not isinstance(digests, Mapping):
        raise DefinitionError("the decision record has no inputs or inputDigests object")
    if not isinstance(recorded_gates, list) or "policy" not in record:
        raise DefinitionError("the decision record has no policy or gates")

    differences: list[dict[str, Any]] = []

    def differ(kind: str, name: str, recorded: Any, replayed: Any) -> None:
        differences.append({"kind": kind, "name": name, "recorded": recorded, "replayed": replayed})

    replayed_digest = _digest_or_none(record["policy"])
    if record.get("policyDigest") != replayed_digest:
        differ("input", "policy", record.get("policyDigest"), replayed_digest)
    for name in sorted(set(inputs) | set(digests)):
        actual = _digest_or_none(inputs[name]) if name in inputs else None
        if digests.get(name) != actual:
            differ("input", name, digests.get(name), actual)

    chosen = record["policy"] if policy is None else policy
    # A missing time is decided as "" so that it shows as an input problem, not an exception.
    decision = decide(chosen, inputs, record.get("evaluatedAt", ""), gates=gates)
    before = {g.get("gate"): g for g in recorded_gates if isinstance(g, Mapping)}
    after = {g["gate"]: g for g in decision.to_json()["gates"]}
    for gate_id in [*after, *(g for g in before if g not in after)]:
        old, new = before.get(gate_id), after.get(gate_id)
        if old is None or new is None or _outcome(old) != _outcome(new):
            differ("gate", str(gate_id), old, new)
    replayed_verdict = str(decision.verdict)
    if record.get("verdict") != replayed_verdict:
        differ("verdict", "verdict", record.get("verdict"), replayed_verdict)
    return ReplayResult(
        same=not differences,
        differences=differences,
        recorded_verdict=record.get("verdict"),
        replayed_verdict=replayed_verdict,
        decision=decision,
    )


def _digest_or_none(value: Any) -> str | None:
    try:
        return _digest(value)
    except DefinitionError:
        return None


def _outcome(gate: Mapping[str, Any]) -> tuple[Any, Any, tuple[Any, ...]]:
    reasons = gate.get("reasons")
    codes = tuple(
        r.get("code") if isinstance(r, Mapping) else r
        for r in (reasons if isinstance(reasons, list) else [])
    )
    return gate.get("type"), gate.get("status"), codes


def why(decision: Decision, policy: Any = None, inputs: Any = None) -> list[dict[str, Any]]:
    """The failing and pending gates of a decision that is not `allow`, with reasons and what
    would unblock each. The decision carries all of it; `policy` and `inputs` are accepted for
    callers that hold them and are not needed."""
    if decision.verdict == Verdict.ALLOW:
        return []
    return [
        {
            "gate": result.gate,
            "status": str(result.status),
            "reasons": [reason.to_json() for reason in result.reasons],
            "unblock": list(result.unblock),
        }
        for result in decision.gates
        if result.status != GateStatus.PASS
    ]
