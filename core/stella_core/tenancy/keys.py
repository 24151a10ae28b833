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
for the demo and a copied key file alone is useless. A person may put their key files (every
generation) under a passphrase of their own instead (`stella keys passphrase`): then only they
can sign with it, whoever else uses this machine's account. Their profile records that it is so;
the passphrase itself is never stored, only held in memory for the session that was given it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from stella_core.crypto.keys import (
    KeyFile,
    PublicKey,
    SigningKey,
    WrongPassphraseError,
    personal_passphrase,
    stretch_passphrase,
)
from stella_core.crypto.secretbox import SecretBox
from stella_core.errors import DefinitionError, NotFoundError
from stella_core.profiles import EMBEDDED, ProfileStore

ORCHESTRATOR = "orchestrator"
PERSON_PREFIX = "person."
_PASSPHRASE_ENV = "STELLA_KEY_PASSPHRASE"  # noqa: S105 (a variable name, not a secret)
_PERSONAL_SALT = b"stella personal key file v1\0"

# Asks for a person's passphrase when a session was not given it (the CLI: its environment or
# a terminal prompt). Raises PassphraseRequiredError when it cannot.
AskPassphrase = Callable[[str], str]


def person_key_name(person: str) -> str:
    return f"{PERSON_PREFIX}{person}"


def _person_of(name: str) -> str | None:
    return name.removeprefix(PERSON_PREFIX) if name.startswith(PERSON_PREFIX) else None


class PassphraseRequiredError(DefinitionError):
    """A person's key is under their own passphrase, and this session was not given it."""


class NoPersonalPassphraseError(DefinitionError):
    """A person's key has no passphrase of their own, where one is needed to prove who they are."""


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
        self.target = target
        self._profiles = ProfileStore(home)
        self._secrets = secrets
        self._cache: dict[str, SigningKey] = {}
        # Personal passphrases this session was given (or asked for, and found right).
        self._personal: dict[str, bytes] = {}
        self.ask: AskPassphrase | None = None

    def protected(self, person: str) -> bool:
        """Whether `person`'s key files are under their own passphrase on this machine."""
        return self._profiles.key_protected(self.target, person)

    def _passphrase(self) -> bytes:
        given = os.environ.get(_PASSPHRASE_ENV)
        if given:
            return given.encode()
        return self._secrets.derive("stella key files v1").hex().encode()

    def _file_passphrase(self, name: str, prefix: str, personal: bytes | None) -> bytes:
        """What encrypts one key file: the machine's passphrase, or the person's stretched with
        a salt of its own (the file's name)."""
        if personal is None:
            return self._passphrase()
        return stretch_passphrase(personal, _PERSONAL_SALT + f"{name}-{prefix}".encode())

    def _personal_for(self, name: str) -> bytes | None:
        """The personal passphrase that protects `name`'s files; None for the machine's."""
        person = _person_of(name)
        if person is None or not self.protected(person):
            return None
        given = self._personal.get(person)
        if given is not None:
            return given
        if self.ask is None:
            raise PassphraseRequiredError(
                f"{person}'s signing key is protected by their own passphrase, and none was given"
            )
        return personal_passphrase(self.ask(person))

    def _read(self, path: Path, name: str, personal: bytes | None) -> SigningKey:
        prefix = KeyFile.key_id_prefix(path)
        person = _person_of(name)
        try:
            key = KeyFile.read(path, self._file_passphrase(name, prefix, personal))
        except WrongPassphraseError as exc:
            if person is None:
                raise
            if personal is None:
                raise WrongPassphraseError(
                    f"cannot open {person}'s key file {path.name} with this machine's passphrase "
                    "(if setting a passphrase was interrupted, set it again)",
                    remedy=("keys-passphrase", person),
                ) from exc
            self._personal.pop(person, None)
            raise WrongPassphraseError(
                f"that passphrase does not open {person}'s signing key "
                f"(wrong passphrase, or the key file {path.name} is damaged)"
            ) from exc
        if person is not None and personal is not None:
            self._personal[person] = personal
        return key

    def _opens(self, path: Path, name: str, personal: bytes) -> bool:
        prefix = KeyFile.key_id_prefix(path)
        try:
            KeyFile.read(path, self._file_passphrase(name, prefix, personal))
        except WrongPassphraseError:
            return False
        return True

    def create(self, name: str) -> SigningKey:
        key = SigningKey.generate()
        personal = self._personal_for(name)
        held = self.held(name)
        if personal is not None and held:
            # A new generation only for whoever opens the current one: rotating must not be a
            # way round the passphrase (nor a typo lock the person out of their next key).
            self._read(max(held, key=lambda p: p.stat().st_mtime), name, personal)
        passphrase = self._file_passphrase(name, key.key_id[:16], personal)
        KeyFile.write(self.directory, name, key, passphrase)
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
        key = self._read(path, name, self._personal_for(name))
        if key.key_id != key_id:
            return None
        self._cache[key_id] = key
        return key

    def held(self, name: str) -> list[Path]:
        return KeyFile.versions(self.directory, name) if self.directory.exists() else []

    # a person's own passphrase ----------------------------------------------------------
    def unlock(self, person: str, passphrase: str) -> None:
        """Prove `person` is here: their passphrase must open their newest key file on this
        machine. This session then signs as them without asking again."""
        name = person_key_name(person)
        if not self.protected(person):
            raise NoPersonalPassphraseError(
                f"{person}'s signing key has no passphrase of their own, so nothing proves "
                f"who is acting as {person}; {person} sets one of their own",
                remedy=("keys-passphrase", person),
            )
        held = self.held(name)
        if not held:
            raise NotFoundError(
                f"this machine holds no signing key of {person}'s to check the passphrase "
                f"against; {person} makes one by rotating their key",
                remedy=("keys-rotate", person),
            )
        key = self._read(
            max(held, key=lambda p: p.stat().st_mtime), name, personal_passphrase(passphrase)
        )
        self._cache[key.key_id] = key

    def unlocked(self, person: str) -> bool:
        """Whether this session holds `person`'s passphrase (given, or asked and found right)."""
        return person in self._personal

    def remember(self, person: str, passphrase: str) -> None:
        """For a person who has no key file yet (just added): their first key is made under
        `passphrase`. Nothing is checked: there is nothing to check it against."""
        self._personal[person] = personal_passphrase(passphrase)

    def forget(self) -> None:
        """Drop the passphrases and private keys this session holds (a desk switching away)."""
        self._personal.clear()
        self._cache.clear()

    def protect(self, person: str, passphrase: str) -> int:
        """Put every generation of `person`'s key files under `passphrase` (first or new), and
        record in their profile that it is so. Returns how many files were re-encrypted.

        Every file is opened before any is written, and each is replaced atomically; a change
        that was interrupted is completed by running it again with the same passphrase (files
        already under it are left alone)."""
        name = person_key_name(person)
        new = personal_passphrase(passphrase)
        held = self.held(name)
        current = self._personal_for(name) if held else None
        opened: list[tuple[Path, SigningKey]] = []
        for path in held:
            try:
                opened.append((path, self._read(path, name, current)))
            except WrongPassphraseError:
                if not self._opens(path, name, new):
                    raise
                # An interrupted change put this one under the new passphrase already.
        for path, key in opened:
            KeyFile.rewrite(path, key, self._file_passphrase(name, key.key_id[:16], new))
            self._cache[key.key_id] = key
        self._profiles.protect_key(self.target, person)
        self._personal[person] = new
        return len(opened)


class NoSigningKeyError(NotFoundError):
    """This machine does not hold the private key that should sign."""
