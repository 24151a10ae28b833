"""The evidence ledger against real PostgreSQL: run packets emitted with the run's ending, the
append-only chain, keys and who may sign, checkpoints, export, offline verify and replay, and a
superuser's tampering caught."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from stella_core.crypto.keys import SigningKey
from stella_core.errors import IntegrityError, StellaError
from stella_core.evidence import capsule
from stella_core.evidence.capsule import CapsuleError, read_tar
from stella_core.evidence.chain import chain_hash
from stella_core.evidence.merkle import verify_checkpoint
from stella_core.evidence.model import Filter
from stella_core.evidence.predicates import APPROVAL_V1
from stella_core.evidence.service import Selection, replay_capsule
from stella_core.evidence.verify import verify_capsule
from stella_core.promotions.decision import replay as replay_decision
from stella_core.tenancy.keys import NoSigningKeyError
from stella_core.tenancy.model import ProductRole
from tests.support.evidence_helpers import (
    API,
    POLICY,
    WEB,
    emit_approval,
    emit_decision,
    emit_other_types,
    flip_base64_field,
    named,
    raw_tar,
    rewrite,
    run_once,
    without_packet,
)
from tests.support.workflow_helpers import notify, template


@pytest.fixture
def admin(world):
    stella = world.open()
    stella.workflows.set_local_executor(True)
    return stella


def person(world, admin, name: str, role: ProductRole):
    user, password = admin.tenancy.add_user(name, role)
    admin.save_profile_for(user.name, password)
    return world.open(name)


def problems(report) -> list[tuple[str | None, str]]:
    return [(p.packet, p.check) for p in report.problems]


# ------------------------------------------------------------------------------- emission
def test_a_run_that_ends_emits_one_signed_run_packet(admin) -> None:
    run = run_once(admin)
    assert run.status == "succeeded"
    rows = admin.evidence.find(Filter(run_id=run.id))
    assert [r.type for r in rows] == ["run"]
    detail = admin.evidence.get(rows[0].id)
    assert detail["verified"]
    assert detail["chain_ok"]
    predicate = detail["statement"]["predicate"]
    assert predicate["runId"] == str(run.id)
    assert predicate["status"] == "succeeded"
    assert {s["id"]: s["status"] for s in predicate["steps"]} == {
        "a": "succeeded",
        "b": "succeeded",
    }
    assert detail["signer"]["owner"] == "orchestrator"


def test_no_ending_without_its_evidence(world, admin, monkeypatch) -> None:
    """The packet is written in the transaction that ends the run: if signing fails, the run
    does not end either."""
    admin.workflows.import_template(
        template(
            "held",
            [
                notify("a"),
                {
                    "id": "gate",
                    "type": "approval",
                    "inputs": {"approvers": ["admin"], "required": 1},
                },
            ],
            [("a", "gate")],
        )
    )
    run = admin.workflows.start_run("held")
    worker = admin.workflows.worker()
    while worker.run_once():
        pass
    assert admin.workflows.get_run(run.id).status == "waiting"
    monkeypatch.setattr(admin.evidence.local, "load", lambda *a: None)
    admin.evidence.local._cache.clear()
    with pytest.raises(NoSigningKeyError, match="does not hold the orchestrator key"):
        admin.workflows.cancel_run(run.id)
    assert admin.workflows.get_run(run.id).status == "waiting"
    assert admin.evidence.find(Filter(run_id=run.id)) == []
    monkeypatch.undo()
    assert admin.workflows.cancel_run(run.id).status == "cancelled"
    [row] = admin.evidence.find(Filter(run_id=run.id))
    assert admin.evidence.get(row.id)["statement"]["predicate"]["status"] == "cancelled"


def test_seq_is_gap_free_and_each_link_chains_to_the_previous(admin) -> None:
    for i in range(3):
        run_once(admin, f"t{i}")
    emit_decision(admin)
    rows = admin.evidence.find()
    assert [r.seq for r in rows] == [1, 2, 3, 4]
    prev = "0" * 64
    for row in rows:
        assert row.prev_hash == prev
        assert row.hash == chain_hash(prev, row.seq, row.bundle_digest)
        prev = row.hash
    assert [r.type for r in admin.evidence.find(Filter(type="vsa"))] == ["vsa"]


# ------------------------------------------------------------------------------- the database
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE evidence.packets SET type = 'run'",
        "DELETE FROM evidence.packets",
        "TRUNCATE evidence.packets",
        "UPDATE evidence.inputs SET media_type = 'x'",
        "DELETE FROM evidence.checkpoints",
        "UPDATE tenancy.signing_keys SET owner = 'mallory'",
        "DELETE FROM tenancy.signing_keys",
    ],
)
def test_the_application_role_cannot_change_or_remove_evidence(admin, statement) -> None:
    run_once(admin)
    admin.evidence.checkpoint()
    with pytest.raises(StellaError), admin.db.transaction() as conn:
        conn.execute(text(statement))
    assert len(admin.evidence.find()) == 1


def test_a_person_registers_only_their_own_key_and_signs_only_with_it(world, admin) -> None:
    bob = person(world, admin, "bob", ProductRole.APPROVER)
    carol = person(world, admin, "carol", ProductRole.APPROVER)
    bob_key = bob.evidence.ensure_personal_key()
    assert bob_key.owner == "bob"
    # Carol may not register a key in bob's name, nor an orchestrator key.
    from stella_core.tenancy.store import KeyStore

    for kind, owner in (("person", "bob"), ("orchestrator", "orchestrator")):
        key = SigningKey.generate().public_key()
        with pytest.raises(StellaError), carol.db.transaction() as conn:
            KeyStore(conn).register(carol.db.tenant_id, kind, owner, key)
    # A packet claiming bob's key, appended by carol, is refused by the database.
    from stella_core.evidence.model import Refs
    from stella_core.evidence.store import LedgerStore

    with pytest.raises(StellaError), carol.db.transaction() as conn:
        LedgerStore(conn).append(
            carol.db.tenant_id,
            [("run", "x:y", ["sha256:" + "0" * 64], bob_key.key_id, b"{}", Refs())],
        )
    # The key id is the SHA-256 of the key: the database recomputes it.
    key = SigningKey.generate().public_key()
    with pytest.raises(StellaError), bob.db.transaction() as conn:
        conn.execute(
            text(
                "INSERT INTO tenancy.signing_keys"
                " (tenant_id, key_id, owner_kind, owner, public_key)"
                " VALUES (:t, :k, 'person', 'bob', :p)"
            ),
            {"t": bob.db.tenant_id, "k": "a" * 64, "p": key.pem().decode()},
        )


def test_an_auditor_reads_evidence_but_cannot_append(world, admin) -> None:
    run_once(admin)
    dave = person(world, admin, "dave", ProductRole.AUDITOR)
    assert len(dave.evidence.find()) == 1
    with pytest.raises(StellaError), dave.db.transaction() as conn:
        dave.evidence.emit_run(conn, admin.evidence.find()[0].run_id, "succeeded")


def test_rotation_keeps_old_evidence_verifiable(admin, tmp_path: Path) -> None:
    run_once(admin, "before")
    old = admin.evidence.signing_keys()
    new = admin.evidence.rotate_key(orchestrator=True)
    run_once(admin, "after")
    rows = admin.evidence.find()
    assert rows[0].signer_key_id == old[0].key_id
    assert rows[1].signer_key_id == new.key_id != old[0].key_id
    files, _ = admin.evidence.capsule_files(Selection(since=rows[0].created_at, until=_later(rows)))
    report = verify_capsule(files, [k.public_key for k in admin.evidence.signing_keys()])
    assert report.ok, report.to_json()
    assert report.checked["signatures"] == 3  # both packets and the manifest


def _later(rows):
    from datetime import timedelta

    return rows[-1].created_at + timedelta(seconds=1)


# ------------------------------------------------------------------------------- checkpoints
def test_checkpoints_seal_the_ledger_and_prove_inclusion(admin) -> None:
    run_once(admin, "one")
    first = admin.evidence.checkpoint()
    assert first.tree_size == 1
    assert admin.evidence.checkpoint().tree_size == 1  # nothing new: the same checkpoint
    run_once(admin, "two")
    run_once(admin, "three")
    second = admin.evidence.checkpoint()
    assert second.tree_size == 3
    orchestrator = [k.public_key for k in admin.evidence.signing_keys()]
    head = verify_checkpoint(second.note, orchestrator)
    assert head.size == 3
    assert head.root.hex() == second.root_hash
    report = admin.evidence.verify_ledger()
    assert report.ok, report.to_json()
    assert report.checked["checkpoints"] == 4  # the checkpoint and one proof per packet


# ------------------------------------------------------------------------------- export
def test_export_is_deterministic_and_verifies_offline(admin, tmp_path: Path) -> None:
    run = run_once(admin)
    emit_decision(admin)
    first = admin.evidence.export(Selection(run_id=run.id), tmp_path / "a.tar")
    run_once(admin, "later")  # more packets and another checkpoint change nothing
    admin.evidence.checkpoint()
    second = admin.evidence.export(Selection(run_id=run.id), tmp_path / "b.tar")
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert first["digest"] == second["digest"]
    with tarfile.open(tmp_path / "a.tar") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.mtime, m.mode, m.uid, m.gid) for m in members} == {(0, 0o644, 0, 0)}
    files = read_tar(tmp_path / "a.tar")
    assert {
        "README.md",
        "SHA256SUMS",
        "manifest.json",
        "manifest.sigstore.json",
        "ledger/checkpoint.txt",
    } <= set(files)
    report = verify_capsule(files)
    assert report.ok, report.to_json()
    # The packet and the manifest signed; 9 files in SHA256SUMS, the 8 the manifest signs and
    # the template the run packet names; the chain up to the decision.
    assert report.checked == {"signatures": 2, "digests": 18, "chain": 2, "checkpoints": 2}


def test_a_decision_capsule_carries_every_input_and_replays(admin, tmp_path: Path) -> None:
    row = emit_decision(admin)
    admin.evidence.export(Selection(release="shop-1"), tmp_path / "d.tar")
    files = read_tar(tmp_path / "d.tar")
    manifest = json.loads(files["manifest.json"])
    inputs = {i["digest"] for i in manifest["inputs"]}
    # the policy, the decision record and the request/release/approvals/freezes/history parts
    assert len(inputs) == 7
    assert verify_capsule(files).ok
    result = replay_capsule(files, None, decisions=replay_decision)
    assert result["same"] is True
    assert result["differences"] == []
    assert admin.evidence.replay(row.id)["same"] is True
    # What if prod had needed three approvals?
    stricter = json.loads(json.dumps(POLICY))
    stricter["gates"][2]["config"]["required"] = 3
    what_if = replay_capsule(files, None, stricter, decisions=replay_decision)
    assert what_if["same"] is False
    kinds = [(d["kind"], d["name"]) for d in what_if["differences"]]
    assert ("gate", "approvals") in kinds
    assert kinds[-1][0] == "verdict"


def test_every_packet_type_replays_the_same(admin, tmp_path: Path) -> None:
    run_once(admin)
    emit_decision(admin)
    emit_other_types(admin)
    files, count = admin.evidence.capsule_files(Selection(since=_epoch(), until=_far()))
    assert count == 7  # with the orchestrator's endorsement of the approver's key
    report = verify_capsule(files)
    assert report.ok, report.to_json()
    result = replay_capsule(files, None, decisions=replay_decision)
    assert sorted(p["type"] for p in result["packets"]) == sorted(
        ["run", "vsa", "approval", "deployment", "rollback", "drift", "key"]
    )
    assert result["same"], result


def test_an_export_carries_every_approval_its_decisions_name(world, admin) -> None:
    """A time range that starts after the approvals still exports them with the decision that
    counted them, and the orchestrator's key alone verifies it."""
    approvals = {
        name: emit_approval(person(world, admin, name, ProductRole.APPROVER))
        for name in ("bob", "carol")
    }
    decision = emit_decision(admin, approvals=[named(name, row) for name, row in approvals.items()])
    files, count = admin.evidence.capsule_files(Selection(since=decision.created_at, until=_far()))
    assert count == 5  # the decision, both approvals and the endorsements of their keys
    manifest = json.loads(files["manifest.json"])
    assert {p["id"] for p in manifest["packets"]} >= {str(r.id) for r in approvals.values()}
    orchestrator = [
        k.public_key for k in admin.evidence.signing_keys() if k.owner_kind == "orchestrator"
    ]
    report = verify_capsule(files, orchestrator)
    assert report.ok, report.to_json()
    assert replay_capsule(files, orchestrator, decisions=replay_decision)["same"]


