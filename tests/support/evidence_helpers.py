"""Evidence in tests: decisions and other packets emitted through the service API, and capsule
surgery for tamper tests."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import uuid
from pathlib import Path
from typing import Any

from stella_core.evidence import capsule
from stella_core.evidence.model import Refs
from stella_core.evidence.predicates import APPROVAL_V1, DEPLOYMENT_V1, DRIFT_V1, ROLLBACK_V1
from stella_core.promotions.decision import decide
from tests.support.workflow_helpers import notify, template

WEB = "sha256:" + "1" * 64
API = "sha256:" + "2" * 64
NOW = "2026-11-20T10:00:00Z"

POLICY: dict[str, Any] = {
    "environment": "prod",
    "gates": [
        {"id": "freeze", "type": "freeze-window", "config": {}},
        {"id": "order", "type": "predecessor", "config": {"previous": "stage"}},
        {
            "id": "approvals",
            "type": "approval",
            "config": {"required": 2, "separationOfDuties": True},
        },
    ],
}


def decision_inputs(
    approvers: tuple[str, ...] = ("bob", "carol"), approvals: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A decision's inputs; `approvals` replaces the entries made from `approvers` (legacy
    entries, which name no packet)."""
    return {
        "request": {
            "promotionId": str(uuid.UUID(int=7)),
            "release": "shop-1",
            "environment": "prod",
            "requestedBy": "alice",
            "reason": "weekly",
        },
        "release": {"name": "shop-1", "components": {"web": WEB, "api": API}},
        "approvals": approvals
        if approvals is not None
        else [
            {"by": who, "role": "approver", "decision": "approve", "at": NOW, "signatureOk": True}
            for who in approvers
        ],
        "freezes": [],
        "history": {"reached": ["dev", "stage"]},
    }


def emit_decision(
    stella: Any,
    approvers: tuple[str, ...] = ("bob", "carol"),
    approvals: list[dict[str, Any]] | None = None,
) -> Any:
    inputs = decision_inputs(approvers, approvals)
    decision = decide(POLICY, inputs, NOW)
    system = stella.orchestrator  # decisions are the orchestrator's to sign
    with system.db.transaction() as conn:
        return system.evidence.emit_decision(
            conn,
            policy=POLICY,
            inputs=inputs,
            decision=decision,
            subjects=[("web", WEB), ("api", API)],
            resource_uri="stella://releases/shop-1",
            refs=Refs(release="shop-1", environment="prod", promotion_id=uuid.UUID(int=7)),
        )


def emit_approval(stella: Any) -> Any:
    """This person's approval of promotion 7, signed with their own key, as promotions emits
    it; its row's `bundle_digest` is what a decision's inputs name it by."""
    stella.evidence.ensure_personal_key()
    me = stella.tenancy.whoami().user
    with stella.db.transaction() as conn:
        signer = stella.evidence.personal_signer(conn)
        return stella.evidence.emit(
            conn,
            predicate_type=APPROVAL_V1,
            subjects=[("web", WEB), ("api", API)],
            predicate={
                "promotionId": str(uuid.UUID(int=7)),
                "decision": "approved",
                "approver": {"name": me, "keyId": signer.key_id},
                "environment": "prod",
                "release": release_json(),
                "decidedAt": NOW,
            },
            signer=signer,
            refs=Refs(release="shop-1", environment="prod", promotion_id=uuid.UUID(int=7)),
        )


def named(by: str, row: Any, *, counted: bool = True) -> dict[str, Any]:
    """An approvals entry naming its packet, as promotions records it: `packet` is the ledger's
    bundle digest of the approval, `counted` whether the gate counted it."""
    return {
        "by": by,
        "role": "approver",
        "decision": "approve",
        "at": NOW,
        "signatureOk": True,
        "packet": row.bundle_digest,
        "counted": counted,
    }


def release_json() -> dict[str, Any]:
    return {
        "name": "shop-1",
        "components": [
            {"name": "api", "digest": {"sha256": API[7:]}},
            {"name": "web", "digest": {"sha256": WEB[7:]}},
        ],
    }


