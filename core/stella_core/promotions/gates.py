"""What a promotion gate is, the input parts gates read, and the built-in gates: freeze window,
predecessor environment, approval and schedule.

Pure like the engine: every fact, the evaluation time included, is an argument; nothing reads a
clock, the environment or a database. Gates fail closed: a missing or malformed input part is a
`fail` naming the part, never an exception and never a pass.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar
from uuid import UUID

from stella_core.errors import DefinitionError
from stella_core.evidence.packets import sha256_hex
from stella_core.evidence.predicates import rfc3339

__all__ = [
    "BUILTIN_GATES",
    "INPUT_PARTS",
    "ApprovalGate",
    "Code",
    "FreezeWindowGate",
    "Gate",
    "GateResult",
    "GateStatus",
    "InputError",
    "PredecessorGate",
    "Reason",
    "ScheduleGate",
    "parse_time",
]


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


# --- input parts ---------------------------------------------------------------------------------
# Input parts are facts gathered by services, so unknown keys are tolerated (they are recorded
# and digested all the same); the policy, which people write, refuses them.


@dataclass(frozen=True, slots=True)
class Request:
    release: str
    environment: str
    requested_by: str


@dataclass(frozen=True, slots=True)
class Release:
    name: str
    components: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Approval:
    by: str
    role: str
    approve: bool
    at: int
    at_text: str
    signature_ok: bool


@dataclass(frozen=True, slots=True)
class Freeze:
    id: str
    start: int
    end: int
    end_text: str
    reason: str
    allow: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Exemption:
    """An entry of the `exceptions` part: a signed waiver of one gate type in one environment."""

    id: str
    gate: str
    environment: str
    expires_at: int
    expires_text: str
    by: str
    signature_ok: bool


@dataclass(frozen=True, slots=True)
class Person:
    name: str
    role: str


_NS = 1_000_000_000


def parse_time(value: Any, where: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 UTC time string (`…Z`, up to 9 fraction
    digits); integers compare exactly where datetimes would drop nanoseconds."""
    if not isinstance(value, str):
        raise DefinitionError(f"{where} must be an RFC 3339 UTC time string")
    try:
        rfc3339(value)
    except DefinitionError as exc:
        raise DefinitionError(f"{where}: {exc.message}") from exc
    whole = datetime.fromisoformat(value[:19] + "+00:00")
    fraction = value[20:-1]
    return int(whole.timestamp()) * _NS + int(fraction.ljust(9, "0") or "0")


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise DefinitionError(f"{where} must be a JSON object")
    return value


def _array(value: Any, where: str) -> Sequence[Any]:
    if not isinstance(value, list | tuple):
        raise DefinitionError(f"{where} must be a JSON array")
    return value