def test_an_approval_removed_consistently_is_named_and_replay_differs(world, admin) -> None:
    bob = emit_approval(person(world, admin, "bob", ProductRole.APPROVER))
    carol = emit_approval(person(world, admin, "carol", ProductRole.APPROVER))
    decision = emit_decision(admin, approvals=[named("bob", bob), named("carol", carol)])
    files, _ = admin.evidence.capsule_files(Selection(release="shop-1"))
    removed = without_packet(files, bob.seq)
    report = verify_capsule(removed)
    assert not report.ok
    assert (
        str(decision.id),
        "digests",
        f"its inputs count bob's approval {bob.bundle_digest}, which is not in the capsule",
    ) in [(p.packet, p.check, p.message) for p in report.problems]
    result = replay_capsule(removed, None, decisions=replay_decision)
    assert result["same"] is False
    assert {
        "packet": str(decision.id),
        "kind": "approval",
        "name": "bob",
        "recorded": bob.bundle_digest,
        "replayed": "is not in the capsule",
    } in result["differences"]


def _epoch():
    from datetime import UTC, datetime

    return datetime(2000, 1, 1, tzinfo=UTC)


def _far():
    from datetime import UTC, datetime

    return datetime(2100, 1, 1, tzinfo=UTC)


# ------------------------------------------------------------------------------- tampering
@pytest.fixture
def exported(admin):
    run_once(admin)
    row = emit_decision(admin)
    files, _ = admin.evidence.capsule_files(Selection(since=_epoch(), until=_far()))
    return files, str(row.id), row.seq