def emit_other_types(stella: Any) -> dict[str, Any]:
    """One approval (personal key), deployment, rollback and drift packet (orchestrator key)."""
    personal = stella.evidence.ensure_personal_key()
    me = stella.tenancy.whoami().user
    rows = {}
    with stella.db.transaction() as conn:
        rows["approval"] = stella.evidence.emit(
            conn,
            predicate_type=APPROVAL_V1,
            subjects=[("web", WEB), ("api", API)],
            predicate={
                "promotionId": str(uuid.UUID(int=7)),
                "decision": "approved",
                "approver": {"name": me, "keyId": personal.key_id},
                "environment": "prod",
                "release": release_json(),
                "decidedAt": NOW,
            },
            signer=stella.evidence.personal_signer(conn),
            refs=Refs(release="shop-1", environment="prod", promotion_id=uuid.UUID(int=7)),
        )
    system = stella.orchestrator  # the rest is the orchestrator's to sign, in its own session
    with system.db.transaction() as conn:
        orchestrator = system.evidence.orchestrator_signer(conn)
        rows["deployment"] = system.evidence.emit(
            conn,
            predicate_type=DEPLOYMENT_V1,
            subjects=[("web", WEB), ("api", API)],
            predicate={
                "deploymentId": str(uuid.UUID(int=8)),
                "release": release_json(),
                "environment": "prod",
                "strategy": "rolling",
                "status": "succeeded",
                "targets": [
                    {"id": "t1", "name": "web-1", "status": "succeeded"},
                    {"id": "t2", "name": "web-2", "status": "succeeded"},
                ],
                "startedAt": NOW,
                "finishedAt": NOW,
                "actor": me,
            },
            signer=orchestrator,
            refs=Refs(release="shop-1", environment="prod"),
        )
        rows["rollback"] = system.evidence.emit(
            conn,
            predicate_type=ROLLBACK_V1,
            subjects=[("web", WEB), ("api", API)],
            predicate={
                "rollbackId": str(uuid.UUID(int=9)),
                "environment": "prod",
                "from": {**release_json(), "name": "shop-2"},
                "to": release_json(),
                "trigger": "manual",
                "reason": "bad build",
                "status": "succeeded",
                "startedAt": NOW,
                "finishedAt": NOW,
                "actor": me,
            },
            signer=orchestrator,
            refs=Refs(release="shop-1", environment="prod"),
        )
        rows["drift"] = system.evidence.emit(
            conn,
            predicate_type=DRIFT_V1,
            subjects=[("web", WEB)],
            predicate={
                "checkId": str(uuid.UUID(int=10)),
                "environment": "prod",
                "target": {"id": "t1", "name": "web-1"},
                "checkedAt": NOW,
                "expected": release_json(),
                "drifted": True,
                "findings": [
                    {"component": "web", "kind": "changed", "expected": WEB, "observed": API}
                ],
            },
            signer=orchestrator,
            refs=Refs(release="shop-1", environment="prod"),
        )
    return rows


def run_once(stella: Any, name: str = "evidence-run", release: str | None = None) -> Any:
    stella.workflows.import_template(template(name, [notify("a"), notify("b")], [("a", "b")]))
    run = stella.workflows.start_run(name, release=release)
    return stella.workflows.wait_run(run.id, timeout=30)


def rewrite(files: dict[str, bytes], name: str, body: bytes, *, fix_sums: bool) -> dict[str, bytes]:
    changed = dict(files)
    changed[name] = body
    if fix_sums:
        changed["SHA256SUMS"] = capsule.sha256sums(changed)
    return changed


def without_packet(files: dict[str, bytes], seq: int) -> dict[str, bytes]:
    """Packet `seq` removed consistently: its bundle, its proof, its manifest entry and its
    SHA256SUMS line (the manifest signature, which nobody else can make, left as it was)."""
    changed = {
        name: body
        for name, body in files.items()
        if name not in (capsule.packet_file(seq), capsule.proof_file(seq))
    }
    manifest = json.loads(files["manifest.json"])
    manifest["packets"] = [p for p in manifest["packets"] if p["seq"] != seq]
    changed["manifest.json"] = capsule.canonical_json(manifest) + b"\n"
    changed["SHA256SUMS"] = capsule.sha256sums(changed)
    return changed


def flip_base64_field(bundle: bytes, field: str) -> bytes:
    """Change one character inside a base64 field of a bundle (still valid base64)."""
    marker = f'"{field}":"'.encode()
    start = bundle.index(marker) + len(marker) + 10
    old = bundle[start : start + 1]
    new = b"A" if old != b"A" else b"B"
    return bundle[:start] + new + bundle[start + 1 :]


def tar_of(files: dict[str, bytes], path: Path) -> Path:
    capsule.write_tar(files, path)
    return path


def names(tar_path: Path) -> list[str]:
    with tarfile.open(tar_path) as tar:
        return [m.name for m in tar.getmembers()]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


def raw_tar(entries: list[tuple[tarfile.TarInfo, bytes]], path: Path) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, body in entries:
            tar.addfile(info, io.BytesIO(body))
    return path
