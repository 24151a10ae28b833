"""Decision capsules offline: built in memory as an export builds them, checked with no database."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid

import pytest

from stella_core.crypto.keys import SigningKey
from stella_core.evidence import capsule
from stella_core.evidence.packets import verify_bundle
from stella_core.evidence.service import replay_capsule
from stella_core.evidence.verify import Report, verify_capsule
from stella_core.promotions.decision import replay as replay_decision
from tests.support.evidence_helpers import rewrite, without_packet
from tests.support.memory_ledger import MemoryLedger, entry


def test_offline_verification_loads_no_database_driver() -> None:
    """An auditor's laptop verifies and replays a capsule with the core alone."""
    code = (
        "import sys\n"
        "import stella_core.evidence.verify, stella_core.evidence.replay\n"
        "from stella_core.evidence.chain import chain_hash\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'psycopg', 'sqlalchemy'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


# ------------------------------------------------------------------------------- the manifest
@pytest.fixture
def ledger() -> MemoryLedger:
    ledger = MemoryLedger()
    bob = ledger.approve("bob")
    carol = ledger.approve("carol")
    ledger.decide([entry("bob", bob), entry("carol", carol)])
    return ledger


def problems(report: Report) -> list[tuple[str | None, str, str]]:
    return [(p.packet, p.check, p.message) for p in report.problems]


def test_an_honest_capsule_verifies_and_is_built_byte_for_byte_again(ledger) -> None:
    files = ledger.files()
    assert capsule.MANIFEST_SIGNATURE in files
    report = verify_capsule(files, [ledger.orchestrator.public_key()])
    assert report.ok, report.to_json()
    assert report.checked["signatures"] == len(ledger.packets) + 1  # and the manifest
    # The manifest's signature is deterministic (RFC 6979): the same capsule, the same bytes.
    assert ledger.files() == files


def test_the_manifest_signs_every_file_but_sha256sums_and_itself(ledger) -> None:
    files = ledger.files()
    bundle = json.loads(files[capsule.MANIFEST_SIGNATURE])
    signed = verify_bundle(bundle, [ledger.orchestrator.public_key()])
    assert signed.predicate_type == capsule.MANIFEST_V1
    listed = {s["name"]: s["digest"]["sha256"] for s in signed.statement["subject"]}
    assert listed == {
        name: hashlib.sha256(body).hexdigest()
        for name, body in files.items()
        if name not in ("SHA256SUMS", capsule.MANIFEST_SIGNATURE)
    }
    # `sha256sum -c SHA256SUMS` still covers every file, the signature too.
    assert capsule.MANIFEST_SIGNATURE in files["SHA256SUMS"].decode()


def test_an_extra_file_listed_in_sha256sums_is_a_problem(ledger) -> None:
    files = ledger.files()
    extra = "inputs/sha256/" + "e" * 64
    tampered = rewrite(files, extra, b'{"approvals": []}', fix_sums=True)
    report = verify_capsule(tampered, [ledger.orchestrator.public_key()])
    found = problems(report)
    assert (None, "digests", f"{extra} is not in the signed manifest") in found
    assert (
        None,
        "digests",
        f"SHA256SUMS names {extra}, which the signed manifest does not",
    ) in found


def test_a_file_outside_the_manifest_is_a_problem(ledger) -> None:
    files = {**ledger.files(), "notes.txt": b"trust me"}
    report = verify_capsule(files, [ledger.orchestrator.public_key()])
    found = problems(report)
    assert (None, "digests", "notes.txt is not in the signed manifest") in found
    assert (None, "digests", "notes.txt is not listed in SHA256SUMS") in found


def test_a_packet_removed_consistently_is_missing_from_the_signed_manifest(ledger) -> None:
    """Its bundle, proof, manifest entry and SHA256SUMS line all gone; the signature kept."""
    bob = ledger.packets[1]  # the key packet comes first
    assert bob.type == "approval"
    removed = without_packet(ledger.files(), bob.seq)
    report = verify_capsule(removed, [ledger.orchestrator.public_key()])
    found = problems(report)
    name = capsule.packet_file(bob.seq)
    assert (
        f"seq {bob.seq}",
        "digests",
        f"{name} is in the signed manifest but not in the archive",
    ) in found
    assert any(p[2].startswith("manifest.json does not match") for p in found)


def test_a_manifest_signed_by_another_key_is_a_problem(ledger) -> None:
    forger = SigningKey.generate()
    files = ledger.files(signer=forger)
    report = verify_capsule(files, [ledger.orchestrator.public_key()])
    [problem] = report.problems
    assert (problem.packet, problem.check) == (None, "signatures")
    assert problem.message.startswith("the manifest signature: unknown signer")
    # Nor may a personal key the orchestrator vouched for sign it.
    files = ledger.files(signer=ledger.people["bob"])
    report = verify_capsule(files, [ledger.orchestrator.public_key()])
    assert [(p.check, p.message[:34]) for p in report.problems] == [
        ("signatures", "the manifest signature: unknown si")
    ]


def test_a_capsule_without_a_signed_manifest_is_a_problem(ledger) -> None:
    files = ledger.files(signed=False)
    report = verify_capsule(files, [ledger.orchestrator.public_key()])
    assert [(p.check, p.message) for p in report.problems] == [
        (
            "signatures",
            "manifest.sigstore.json is missing: nothing signed says which files the capsule holds",
        )
    ]
    # The live ledger's own check builds its capsule in memory and asks for none.
    assert verify_capsule(
        files, [ledger.orchestrator.public_key()], require_signed_manifest=False
    ).ok


# ------------------------------------------------------------------------------- approvals
def test_an_honest_decision_with_its_named_approvals_verifies_and_replays(ledger) -> None:
    files = ledger.files()
    report = verify_capsule(files, [ledger.orchestrator.public_key()])
    assert report.ok, report.to_json()
    assert report.approval_gaps == []
    result = replay_capsule(files, [ledger.orchestrator.public_key()], decisions=replay_decision)
    assert result["same"], result
    # The same in forked processes, as the CLI checks large capsules.
    many = verify_capsule(
        files, [ledger.orchestrator.public_key()], jobs=2, parallel_from=1, keep_verified=False
    )
    assert many.to_json() == report.to_json()


def _decision_without(ledger: MemoryLedger, name: str) -> tuple[str, str, str]:
    """(decision id, the approval's digest, its id) after `name`'s approval left the capsule."""
    approval = next(p for p in ledger.packets if p.type == "approval" and name in p.actor)
    decision = next(p for p in ledger.packets if p.type == "vsa")
    return decision.id, "sha256:" + hashlib.sha256(approval.bundle).hexdigest(), approval.id


def test_an_approval_left_out_of_a_signed_capsule_is_named_and_replay_differs(ledger) -> None:
    """An exporter holding the orchestrator key leaves bob's approval out and signs what is
    left: every file matches the signed manifest, yet the decision counted bob."""
    decision, digest, approval = _decision_without(ledger, "bob")
    seq = next(p.seq for p in ledger.packets if p.id == approval)
    files = ledger.files(leave_out=[seq])
    report = verify_capsule(files, [ledger.orchestrator.public_key()])
    assert problems(report) == [
        (
            decision,
            "digests",
            f"its inputs count bob's approval {digest}, which is not in the capsule",
        )
    ]
    result = replay_capsule(files, [ledger.orchestrator.public_key()], decisions=replay_decision)
    assert result["same"] is False
    assert result["differences"] == [
        {
            "packet": decision,
            "kind": "approval",
            "name": "bob",
            "recorded": digest,
            "replayed": "is not in the capsule",
        }
    ]


def test_an_approval_removed_consistently_is_named_twice(ledger) -> None:
    """The bundle, proof, manifest entry and SHA256SUMS line removed, the signature kept: the
    signed manifest misses the file and the decision misses the approval."""
    decision, digest, approval = _decision_without(ledger, "carol")
    seq = next(p.seq for p in ledger.packets if p.id == approval)
    report = verify_capsule(without_packet(ledger.files(), seq), [ledger.orchestrator.public_key()])
    found = problems(report)
    assert (
        decision,
        "digests",
        f"its inputs count carol's approval {digest}, which is not in the capsule",
    ) in found
    assert any(m.endswith("is in the signed manifest but not in the archive") for *_, m in found)


def test_a_counted_approval_must_be_signed_by_the_person_it_names() -> None:
    ledger = MemoryLedger()
    carol = ledger.person("carol")
    forged = ledger.approve("bob", signer=carol, actor="carol")  # an approval in bob's name
    ledger.decide([entry("bob", forged)])
    report = verify_capsule(ledger.files(), [ledger.orchestrator.public_key()])
    [problem] = report.problems
    assert (problem.packet, problem.check) == (ledger.packets[-1].id, "signatures")
    assert f"is packet {forged.id}, but it is signed with carol's key" in problem.message
    assert [(g.by, g.decision) for g in report.approval_gaps] == [("bob", ledger.packets[-1].id)]


def test_a_counted_approval_must_be_about_the_same_promotion() -> None:
    ledger = MemoryLedger()
    other = ledger.approve("bob", promotion_id=str(uuid.UUID(int=8)))
    rejection = ledger.approve("carol", decision="rejected")
    ledger.decide([entry("bob", other), entry("carol", rejection)])
    report = verify_capsule(ledger.files(), [ledger.orchestrator.public_key()])
    messages = [p.message for p in report.problems]
    assert len(messages) == 2, messages
    assert f"it is about promotion {uuid.UUID(int=8)}" in messages[0]
    assert "it says rejected" in messages[1]


def test_a_counted_approval_must_be_an_approval_that_verifies() -> None:
    ledger = MemoryLedger()
    ledger.person("bob")
    key_packet = ledger.packets[-1]
    stranger = ledger.approve("dave", signer=SigningKey.generate())
    ledger.decide([entry("bob", key_packet), entry("dave", stranger)])
    report = verify_capsule(ledger.files(), [ledger.orchestrator.public_key()])
    decision = ledger.packets[-1].id
    found = problems(report)
    assert (decision, "signatures", found[-2][2]) in found
    assert f"is packet {key_packet.id}, a key packet, not an approval" in found[-2][2]
    assert f"does not verify (packet {stranger.id})" in found[-1][2]
    assert (stranger.id, "signatures") in [(p, c) for p, c, _ in found]


def test_legacy_entries_name_no_packet_and_uncounted_ones_need_only_be_present() -> None:
    ledger = MemoryLedger()
    elsewhere = ledger.approve("bob", promotion_id=str(uuid.UUID(int=8)))
    gone = ledger.approve("carol")
    ledger.decide(
        [
            entry("erin", None),  # from before decisions named their packets
            entry("bob", elsewhere, counted=False),  # not counted: not held to the promotion
            entry("carol", gone, counted=False),
        ]
    )
    report = verify_capsule(ledger.files(leave_out=[gone.seq]), [ledger.orchestrator.public_key()])
    assert [(p.check, p.message.split(",")[0]) for p in report.problems] == [
        (
            "digests",
            f"its inputs name carol's approval sha256:{hashlib.sha256(gone.bundle).hexdigest()}",
        )
    ]


# ------------------------------------------------------------------------------- ledger rows
def test_each_row_is_held_to_its_bundles_signer() -> None:
    """A row names the key that signed its bundle, and a person's packet was appended by that
    person; the same bundle twice is a copy."""
    ledger = MemoryLedger()
    bob = ledger.approve("bob")
    carol = ledger.person("carol")
    copy = ledger.row(bob.predicate_type, bob.bundle, carol.key_id, "carol")
    report = verify_capsule(ledger.files(), [ledger.orchestrator.public_key()])
    assert [(p.packet, p.check, p.message) for p in report.problems] == [
        (
            copy.id,
            "signatures",
            f"packet #{copy.seq}'s row names signer {carol.key_id[:16]}…, but its bundle is "
            f"signed with key {ledger.people['bob'].key_id[:16]}… (bob's)",
        ),
        (
            copy.id,
            "signatures",
            f"packet #{copy.seq} was appended by carol but is signed with bob's key",
        ),
        (
            copy.id,
            "digests",
            f"packet #{copy.seq} holds the same bundle as packet {bob.id}: a copy",
        ),
    ]
