"""Real `docker-registry` (CNCF distribution 2.8.2) processes for tests, plus push helpers.

Nothing here mocks a registry: each helper starts the real binary on a free loopback port
with its own config and storage, and pushes content over the plain HTTP API.

* `start_registry(workdir, auth="none" | "basic" | "token", tls=False)` -> RunningRegistry
* `TokenServer`: a loopback token endpoint issuing ES256 JWTs (x5c header) that the
  registry verifies against our self-signed certificate (standards.md B.5).
* `RewritingProxy`: a loopback proxy in front of a registry that strips or alters headers
  and bodies, to exercise fallbacks and integrity checks against real responses.
* push helpers: `push_blob`, `push_manifest`, `push_image`, `push_docker_image`,
  `push_oci_index`, `push_docker_list`, `tag_existing`.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import gzip
import hashlib
import io
import ipaddress
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Literal
from urllib.parse import parse_qs, urlsplit

import bcrypt
import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

REGISTRY_BINARY = "docker-registry"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
ALL_MANIFEST_TYPES = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST])
TOKEN_SERVICE = "stella-test-registry"
TOKEN_ISSUER = "stella-test-issuer"

Auth = tuple[str, str] | None


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def registry_binary() -> str:
    """Path of docker-registry; a missing binary is a failure, never a skip."""
    found = shutil.which(REGISTRY_BINARY) or (
        "/usr/bin/docker-registry" if Path("/usr/bin/docker-registry").exists() else None
    )
    if found is None:
        raise RuntimeError(
            "docker-registry is not installed: run `apt-get install -y docker-registry` "
            "(the OCI integration tests need the real registry binary)"
        )
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- certificates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def self_signed(common_name: str, *, server: bool = False) -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return KeyPair(key=key, cert=builder.sign(key, hashes.SHA256()))


# -- token server -------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass
class TokenRequest:
    user: str | None
    service: str | None
    scopes: list[str]
    status: int


class TokenServer:
    """Loopback token endpoint (GET /token) for distribution's `auth.token` mode.

    Checks Basic credentials (wrong ones get 401); without credentials it issues an
    anonymous token with no access, as public token servers do. `issued_at_offset`
    shifts the advertised `issued_at` so tests can make tokens look expired to a client
    without sleeping (the JWT itself stays valid for the registry).
    """

    def __init__(self, username: str, password: str, *, expires_in: int = 300) -> None:
        self.username = username
        self.password = password
        self.expires_in = expires_in
        self.issued_at_offset = 0.0
        self.service = TOKEN_SERVICE
        self.issuer = TOKEN_ISSUER
        self.signing = self_signed("stella-test-token-signer")
        self.requests: list[TokenRequest] = []
        self.tokens: list[str] = []  # every token issued, so tests can check none leaks
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenHandler)
        self._server.daemon_threads = True
        self._server.token_server = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    @property
    def hits(self) -> int:
        with self._lock:
            return len(self.requests)

    def record(self, request: TokenRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def issue(self, subject: str, access: list[dict[str, object]]) -> str:
        now = int(time.time())
        header = {
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [
                base64.b64encode(self.signing.cert.public_bytes(serialization.Encoding.DER)).decode(
                    "ascii"
                )
            ],
        }
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + self.expires_in,
            "nbf": now - 30,
            "iat": now,
            "jti": secrets.token_hex(12),
            "access": access,
        }
        signing_input = (
            _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        )
        der = self.signing.key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        # JWS ES256 wants raw r||s (32 bytes each), not the DER that cryptography emits.
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        token = signing_input + "." + _b64url(signature)
        with self._lock:
            self.tokens.append(token)
        return token

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _TokenHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Quiet: pytest output stays readable."""

    def _reply(self, status: int, document: Mapping[str, object]) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="stella-test-token"')
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        owner: TokenServer = self.server.token_server  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        scopes = query.get("scope", [])
        service = query.get("service", [None])[0]
        if url.path != "/token":
            self._reply(404, {"error": "not found"})
            return
        user: str | None = None
        header = self.headers.get("Authorization")
        if header is not None:
            scheme, _, value = header.partition(" ")
            try:
                name, _, password = base64.b64decode(value).decode().partition(":")
            except ValueError:
                name, password = "", ""
            if scheme.lower() != "basic" or (name, password) != (owner.username, owner.password):
                owner.record(TokenRequest(name or None, service, scopes, 401))
                self._reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad login"}]})
                return
            user = name
        if service != owner.service:
            owner.record(TokenRequest(user, service, scopes, 400))
            self._reply(400, {"error": f"unknown service {service!r}"})
            return
        access: list[dict[str, object]] = []
        if user is not None:
            for scope in scopes:
                kind, _, rest = scope.partition(":")
                name, _, actions = rest.rpartition(":")
                granted = [a for a in actions.split(",") if a in {"pull", "push", "delete", "*"}]
                access.append({"type": kind, "name": name, "actions": granted})
        owner.record(TokenRequest(user, service, scopes, 200))
        token = owner.issue(user or "", access)
        issued = dt.datetime.fromtimestamp(time.time() + owner.issued_at_offset, dt.UTC)
        self._reply(
            200,
            {
                "token": token,
                "access_token": token,
                "expires_in": owner.expires_in,
                "issued_at": issued.isoformat().replace("+00:00", "Z"),
            },
        )


