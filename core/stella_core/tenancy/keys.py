"""Signing keys: private parts in this machine's key files, public parts registered in `tenancy`.

- The orchestrator key signs system decisions (run outcomes, gate verdicts, checkpoints). Its
  private part lives with whoever runs the orchestrator (`STELLA_HOME/keys/<target>/`); an admin
  registers its public part.
- Each person has a personal key, created by their own session on first need and registered by
  them (the database lets a person register only their own), so the private key never leaves the
  machine and the account of its owner.
- Rotation registers a new key; old public keys stay registered, so old evidence still verifies.
  The active key of an owner is the newest registered one.

Key files are encrypted PKCS#8 PEM (mode 0600). Their passphrase is `STELLA_KEY_PASSPHRASE` if
set, otherwise derived from this machine's secret key (STELLA_HOME/secrets), so nothing is typed
for the demo and a copied key file alone is useless.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, text

from stella_core.crypto.keys import KeyFile, PublicKey, SigningKey
from stella_core.crypto.secretbox import SecretBox
from stella_core.errors import NotFoundError
from stella_core.profiles import EMBEDDED

ORCHESTRATOR = "orchestrator"
_PASSPHRASE_ENV = "STELLA_KEY_PASSPHRASE"  # noqa: S105 (a variable name, not a secret)


@dataclass(frozen=True, slots=True)
class RegisteredKey:
    key_id: str
    owner_kind: str  # "orchestrator" | "person"
    owner: str
    public_key: PublicKey
    registered_at: datetime
    registered_by: str

    def to_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "owner_kind": self.owner_kind,
            "owner": self.owner,
            "registered_at": self.registered_at.isoformat(),
            "registered_by": self.registered_by,
        }


class LocalKeys:
    """Private key files of one database target on this machine."""

    def __init__(self, home: Path, target: str, secrets: SecretBox) -> None:
        slug = EMBEDDED if target == EMBEDDED else hashlib.sha256(target.encode()).hexdigest()[:16]
        self.directory = home / "keys" / slug
        self._secrets = secrets
        self._cache: dict[str, SigningKey] = {}

    def _passphrase(self) -> bytes:
        given = os.environ.get(_PASSPHRASE_ENV)
        if given:
            return given.encode()
        return self._secrets.derive("stella key files v1").hex().encode()

    def create(self, name: str) -> SigningKey:
        key = SigningKey.generate()
        KeyFile.write(self.directory, name, key, self._passphrase())
        self._cache[key.key_id] = key
        return key

    def load(self, name: str, key_id: str) -> SigningKey | None:
        """The private key `key_id` of `name`, or None if this machine does not hold it."""
        cached = self._cache.get(key_id)
        if cached is not None:
            return cached
        path = self.directory / KeyFile.filename(name, key_id)
        if not path.exists():
            return None
        key = KeyFile.read(path, self._passphrase())
        if key.key_id != key_id:
            return None
        self._cache[key_id] = key
        return key

    def held(self, name: str) -> list[Path]:
        return KeyFile.versions(self.directory, name) if self.directory.exists() else []


class KeyStore:
    """Registered public keys (RLS: the caller's tenant only)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def register(self, tenant_id: UUID, owner_kind: str, owner: str, key: PublicKey) -> None:
        self.conn.execute(
            text(
                "INSERT INTO tenancy.signing_keys"
                " (tenant_id, key_id, owner_kind, owner, public_key)"
                " VALUES (:t, :k, :kind, :owner, :pem) ON CONFLICT DO NOTHING"
            ),
            {
                "t": tenant_id,
                "k": key.key_id,
                "kind": owner_kind,
                "owner": owner,
                "pem": key.pem().decode("ascii"),
            },
        )

    def registered(self, owner: str | None = None) -> list[RegisteredKey]:
        rows = self.conn.execute(
            text(
                "SELECT key_id, owner_kind, owner, public_key, registered_at, created_by"
                " FROM tenancy.signing_keys WHERE (CAST(:o AS text) IS NULL OR owner = :o)"
                " ORDER BY registered_at, key_id"
            ),
            {"o": owner},
        ).all()
        return [
            RegisteredKey(
                key_id=r.key_id,
                owner_kind=r.owner_kind,
                owner=r.owner,
                public_key=PublicKey.from_pem(r.public_key.encode("ascii")),
                registered_at=r.registered_at,
                registered_by=r.created_by,
            )
            for r in rows
        ]

    def active(self, owner: str) -> RegisteredKey | None:
        keys = self.registered(owner)
        return keys[-1] if keys else None

    def public_keys(self) -> dict[str, PublicKey]:
        return {k.key_id: k.public_key for k in self.registered()}


class NoSigningKeyError(NotFoundError):
    """This machine does not hold the private key that should sign."""