@pytest.mark.parametrize("fix_sums", [True, False])
@pytest.mark.parametrize(
    ("what", "check"),
    [
        ("payload", "signatures"),
        ("signature", "signatures"),
        ("input", "digests"),
        ("chain", "chain"),
        ("checkpoint", "checkpoints"),
    ],
)
def test_each_tampered_byte_class_is_named(exported, what, check, fix_sums) -> None:
    files, packet_id, seq = exported
    name = capsule.packet_file(seq)
    if what == "payload":
        body = flip_base64_field(files[name], "payload")
    elif what == "signature":
        body = flip_base64_field(files[name], "sig")
    elif what == "input":
        name = next(n for n in files if n.startswith("inputs/"))
        body = files[name].replace(b"bob", b"eve", 1)
        if body == files[name]:
            body = files[name] + b" "
    elif what == "chain":
        name = "ledger/chain.json"
        chain = json.loads(files[name])
        chain[0]["hash"] = "f" * 64
        body = capsule.canonical_json(chain) + b"\n"
    else:
        name = "ledger/checkpoint.txt"
        lines = files[name].decode().split("\n")
        lines[1] = str(int(lines[1]) + 1)
        body = "\n".join(lines).encode()
    tampered = rewrite(files, name, body, fix_sums=fix_sums)
    report = verify_capsule(tampered)
    assert not report.ok
    found = {c for _, c in problems(report)}
    assert check in found, report.to_json()
    if not fix_sums:
        assert "digests" in found
    if what in ("payload", "signature"):
        assert (packet_id, "signatures") in problems(report)


