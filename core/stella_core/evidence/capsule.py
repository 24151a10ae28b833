"""Decision capsules: the deterministic export archive an auditor verifies without us.

Layout (every path under `capsule/`):

    README.md                         how to verify: stella, cosign, or nothing but openssl
    manifest.json                     what was selected and what each file is (a table of
                                      contents: the verifier checks it against what is signed)
    manifest.sigstore.json            the signed manifest: a Sigstore bundle of an in-toto
                                      statement by the orchestrator key whose subjects are every
                                      other file and its SHA-256 (all but SHA256SUMS and itself)
    packets/<seq>.sigstore.json       Sigstore bundle v0.3, bytes exactly as stored in the ledger
    inputs/sha256/<hex>               every document a packet references by digest
    keys/<key id>.pem                 every public key that signed a packet or the checkpoint
    ledger/chain.json                 the ledger's chain links from seq 1 to the checkpoint
    ledger/checkpoint.txt             signed C2SP checkpoint covering every selected packet
    ledger/proofs/<seq>.json          RFC 9162 inclusion proof of each selected packet
    SHA256SUMS                        `sha256sum -c` over every other file

The archive is a ustar tar with entries sorted by name, mode 0644, owner 0/0 and time 0, and
the content holds no export time: exporting the same selection twice gives the same bytes. The
manifest is signed with an RFC 6979 deterministic nonce for that reason (every other signature
in a capsule is an existing one, copied as stored).
Reading is defensive, as an archive is untrusted input: regular files only, no absolute or
parent paths, bounded sizes.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stella_core.crypto.keys import SigningKey
from stella_core.errors import DefinitionError, StellaError
from stella_core.evidence.merkle import MerkleTree
from stella_core.evidence.packets import bundle_bytes, canonical_json, sign_statement, statement
from stella_core.evidence.predicates import PREDICATE_BASE

FORMAT = "stella-evidence-capsule/v1"
ROOT = "capsule"
MANIFEST_SIGNATURE = "manifest.sigstore.json"
# The signed manifest's predicate type: not a packet type (no ledger row ever has it).
MANIFEST_V1 = f"{PREDICATE_BASE}/capsule-manifest/v1"
# The two files the signed manifest cannot list: the one that signs it, and SHA256SUMS (which
# lists the signature too, for `sha256sum -c`).
UNSIGNED_FILES = frozenset({"SHA256SUMS", MANIFEST_SIGNATURE})
MAX_MEMBER_BYTES = 64 * 1024 * 1024
MAX_TOTAL_BYTES = 1024 * 1024 * 1024
MAX_MEMBERS = 1_000_000


@dataclass(frozen=True, slots=True)
class CapsulePacket:
    seq: int
    id: str
    type: str
    predicate_type: str
    bundle: bytes
    signer_key_id: str
    actor: str
    created_at: str
    release: str | None = None
    environment: str | None = None
    promotion_id: str | None = None
    run_id: str | None = None


@dataclass(frozen=True, slots=True)
class CapsuleKey:
    key_id: str
    owner_kind: str
    owner: str
    pem: bytes
    registered_at: str


def packet_file(seq: int) -> str:
    return f"packets/{seq:08d}.sigstore.json"


def proof_file(seq: int) -> str:
    return f"ledger/proofs/{seq:08d}.json"


def input_file(digest: str) -> str:
    return f"inputs/sha256/{digest.removeprefix('sha256:')}"


def key_file(key_id: str) -> str:
    return f"keys/{key_id}.pem"


def _json_bytes(value: Any) -> bytes:
    # Canonical, so the same content always gives the same bytes; a final newline for humans.
    return canonical_json(value) + b"\n"


def build(
    *,
    origin: str,
    selection: Mapping[str, Any],
    packets: Sequence[CapsulePacket],
    chain: Sequence[tuple[int, str, str, str]],
    inputs: Mapping[str, tuple[str, bytes]],
    keys: Sequence[CapsuleKey],
    checkpoint_note: str,
    checkpoint_size: int,
    allow_uncovered: bool = False,
    signer: SigningKey | None = None,
) -> dict[str, bytes]:
    """The capsule's files (relative to `capsule/`). `chain` holds (seq, bundle digest, prev hash,
    hash) from seq 1, in order, at least up to the checkpoint. With `allow_uncovered` (the live
    ledger's own check) packets after the checkpoint go in without a proof. `signer` (the
    orchestrator key) signs the manifest; only the live ledger's own check, which builds and
    reads the files in one process, goes without."""
    if len(chain) < checkpoint_size:
        raise DefinitionError(
            f"the chain has {len(chain)} links but the checkpoint covers {checkpoint_size}"
        )
    tree = MerkleTree.from_leaves(bytes.fromhex(link[3]) for link in chain[:checkpoint_size])
    files: dict[str, bytes] = {}
    for packet in packets:
        files[packet_file(packet.seq)] = packet.bundle
        if packet.seq > checkpoint_size:
            if allow_uncovered:
                continue
            raise DefinitionError(f"packet {packet.seq} is not covered by the checkpoint")
        proof = tree.inclusion_proof(packet.seq - 1, checkpoint_size)
        files[proof_file(packet.seq)] = _json_bytes(
            {
                "seq": packet.seq,
                "leafIndex": packet.seq - 1,
                "treeSize": checkpoint_size,
                "hashes": [h.hex() for h in proof],
            }
        )
    for digest, (_, body) in inputs.items():
        files[input_file(digest)] = body
    for key in keys:
        files[key_file(key.key_id)] = key.pem
    files["ledger/chain.json"] = _json_bytes(
        [{"seq": s, "bundleDigest": d, "prevHash": p, "hash": h} for s, d, p, h in chain]
    )
    if checkpoint_note:
        files["ledger/checkpoint.txt"] = checkpoint_note.encode("utf-8")
    manifest = {
        "format": FORMAT,
        "origin": origin,
        "selection": dict(selection),
        "checkpoint": {"file": "ledger/checkpoint.txt", "treeSize": checkpoint_size},
        "packets": [_manifest_packet(p) for p in sorted(packets, key=lambda p: p.seq)],
        "inputs": [
            {"digest": d, "mediaType": m, "file": input_file(d)}
            for d, (m, _) in sorted(inputs.items())
        ],
        "keys": [
            {
                "keyId": k.key_id,
                "ownerKind": k.owner_kind,
                "owner": k.owner,
                "registeredAt": k.registered_at,
                "file": key_file(k.key_id),
            }
            for k in sorted(keys, key=lambda k: k.key_id)
        ],
    }
    files["manifest.json"] = _json_bytes(manifest)
    files["README.md"] = readme(origin, selection, len(packets)).encode("utf-8")
    if signer is not None:
        files[MANIFEST_SIGNATURE] = signed_manifest(files, origin, selection, signer)
    files["SHA256SUMS"] = sha256sums(files)
    return files


def signed_manifest(
    files: Mapping[str, bytes], origin: str, selection: Mapping[str, Any], signer: SigningKey
) -> bytes:
    """The manifest signature's bundle bytes: an in-toto statement whose subjects are every file
    (path and SHA-256) but SHA256SUMS and the signature itself, so a file added, removed or
    changed after signing shows. Deterministic (RFC 6979), so exports stay byte-identical."""
    subjects = [
        (name, hashlib.sha256(body).hexdigest())
        for name, body in files.items()
        if name not in UNSIGNED_FILES
    ]
    signed = statement(
        subjects, MANIFEST_V1, {"format": FORMAT, "origin": origin, "selection": dict(selection)}
    )
    return bundle_bytes(sign_statement(signed, signer, deterministic=True))


def _manifest_packet(packet: CapsulePacket) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "seq": packet.seq,
        "id": packet.id,
        "type": packet.type,
        "predicateType": packet.predicate_type,
        "file": packet_file(packet.seq),
        "proof": proof_file(packet.seq),
        "signerKeyId": packet.signer_key_id,
        "actor": packet.actor,
        "createdAt": packet.created_at,
    }
    for name, value in (
        ("release", packet.release),
        ("environment", packet.environment),
        ("promotionId", packet.promotion_id),
        ("runId", packet.run_id),
    ):
        if value is not None:
            entry[name] = value
    return entry


def sha256sums(files: Mapping[str, bytes]) -> bytes:
    """`sha256sum` format: `<hex>  <path>` per file, sorted by path, SHA256SUMS itself left out."""
    lines = [
        f"{hashlib.sha256(body).hexdigest()}  {name}\n"
        for name, body in sorted(files.items())
        if name != "SHA256SUMS"
    ]
    return "".join(lines).encode("utf-8")


def write_tar(
    files: Mapping[str, bytes],
    out: Path,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> str:
    """Write the deterministic archive atomically; returns its `sha256:` digest."""
    buffer = io.BytesIO()
    names = sorted(files)
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for done, name in enumerate(names, 1):
            body = files[name]
            info = tarfile.TarInfo(f"{ROOT}/{name}")
            info.size = len(body)
            info.mode = 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(body))
            if progress is not None:
                progress(done, len(names))
    data = buffer.getvalue()
    if out.is_dir():
        raise CapsuleError(f"{out} is a directory; name a file to write the capsule to")
    tmp = out.with_name(f".{out.name}.partial")
    try:
        tmp.write_bytes(data)
        tmp.replace(out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)  # nothing half-written is left behind
        raise StellaError(f"cannot write {out}: {exc.strerror or exc}") from exc
    return "sha256:" + hashlib.sha256(data).hexdigest()


class CapsuleError(DefinitionError):
    """The archive cannot be read as a capsule at all."""


def read_tar(path: Path) -> dict[str, bytes]:
    """The capsule's files, relative to `capsule/`. Refuses anything but plain files under the
    root, absolute or `..` paths, duplicates and oversized members."""
    try:
        tar = tarfile.open(path, mode="r:*")  # noqa: SIM115 (closed by the `with` below)
    except (OSError, tarfile.TarError) as exc:
        raise CapsuleError(f"{path} is not a readable tar archive: {exc}") from exc
    files: dict[str, bytes] = {}
    total = 0
    with tar:
        for count, member in enumerate(tar, 1):
            if count > MAX_MEMBERS:
                raise CapsuleError(f"{path} holds more than {MAX_MEMBERS} entries")
            name = member.name
            if member.isdir():
                continue
            if not member.isreg():
                raise CapsuleError(f"archive entry {name!r} is not a regular file")
            parts = name.split("/")
            if name.startswith("/") or ".." in parts or parts[0] != ROOT or len(parts) < 2:
                raise CapsuleError(f"archive entry {name!r} is outside {ROOT}/")
            relative = "/".join(parts[1:])
            if relative in files:
                raise CapsuleError(f"archive entry {name!r} appears twice")
            if member.size > MAX_MEMBER_BYTES:
                raise CapsuleError(f"archive entry {name!r} is larger than {MAX_MEMBER_BYTES}")
            total += member.size
            if total > MAX_TOTAL_BYTES:
                raise CapsuleError(f"{path} unpacks to more than {MAX_TOTAL_BYTES} bytes")
            handle = tar.extractfile(member)
            if handle is None:
                raise CapsuleError(f"archive entry {name!r} cannot be read")
            files[relative] = handle.read()
    if not files:
        raise CapsuleError(f"{path} holds no {ROOT}/ files")
    return files


def parse_json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise DefinitionError(f"{what} is not JSON: {exc}") from exc


def readme(origin: str, selection: Mapping[str, Any], count: int) -> str:
    chosen = ", ".join(f"{k}={v}" for k, v in sorted(selection.items())) or "everything"
    return (
        README.replace("{manifest_type}", MANIFEST_V1)
        .replace("{origin}", origin)
        .replace("{selection}", chosen)
        .replace("{count}", str(count))
    )


README = """# Evidence capsule

