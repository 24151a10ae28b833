"""stella.version.json: the fields of upstream-spec §9.2, signed by the orchestrator over the
canonical JSON of the rest; a changed byte anywhere, malformed JSON, a missing field or an
unknown key each fail with a reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest

from stella_core.crypto.keys import PublicKey, SigningKey
from stella_core.deploy.sticker import (
    MAX_STICKER_BYTES,
    StickerComponent,
    build_sticker,
    sign_sticker,
    sticker_bytes,
    verify_sticker,
)

LOCK = "c" * 64
KEY = SigningKey.generate()


def _body() -> dict[str, Any]:
    return build_sticker(
        release_id=UUID("11111111-1111-4111-8111-111111111111"),
        release_name="shop-2026.12.1",
        release_created_at=datetime(2026, 12, 1, 9, 30, tzinfo=UTC),
        components=[
            StickerComponent("worker", "sha256:" + "b" * 64, None),
            StickerComponent("web", "sha256:" + "a" * 64, "v1.4"),
        ],
        deployment_id=UUID("33333333-3333-4333-8333-333333333333"),
        promotion_id=UUID("44444444-4444-4444-8444-444444444444"),
        environment_id=UUID("22222222-2222-4222-8222-222222222222"),
        environment_name="staging",
        target_id=UUID("55555555-5555-4555-8555-555555555555"),
        target_name="web-01",
        started_at=datetime(2026, 12, 2, 13, 0, 5, tzinfo=UTC),
        completed_at=datetime(2026, 12, 2, 13, 0, 9, tzinfo=UTC),
        deployed_by="orchestrator",
        evidence_packet_id=UUID("66666666-6666-4666-8666-666666666666"),
        compose_lock_sha256=LOCK,
        generated_at=datetime(2026, 12, 2, 13, 0, 9, tzinfo=UTC),
    )


def _keys(*keys: SigningKey) -> dict[str, PublicKey]:
    return {k.key_id: k.public_key() for k in keys}


def _signed_file() -> bytes:
    return sticker_bytes(sign_sticker(_body(), KEY))


def test_the_fields() -> None:
    sticker = sign_sticker(_body(), KEY)
    assert sticker["version"] == "1.0"
    assert sticker["generatedAt"] == "2026-12-02T13:00:09Z"
    assert sticker["generator"].startswith("stella-release-desk/")
    assert sticker["release"]["components"] == [
        {"name": "web", "digest": "sha256:" + "a" * 64, "tag": "v1.4"},
        {"name": "worker", "digest": "sha256:" + "b" * 64, "tag": None},
    ]
    deployment = sticker["deployment"]
    assert set(deployment) >= {
        "id",
        "promotionId",
        "environmentId",
        "environmentName",
        "targetId",
        "targetName",
        "startedAt",
        "completedAt",
        "deployedBy",
        "evidencePacketId",
        "composeLockSha256",
    }
    assert deployment["composeLockSha256"] == LOCK
    assert sticker["signature"]["keyid"] == KEY.key_id


def test_a_signed_sticker_verifies_offline_with_the_public_key() -> None:
    check = verify_sticker(_signed_file(), _keys(KEY))
    assert check.ok, check.reason
    assert check.reason is None
    assert check.sticker is not None
    assert check.sticker["deployment"]["targetName"] == "web-01"


def test_a_flipped_byte_anywhere_fails() -> None:
    raw = _signed_file()
    keys = _keys(KEY)
    for i in range(len(raw)):
        for flip in (0x01, 0x20):
            damaged = bytearray(raw)
            damaged[i] ^= flip
            check = verify_sticker(bytes(damaged), keys)
            assert not check.ok, f"byte {i} ({chr(raw[i])!r}) ^ {flip:#x} still verifies"
            assert check.reason


def test_reformatting_keeps_it_valid_editing_a_value_does_not() -> None:
    sticker = json.loads(_signed_file())
    compact = json.dumps(sticker, separators=(",", ":")).encode()
    assert verify_sticker(compact, _keys(KEY)).ok
    sticker["release"]["components"][0]["digest"] = "sha256:" + "f" * 64
    check = verify_sticker(json.dumps(sticker).encode(), _keys(KEY))
    assert not check.ok
    assert check.reason == "the sticker's signature does not match its content"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "the sticker is not valid JSON"),
        (b"\xff\xfe", "the sticker is not valid JSON"),
        (b"[1, 2]", "the sticker is not a JSON object"),
        (b'{"a": 1, "a": 2}', "the sticker is not valid JSON"),
    ],
)
def test_malformed_files_get_a_reason(raw: bytes, reason: str) -> None:
    check = verify_sticker(raw, _keys(KEY))
    assert (check.ok, check.reason) == (False, reason)


def test_a_missing_field_is_named() -> None:
    sticker = sign_sticker(_body(), KEY)
    del sticker["deployment"]["completedAt"]
    check = verify_sticker(sticker_bytes(sticker), _keys(KEY))
    assert check.reason == "the sticker has no deployment.completedAt"
    unsigned = _body()
    check = verify_sticker(sticker_bytes(unsigned), _keys(KEY))
    assert check.reason == "the sticker has no signature"


def test_an_unknown_key_is_refused() -> None:
    other = SigningKey.generate()
    check = verify_sticker(sticker_bytes(sign_sticker(_body(), other)), _keys(KEY))
    assert not check.ok
    assert check.reason is not None
    assert "not trusted" in check.reason
    # Signed by the right key id but another key's signature: still refused.
    forged = sign_sticker(_body(), other)
    forged["signature"]["keyid"] = KEY.key_id
    assert not verify_sticker(sticker_bytes(forged), _keys(KEY)).ok


def test_an_oversized_file_is_refused_before_parsing() -> None:
    check = verify_sticker(b" " * (MAX_STICKER_BYTES + 1), _keys(KEY))
    assert check.reason is not None
    assert "larger than" in check.reason