def test_every_problem_is_reported_not_only_the_first(exported) -> None:
    files, _packet_id, seq = exported
    name = capsule.packet_file(seq)
    tampered = rewrite(files, name, flip_base64_field(files[name], "sig"), fix_sums=True)
    chain = json.loads(tampered["ledger/chain.json"])
    chain[0]["prevHash"] = "1" * 64
    tampered = rewrite(
        tampered, "ledger/chain.json", capsule.canonical_json(chain) + b"\n", fix_sums=False
    )
    report = verify_capsule(tampered)
    checks = {c for _, c in problems(report)}
    assert {"signatures", "chain", "digests"} <= checks


def test_only_the_given_trusted_keys_are_trusted(exported) -> None:
    files, packet_id, _ = exported
    stranger = SigningKey.generate().public_key()
    report = verify_capsule(files, [stranger])
    assert (packet_id, "signatures") in problems(report)
    assert any(p.check == "checkpoints" for p in report.problems)


def test_hostile_archives_are_refused_with_a_reason(tmp_path: Path) -> None:
    link = tarfile.TarInfo("capsule/evil")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    with pytest.raises(CapsuleError, match="not a regular file"):
        read_tar(raw_tar([(link, b"")], tmp_path / "link.tar"))
    escape = tarfile.TarInfo("capsule/../../x")
    escape.size = 1
    with pytest.raises(CapsuleError, match="outside"):
        read_tar(raw_tar([(escape, b"x")], tmp_path / "escape.tar"))
    (tmp_path / "junk.tar").write_bytes(b"not a tar")
    with pytest.raises(CapsuleError, match="not a readable tar"):
        read_tar(tmp_path / "junk.tar")