Ledger `{origin}`, selection: {selection} ({count} packets).

Each packet is a Sigstore bundle v0.3 (`packets/*.sigstore.json`): a DSSE envelope whose payload
is an in-toto Statement v1 in RFC 8785 canonical JSON, signed with ECDSA P-256 / SHA-256. Every
document a packet references by digest is under `inputs/sha256/`. `ledger/` proves the packets
are in the append-only ledger: the chain links, a signed checkpoint (C2SP signed note over an
RFC 9162 Merkle tree whose leaves are the chain hashes) and one inclusion proof per packet.
`manifest.sigstore.json` is the orchestrator's signature over the list of every file in this
capsule and its SHA-256 (the subjects of its statement): nothing can be added to or removed
from the capsule without it showing, and `SHA256SUMS` must list exactly those files.

Do not trust the keys in `keys/` because they came in this archive: compare their fingerprints
with the ones you were given (`openssl pkey -pubin -in keys/ID.pem -outform DER | openssl dgst
-sha256` prints the key id), or pass your own copies.

## 1. With Stella (no database, no network)

    stella evidence verify capsule.tar --trusted-key orchestrator.pem --trusted-key bob.pem

It checks the signed manifest, every signature, every file and input digest, that each
decision's counted approvals are here and signed by their approvers, the hash chain, the
checkpoint and the inclusion proofs, and lists every problem it finds.
`stella evidence replay capsule.tar` re-evaluates each decision from its recorded inputs.

