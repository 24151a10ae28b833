"""Task envelopes: what an agent checks before it acts on a task."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import orjson
import pytest

from stella_core.crypto.keys import SigningKey
from stella_core.deploy.model import TaskSpec, TaskType
from stella_core.deploy.taskwire import (
    PAYLOAD_TYPE,
    TaskRejectedError,
    open_task,
    seal_task,
    task_document,
)
from stella_core.evidence.packets import pae

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
KEY = SigningKey.generate()
TRUSTED = {KEY.key_id: KEY.public_key()}
AGENT = uuid4()


def spec(**changes) -> TaskSpec:
    values = {
        "id": uuid4(),
        "type": TaskType.DEPLOY,
        "target": "web-1",
        "target_id": uuid4(),
        "agent_id": AGENT,
        "idempotency_key": "deploy-1-web-1",
        "payload": {"project": "shop", "timeout": 2.5, "images": [{"component": "web"}]},
        "issued_at": NOW,
        "expires_at": NOW + timedelta(minutes=30),
    }
    return TaskSpec(**{**values, **changes})


def reason(envelope: bytes, *, agent=AGENT, now=NOW, trusted=TRUSTED) -> str:
    with pytest.raises(TaskRejectedError) as caught:
        open_task(envelope, trusted, agent, now)
    return caught.value.reason


def test_a_sealed_task_opens_as_it_was_signed() -> None:
    original = spec()
    opened = open_task(seal_task(original, KEY), TRUSTED, AGENT, NOW + timedelta(minutes=1))
    assert opened == original


def test_a_key_the_agent_does_not_trust_is_refused() -> None:
    assert reason(seal_task(spec(), SigningKey.generate())) == "unknown-key"


def test_a_changed_payload_breaks_the_signature() -> None:
    envelope = json.loads(seal_task(spec(), KEY))
    doc = json.loads(base64.b64decode(envelope["payload"]))
    doc["payload"]["project"] = "evil"
    envelope["payload"] = base64.b64encode(orjson.dumps(doc)).decode()
    assert reason(json.dumps(envelope).encode()) == "bad-signature"


def test_a_signature_copied_onto_a_trusted_key_id_does_not_verify() -> None:
    envelope = json.loads(seal_task(spec(), SigningKey.generate()))
    envelope["signatures"][0]["keyid"] = KEY.key_id
    assert reason(json.dumps(envelope).encode()) == "bad-signature"


def test_an_expired_task_is_refused() -> None:
    assert reason(seal_task(spec(), KEY), now=NOW + timedelta(minutes=30)) == "expired"


def test_a_task_from_the_future_is_refused() -> None:
    future = spec(issued_at=NOW + timedelta(hours=1), expires_at=NOW + timedelta(hours=2))
    assert reason(seal_task(future, KEY)) == "not-yet-valid"


def test_a_task_for_another_agent_is_refused() -> None:
    assert reason(seal_task(spec(), KEY), agent=uuid4()) == "wrong-addressee"
    assert reason(seal_task(spec(agent_id=None), KEY)) == "wrong-addressee"


def test_an_unknown_type_is_refused_even_when_signed() -> None:
    doc = task_document(spec())
    doc["type"] = "format-disk"
    body = orjson.dumps(doc)
    envelope = {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(body).decode(),
        "signatures": [
            {
                "keyid": KEY.key_id,
                "sig": base64.b64encode(KEY.sign(pae(PAYLOAD_TYPE, body))).decode(),
            }
        ],
    }
    assert reason(json.dumps(envelope).encode()) == "unknown-type"


@pytest.mark.parametrize(
    "envelope",
    [
        b"",
        b"not json",
        b"[]",
        b'{"payloadType": "text/plain"}',
        json.dumps({"payloadType": PAYLOAD_TYPE, "payload": "!!", "signatures": []}).encode(),
        json.dumps({"payloadType": PAYLOAD_TYPE, "payload": "e30=", "signatures": []}).encode(),
    ],
)
def test_malformed_envelopes_are_refused(envelope: bytes) -> None:
    assert reason(envelope) in {"malformed", "bad-signature"}