def _as_superuser(superuser: psycopg.Connection, sql: str) -> None:
    # Behind the application's back: triggers off for this session, then the edit.
    superuser.execute("SET session_replication_role = replica")
    superuser.execute(sql)
    superuser.execute("SET session_replication_role = origin")


def test_a_superuser_edit_is_caught_and_the_packet_named(admin, superuser) -> None:
    for i in range(3):
        run_once(admin, f"t{i}")
    admin.evidence.checkpoint()
    victim = admin.evidence.find()[1]
    _as_superuser(
        superuser,
        "UPDATE evidence.packets SET bundle = convert_to(replace(convert_from(bundle, 'UTF8'),"
        f" '\"payloadType\"', '\"payloadType\" '), 'UTF8') WHERE seq = {victim.seq}",
    )
    report = admin.evidence.verify_ledger()
    assert (str(victim.id), "chain") in problems(report), report.to_json()
    run_once(admin, "more")
    with pytest.raises(IntegrityError, match=r"packet #2 no longer matches"):
        admin.evidence.checkpoint()


def test_a_superuser_delete_is_caught(admin, superuser) -> None:
    for i in range(3):
        run_once(admin, f"t{i}")
    admin.evidence.checkpoint()
    _as_superuser(superuser, "DELETE FROM evidence.packets WHERE seq = 2")
    report = admin.evidence.verify_ledger()
    assert not report.ok
    assert ("seq 3", "chain") in problems(report) or any(
        "missing" in p.message for p in report.problems
    ), report.to_json()
    assert any(p.check == "checkpoints" for p in report.problems)
    with pytest.raises(IntegrityError):
        admin.evidence.checkpoint()


def test_a_superuser_rewriting_the_whole_chain_breaks_the_checkpoint(admin, superuser) -> None:
    for i in range(2):
        run_once(admin, f"t{i}")
    admin.evidence.checkpoint()
    # Recompute every hash after removing packet 1: the chain is consistent again, the
    # signed checkpoint is not.
    _as_superuser(superuser, "DELETE FROM evidence.packets WHERE seq = 1")
    _as_superuser(
        superuser,
        "UPDATE evidence.packets SET seq = 1, prev_hash = repeat('0', 64),"
        " hash = evidence.chain_hash(repeat('0', 64), 1, bundle_digest) WHERE seq = 2",
    )
    run_once(admin, "t9")  # the ledger is back to two packets, each link recomputes
    report = admin.evidence.verify_ledger()
    assert {p.check for p in report.problems} == {"checkpoints"}, report.to_json()
    assert any("altered after it was sealed" in p.message for p in report.problems)


def test_verify_ledger_holds_each_row_to_its_bundles_signer(world, admin, superuser) -> None:
    """The database lets a person append a row with their own key id over any bytes: a row
    holding `{}`, or a copy of another person's approval, is named by `verify --ledger`; so is
    a person's packet whose row says someone else appended it."""
    bob = person(world, admin, "bob", ProductRole.APPROVER)
    carol = person(world, admin, "carol", ProductRole.APPROVER)
    approval = emit_approval(bob)
    emit_other_types(admin)  # orchestrator-signed packets appended by the admin: no problem
    carol_key = carol.evidence.ensure_personal_key()
    assert admin.evidence.verify_ledger().ok
    from stella_core.evidence.model import Refs
    from stella_core.evidence.store import LedgerStore

    with bob.db.transaction() as conn:
        copied = LedgerStore(conn).bundles([approval.seq])[approval.seq]
    with carol.db.transaction() as conn:
        empty, copy = LedgerStore(conn).append(
            carol.db.tenant_id,
            [
                ("approval", APPROVAL_V1, [WEB], carol_key.key_id, b"{}", Refs()),
                ("approval", APPROVAL_V1, [WEB, API], carol_key.key_id, copied, Refs()),
            ],
        )
    assert (empty.actor, copy.actor) == ("carol", "carol")
    report = admin.evidence.verify_ledger()
    found = [(p.packet, p.check, p.message) for p in report.problems]
    assert (str(empty.id), "signatures") in [(p, c) for p, c, _ in found], found
    assert any(
        p == str(copy.id) and c == "signatures" and "row names signer" in m and "(bob's)" in m
        for p, c, m in found
    ), found
    assert (
        str(copy.id),
        "signatures",
        f"packet #{copy.seq} was appended by carol but is signed with bob's key",
    ) in found
    assert (
        str(copy.id),
        "digests",
        f"packet #{copy.seq} holds the same bundle as packet {approval.id}: a copy",
    ) in found
    # Behind the database's back: bob's own approval said to be carol's doing.
    _as_superuser(
        superuser, f"UPDATE evidence.packets SET actor = 'carol' WHERE seq = {approval.seq}"
    )
    found = [(p.packet, p.message) for p in admin.evidence.verify_ledger().problems]
    assert (
        str(approval.id),
        f"packet #{approval.seq} was appended by carol but is signed with bob's key",
    ) in found


