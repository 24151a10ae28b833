"""The built-in promotion gates: freeze window, predecessor environment, approval and schedule.

Pure like the engine: every fact, the evaluation time included, is an argument; nothing reads a
clock, the environment or a database. Gates fail closed: a missing or malformed input part is a
`fail` naming the part, never an exception and never a pass.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from stella_core.errors import DefinitionError
from stella_core.evidence.predicates import rfc3339
from stella_core.promotions.gate import Code, Gate, GateResult, GateStatus, InputError, Reason
from stella_core.promotions.gate_inputs import (
    NS,
    Exemption,
    Freeze,
    Person,
    as_array,
    as_names,
    as_object,
    now_of,
    parse_approvals,
    parse_exceptions,
    parse_freezes,
    parse_history,
    parse_people,
    parse_request,
    read_part,
)


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
    obj = as_object(config, "config")
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
        now = now_of(evaluated_at)
        requester = read_part(inputs, "request", parse_request).requested_by
        freezes = read_part(inputs, "freezes", parse_freezes)
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
    exemptions = read_part(inputs, "exceptions", parse_exceptions) if "exceptions" in inputs else ()
    if not exemptions:
        return None
    now = now_of(evaluated_at)
    # Exceptions name the environment; the engine checks the request is for the policy's.
    environment = read_part(inputs, "request", parse_request).environment
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
        reached = read_part(inputs, "history", parse_history)
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
        quorum_obj = as_object(obj.get("quorum", {}), "quorum")
        quorum = {role: _count(n, f"quorum.{role}", 1) for role, n in quorum_obj.items()}
        parsed = _ApprovalConfig(
            required=_count(obj["required"], "required", 0),
            separation_of_duties=sod,
            roles=as_names(obj.get("eligibleRoles", []), "eligibleRoles"),
            persons=as_names(obj.get("eligiblePersons", []), "eligiblePersons"),
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
        approvals = sorted(read_part(inputs, "approvals", parse_approvals), key=lambda a: a.at)
        requester = None
        if config.separation_of_duties:
            requester = read_part(inputs, "request", parse_request).requested_by
        people = read_part(inputs, "people", parse_people) if "people" in inputs else None

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
        for index, item in enumerate(as_array(obj["windows"], "windows")):
            where = f"windows[{index}]"
            window = _settings(item, {"days", "start", "end"}, {"days", "start", "end"})
            days = as_names(window["days"], f"{where}.days")
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
        now = now_of(evaluated_at)
        if not config:
            return self._result(
                GateStatus.FAIL,
                [Reason(Code.OUTSIDE_WINDOW, "the policy allows no deployment window")],
                ["add a deployment window to the policy"],
            )
        # Window bounds are whole minutes, so comparing whole seconds is exact.
        moment = datetime.fromtimestamp(now // NS, UTC)
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