# -- registry process ---------------------------------------------------------------------------


@dataclass
class RunningRegistry:
    url: str
    process: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path
    username: str | None = None
    password: str | None = None
    token_server: TokenServer | None = None
    ca_cert: Path | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def auth(self) -> Auth:
        if self.username is None or self.password is None:
            return None
        return (self.username, self.password)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.token_server is not None:
            self.token_server.stop()
        if self._log is not None:
            self._log.close()


def start_registry(
    workdir: Path,
    *,
    auth: Literal["none", "basic", "token"] = "none",
    username: str | None = None,
    password: str | None = None,
    tls: bool = False,
    startup_timeout: float = 20.0,
) -> RunningRegistry:
    """Start `docker-registry serve` on a free 127.0.0.1 port; waits until GET /v2/ answers."""
    binary = registry_binary()
    if auth != "none" and (username is None or password is None):
        raise ValueError(f"auth={auth!r} needs a username and a password")
    workdir.mkdir(parents=True, exist_ok=True)
    config: dict[str, object] = {
        "version": "0.1",
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(workdir / "data")},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "health": {"storagedriver": {"enabled": False}},
    }
    token_server: TokenServer | None = None
    if auth == "basic":
        assert username is not None
        assert password is not None
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
        htpasswd = workdir / "htpasswd"
        htpasswd.write_text(f"{username}:{hashed}\n")
        config["auth"] = {"htpasswd": {"realm": "stella-test", "path": str(htpasswd)}}
    elif auth == "token":
        assert username is not None
        assert password is not None
        token_server = TokenServer(username, password)
        bundle = workdir / "token-root.pem"
        bundle.write_bytes(token_server.signing.cert_pem)
        config["auth"] = {
            "token": {
                "realm": token_server.realm,
                "service": token_server.service,
                "issuer": token_server.issuer,
                "rootcertbundle": str(bundle),
            }
        }
    ca_cert: Path | None = None
    http: dict[str, object] = {"secret": secrets.token_hex(16)}
    if tls:
        pair = self_signed("127.0.0.1", server=True)
        ca_cert = workdir / "tls-cert.pem"
        key_path = workdir / "tls-key.pem"
        ca_cert.write_bytes(pair.cert_pem)
        key_path.write_bytes(pair.key_pem)
        http["tls"] = {"certificate": str(ca_cert), "key": str(key_path)}
    config["http"] = http
    scheme = "https" if tls else "http"
    # Our config alone decides: REGISTRY_* variables would override it silently.
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    last_error = ""
    for _attempt in range(3):  # a free port can be taken between probe and bind
        port = free_port()
        http["addr"] = f"127.0.0.1:{port}"
        config_path = workdir / "config.yml"
        config_path.write_text(json.dumps(config, indent=2))  # JSON is valid YAML
        log_path = workdir / f"registry-{port}.log"
        log = log_path.open("wb")
        process = subprocess.Popen(
            [binary, "serve", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        running = RunningRegistry(
            url=f"{scheme}://127.0.0.1:{port}",
            process=process,
            workdir=workdir,
            log_path=log_path,
            username=username,
            password=password,
            token_server=None,
            ca_cert=ca_cert,
            _log=log,
        )
        if _wait_ready(running, startup_timeout):
            running.token_server = token_server
            return running
        last_error = running.log_tail()
        running.stop()
        if "address already in use" not in last_error:
            break
    if token_server is not None:
        token_server.stop()
    raise RuntimeError(f"docker-registry did not start; its log ends with:\n{last_error}")


def _wait_ready(running: RunningRegistry, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    with httpx.Client(verify=False, timeout=1.0) as client:
        while time.monotonic() < deadline:
            if running.process.poll() is not None:
                return False
            try:
                response = client.get(f"{running.url}/v2/")
            except httpx.TransportError:
                time.sleep(0.05)  # polling a starting process: nothing to wait on instead
                continue
            if response.status_code in (200, 401):
                return True
            time.sleep(0.05)
    return False


# -- rewriting proxy ----------------------------------------------------------------------------

_FORWARDED_REQUEST_HEADERS = ("Accept", "Authorization")
_FORWARDED_RESPONSE_HEADERS = (
    "Content-Type",
    "Docker-Content-Digest",
    "Docker-Distribution-Api-Version",
    "WWW-Authenticate",
    "Retry-After",
    "Location",
)


class RewritingProxy:
    """A loopback HTTP proxy in front of a real registry that can misbehave on purpose.

    Knobs (reset with `reset()`):
    * strip_digest: drop Docker-Content-Digest from every response;
    * digest_override: replace Docker-Content-Digest with this value;
    * head_status: answer HEAD with this status instead of forwarding (e.g. 405);
    * tamper_body: append a byte to every GET body (and fix Content-Length);
    * fixed: answer every request with (status, headers, body) instead of forwarding;
    * realm_override: name this URL as the realm of every Bearer challenge.

    `authorizations` lists the Authorization header of every request (None where there was none).
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.requests: list[tuple[str, str]] = []
        self.authorizations: list[str | None] = []
        self._lock = threading.Lock()
        self.reset()
        self._client = httpx.Client(timeout=10.0)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _ProxyHandler)
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def reset(self) -> None:
        self.strip_digest = False
        self.digest_override: str | None = None
        self.head_status: int | None = None
        self.tamper_body = False
        self.fixed: tuple[int, dict[str, str], bytes] | None = None
        self.realm_override: str | None = None
        with self._lock:
            self.requests.clear()
            self.authorizations.clear()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def methods(self) -> list[str]:
        with self._lock:
            return [method for method, _ in self.requests]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._client.close()


class _ProxyHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def _handle(self, method: str) -> None:
        proxy: RewritingProxy = self.server.proxy  # type: ignore[attr-defined]
        with proxy._lock:
            proxy.requests.append((method, self.path))
            proxy.authorizations.append(self.headers.get("Authorization"))
        if proxy.fixed is not None:
            status, headers, body = proxy.fixed
            self._send(method, status, headers, body)
            return
        if method == "HEAD" and proxy.head_status is not None:
            self._send(method, proxy.head_status, {}, b"")
            return
        forwarded = {
            name: value
            for name in _FORWARDED_REQUEST_HEADERS
            if (value := self.headers.get(name)) is not None
        }
        upstream = proxy._client.request(method, proxy.upstream + self.path, headers=forwarded)
        headers = {
            name: value
            for name in _FORWARDED_RESPONSE_HEADERS
            if (value := upstream.headers.get(name)) is not None
        }
        body = upstream.content
        length = int(upstream.headers.get("Content-Length", len(body)))
        if proxy.strip_digest:
            headers.pop("Docker-Content-Digest", None)
        challenge = headers.get("WWW-Authenticate")
        if proxy.realm_override is not None and challenge is not None:
            headers["WWW-Authenticate"] = re.sub(
                r'realm="[^"]*"', f'realm="{proxy.realm_override}"', challenge
            )
        if proxy.digest_override is not None and upstream.status_code == 200:
            headers["Docker-Content-Digest"] = proxy.digest_override
        if proxy.tamper_body and method == "GET" and upstream.status_code == 200:
            body += b"\n"
        if method == "GET":
            length = len(body)
        headers["Content-Length"] = str(length)
        self._send(method, upstream.status_code, headers, body)

    def _send(self, method: str, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")


# -- pushing ------------------------------------------------------------------------------------


class ChallengeAuth(httpx.Auth):
    """Answers one Basic or Bearer challenge (enough for pushing fixtures)."""

    requires_response_body = True

    def __init__(self, username: str, password: str) -> None:
        raw = f"{username}:{password}".encode()
        self._basic = "Basic " + base64.b64encode(raw).decode("ascii")

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        response = yield request
        if response.status_code != 401:
            return
        header = response.headers.get("WWW-Authenticate", "")
        scheme = header.split(" ", 1)[0].lower()
        params = dict(re.findall(r'(\w+)="([^"]*)"', header))
        if scheme == "bearer":
            query = {k: params[k] for k in ("service", "scope") if k in params}
            token_response = yield httpx.Request(
                "GET", params["realm"], params=query, headers={"Authorization": self._basic}
            )
            token_response.raise_for_status()
            request.headers["Authorization"] = "Bearer " + token_response.json()["token"]
        else:
            request.headers["Authorization"] = self._basic
        yield request


@contextlib.contextmanager
def _client(url: str, auth: Auth) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=url,
        auth=ChallengeAuth(*auth) if auth else None,
        timeout=30.0,
        verify=False,
    ) as client:
        yield client


def push_blob(url: str, repository: str, data: bytes, *, auth: Auth = None) -> str:
    """Monolithic upload (POST then PUT ?digest=); skipped if the blob is there. -> digest."""
    digest = sha256_of(data)
    with _client(url, auth) as client:
        if client.head(f"/v2/{repository}/blobs/{digest}").status_code == 200:
            return digest
        started = client.post(f"/v2/{repository}/blobs/uploads/")
        assert started.status_code == 202, (started.status_code, started.text)
        location = httpx.URL(url).join(started.headers["Location"])
        done = client.put(
            location.copy_merge_params({"digest": digest}),
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert done.status_code == 201, (done.status_code, done.text)
    return digest


def push_manifest(
    url: str,
    repository: str,
    reference: str,
    body: bytes,
    media_type: str,
    *,
    auth: Auth = None,
) -> str:
    """PUT exactly `body` as a manifest. -> sha256 of those bytes (checked against the registry)."""
    digest = sha256_of(body)
    with _client(url, auth) as client:
        response = client.put(
            f"/v2/{repository}/manifests/{reference}",
            content=body,
            headers={"Content-Type": media_type},
        )
    assert response.status_code == 201, (response.status_code, response.text)
    assert response.headers.get("Docker-Content-Digest") == digest
    return digest


def tag_existing(
    url: str,
    repository: str,
    new_tag: str,
    manifest_bytes: bytes,
    media_type: str,
    *,
    auth: Auth = None,
) -> str:
    """Point `new_tag` at an existing manifest (moves the tag if it exists). -> digest."""
    return push_manifest(url, repository, new_tag, manifest_bytes, media_type, auth=auth)


@dataclass(frozen=True)
class BuiltImage:
    """The exact bytes of a single-layer image; `manifest` is what gets PUT."""

    layer: bytes
    config: bytes
    manifest: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return sha256_of(self.manifest)


def _layer_tar(files: Mapping[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(files[name]))
    return buffer.getvalue()


def build_image(
    files: Mapping[str, bytes],
    *,
    docker: bool = False,
    architecture: str = "amd64",
    os_name: str = "linux",
) -> BuiltImage:
    tar = _layer_tar(files)
    layer = gzip.compress(tar, mtime=0)
    config = json.dumps(
        {
            "architecture": architecture,
            "os": os_name,
            "rootfs": {"type": "layers", "diff_ids": [sha256_of(tar)]},
        }
    ).encode()
    media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {
                "mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
                "digest": sha256_of(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": DOCKER_LAYER if docker else OCI_LAYER,
                    "digest": sha256_of(layer),
                    "size": len(layer),
                }
            ],
        },
        indent=3,  # not canonical on purpose: the digest must be of these exact bytes
    ).encode()
    return BuiltImage(layer=layer, config=config, manifest=manifest, media_type=media_type)


def push_built(
    url: str, repository: str, reference: str, image: BuiltImage, *, auth: Auth = None
) -> str:
    push_blob(url, repository, image.layer, auth=auth)
    push_blob(url, repository, image.config, auth=auth)
    return push_manifest(url, repository, reference, image.manifest, image.media_type, auth=auth)


def _default_files(repository: str, tag: str, architecture: str) -> dict[str, bytes]:
    return {"etc/stella-test.txt": f"{repository}:{tag} {architecture}\n".encode()}


def push_image(
    url: str,
    repository: str,
    tag: str,
    *,
    files: Mapping[str, bytes] | None = None,
    auth: Auth = None,
    architecture: str = "amd64",
    os_name: str = "linux",
) -> str:
    """Push a one-layer OCI image under `tag`. -> manifest digest (sha256 of the PUT bytes)."""
    image = build_image(
        files if files is not None else _default_files(repository, tag, architecture),
        architecture=architecture,
        os_name=os_name,
    )
    return push_built(url, repository, tag, image, auth=auth)


def push_docker_image(
    url: str,
    repository: str,
    tag: str,
    *,
    files: Mapping[str, bytes] | None = None,
    auth: Auth = None,
    architecture: str = "amd64",
    os_name: str = "linux",
) -> str:
    """Push a one-layer Docker v2 image (Docker config/layer types). -> manifest digest."""
    image = build_image(
        files if files is not None else _default_files(repository, tag, architecture),
        docker=True,
        architecture=architecture,
        os_name=os_name,
    )
    return push_built(url, repository, tag, image, auth=auth)


def describe(url: str, repository: str, digest: str, *, auth: Auth = None) -> dict[str, object]:
    """A descriptor (mediaType, digest, size) for a manifest already in the registry."""
    with _client(url, auth) as client:
        response = client.get(
            f"/v2/{repository}/manifests/{digest}", headers={"Accept": ALL_MANIFEST_TYPES}
        )
    assert response.status_code == 200, (response.status_code, response.text)
    assert sha256_of(response.content) == digest
    media_type = response.headers["Content-Type"].split(";")[0].strip()
    return {"mediaType": media_type, "digest": digest, "size": len(response.content)}


def _platform(spec: str) -> dict[str, str]:
    parts = spec.split("/")
    platform = {"os": parts[0], "architecture": parts[1]}
    if len(parts) > 2:
        platform["variant"] = parts[2]
    return platform


def build_index(media_type: str, descriptors: Sequence[tuple[Mapping[str, object], str]]) -> bytes:
    """Index/list bytes from (descriptor, "os/arch[/variant]") pairs."""
    manifests = [
        {**descriptor, "platform": _platform(platform)} for descriptor, platform in descriptors
    ]
    return json.dumps(
        {"schemaVersion": 2, "mediaType": media_type, "manifests": manifests}, indent=2
    ).encode()


def _push_index(
    url: str,
    repository: str,
    tag: str,
    children: Sequence[tuple[str, str]],
    media_type: str,
    auth: Auth,
) -> str:
    descriptors = [
        (describe(url, repository, digest, auth=auth), platform) for digest, platform in children
    ]
    return push_manifest(
        url, repository, tag, build_index(media_type, descriptors), media_type, auth=auth
    )


def push_oci_index(
    url: str,
    repository: str,
    tag: str,
    children: Sequence[tuple[str, str]],
    *,
    auth: Auth = None,
) -> str:
    """Push an OCI index over already-pushed children given as (digest, "os/arch"). -> digest."""
    return _push_index(url, repository, tag, children, OCI_INDEX, auth)


def push_docker_list(
    url: str,
    repository: str,
    tag: str,
    children: Sequence[tuple[str, str]],
    *,
    auth: Auth = None,
) -> str:
    """Push a Docker manifest list over already-pushed Docker v2 children. -> digest."""
    return _push_index(url, repository, tag, children, DOCKER_LIST, auth)