# ------------------------------------------------------------------------------- openssl
def _readme_script(readme: str) -> str:
    start = readme.index("```sh\n") + len("```sh\n")
    return readme[start : readme.index("```", start)]


def test_the_readme_openssl_recipe_verifies_and_catches_a_forgery(exported, tmp_path: Path) -> None:
    assert shutil.which("openssl"), "openssl is installed by packaging/dev.sh"
    files, _, seq = exported
    good = tmp_path / "good"
    for name, body in files.items():
        (good / name).parent.mkdir(parents=True, exist_ok=True)
        (good / name).write_bytes(body)
    script = _readme_script(files["README.md"].decode())
    done = subprocess.run(
        ["bash", "-c", script], cwd=good, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("Verified OK") == 4  # the manifest, two packets, the checkpoint
    assert "SHA256SUMS: all files match" in done.stdout
    assert "manifest: Verified OK" in done.stdout
    assert "manifest: SHA256SUMS lists exactly the signed files" in done.stdout
    assert "checkpoint: Verified OK" in done.stdout

    def run_on(changed: dict[str, bytes], where: str) -> str:
        for n, body in changed.items():
            (tmp_path / where / n).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / where / n).write_bytes(body)
        failed = subprocess.run(
            ["bash", "-c", script],
            cwd=tmp_path / where,
            capture_output=True,
            text=True,
            check=False,
        )
        assert failed.returncode != 0
        return failed.stdout + failed.stderr

    # A forged payload with SHA256SUMS recomputed: it is not the file the manifest signed.
    name = capsule.packet_file(seq)
    forged = rewrite(files, name, flip_base64_field(files[name], "payload"), fix_sums=True)
    assert "SHA256SUMS DIFFERS FROM THE SIGNED MANIFEST" in run_on(forged, "payload")
    # A file added and listed in SHA256SUMS: the same.
    extra = rewrite(files, "inputs/sha256/" + "e" * 64, b"{}", fix_sums=True)
    assert "SHA256SUMS DIFFERS FROM THE SIGNED MANIFEST" in run_on(extra, "extra")
    # A file added and listed nowhere.
    unlisted = {**files, "inputs/sha256/" + "e" * 64: b"{}"}
    assert "FILES DIFFER FROM SHA256SUMS" in run_on(unlisted, "unlisted")
    # A forged manifest signature: openssl refuses it.
    name = capsule.MANIFEST_SIGNATURE
    resigned = rewrite(files, name, flip_base64_field(files[name], "sig"), fix_sums=True)
    assert "Verification failure" in run_on(resigned, "signature")


def test_checking_in_processes_finds_the_same_as_in_one(exported) -> None:
    """`stella evidence verify` checks large capsules in forked processes: same counts, same
    problems, in the same order."""
    files, packet_id, seq = exported
    sequential = verify_capsule(files)
    assert sequential.ok
    assert verify_capsule(files, jobs=2, parallel_from=1).to_json() == sequential.to_json()
    name = capsule.packet_file(seq)
    tampered = rewrite(files, name, flip_base64_field(files[name], "sig"), fix_sums=False)
    one = verify_capsule(tampered)
    many = verify_capsule(tampered, jobs=2, parallel_from=1, keep_verified=False)
    assert not many.ok
    assert many.to_json() == one.to_json()
    assert (packet_id, "signatures") in problems(many)
