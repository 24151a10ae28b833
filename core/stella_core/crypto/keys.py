"""Signing keys for evidence: ECDSA P-256 with SHA-256, DER signatures, SPKI PEM public keys.

P-256 is the one curve every verifier an auditor may hold accepts (cosign, openssl, sigstore-js,
securesystemslib); Ed25519 is refused by cosign v3 defaults (standards.md A.6), so there is no
algorithm choice here on purpose. A key id is the lowercase hex SHA-256 of the SPKI DER public key
(the same fingerprint `openssl pkey -pubin -outform DER | sha256sum` prints), so anyone can
recompute it from the public key alone.

Private keys leave memory only as encrypted PKCS#8 PEM. No repr, message or log line shows
private material or a passphrase.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from stella_core.errors import AlreadyExistsError, DefinitionError, IntegrityError

# One instance: the signature algorithm object is immutable and building it per call costs time
# on the hot signing path.
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_KEY_FILE = re.compile(r"^(?P<name>.+)-(?P<prefix>[0-9a-f]{16})\.pem$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


# scrypt's cost for a passphrase a person chose (OWASP's minimum: N=2^17, r=8, p=1), about half
# a second and 128 MiB per key file opened.
_SCRYPT_N = 2**17
_SCRYPT_R = 8
_SCRYPT_P = 1


class WrongPassphraseError(DefinitionError):
    """The passphrase does not open this private key (or the file is damaged)."""


def personal_passphrase(text: str) -> bytes:
    """A passphrase a person chose, as the bytes that protect their key: NFC-normalised UTF-8
    (the same words typed on another keyboard give the same bytes). Empty passphrases and NUL
    characters are refused; the message never repeats the passphrase."""
    if not text:
        raise DefinitionError("the passphrase is empty; a signing key needs a non-empty one")
    if "\0" in text:
        raise DefinitionError("the passphrase contains a NUL character, which is not allowed")
    return unicodedata.normalize("NFC", text).encode("utf-8")


def stretch_passphrase(passphrase: bytes, salt: bytes) -> bytes:
    """What encrypts a key file protected by a person's passphrase: scrypt of it, in hex.

    PKCS#8 as `cryptography` writes it derives the file's key with 2048 rounds of PBKDF2; that
    is enough for the machine's random 256-bit passphrase and far too little for one a person
    types, which an attacker holding the file could guess at millions a second."""
    return (
        hashlib.scrypt(
            passphrase,
            salt=salt,
            n=_SCRYPT_N,
            r=_SCRYPT_R,
            p=_SCRYPT_P,
            maxmem=256 * 1024 * 1024,
            dklen=32,
        )
        .hex()
        .encode("ascii")
    )


def _check_curve(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey, what: str) -> None:
    if not isinstance(key.curve, ec.SECP256R1):
        raise DefinitionError(
            f"{what} is on curve {key.curve.name}; only ECDSA P-256 (secp256r1) is accepted"
        )


def _p256_public(key: object) -> ec.EllipticCurvePublicKey:
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise DefinitionError("public key is not an EC key; only ECDSA P-256 keys are accepted")
    _check_curve(key, "public key")
    return key


def _p256_private(key: object) -> ec.EllipticCurvePrivateKey:
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise DefinitionError("private key is not an EC key; only ECDSA P-256 keys are accepted")
    _check_curve(key, "private key")
    return key


class PublicKey:
    """An ECDSA P-256 public key; equal keys have equal key ids."""

    __slots__ = ("_der", "_key", "_key_id")

    def __init__(self, key: ec.EllipticCurvePublicKey) -> None:
        self._key = _p256_public(key)
        self._der = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self._key_id = hashlib.sha256(self._der).hexdigest()

    @classmethod
    def from_pem(cls, data: bytes) -> PublicKey:
        """Load an SPKI `PUBLIC KEY` PEM; anything else (certificate, private key, RSA, another
        curve) is refused with a DefinitionError."""
        if b"PRIVATE KEY" in data:
            # Refuse before parsing so a misplaced private key never reaches an error message.
            raise DefinitionError("expected a public key (SPKI PEM) but got a private key")
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise DefinitionError(
                "not a PEM public key (expected -----BEGIN PUBLIC KEY----- with an "
                "ECDSA P-256 SubjectPublicKeyInfo)"
            ) from exc
        return cls(_p256_public(key))

    @classmethod
    def from_der(cls, data: bytes) -> PublicKey:
        try:
            key = serialization.load_der_public_key(data)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise DefinitionError("not a DER SubjectPublicKeyInfo public key") from exc
        return cls(_p256_public(key))

    @property
    def key_id(self) -> str:
        """Lowercase hex SHA-256 of the SPKI DER encoding."""
        return self._key_id

    def der(self) -> bytes:
        return self._der

    def pem(self) -> bytes:
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def verify(self, signature: bytes, data: bytes) -> bool:
        """True when `signature` (ASN.1 DER ECDSA) signs `data`; False for any bad signature,
        including malformed DER. Never raises for a bad signature."""
        try:
            self._key.verify(signature, data, _ECDSA_SHA256)
        except (InvalidSignature, ValueError, TypeError):
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other._key_id == self._key_id

    def __hash__(self) -> int:
        return hash(self._key_id)

    def __repr__(self) -> str:
        return f"PublicKey(key_id={self._key_id!r})"


class SigningKey:
    """An ECDSA P-256 private key. Its repr shows the key id only."""

    __slots__ = ("_key", "_public")

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = _p256_private(key)
        self._public = PublicKey(key.public_key())

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @property
    def key_id(self) -> str:
        return self._public.key_id

    def public_key(self) -> PublicKey:
        return self._public

    def sign(self, data: bytes, *, deterministic: bool = False) -> bytes:
        """ECDSA P-256 / SHA-256 over `data`, as an ASN.1 DER signature (what openssl and cosign
        expect). Signatures are randomized: signing twice gives different bytes. With
        `deterministic` the nonce is derived from the key and the message (RFC 6979, OpenSSL's
        implementation): the same key signing the same bytes gives the same signature, which
        any ECDSA verifier accepts like any other."""
        if not deterministic:
            return self._key.sign(data, _ECDSA_SHA256)
        try:
            algorithm = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
        except UnsupportedAlgorithm as exc:
            raise IntegrityError(
                "this build of cryptography cannot sign deterministically (RFC 6979 needs "
                "OpenSSL 3.2 or later)"
            ) from exc
        return self._key.sign(data, algorithm)

    def to_encrypted_pem(self, passphrase: bytes) -> bytes:
        """PKCS#8 `ENCRYPTED PRIVATE KEY` PEM under the best encryption `cryptography` offers."""
        if not passphrase:
            raise DefinitionError("a non-empty passphrase is required to store a private key")
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase),
        )

    @classmethod
    def from_encrypted_pem(cls, data: bytes, passphrase: bytes) -> SigningKey:
        if not passphrase:
            raise DefinitionError("a non-empty passphrase is required to open a private key")
        if b"ENCRYPTED PRIVATE KEY" not in data:
            # An unencrypted key on disk is a policy violation, not a format we quietly accept.
            raise DefinitionError(
                "expected an encrypted PKCS#8 private key in PEM form (ENCRYPTED PRIVATE KEY)"
            )
        try:
            key = serialization.load_pem_private_key(data, passphrase)
        except ValueError as exc:
            # cryptography cannot tell a wrong passphrase from a damaged file; say both.
            raise WrongPassphraseError(
                "cannot open the private key: wrong passphrase, or the key file is damaged"
            ) from exc
        except (TypeError, UnsupportedAlgorithm) as exc:
            raise DefinitionError("not a usable encrypted PKCS#8 private key") from exc
        return cls(_p256_private(key))

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r})"

    def __reduce__(self) -> str | tuple[Any, ...]:
        # Pickling would copy the private scalar somewhere we do not control (queues, caches).
        raise TypeError("SigningKey cannot be pickled; store it with to_encrypted_pem()")


