"""Offline verification of a decision capsule: no database, no network, every problem reported.

Four checks, each counted in `checked`:
- `signatures`: the signed manifest and each packet's bundle verify against the trusted keys
  (the auditor's `--trusted-key` files, or else the keys the capsule carries, which the report
  says); each packet's bundle is signed with the key its ledger row names, and a packet signed
  with a person's key was appended by that person;
- `digests`: the archive holds exactly the files the signed manifest lists, with the digests it
  lists, and SHA256SUMS names no other; every file against SHA256SUMS; every input a signed
  predicate names by digest is present with that digest; every approval packet a decision's
  inputs name is present, and each one the decision counted is an approval about the same
  promotion, signed with the key of the person it names (a problem under `signatures`);
- `chain`: every link recomputes, links follow each other from seq 1 without a gap, and each
  packet's bundle is the one its link names;
- `checkpoints`: the checkpoint is signed by a trusted key, its root is the Merkle root of the
  chain, and each packet's inclusion proof leads to that root.

`manifest.json` is only a table of contents, which the signed manifest covers like every file.
The ledger's own verification (`stella evidence verify --ledger`) builds a capsule in memory and
runs this same code.
"""

from __future__ import annotations

import gc
import hashlib
import multiprocessing
import re
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson

from stella_core.crypto.keys import PublicKey
from stella_core.errors import StellaError
from stella_core.evidence.capsule import (
    FORMAT,
    MANIFEST_SIGNATURE,
    MANIFEST_V1,
    UNSIGNED_FILES,
    input_file,
    packet_file,
    proof_file,
)
from stella_core.evidence.chain import GENESIS, chain_hash
from stella_core.evidence.merkle import leaf_hash, level_path, tree_levels, verify_checkpoint
from stella_core.evidence.merkle import verify_inclusion_hash as inclusion_ok
from stella_core.evidence.packets import PacketError, VerifiedPacket, verify_bundle
from stella_core.evidence.predicates import (
    APPROVAL_V1,
    DECISION_RECORD_FIELD,
    KEY_V1,
    PREDICATE_NAMES,
    SLSA_VSA_V1,
    referenced_inputs,
)

CHECKS = ("signatures", "digests", "chain", "checkpoints")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HEX = "0123456789abcdef"
# An approvals entry's `decision` and the word its packet's predicate uses for it.
_DECIDED = {"approve": "approved", "reject": "rejected"}


@dataclass(frozen=True, slots=True)
class Problem:
    packet: str | None
    check: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"packet": self.packet, "check": self.check, "message": self.message}


@dataclass(frozen=True, slots=True)
class Seen:
    """What the checks across packets need of one packet in the capsule (small, as it crosses
    process boundaries). Everything but `label` and `seq` is None when its signature did not
    verify; the rest is read from its signed statement."""

    label: str
    seq: int
    predicate_type: str | None = None
    signer_key_id: str | None = None
    promotion_id: object = None
    environment: object = None
    decision: object = None
    approver: object = None
    approver_key: object = None
    subjects: tuple[str, ...] = ()
    record: str | None = None  # a decision's record, `sha256:<hex>`


@dataclass(frozen=True, slots=True)
class ApprovalGap:
    """An entry of a decision's approvals that the capsule does not back; replay shows it."""

    decision: str  # the decision packet's label
    by: str
    packet: str  # what the entry names
    reason: str


@dataclass
class Report:
    checked: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHECKS, 0))
    problems: list[Problem] = field(default_factory=list)
    trust: str = "trusted keys given"
    packets: int = 0
    verified: dict[str, VerifiedPacket] = field(default_factory=dict)  # packet id -> packet
    seen: dict[str, Seen] = field(default_factory=dict, repr=False)  # bundle digest -> packet
    approval_gaps: list[ApprovalGap] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, packet: str | None, check: str, message: str) -> None:
        self.problems.append(Problem(packet, check, message))

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": dict(self.checked),
            "problems": [p.to_json() for p in self.problems],
            "packets": self.packets,
            "trust": self.trust,
        }


def _load_json(files: Mapping[str, bytes], name: str) -> Any:
    body = files.get(name)
    if body is None:
        return None
    try:
        return orjson.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):  # orjson's error is a ValueError
        return None


