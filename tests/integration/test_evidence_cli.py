"""`stella evidence` and `stella keys`: the CLI contract, and verification on a machine with no
database at all (the auditor's laptop)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from stella_core.evidence import capsule
from stella_core.evidence.capsule import read_tar
from stella_core.tenancy.model import ProductRole
from tests.integration.test_cli import ok_json, stella
from tests.support.evidence_helpers import (
    POLICY,
    emit_approval,
    emit_decision,
    flip_base64_field,
    named,
    run_once,
    without_packet,
)

LIST_FIELDS = {"id", "type", "subject_digests", "signer_key_id", "created_at", "seq"}


def auditor_env(tmp_path: Path) -> dict[str, str]:
    """No database URL and an empty home: verification must need neither."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("STELLA_")}
    env["STELLA_HOME"] = str(tmp_path / "auditor-home")
    return env


def test_list_export_verify_replay_checkpoint(world, tmp_path: Path) -> None:
    admin = world.open()
    admin.workflows.set_local_executor(True)
    run = run_once(admin)
    decision = emit_decision(admin)
    env = world.env()

    listed = ok_json(env, "evidence", "list", "--output", "json")
    assert [p["type"] for p in listed] == ["run", "vsa"]
    assert set(listed[0]) >= LIST_FIELDS
    assert listed[1]["seq"] == 2
    assert listed[1]["id"] == str(decision.id)
    assert len(listed[1]["subject_digests"]) == 2
    assert [p["type"] for p in ok_json(env, "evidence", "list", "--type", "vsa", "-o", "json")] == [
        "vsa"
    ]
    assert ok_json(env, "evidence", "list", "--release", "shop-1", "-o", "json")[0]["type"] == "vsa"

    checkpoint = ok_json(env, "evidence", "checkpoint", "--output", "json")
    assert checkpoint["tree_size"] == 2
    assert "\n\n\u2014 " in checkpoint["note"]

    orchestrator_pem = tmp_path / "orchestrator.pem"
    assert stella(env, "keys", "export", "--out", str(orchestrator_pem)).returncode == 0
    keys = ok_json(env, "keys", "list", "-o", "json")
    assert [k["owner"] for k in keys] == ["orchestrator"]
    assert keys[0]["active"]

    out = tmp_path / "run.tar"
    exported = ok_json(
        env, "evidence", "export", "--run", str(run.id), "--out", str(out), "-o", "json"
    )
    assert exported["packets"] == 1
    assert out.is_file()
    again = tmp_path / "run-again.tar"
    ok_json(env, "evidence", "export", "--run", str(run.id), "--out", str(again), "-o", "json")
    assert out.read_bytes() == again.read_bytes()

    # The auditor: no database, no profile, only the archive and the key they were given.
    auditor = auditor_env(tmp_path)
    verified = ok_json(
        auditor,
        "evidence",
        "verify",
        str(out),
        "--trusted-key",
        str(orchestrator_pem),
        "-o",
        "json",
    )
    assert verified["ok"] is True
    assert verified["problems"] == []
    assert set(verified["checked"]) == {"signatures", "digests", "chain", "checkpoints"}
    assert verified["checked"]["signatures"] == 2  # the run packet and the manifest
    assert not (tmp_path / "auditor-home" / "profiles.json").exists()
    replayed = ok_json(auditor, "evidence", "replay", str(out), "-o", "json")
    assert replayed["same"] is True
    assert replayed["differences"] == []

    # A decision capsule, a what-if policy, and a replay by packet id against the database.
    decision_tar = tmp_path / "release.tar"
    ok_json(
        env, "evidence", "export", "--release", "shop-1", "--out", str(decision_tar), "-o", "json"
    )
    stricter = json.loads(json.dumps(POLICY))
    stricter["gates"][2]["config"]["required"] = 3
    policy_file = tmp_path / "stricter.json"
    policy_file.write_text(json.dumps(stricter))
    what_if = ok_json(
        auditor, "evidence", "replay", str(decision_tar), "--policy", str(policy_file), "-o", "json"
    )
    assert what_if["same"] is False
    assert what_if["differences"][-1]["kind"] == "verdict"
    by_id = ok_json(env, "evidence", "replay", str(decision.id), "-o", "json")
    assert by_id["same"] is True

    # Tampered: every problem listed, exit 1.
    files = read_tar(out)
    name = capsule.packet_file(1)
    files[name] = flip_base64_field(files[name], "sig")
    tampered = tmp_path / "tampered.tar"
    capsule.write_tar(files, tampered)
    result = stella(auditor, "evidence", "verify", str(tampered), "-o", "json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    checks = {p["check"] for p in report["problems"]}
    assert {"signatures", "digests"} <= checks
    assert any(p["packet"] == listed[0]["id"] for p in report["problems"])
    assert stella(auditor, "evidence", "replay", str(tampered), "-o", "json").returncode == 1


def test_a_capsule_missing_a_counted_approval_fails_verify_and_replay(
    world, tmp_path: Path
) -> None:
    admin = world.open()
    user, password = admin.tenancy.add_user("bob", ProductRole.APPROVER)
    admin.save_profile_for(user.name, password)
    bob = emit_approval(world.open("bob"))
    decision = emit_decision(admin, approvals=[named("bob", bob)])
    env = world.env()
    out = tmp_path / "release.tar"
    ok_json(env, "evidence", "export", "--release", "shop-1", "--out", str(out), "-o", "json")
    orchestrator_pem = tmp_path / "orchestrator.pem"
    assert stella(env, "keys", "export", "--out", str(orchestrator_pem)).returncode == 0
    auditor = auditor_env(tmp_path)
    key = ["--trusted-key", str(orchestrator_pem)]
    assert ok_json(auditor, "evidence", "verify", str(out), *key, "-o", "json")["ok"] is True

    removed = tmp_path / "removed.tar"
    capsule.write_tar(without_packet(read_tar(out), bob.seq), removed)
    result = stella(auditor, "evidence", "verify", str(removed), *key, "-o", "json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert {
        "packet": str(decision.id),
        "check": "digests",
        "message": f"its inputs count bob's approval {bob.bundle_digest}, which is not in the "
        "capsule",
    } in report["problems"]
    replayed = stella(auditor, "evidence", "replay", str(removed), *key, "-o", "json")
    assert replayed.returncode == 1
    value = json.loads(replayed.stdout)
    assert value["same"] is False
    assert [(d["kind"], d["name"], d["recorded"]) for d in value["differences"]] == [
        ("approval", "bob", bob.bundle_digest)
    ]


def test_verify_ledger_names_a_row_over_another_persons_bundle(world) -> None:
    from stella_core.evidence.model import Refs
    from stella_core.evidence.predicates import APPROVAL_V1
    from stella_core.evidence.store import LedgerStore

    admin = world.open()
    for name in ("bob", "carol"):
        user, password = admin.tenancy.add_user(name, ProductRole.APPROVER)
        admin.save_profile_for(user.name, password)
    approval = emit_approval(world.open("bob"))
    carol = world.open("carol")
    key = carol.evidence.ensure_personal_key()
    env = world.env()
    assert ok_json(env, "evidence", "verify", "--ledger", "-o", "json")["ok"] is True
    with carol.db.transaction() as conn:
        bundle = LedgerStore(conn).bundles([approval.seq])[approval.seq]
        [copy] = LedgerStore(conn).append(
            carol.db.tenant_id,
            [("approval", APPROVAL_V1, list(approval.subject_digests), key.key_id, bundle, Refs())],
        )
    result = stella(env, "evidence", "verify", "--ledger", "-o", "json")
    assert result.returncode == 1
    problems = json.loads(result.stdout)["problems"]
    assert {
        "packet": str(copy.id),
        "check": "signatures",
        "message": f"packet #{copy.seq} was appended by carol but is signed with bob's key",
    } in problems


def test_bad_input_is_refused_with_exit_2(world, tmp_path: Path) -> None:
    env = world.env()
    world.open()
    both = stella(
        env,
        "evidence",
        "export",
        "--release",
        "x",
        "--promotion",
        str(uuid.uuid4()),
        "--out",
        "a.tar",
    )
    assert both.returncode == 2
    assert "choose one selection" in both.stderr
    half = stella(env, "evidence", "export", "--since", "2026-01-01T00:00:00Z", "--out", "a.tar")
    assert half.returncode == 2
    assert "both --since and --until" in half.stderr
    missing = stella(auditor_env(tmp_path), "evidence", "verify", str(tmp_path / "nope.tar"))
    assert missing.returncode == 2
    assert "no archive" in missing.stderr
    (tmp_path / "junk.tar").write_bytes(b"junk")
    junk = stella(auditor_env(tmp_path), "evidence", "verify", str(tmp_path / "junk.tar"))
    assert junk.returncode == 2
    assert "not a readable tar" in junk.stderr
    unknown = stella(env, "evidence", "list", "--type", "nonsense")
    assert unknown.returncode == 2
    assert "unknown packet type" in unknown.stderr
    nothing = stella(
        env, "evidence", "export", "--release", "none", "--out", str(tmp_path / "n.tar")
    )
    assert nothing.returncode == 2
    assert "no evidence packets match" in nothing.stderr