class KeyFile:
    """Key files in a directory, named `<name>-<key_id[:16]>.pem` so rotated keys sit side by
    side (old public keys must stay available for old evidence)."""

    @staticmethod
    def filename(name: str, key_id: str, *, suffix: str = ".pem") -> str:
        if not _NAME.match(name):
            raise DefinitionError(
                f"key name {name!r} is not allowed (letters, digits, '.', '_', '-'; at most 63)"
            )
        if not re.fullmatch(r"[0-9a-f]{64}", key_id):
            raise DefinitionError("key id must be 64 lowercase hex characters")
        return f"{name}-{key_id[:16]}{suffix}"

    @staticmethod
    def write(directory: Path, name: str, key: SigningKey, passphrase: bytes) -> Path:
        """Write the encrypted private key with mode 0600, atomically and never over an
        existing file. Returns the path."""
        pem = key.to_encrypted_pem(passphrase)
        return _write_new(directory, KeyFile.filename(name, key.key_id), pem, 0o600)

    @staticmethod
    def write_public(directory: Path, name: str, key: PublicKey) -> Path:
        """Write the SPKI PEM public key as `<name>-<key_id[:16]>.pub` (mode 0644)."""
        filename = KeyFile.filename(name, key.key_id, suffix=".pub")
        return _write_new(directory, filename, key.pem(), 0o644)

    @staticmethod
    def read(path: Path, passphrase: bytes) -> SigningKey:
        """Read a private key file written by `write`. Refuses files readable by others (as ssh
        does), and a file whose name claims another key id."""
        if os.name == "posix":
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                raise DefinitionError(
                    f"private key file {path} is accessible by others (mode {mode:04o}); "
                    "restrict it to mode 0600"
                )
        key = SigningKey.from_encrypted_pem(path.read_bytes(), passphrase)
        match = _KEY_FILE.match(path.name)
        if match and not key.key_id.startswith(match["prefix"]):
            raise IntegrityError(
                f"key file {path.name} is named for key {match['prefix']}… but holds key "
                f"{key.key_id[:16]}…"
            )
        return key

    @staticmethod
    def rewrite(path: Path, key: SigningKey, passphrase: bytes) -> Path:
        """Encrypt `key` under another passphrase in place of its file `path`, atomically: the
        file holds the old or the new encryption, never a mix, and is never readable by others."""
        match = _KEY_FILE.match(path.name)
        if match is None or not key.key_id.startswith(match["prefix"]):
            raise IntegrityError(f"key file {path.name} does not hold key {key.key_id[:16]}…")
        pem = key.to_encrypted_pem(passphrase)
        return _write(path.parent, path.name, pem, 0o600, replace=True)

    @staticmethod
    def key_id_prefix(path: Path) -> str:
        """The first 16 hex characters of the key id a key file is named for."""
        match = _KEY_FILE.match(path.name)
        if match is None:
            raise DefinitionError(f"{path.name} is not named like a key file")
        return match["prefix"]

    @staticmethod
    def versions(directory: Path, name: str) -> list[Path]:
        """Every private key file of `name` in `directory` (all rotations), sorted by path."""
        found = []
        for path in directory.glob(f"{name}-*.pem"):
            match = _KEY_FILE.match(path.name)
            if match and match["name"] == name:
                found.append(path)
        return sorted(found)


def _write_new(directory: Path, filename: str, data: bytes, mode: int) -> Path:
    return _write(directory, filename, data, mode, replace=False)


def _write(directory: Path, filename: str, data: bytes, mode: int, *, replace: bool) -> Path:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    final = directory / filename
    # Write a temporary file created exclusively with its final mode (never briefly readable),
    # flush it to disk, then link it into place: link fails if the target exists, so a key file
    # is never half-written and never overwritten (unless replacing is asked for: then it is
    # renamed over the old one, which is atomic too).
    tmp = directory / f".{filename}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # the umask may have narrowed (or, for 0644, kept) the mode
        if replace:
            os.replace(tmp, final)
            return _synced(directory, final)
        try:
            os.link(tmp, final)
        except FileExistsError as exc:
            raise AlreadyExistsError(f"key file {final} exists already") from exc
        except OSError:
            # Filesystems without hard links: rename, after checking (a small race we accept).
            if final.exists():
                raise AlreadyExistsError(f"key file {final} exists already") from None
            os.rename(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return _synced(directory, final)


def _synced(directory: Path, final: Path) -> Path:
    if os.name == "posix":
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return final
