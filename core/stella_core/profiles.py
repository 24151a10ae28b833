"""Connection profiles: one per person on this machine, so the CLI and desktop can act as them.

Stored in STELLA_HOME/profiles.json (mode 0600) grouped by database target ("embedded" or an
external server address), because the same names may exist on several databases. A profile
records whether its person's signing key is under their own passphrase, never the passphrase.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit
from uuid import UUID

import platformdirs

from stella_core.errors import DefinitionError, NotFoundError

EMBEDDED = "embedded"
DATABASE_URL_ENV = "STELLA_DATABASE_URL"


def stella_home(*, create: bool = True) -> Path:
    """STELLA_HOME, else the platform's data directory; made (0700) unless `create` is False."""
    override = os.environ.get("STELLA_HOME")
    home = Path(override) if override else Path(platformdirs.user_data_dir("stella-desk"))
    if create:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
    return home.resolve()


def target_of(database_url: str | None) -> str:
    """The key of a database target: credentials stripped so they never enter the key."""
    if not database_url:
        return EMBEDDED
    parts = urlsplit(database_url)
    host = parts.hostname or "localhost"
    port = parts.port or 5432
    return f"postgresql://{host}:{port}{parts.path or '/postgres'}"


class DatabaseSetting:
    """Which database this machine's desk and CLI use when STELLA_DATABASE_URL is not set: the
    embedded default, or a shared PostgreSQL server. STELLA_HOME/database.json (mode 0600)
    holds the server's address without its password; the password is sealed with this
    machine's secret box (as registry passwords are), so the file never shows it."""

    _CONTEXT = "database-url"

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / "database.json"

    def _box(self) -> Any:
        from stella_core.crypto.secretbox import SecretBox

        return SecretBox.from_home(self.home)

    def shown(self) -> str | None:
        """The saved server's URL without its password (None: the embedded default)."""
        value = read_private_json(self.path, "database setting").get("url")
        return str(value) if value else None

    def has_password(self) -> bool:
        return bool(read_private_json(self.path, "database setting").get("password"))

    def url(self) -> str | None:
        """The saved server's URL with its password, to connect with (None: embedded)."""
        data = read_private_json(self.path, "database setting")
        shown = data.get("url")
        if not shown:
            return None
        sealed = data.get("password")
        if not sealed:
            return str(shown)
        password = self._box().open(bytes.fromhex(str(sealed)), context=self._CONTEXT)
        return with_password(str(shown), password)

    def save(self, url: str | None) -> None:
        """Use this server from now on (None: the embedded default again)."""
        if not url:
            write_private_json(self.path, {})
            return
        parts = urlsplit(url)
        data: dict[str, Any] = {"url": without_password(url)}
        if parts.password:
            sealed = self._box().seal(unquote(parts.password), context=self._CONTEXT)
            data["password"] = sealed.hex()
        write_private_json(self.path, data)


