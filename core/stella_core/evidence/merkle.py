"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs, and C2SP signed checkpoints.

- leaf hash `SHA-256(0x00 || data)`, interior node `SHA-256(0x01 || left || right)`, the empty
  tree `SHA-256("")`; the prefixes keep a leaf from passing for a node (second preimages);
- trees of any size split at the largest power of two smaller than n (RFC 9162 §2.1.1), so the
  roots equal those of every other RFC 6962 log;
- a `MerkleTree` keeps every complete subtree hash, so appending is amortised O(1) and a proof
  for any leaf against any earlier tree size costs O(log² n) hashes, not a rebuild;
- checkpoints follow c2sp.org/tlog-checkpoint on c2sp.org/signed-note, signature type 0x02
  (ECDSA): key hash = first 4 bytes of SHA-256(SPKI DER), signature = DER ECDSA over the note text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from stella_core.crypto.keys import PublicKey, SigningKey
from stella_core.errors import DefinitionError, IntegrityError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
# A proof longer than this cannot belong to a tree of at most 2**64 leaves.
_MAX_PROOF = 64

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """An append-only RFC 6962 tree over leaf hashes.

    `_levels[h][i]` is the hash of the complete subtree of 2**h leaves starting at leaf i * 2**h;
    ragged right edges are never stored, they are recomputed from complete subtrees for whatever
    size is asked (which is what makes proofs against older sizes possible)."""

    __slots__ = ("_levels",)

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [[]]
        level = self._levels[0]
        for value in leaf_hashes:
            if len(value) != HASH_SIZE:
                raise DefinitionError("a leaf hash must be 32 bytes")
            level.append(value)
        # Bottom-up build: O(n) hashes in total.
        while len(level) > 1:
            level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            self._levels.append(level)

    @classmethod
    def from_leaves(cls, leaves: Iterable[bytes]) -> MerkleTree:
        """A tree over leaf *data* (each hashed with the 0x00 prefix)."""
        return cls(leaf_hash(data) for data in leaves)

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def leaf_hash(self, index: int) -> bytes:
        return self._levels[0][index]

    def append(self, data: bytes) -> int:
        """Append leaf data; returns its index."""
        return self.append_hash(leaf_hash(data))

    def append_hash(self, value: bytes) -> int:
        if len(value) != HASH_SIZE:
            raise DefinitionError("a leaf hash must be 32 bytes")
        index = self.size
        self._levels[0].append(value)
        height, position = 0, index
        # Each completed pair completes the parent: amortised O(1) per append.
        while position & 1:
            parent = node_hash(self._levels[height][position - 1], self._levels[height][position])
            height += 1
            position >>= 1
            if height == len(self._levels):
                self._levels.append([])
            self._levels[height].append(parent)
        return index

    def _check_size(self, size: int | None) -> int:
        if size is None:
            return self.size
        if not 0 <= size <= self.size:
            raise DefinitionError(f"tree size {size} is outside 0..{self.size}")
        return size

    def _subtree(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]); lo is always aligned to the largest power of two <= hi - lo here."""
        n = hi - lo
        if n == 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0:  # complete subtree: stored
            height = n.bit_length() - 1
            return self._levels[height][lo >> height]
        k = _split(n)
        return node_hash(self._subtree(lo, lo + k), self._subtree(lo + k, hi))

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first `size` leaves (all by default)."""
        size = self._check_size(size)
        return EMPTY_ROOT if size == 0 else self._subtree(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.3.1 PATH(index, D[0:size]), leaf-side first."""
        size = self._check_size(size)
        if not 0 <= index < size:
            raise DefinitionError(f"leaf index {index} is outside a tree of size {size}")
        path: list[bytes] = []
        lo, hi = 0, size
        while hi - lo > 1:
            k = _split(hi - lo)
            if index < lo + k:
                path.append(self._subtree(lo + k, hi))
                hi = lo + k
            else:
                path.append(self._subtree(lo, lo + k))
                lo += k
        path.reverse()
        return path

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.4.1 PROOF(old_size, D[0:new_size]); empty when the sizes are equal or
        the old tree is empty."""
        new_size = self._check_size(new_size)
        if not 0 <= old_size <= new_size:
            raise DefinitionError(f"old size {old_size} is outside 0..{new_size}")
        if old_size in (0, new_size):
            return []
        proof: list[bytes] = []
        lo, hi, m, complete = 0, new_size, old_size, True
        # SUBPROOF(m, D[lo:hi], complete), unrolled; items are collected root-side first.
        while True:
            n = hi - lo
            if m == n:
                if not complete:
                    proof.append(self._subtree(lo, hi))
                break
            k = _split(n)
            if m <= k:
                proof.append(self._subtree(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self._subtree(lo, lo + k))
                lo += k
                m -= k
                complete = False
        proof.reverse()
        return proof


def tree_levels(leaf_hashes: Sequence[bytes]) -> list[list[bytes]]:
    """Every level of the tree over `leaf_hashes`, leaves first, root last (non-empty input).

    A level's unpaired last node is carried up unchanged: that builds exactly RFC 9162's tree
    (which splits at the largest power of two), and every inclusion proof can then be read off
    the levels with `level_path` instead of being recomputed leaf by leaf."""
    if not leaf_hashes:
        raise DefinitionError("a tree needs at least one leaf")
    level = list(leaf_hashes)
    levels = [level]
    while len(level) > 1:
        parents = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) & 1:
            parents.append(level[-1])
        level = parents
        levels.append(level)
    return levels


def level_path(levels: Sequence[Sequence[object]], index: int) -> list[object]:
    """The inclusion proof of leaf `index` (RFC 9162 PATH, leaf-side first) from `tree_levels`
    (or the same levels in any other encoding, such as hex)."""
    path = []
    for level in levels[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        index >>= 1
    return path


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf data."""
    return MerkleTree.from_leaves(leaves).root()


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    return MerkleTree.from_leaves(leaves).inclusion_proof(index)


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    return MerkleTree.from_leaves(leaves).consistency_proof(old_size)


def _proof_ok(proof: Sequence[bytes]) -> bool:
    return len(proof) <= _MAX_PROOF and all(
        isinstance(p, bytes) and len(p) == HASH_SIZE for p in proof
    )


def verify_inclusion(
    leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Is leaf *data* `leaf` at `index` of the tree of `tree_size` with this `root`?"""
    return verify_inclusion_hash(leaf_hash(leaf), index, tree_size, proof, root)


def verify_inclusion_hash(
    leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2, for a leaf hash."""
    if not 0 <= index < tree_size or not _proof_ok(proof) or len(leaf) != HASH_SIZE:
        return False
    fn, sn = index, tree_size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: is the tree of `old_size` / `old_root` a prefix of `new_size` /
    `new_root`?"""
    if not 0 <= old_size <= new_size or not _proof_ok(proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        # Every tree extends the empty tree; there is nothing to prove.
        return not proof and old_root == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # old tree is a complete subtree: its root starts the path
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


# --- checkpoints ---------------------------------------------------------------------------------

_SIGNATURE_TYPE_ECDSA = 0x02
_EM_DASH = "\u2014"
_KEY_NAME = re.compile(r"[^\s+]+")
_SIZE = re.compile(r"0|[1-9][0-9]*")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
_MAX_SIGNATURES = 16


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tree head: the log's origin, its size and its root."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def note_text(self) -> bytes:
        """The signed body, including its final newline."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode("ascii")]
        lines.extend(self.extensions)
        return ("\n".join(lines) + "\n").encode("utf-8")


@dataclass(frozen=True, slots=True)
class NoteSignature:
    key_name: str
    key_hash: bytes  # 4 bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    signatures: tuple[NoteSignature, ...]


def note_key_hash(public_key: PublicKey) -> bytes:
    """signed-note key ID for signature type 0x02: the first 4 bytes of SHA-256(SPKI DER)."""
    return bytes.fromhex(public_key.key_id[:8])


def _check_checkpoint(checkpoint: Checkpoint) -> None:
    if not checkpoint.origin or "\n" in checkpoint.origin or _CONTROL.search(checkpoint.origin):
        raise DefinitionError("checkpoint origin must be one non-empty line")
    if checkpoint.size < 0:
        raise DefinitionError("checkpoint size must not be negative")
    if len(checkpoint.root) != HASH_SIZE:
        raise DefinitionError("checkpoint root must be 32 bytes")
    for line in checkpoint.extensions:
        if not line or "\n" in line or _CONTROL.search(line):
            raise DefinitionError("checkpoint extension lines must be non-empty single lines")


def sign_checkpoint(checkpoint: Checkpoint, key: SigningKey, *, key_name: str | None = None) -> str:
    """The signed checkpoint text; the key name defaults to the origin (tlog-checkpoint says it
    SHOULD match)."""
    _check_checkpoint(checkpoint)
    name = key_name or checkpoint.origin
    if not _KEY_NAME.fullmatch(name):
        raise DefinitionError(f"key name {name!r} must be non-empty without spaces or '+'")
    body = checkpoint.note_text()
    blob = note_key_hash(key.public_key()) + key.sign(body)
    return body.decode("utf-8") + f"\n{_EM_DASH} {name} {base64.b64encode(blob).decode()}\n"


def parse_checkpoint(text: str | bytes) -> SignedCheckpoint:
    """Split and parse a signed checkpoint without verifying it; DefinitionError when it is not a
    well-formed C2SP checkpoint note."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DefinitionError("checkpoint is not UTF-8") from exc
    if _CONTROL.search(text):
        raise DefinitionError("checkpoint contains control characters")
    # The note text is separated from the signatures by the last blank line.
    cut = text.rfind("\n\n")
    if cut < 0 or not text.endswith("\n"):
        raise DefinitionError("checkpoint has no signature block")
    body, sig_block = text[: cut + 1], text[cut + 2 :]
    lines = body[:-1].split("\n")
    if len(lines) < 3:
        raise DefinitionError("checkpoint needs an origin, a size and a root hash")
    origin, size_text, root_text, *extensions = lines
    if not origin:
        raise DefinitionError("checkpoint origin is empty")
    if not _SIZE.fullmatch(size_text):
        raise DefinitionError(f"checkpoint size {size_text!r} is not a decimal without zeros")
    try:
        root_hash = base64.b64decode(root_text, validate=True)
    except binascii.Error as exc:
        raise DefinitionError("checkpoint root hash is not base64") from exc
    if len(root_hash) != HASH_SIZE:
        raise DefinitionError("checkpoint root hash is not 32 bytes")
    if any(not line for line in extensions):
        raise DefinitionError("checkpoint extension lines must not be empty")
    signatures = []
    sig_lines = sig_block[:-1].split("\n")
    if len(sig_lines) > _MAX_SIGNATURES:
        raise DefinitionError(f"checkpoint carries more than {_MAX_SIGNATURES} signatures")
    for line in sig_lines:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != _EM_DASH or not _KEY_NAME.fullmatch(parts[1]):
            raise DefinitionError(f"checkpoint signature line {line[:40]!r} is malformed")
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except binascii.Error as exc:
            raise DefinitionError("checkpoint signature is not base64") from exc
        if len(blob) < 5:
            raise DefinitionError("checkpoint signature is too short")
        signatures.append(NoteSignature(parts[1], blob[:4], blob[4:]))
    checkpoint = Checkpoint(origin, int(size_text), root_hash, tuple(extensions))
    if checkpoint.note_text() != body.encode("utf-8"):
        # Only non-canonical base64 can differ here; refuse it so one head has one text.
        raise DefinitionError("checkpoint root hash is not canonical base64")
    return SignedCheckpoint(checkpoint, tuple(signatures))


def verify_checkpoint(
    text: str | bytes,
    public_key: PublicKey | Iterable[PublicKey],
    *,
    key_name: str | None = None,
) -> Checkpoint:
    """Verify a signed checkpoint against trusted key(s) and return its tree head; IntegrityError
    otherwise. Signatures by other keys are ignored (signed-note rules); one bad signature by a
    trusted key rejects the note. The key name defaults to the checkpoint's origin."""
    keys = [public_key] if isinstance(public_key, PublicKey) else list(public_key)
    try:
        signed = parse_checkpoint(text)
    except DefinitionError as exc:
        raise IntegrityError(f"malformed checkpoint: {exc.message}") from exc
    name = key_name or signed.checkpoint.origin
    body = signed.checkpoint.note_text()
    verified = False
    for sig in signed.signatures:
        for key in keys:
            if sig.key_name == name and sig.key_hash == note_key_hash(key):
                if not key.verify(sig.signature, body):
                    raise IntegrityError(
                        f"checkpoint signature by {name} (key {key.key_id[:16]}…) does not verify"
                    )
                verified = True
    if not verified:
        raise IntegrityError(f"checkpoint has no signature by a trusted key named {name!r}")
    return signed.checkpoint
