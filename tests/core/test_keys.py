"""Signing keys: P-256 only, key id = SHA-256 of the SPKI DER, encrypted PEM files, mode 0600."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from stella_core.crypto.keys import (
    KeyFile,
    PublicKey,
    SigningKey,
    WrongPassphraseError,
    personal_passphrase,
)
from stella_core.crypto.secretbox import SecretBox
from stella_core.errors import AlreadyExistsError, DefinitionError, IntegrityError
from stella_core.profiles import EMBEDDED, Profile, ProfileStore
from stella_core.tenancy.keys import (
    LocalKeys,
    NoPersonalPassphraseError,
    PassphraseRequiredError,
    person_key_name,
)

PASSPHRASE = b"correct horse battery staple"
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI missing")


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


def test_key_id_is_sha256_of_spki_der(key: SigningKey) -> None:
    der = key.public_key().der()
    assert key.key_id == hashlib.sha256(der).hexdigest()
    assert key.key_id == key.public_key().key_id
    assert len(key.key_id) == 64
    assert key.key_id == key.key_id.lower()


@needs_openssl
def test_key_id_matches_openssl_fingerprint(key: SigningKey, tmp_path: Path) -> None:
    pub = tmp_path / "pub.pem"
    pub.write_bytes(key.public_key().pem())
    # Exactly what an auditor would type.
    out = subprocess.run(
        f"openssl pkey -pubin -in '{pub}' -outform DER | sha256sum",
        shell=True,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert out.split()[0] == key.key_id


def test_sign_and_verify(key: SigningKey) -> None:
    signature = key.sign(b"evidence")
    assert key.public_key().verify(signature, b"evidence")
    assert not key.public_key().verify(signature, b"evidencE")
    assert not SigningKey.generate().public_key().verify(signature, b"evidence")
    # ECDSA is randomized: two signatures differ, both verify.
    again = key.sign(b"evidence")
    assert again != signature
    assert key.public_key().verify(again, b"evidence")


def test_deterministic_signatures_repeat_and_verify_with_openssl(
    key: SigningKey, tmp_path: Path
) -> None:
    """RFC 6979: the same key and message give the same signature, an ordinary ECDSA one."""
    signature = key.sign(b"manifest", deterministic=True)
    assert key.sign(b"manifest", deterministic=True) == signature
    assert key.sign(b"manifesT", deterministic=True) != signature
    assert key.public_key().verify(signature, b"manifest")
    (tmp_path / "key.pem").write_bytes(key.public_key().pem())
    (tmp_path / "data").write_bytes(b"manifest")
    (tmp_path / "sig").write_bytes(signature)
    done = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", "key.pem", "-signature", "sig", "data"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.stdout.strip() == "Verified OK", done.stderr


@pytest.mark.parametrize(
    "signature",
    [b"", b"\x30", b"\x30\x00", b"\x00" * 64, b"not a signature at all", b"\x30\x06\x02\x01\x01"],
)
def test_verify_never_raises_for_bad_signatures(key: SigningKey, signature: bytes) -> None:
    assert key.public_key().verify(signature, b"evidence") is False


def test_verify_rejects_flipped_signature_bits(key: SigningKey) -> None:
    signature = bytearray(key.sign(b"evidence"))
    for index in (0, 5, len(signature) // 2, len(signature) - 1):
        bad = bytearray(signature)
        bad[index] ^= 0x01
        assert key.public_key().verify(bytes(bad), b"evidence") is False


def test_public_key_pem_round_trip(key: SigningKey) -> None:
    pem = key.public_key().pem()
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    loaded = PublicKey.from_pem(pem)
    assert loaded == key.public_key()
    assert hash(loaded) == hash(key.public_key())
    assert loaded.key_id == key.key_id
    assert PublicKey.from_der(key.public_key().der()) == loaded


@pytest.mark.parametrize(
    "private",
    [
        lambda: ec.generate_private_key(ec.SECP384R1()),
        lambda: ec.generate_private_key(ec.SECP256K1()),
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ed25519.Ed25519PrivateKey.generate,
    ],
    ids=["p384", "secp256k1", "rsa", "ed25519"],
)
def test_from_pem_refuses_other_key_types(private) -> None:
    pem = (
        private()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(DefinitionError, match="P-256"):
        PublicKey.from_pem(pem)


def test_from_pem_refuses_garbage_and_private_keys(key: SigningKey) -> None:
    with pytest.raises(DefinitionError, match="not a PEM public key"):
        PublicKey.from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(DefinitionError, match="private key"):
        PublicKey.from_pem(key.to_encrypted_pem(PASSPHRASE))


def test_encrypted_pem_round_trip(key: SigningKey) -> None:
    pem = key.to_encrypted_pem(PASSPHRASE)
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    loaded = SigningKey.from_encrypted_pem(pem, PASSPHRASE)
    assert loaded.key_id == key.key_id
    assert key.public_key().verify(loaded.sign(b"x"), b"x")


def test_wrong_passphrase_is_a_clear_error(key: SigningKey) -> None:
    pem = key.to_encrypted_pem(PASSPHRASE)
    with pytest.raises(WrongPassphraseError, match="wrong passphrase") as info:
        SigningKey.from_encrypted_pem(pem, b"hunter2-not-it")
    assert isinstance(info.value, DefinitionError)
    assert "hunter2" not in str(info.value)
    assert PASSPHRASE.decode() not in str(info.value)


def test_empty_passphrase_and_unencrypted_keys_are_refused(key: SigningKey) -> None:
    with pytest.raises(DefinitionError, match="passphrase"):
        key.to_encrypted_pem(b"")
    plain = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(DefinitionError, match="encrypted"):
        SigningKey.from_encrypted_pem(plain, PASSPHRASE)


def test_encrypted_p384_key_is_refused() -> None:
    other = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSPHRASE),
    )
    with pytest.raises(DefinitionError, match="P-256"):
        SigningKey.from_encrypted_pem(other, PASSPHRASE)


@needs_openssl
def test_openssl_opens_the_encrypted_key(key: SigningKey, tmp_path: Path) -> None:
    path = KeyFile.write(tmp_path, "orchestrator", key, PASSPHRASE)
    secret = tmp_path / "pass.txt"
    secret.write_bytes(PASSPHRASE)
    out = subprocess.run(
        ["openssl", "pkey", "-in", str(path), "-passin", f"file:{secret}", "-pubout"],
        check=True,
        capture_output=True,
    ).stdout
    assert PublicKey.from_pem(out) == key.public_key()


def test_repr_shows_no_private_material(key: SigningKey) -> None:
    numbers = key._key.private_numbers()  # test-only peek, to search for it
    secret_hex = format(numbers.private_value, "x")
    for text in (repr(key), str(key), repr(key.public_key())):
        assert key.key_id in text
        assert secret_hex not in text
        assert str(numbers.private_value) not in text
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(key)


def test_key_file_is_written_0600_and_read_back(key: SigningKey, tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    path = KeyFile.write(directory, "alice", key, PASSPHRASE)
    assert path.name == f"alice-{key.key_id[:16]}.pem"
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert list(directory.iterdir()) == [path]  # no temporary file left behind
    assert KeyFile.read(path, PASSPHRASE).key_id == key.key_id
    with pytest.raises(WrongPassphraseError):
        KeyFile.read(path, b"not it")


def test_key_file_is_never_overwritten(key: SigningKey, tmp_path: Path) -> None:
    path = KeyFile.write(tmp_path, "alice", key, PASSPHRASE)
    before = path.read_bytes()
    with pytest.raises(AlreadyExistsError):
        KeyFile.write(tmp_path, "alice", key, PASSPHRASE)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_rotated_keys_sit_side_by_side(tmp_path: Path) -> None:
    first, second = SigningKey.generate(), SigningKey.generate()
    paths = [KeyFile.write(tmp_path, "orchestrator", k, PASSPHRASE) for k in (first, second)]
    KeyFile.write(tmp_path, "orchestrator-old", SigningKey.generate(), PASSPHRASE)
    assert KeyFile.versions(tmp_path, "orchestrator") == sorted(paths)
    public = KeyFile.write_public(tmp_path / "pub", "orchestrator", first.public_key())
    assert public.name == f"orchestrator-{first.key_id[:16]}.pub"
    assert PublicKey.from_pem(public.read_bytes()) == first.public_key()


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_key_file_readable_by_others_is_refused(key: SigningKey, tmp_path: Path) -> None:
    path = KeyFile.write(tmp_path, "alice", key, PASSPHRASE)
    path.chmod(0o644)
    with pytest.raises(DefinitionError, match="0644"):
        KeyFile.read(path, PASSPHRASE)


def test_key_file_named_for_another_key_is_refused(key: SigningKey, tmp_path: Path) -> None:
    path = KeyFile.write(tmp_path, "alice", key, PASSPHRASE)
    swapped = path.with_name("alice-0000000000000000.pem")
    path.rename(swapped)
    with pytest.raises(IntegrityError, match="holds key"):
        KeyFile.read(swapped, PASSPHRASE)


@pytest.mark.parametrize("name", ["", "../evil", "a b", "x" * 64, "-lead"])
def test_key_file_names_are_checked(key: SigningKey, tmp_path: Path, name: str) -> None:
    with pytest.raises(DefinitionError, match="key name"):
        KeyFile.write(tmp_path, name, key, PASSPHRASE)


# ------------------------------------------------------------------------------- a person's own
def test_personal_passphrases_are_checked_and_normalised() -> None:
    with pytest.raises(DefinitionError, match="empty"):
        personal_passphrase("")
    with pytest.raises(DefinitionError, match="NUL") as refused:
        personal_passphrase("half\0way")
    assert "half" not in refused.value.message  # never repeated
    # The same words from another keyboard (composed or combining accent) are the same bytes.
    assert personal_passphrase("caf\u00e9") == personal_passphrase("cafe\u0301")


def test_rewrite_replaces_a_key_file_atomically(key: SigningKey, tmp_path: Path) -> None:
    path = KeyFile.write(tmp_path, "alice", key, PASSPHRASE)
    assert KeyFile.rewrite(path, key, b"another one") == path
    with pytest.raises(WrongPassphraseError):
        KeyFile.read(path, PASSPHRASE)
    assert KeyFile.read(path, b"another one").key_id == key.key_id
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    with pytest.raises(IntegrityError):
        KeyFile.rewrite(path, SigningKey.generate(), b"x")  # never another key in its place


def _local(home: Path, *people: str) -> LocalKeys:
    store = ProfileStore(home)
    for name in people:
        store.save(
            Profile(name, EMBEDDED, name, "db-password", "00000000-0000-0000-0000-000000000001")
        )
    return LocalKeys(home, EMBEDDED, SecretBox.from_home(home))


def test_a_person_puts_every_generation_under_their_own_passphrase(tmp_path: Path) -> None:
    local = _local(tmp_path, "bob", "carol")
    name = person_key_name("bob")
    first, second = local.create(name), local.create(name)
    carols = local.create(person_key_name("carol"))
    assert not local.protected("bob")

    assert local.protect("bob", "bob's words") == 2
    assert local.protected("bob")
    assert not local.protected("carol")
    machine = local._passphrase()
    for path in local.held(name):
        with pytest.raises(WrongPassphraseError):
            KeyFile.read(path, machine)  # a copied file plus the machine's secret: useless
    assert b"bob's words" not in (tmp_path / "profiles.json").read_bytes()

    # Another session of the same machine: nothing opens bob's key without his passphrase.
    later = LocalKeys(tmp_path, EMBEDDED, SecretBox.from_home(tmp_path))
    assert later.load(person_key_name("carol"), carols.key_id) is not None  # others unchanged
    with pytest.raises(PassphraseRequiredError, match="bob's signing key is protected"):
        later.load(name, first.key_id)
    later.ask = lambda person: "a guess"
    with pytest.raises(WrongPassphraseError, match="does not open bob's signing key"):
        later.load(name, first.key_id)
    with pytest.raises(WrongPassphraseError):
        later.create(name)  # nor may a guess make bob a new key
    later.ask = lambda person: "bob's words"
    assert later.load(name, second.key_id).key_id == second.key_id
    third = later.create(name)  # rotation, under his passphrase too
    for path in later.held(name):
        with pytest.raises(WrongPassphraseError):
            KeyFile.read(path, machine)

    # The desk's way: proven once by opening his newest key, then he signs.
    desk = LocalKeys(tmp_path, EMBEDDED, SecretBox.from_home(tmp_path))
    with pytest.raises(WrongPassphraseError):
        desk.unlock("bob", "not his")
    desk.unlock("bob", "bob's words")
    assert desk.load(name, third.key_id) is not None
    desk.forget()
    with pytest.raises(PassphraseRequiredError):
        desk.load(name, third.key_id)
    with pytest.raises(NoPersonalPassphraseError, match="carol sets one of their own"):
        desk.unlock("carol", "anything")


def test_an_interrupted_change_is_completed_by_running_it_again(tmp_path: Path) -> None:
    local = _local(tmp_path, "bob")
    name = person_key_name("bob")
    keys = [local.create(name) for _ in range(3)]
    first = local.held(name)[0]
    # As if the last change stopped after one file: it is under the new passphrase already.
    done = next(k for k in keys if first.name.endswith(f"{k.key_id[:16]}.pem"))
    KeyFile.rewrite(first, done, local._file_passphrase(name, done.key_id[:16], b"new words"))
    assert local.protect("bob", "new words") == 2
    fresh = LocalKeys(tmp_path, EMBEDDED, SecretBox.from_home(tmp_path))
    fresh.ask = lambda person: "new words"
    assert [fresh.load(name, k.key_id) is not None for k in keys] == [True, True, True]