def without_password(url: str) -> str:
    """A database URL as it may be shown or logged: its password left out."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}@" if parts.username else ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{user}{host}{port}", parts.path, parts.query, ""))


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def configured_database_url(home: Path) -> str | None:
    """The database to use: STELLA_DATABASE_URL when set, else the saved setting, else None
    (the embedded default)."""
    return os.environ.get(DATABASE_URL_ENV) or DatabaseSetting(home).url() or None


@dataclass(frozen=True)
class Profile:
    name: str
    target: str
    user: str
    password: str
    tenant_id: str
    # The person's key files are encrypted under their own passphrase ('stella keys
    # passphrase'), not the one derived from this machine's secret.
    key_passphrase: bool = False
    # The person's name; `user` is their login role (named by tenant and person since 0012;
    # profiles from before have neither this field nor a different role).
    person: str | None = None

    @property
    def tenant(self) -> UUID:
        return UUID(self.tenant_id)

    @property
    def person_name(self) -> str:
        return self.person or self.user

    def __repr__(self) -> str:
        return f"Profile(name={self.name!r}, target={self.target!r}, user={self.user!r})"


class ProfileStore:
    def __init__(self, home: Path) -> None:
        self.path = home / "profiles.json"

    def _load(self) -> dict[str, dict[str, object]]:
        return read_private_json(self.path, "profiles file")

    def _save(self, data: dict[str, dict[str, object]]) -> None:
        write_private_json(self.path, data)

    def save(self, profile: Profile, *, make_default: bool = False) -> None:
        data = self._load()
        section = data.setdefault(profile.target, {"default": None, "profiles": {}})
        profiles = section.setdefault("profiles", {})
        assert isinstance(profiles, dict)
        profiles[profile.name] = asdict(profile)
        if make_default or not section.get("default"):
            section["default"] = profile.name
        self._save(data)

    def get(self, target: str, name: str | None) -> Profile:
        section = self._load().get(target) or {}
        profiles = section.get("profiles") or {}
        assert isinstance(profiles, dict)
        chosen = name or section.get("default")
        if not chosen:
            raise NotFoundError(
                f"no profile for {target}; create the database schema first",
                remedy=("db-upgrade",),
            )
        raw = profiles.get(chosen)
        if raw is None:
            known = ", ".join(sorted(profiles)) or "none"
            raise NotFoundError(f"no profile named {chosen!r} for {target} (known: {known})")
        return Profile(**raw)

    def protect_key(self, target: str, user: str) -> None:
        """Record that `user`'s key is under their own passphrase (on every profile of theirs
        for this target)."""
        data = self._load()
        profiles = (data.get(target) or {}).get("profiles") or {}
        assert isinstance(profiles, dict)
        mine = [p for p in profiles.values() if (p.get("person") or p.get("user")) == user]
        if not mine:
            raise NotFoundError(f"no profile of {user!r} for {target}")
        for raw in mine:
            raw["key_passphrase"] = True
        self._save(data)

    def key_protected(self, target: str, user: str) -> bool:
        """Whether `user`'s key is under their own passphrase on this machine."""
        profiles = (self._load().get(target) or {}).get("profiles") or {}
        assert isinstance(profiles, dict)
        return any(
            (p.get("person") or p.get("user")) == user and p.get("key_passphrase")
            for p in profiles.values()
        )

    def name_for(self, target: str, tenant_id: UUID, person: str) -> str | None:
        """The name of this person's profile (None: no profile of theirs on this machine)."""
        profiles = (self._load().get(target) or {}).get("profiles") or {}
        assert isinstance(profiles, dict)
        for name, raw in sorted(profiles.items()):
            if raw.get("tenant_id") == str(tenant_id) and (
                (raw.get("person") or raw.get("user")) == person
            ):
                return str(name)
        return None

    def free_name(self, target: str, tenant_id: UUID, person: str, tenant_name: str) -> str:
        """A profile name for a new person: their name, unless a person of another tenant has
        that profile on this machine already (then `name@tenant`)."""
        profiles = (self._load().get(target) or {}).get("profiles") or {}
        assert isinstance(profiles, dict)
        taken = profiles.get(person)
        if taken is None or taken.get("tenant_id") == str(tenant_id):
            return person
        return f"{person}@{tenant_name}"

    def names(self, target: str) -> list[str]:
        section = self._load().get(target) or {}
        profiles = section.get("profiles") or {}
        assert isinstance(profiles, dict)
        return sorted(profiles)

    def default_name(self, target: str) -> str | None:
        value = (self._load().get(target) or {}).get("default")
        return str(value) if value else None

    def has_any(self, target: str) -> bool:
        return bool(self.names(target))


@dataclass(frozen=True)
class OrchestratorLogin:
    """The orchestrator's database login for one tenant: kept only on the machines that run
    the orchestrator (stella serve, or the desk and CLI on the embedded default)."""

    target: str
    tenant_id: str
    user: str
    password: str

    def __repr__(self) -> str:
        return f"OrchestratorLogin(target={self.target!r}, user={self.user!r})"


class OrchestratorLogins:
    """STELLA_HOME/orchestrator.json (mode 0600), by target and tenant."""

    def __init__(self, home: Path) -> None:
        self.path = home / "orchestrator.json"

    def _load(self) -> dict[str, Any]:
        return read_private_json(self.path, "orchestrator credentials file")

    def get(self, target: str, tenant_id: UUID) -> OrchestratorLogin | None:
        raw = (self._load().get(target) or {}).get(str(tenant_id))
        if not isinstance(raw, dict):
            return None
        return OrchestratorLogin(target, str(tenant_id), str(raw["user"]), str(raw["password"]))

    def save(self, login: OrchestratorLogin) -> None:
        data = self._load()
        data.setdefault(login.target, {})[login.tenant_id] = {
            "user": login.user,
            "password": login.password,
        }
        write_private_json(self.path, data)


def read_private_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from a file of this machine's secrets ({} when there is none yet)."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DefinitionError(f"cannot read the {what} {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise DefinitionError(f"{path} is not a {what}")
    return data


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    """Replace the file at once, readable by this OS user only (mode 0600)."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
    os.replace(tmp, path)