def verify_capsule(
    files: Mapping[str, bytes],
    trusted: Sequence[PublicKey] | None = None,
    *,
    allow_uncovered: bool = False,
    jobs: int = 1,
    keep_verified: bool = True,
    parallel_from: int = 2000,
    require_signed_manifest: bool = True,
    owners: Mapping[str, tuple[str, str]] | None = None,
) -> Report:
    """Every check over a capsule's files. With `jobs` > 1 a capsule of at least `parallel_from`
    packets (below that, starting processes costs more than it saves) is checked in that many
    forked processes; `keep_verified=False` then saves sending the statements back when only
    the verdict is wanted. Without `require_signed_manifest` (the live ledger, whose capsule
    the verifier builds itself) a missing manifest signature is no problem. `owners` says whose
    each key is (`key id -> (owner kind, owner)`, as registered); without it, only the
    orchestrator's signed key packets in the capsule say it."""
    with _no_cycle_collection():
        return _verify_capsule(
            files,
            trusted,
            allow_uncovered,
            jobs,
            keep_verified,
            parallel_from,
            require_signed_manifest,
            dict(owners or {}),
        )


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Parsed packets are acyclic (reference counting frees them), but tens of thousands of kept
    statements make every cyclic collection walk them all again: about a third of a large
    capsule's verification time. Off while verifying (forked processes inherit that)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _verify_capsule(
    files: Mapping[str, bytes],
    trusted: Sequence[PublicKey] | None,
    allow_uncovered: bool,
    jobs: int,
    keep_verified: bool,
    parallel_from: int,
    require_signed_manifest: bool,
    owners: dict[str, tuple[str, str]],
) -> Report:
    report = Report()
    digests = _digests(files)
    summed = _check_sums(files, digests, report)
    keys = _keys(files, report)
    if trusted:
        trust = {k.key_id: k for k in trusted}
    else:
        trust = keys
        report.trust = (
            "keys carried in the archive (give trusted keys to check them against your own)"
        )
    signed = _signed_manifest(files, trust, report, require_signed_manifest)
    if signed is not None:
        _check_listing(files, digests, signed, summed, report)
    manifest = _load_json(files, "manifest.json")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        report.add(None, "digests", f"manifest.json is missing or not a {FORMAT} manifest")
        return report
    entries = manifest.get("packets")
    if not isinstance(entries, list):
        report.add(None, "digests", "manifest.json lists no packets")
        return report
    chain = _chain(files, report)
    roots = dict(trust)
    ctx = _Context(files, digests, chain, dict(trust), roots, owners, allow_uncovered)
    # Key endorsements first (by the manifest's word, which only orders the work: a mislabelled
    # entry can only make a packet fail, never pass); they widen the trust the others get.
    valid = [e for e in entries if isinstance(e, dict)]
    endorsements = [e for e in valid if e.get("type") == "key"]
    others = [e for e in valid if e.get("type") != "key"]
    packets: list[tuple[str, int]] = []
    for entry in endorsements:
        _check_entry(entry, ctx, report, packets)
    # The checkpoint before the other packets, so each packet's proof is checked with it (in
    # the forked processes too); endorsement proofs are checked once it is known.
    ctx.seal = _check_checkpoint(files, manifest, chain, ctx.trust, report, allow_uncovered)
    for label, seq in packets:
        _check_proof(label, seq, ctx, report)
    if jobs > 1 and len(others) >= parallel_from and _can_fork():
        _check_in_processes(others, ctx, report, packets, jobs, keep_verified)
    else:
        for entry in others:
            _check_entry(entry, ctx, report, packets)
    _check_copies(sorted(valid, key=_seq_order), ctx, report)
    _check_decisions(ctx, report)
    _check_chain(chain, report)
    return report


def _seq_order(entry: Mapping[str, Any]) -> int:
    seq = entry.get("seq")
    return seq if isinstance(seq, int) else 0


@dataclass
class _Context:
    files: Mapping[str, bytes]
    digests: Mapping[str, str]
    chain: Sequence[dict[str, Any]]
    trust: dict[str, PublicKey]
    roots: Mapping[str, PublicKey]
    owners: dict[str, tuple[str, str]]  # key id -> (owner kind, owner)
    allow_uncovered: bool = False
    seal: _Seal | None = None  # None: no per-packet proof checks (no usable checkpoint)


