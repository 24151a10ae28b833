"""RFC 6962/9162 Merkle trees and C2SP checkpoints, against published vectors and an independent,
straightforward recursive implementation of the RFC's definitions."""

from __future__ import annotations

import base64
import hashlib

import pytest

from stella_core.crypto.keys import SigningKey
from stella_core.errors import DefinitionError, IntegrityError
from stella_core.evidence.merkle import (
    EMPTY_ROOT,
    Checkpoint,
    MerkleTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    level_path,
    node_hash,
    parse_checkpoint,
    root,
    sign_checkpoint,
    tree_levels,
    verify_checkpoint,
    verify_consistency,
    verify_inclusion,
    verify_inclusion_hash,
)

# --- the reference: RFC 9162 §2.1 written out literally -------------------------------------


def ref_hash(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return ref_hash(b"")
    if n == 1:
        return ref_hash(b"\x00" + d[0])
    k = ref_k(n)
    return ref_hash(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = ref_k(n)
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = ref_k(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_proof(m: int, d: list[bytes]) -> list[bytes]:
    return ref_subproof(m, d, True)


# --- published vectors (certificate-transparency / transparency-dev test data) ---------------

CT_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
CT_CONSISTENCY = [
    (
        2,
        8,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]

LEAVES = [f"packet-{i}".encode() for i in range(41)]
MAX = len(LEAVES)


def test_hashing_primitives() -> None:
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()


@pytest.mark.parametrize("size", range(len(CT_ROOTS)))
def test_published_roots(size: int) -> None:
    assert root(CT_LEAVES[:size]).hex() == CT_ROOTS[size]
    assert ref_mth(CT_LEAVES[:size]).hex() == CT_ROOTS[size]  # the reference agrees too


@pytest.mark.parametrize(("index", "size", "proof"), CT_INCLUSION)
def test_published_inclusion_proofs(index: int, size: int, proof: list[str]) -> None:
    got = inclusion_proof(CT_LEAVES[:size], index)
    assert [p.hex() for p in got] == proof
    assert verify_inclusion(CT_LEAVES[index], index, size, got, bytes.fromhex(CT_ROOTS[size]))


@pytest.mark.parametrize(("old", "new", "proof"), CT_CONSISTENCY)
def test_published_consistency_proofs(old: int, new: int, proof: list[str]) -> None:
    got = consistency_proof(CT_LEAVES[:new], old)
    assert [p.hex() for p in got] == proof
    assert verify_consistency(
        old, new, bytes.fromhex(CT_ROOTS[old]), bytes.fromhex(CT_ROOTS[new]), got
    )


def test_roots_match_the_reference_for_every_size() -> None:
    for n in range(MAX + 1):
        assert root(LEAVES[:n]) == ref_mth(LEAVES[:n]), n


def test_every_inclusion_proof_for_every_size() -> None:
    for n in range(1, MAX + 1):
        tree = MerkleTree.from_leaves(LEAVES[:n])
        head = ref_mth(LEAVES[:n])
        for i in range(n):
            proof = tree.inclusion_proof(i)
            assert proof == ref_path(i, LEAVES[:n]), (i, n)
            assert verify_inclusion(LEAVES[i], i, n, proof, head)
            # The same leaf does not prove another position, nor another leaf this one.
            if n > 1:
                assert not verify_inclusion(LEAVES[i], (i + 1) % n, n, proof, head)
                assert not verify_inclusion(LEAVES[(i + 1) % n], i, n, proof, head)


def test_levels_give_the_reference_root_and_every_proof() -> None:
    for n in range(1, MAX + 1):
        levels = tree_levels([leaf_hash(leaf) for leaf in LEAVES[:n]])
        assert levels[-1] == [ref_mth(LEAVES[:n])], n
        for i in range(n):
            assert level_path(levels, i) == ref_path(i, LEAVES[:n]), (i, n)
    for index, size, proof in CT_INCLUSION:
        levels = tree_levels([leaf_hash(leaf) for leaf in CT_LEAVES[:size]])
        assert [p.hex() for p in level_path(levels, index)] == proof
    with pytest.raises(DefinitionError):
        tree_levels([])


def test_every_consistency_proof_for_every_pair_of_sizes() -> None:
    tree = MerkleTree.from_leaves(LEAVES)
    for new in range(MAX + 1):
        new_root = ref_mth(LEAVES[:new])
        for old in range(new + 1):
            proof = tree.consistency_proof(old, new)
            if 0 < old < new:
                assert proof == ref_proof(old, LEAVES[:new]), (old, new)
            else:
                assert proof == []
            assert verify_consistency(old, new, ref_mth(LEAVES[:old]), new_root, proof), (old, new)


def test_proofs_against_older_sizes_from_a_grown_tree() -> None:
    # The ledger proves a packet against whichever checkpoint came after it, not only the latest.
    tree = MerkleTree.from_leaves(LEAVES)
    for size in (1, 5, 16, 17, 33):
        for i in range(size):
            assert tree.inclusion_proof(i, size) == ref_path(i, LEAVES[:size])
        assert tree.root(size) == ref_mth(LEAVES[:size])


def test_append_matches_bulk_build() -> None:
    grown = MerkleTree()
    for i, data in enumerate(LEAVES):
        assert grown.append(data) == i
        assert grown.root() == ref_mth(LEAVES[: i + 1])
    assert grown.size == MAX
    assert grown.leaf_hash(3) == leaf_hash(LEAVES[3])


def test_tampered_inclusion_proofs_are_rejected() -> None:
    n = 37
    tree = MerkleTree.from_leaves(LEAVES[:n])
    head = tree.root()
    for i in range(n):
        proof = tree.inclusion_proof(i)
        for j in range(len(proof)):
            flipped = list(proof)
            flipped[j] = bytes([proof[j][0] ^ 1]) + proof[j][1:]
            assert not verify_inclusion(LEAVES[i], i, n, flipped, head)
        if len(proof) >= 2 and proof[0] != proof[1]:
            assert not verify_inclusion(LEAVES[i], i, n, [proof[1], proof[0], *proof[2:]], head)
        assert not verify_inclusion(LEAVES[i], i, n, proof[:-1], head)
        assert not verify_inclusion(LEAVES[i], i, n, [*proof, b"\xab" * 32], head)
        # A proof's tree size is bound only through the root: against the real root of a larger
        # tree the same proof fails.
        assert not verify_inclusion(LEAVES[i], i, n + 1, proof, ref_mth(LEAVES[: n + 1]))
        assert not verify_inclusion(LEAVES[i], i, n, proof, head[:-1] + b"\x00")


def test_tampered_consistency_proofs_are_rejected() -> None:
    tree = MerkleTree.from_leaves(LEAVES)
    for new in range(2, MAX + 1, 3):
        for old in range(1, new):
            proof = tree.consistency_proof(old, new)
            old_root, new_root = tree.root(old), tree.root(new)
            for j in range(len(proof)):
                flipped = list(proof)
                flipped[j] = proof[j][:5] + bytes([proof[j][5] ^ 0x80]) + proof[j][6:]
                assert not verify_consistency(old, new, old_root, new_root, flipped)
            assert not verify_consistency(old, new, old_root, new_root, proof[:-1])
            assert not verify_consistency(old, new, old_root, new_root, [*proof, b"\xcd" * 32])
            # A rewritten history (another leaf at the old position) fails.
            forged = MerkleTree.from_leaves([b"forged", *LEAVES[1:new]])
            assert not verify_consistency(old, new, forged.root(old), new_root, proof)


def test_degenerate_cases() -> None:
    tree = MerkleTree.from_leaves(CT_LEAVES)
    r4, r5, r8 = tree.root(4), tree.root(5), tree.root(8)
    assert verify_consistency(4, 4, r4, r4, [])
    assert not verify_consistency(4, 4, r4, r5, [])
    assert not verify_consistency(4, 4, r4, r4, [b"\x00" * 32])
    assert verify_consistency(0, 8, EMPTY_ROOT, r8, [])
    assert not verify_consistency(0, 8, r4, r8, [])
    assert not verify_consistency(6, 8, tree.root(6), r8, [])
    assert not verify_consistency(8, 6, r8, tree.root(6), tree.consistency_proof(6, 8))
    proof = tree.inclusion_proof(5)
    assert not verify_inclusion_hash(b"\x00" * 31, 5, 8, proof, r8)
    assert not verify_inclusion(CT_LEAVES[5], 8, 8, proof, r8)
    assert not verify_inclusion(CT_LEAVES[5], -1, 8, proof, r8)
    assert not verify_inclusion(CT_LEAVES[5], 5, 8, [b"\x00" * 31, *proof[1:]], r8)
    assert verify_inclusion(CT_LEAVES[0], 0, 1, [], tree.root(1))


def test_bad_arguments_are_definition_errors() -> None:
    tree = MerkleTree.from_leaves(CT_LEAVES)
    with pytest.raises(DefinitionError):
        tree.inclusion_proof(8)
    with pytest.raises(DefinitionError):
        tree.inclusion_proof(0, 9)
    with pytest.raises(DefinitionError):
        tree.consistency_proof(5, 3)
    with pytest.raises(DefinitionError):
        MerkleTree([b"short"])
    with pytest.raises(DefinitionError):
        inclusion_proof([], 0)


def test_100k_leaves_is_linear() -> None:
    # Not a benchmark and no clock: an accidental O(n²) here would run into the test timeout.
    leaves = [i.to_bytes(8, "big") for i in range(100_000)]
    tree = MerkleTree.from_leaves(leaves)
    head = tree.root()
    for i in (0, 1, 65_535, 65_536, 99_999):
        assert verify_inclusion(leaves[i], i, tree.size, tree.inclusion_proof(i), head)
    assert verify_consistency(
        70_001, 100_000, tree.root(70_001), head, tree.consistency_proof(70_001)
    )


# --- checkpoints ------------------------------------------------------------------------------

ORIGIN = "stella-desk.dev/evidence/7a0c9e9e-5a8e-4a8e-8f55-3b1f1c2d0e11"


@pytest.fixture(scope="module")
def log_key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def head() -> Checkpoint:
    tree = MerkleTree.from_leaves(LEAVES)
    return Checkpoint(ORIGIN, tree.size, tree.root())


def test_checkpoint_text_layout(head: Checkpoint, log_key: SigningKey) -> None:
    text = sign_checkpoint(head, log_key)
    body, _, signature_line = text.partition("\n\n")
    assert body + "\n" == head.note_text().decode()
    assert body.split("\n") == [ORIGIN, str(MAX), base64.b64encode(head.root).decode()]
    assert signature_line.endswith("\n")
    dash, name, blob = signature_line[:-1].split(" ")
    assert dash == "\u2014"
    assert name == ORIGIN
    raw = base64.b64decode(blob)
    # signed-note type 0x02 key id: the first 4 bytes of SHA-256(SPKI DER).
    assert raw[:4] == hashlib.sha256(log_key.public_key().der()).digest()[:4]
    assert log_key.public_key().verify(raw[4:], head.note_text())


def test_checkpoint_round_trip(head: Checkpoint, log_key: SigningKey) -> None:
    text = sign_checkpoint(head, log_key)
    assert verify_checkpoint(text, log_key.public_key()) == head
    assert (
        verify_checkpoint(text.encode(), [SigningKey.generate().public_key(), log_key.public_key()])
        == head
    )
    parsed = parse_checkpoint(text)
    assert parsed.checkpoint == head
    assert parsed.signatures[0].key_name == ORIGIN


def test_checkpoint_with_extensions_and_other_signers(
    head: Checkpoint, log_key: SigningKey
) -> None:
    extended = Checkpoint(head.origin, head.size, head.root, ("seq 42",))
    witness = SigningKey.generate()
    text = sign_checkpoint(extended, log_key)
    # A cosignature by an unknown witness is appended; verifiers ignore unknown signers.
    witness_line = sign_checkpoint(extended, witness, key_name="witness.example").split("\n\n")[1]
    both = text + witness_line
    assert verify_checkpoint(both, log_key.public_key()) == extended
    with pytest.raises(IntegrityError, match="no signature by a trusted key"):
        verify_checkpoint(both, SigningKey.generate().public_key())
    assert verify_checkpoint(both, witness.public_key(), key_name="witness.example") == extended


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t.replace(f"\n{MAX}\n", f"\n{MAX + 1}\n", 1),  # size
        lambda t: t.replace(ORIGIN, ORIGIN + "x", 1),  # origin line only
        lambda t: t.replace(t.split("\n")[2], base64.b64encode(b"\x00" * 32).decode(), 1),  # root
    ],
    ids=["size", "origin", "root"],
)
def test_tampered_checkpoint_body_is_rejected(
    head: Checkpoint, log_key: SigningKey, tamper
) -> None:
    text = sign_checkpoint(head, log_key)
    tampered = tamper(text)
    assert tampered != text
    with pytest.raises(IntegrityError):
        verify_checkpoint(tampered, log_key.public_key(), key_name=ORIGIN)


def test_tampered_checkpoint_signature_is_rejected(head: Checkpoint, log_key: SigningKey) -> None:
    text = sign_checkpoint(head, log_key)
    body, _, line = text.partition("\n\n")
    dash, name, blob = line[:-1].split(" ")
    raw = bytearray(base64.b64decode(blob))
    raw[-1] ^= 0x01
    forged = f"{body}\n\n{dash} {name} {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(IntegrityError, match="does not verify"):
        verify_checkpoint(forged, log_key.public_key())


@pytest.mark.parametrize(
    "text",
    [
        "",
        "origin\n1\n",
        f"{ORIGIN}\n01\n{base64.b64encode(b'x' * 32).decode()}\n\n\u2014 a AAAAAAA=\n",
        f"{ORIGIN}\n1\n{base64.b64encode(b'x' * 31).decode()}\n\n\u2014 a AAAAAAA=\n",
        f"{ORIGIN}\n1\n{base64.b64encode(b'x' * 32).decode()}\n\n- a AAAAAAA=\n",
        f"{ORIGIN}\n1\n{base64.b64encode(b'x' * 32).decode()}\n\n\u2014 a AAAAAAA=",
        f"{ORIGIN}\n1\n{base64.b64encode(b'x' * 32).decode()}\n\n\u2014 a b c\n",
        f"{ORIGIN}\x01\n1\n{base64.b64encode(b'x' * 32).decode()}\n\n\u2014 a AAAAAAA=\n",
    ],
)
def test_malformed_checkpoints(text: str, log_key: SigningKey) -> None:
    with pytest.raises(DefinitionError):
        parse_checkpoint(text)
    with pytest.raises(IntegrityError, match="malformed checkpoint"):
        verify_checkpoint(text, log_key.public_key())


def test_checkpoint_fields_are_checked(log_key: SigningKey) -> None:
    with pytest.raises(DefinitionError):
        sign_checkpoint(Checkpoint("", 1, b"\x00" * 32), log_key)
    with pytest.raises(DefinitionError):
        sign_checkpoint(Checkpoint("a\nb", 1, b"\x00" * 32), log_key)
    with pytest.raises(DefinitionError):
        sign_checkpoint(Checkpoint("o", 1, b"\x00" * 31), log_key)
    with pytest.raises(DefinitionError):
        sign_checkpoint(Checkpoint("o", 1, b"\x00" * 32), log_key, key_name="has space")
