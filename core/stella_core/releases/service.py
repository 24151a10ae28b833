"""Release use cases: registries, components, and creating immutable digest-pinned releases."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit
from uuid import UUID

from sqlalchemy import Connection

from stella_core.crypto.secretbox import SecretBox
from stella_core.db.engine import Database
from stella_core.errors import (
    AlreadyExistsError,
    DefinitionError,
    DigestMismatchError,
    InvalidReferenceError,
    NotFoundError,
    StellaError,
)
from stella_core.limits import check_name, check_text, text_problem
from stella_core.releases.compose import check_service_fragment
from stella_core.releases.model import (
    Component,
    ComponentPin,
    Registry,
    RegistryKind,
    Release,
    ReleaseComponent,
    ResolvedManifest,
)
from stella_core.releases.reference import (
    check_release_name,
    check_repository,
    parse_image,
)
from stella_core.releases.store import ReleaseStore
from stella_core.tenancy.model import ProductRole
from stella_core.tenancy.service import TenancyService

log = logging.getLogger(__name__)

# (done, total, message) — called from worker threads; the desktop marshals it to the UI.
Progress = Callable[[int, int, str], None]
WRITERS = (ProductRole.RELEASE_MANAGER, ProductRole.ADMIN)
MAX_COMPONENTS_PER_RELEASE = 200
RESOLVE_THREADS = 8


_SPACE_OR_CONTROL = re.compile(r"[\x00-\x20\x7f]")


def _layout_path(url: str) -> str:
    """The directory an OCI layout address names: `/abs/path`, `oci-layout:/abs/path`, or a
    file URL of this machine (`file:///abs/path`, `file://localhost/abs/path`, %-escapes
    decoded)."""
    if url.startswith("/"):
        path = url
    elif url.startswith("oci-layout:"):
        path = url.removeprefix("oci-layout:").removeprefix("//")
    else:
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise DefinitionError(
                f"file URL {url!r} names host {parts.netloc!r}: an OCI layout is a directory "
                "of this machine (file:///path)"
            )
        if parts.query or parts.fragment:
            raise DefinitionError(f"file URL must not have a query or fragment: {url!r}")
        path = unquote(parts.path)
    problem = text_problem(path)
    if problem is not None:
        raise DefinitionError(f"OCI layout path {path!r} {problem}")
    if not path.startswith("/"):
        raise DefinitionError(f"OCI layout path must be absolute: {url!r}")
    return path


def normalise_registry_url(url: str, *, insecure: bool) -> tuple[RegistryKind, str]:
    """Validate a registry address; an absolute path or file:// URL is an OCI layout directory."""
    url = url.strip()
    if not url:
        raise DefinitionError("registry URL is empty")
    if url.startswith(("file:", "oci-layout:", "/")):
        return RegistryKind.OCI_LAYOUT, Path(_layout_path(url)).as_uri()
    if _SPACE_OR_CONTROL.search(url) or text_problem(url) is not None:
        raise DefinitionError(
            f"registry URL {url!r} must not hold spaces, control characters or bytes that are "
            "not UTF-8"
        )
    try:
        if "://" not in url:
            # Like Docker: a loopback registry without a scheme speaks plain HTTP.
            host = urlsplit("//" + url).hostname or ""
            loopback = host == "localhost" or host.startswith("127.") or host == "::1"
            url = ("http://" if insecure or loopback else "https://") + url
        parts = urlsplit(url)
        _ = parts.hostname
    except ValueError as exc:  # an unclosed '[' or a bad IPv6 literal
        raise DefinitionError(f"registry URL {url!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise DefinitionError(f"registry URL must be http(s):// or a layout path: {url!r}")
    if parts.username or parts.password:
        raise DefinitionError(
            "do not put credentials in the registry URL; give the username and the password apart",
            field="username",
        )
    if not parts.hostname:
        raise DefinitionError(f"registry URL has no host: {url!r}")
    if parts.query or parts.fragment:
        raise DefinitionError(f"registry URL must not have a query or fragment: {url!r}")
    try:
        _ = parts.port
    except ValueError as exc:
        raise DefinitionError(f"registry URL has an invalid port: {url!r}") from exc
    if parts.netloc.endswith(":"):
        raise DefinitionError(f"registry URL has an empty port: {url!r}")
    return RegistryKind.DISTRIBUTION, urlunsplit(
        (parts.scheme, parts.netloc, parts.path.rstrip("/"), "", "")
    )


class ReleaseService:
    def __init__(
        self,
        db: Database,
        tenancy: TenancyService,
        secrets: SecretBox,
        *,
        timeout: float = 15.0,
        home: Path | None = None,
    ) -> None:
        self.db = db
        self.tenancy = tenancy
        self.secrets = secrets
        self.timeout = timeout
        # STELLA_HOME: an OCI layout this machine serves on loopback is recorded there.
        self.home = home

    @staticmethod
    def releases_in(conn: Connection, name: str | None = None) -> list[Release]:
        """Releases (newest first; one name or all) read in another module's transaction."""
        return ReleaseStore(conn).get_releases(name)

    @staticmethod
    def component_services_in(conn: Connection) -> dict[str, dict[str, Any] | None]:
        """Component name -> its compose service fragment (None: none given)."""
        return {c.name: c.service for c in ReleaseStore(conn).list_components()}

    @staticmethod
    def registry_hosts_in(conn: Connection) -> dict[str, str]:
        """Registry name -> the `host[:port]` targets pull from; OCI layouts (directories on
        this machine) have none."""
        return {
            r.name: urlsplit(r.url).netloc
            for r in ReleaseStore(conn).list_registries()
            if r.kind is RegistryKind.DISTRIBUTION and urlsplit(r.url).netloc
        }

    # registries -------------------------------------------------------------------------
    def add_registry(
        self,
        name: str,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        insecure: bool = False,
    ) -> Registry:
        check_name("registry", name)
        kind, url = normalise_registry_url(url, insecure=insecure)
        if password is not None and not username:
            raise DefinitionError("a password needs a username", field="username")
        if kind is RegistryKind.OCI_LAYOUT:
            if username:
                raise DefinitionError("an OCI layout directory takes no credentials")
            root = Path(unquote(urlsplit(url).path))
            if not root.is_dir():
                raise DefinitionError(
                    f"no directory at {root}: an OCI layout registry is a directory holding "
                    "one OCI image layout per repository"
                )
        if username is not None:
            check_text(username, "the username")
        if password is not None:
            check_text(password, "the password")
        identity = self.tenancy.require(*WRITERS)
        sealed = (
            self.secrets.seal(password, context=self._secret_context(identity.tenant_id, name))
            if password
            else None
        )
        with self.db.transaction() as conn:
            store = ReleaseStore(conn)
            if store.registry_row(name) is not None:
                raise AlreadyExistsError(f"registry {name!r} exists already")
            registry = store.insert_registry(
                identity.tenant_id, name, kind, url, username, sealed, insecure
            )
            TenancyService.audit(
                conn,
                identity.tenant_id,
                "registry.add",
                "registry",
                name,
                # Never the password: only whether one is held.
                {"url": url, "kind": kind.value, "username": username, "insecure": insecure},
            )
        return registry

    def remove_registry(self, name: str) -> Registry:
        """Remove a registry no component uses (release managers and admins); its sealed
        password goes with it. Releases keep their digests: they never name a registry row."""
        identity = self.tenancy.require(*WRITERS)
        with self.db.transaction() as conn:
            store = ReleaseStore(conn)
            row = store.registry_row(name)
            if row is None:
                raise NotFoundError(f"no registry named {name!r}")
            used = store.components_using(row.id)
            if used:
                raise DefinitionError(
                    f"registry {name!r} is used by component(s) {', '.join(used)}; "
                    "it stays while a component names it"
                )
            removed = next(r for r in store.list_registries() if r.name == name)
            store.delete_registry(row.id)
            TenancyService.audit(
                conn, identity.tenant_id, "registry.remove", "registry", name, {"url": row.url}
            )
        return removed

    def list_registries(self) -> list[Registry]:
        with self.db.transaction() as conn:
            return ReleaseStore(conn).list_registries()

    @staticmethod
    def _secret_context(tenant_id: UUID, registry_name: str) -> str:
        return f"registry:{tenant_id}:{registry_name}"

    def _source(self, row: Any) -> Any:
        if row.kind == RegistryKind.OCI_LAYOUT.value:
            from stella_core.releases.layout import OciLayoutSource

            return OciLayoutSource(Path(unquote(urlsplit(row.url).path)))
        served = self._served_here(row)
        if served is not None:
            from stella_core.releases.layout import OciLayoutSource

            return OciLayoutSource(served)
        from stella_core.releases.oci import RegistryClient

        password = None
        if row.password_ciphertext is not None:
            password = self.secrets.open(
                bytes(row.password_ciphertext),
                context=self._secret_context(row.tenant_id, row.name),
            )
        return RegistryClient(
            row.url,
            username=row.username,
            password=password,
            insecure=row.insecure,
            timeout=self.timeout,
        )

    def _served_here(self, row: Any) -> Path | None:
        """The layout root, when the registry is the OCI layout this machine serves on loopback
        (the demo's): read where it lies, the same bytes the server gives, so releases resolve
        whether or not the desk serving it runs."""
        if self.home is None or row.password_ciphertext is not None:
            return None
        from stella_core.releases.layout_server import LOOPBACK, served_layout

        recorded = served_layout(self.home)
        if recorded is None:
            return None
        parts = urlsplit(row.url)
        if parts.scheme != "http" or parts.hostname != LOOPBACK or parts.port != recorded[1]:
            return None
        if parts.path.strip("/"):
            return None
        return recorded[0]

    # components -------------------------------------------------------------------------
    def add_component(
        self, name: str, image: str, service: Mapping[str, Any] | None = None
    ) -> Component:
        """A component: its image repository and, optionally, its compose service fragment
        (everything but `image`; checked by `releases.compose`)."""
        check_name("component", name)
        registry_name, repository = parse_image(image)
        fragment = None if service is None else check_service_fragment(dict(service))
        identity = self.tenancy.require(*WRITERS)
        with self.db.transaction() as conn:
            store = ReleaseStore(conn)
            registry = store.registry_row(registry_name)
            if registry is None:
                raise NotFoundError(
                    f"unknown registry {registry_name!r}; add the registry first",
                    remedy=("registry-add",),
                )
            if store.component_rows([name]):
                raise AlreadyExistsError(f"component {name!r} exists already")
            store.insert_component(identity.tenant_id, name, registry.id, repository, fragment)
            TenancyService.audit(
                conn,
                identity.tenant_id,
                "component.add",
                "component",
                name,
                {"registry": registry_name, "repository": repository}
                | ({} if fragment is None else {"service": fragment}),
            )
            return next(c for c in store.list_components() if c.name == name)

    def list_components(self) -> list[Component]:
        with self.db.transaction() as conn:
            return ReleaseStore(conn).list_components()

    # releases ---------------------------------------------------------------------------
    def create_release(
        self, name: str, pins: list[ComponentPin], progress: Progress | None = None
    ) -> Release:
        """Resolve every pin against its registry, then store all of it or nothing."""
        check_release_name(name)
        if not pins:
            raise DefinitionError("a release needs at least one component", field="component")
        if len(pins) > MAX_COMPONENTS_PER_RELEASE:
            raise DefinitionError(
                f"a release holds at most {MAX_COMPONENTS_PER_RELEASE} components"
            )
        seen: set[str] = set()
        for pin in pins:
            if pin.component in seen:
                raise DefinitionError(f"component {pin.component!r} given twice")
            seen.add(pin.component)
            if pin.tag is None and pin.digest is None:
                raise InvalidReferenceError(f"component {pin.component!r} has no tag or digest")
        identity = self.tenancy.require(*WRITERS)

        with self.db.transaction() as conn:
            store = ReleaseStore(conn)
            if store.release_exists(name):
                raise AlreadyExistsError(f"release {name!r} exists already; releases are immutable")
            rows = store.component_rows([p.component for p in pins])
            missing = [p.component for p in pins if p.component not in rows]
            if missing:
                raise NotFoundError(f"unknown component(s): {', '.join(missing)}")
            registry_rows = store.registry_rows_by_id({r.registry_id for r in rows.values()})

        total = len(pins)
        done = 0
        if progress:
            progress(0, total, "resolving digests")

        sources: dict[UUID, Any] = {}
        try:
            for registry_id, row in registry_rows.items():
                sources[registry_id] = self._source(row)

            def resolve(pin: ComponentPin) -> tuple[ComponentPin, ResolvedManifest]:
                row = rows[pin.component]
                source = sources[row.registry_id]
                resolved: ResolvedManifest = source.resolve(
                    check_repository(row.repository), pin.digest or pin.tag
                )
                if pin.digest and resolved.digest != pin.digest:
                    raise DigestMismatchError(
                        f"{pin.component}: registry returned {resolved.digest} for {pin.digest}"
                    )
                return pin, resolved

            results: dict[str, ResolvedManifest] = {}
            errors: list[StellaError] = []
            with ThreadPoolExecutor(max_workers=min(RESOLVE_THREADS, total)) as pool:
                futures = [pool.submit(resolve, p) for p in pins]
                for fut in futures:
                    try:
                        pin, resolved = fut.result()
                    except StellaError as exc:
                        errors.append(exc)
                        continue
                    results[pin.component] = resolved
                    done += 1
                    if progress:
                        progress(done, total, f"{pin.component} → {resolved.digest[:19]}…")
            if errors:
                # All or nothing: report the first failure, store nothing.
                first = errors[0]
                if len(errors) > 1:
                    first.message = f"{first.message} (and {len(errors) - 1} more failures)"
                    first.args = (first.message,)
                raise first
        finally:
            for source in sources.values():
                source.close()

        pinned = []
        for pin in pins:
            row = rows[pin.component]
            resolved = results[pin.component]
            pinned.append(
                (
                    row.id,
                    ReleaseComponent(
                        name=pin.component,
                        repository=row.repository,
                        tag=pin.tag,
                        digest=resolved.digest,
                        media_type=resolved.media_type,
                        registry=registry_rows[row.registry_id].name,
                    ),
                )
            )
        with self.db.transaction() as conn:
            store = ReleaseStore(conn)
            store.insert_release(identity.tenant_id, name, pinned)
            TenancyService.audit(
                conn,
                identity.tenant_id,
                "release.create",
                "release",
                name,
                {"components": {c.name: c.digest for _, c in pinned}},
            )
            release = store.get_releases(name)[0]
        log.info("release %s created with %d components", name, len(pinned))
        return release

    def get_release(self, name: str) -> Release:
        with self.db.transaction() as conn:
            found = ReleaseStore(conn).get_releases(name)
        if not found:
            raise NotFoundError(f"no release named {name!r}")
        return found[0]

    def list_releases(self) -> list[Release]:
        with self.db.transaction() as conn:
            return ReleaseStore(conn).get_releases()
