"""The input parts gates read (the facts a promotion is decided on), as pydantic models, and
their parsing. Input parts are facts gathered by services, so unknown keys are tolerated (they
are recorded and digested all the same); the policy, which people write, refuses them.

Parsing is by hand, not by pydantic's validation: its messages name the part and the field the
way decision records and replay have always said them (`approvals[0].at must be ...`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from stella_core.errors import DefinitionError
from stella_core.evidence.packets import sha256_hex
from stella_core.evidence.predicates import rfc3339
from stella_core.promotions.gate import Code, InputError


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Request(_Part):
    release: str
    environment: str
    requested_by: str


class Release(_Part):
    name: str
    components: dict[str, str]


class Approval(_Part):
    by: str
    role: str
    approve: bool
    at: int
    at_text: str
    signature_ok: bool


class Freeze(_Part):
    id: str
    start: int
    end: int
    end_text: str
    reason: str
    allow: tuple[str, ...]


class Exemption(_Part):
    """An entry of the `exceptions` part: a signed waiver of one gate type in one environment."""

    id: str
    gate: str
    environment: str
    expires_at: int
    expires_text: str
    by: str
    signature_ok: bool


class Person(_Part):
    name: str
    role: str


NS = 1_000_000_000  # nanoseconds in a second


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
    return int(whole.timestamp()) * NS + int(fraction.ljust(9, "0") or "0")


def as_object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise DefinitionError(f"{where} must be a JSON object")
    return value


def as_array(value: Any, where: str) -> Sequence[Any]:
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


def as_names(value: Any, where: str) -> tuple[str, ...]:
    names = as_array(value, where)
    for index, name in enumerate(names):
        if not isinstance(name, str) or not name:
            raise DefinitionError(f"{where}[{index}] must be a non-empty string")
    return tuple(names)


def parse_request(value: Any) -> Request:
    obj = as_object(value, "request")
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
    obj = as_object(value, "release")
    components = as_object(obj.get("components"), "release.components")
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
    for index, item in enumerate(as_array(value, "approvals")):
        where = f"approvals[{index}]"
        obj = as_object(item, where)
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
    for index, item in enumerate(as_array(value, "freezes")):
        where = f"freezes[{index}]"
        obj = as_object(item, where)
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
                allow=as_names(obj.get("allow", []), f"{where}.allow"),
            )
        )
    return tuple(freezes)


def parse_history(value: Any) -> tuple[str, ...]:
    return as_names(as_object(value, "history").get("reached"), "history.reached")


def parse_exceptions(value: Any) -> tuple[Exemption, ...]:
    exemptions = []
    for index, item in enumerate(as_array(value, "exceptions")):
        where = f"exceptions[{index}]"
        obj = as_object(item, where)
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
    for index, item in enumerate(as_array(value, "people")):
        where = f"people[{index}]"
        obj = as_object(item, where)
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


def read_part(inputs: Mapping[str, Any], part: str, parse: Callable[[Any], _T]) -> _T:
    if part not in inputs:
        raise InputError(Code.INPUT_MISSING, part, f"the '{part}' input is missing")
    try:
        return parse(inputs[part])
    except DefinitionError as exc:
        raise InputError(Code.INPUT_INVALID, part, exc.message) from exc


def now_of(evaluated_at: str) -> int:
    try:
        return parse_time(evaluated_at, "evaluatedAt")
    except DefinitionError as exc:
        raise InputError(Code.INPUT_INVALID, "evaluatedAt", exc.message) from exc
