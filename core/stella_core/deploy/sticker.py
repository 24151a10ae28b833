"""`stella.version.json`: what a deployment left on a target, signed so it checks offline.

Fields (upstream-spec §9.2, issue 11 §5): `version` "1.0", `generatedAt`, `generator`,
`release {id, name, createdAt, components [{name, digest, tag}]}`, `deployment {id, promotionId,
environmentId, environmentName, targetId, targetName, strategy, startedAt, completedAt,
deployedBy, evidencePacketId, composeLockSha256}`, and `signature {keyid, sig}`: an ECDSA P-256
signature (DER, base64) by the orchestrator's key over the RFC 8785 canonical JSON of every
other member. Anyone holding the orchestrator's public key can check a sticker copied off a
host; a changed byte anywhere fails.

Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from stella_core.crypto.keys import PublicKey, SigningKey
from stella_core.deploy.lockfile import GENERATOR
from stella_core.errors import DefinitionError
from stella_core.evidence.packets import canonical_json

STICKER_NAME = "stella.version.json"
STICKER_VERSION = "1.0"
MAX_STICKER_BYTES = 256 * 1024
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_SHA256_HEX = re.compile(r"^[a-f0-9]{64}$")
_KEY_ID = re.compile(r"^[a-f0-9]{64}$")


@dataclass(frozen=True)
class StickerComponent:
    name: str
    digest: str
    tag: str | None = None


@dataclass(frozen=True)
class StickerCheck:
    ok: bool
    reason: str | None  # why not, in one sentence; None when ok
    sticker: dict[str, Any] | None  # the parsed document (also when the signature fails)


def _when(value: datetime) -> str:
    if value.tzinfo is None:
        raise DefinitionError("sticker times must carry a time zone")
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


# Kamal keeps the last five containers for rollback; a sticker remembers as many releases.
HISTORY_LIMIT = 5


@dataclass(frozen=True)
class HistoryEntry:
    release_id: UUID
    release_name: str
    deployment_id: UUID
    digests: Mapping[str, str]
    deployed_at: datetime


def sticker_history(sticker: Mapping[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """(release name, component digests) the sticker says its target ran: now first, then
    its history, newest first. Malformed entries are skipped (the caller verified the
    signature; this only reads)."""
    found: list[tuple[str, dict[str, str]]] = []
    release = sticker.get("release")
    if isinstance(release, Mapping):
        found.append((str(release.get("name")), _digests(release.get("components"))))
    for h in sticker.get("history") or []:
        if isinstance(h, Mapping) and isinstance(h.get("release"), str):
            found.append((h["release"], _digests(h.get("components"))))
    return found


def _digests(components: Any) -> dict[str, str]:
    if not isinstance(components, list):
        return {}
    return {
        str(c["name"]): str(c["digest"])
        for c in components
        if isinstance(c, Mapping)
        and isinstance(c.get("name"), str)
        and _DIGEST.match(str(c.get("digest")))
    }


def build_sticker(
    *,
    release_id: UUID,
    release_name: str,
    release_created_at: datetime,
    components: Sequence[StickerComponent],
    deployment_id: UUID,
    promotion_id: UUID | None,
    environment_id: UUID,
    environment_name: str,
    target_id: UUID,
    target_name: str,
    started_at: datetime,
    completed_at: datetime,
    deployed_by: str,
    evidence_packet_id: UUID | None,
    compose_lock_sha256: str,
    generated_at: datetime,
    strategy: str = "all-at-once",
    generator: str = GENERATOR,
    history: Sequence[HistoryEntry] = (),
) -> dict[str, Any]:
    """The sticker's body, unsigned. `history`: the releases this target ran before, newest
    first (a rollback goes back to one that every target of an environment still holds)."""
    if not _SHA256_HEX.match(compose_lock_sha256):
        raise DefinitionError("the lockfile's sha256 must be 64 lowercase hex digits")
    for c in components:
        if not _DIGEST.match(c.digest):
            raise DefinitionError(f"component {c.name!r}: invalid digest {c.digest!r}")
    return {
        "version": STICKER_VERSION,
        "generatedAt": _when(generated_at),
        "generator": generator,
        "release": {
            "id": str(release_id),
            "name": release_name,
            "createdAt": _when(release_created_at),
            "components": [
                {"name": c.name, "digest": c.digest, "tag": c.tag}
                for c in sorted(components, key=lambda c: c.name)
            ],
        },
        "deployment": {
            "id": str(deployment_id),
            "promotionId": None if promotion_id is None else str(promotion_id),
            "environmentId": str(environment_id),
            "environmentName": environment_name,
            "targetId": str(target_id),
            "targetName": target_name,
            "strategy": strategy,
            "startedAt": _when(started_at),
            "completedAt": _when(completed_at),
            "deployedBy": deployed_by,
            "evidencePacketId": None if evidence_packet_id is None else str(evidence_packet_id),
            "composeLockSha256": compose_lock_sha256,
        },
        "history": [
            {
                "release": h.release_name,
                "releaseId": str(h.release_id),
                "deploymentId": str(h.deployment_id),
                "components": [{"name": n, "digest": d} for n, d in sorted(h.digests.items())],
                "deployedAt": _when(h.deployed_at),
            }
            for h in history[:HISTORY_LIMIT]
        ],
    }


def signed_bytes(body: Mapping[str, Any]) -> bytes:
    """What the signature covers: the canonical JSON of every member but `signature`."""
    return canonical_json({k: v for k, v in body.items() if k != "signature"})


def sign_sticker(body: Mapping[str, Any], key: SigningKey) -> dict[str, Any]:
    """The body with `signature {keyid, sig}` added (any old signature replaced)."""
    unsigned = {k: v for k, v in body.items() if k != "signature"}
    sig = key.sign(signed_bytes(unsigned))
    return {**unsigned, "signature": {"keyid": key.key_id, "sig": base64.b64encode(sig).decode()}}


def sticker_bytes(sticker: Mapping[str, Any]) -> bytes:
    """The file's bytes: indented for people, sorted so the same sticker is the same file."""
    return (json.dumps(sticker, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


_REQUIRED: dict[str, tuple[str, ...]] = {
    "": ("version", "generatedAt", "generator", "release", "deployment", "signature"),
    "release": ("id", "name", "components"),
    "deployment": (
        "id",
        "environmentId",
        "environmentName",
        "targetId",
        "targetName",
        "startedAt",
        "completedAt",
        "deployedBy",
        "composeLockSha256",
    ),
    "signature": ("keyid", "sig"),
}


def _missing(doc: dict[str, Any]) -> str | None:
    for section, names in _REQUIRED.items():
        part = doc if not section else doc.get(section)
        if not isinstance(part, dict):
            return f"the sticker's {section} is not an object"
        for name in names:
            if name not in part:
                where = f"{section}.{name}" if section else name
                return f"the sticker has no {where}"
    components = doc["release"]["components"]
    if not isinstance(components, list) or not all(
        isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("digest"), str)
        for c in components
    ):
        return "the sticker's release.components is not a list of {name, digest}"
    if doc["version"] != STICKER_VERSION:
        return f"the sticker's version {doc['version']!r} is not {STICKER_VERSION}"
    return None


def _duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        # Two readers could each see a different value; refuse rather than pick one.
        raise ValueError("duplicate member")
    return dict(pairs)


def verify_sticker(raw: bytes, keys: Mapping[str, PublicKey]) -> StickerCheck:
    """Check a sticker file's bytes against the trusted keys (key id -> public key)."""
    if len(raw) > MAX_STICKER_BYTES:
        return StickerCheck(False, f"the sticker is larger than {MAX_STICKER_BYTES} bytes", None)
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_duplicate_keys)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return StickerCheck(False, "the sticker is not valid JSON", None)
    if not isinstance(doc, dict):
        return StickerCheck(False, "the sticker is not a JSON object", None)
    problem = _missing(doc)
    if problem is not None:
        return StickerCheck(False, problem, doc)
    signature = doc["signature"]
    keyid, sig = signature["keyid"], signature["sig"]
    if not isinstance(keyid, str) or not isinstance(sig, str) or not _KEY_ID.match(keyid):
        return StickerCheck(False, "the sticker's signature is malformed", doc)
    key = keys.get(keyid)
    if key is None:
        return StickerCheck(
            False, f"the sticker is signed by key {keyid[:16]}…, which is not trusted here", doc
        )
    try:
        der = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        return StickerCheck(False, "the sticker's signature is not base64", doc)
    if base64.b64encode(der).decode() != sig:
        # Unused low bits of the last character decode to the same bytes: one text per value.
        return StickerCheck(False, "the sticker's signature is not canonical base64", doc)
    try:
        message = signed_bytes(doc)
    except DefinitionError:
        # A float or an out-of-range number: nothing we sign holds one.
        return StickerCheck(False, "the sticker holds a value that is never signed", doc)
    if not key.verify(der, message):
        return StickerCheck(False, "the sticker's signature does not match its content", doc)
    return StickerCheck(True, None, doc)