@dataclass(frozen=True, slots=True)
class _Seal:
    """The verified checkpoint the packets' inclusion proofs must lead to. When the chain
    rebuilds its root, `levels` holds that tree level by level in hex: the honest proof of each
    packet is then read off it, and a given proof verifies exactly when it equals it."""

    size: int
    root: bytes
    levels: list[list[str]] | None


def _check_entry(
    entry: Mapping[str, Any], ctx: _Context, report: Report, packets: list[tuple[str, int]]
) -> None:
    """One manifest entry: its bundle's signature and inputs, and its chain link."""
    seq = entry.get("seq")
    packet_id = str(entry.get("id")) if entry.get("id") is not None else None
    if not isinstance(seq, int) or seq < 1:
        report.add(packet_id, "digests", "manifest entry without a valid seq")
        return
    label = packet_id or f"seq {seq}"
    bundle_bytes = ctx.files.get(packet_file(seq))
    if bundle_bytes is None:
        report.add(label, "digests", f"packet #{seq} is listed but {packet_file(seq)} is missing")
        return
    report.packets += 1
    packets.append((label, seq))
    digest = "sha256:" + ctx.digests[packet_file(seq)]
    verified = _check_signature(label, seq, bundle_bytes, digest, entry, ctx.trust, report)
    if verified is None:
        report.seen[digest] = Seen(label, seq)
    else:
        report.verified[label] = verified
        report.seen[digest] = _seen(label, seq, verified)
        _check_row(label, seq, entry, verified, ctx.owners, report)
        _check_inputs(label, verified, ctx.files, ctx.digests, report)
        endorsed = _endorsed_key(label, verified, ctx.roots, report)
        if endorsed is not None:
            ctx.trust[endorsed.key_id] = endorsed
            ctx.owners.setdefault(endorsed.key_id, ("person", str(verified.predicate["owner"])))
    _check_link(label, seq, digest, ctx.chain, report)
    _check_proof(label, seq, ctx, report)


# A forked worker reads the capsule from here (inherited memory, nothing pickled on the way in).
_FORKED: dict[str, _Context] = {}


def _can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def _check_chunk(
    chunk: list[dict[str, Any]], keep_verified: bool
) -> tuple[Report, list[tuple[str, int]]]:
    ctx = _FORKED["capsule"]
    report = Report()
    packets: list[tuple[str, int]] = []
    for entry in chunk:
        _check_entry(entry, ctx, report, packets)
    if not keep_verified:
        report.verified = {}  # statements are only needed for replay; pickling them costs
    return report, packets


