"""RegistryClient against the real docker-registry 2.8.2 binary (no registry mocks).

What a user would check: the digest we resolve is sha256 of the exact manifest bytes that
were pushed, multi-arch tags resolve to the index, and failures say what went wrong without
ever showing a password or token.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from stella_core.errors import (
    DefinitionError,
    DigestMismatchError,
    InvalidReferenceError,
    ManifestNotFoundError,
    RegistryAuthError,
    RegistryError,
    RegistryUnreachableError,
)
from stella_core.releases.layout import IndexChild, OciLayoutSource, OciLayoutWriter
from stella_core.releases.model import MediaType, ResolvedManifest
from stella_core.releases.oci import (
    ACCEPT_HEADER,
    ManifestSource,
    RegistryClient,
    parse_www_authenticate,
)
from tests.support.registry import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    RewritingProxy,
    RunningRegistry,
    build_image,
    build_index,
    describe,
    push_blob,
    push_built,
    push_docker_image,
    push_image,
    push_manifest,
    push_oci_index,
    self_signed,
    tag_existing,
)

pytestmark = pytest.mark.integration


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def secret_free(exc: BaseException, *secrets: str) -> None:
    """No secret in the message, the repr, or anything chained to the error."""
    current: BaseException | None = exc
    while current is not None:
        for text in (str(current), repr(current), repr(current.args)):
            for secret in secrets:
                assert secret not in text, f"secret leaked in {type(current).__name__}: {text}"
        current = current.__cause__ or current.__context__


@pytest.fixture
def client(registry: RunningRegistry) -> Iterator[RegistryClient]:
    with RegistryClient(registry.url) as c:
        yield c


# -- resolution -------------------------------------------------------------------------------


def test_resolves_oci_manifest_to_sha256_of_pushed_bytes(
    registry: RunningRegistry, client: RegistryClient
) -> None:
    image = build_image({"app/run.sh": b"#!/bin/sh\necho oci\n"})
    push_built(registry.url, "team/web", "1.0.0", image)

    resolved = client.resolve("team/web", "1.0.0")

    assert resolved == ResolvedManifest(
        digest=sha256(image.manifest),
        media_type=MediaType.OCI_MANIFEST.value,
        size=len(image.manifest),
    )


def test_resolves_docker_v2_manifest(registry: RunningRegistry, client: RegistryClient) -> None:
    image = build_image({"bin/tool": b"docker v2"}, docker=True)
    push_built(registry.url, "team/legacy", "2.3", image)

    resolved = client.resolve("team/legacy", "2.3")

    assert resolved.digest == sha256(image.manifest)
    assert resolved.media_type == DOCKER_MANIFEST
    assert resolved.size == len(image.manifest)


def test_push_image_helper_returns_the_digest_the_client_resolves(
    registry: RunningRegistry, client: RegistryClient
) -> None:
    digest = push_image(registry.url, "team/helper", "v1", files={"a.txt": b"a"})
    docker_digest = push_docker_image(registry.url, "team/helper", "v1-docker")

    assert client.resolve("team/helper", "v1").digest == digest
    assert client.resolve("team/helper", "v1-docker").digest == docker_digest


def test_resolves_oci_index_to_the_index_digest(
    registry: RunningRegistry, client: RegistryClient
) -> None:
    amd64 = push_image(registry.url, "team/multi", "amd64", architecture="amd64")
    arm64 = push_image(registry.url, "team/multi", "arm64", architecture="arm64")
    index = build_index(
        OCI_INDEX,
        [
            (describe(registry.url, "team/multi", amd64), "linux/amd64"),
            (describe(registry.url, "team/multi", arm64), "linux/arm64/v8"),
        ],
    )
    pushed = push_manifest(registry.url, "team/multi", "2024.1", index, OCI_INDEX)

    resolved = client.resolve("team/multi", "2024.1")

    assert resolved.digest == sha256(index) == pushed
    assert resolved.digest not in (amd64, arm64)
    assert resolved.media_type == OCI_INDEX
    assert resolved.size == len(index)


def test_resolves_docker_list_to_the_list_digest_not_the_amd64_child(
    registry: RunningRegistry, client: RegistryClient
) -> None:
    amd64 = push_docker_image(registry.url, "team/dlist", "amd64", architecture="amd64")
    arm64 = push_docker_image(registry.url, "team/dlist", "arm64", architecture="arm64")
    body = build_index(
        DOCKER_LIST,
        [
            (describe(registry.url, "team/dlist", amd64), "linux/amd64"),
            (describe(registry.url, "team/dlist", arm64), "linux/arm64"),
        ],
    )
    push_manifest(registry.url, "team/dlist", "stable", body, DOCKER_LIST)

    # The trap (standards.md B.4): without the list type in Accept, 2.8.2 silently serves
    # the amd64 child and its digest. This proves the test would catch a partial Accept.
    partial = httpx.head(
        f"{registry.url}/v2/team/dlist/manifests/stable", headers={"Accept": DOCKER_MANIFEST}
    )
    assert partial.headers["Docker-Content-Digest"] == amd64

    resolved = client.resolve("team/dlist", "stable")

    assert resolved.digest == sha256(body)
    assert resolved.digest != amd64
    assert resolved.media_type == DOCKER_LIST


def test_oci_index_helper_and_resolve_by_digest(
    registry: RunningRegistry, client: RegistryClient
) -> None:
    child = push_image(registry.url, "team/bydigest", "child")
    index_digest = push_oci_index(registry.url, "team/bydigest", "multi", [(child, "linux/amd64")])

    by_tag = client.resolve("team/bydigest", "multi")
    by_digest = client.resolve("team/bydigest", index_digest)
    child_by_digest = client.resolve("team/bydigest", child)

    assert by_tag == by_digest
    assert by_digest.digest == index_digest
    assert by_digest.media_type == OCI_INDEX
    assert child_by_digest.digest == child
    assert child_by_digest.media_type == MediaType.OCI_MANIFEST.value


def test_moving_a_tag_changes_the_resolved_digest(
    registry: RunningRegistry, client: RegistryClient
) -> None:
    first = build_image({"v": b"first"})
    second = build_image({"v": b"second"})
    push_built(registry.url, "team/moving", "latest", first)
    assert client.resolve("team/moving", "latest").digest == sha256(first.manifest)

    push_built(registry.url, "team/moving", "second", second)
    moved = tag_existing(registry.url, "team/moving", "latest", second.manifest, second.media_type)

    assert client.resolve("team/moving", "latest").digest == moved == sha256(second.manifest)


def test_manifest_source_protocol_is_satisfied(client: RegistryClient) -> None:
    source: ManifestSource = client
    assert callable(source.resolve)


# -- HEAD fallbacks through a real registry behind a misbehaving proxy ------------------------


def test_head_without_digest_header_falls_back_to_get(
    registry: RunningRegistry, rewriting_proxy: RewritingProxy
) -> None:
    image = build_image({"x": b"no digest header"})
    push_built(registry.url, "team/fallback", "v1", image)
    rewriting_proxy.strip_digest = True

    with RegistryClient(rewriting_proxy.url) as client:
        resolved = client.resolve("team/fallback", "v1")

    assert resolved.digest == sha256(image.manifest)
    assert resolved.media_type == MediaType.OCI_MANIFEST.value
    assert rewriting_proxy.methods() == ["HEAD", "GET"]


def test_head_rejected_falls_back_to_get(
    registry: RunningRegistry, rewriting_proxy: RewritingProxy
) -> None:
    image = build_image({"x": b"head refused"})
    push_built(registry.url, "team/fallback", "v405", image)
    rewriting_proxy.head_status = 405

    with RegistryClient(rewriting_proxy.url) as client:
        resolved = client.resolve("team/fallback", "v405")

    assert resolved.digest == sha256(image.manifest)
    assert rewriting_proxy.methods() == ["HEAD", "GET"]


def test_head_with_digest_header_needs_no_get(
    registry: RunningRegistry, rewriting_proxy: RewritingProxy
) -> None:
    digest = push_image(registry.url, "team/fallback", "headonly")

    with RegistryClient(rewriting_proxy.url) as client:
        assert client.resolve("team/fallback", "headonly").digest == digest

    assert rewriting_proxy.methods() == ["HEAD"]


def test_resolve_by_digest_always_gets_and_verifies(
    registry: RunningRegistry, rewriting_proxy: RewritingProxy
) -> None:
    digest = push_image(registry.url, "team/verify", "v1")

    with RegistryClient(rewriting_proxy.url) as client:
        assert client.resolve("team/verify", digest).digest == digest

    assert rewriting_proxy.methods() == ["GET"]


def test_tampered_body_fetched_by_digest_is_a_digest_mismatch(
    registry: RunningRegistry, rewriting_proxy: RewritingProxy
) -> None:
    digest = push_image(registry.url, "team/verify", "tampered")
    rewriting_proxy.tamper_body = True
    rewriting_proxy.strip_digest = True

    with RegistryClient(rewriting_proxy.url) as client, pytest.raises(DigestMismatchError) as err:
        client.resolve("team/verify", digest)

    assert "team/verify@" + digest in str(err.value)
    assert not err.value.retryable


def test_digest_header_disagreeing_with_body_is_a_digest_mismatch(
    registry: RunningRegistry, rewriting_proxy: RewritingProxy
) -> None:
    push_image(registry.url, "team/verify", "lying")
    rewriting_proxy.head_status = 405  # force the GET, whose header lies about the body
    rewriting_proxy.digest_override = "sha256:" + "0" * 64

    with RegistryClient(rewriting_proxy.url) as client, pytest.raises(DigestMismatchError) as err:
        client.resolve("team/verify", "lying")

    assert "sha256:" + "0" * 64 in str(err.value)


def test_rate_limit_is_retryable_and_mentions_retry_after(
    rewriting_proxy: RewritingProxy,
) -> None:
    rewriting_proxy.fixed = (
        429,
        {"Retry-After": "17", "Content-Type": "application/json"},
        b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}',
    )

    with RegistryClient(rewriting_proxy.url) as client, pytest.raises(RegistryError) as err:
        client.resolve("team/web", "v1")

    assert type(err.value) is RegistryError
    assert err.value.retryable
    assert "Retry-After: 17" in str(err.value)


def test_server_error_is_retryable(rewriting_proxy: RewritingProxy) -> None:
    rewriting_proxy.fixed = (503, {}, b"")

    with RegistryClient(rewriting_proxy.url) as client, pytest.raises(RegistryError) as err:
        client.resolve("team/web", "v1")

    assert type(err.value) is RegistryError
    assert err.value.retryable
    assert "503" in str(err.value)


# -- not found ----------------------------------------------------------------------------------


def test_unknown_tag_is_manifest_not_found(
    registry: RunningRegistry, client: RegistryClient
) -> None:
    push_image(registry.url, "team/known", "v1")

    with pytest.raises(ManifestNotFoundError) as err:
        client.resolve("team/known", "v404")

    assert "team/known" in str(err.value)
    assert "v404" in str(err.value)
    assert not err.value.retryable


def test_unknown_repository_is_manifest_not_found(client: RegistryClient) -> None:
    with pytest.raises(ManifestNotFoundError) as err:
        client.resolve("nobody/here", "latest")

    assert "nobody/here" in str(err.value)


def test_unknown_digest_is_manifest_not_found(
    registry: RunningRegistry, client: RegistryClient
) -> None:
    push_image(registry.url, "team/known", "v1")
    missing = "sha256:" + "ab" * 32

    with pytest.raises(ManifestNotFoundError) as err:
        client.resolve("team/known", missing)

    assert missing in str(err.value)


# -- network failures ---------------------------------------------------------------------------


def test_closed_port_is_unreachable_and_retryable(closed_port_url: str) -> None:
    with RegistryClient(closed_port_url) as client, pytest.raises(RegistryUnreachableError) as err:
        client.resolve("team/web", "v1")

    assert err.value.retryable
    assert closed_port_url in str(err.value)
    assert isinstance(err.value.__cause__, httpx.TransportError)


def test_silent_server_times_out_as_unreachable() -> None:
    # A listening socket nobody accepts on: the connect succeeds, no answer ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        client = RegistryClient(url, timeout=0.3)
        with client, pytest.raises(RegistryUnreachableError) as err:
            client.resolve("team/web", "v1")

    assert "did not answer" in str(err.value)
    assert isinstance(err.value.__cause__, httpx.TimeoutException)


def test_self_signed_tls_needs_insecure(registry_tls: RunningRegistry) -> None:
    digest = push_image(registry_tls.url, "team/tls", "v1")

    with RegistryClient(registry_tls.url) as strict, pytest.raises(RegistryUnreachableError) as err:
        strict.resolve("team/tls", "v1")
    assert "as insecure" in str(err.value)
    assert err.value.remedy == ("registry-insecure",)

    with RegistryClient(registry_tls.url, insecure=True) as lenient:
        assert lenient.resolve("team/tls", "v1").digest == digest


# -- input validation before any network --------------------------------------------------------


def _no_network(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"no request expected, got {request.method} {request.url}")


@pytest.mark.parametrize(
    ("repository", "reference"),
    [
        ("Team/Web", "v1"),
        ("../etc", "v1"),
        ("team//web", "v1"),
        ("/team/web", "v1"),
        ("", "v1"),
        ("team/web", ""),
        ("team/web", "-dash"),
        ("team/web", ".dot"),
        ("team/web", "a" * 129),
        ("team/web", "v1@sha256:" + "a" * 64),
        ("team/web", "sha256:" + "A" * 64),
        ("team/web", "sha256:abc"),
        ("team/web", "sha512:" + "a" * 128),
        ("team/web", "v1/../../x"),
    ],
)
def test_malformed_references_fail_before_network(repository: str, reference: str) -> None:
    client = RegistryClient("http://127.0.0.1:9", transport=httpx.MockTransport(_no_network))
    with client, pytest.raises(InvalidReferenceError):
        client.resolve(repository, reference)


@pytest.mark.parametrize("url", ["ftp://reg.example", "reg.example", "http://", ""])
def test_bad_base_url_is_a_definition_error(url: str) -> None:
    with pytest.raises(DefinitionError):
        RegistryClient(url)


def test_credentials_in_base_url_are_refused_without_echo() -> None:
    with pytest.raises(DefinitionError) as err:
        RegistryClient("https://user:hunter2-secret@reg.example")

    secret_free(err.value, "hunter2-secret")


# -- Basic auth (htpasswd) ----------------------------------------------------------------------


def test_basic_auth_with_good_credentials(registry_basic: RunningRegistry) -> None:
    digest = push_image(registry_basic.url, "team/private", "v1", auth=registry_basic.auth)

    with RegistryClient(
        registry_basic.url,
        username=registry_basic.username,
        password=registry_basic.password,
        insecure=True,  # plain HTTP: only an insecure registry gets a password over it
    ) as client:
        client.ping()
        assert client.resolve("team/private", "v1").digest == digest
        assert client.resolve("team/private", digest).digest == digest


def test_basic_auth_wrong_password_names_user_not_password(
    registry_basic: RunningRegistry,
) -> None:
    wrong = "wrong-" + (registry_basic.password or "")
    client = RegistryClient(
        registry_basic.url, username=registry_basic.username, password=wrong, insecure=True
    )
    with client, pytest.raises(RegistryAuthError) as err:
        client.resolve("team/private", "v1")

    message = str(err.value)
    assert registry_basic.url in message
    assert repr(registry_basic.username) in message
    secret_free(err.value, wrong, registry_basic.password or "")


def test_basic_auth_username_without_password(registry_basic: RunningRegistry) -> None:
    client = RegistryClient(registry_basic.url, username=registry_basic.username)
    with client, pytest.raises(RegistryAuthError) as err:
        client.resolve("team/private", "v1")

    assert "no password" in str(err.value)


def test_basic_auth_without_credentials_says_they_are_needed(
    registry_basic: RunningRegistry,
) -> None:
    with RegistryClient(registry_basic.url) as client, pytest.raises(RegistryAuthError) as err:
        client.resolve("team/private", "v1")

    assert "requires credentials" in str(err.value)
    assert registry_basic.url in str(err.value)


# -- Bearer token auth --------------------------------------------------------------------------


def _token_client(reg: RunningRegistry, password: str | None = None) -> RegistryClient:
    # The fixture's registry and token server are plain HTTP on 127.0.0.1: its own host.
    return RegistryClient(
        reg.url,
        username=reg.username,
        password=password if password else reg.password,
        insecure=True,
    )


def test_bearer_token_flow_with_good_credentials(registry_token: RunningRegistry) -> None:
    digest = push_image(registry_token.url, "team/tokened", "v1", auth=registry_token.auth)

    with _token_client(registry_token) as client:
        client.ping()
        resolved = client.resolve("team/tokened", "v1")

    assert resolved.digest == digest


def test_bearer_token_is_cached_per_scope(registry_token: RunningRegistry) -> None:
    server = registry_token.token_server
    assert server is not None
    push_image(registry_token.url, "team/cache-a", "v1", auth=registry_token.auth)
    push_image(registry_token.url, "team/cache-b", "v1", auth=registry_token.auth)

    with _token_client(registry_token) as client:
        before = server.hits
        client.resolve("team/cache-a", "v1")
        client.resolve("team/cache-a", "v1")
        client.resolve("team/cache-a", "v1")
        assert server.hits - before == 1
        client.resolve("team/cache-b", "v1")  # another repository is another scope
        assert server.hits - before == 2
        assert server.requests[-1].scopes == ["repository:team/cache-b:pull"]
        assert server.requests[-1].user == registry_token.username


def test_expired_bearer_token_is_fetched_again(registry_token: RunningRegistry) -> None:
    server = registry_token.token_server
    assert server is not None
    push_image(registry_token.url, "team/expiry", "v1", auth=registry_token.auth)
    # issued_at an hour ago + expires_in 300 s: expired for the client, still valid JWT.
    server.issued_at_offset = -3600
    try:
        with _token_client(registry_token) as client:
            before = server.hits
            client.resolve("team/expiry", "v1")
            client.resolve("team/expiry", "v1")
            assert server.hits - before == 2
    finally:
        server.issued_at_offset = 0


def test_bearer_wrong_password_is_refused_by_token_server(
    registry_token: RunningRegistry,
) -> None:
    server = registry_token.token_server
    assert server is not None
    wrong = "wrong-" + (registry_token.password or "")

    with _token_client(registry_token, wrong) as client, pytest.raises(RegistryAuthError) as err:
        client.resolve("team/tokened", "v1")

    assert server.requests[-1].status == 401
    assert repr(registry_token.username) in str(err.value)
    assert registry_token.url in str(err.value)
    secret_free(err.value, wrong, registry_token.password or "", *server.tokens)


def test_bearer_without_credentials_says_they_are_needed(
    registry_token: RunningRegistry,
) -> None:
    push_image(registry_token.url, "team/tokened", "v1", auth=registry_token.auth)
    with RegistryClient(registry_token.url) as client, pytest.raises(RegistryAuthError) as err:
        client.resolve("team/tokened", "v1")

    assert "requires credentials" in str(err.value)


def test_no_secret_in_repr_or_debug_logs(
    registry_token: RunningRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    server = registry_token.token_server
    assert server is not None
    push_image(registry_token.url, "team/logs", "v1", auth=registry_token.auth)
    password = registry_token.password or ""

    with caplog.at_level(logging.DEBUG), _token_client(registry_token) as client:
        client.resolve("team/logs", "v1")
        shown = repr(client) + str(client)

    assert password not in shown
    assert registry_token.url in shown
    assert caplog.records, "expected debug lines from the client"
    for secret in (password, *server.tokens):
        assert secret not in caplog.text


# -- where credentials go ----------------------------------------------------------------------


class TokenRelay:
    """A token endpoint on another host: records the Authorization header of every request it
    gets, and relays the request (that header included) to the fixture's real token server.

    `name` is the host the realm names: 127.0.0.2 is another loopback address than the
    registry's 127.0.0.1; over TLS it is `localhost`, the name our test certificate carries."""

    def __init__(self, upstream_realm: str, *, name: str, context: ssl.SSLContext | None) -> None:
        upstream = upstream_realm.rsplit("/", 1)[0]
        received: list[str | None] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

            def do_GET(self) -> None:
                header = self.headers.get("Authorization")
                received.append(header)
                answer = httpx.get(
                    upstream + self.path,
                    headers={"Authorization": header} if header else {},
                    timeout=10.0,
                )
                self.send_response(answer.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

        bind = "127.0.0.1" if name == "localhost" else name
        self._server = ThreadingHTTPServer((bind, 0), Handler)
        self._server.daemon_threads = True
        if context is not None:
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        scheme = "https" if context is not None else "http"
        self.realm = f"{scheme}://{name}:{self._server.server_address[1]}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def token_proxy(registry_token: RunningRegistry) -> Iterator[RewritingProxy]:
    """The token-auth registry behind a proxy that can rename its challenge's realm."""
    proxy = RewritingProxy(registry_token.url)
    yield proxy
    proxy.stop()


def _tls_context(folder: Path) -> ssl.SSLContext:
    pair = self_signed("localhost", server=True)
    (folder / "cert.pem").write_bytes(pair.cert_pem)
    (folder / "key.pem").write_bytes(pair.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


def test_token_realm_on_plain_http_on_another_host_gets_no_credentials(
    registry_token: RunningRegistry, token_proxy: RewritingProxy
) -> None:
    server = registry_token.token_server
    assert server is not None
    push_image(registry_token.url, "team/elsewhere", "v1", auth=registry_token.auth)
    relay = TokenRelay(server.realm, name="127.0.0.2", context=None)
    token_proxy.realm_override = relay.realm
    password = registry_token.password or ""
    try:
        # Insecure allows plain HTTP to the registry's own host, not to another one.
        client = RegistryClient(
            token_proxy.url,
            username=registry_token.username,
            password=password,
            insecure=True,
        )
        with client, pytest.raises(RegistryAuthError) as err:
            client.resolve("team/elsewhere", "v1")
    finally:
        relay.stop()

    # What the other host actually received: token requests, none with an Authorization.
    assert relay.received
    assert relay.received == [None] * len(relay.received)
    assert server.requests[-1].user is None
    # The registry got only the (anonymous) bearer token, never the password.
    assert not any(a and a.startswith("Basic") for a in token_proxy.authorizations)
    message = str(err.value)
    assert relay.realm in message
    assert "plain HTTP" in message
    secret_free(err.value, password, *server.tokens)


def test_token_realm_over_https_on_another_host_gets_the_credentials(
    registry_token: RunningRegistry, token_proxy: RewritingProxy, tmp_path: Path
) -> None:
    """As registry-1.docker.io names auth.docker.io: the credentials go there, over TLS."""
    server = registry_token.token_server
    assert server is not None
    digest = push_image(registry_token.url, "team/tls-realm", "v1", auth=registry_token.auth)
    relay = TokenRelay(server.realm, name="localhost", context=_tls_context(tmp_path))
    token_proxy.realm_override = relay.realm
    try:
        # insecure: the relay's certificate is self-signed (and the proxy is plain HTTP).
        with _token_client(registry_token) as direct:
            assert direct.resolve("team/tls-realm", "v1").digest == digest
        with RegistryClient(
            token_proxy.url,
            username=registry_token.username,
            password=registry_token.password,
            insecure=True,
        ) as client:
            assert client.resolve("team/tls-realm", "v1").digest == digest
    finally:
        relay.stop()

    assert relay.received
    assert all(a is not None and a.startswith("Basic ") for a in relay.received)
    assert server.requests[-1].user == registry_token.username


def test_plain_http_registry_not_added_as_insecure_gets_no_password(
    registry_basic: RunningRegistry,
) -> None:
    password = registry_basic.password or ""
    push_image(registry_basic.url, "team/plain", "v1", auth=registry_basic.auth)
    proxy = RewritingProxy(registry_basic.url)
    try:
        client = RegistryClient(proxy.url, username=registry_basic.username, password=password)
        with client, pytest.raises(RegistryAuthError) as err:
            client.resolve("team/plain", "v1")
    finally:
        proxy.stop()

    assert proxy.authorizations
    assert proxy.authorizations == [None] * len(proxy.authorizations)
    assert "as insecure" in str(err.value)
    assert err.value.remedy == ("registry-insecure",)
    secret_free(err.value, password)


def test_plain_http_token_endpoint_of_a_registry_not_added_as_insecure_gets_no_password(
    registry_token: RunningRegistry,
) -> None:
    server = registry_token.token_server
    assert server is not None
    push_image(registry_token.url, "team/plain-token", "v1", auth=registry_token.auth)
    password = registry_token.password or ""
    client = RegistryClient(registry_token.url, username=registry_token.username, password=password)
    with client, pytest.raises(RegistryAuthError) as err:
        client.resolve("team/plain-token", "v1")

    assert server.requests[-1].user is None
    assert "as insecure" in str(err.value)
    assert err.value.remedy == ("registry-insecure",)
    secret_free(err.value, password, *server.tokens)


# -- challenge parsing --------------------------------------------------------------------------


def test_challenge_parser_keeps_commas_and_colons_in_scope() -> None:
    [challenge] = parse_www_authenticate(
        [
            'Bearer realm="https://auth.example/token",service="reg.example",'
            'scope="repository:team/app:pull,push",error="insufficient_scope"'
        ]
    )

    assert challenge.scheme == "bearer"
    assert challenge.params == {
        "realm": "https://auth.example/token",
        "service": "reg.example",
        "scope": "repository:team/app:pull,push",
        "error": "insufficient_scope",
    }


def test_challenge_parser_reads_basic_and_several_challenges() -> None:
    challenges = parse_www_authenticate(['Basic realm="Registry Realm"', "Bearer realm=x"])

    assert [c.scheme for c in challenges] == ["basic", "bearer"]
    assert challenges[0].params["realm"] == "Registry Realm"
    assert challenges[1].params["realm"] == "x"


def test_accept_header_lists_all_four_manifest_types() -> None:
    assert [part.strip() for part in ACCEPT_HEADER.split(",")] == [m.value for m in MediaType]


# -- layout and registry agree ------------------------------------------------------------------


def test_layout_image_pushed_to_registry_resolves_to_the_same_digest(
    registry: RunningRegistry, client: RegistryClient, tmp_path: Path
) -> None:
    writer = OciLayoutWriter(tmp_path)
    child = writer.write_image("team/offline", None, files={"x": b"air-gapped"})
    index = writer.write_index("team/offline", "airgap", [IndexChild(child, "amd64")])
    blobs = tmp_path / "team" / "offline" / "blobs" / "sha256"

    def blob(digest: str) -> bytes:
        return (blobs / digest.removeprefix("sha256:")).read_bytes()

    manifest = json.loads(blob(child.digest))
    for descriptor in [manifest["config"], *manifest["layers"]]:
        push_blob(registry.url, "team/offline", blob(descriptor["digest"]))
    push_manifest(registry.url, "team/offline", child.digest, blob(child.digest), OCI_MANIFEST)
    push_manifest(registry.url, "team/offline", "airgap", blob(index.digest), OCI_INDEX)

    from_registry = client.resolve("team/offline", "airgap")
    from_layout = OciLayoutSource(tmp_path).resolve("team/offline", "airgap")

    assert from_registry == from_layout == index
