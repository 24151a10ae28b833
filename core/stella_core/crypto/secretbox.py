"""Secrets at rest (registry passwords): AES-256-GCM under a key that never leaves this machine.

The key lives in STELLA_HOME with mode 0600; the database only ever holds ciphertext, bound by
associated data to the row it belongs to so a ciphertext cannot be moved to another registry.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from stella_core.errors import IntegrityError

_VERSION = b"\x01"
_NONCE = 12


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("secret box key must be 32 bytes")
        self._aead = AESGCM(key)
        self._key = key

    def derive(self, label: str) -> bytes:
        """A 32-byte secret for one purpose (HKDF-SHA256): one stored key, separate uses."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label.encode()).derive(
            self._key
        )

    @classmethod
    def from_home(cls, home: Path) -> SecretBox:
        path = home / "secrets" / "secretbox.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(AESGCM.generate_key(bit_length=256))
        return cls(path.read_bytes())

    def seal(self, plaintext: str, *, context: str) -> bytes:
        nonce = os.urandom(_NONCE)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext.encode(), context.encode())

    def open(self, sealed: bytes, *, context: str) -> str:
        if len(sealed) < 1 + _NONCE + 16 or sealed[:1] != _VERSION:
            raise IntegrityError("stored secret is malformed")
        nonce, body = sealed[1 : 1 + _NONCE], sealed[1 + _NONCE :]
        try:
            return self._aead.decrypt(nonce, body, context.encode()).decode()
        except InvalidTag as exc:
            raise IntegrityError(
                "stored secret cannot be decrypted with this machine's key "
                "(was it added from another machine?)"
            ) from exc

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"