## 2. With cosign

For one packet (use a cosign release with PR #4613 so nothing is fetched; the statement's
subjects are image digests, so claims are checked against one of them):

    cosign verify-blob-attestation --new-bundle-format --key keys/KEY_ID.pem \\
      --bundle packets/00000001.sigstore.json --type PREDICATE_TYPE \\
      --digest SUBJECT_SHA256_HEX --digestAlg sha256 \\
      --insecure-ignore-tlog=true --use-signed-timestamps=false

The signed manifest the same way: `--bundle manifest.sigstore.json --type
{manifest_type}` and the SHA-256 of any file it lists (`manifest.json`, say) as
`--digest`.

## 3. With nothing but a shell and openssl

Run from the directory that holds this README (and nothing else). It checks the file digests
and that SHA256SUMS lists every file, then the signed manifest and that SHA256SUMS lists
exactly the files it signs, then rebuilds each packet's DSSE
pre-authentication encoding (PAE) and checks its signature, then checks the checkpoint's
signature. Replace `keys/$key.pem` by your own copy of the key to trust only that.

```sh
set -eu
work=$(mktemp -d)
while read -r sum file; do
  got=$(openssl dgst -sha256 -r "$file" | cut -d' ' -f1)
  [ "$got" = "$sum" ] || { echo "DIGEST MISMATCH: $file"; exit 1; }
done < SHA256SUMS
echo "SHA256SUMS: all files match"
find . -type f ! -name SHA256SUMS | sed 's|^\\./||' | LC_ALL=C sort > "$work/present"
cut -c 67- SHA256SUMS | LC_ALL=C sort | cmp -s - "$work/present" \\
  || { echo "FILES DIFFER FROM SHA256SUMS"; exit 1; }
check_bundle() {  # a Sigstore bundle ($1): rebuild the PAE, check the signature; $2 names it
  sed -E 's/.*"payload":"([^"]*)".*/\\1/' "$1" | openssl base64 -d -A > "$work/$2.payload"
  sed -E 's/.*"sig":"([^"]*)".*/\\1/' "$1" | openssl base64 -d -A > "$work/$2.sig"
  key=$(sed -E 's/.*"keyid":"([0-9a-f]{64})".*/\\1/' "$1")
  size=$(wc -c < "$work/$2.payload" | tr -d ' ')
  { printf 'DSSEv1 28 application/vnd.in-toto+json %s ' "$size"; cat "$work/$2.payload"; } \\
    > "$work/$2.pae"
  printf '%s: ' "$2"
  openssl dgst -sha256 -verify "keys/$key.pem" -signature "$work/$2.sig" "$work/$2.pae"
}
# The signed manifest's subjects, as `sha256sum` lines, are SHA256SUMS without its own line.
check_bundle manifest.sigstore.json manifest
grep -o '"digest":{"sha256":"[0-9a-f]*"},"name":"[^"]*"' "$work/manifest.payload" \\
  | sed -E 's/^.*"sha256":"([0-9a-f]+)".*"name":"([^"]*)"$/\\1  \\2/' > "$work/manifest.sums"
grep -v '  manifest.sigstore.json$' SHA256SUMS | cmp -s - "$work/manifest.sums" \\
  || { echo "SHA256SUMS DIFFERS FROM THE SIGNED MANIFEST"; exit 1; }
echo "manifest: SHA256SUMS lists exactly the signed files"
for bundle in packets/*.sigstore.json; do
  check_bundle "$bundle" "$(basename "$bundle" .sigstore.json)"
done
# The checkpoint: the note body is everything before the blank line; the signature line's
# base64 holds a 4-byte key hash then the DER signature.
sed '/^$/,$d' ledger/checkpoint.txt > "$work/checkpoint.body"
sed '1,/^$/d' ledger/checkpoint.txt | head -n 1 | cut -d' ' -f3 | openssl base64 -d -A \\
  | tail -c +5 > "$work/checkpoint.sig"
for key in keys/*.pem; do
  if openssl dgst -sha256 -verify "$key" -signature "$work/checkpoint.sig" \\
      "$work/checkpoint.body" > /dev/null 2>&1; then
    echo "checkpoint: Verified OK with $key"
  fi
done
rm -r "$work"
```

The payload (`$work/NAME.payload`) is the statement itself: its `subject` lists the image digests
and its `predicate` the decision, run or approval. The decision record and the other inputs a
predicate names by digest are the files `inputs/sha256/<hex>`; `openssl dgst -sha256` on each
must print its name.
"""
