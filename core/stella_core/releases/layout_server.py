"""A read-only OCI distribution endpoint over an OCI image layout, on loopback only.

Container engines pull from registries, not from directories: this lets podman or docker on
this machine pull the images of a layout (the demo's) by digest. It answers `GET`/`HEAD` of
`/v2/`, `/v2/<repository>/manifests/<tag|digest>` and `/v2/<repository>/blobs/<digest>`, with
the bytes exactly as stored (so digests hold), and nothing else: other paths are 404, other
methods 405. Names and digests are checked, and every file read stays inside the layout root
(`OciLayoutSource` does the reading).

Where a layout is served is kept in STELLA_HOME (`served-layout.json`: the root and the port),
so the process that serves it (the desk, beside its local agent) finds the same port the
registry was recorded with.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from stella_core.errors import InvalidReferenceError, ManifestNotFoundError, StellaError
from stella_core.releases.layout import OciLayoutSource
from stella_core.releases.reference import check_digest, check_repository, check_tag, is_digest

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
SERVED_LAYOUT_FILE = "served-layout.json"
_ROUTE = re.compile(r"^/v2/(?P<name>.+)/(?P<kind>manifests|blobs)/(?P<ref>[^/]+)$")
_MAX_PATH = 2048


class LayoutServerError(StellaError):
    """The layout server could not start (its port is taken, most often)."""


def free_port() -> int:
    """A loopback port free now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def save_served_layout(home: Path, root: Path, port: int) -> None:
    path = Path(home) / SERVED_LAYOUT_FILE
    data = json.dumps({"layout": str(root), "port": port}, sort_keys=True).encode()
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def served_layout(home: Path) -> tuple[Path, int] | None:
    """(layout root, port) recorded in STELLA_HOME, or None (none recorded, or unreadable)."""
    path = Path(home) / SERVED_LAYOUT_FILE
    try:
        document = json.loads(path.read_bytes()[:4096])
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict):
        return None
    root, port = document.get("layout"), document.get("port")
    if not isinstance(root, str) or not isinstance(port, int) or isinstance(port, bool):
        return None
    if not 0 < port < 65536:
        return None
    return Path(root), port


class _Handler(BaseHTTPRequestHandler):
    server_version = "stella-layout"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = 30  # an idle or stalled connection frees its thread
    source: OciLayoutSource  # set on the subclass each server makes

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("layout server: " + format, *args)

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _refuse(self) -> None:
        self._send(405, b'{"errors":[{"code":"UNSUPPORTED"}]}', {"Allow": "GET, HEAD"}, True)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _refuse

    def _send(self, status: int, data: bytes, headers: dict[str, str], body: bool) -> None:
        self.send_response(status)
        headers = {"Content-Type": "application/json", **headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _not_found(self, code: str, body: bool) -> None:
        self._send(404, json.dumps({"errors": [{"code": code}]}).encode(), {}, body)

    def _answer(self, *, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if len(path) > _MAX_PATH:
            self._not_found("NAME_INVALID", body)
            return
        if path in ("/v2", "/v2/"):
            self._send(200, b"{}", {}, body)
            return
        match = _ROUTE.match(path)
        if match is None:
            self._not_found("NOT_FOUND", body)
            return
        name, kind, ref = match["name"], match["kind"], match["ref"]
        try:
            check_repository(name)
            if kind == "blobs" or is_digest(ref):
                check_digest(ref)
            else:
                check_tag(ref)
        except InvalidReferenceError:
            self._not_found("NAME_INVALID", body)
            return
        try:
            if kind == "manifests":
                resolved, data = self.source.manifest(name, ref)
                headers = {
                    "Content-Type": resolved.media_type,
                    "Docker-Content-Digest": resolved.digest,
                }
            else:
                data = self.source.blob(name, ref)
                headers = {"Content-Type": "application/octet-stream", "Docker-Content-Digest": ref}
        except ManifestNotFoundError:
            self._not_found("MANIFEST_UNKNOWN" if kind == "manifests" else "BLOB_UNKNOWN", body)
            return
        except StellaError as exc:
            # A layout that is malformed or reaches outside its root: said here, not served.
            log.warning("layout server: %s", exc.message)
            self._not_found("NOT_FOUND", body)
            return
        self._send(200, data, headers, body)


class LayoutServer:
    """Serve one OCI layout root on 127.0.0.1:`port` (0: a free one) from a thread."""

    def __init__(self, root: Path, port: int = 0) -> None:
        self.root = Path(root)
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"LayoutServer(root={str(self.root)!r}, port={self._port})"

    @property
    def port(self) -> int:
        return self._port

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self._port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> LayoutServer:
        handler = type("LayoutHandler", (_Handler,), {"source": OciLayoutSource(self.root)})
        try:
            server = ThreadingHTTPServer((LOOPBACK, self._port), handler)
        except OSError as exc:
            raise LayoutServerError(
                f"cannot serve the OCI layout {self.root} on {LOOPBACK}:{self._port}: "
                f"{exc.strerror or exc}"
            ) from exc
        server.daemon_threads = True
        self._server = server
        self._port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="stella-layout-server",
            daemon=True,
        )
        self._thread.start()
        log.info("serving the OCI layout %s on %s", self.root, self.url)
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(2.0)

    def __enter__(self) -> LayoutServer:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = [
    "SERVED_LAYOUT_FILE",
    "LayoutServer",
    "LayoutServerError",
    "free_port",
    "save_served_layout",
    "served_layout",
]