def _check_in_processes(
    entries: list[dict[str, Any]],
    ctx: _Context,
    report: Report,
    packets: list[tuple[str, int]],
    jobs: int,
    keep_verified: bool,
) -> None:
    """The per-packet checks over `jobs` forked processes (signature verification is most of a
    capsule's cost and is independent per packet). Results merge in manifest order."""
    size = -(-len(entries) // jobs)
    chunks = [entries[i : i + size] for i in range(0, len(entries), size)]
    _FORKED["capsule"] = ctx
    try:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            results = list(pool.map(_check_chunk, chunks, [keep_verified] * len(chunks)))
    finally:
        _FORKED.clear()
    for part, found in results:
        report.problems.extend(part.problems)
        for check, count in part.checked.items():
            report.checked[check] += count
        report.packets += part.packets
        report.verified.update(part.verified)
        report.seen.update(part.seen)
        packets.extend(found)


def _digests(files: Mapping[str, bytes]) -> dict[str, str]:
    """Every file's SHA-256 hex, computed once: SHA256SUMS, chain links and inputs reuse it."""
    return {name: hashlib.sha256(body).hexdigest() for name, body in files.items()}


def _signed_manifest(
    files: Mapping[str, bytes], roots: Mapping[str, PublicKey], report: Report, required: bool
) -> dict[str, str] | None:
    """`path -> sha256 hex` of every file the signed manifest lists, when a trusted key (never
    a personal key a packet vouched for) signed it; None, with the problem reported, otherwise."""
    body = files.get(MANIFEST_SIGNATURE)
    if body is None:
        if required:
            report.add(
                None,
                "signatures",
                f"{MANIFEST_SIGNATURE} is missing: nothing signed says which files the capsule "
                "holds",
            )
        return None
    report.checked["signatures"] += 1
    try:
        bundle = orjson.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        report.add(None, "signatures", f"{MANIFEST_SIGNATURE} is not JSON: {exc}")
        return None
    if not roots:
        report.add(None, "signatures", "the manifest: no trusted public key to check it with")
        return None
    try:
        verified = verify_bundle(bundle, roots)
    except PacketError as exc:
        report.add(None, "signatures", f"the manifest signature: {exc.message}")
        return None
    if verified.predicate_type != MANIFEST_V1:
        report.add(
            None,
            "signatures",
            f"{MANIFEST_SIGNATURE} signs a {verified.predicate_type} statement, not a manifest",
        )
        return None
    listed: dict[str, str] = {}
    for subject in verified.statement["subject"]:
        name = subject.get("name")
        if not isinstance(name, str) or name in listed or name in UNSIGNED_FILES:
            report.add(None, "digests", f"the signed manifest lists {name!r} twice or wrongly")
            continue
        listed[name] = subject["digest"]["sha256"]
    return listed


def _check_listing(
    files: Mapping[str, bytes],
    digests: Mapping[str, str],
    listed: Mapping[str, str],
    summed: set[str],
    report: Report,
) -> None:
    """The archive holds exactly the files the signed manifest lists, each with its digest, and
    SHA256SUMS names no file the manifest does not (an extra line there is not harmless: a
    reader of SHA256SUMS alone would take the file for part of the capsule)."""
    report.checked["digests"] += len(listed)
    for name in sorted(files):
        if name in UNSIGNED_FILES:
            continue
        expected = listed.get(name)
        if expected is None:
            report.add(_packet_of(name), "digests", f"{name} is not in the signed manifest")
        elif digests[name] != expected:
            report.add(
                _packet_of(name), "digests", f"{name} does not match its signed manifest digest"
            )
    for name in sorted(listed.keys() - files.keys()):
        report.add(
            _packet_of(name), "digests", f"{name} is in the signed manifest but not in the archive"
        )
    for name in sorted(summed - listed.keys() - UNSIGNED_FILES):
        report.add(
            _packet_of(name),
            "digests",
            f"SHA256SUMS names {name}, which the signed manifest does not",
        )


def _check_sums(files: Mapping[str, bytes], digests: Mapping[str, str], report: Report) -> set[str]:
    """Every file against SHA256SUMS; returns the names SHA256SUMS lists."""
    sums = files.get("SHA256SUMS")
    if sums is None:
        report.add(None, "digests", "SHA256SUMS is missing")
        return set()
    # The usual case first: SHA256SUMS is exactly what `sha256sum` would print for these files
    # (sorted, two spaces), which one comparison settles; anything else is read line by line.
    expected = "".join(
        f"{digests[name]}  {name}\n" for name in sorted(files) if name != "SHA256SUMS"
    )
    if sums == expected.encode("utf-8"):
        report.checked["digests"] += len(files) - 1
        return set(files) - {"SHA256SUMS"}
    listed: dict[str, str] = {}
    for number, line in enumerate(sums.decode("utf-8", "replace").splitlines(), 1):
        # `<64 lowercase hex><space><space or *><name>`, checked with string methods: a regex
        # per line shows in a 10,000-packet capsule.
        digest, mode, name = line[:64], line[64:66], line[66:]
        if mode not in ("  ", " *") or not name or len(digest) != 64 or digest.strip(_HEX):
            report.add(None, "digests", f"SHA256SUMS line {number} is malformed")
            continue
        listed[name] = digest
    report.checked["digests"] += len(listed)
    for name, expected in listed.items():
        if digests.get(name) != expected:
            problem = (
                "does not match its SHA256SUMS digest"
                if name in files
                else ("is listed in SHA256SUMS but missing")
            )
            report.add(_packet_of(name), "digests", f"{name} {problem}")
    for name in sorted(set(files) - set(listed) - {"SHA256SUMS"}):
        report.add(_packet_of(name), "digests", f"{name} is not listed in SHA256SUMS")
    return set(listed)


def _packet_of(name: str) -> str | None:
    # SHA256SUMS problems name the packet file's seq; the per-packet checks name the id.
    match = re.fullmatch(r"packets/0*([0-9]+)\.sigstore\.json", name)
    return f"seq {match[1]}" if match else None


def _keys(files: Mapping[str, bytes], report: Report) -> dict[str, PublicKey]:
    keys: dict[str, PublicKey] = {}
    for name in sorted(files):
        if not (name.startswith("keys/") and name.endswith(".pem")):
            continue
        try:
            key = PublicKey.from_pem(files[name])
        except StellaError as exc:
            report.add(None, "signatures", f"{name} is not a P-256 public key: {exc}")
            continue
        if name != f"keys/{key.key_id}.pem":
            report.add(None, "signatures", f"{name} holds key {key.key_id}, not the one it names")
            continue
        keys[key.key_id] = key
    return keys


def _check_signature(
    label: str,
    seq: int,
    bundle_bytes: bytes,
    digest: str,
    entry: Mapping[str, Any],
    trust: Mapping[str, PublicKey],
    report: Report,
) -> VerifiedPacket | None:
    report.checked["signatures"] += 1
    try:
        bundle = orjson.loads(bundle_bytes)  # strict UTF-8 JSON, as RFC 8259 §8.1 asks
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        report.add(label, "signatures", f"packet #{seq} is not JSON: {exc}")
        return None
    if not trust:
        report.add(label, "signatures", f"packet #{seq}: no trusted public key to check it with")
        return None
    try:
        verified = verify_bundle(bundle, trust, raw_digest=digest)
    except PacketError as exc:
        report.add(label, "signatures", f"packet #{seq}: {exc.message}")
        return None
    listed = entry.get("predicateType")
    if listed is not None and listed != verified.predicate_type:
        report.add(
            label,
            "signatures",
            f"packet #{seq} is listed as {listed!r} but its signed type is "
            f"{verified.predicate_type!r}",
        )
    if verified.predicate_type not in PREDICATE_NAMES:
        report.add(label, "signatures", f"packet #{seq} has unknown type {verified.predicate_type}")
    return verified


def _endorsed_key(
    label: str, verified: VerifiedPacket, roots: Mapping[str, PublicKey], report: Report
) -> PublicKey | None:
    """The personal key a key packet vouches for, when a root-trusted key signed it."""
    if verified.predicate_type != KEY_V1:
        return None
    if verified.signer_key_id not in roots:
        report.add(label, "signatures", "a key endorsement not signed by a trusted key is ignored")
        return None
    predicate = verified.predicate
    try:
        key = PublicKey.from_pem(str(predicate.get("publicKey", "")).encode("ascii"))
    except (StellaError, UnicodeEncodeError):
        report.add(label, "signatures", "the endorsed public key cannot be read")
        return None
    if key.key_id != predicate.get("keyId") or verified.subject_digests() != [
        f"sha256:{key.key_id}"
    ]:
        report.add(label, "signatures", "the endorsement names another key than it holds")
        return None
    if not isinstance(predicate.get("owner"), str) or predicate.get("ownerKind") != "person":
        report.add(label, "signatures", "the endorsement does not say which person owns the key")
        return None
    return key


def _check_inputs(
    label: str,
    verified: VerifiedPacket,
    files: Mapping[str, bytes],
    digests: Mapping[str, str],
    report: Report,
) -> None:
    for name, digest in referenced_inputs(verified.predicate_type, verified.predicate):
        report.checked["digests"] += 1
        path = input_file(digest)
        if path not in files:
            report.add(label, "digests", f"input {name} ({digest}) is not in the capsule")
        elif "sha256:" + digests[path] != digest:
            report.add(label, "digests", f"input {name} does not match its digest {digest}")


def _check_row(
    label: str,
    seq: int,
    entry: Mapping[str, Any],
    verified: VerifiedPacket,
    owners: Mapping[str, tuple[str, str]],
    report: Report,
) -> None:
    """The ledger row's word (`signerKeyId`, and `actor`: who appended it) against the bundle's:
    the row names the key that signed the bundle, and a packet signed with a person's key was
    appended by that person (an orchestrator-signed one by anyone). The database only checks
    that the row's key may be used by its appender, not that the bundle is signed with it: a
    row holding `{}` or another person's bundle shows here."""
    signer = verified.signer_key_id
    owner = owners.get(signer)
    whose = f" ({owner[1]}'s)" if owner is not None else ""
    named = entry.get("signerKeyId")
    if isinstance(named, str) and named != signer:
        report.add(
            label,
            "signatures",
            f"packet #{seq}'s row names signer {named[:16]}…, but its bundle is signed with key "
            f"{signer[:16]}…{whose}",
        )
    actor = entry.get("actor")
    if owner is not None and owner[0] == "person" and isinstance(actor, str) and actor != owner[1]:
        report.add(
            label,
            "signatures",
            f"packet #{seq} was appended by {actor} but is signed with {owner[1]}'s key",
        )


def _check_copies(entries: Sequence[Mapping[str, Any]], ctx: _Context, report: Report) -> None:
    """No bundle twice: every honest packet is signed anew, so a second copy of one (even of an
    orchestrator-signed one, which anyone may append) was put there by hand."""
    first: dict[str, str] = {}
    for entry in entries:
        seq = entry.get("seq")
        hex_digest = ctx.digests.get(packet_file(seq)) if isinstance(seq, int) else None
        if hex_digest is None:
            continue
        label = str(entry.get("id")) if entry.get("id") is not None else f"seq {seq}"
        if hex_digest in first:
            report.add(
                label,
                "digests",
                f"packet #{seq} holds the same bundle as packet {first[hex_digest]}: a copy",
            )
        else:
            first[hex_digest] = label


def _seen(label: str, seq: int, verified: VerifiedPacket) -> Seen:
    """Only approvals and decisions are looked into (most packets of a large capsule are runs)."""
    predicate_type, predicate = verified.predicate_type, verified.predicate
    if predicate_type == SLSA_VSA_V1:
        record = predicate.get(DECISION_RECORD_FIELD)
        digest = record.get("digest") if isinstance(record, dict) else None
        record_hex = digest.get("sha256") if isinstance(digest, dict) else None
        return Seen(
            label,
            seq,
            predicate_type,
            verified.signer_key_id,
            record=f"sha256:{record_hex}" if isinstance(record_hex, str) else None,
        )
    if predicate_type != APPROVAL_V1:
        return Seen(label, seq, predicate_type, verified.signer_key_id)
    approver = predicate.get("approver")
    return Seen(
        label,
        seq,
        predicate_type,
        verified.signer_key_id,
        promotion_id=predicate.get("promotionId"),
        environment=predicate.get("environment"),
        decision=predicate.get("decision"),
        approver=approver.get("name") if isinstance(approver, dict) else None,
        approver_key=approver.get("keyId") if isinstance(approver, dict) else None,
        subjects=tuple(sorted(verified.subject_digests())),
    )


def _check_decisions(ctx: _Context, report: Report) -> None:
    """Each decision's approvals, as its recorded inputs name them by packet digest: every named
    packet is in the capsule, and every counted one is the approval the decision took it for.
    A capsule cannot leave out an approval (or a rejection) its decisions relied on."""
    for seen in sorted(report.seen.values(), key=lambda s: s.seq):
        if seen.predicate_type != SLSA_VSA_V1 or seen.record is None:
            continue
        inputs = _recorded_inputs(ctx, seen.record)
        if inputs is None:
            continue  # a missing or altered record is reported as an input problem
        approvals = inputs.get("approvals")
        for entry in approvals if isinstance(approvals, list) else []:
            if isinstance(entry, dict) and "packet" in entry:  # none: a decision from before
                _check_named_approval(seen.label, entry, inputs, ctx, report)


def _recorded_inputs(ctx: _Context, record: str) -> dict[str, Any] | None:
    """The inputs object of the decision record `record`, if the capsule holds it intact."""
    path = input_file(record)
    if "sha256:" + ctx.digests.get(path, "") != record:
        return None
    value = _load_json(ctx.files, path)
    inputs = value.get("inputs") if isinstance(value, dict) else None
    return inputs if isinstance(inputs, dict) else None


def _check_named_approval(
    decision: str,
    entry: Mapping[str, Any],
    inputs: Mapping[str, Any],
    ctx: _Context,
    report: Report,
) -> None:
    by, packet = str(entry.get("by")), entry.get("packet")
    counted = entry.get("counted") is not False  # anything but an explicit false is checked
    kind = "rejection" if entry.get("decision") == "reject" else "approval"
    what = f"{by}'s {kind} {packet}"
    verb = "count" if counted else "name"

    def gap(check: str, reason: str) -> None:
        report.add(decision, check, f"its inputs {verb} {what}, which {reason}")
        report.approval_gaps.append(ApprovalGap(decision, by, str(packet), reason))

    report.checked["digests"] += 1
    if not isinstance(packet, str) or not _DIGEST.fullmatch(packet):
        gap("digests", "is not a sha256:<hex> packet digest")
        return
    found = report.seen.get(packet)
    if found is None:
        gap("digests", "is not in the capsule")
        return
    if not counted:
        return  # the decision did not rely on it; its own checks still apply to it
    if found.predicate_type is None:
        gap("signatures", f"does not verify (packet {found.label})")
        return
    if found.predicate_type != APPROVAL_V1:
        name = PREDICATE_NAMES.get(found.predicate_type, found.predicate_type)
        gap("signatures", f"is packet {found.label}, a {name} packet, not an approval")
        return
    request = inputs.get("request")
    release = inputs.get("release")
    request = request if isinstance(request, dict) else {}
    components = release.get("components") if isinstance(release, dict) else None
    digests = tuple(sorted(components.values())) if isinstance(components, dict) else None
    owner = ctx.owners.get(str(found.signer_key_id))
    mismatches = []
    if owner != ("person", by):
        signer = f"{str(found.signer_key_id)[:16]}…"
        mismatches.append(
            f"it is signed with {owner[1]}'s key {signer}"
            if owner is not None
            else f"it is signed with key {signer}, which no trusted endorsement gives to {by}"
        )
    if found.approver != by or found.approver_key != found.signer_key_id:
        mismatches.append(f"it names {found.approver} (key {str(found.approver_key)[:16]}…)")
    if found.promotion_id != request.get("promotionId"):
        mismatches.append(f"it is about promotion {found.promotion_id}")
    if found.environment != request.get("environment"):
        mismatches.append(f"it is about environment {found.environment}")
    if found.decision != _DECIDED.get(str(entry.get("decision"))):
        mismatches.append(f"it says {found.decision}")
    if digests is not None and found.subjects != digests:
        mismatches.append("it is about other digests than the release")
    if mismatches:
        gap("signatures", f"is packet {found.label}, but " + "; ".join(mismatches))


def _chain(files: Mapping[str, bytes], report: Report) -> list[dict[str, Any]]:
    chain = _load_json(files, "ledger/chain.json")
    if not isinstance(chain, list) or not all(isinstance(c, dict) for c in chain):
        report.add(None, "chain", "ledger/chain.json is missing or malformed")
        return []
    return chain


def _check_link(
    label: str, seq: int, digest: str, chain: Sequence[dict[str, Any]], report: Report
) -> None:
    link = chain[seq - 1] if 0 < seq <= len(chain) else None
    if link is None or link.get("seq") != seq:
        report.add(label, "chain", f"packet #{seq} has no link in the ledger chain")
        return
    if link.get("bundleDigest") != digest:
        report.add(
            label,
            "chain",
            f"packet #{seq}'s bundle is not the one the chain recorded "
            f"({digest[:19]}… against {str(link.get('bundleDigest'))[:19]}…)",
        )


def _check_chain(chain: Sequence[dict[str, Any]], report: Report) -> None:
    prev = GENESIS
    for index, link in enumerate(chain):
        report.checked["chain"] += 1
        seq, digest, link_prev, link_hash = (
            link.get("seq"),
            link.get("bundleDigest"),
            link.get("prevHash"),
            link.get("hash"),
        )
        where = f"seq {seq}"
        if seq != index + 1:
            report.add(
                where, "chain", f"chain link {index + 1} is numbered {seq}: a packet is missing"
            )
            prev = str(link_hash)
            continue
        if link_prev != prev:
            report.add(
                where,
                "chain",
                f"packet #{seq} does not follow packet #{seq - 1}: its previous hash differs "
                "(a packet before it was changed or removed)",
            )
        if not (
            isinstance(link_hash, str) and isinstance(digest, str) and _HEX64.fullmatch(link_hash)
        ):
            report.add(where, "chain", f"chain link {seq} is malformed")
        elif chain_hash(str(link_prev), seq, digest) != link_hash:
            report.add(where, "chain", f"chain link {seq} does not recompute: it was altered")
        prev = str(link_hash)


def _check_checkpoint(
    files: Mapping[str, bytes],
    manifest: Mapping[str, Any],
    chain: Sequence[dict[str, Any]],
    trust: Mapping[str, PublicKey],
    report: Report,
    allow_uncovered: bool,
) -> _Seal | None:
    """The signed checkpoint, and whether the chain rebuilds its root; None when there is no
    usable checkpoint (then no packet's proof can be checked, and the report says why)."""
    note = files.get("ledger/checkpoint.txt")
    if note is None and allow_uncovered:
        return None
    report.checked["checkpoints"] += 1
    if note is None:
        report.add(None, "checkpoints", "ledger/checkpoint.txt is missing")
        return None
    try:
        checkpoint = verify_checkpoint(
            note, list(trust.values()), key_name=str(manifest.get("origin"))
        )
    except StellaError as exc:
        report.add(None, "checkpoints", f"checkpoint: {exc}")
        return None
    size = checkpoint.size
    if size > len(chain):
        report.add(
            None, "checkpoints", f"the checkpoint covers {size} packets, the chain {len(chain)}"
        )
        return None
    leaves = []
    for link in chain[:size]:
        value = link.get("hash")
        leaves.append(
            bytes.fromhex(value) if isinstance(value, str) and _HEX64.fullmatch(value) else b""
        )
    if size == 0 or not all(len(leaf) == 32 for leaf in leaves):
        return _Seal(size, checkpoint.root, None)  # each proof is then checked on its own
    levels = tree_levels([leaf_hash(leaf) for leaf in leaves])
    if levels[-1][0] != checkpoint.root:
        report.add(
            None,
            "checkpoints",
            f"the chain's Merkle root differs from the signed checkpoint of size {size}: "
            "the ledger was altered after it was sealed",
        )
        return _Seal(size, checkpoint.root, None)
    return _Seal(size, checkpoint.root, [[node.hex() for node in level] for level in levels])


def _check_proof(label: str, seq: int, ctx: _Context, report: Report) -> None:
    """Packet `seq`'s inclusion proof leads to the signed checkpoint's root."""
    seal = ctx.seal
    if seal is None or (seq > seal.size and ctx.allow_uncovered):
        return
    report.checked["checkpoints"] += 1
    if seq > seal.size:
        report.add(label, "checkpoints", f"packet #{seq} is not covered by the checkpoint")
        return
    proof = _load_json(ctx.files, proof_file(seq))
    hashes = proof.get("hashes") if isinstance(proof, dict) else None
    if seal.levels is not None and hashes == level_path(seal.levels, seq - 1):
        return  # the tree's own proof (the usual case: no hashing, no parsing of hex)
    if not (
        isinstance(hashes, list) and all(isinstance(h, str) and _HEX64.fullmatch(h) for h in hashes)
    ):
        report.add(label, "checkpoints", f"packet #{seq}'s inclusion proof is missing or malformed")
        return
    link_hash = ctx.chain[seq - 1].get("hash") if seq <= len(ctx.chain) else None
    if (
        seal.levels is not None
        or not (isinstance(link_hash, str) and _HEX64.fullmatch(link_hash))
        or not inclusion_ok(
            leaf_hash(bytes.fromhex(link_hash)),
            seq - 1,
            seal.size,
            [bytes.fromhex(h) for h in hashes],
            seal.root,
        )
    ):
        report.add(
            label,
            "checkpoints",
            f"packet #{seq}'s inclusion proof does not lead to the checkpoint's root",
        )