def _text(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise DefinitionError(f"{where}.{key} must be a non-empty string")
    return value


def _optional_text(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DefinitionError(f"{where}.{key} must be a string")
    return value


def _flag(obj: Mapping[str, Any], key: str, where: str) -> bool:
    value = obj.get(key)
    if not isinstance(value, bool):
        raise DefinitionError(f"{where}.{key} must be true or false")
    return value


def _names(value: Any, where: str) -> tuple[str, ...]:
    names = _array(value, where)
    for index, name in enumerate(names):
        if not isinstance(name, str) or not name:
            raise DefinitionError(f"{where}[{index}] must be a non-empty string")
    return tuple(names)


def parse_request(value: Any) -> Request:
    obj = _object(value, "request")
    promotion_id = obj.get("promotionId")
    if promotion_id is not None:
        try:
            UUID(promotion_id)
        except (TypeError, ValueError, AttributeError) as exc:
            raise DefinitionError("request.promotionId must be a UUID string") from exc
    _optional_text(obj, "reason", "request")
    return Request(
        release=_text(obj, "release", "request"),
        environment=_text(obj, "environment", "request"),
        requested_by=_text(obj, "requestedBy", "request"),
    )


def parse_release(value: Any) -> Release:
    obj = _object(value, "release")
    components = _object(obj.get("components"), "release.components")
    for name, digest in components.items():
        where = f"release.components.{name}"
        if not isinstance(name, str) or not name:
            raise DefinitionError("release.components names must be non-empty strings")
        if not isinstance(digest, str) or not digest.startswith("sha256:"):
            raise DefinitionError(f"{where} must be sha256:<64 lowercase hex>")
        try:
            sha256_hex(digest)
        except DefinitionError as exc:
            raise DefinitionError(f"{where}: {exc.message}") from exc
    return Release(name=_text(obj, "name", "release"), components=dict(components))


def parse_approvals(value: Any) -> tuple[Approval, ...]:
    approvals = []
    for index, item in enumerate(_array(value, "approvals")):
        where = f"approvals[{index}]"
        obj = _object(item, where)
        decision = obj.get("decision")
        if decision not in ("approve", "reject"):
            raise DefinitionError(f'{where}.decision must be "approve" or "reject"')
        _optional_text(obj, "comment", where)
        approvals.append(
            Approval(
                by=_text(obj, "by", where),
                role=_text(obj, "role", where),
                approve=decision == "approve",
                at=parse_time(obj.get("at"), f"{where}.at"),
                at_text=obj["at"],
                signature_ok=_flag(obj, "signatureOk", where),
            )
        )
    return tuple(approvals)


def parse_freezes(value: Any) -> tuple[Freeze, ...]:
    freezes = []
    for index, item in enumerate(_array(value, "freezes")):
        where = f"freezes[{index}]"
        obj = _object(item, where)
        start = parse_time(obj.get("start"), f"{where}.start")
        end = parse_time(obj.get("end"), f"{where}.end")
        if end <= start:
            raise DefinitionError(f"{where} ends before it starts")
        freezes.append(
            Freeze(
                id=_text(obj, "id", where),
                start=start,
                end=end,
                end_text=obj["end"],
                reason=_optional_text(obj, "reason", where),
                allow=_names(obj.get("allow", []), f"{where}.allow"),
            )
        )
    return tuple(freezes)


def parse_history(value: Any) -> tuple[str, ...]:
    return _names(_object(value, "history").get("reached"), "history.reached")


def parse_exceptions(value: Any) -> tuple[Exemption, ...]:
    exemptions = []
    for index, item in enumerate(_array(value, "exceptions")):
        where = f"exceptions[{index}]"
        obj = _object(item, where)
        exemptions.append(
            Exemption(
                id=_text(obj, "id", where),
                gate=_text(obj, "gate", where),
                environment=_text(obj, "environment", where),
                expires_at=parse_time(obj.get("expiresAt"), f"{where}.expiresAt"),
                expires_text=obj["expiresAt"],
                by=_text(obj, "by", where),
                signature_ok=_flag(obj, "signatureOk", where),
            )
        )
    return tuple(exemptions)


def parse_people(value: Any) -> tuple[Person, ...]:
    people = []
    for index, item in enumerate(_array(value, "people")):
        where = f"people[{index}]"
        obj = _object(item, where)
        people.append(Person(name=_text(obj, "name", where), role=_text(obj, "role", where)))
    return tuple(people)


# The parts the built-in gates read; the engine checks every one present, whoever reads it.
INPUT_PARTS: Mapping[str, Callable[[Any], object]] = {
    "request": parse_request,
    "release": parse_release,
    "approvals": parse_approvals,
    "freezes": parse_freezes,
    "history": parse_history,
    "exceptions": parse_exceptions,
    "people": parse_people,
}

_T = TypeVar("_T")


def _read(inputs: Mapping[str, Any], part: str, parse: Callable[[Any], _T]) -> _T:
    if part not in inputs:
        raise InputError(Code.INPUT_MISSING, part, f"the '{part}' input is missing")
    try:
        return parse(inputs[part])
    except DefinitionError as exc:
        raise InputError(Code.INPUT_INVALID, part, exc.message) from exc


def _now(evaluated_at: str) -> int:
    try:
        return parse_time(evaluated_at, "evaluatedAt")
    except DefinitionError as exc:
        raise InputError(Code.INPUT_INVALID, "evaluatedAt", exc.message) from exc


def _listing(names: Sequence[str]) -> str:
    return ", ".join(names)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


# --- gates ---------------------------------------------------------------------------------------

_C = TypeVar("_C")


class _BuiltinGate(Generic[_C]):
    """Shared plumbing: parse the config once per call, and turn input errors into failures."""

    type = ""

    def _config(self, config: Any) -> _C:
        raise NotImplementedError

    def _evaluate(self, config: _C, inputs: Mapping[str, Any], evaluated_at: str) -> GateResult:
        raise NotImplementedError

    def check_config(self, config: Any) -> None:
        self._config(config)

    def evaluate(self, config: Any, inputs: Mapping[str, Any], evaluated_at: str) -> GateResult:
        try:
            parsed = self._config(config)
        except DefinitionError as exc:
            return self._result(
                GateStatus.FAIL,
                [Reason(Code.GATE_CONFIG_INVALID, exc.message)],
                ["fix the gate's configuration in the policy"],
            )
        try:
            return self._evaluate(parsed, inputs, evaluated_at)
        except InputError as exc:
            verb = "supply" if exc.code == Code.INPUT_MISSING else "correct"
            return self._result(
                GateStatus.FAIL, [Reason(exc.code, exc.message)], [f"{verb} the '{exc.part}' input"]
            )

    def _result(
        self, status: GateStatus, reasons: Sequence[Reason], unblock: Sequence[str] = ()
    ) -> GateResult:
        return GateResult(self.type, self.type, status, tuple(reasons), tuple(unblock))


def _settings(
    config: Any, allowed: Collection[str], required: Collection[str] = ()
) -> Mapping[str, Any]:
    # Policies are written by people: an unknown key is a typo that would otherwise be ignored.
    obj = _object(config, "config")
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise DefinitionError(f"unknown setting(s): {_listing(unknown)}")
    missing = sorted(set(required) - set(obj))
    if missing:
        raise DefinitionError(f"missing setting(s): {_listing(missing)}")
    return obj


class FreezeWindowGate(_BuiltinGate[None]):
    """Fails while a freeze is active, unless the requester is on that freeze's allow list."""

    type = "freeze-window"

    def _config(self, config: Any) -> None:
        _settings(config, set())

    def _evaluate(self, config: None, inputs: Mapping[str, Any], evaluated_at: str) -> GateResult:
        now = _now(evaluated_at)
        requester = _read(inputs, "request", parse_request).requested_by
        freezes = _read(inputs, "freezes", parse_freezes)
        reasons: list[Reason] = []
        blocking: list[Freeze] = []
        for freeze in freezes:
            if not freeze.start <= now < freeze.end:
                continue
            about = f"freeze {freeze.id} ({freeze.reason or 'no reason given'})"
            if requester in freeze.allow:
                reasons.append(
                    Reason(
                        Code.FREEZE_OVERRIDDEN,
                        f"{about} is active until {freeze.end_text}; "
                        f"{requester} may promote during it",
                    )
                )
            else:
                blocking.append(freeze)
                reasons.append(
                    Reason(Code.FREEZE_ACTIVE, f"{about} is active until {freeze.end_text}")
                )
        if not blocking:
            if not reasons:
                reasons.append(
                    Reason(Code.NO_ACTIVE_FREEZE, f"no freeze is active at {evaluated_at}")
                )
            return self._result(GateStatus.PASS, reasons)
        clear = _freeze_clears(blocking, freezes, requester)
        allowed = set.intersection(*(set(freeze.allow) for freeze in blocking))
        unblock = f"wait until {clear}"
        if allowed:
            unblock += f" or ask {_listing(sorted(allowed))} to request it (allowed to override)"
        return self._result(GateStatus.FAIL, reasons, [unblock])


def _freeze_clears(blocking: list[Freeze], freezes: Sequence[Freeze], requester: str) -> str:
    """When the requester stops being frozen out: back-to-back and overlapping freezes chain."""
    last = max(blocking, key=lambda freeze: freeze.end)
    extended = True
    while extended:
        extended = False
        for freeze in freezes:
            if requester not in freeze.allow and freeze.start <= last.end < freeze.end:
                last, extended = freeze, True
    return last.end_text


def _waiver(
    gate_type: str, inputs: Mapping[str, Any], evaluated_at: str, reasons: list[Reason]
) -> str | None:
    """How a signed, unexpired exception to `gate_type` for the requested environment applies
    ("exception X by Y applies until T"), or None; unusable ones add their reason to `reasons`.

    An absent exceptions part can only keep a gate failing, so it needs no fail-closed
    treatment of its own."""
    exemptions = _read(inputs, "exceptions", parse_exceptions) if "exceptions" in inputs else ()
    if not exemptions:
        return None
    now = _now(evaluated_at)
    # Exceptions name the environment; the engine checks the request is for the policy's.
    environment = _read(inputs, "request", parse_request).environment
    usable: list[Exemption] = []
    for exemption in exemptions:
        if exemption.gate != gate_type or exemption.environment != environment:
            continue
        if not exemption.signature_ok:
            reasons.append(
                Reason(
                    Code.SIGNATURE_INVALID,
                    f"exception {exemption.id} by {exemption.by} has no valid signature",
                )
            )
        elif exemption.expires_at <= now:
            reasons.append(
                Reason(
                    Code.EXCEPTION_EXPIRED,
                    f"exception {exemption.id} by {exemption.by} expired at "
                    f"{exemption.expires_text}",
                )
            )
        else:
            usable.append(exemption)
    if not usable:
        return None
    best = max(usable, key=lambda exemption: exemption.expires_at)
    return f"exception {best.id} by {best.by} applies until {best.expires_text}"


def _waived_where(inputs: Mapping[str, Any]) -> str:
    """The environment an exception would have to name, for an unblock hint. A missing or
    malformed request is not this gate's concern (the hint then says "this environment")."""
    try:
        return parse_request(inputs["request"]).environment
    except (KeyError, DefinitionError):
        return "this environment"


@dataclass(frozen=True, slots=True)
class _PredecessorConfig:
    previous: str | None


class PredecessorGate(_BuiltinGate[_PredecessorConfig]):
    """Passes once the release has reached the previous environment, or under a signed,
    unexpired exception for this environment."""

    type = "predecessor"

    def _config(self, config: Any) -> _PredecessorConfig:
        obj = _settings(config, {"previous"}, {"previous"})
        previous = obj["previous"]
        if previous is not None and (not isinstance(previous, str) or not previous):
            raise DefinitionError("previous must be an environment name or null")
        return _PredecessorConfig(previous)

    def _evaluate(
        self, config: _PredecessorConfig, inputs: Mapping[str, Any], evaluated_at: str
    ) -> GateResult:
        previous = config.previous
        if previous is None:
            return self._result(
                GateStatus.PASS,
                [Reason(Code.FIRST_ENVIRONMENT, "no environment has to come before this one")],
            )
        reached = _read(inputs, "history", parse_history)
        if previous in reached:
            return self._result(
                GateStatus.PASS,
                [Reason(Code.PREDECESSOR_REACHED, f"the release has reached {previous}")],
            )
        reasons = [
            Reason(Code.PREDECESSOR_NOT_REACHED, f"the release has not reached {previous} yet")
        ]
        waiver = _waiver(self.type, inputs, evaluated_at, reasons)
        if waiver is not None:
            return self._result(
                GateStatus.PASS,
                [Reason(Code.EXCEPTION_APPLIED, f"{previous} not reached, but {waiver}")],
            )
        return self._result(
            GateStatus.FAIL,
            reasons,
            [
                f"promote the release to {previous} first, or get a signed exception to the "
                f"predecessor gate for {_waived_where(inputs)}"
            ],
        )


@dataclass(frozen=True, slots=True)
class _ApprovalConfig:
    required: int
    separation_of_duties: bool
    roles: tuple[str, ...]
    persons: tuple[str, ...]
    quorum: Mapping[str, int]

    def eligible(self, name: str, role: str) -> bool:
        if not self.roles and not self.persons:
            return True
        return name in self.persons or role in self.roles


def _count(value: Any, where: str, minimum: int) -> int:
    # bool is an int in Python, never a count in a policy.
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise DefinitionError(f"{where} must be an integer of at least {minimum}")
    return value


class ApprovalGate(_BuiltinGate[_ApprovalConfig]):
    """Counts signed approvals by eligible people, each person once and never the requester
    under separation of duties; any signed rejection fails it."""

    type = "approval"

    def _config(self, config: Any) -> _ApprovalConfig:
        obj = _settings(
            config,
            {"required", "separationOfDuties", "eligibleRoles", "eligiblePersons", "quorum"},
            {"required"},
        )
        sod = obj.get("separationOfDuties", True)
        if not isinstance(sod, bool):
            raise DefinitionError("separationOfDuties must be true or false")
        quorum_obj = _object(obj.get("quorum", {}), "quorum")
        quorum = {role: _count(n, f"quorum.{role}", 1) for role, n in quorum_obj.items()}
        parsed = _ApprovalConfig(
            required=_count(obj["required"], "required", 0),
            separation_of_duties=sod,
            roles=_names(obj.get("eligibleRoles", []), "eligibleRoles"),
            persons=_names(obj.get("eligiblePersons", []), "eligiblePersons"),
            quorum=quorum,
        )
        if sum(quorum.values()) > parsed.required:
            raise DefinitionError(
                f"quorum asks for {sum(quorum.values())} approvals but only "
                f"{parsed.required} are required"
            )
        if parsed.roles and not parsed.persons:
            unreachable = sorted(set(quorum) - set(parsed.roles))
            if unreachable:
                raise DefinitionError(
                    f"quorum role(s) {_listing(unreachable)} are not eligible to approve"
                )
        return parsed

    def _evaluate(
        self, config: _ApprovalConfig, inputs: Mapping[str, Any], evaluated_at: str
    ) -> GateResult:
        # Always read, also when none are required: a signed rejection still stops a promotion.
        approvals = sorted(_read(inputs, "approvals", parse_approvals), key=lambda a: a.at)
        requester = None
        if config.separation_of_duties:
            requester = _read(inputs, "request", parse_request).requested_by
        people = _read(inputs, "people", parse_people) if "people" in inputs else None

        notes: list[Reason] = []
        rejections: list[Reason] = []
        rejected_by: set[str] = set()
        counted: dict[str, str] = {}
        for approval in approvals:
            who = f"{approval.by} ({approval.role}) at {approval.at_text}"
            if not approval.signature_ok:
                kind = "approval" if approval.approve else "rejection"
                notes.append(
                    Reason(Code.SIGNATURE_INVALID, f"{kind} by {who} has no valid signature")
                )
            elif not approval.approve:
                rejections.append(Reason(Code.REJECTED, f"rejected by {who}"))
                rejected_by.add(approval.by)
            elif approval.by == requester:
                notes.append(
                    Reason(
                        Code.SELF_APPROVAL_REFUSED,
                        f"{approval.by} requested the promotion and cannot approve it",
                    )
                )
            elif not config.eligible(approval.by, approval.role):
                notes.append(
                    Reason(Code.NOT_ELIGIBLE, f"{who} is not eligible to approve this gate")
                )
            elif approval.by in counted:
                notes.append(
                    Reason(Code.DUPLICATE_APPROVAL, f"{approval.by} approved more than once")
                )
            else:
                counted[approval.by] = approval.role

        if rejections:
            return self._result(
                GateStatus.FAIL,
                rejections + notes,
                [
                    f"{_listing(sorted(rejected_by))} must withdraw the rejection; "
                    "it cannot be outvoted"
                ],
            )
        if config.required == 0:
            return self._result(
                GateStatus.PASS,
                [Reason(Code.NO_APPROVAL_REQUIRED, "no approval is required"), *notes],
            )
        have = len(counted)
        unmet = {
            role: need - sum(1 for r in counted.values() if r == role)
            for role, need in sorted(config.quorum.items())
        }
        unmet = {role: missing for role, missing in unmet.items() if missing > 0}
        if have >= config.required and not unmet:
            return self._result(
                GateStatus.PASS,
                [
                    Reason(
                        Code.APPROVED,
                        f"{have} of {config.required} approvals ({_listing(sorted(counted))})",
                    ),
                    *notes,
                ],
            )
        reasons = [Reason(Code.APPROVALS_PENDING, f"{have} of {config.required} approvals")]
        reasons += [
            Reason(
                Code.QUORUM_PENDING,
                f"{config.quorum[role] - missing} of {config.quorum[role]} approvals from role "
                f"{role}",
            )
            for role, missing in unmet.items()
        ]
        unblock = []
        more = config.required - have
        if more > 0:
            unblock.append(
                f"{_plural(more, 'more approval')} from: "
                + _candidates(config, people, counted, requester, None)
            )
        unblock += [
            f"{_plural(missing, 'more approval')} by role {role} from: "
            + _candidates(config, people, counted, requester, role)
            for role, missing in unmet.items()
        ]
        return self._result(GateStatus.PENDING, reasons + notes, unblock)


def _candidates(
    config: _ApprovalConfig,
    people: Sequence[Person] | None,
    counted: Mapping[str, str],
    requester: str | None,
    role: str | None,
) -> str:
    """Who could still approve, in words; the names come from the optional `people` part."""
    if people is None:
        if role is not None:
            return f"anyone eligible with role {role}"
        if not config.roles and not config.persons:
            return f"anyone but {requester}" if requester else "anyone"
        allowed = [f"roles {_listing(config.roles)}"] if config.roles else []
        allowed += [f"people {_listing(config.persons)}"] if config.persons else []
        return "anyone eligible (" + "; ".join(allowed) + ")"
    names = sorted(
        {
            person.name
            for person in people
            if person.name not in counted
            and person.name != requester
            and (role is None or person.role == role)
            and config.eligible(person.name, person.role)
        }
    )
    return _listing(names) if names else "nobody listed in 'people' is eligible"


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY = 24 * 3600
_WEEK = 7 * _DAY
_CLOCK = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])|24:00")


