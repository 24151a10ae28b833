"""Tools that are not ours: sigstore-js (`@sigstore/verify`, pinned in tests/interop) verifies the
bundles of an exported capsule with the public key an auditor was given, and refuses a forgery."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from stella_core.evidence import capsule
from stella_core.evidence.service import Selection
from tests.support.evidence_helpers import emit_decision, emit_other_types, flip_base64_field

INTEROP = Path(__file__).parents[1] / "interop"


def sigstore_js(key: Path, bundles: list[Path]) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    assert node, "Node.js is installed by packaging/dev.sh"
    assert (INTEROP / "node_modules" / "@sigstore" / "verify").is_dir(), "run npm ci first"
    return subprocess.run(
        [node, str(INTEROP / "verify_bundles.mjs"), str(key), *map(str, bundles)],
        cwd=INTEROP,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_sigstore_js_verifies_our_bundles_and_refuses_a_forgery(world, tmp_path: Path) -> None:
    admin = world.open()
    emit_decision(admin)
    emit_other_types(admin)  # an approval signed by the admin's personal key among them
    files, _ = admin.evidence.capsule_files(Selection(release="shop-1"))
    keys = {k.owner_kind: k for k in admin.evidence.signing_keys()}
    orchestrator = tmp_path / "orchestrator.pem"
    orchestrator.write_bytes(keys["orchestrator"].public_key.pem())
    personal = tmp_path / "person.pem"
    personal.write_bytes(keys["person"].public_key.pem())
    by_signer: dict[str, list[Path]] = {"orchestrator": [], "person": []}
    for entry in capsule.parse_json(files["manifest.json"], "manifest")["packets"]:
        path = tmp_path / Path(entry["file"]).name
        path.write_bytes(files[entry["file"]])
        owner = "orchestrator" if entry["signerKeyId"] == keys["orchestrator"].key_id else "person"
        by_signer[owner].append(path)
    assert len(by_signer["orchestrator"]) >= 4
    assert len(by_signer["person"]) == 1  # the approval

    done = sigstore_js(orchestrator, by_signer["orchestrator"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("OK ") == len(by_signer["orchestrator"])
    done = sigstore_js(personal, by_signer["person"])
    assert done.returncode == 0, done.stdout + done.stderr

    # The approval against the orchestrator's key, and a forged payload: both refused.
    forged = tmp_path / "forged.sigstore.json"
    forged.write_bytes(flip_base64_field(by_signer["orchestrator"][0].read_bytes(), "payload"))
    refused = sigstore_js(orchestrator, [by_signer["person"][0], forged])
    assert refused.returncode == 1
    assert refused.stdout.count("FAIL ") == 2
    assert "SIGNATURE_ERROR" in refused.stdout
