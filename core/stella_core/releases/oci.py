"""A small, strict OCI Distribution client: resolve a tag or digest to the top-level digest.

Only what a release needs: HEAD/GET of manifests with the full Accept list, the Basic and
Bearer challenge flows, and local digest verification. Never logs credentials or tokens.

Where credentials go (`may_send_credentials`): a registry's password, as Basic auth to the
registry or to the token endpoint its Bearer challenge names, travels only where nobody on the
way can read it. That is over HTTPS to any host (registries name token endpoints on other hosts,
registry-1.docker.io names auth.docker.io, and clients send credentials there), or over plain
HTTP to the registry's own host when the registry was added as insecure (its owner accepted
plain HTTP to that host; a token server on another port of it is no more exposed). A token
endpoint on plain HTTP anywhere else never receives them: the token is asked for anonymously,
and if the registry then refuses, the error says why.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Protocol
from urllib.parse import SplitResult, urlsplit

import httpx

from stella_core.errors import (
    DefinitionError,
    DigestMismatchError,
    InvalidReferenceError,
    ManifestNotFoundError,
    RegistryAuthError,
    RegistryError,
    RegistryUnreachableError,
)
from stella_core.releases.model import MANIFEST_ACCEPT, ResolvedManifest
from stella_core.releases.reference import check_repository, is_digest, parse_tag_or_digest

log = logging.getLogger(__name__)

# One header, comma-separated: a partial list makes distribution 2.8 answer 404 for OCI
# indexes or silently rewrite Docker lists to their amd64 child (standards.md B.4).
ACCEPT_HEADER = ", ".join(MANIFEST_ACCEPT)
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_TOKEN_RESPONSE_BYTES = 1024 * 1024
MAX_ERROR_BODY_BYTES = 64 * 1024
DEFAULT_TOKEN_TTL = 60
USER_AGENT = "stella-release-desk"

_SHA256_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
# RFC 7235 challenge items: either a bare token (a scheme) or key=value / key="quoted value".
# Quoted values may hold ',' and ':' (scopes such as repository:a/b:pull,push).
_CHALLENGE_ITEM_RE = re.compile(
    r"""(?P<key>[!#$%&'*+.^_`|~0-9A-Za-z-]+)
        (?:\s*=\s*(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<token>[^\s,"]*)))?""",
    re.VERBOSE,
)
_TOKEN_VALUE_RE = re.compile(r"^[!-~]+$")  # visible ASCII only: nothing that breaks a header


class ManifestSource(Protocol):
    """Anything that turns (repository, tag or digest) into a top-level manifest digest."""

    def resolve(self, repository: str, reference: str) -> ResolvedManifest: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Challenge:
    """One parsed `WWW-Authenticate` challenge; scheme is lower-case."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)


def parse_www_authenticate(values: list[str]) -> list[Challenge]:
    """Parse every challenge of one or more `WWW-Authenticate` header values."""
    challenges: list[Challenge] = []
    for value in values:
        current: Challenge | None = None
        for match in _CHALLENGE_ITEM_RE.finditer(value):
            key = match.group("key")
            quoted = match.group("quoted")
            token = match.group("token")
            if quoted is None and token is None:
                current = Challenge(scheme=key.lower())
                challenges.append(current)
            elif current is not None:
                raw = quoted if quoted is not None else (token or "")
                current.params[key.lower()] = re.sub(r"\\(.)", r"\1", raw)
    return challenges


def parse_manifest_reference(reference: str) -> tuple[str | None, str | None]:
    """A manifest reference is exactly a tag or a `sha256:` digest -> (tag, digest)."""
    if "@" in reference:
        raise InvalidReferenceError(
            f"invalid manifest reference {reference!r}: give a tag or a digest, not both"
        )
    return parse_tag_or_digest(reference)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def media_type_of(content_type: str | None, body: bytes | None) -> str | None:
    """The manifest media type from a Content-Type header, else from the body's mediaType.

    Returns None when neither names one of the four manifest types we accept.
    """
    if content_type:
        bare = content_type.split(";", 1)[0].strip().lower()
        if bare in MANIFEST_ACCEPT:
            return bare
    if body is not None:
        declared = _json_object(body).get("mediaType")
        if isinstance(declared, str) and declared in MANIFEST_ACCEPT:
            return declared
    return None


def _json_object(body: bytes) -> dict[str, object]:
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _valid_digest(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value if _SHA256_RE.match(value) else None


def _is_tls_error(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            return True
        text = str(current)
        if "CERTIFICATE_VERIFY_FAILED" in text or "[SSL" in text:
            return True
        current = current.__cause__ or current.__context__
    return False


def _split(url: str) -> SplitResult | None:
    """urlsplit, or None where it gives up (an unclosed `[`, a bad IPv6 literal, a bad port)."""
    try:
        parts = urlsplit(url)
        _ = parts.hostname, parts.port
    except ValueError:
        return None
    return parts


def may_send_credentials(registry_url: str, insecure: bool, target_url: str) -> bool:
    """Whether a registry's credentials may go to `target_url` (the registry itself or the
    token endpoint its challenge names): over HTTPS always; over plain HTTP only to the
    registry's own host, and only when the registry was added as insecure."""
    target = _split(target_url)
    registry = _split(registry_url)
    if target is None or registry is None or not target.hostname:
        return False
    if target.scheme == "https":
        return True
    return target.scheme == "http" and insecure and target.hostname == registry.hostname


def _normalize_base_url(base_url: str) -> str:
    parts = _split(base_url.strip())
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise DefinitionError(
            f"invalid registry URL {base_url!r}: expected http(s)://HOST[:PORT], "
            "e.g. https://registry.example or http://127.0.0.1:5000"
        )
    if parts.username is not None or parts.password is not None:
        # Do not echo the URL: it carries the secret we refuse to hold there.
        raise DefinitionError(
            "invalid registry URL: credentials must not be embedded in the URL; "
            "configure a username and password instead"
        )
    if parts.query or parts.fragment:
        raise DefinitionError(f"invalid registry URL {base_url!r}: no query or fragment allowed")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


@dataclass
class _CachedToken:
    token: str
    expires_at: float  # wall-clock epoch seconds (issued_at is wall clock too)


class RegistryClient:
    """Resolve tags and digests on one OCI Distribution registry (sync, thread-safe)."""

    def __init__(
        self,
        base_url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        insecure: bool = False,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._base_url = _normalize_base_url(base_url)
        self._username = username
        self._password = password
        self._insecure = insecure
        self._timeout = timeout
        self._client = httpx.Client(
            verify=not insecure,
            timeout=timeout,
            transport=transport,
            # httpx drops Authorization on cross-origin redirects, so following is safe.
            follow_redirects=True,
            headers={"User-Agent": USER_AGENT},
        )
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, str, str], _CachedToken] = {}
        # Learnt from the first challenge so later requests can authenticate up front.
        self._bearer_endpoint: tuple[str, str] | None = None
        self._basic_seen = False
        # A token endpoint our credentials were kept from (plain HTTP): named if access fails.
        self._withheld_from: str | None = None

    # -- public API ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def username(self) -> str | None:
        return self._username

    def __repr__(self) -> str:
        return (
            f"RegistryClient(base_url={self._base_url!r}, username={self._username!r}, "
            f"insecure={self._insecure!r})"
        )

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def ping(self) -> None:
        """GET /v2/ (with the auth flow). Raises a RegistryError family error on failure."""
        response = self._send("GET", f"{self._base_url}/v2/", scope=None)
        try:
            if response.status_code == 200:
                return
            if response.status_code == 404:
                raise RegistryError(
                    f"{self._base_url} does not serve the OCI Distribution API (GET /v2/ gave 404)"
                )
            raise self._status_error(response, None, None)
        finally:
            response.close()

    def resolve(self, repository: str, reference: str) -> ResolvedManifest:
        """Resolve a tag or `sha256:` digest to its top-level manifest (the index if multi-arch)."""
        check_repository(repository)
        tag, digest = parse_manifest_reference(reference)
        if digest is not None:
            # By digest we must see the bytes: a header is not proof (standards.md B.1).
            return self._get_manifest(repository, digest, expected=digest, head_digest=None)
        assert tag is not None  # parse_manifest_reference returns exactly one of the two
        return self._resolve_tag(repository, tag)

    # -- resolution ---------------------------------------------------------------------------

    def _manifest_url(self, repository: str, reference: str) -> str:
        # Both parts were validated against the OCI grammar, so no escaping is needed.
        return f"{self._base_url}/v2/{repository}/manifests/{reference}"

    def _resolve_tag(self, repository: str, tag: str) -> ResolvedManifest:
        url = self._manifest_url(repository, tag)
        response = self._send("HEAD", url, scope=_pull_scope(repository))
        head_digest: str | None = None
        try:
            status = response.status_code
            if status == 200:
                head_digest = _valid_digest(response.headers.get("Docker-Content-Digest"))
                media_type = media_type_of(response.headers.get("Content-Type"), None)
                if head_digest is not None and media_type is not None:
                    size = _content_length(response)
                    log.debug("resolved %s:%s by HEAD to %s", repository, tag, head_digest)
                    return ResolvedManifest(digest=head_digest, media_type=media_type, size=size)
                log.debug("HEAD %s lacked a usable digest or media type; using GET", url)
            elif status in {403, 404, 429} or status >= 500:
                raise self._status_error(response, repository, tag)
            else:
                # 405 and friends: some registries and proxies refuse HEAD; GET still works.
                log.debug("HEAD %s answered %s; falling back to GET", url, status)
        finally:
            response.close()
        return self._get_manifest(repository, tag, expected=None, head_digest=head_digest)

    def _get_manifest(
        self,
        repository: str,
        reference: str,
        *,
        expected: str | None,
        head_digest: str | None,
    ) -> ResolvedManifest:
        url = self._manifest_url(repository, reference)
        response = self._send("GET", url, scope=_pull_scope(repository))
        try:
            if response.status_code != 200:
                raise self._status_error(response, repository, reference)
            body = self._read_capped(response, MAX_MANIFEST_BYTES, what=f"manifest {url}")
        finally:
            response.close()
        computed = sha256_digest(body)
        label = _label(repository, reference)
        if expected is not None and computed != expected:
            raise DigestMismatchError(
                f"manifest {label} from {self._base_url} hashes to {computed}, "
                f"not to the requested digest"
            )
        served = _valid_digest(response.headers.get("Docker-Content-Digest"))
        if served is not None and served != computed:
            raise DigestMismatchError(
                f"registry {self._base_url} announced {served} for {label} "
                f"but the manifest it sent hashes to {computed}"
            )
        if head_digest is not None and head_digest != computed:
            raise DigestMismatchError(
                f"registry {self._base_url} answered HEAD {label} with {head_digest} but GET "
                f"returned a manifest hashing to {computed} (if the tag just moved, retry)"
            )
        document = _json_object(body)
        if document.get("schemaVersion") != 2:
            raise RegistryError(
                f"manifest {label} from {self._base_url} is not a schemaVersion 2 manifest "
                "(Docker schema 1 and non-JSON content are not supported)"
            )
        media_type = media_type_of(response.headers.get("Content-Type"), body)
        if media_type is None:
            raise RegistryError(
                f"manifest {label} from {self._base_url} has unsupported media type "
                f"{response.headers.get('Content-Type')!r}; expected one of {ACCEPT_HEADER}"
            )
        log.debug("resolved %s by GET to %s (%s)", label, computed, media_type)
        return ResolvedManifest(digest=computed, media_type=media_type, size=len(body))

    # -- HTTP and auth ------------------------------------------------------------------------

    def _transmit(self, method: str, url: str, headers: dict[str, str]) -> httpx.Response:
        request = self._client.build_request(method, url, headers=headers)
        try:
            response = self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise self._transport_error(exc, self._base_url) from exc
        log.debug("%s %s -> %s", method, url, response.status_code)
        return response

    def _send(self, method: str, url: str, *, scope: str | None) -> httpx.Response:
        """Send with auth: up front if known, else answer one challenge and retry once."""
        headers = {"Accept": ACCEPT_HEADER}
        preemptive = self._preemptive_auth(scope)
        response = self._transmit(method, url, headers | preemptive)
        if response.status_code != 401:
            return response
        challenges = parse_www_authenticate(response.headers.get_list("WWW-Authenticate"))
        response.close()
        if preemptive:
            # Our cached token or password stopped working (expired, revoked): start over once.
            self._forget(scope)
        auth = self._answer(challenges, scope)
        response = self._transmit(method, url, headers | auth)
        if response.status_code == 401:
            response.close()
            self._forget(scope)
            raise self._refused()
        return response

    def _has_credentials(self) -> bool:
        return self._username is not None and self._password is not None

    def _may_send_to(self, url: str) -> bool:
        return may_send_credentials(self._base_url, self._insecure, url)

    def _basic_header(self) -> dict[str, str]:
        raw = f"{self._username}:{self._password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}

    def _preemptive_auth(self, scope: str | None) -> dict[str, str]:
        with self._lock:
            if self._basic_seen and self._has_credentials() and self._may_send_to(self._base_url):
                return self._basic_header()
            if self._bearer_endpoint is not None:
                realm, service = self._bearer_endpoint
                cached = self._valid_token((realm, service, scope or ""))
                if cached is not None:
                    return {"Authorization": f"Bearer {cached}"}
        return {}

    def _forget(self, scope: str | None) -> None:
        with self._lock:
            if self._bearer_endpoint is not None:
                realm, service = self._bearer_endpoint
                self._tokens.pop((realm, service, scope or ""), None)

    def _valid_token(self, key: tuple[str, str, str]) -> str | None:
        cached = self._tokens.get(key)
        if cached is None:
            return None
        if time.time() >= cached.expires_at:
            del self._tokens[key]
            return None
        return cached.token

    def _answer(self, challenges: list[Challenge], scope: str | None) -> dict[str, str]:
        by_scheme = {c.scheme: c for c in challenges}
        bearer = by_scheme.get("bearer")
        if bearer is not None:
            return {"Authorization": f"Bearer {self._bearer_token(bearer, scope)}"}
        if "basic" in by_scheme:
            if not self._has_credentials():
                raise self._credentials_needed()
            if not self._may_send_to(self._base_url):
                raise RegistryAuthError(
                    f"registry {self._base_url} asks for the password of user "
                    f"{self._username!r} over plain HTTP; Stella sends credentials over plain "
                    "HTTP only to a registry added as insecure",
                    remedy=("registry-insecure",),
                )
            with self._lock:
                self._basic_seen = True
            return self._basic_header()
        if not challenges:
            raise RegistryAuthError(
                f"registry {self._base_url} answered 401 without a WWW-Authenticate challenge"
            )
        schemes = ", ".join(sorted(by_scheme))
        raise RegistryAuthError(
            f"registry {self._base_url} asks for unsupported authentication ({schemes}); "
            "only Basic and Bearer token authentication are supported"
        )

    def _bearer_token(self, challenge: Challenge, request_scope: str | None) -> str:
        realm = challenge.params.get("realm", "")
        realm_parts = _split(realm)
        if (
            realm_parts is None
            or realm_parts.scheme not in ("http", "https")
            or not realm_parts.hostname
        ):
            raise RegistryAuthError(
                f"registry {self._base_url} sent a Bearer challenge without a usable realm URL"
            )
        service = challenge.params.get("service", "")
        scope = challenge.params.get("scope", request_scope or "")
        key = (realm, service, scope)
        with self._lock:
            self._bearer_endpoint = (realm, service)
            cached = self._valid_token(key)
        if cached is not None:
            return cached
        token, expires_at = self._fetch_token(realm, service, scope)
        with self._lock:
            entry = _CachedToken(token=token, expires_at=expires_at)
            self._tokens[key] = entry
            if request_scope is not None:
                # Also under our own scope name, so the next request authenticates up front.
                self._tokens[(realm, service, request_scope)] = entry
        return token

    def _fetch_token(self, realm: str, service: str, scope: str) -> tuple[str, float]:
        params = httpx.QueryParams({"service": service} if service else {})
        # Several scopes arrive space-separated in one challenge and go as repeated params.
        for item in scope.split(" "):
            if item:
                params = params.add("scope", item)
        endpoint = realm.split("?", 1)[0]
        auth = None
        if self._has_credentials():
            if self._may_send_to(realm):
                auth = httpx.BasicAuth(self._username or "", self._password or "")
            else:
                # Anonymous instead: public repositories still resolve; if this one does not,
                # the error names the endpoint the credentials were kept from.
                log.info(
                    "not sending the credentials of %s to the plain-HTTP token endpoint %s",
                    self._who(),
                    endpoint,
                )
                with self._lock:
                    self._withheld_from = endpoint
        log.debug("requesting a registry token from %s for scope %r", endpoint, scope)
        try:
            response = self._client.get(
                realm, params=params, auth=auth, headers={"Accept": "application/json"}
            )
        except httpx.TransportError as exc:
            raise self._transport_error(exc, f"token endpoint {endpoint}") from exc
        status = response.status_code
        if status in (401, 403):
            if not self._has_credentials():
                raise self._credentials_needed()
            raise self._refused(via=endpoint)
        if status != 200:
            raise RegistryError(
                f"token endpoint {endpoint} of {self._base_url} answered HTTP {status}",
                retryable=status == 429 or status >= 500,
            )
        if len(response.content) > MAX_TOKEN_RESPONSE_BYTES:
            raise RegistryError(f"token endpoint {endpoint} sent an oversized response")
        document = _json_object(response.content)
        token = document.get("token") or document.get("access_token")
        if not isinstance(token, str) or not _TOKEN_VALUE_RE.match(token):
            raise RegistryAuthError(
                f"token endpoint {endpoint} of {self._base_url} returned no usable token"
            )
        expires_in = document.get("expires_in")
        ttl = (
            expires_in
            if isinstance(expires_in, int) and not isinstance(expires_in, bool) and expires_in > 0
            else DEFAULT_TOKEN_TTL
        )
        issued = _parse_issued_at(document.get("issued_at"))
        return token, issued + ttl

    # -- errors -------------------------------------------------------------------------------

    def _who(self) -> str:
        return f"user {self._username!r}" if self._username is not None else "anonymous access"

    def _credentials_needed(self) -> RegistryAuthError:
        if self._username is not None and self._password is None:
            return RegistryAuthError(
                f"registry {self._base_url} requires credentials; user {self._username!r} "
                "has no password configured"
            )
        return RegistryAuthError(
            f"registry {self._base_url} requires credentials; none are configured "
            "(set a username and password for this registry)"
        )

    def _refused(self, *, via: str | None = None) -> RegistryAuthError:
        if not self._has_credentials():
            return self._credentials_needed()
        if self._withheld_from is not None:
            return self._withheld_error(self._withheld_from)
        where = f" (token endpoint {via})" if via else ""
        return RegistryAuthError(
            f"registry {self._base_url} refused the credentials of user "
            f"{self._username!r}{where}; check the username and password"
        )

    def _withheld_error(self, endpoint: str) -> RegistryAuthError:
        registry_host = urlsplit(self._base_url).hostname
        remedy: tuple[str, ...] | None = None
        if urlsplit(endpoint).hostname == registry_host and not self._insecure:
            hint = "add the registry as insecure to allow plain HTTP to its own host"
            remedy = ("registry-insecure",)
        else:
            hint = "credentials go over HTTPS, or over plain HTTP only to the registry's own host"
        return RegistryAuthError(
            f"registry {self._base_url} refused access: its token endpoint {endpoint} is plain "
            f"HTTP, so Stella did not send it the credentials of user {self._username!r} "
            f"({hint})",
            remedy=remedy,
        )

    def _transport_error(self, exc: httpx.TransportError, what: str) -> RegistryError:
        if _is_tls_error(exc):
            return RegistryUnreachableError(
                f"TLS connection to {what} failed ({exc}); if this registry uses a self-signed "
                "or private certificate, add it as insecure",
                remedy=("registry-insecure",),
            )
        if isinstance(exc, httpx.TimeoutException):
            return RegistryUnreachableError(
                f"{what} did not answer within {self._timeout:g} s ({type(exc).__name__})"
            )
        if isinstance(exc, httpx.ConnectError):
            return RegistryUnreachableError(f"cannot connect to {what}: {exc}")
        return RegistryUnreachableError(f"connection to {what} failed: {type(exc).__name__}: {exc}")

    def _read_capped(self, response: httpx.Response, cap: int, *, what: str) -> bytes:
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > cap:
            raise RegistryError(f"{what} is {length} bytes, over the {cap} byte limit")
        buffer = bytearray()
        try:
            for chunk in response.iter_bytes():
                buffer.extend(chunk)
                if len(buffer) > cap:
                    raise RegistryError(f"{what} is over the {cap} byte limit")
        except httpx.TransportError as exc:
            raise self._transport_error(exc, self._base_url) from exc
        return bytes(buffer)

    def _error_codes(self, response: httpx.Response) -> list[tuple[str, str]]:
        if response.request.method == "HEAD":
            return []
        try:
            body = bytes(_take(response.iter_bytes(), MAX_ERROR_BODY_BYTES))
        except (httpx.TransportError, httpx.StreamError):
            return []
        errors = _json_object(body).get("errors")
        codes: list[tuple[str, str]] = []
        if isinstance(errors, list):
            for item in errors:
                if isinstance(item, dict):
                    codes.append((str(item.get("code", "")), str(item.get("message", ""))))
        return codes

    def _status_error(
        self, response: httpx.Response, repository: str | None, reference: str | None
    ) -> RegistryError:
        status = response.status_code
        codes = self._error_codes(response)
        names = {code for code, _ in codes}
        detail = "; ".join(f"{c}: {m}" for c, m in codes if c or m)
        suffix = f" ({detail})" if detail else ""
        if (
            repository is not None
            and reference is not None
            and (status == 404 or names & {"MANIFEST_UNKNOWN", "NAME_UNKNOWN"})
        ):
            label = _label(repository, reference)
            if "NAME_UNKNOWN" in names:
                why = f"repository {repository!r} does not exist"
            elif reference.startswith("sha256:"):
                why = f"no manifest with digest {reference} in repository {repository!r}"
            else:
                # distribution answers MANIFEST_UNKNOWN for a missing repository as well.
                why = f"no tag {reference!r} in repository {repository!r} (or no such repository)"
            return ManifestNotFoundError(f"{label} not found at {self._base_url}: {why}")
        if status == 403 or "DENIED" in names:
            return RegistryAuthError(
                f"registry {self._base_url} denied {self._who()} access"
                + (f" to {repository!r}" if repository else "")
                + suffix
            )
        if status == 401 or "UNAUTHORIZED" in names:
            return self._refused()
        if status == 429:
            retry_after = response.headers.get("Retry-After")
            hint = f"; Retry-After: {retry_after}" if retry_after else "; no Retry-After given"
            return RegistryError(
                f"registry {self._base_url} is rate limiting requests (HTTP 429){hint}{suffix}",
                retryable=True,
            )
        if status >= 500:
            return RegistryError(
                f"registry {self._base_url} failed with HTTP {status}{suffix}", retryable=True
            )
        target = f" for {_label(repository, reference)}" if repository and reference else ""
        return RegistryError(
            f"registry {self._base_url} answered HTTP {status}{target}{suffix}", retryable=False
        )


def _take(chunks: Iterator[bytes], limit: int) -> bytearray:
    buffer = bytearray()
    for chunk in chunks:
        buffer.extend(chunk)
        if len(buffer) >= limit:
            break
    return buffer[:limit]


def _pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


def _label(repository: str | None, reference: str | None) -> str:
    if reference is not None and is_digest(reference):
        return f"{repository}@{reference}"
    return f"{repository}:{reference}"


def _content_length(response: httpx.Response) -> int:
    value = response.headers.get("Content-Length", "")
    return int(value) if value.isdigit() else 0


def _parse_issued_at(value: object) -> float:
    if isinstance(value, str) and value:
        text = value.strip()
        # fromisoformat takes at most 6 fractional digits; Go emits up to 9.
        text = re.sub(r"(\.\d{6})\d+", r"\1", text)
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return time.time()
        if parsed.tzinfo is not None:
            return parsed.timestamp()
    return time.time()


__all__ = [
    "ACCEPT_HEADER",
    "MAX_MANIFEST_BYTES",
    "Challenge",
    "ManifestSource",
    "RegistryClient",
    "may_send_credentials",
    "media_type_of",
    "parse_manifest_reference",
    "parse_www_authenticate",
    "sha256_digest",
]
