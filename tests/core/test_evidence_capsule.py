"""Decision capsules offline: built in memory as an export builds them, checked with no database."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from stella_core.crypto.keys import SigningKey
from stella_core.evidence import capsule
from stella_core.evidence.packets import verify_bundle
from stella_core.evidence.verify import Report, verify_capsule
from tests.support.evidence_helpers import rewrite
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
    files = ledger.files()
    bob = ledger.packets[1]  # the key packet comes first
    assert bob.type == "approval"
    removed = ledger.files(leave_out=[bob.seq], signed=False)
    removed[capsule.MANIFEST_SIGNATURE] = files[capsule.MANIFEST_SIGNATURE]
    removed["SHA256SUMS"] = capsule.sha256sums(removed)
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