@dataclass(frozen=True, slots=True)
class _Window:
    """One weekly occurrence, in seconds since Monday 00:00 UTC."""

    start: int
    length: int
    label: str


def _minutes(value: Any, where: str) -> int:
    if not isinstance(value, str) or not _CLOCK.fullmatch(value):
        raise DefinitionError(f'{where} must be a UTC time "HH:MM"')
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


class ScheduleGate(_BuiltinGate[tuple[_Window, ...]]):
    """Passes inside a weekly UTC deployment window. A window whose end is before its start runs
    past midnight into the next day; its days are the days it opens."""

    type = "schedule"

    def _config(self, config: Any) -> tuple[_Window, ...]:
        obj = _settings(config, {"windows"}, {"windows"})
        windows: list[_Window] = []
        for index, item in enumerate(_array(obj["windows"], "windows")):
            where = f"windows[{index}]"
            window = _settings(item, {"days", "start", "end"}, {"days", "start", "end"})
            days = _names(window["days"], f"{where}.days")
            if not days or any(day not in _DAYS for day in days):
                raise DefinitionError(f"{where}.days must list some of {_listing(_DAYS)}")
            start = _minutes(window["start"], f"{where}.start")
            end = _minutes(window["end"], f"{where}.end")
            if start == 24 * 60:
                raise DefinitionError(f"{where}.start must be before 24:00")
            if start == end:
                raise DefinitionError(f"{where} starts and ends at the same time")
            length = (end - start) * 60 if end > start else (end + 24 * 60 - start) * 60
            for day in dict.fromkeys(days):
                label = f"{day} {window['start']}-{window['end']} UTC"
                windows.append(_Window(_DAYS.index(day) * _DAY + start * 60, length, label))
        return tuple(windows)

    def _evaluate(
        self, config: tuple[_Window, ...], inputs: Mapping[str, Any], evaluated_at: str
    ) -> GateResult:
        now = _now(evaluated_at)
        if not config:
            return self._result(
                GateStatus.FAIL,
                [Reason(Code.OUTSIDE_WINDOW, "the policy allows no deployment window")],
                ["add a deployment window to the policy"],
            )
        # Window bounds are whole minutes, so comparing whole seconds is exact.
        moment = datetime.fromtimestamp(now // _NS, UTC)
        into_week = (
            moment.weekday() * _DAY + moment.hour * 3600 + moment.minute * 60 + moment.second
        )
        containing = [w for w in config if (into_week - w.start) % _WEEK < w.length]
        if containing:
            window = max(containing, key=lambda w: w.length - (into_week - w.start) % _WEEK)
            closes = moment + timedelta(seconds=window.length - (into_week - window.start) % _WEEK)
            return self._result(
                GateStatus.PASS,
                [Reason(Code.IN_WINDOW, f"inside window {window.label} until {rfc3339(closes)}")],
            )
        window = min(config, key=lambda w: (w.start - into_week) % _WEEK)
        opens = rfc3339(moment + timedelta(seconds=(window.start - into_week) % _WEEK))
        outside = f"{evaluated_at} is outside the deployment windows; the next one "
        reasons = [Reason(Code.OUTSIDE_WINDOW, f"{outside}({window.label}) opens at {opens}")]
        # An emergency change outside the windows needs an admin's signed, expiring exception.
        waiver = _waiver(self.type, inputs, evaluated_at, reasons)
        if waiver is not None:
            return self._result(
                GateStatus.PASS,
                [Reason(Code.EXCEPTION_APPLIED, f"outside the deployment windows, but {waiver}")],
            )
        return self._result(
            GateStatus.FAIL,
            reasons,
            [
                f"wait until {opens}, or get a signed exception to the schedule gate for "
                f"{_waived_where(inputs)}"
            ],
        )


BUILTIN_GATES: tuple[Gate, ...] = (
    FreezeWindowGate(),
    PredecessorGate(),
    ApprovalGate(),
    ScheduleGate(),
)
