"""Task envelopes: a task as the orchestrator signs it and a target checks it before acting.

An envelope is DSSE-shaped JSON: `{"payloadType", "payload" (base64 of the task's JSON bytes),
"signatures": [{"keyid", "sig"}]}`, the signature (ECDSA P-256, the orchestrator key) over the
DSSE pre-authentication encoding of the payload type and the exact payload bytes. The receiver
verifies those bytes before parsing them, so nothing in the database or on the wire can change a
task without the orchestrator key: whoever can write `deploy.tasks` but does not hold the key
cannot make an agent act.

`open_task` checks, in order: the envelope's shape and size, the signature by a trusted key, the
task's fields, that it is addressed to this agent, that it has not expired (and was not issued in
the future), and that its type is one the agent runs.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson

from stella_core.crypto.keys import PublicKey, SigningKey
from stella_core.deploy.model import TaskSpec, TaskType
from stella_core.errors import IntegrityError
from stella_core.evidence.packets import pae

PAYLOAD_TYPE = "application/vnd.stella.task.v1+json"
MAX_ENVELOPE_BYTES = 8 * 1024 * 1024
# Clocks of the orchestrator and the agent may differ this much.
CLOCK_SKEW = timedelta(minutes=5)


class TaskRejectedError(IntegrityError):
    """A task envelope the receiver must not act on. `reason` is a short word: "malformed",
    "bad-signature", "unknown-key", "expired", "not-yet-valid", "wrong-addressee",
    "unknown-type"."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def task_document(spec: TaskSpec) -> dict[str, Any]:
    return {
        "id": str(spec.id),
        "type": spec.type.value,
        "target": spec.target,
        "target_id": str(spec.target_id),
        "agent_id": str(spec.agent_id) if spec.agent_id is not None else None,
        "idempotency_key": spec.idempotency_key,
        "payload": spec.payload,
        "issued_at": _time(spec.issued_at),
        "expires_at": _time(spec.expires_at),
    }


def seal_task(spec: TaskSpec, key: SigningKey) -> bytes:
    """The signed envelope of `spec` (bytes to store and send as they are)."""
    body = orjson.dumps(task_document(spec), option=orjson.OPT_SORT_KEYS)
    signature = key.sign(pae(PAYLOAD_TYPE, body))
    envelope = {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(body).decode("ascii"),
        "signatures": [{"keyid": key.key_id, "sig": base64.b64encode(signature).decode("ascii")}],
    }
    return orjson.dumps(envelope)


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise TaskRejectedError(f"the task envelope's {what} is not base64 text", "malformed")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TaskRejectedError(
            f"the task envelope's {what} is not base64 text", "malformed"
        ) from exc


def _parse_time(value: object, what: str) -> datetime:
    if not isinstance(value, str):
        raise TaskRejectedError(f"the task's {what} is missing", "malformed")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise TaskRejectedError(f"the task's {what} is not a time", "malformed") from exc
    if parsed.tzinfo is None:
        raise TaskRejectedError(f"the task's {what} has no timezone", "malformed")
    return parsed


def _uuid(value: object, what: str) -> UUID:
    try:
        return UUID(str(value))
    except ValueError as exc:
        raise TaskRejectedError(f"the task's {what} is not a UUID", "malformed") from exc


def verified_body(envelope: bytes, trusted: Mapping[str, PublicKey]) -> bytes:
    """The payload bytes, once a trusted key's signature over them checks; else refused."""
    if len(envelope) > MAX_ENVELOPE_BYTES:
        raise TaskRejectedError("the task envelope is too large", "malformed")
    try:
        outer = orjson.loads(envelope)
    except orjson.JSONDecodeError as exc:
        raise TaskRejectedError("the task envelope is not JSON", "malformed") from exc
    if not isinstance(outer, dict) or outer.get("payloadType") != PAYLOAD_TYPE:
        raise TaskRejectedError("the envelope does not hold a Stella task", "malformed")
    body = _b64(outer.get("payload"), "payload")
    signatures = outer.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise TaskRejectedError("the task is not signed", "bad-signature")
    signed = pae(PAYLOAD_TYPE, body)
    known = False
    for entry in signatures[:4]:
        if not isinstance(entry, dict):
            continue
        key = trusted.get(str(entry.get("keyid")))
        if key is None:
            continue
        known = True
        if key.verify(_b64(entry.get("sig"), "signature"), signed):
            return body
    if not known:
        raise TaskRejectedError(
            "the task is not signed by an orchestrator key this agent trusts", "unknown-key"
        )
    raise TaskRejectedError("the task's signature does not verify", "bad-signature")


def open_task(
    envelope: bytes, trusted: Mapping[str, PublicKey], agent_id: UUID, now: datetime
) -> TaskSpec:
    """The task in `envelope`, checked: signed by a key in `trusted`, addressed to `agent_id`,
    valid at `now`, of a known type. Raises TaskRejectedError otherwise."""
    body = verified_body(envelope, trusted)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise TaskRejectedError("the task is not JSON", "malformed") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("payload"), dict):
        raise TaskRejectedError("the task has no payload", "malformed")
    addressee = doc.get("agent_id")
    if addressee is None or _uuid(addressee, "addressee") != agent_id:
        raise TaskRejectedError("the task is addressed to another agent", "wrong-addressee")
    issued = _parse_time(doc.get("issued_at"), "issue time")
    expires = _parse_time(doc.get("expires_at"), "expiry")
    if now >= expires:
        raise TaskRejectedError("the task has expired", "expired")
    if issued > now + CLOCK_SKEW:
        raise TaskRejectedError("the task was issued in the future", "not-yet-valid")
    try:
        kind = TaskType(str(doc.get("type")))
    except ValueError as exc:
        raise TaskRejectedError("the task's type is not one an agent runs", "unknown-type") from exc
    key = doc.get("idempotency_key")
    target = doc.get("target")
    if not isinstance(key, str) or not key or not isinstance(target, str):
        raise TaskRejectedError("the task has no idempotency key or target", "malformed")
    return TaskSpec(
        id=_uuid(doc.get("id"), "id"),
        type=kind,
        target=target,
        target_id=_uuid(doc.get("target_id"), "target id"),
        agent_id=agent_id,
        idempotency_key=key,
        payload=doc["payload"],
        issued_at=issued,
        expires_at=expires,
    )
