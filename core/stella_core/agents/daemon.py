"""`stella-agent`: the daemon on a target. Runs as an ordinary user; needs no Qt.

    stella-agent enroll --server HOST:PORT --token TOKEN --ca-fingerprint SHA256 --state-dir DIR
    stella-agent run --state-dir DIR

Enrolling: the agent reads the enrollment port's certificate chain, finds in it the CA whose
SHA-256 fingerprint it was given (else it stops: someone else answers there), then talks to that
port over TLS checked against that CA only. It makes its own P-256 key (it never leaves the state
directory, mode 0600), sends a CSR with the one-time token, and keeps the certificate, the CA,
and the orchestrator's public key(s) it will check every task against.

Running: it dials out (nothing to open on the target), asks the enrollment port where the mutual
TLS link listens, and keeps one stream. A lost link is retried with jittered backoff that widens
in tiers (1-5 s during the first minute, 5-15 s until ten minutes, then 30-60 s), so agents do
not all come back in the same second after an orchestrator restart. It renews its certificate at
two thirds of its lifetime (a CSR by its bound key), and recovers one that expired while it was
offline (within 7 days) by proving it holds that key.

Tasks: each is checked (orchestrator signature, expiry, addressee, type: `deploy.taskwire`)
before anything runs, and recorded in a local journal by idempotency key: a task delivered again
is answered from the journal, never run twice; one that was running when the agent died is
answered as failed. `execute-command` runs only commands in the state directory's config.json
allow-list (empty by default).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import queue
import random
import shutil
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from stella_core.clock import Clock, SystemClock
from stella_core.errors import DefinitionError, IntegrityError, StellaError

log = logging.getLogger("stella.agent")

VERSION = "0.1.0"
_KEY = "agent.key"
_CERT = "agent.crt"
_CA = "ca.crt"
_STATE = "agent.json"
_CONFIG = "config.json"
_JOURNAL = "journal.sqlite3"
RECOVERY_WINDOW = timedelta(days=7)
RENEW_AT = 2 / 3
INTERRUPTED = "interrupted by an agent restart"

# Keepalive (standards §D.5): ping every 10 s, give up 10 s later: a dead link is found in
# under 30 s. The gateway allows pings every 5 s.
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
)

# (until this long after the link was lost, lowest, highest) seconds of wait before a redial.
BACKOFF_TIERS: tuple[tuple[float | None, float, float], ...] = (
    (60.0, 1.0, 5.0),
    (600.0, 5.0, 15.0),
    (None, 30.0, 60.0),
)

Runner = Callable[..., dict[str, Any]]


class AgentError(StellaError):
    """The agent cannot do what was asked (enroll, start); the message says why."""


class Backoff:
    """Jittered waits that widen in tiers with the time since the link was lost."""

    def __init__(
        self,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        tiers: Sequence[tuple[float | None, float, float]] = BACKOFF_TIERS,
    ) -> None:
        self.clock = clock or SystemClock()
        self.rng = rng or random.SystemRandom()
        self.tiers = tiers
        self._since: datetime | None = None

    def reset(self) -> None:
        """The link is up: the next loss starts from the first tier."""
        self._since = None

    def next_delay(self) -> float:
        now = self.clock.now()
        if self._since is None:
            self._since = now
        down = (now - self._since).total_seconds()
        for until, low, high in self.tiers:
            if until is None or down < until:
                return self.rng.uniform(low, high)
        _, low, high = self.tiers[-1]
        return self.rng.uniform(low, high)


def renew_due(not_before: datetime, not_after: datetime, now: datetime) -> bool:
    return now >= not_before + (not_after - not_before) * RENEW_AT


# --- files in the state directory ------------------------------------------------------------
def _write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Atomically, never readable by others even for a moment."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass
class AgentState:
    directory: Path
    agent_id: UUID
    tenant_id: UUID
    name: str
    server: str  # the enrollment port, HOST:PORT
    generation: int
    trusted: dict[str, str]  # orchestrator key id -> SPKI PEM

    @classmethod
    def load(cls, directory: Path) -> AgentState:
        path = directory / _STATE
        if not path.exists():
            raise AgentError(f"{directory} holds no enrolled agent; enroll it first")
        for name in (_KEY, _STATE):
            if (directory / name).stat().st_mode & 0o077:
                raise AgentError(f"{directory / name} is accessible by others; make it 0600")
        try:
            doc = json.loads(path.read_text())
            return cls(
                directory,
                UUID(doc["agent_id"]),
                UUID(doc["tenant_id"]),
                str(doc["name"]),
                str(doc["server"]),
                int(doc["generation"]),
                {str(k): str(v) for k, v in doc["trusted"].items()},
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise AgentError(f"{path} is damaged") from exc

    def save(self) -> None:
        doc = {
            "agent_id": str(self.agent_id),
            "tenant_id": str(self.tenant_id),
            "name": self.name,
            "server": self.server,
            "generation": self.generation,
            "trusted": self.trusted,
        }
        _write_private(self.directory / _STATE, json.dumps(doc, indent=2).encode())

    def key_pem(self) -> bytes:
        return (self.directory / _KEY).read_bytes()

    def cert_pem(self) -> bytes:
        return (self.directory / _CERT).read_bytes()

    def ca_pem(self) -> bytes:
        return (self.directory / _CA).read_bytes()

    def save_cert(self, pem: bytes, generation: int) -> None:
        _write_private(self.directory / _CERT, pem, 0o644)
        self.generation = generation
        self.save()

    def trust(self, keys: Sequence[Any]) -> None:
        """Add orchestrator keys heard from the CA-authenticated server (rotation)."""
        from stella_core.crypto.keys import PublicKey

        changed = False
        for entry in keys:
            key = PublicKey.from_pem(bytes(entry.pem))
            if key.key_id != entry.key_id:
                continue
            if key.key_id not in self.trusted:
                self.trusted[key.key_id] = key.pem().decode()
                changed = True
        if changed:
            self.save()

    def trusted_keys(self) -> dict[str, Any]:
        from stella_core.crypto.keys import PublicKey

        return {k: PublicKey.from_pem(v.encode()) for k, v in self.trusted.items()}

    def allow_commands(self) -> list[list[str]]:
        """The execute-command allow-list: config.json's `allow_commands`, exact argv lists."""
        path = self.directory / _CONFIG
        if not path.exists():
            return []
        try:
            doc = json.loads(path.read_text())
        except ValueError as exc:
            raise AgentError(f"{path} is not JSON") from exc
        allowed = doc.get("allow_commands", []) if isinstance(doc, dict) else None
        if not isinstance(allowed, list) or not all(
            isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)
            for argv in allowed
        ):
            raise AgentError(f"{path}: allow_commands must be a list of argument lists")
        return [list(argv) for argv in allowed]


# --- the journal -----------------------------------------------------------------------------
class Journal:
    """What the agent ran, by idempotency key (sqlite3 in the state directory)."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS tasks (idempotency_key TEXT PRIMARY KEY,"
                " task_id TEXT NOT NULL, state TEXT NOT NULL, outcome TEXT,"
                " started_at TEXT NOT NULL, finished_at TEXT)"
            )
        os.chmod(path, 0o600)

    def interrupt_running(self, now: datetime) -> int:
        """Tasks that were running when the agent stopped: failed, never run again."""
        outcome = json.dumps(
            {
                "ok": False,
                "error": INTERRUPTED,
                "error_type": "interrupted",
                "retryable": False,
                "outputs": {},
            }
        )
        with self._lock:
            cur = self._db.execute(
                "UPDATE tasks SET state = 'done', outcome = ?, finished_at = ?"
                " WHERE state = 'running'",
                (outcome, now.isoformat()),
            )
            return cur.rowcount

    def lookup(self, key: str) -> tuple[str, dict[str, Any] | None] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT state, outcome FROM tasks WHERE idempotency_key = ?", (key,)
            ).fetchone()
        if row is None:
            return None
        return row[0], json.loads(row[1]) if row[1] else None

    def begin(self, key: str, task_id: UUID, now: datetime) -> bool:
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO tasks (idempotency_key, task_id, state, started_at)"
                " VALUES (?, ?, 'running', ?)",
                (key, str(task_id), now.isoformat()),
            )
            return cur.rowcount == 1

    def finish(self, key: str, outcome: dict[str, Any], now: datetime) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE tasks SET state = 'done', outcome = ?, finished_at = ?"
                " WHERE idempotency_key = ? AND state = 'running'",
                (json.dumps(outcome), now.isoformat(), key),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


# --- TLS: pinning the CA ---------------------------------------------------------------------
def split_server(server: str) -> tuple[str, int]:
    host, sep, port = server.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise DefinitionError(f"the server {server!r} is not HOST:PORT", field="server")
    return host, int(port)


def _peer_chain(host: str, port: int, timeout: float = 10.0) -> list[bytes]:
    """The certificate chain the server presents (DER, leaf first), unverified: it is checked
    against the pinned fingerprint next."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=None) as tls,
        ):
            getter = getattr(tls, "get_unverified_chain", None)
            if getter is not None:  # Python 3.13
                return [bytes(c) for c in getter()]
            chain = tls._sslobj.get_unverified_chain() or []  # type: ignore[attr-defined]
            return [c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain]  # type: ignore[attr-defined]
    except (OSError, ssl.SSLError) as exc:
        raise AgentError(f"cannot reach {host}:{port} over TLS: {exc}") from exc


def pinned_ca(host: str, port: int, fingerprint: str) -> bytes:
    """The CA certificate (PEM) the server's chain holds with the pinned SHA-256 fingerprint,
    once the server's own certificate is checked to be issued by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    chain = _peer_chain(host, port)
    if not chain:
        raise AgentError(f"{host}:{port} presented no certificate")
    found = [der for der in chain if hashlib.sha256(der).hexdigest() == fingerprint]
    if not found:
        raise IntegrityError(
            f"the server at {host}:{port} is not vouched for by the CA with the given "
            "fingerprint: refusing to enroll there"
        )
    ca = x509.load_der_x509_certificate(found[0])
    leaf = x509.load_der_x509_certificate(chain[0])
    try:
        leaf.verify_directly_issued_by(ca)
    except (ValueError, TypeError, Exception) as exc:
        raise IntegrityError(
            f"the server at {host}:{port} presents a certificate its CA did not issue"
        ) from exc
    return ca.public_bytes(serialization.Encoding.PEM)


def _channel(
    target: str, ca_pem: bytes, key_pem: bytes | None = None, cert_pem: bytes | None = None
) -> Any:
    import grpc

    from stella_core.agents.authority import GATEWAY_NAME

    creds = grpc.ssl_channel_credentials(ca_pem, key_pem, cert_pem)
    options = [*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", GATEWAY_NAME)]
    return grpc.secure_channel(target, creds, options=options)


def _target(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _rpc_error(exc: Any, what: str) -> AgentError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    name = code.name if code is not None else "error"
    return AgentError(f"{what} refused ({name}): {details}")


# --- enrolling -------------------------------------------------------------------------------
def enroll(
    server: str, token: str, ca_fingerprint: str, state_dir: Path, *, hostname: str | None = None
) -> AgentState:
    """Enroll this machine with the orchestrator at `server` (its enrollment port)."""
    import grpc
    from cryptography.hazmat.primitives.asymmetric import ec

    from stella_core.agents._proto import agent_pb2 as pb
    from stella_core.agents._proto import agent_pb2_grpc as rpc
    from stella_core.agents.authority import make_csr, normalize_fingerprint, private_pem

    fingerprint = normalize_fingerprint(ca_fingerprint)
    host, port = split_server(server)
    if not token.strip():
        raise DefinitionError("the enrollment token is empty", field="token")
    if (state_dir / _STATE).exists():
        raise AgentError(f"{state_dir} holds an enrolled agent already; use another directory")
    ca_pem = pinned_ca(host, port, fingerprint)
    key = ec.generate_private_key(ec.SECP256R1())
    request = pb.EnrollRequest(
        token=token.strip(),
        csr_der=make_csr(key),
        hostname=hostname or socket.gethostname(),
        version=VERSION,
    )
    with _channel(_target(host, port), ca_pem) as channel:
        try:
            reply = rpc.EnrollmentStub(channel).Enroll(request, timeout=30)
        except grpc.RpcError as exc:
            raise _rpc_error(exc, "enrollment") from exc
    return write_enrollment(
        state_dir,
        private_pem(key),
        certificate_pem=bytes(reply.certificate_pem),
        ca_pem=bytes(reply.ca_certificate_pem),
        agent_id=UUID(reply.agent_id),
        tenant_id=UUID(reply.tenant_id),
        name=reply.name,
        server=server,
        generation=int(reply.generation),
        orchestrator_keys=reply.orchestrator_keys,
    )


def write_enrollment(
    state_dir: Path,
    key_pem: bytes,
    *,
    certificate_pem: bytes,
    ca_pem: bytes,
    agent_id: UUID,
    tenant_id: UUID,
    name: str,
    server: str,
    generation: int,
    orchestrator_keys: Sequence[Any],
) -> AgentState:
    """Keep what an enrollment gave in the state directory (made 0700): the key (0600), the
    certificate, the CA, the default config, and the orchestrator key(s) tasks are checked
    against (`orchestrator_keys`: items with `.key_id` and `.pem`)."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(state_dir, 0o700)
    _write_private(state_dir / _KEY, key_pem)
    _write_private(state_dir / _CERT, certificate_pem, 0o644)
    _write_private(state_dir / _CA, ca_pem, 0o644)
    if not (state_dir / _CONFIG).exists():
        _write_private(state_dir / _CONFIG, b'{\n  "allow_commands": []\n}\n', 0o644)
    state = AgentState(state_dir, agent_id, tenant_id, name, server, generation, {})
    state.save()
    state.trust(orchestrator_keys)
    if not state.trusted:
        raise AgentError("the orchestrator sent no signing key to check tasks with")
    return state


def is_enrolled(state_dir: Path) -> bool:
    return (state_dir / _STATE).exists()


def local_runtimes(timeout: float = 5.0, path: str | None = None) -> list[str]:
    """The container runtimes this machine can run, as the agent reports them (cheap checks:
    a program on `path`, PATH by default; `docker compose` is a docker plugin, so it is asked
    once)."""
    found = [name for name in ("podman-compose", "podman") if shutil.which(name, path=path)]
    docker = shutil.which("docker", path=path)
    if docker:
        try:
            answer = subprocess.run(
                [docker, "compose", "version"],
                capture_output=True,
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
            if answer.returncode == 0:
                found.append("docker compose")
        except (OSError, subprocess.SubprocessError):
            pass
        found.append("docker")
    return found


# --- running ---------------------------------------------------------------------------------
_END = object()


class _Refused(Exception):
    """The orchestrator refused this agent's link (revoked, locked out)."""


class Agent:
    """The running daemon. `runner` runs a checked task (defaults to deploy.runner.run_task);
    `clock` decides expiry and renewal; `backoff` the waits between dials."""

    def __init__(
        self,
        state_dir: Path,
        *,
        runner: Runner | None = None,
        clock: Clock | None = None,
        backoff: Backoff | None = None,
        host_factory: Callable[[], Any] | None = None,
        server: str | None = None,
        runtime_path: str | None = None,
    ) -> None:
        self.state = AgentState.load(state_dir)
        if server is not None:
            # Where the enrollment port is now (an embedded gateway listens on a new port at
            # each start); the CA pin and the certificate are what is checked, not the address.
            split_server(server)
            self.state.server = server
        self.clock = clock or SystemClock()
        self.backoff = backoff or Backoff(self.clock)
        self._runner = runner
        self._host_factory = host_factory
        # Where runtimes are looked for (PATH by default); give the same to host_factory's host.
        self._runtime_path = runtime_path
        self.journal = Journal(state_dir / _JOURNAL)
        self.journal.interrupt_running(self.clock.now())
        self._out: queue.Queue[Any] | None = None
        self._out_lock = threading.Lock()
        self._work: queue.Queue[Any] = queue.Queue()
        self._running: set[str] = set()
        self._cancelled: set[str] = set()
        self._call: Any = None
        self._stop = threading.Event()
        self._reconnect_now = False
        self.connected = threading.Event()
        self._worker = threading.Thread(target=self._work_loop, name="agent-tasks", daemon=True)
        self._worker.start()
        self.refusal: str | None = None

    # the loop ---------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None) -> None:
        stop = stop or self._stop
        self._stop = stop
        while not stop.is_set():
            self._reconnect_now = False
            try:
                self._ensure_certificate()
                self._connect_once()
            except _Refused as exc:
                self.refusal = str(exc)
                log.warning("the orchestrator refused this agent: %s", exc)
            except AgentError as exc:
                log.warning("%s", exc.message)
            except Exception as exc:  # a dial that failed: wait and dial again
                log.info("link lost: %s", exc)
            finally:
                self.connected.clear()
            if self._reconnect_now:
                continue
            delay = self.backoff.next_delay()
            log.info("dialling again in %.1f s", delay)
            stop.wait(delay)

    def stop(self) -> None:
        self._stop.set()
        call = self._call
        if call is not None:
            with contextlib.suppress(Exception):
                call.cancel()

    def close(self, timeout: float = 5.0) -> None:
        """Stop; a task still running gets `timeout` seconds (its journal row then says it
        was interrupted, at the next start)."""
        self.stop()
        self._work.put(_END)
        self._worker.join(timeout=timeout)
        self.journal.close()

    def _cert(self) -> Any:
        from cryptography import x509

        return x509.load_pem_x509_certificate(self.state.cert_pem())

    def _ensure_certificate(self) -> None:
        """Recover a certificate that expired while offline (within the window)."""
        cert = self._cert()
        now = self.clock.now()
        if now < cert.not_valid_after_utc:
            return
        if now - cert.not_valid_after_utc > RECOVERY_WINDOW:
            raise AgentError(
                "this agent's certificate expired more than 7 days ago: enroll it again "
                "with a new token"
            )
        self._recover()

    def _recover(self) -> None:
        import grpc
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        from stella_core.agents._proto import agent_pb2 as pb
        from stella_core.agents._proto import agent_pb2_grpc as rpc
        from stella_core.agents.authority import make_csr
        from stella_core.agents.service import recover_proof_bytes

        key = serialization.load_pem_private_key(self.state.key_pem(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        csr = make_csr(key)
        stamp = int(self.clock.now().timestamp())
        proof = key.sign(
            recover_proof_bytes(self.state.agent_id, self.state.generation, stamp, csr),
            ec.ECDSA(hashes.SHA256()),
        )
        host, port = split_server(self.state.server)
        with _channel(_target(host, port), self.state.ca_pem()) as channel:
            try:
                reply = rpc.EnrollmentStub(channel).Recover(
                    pb.RecoverRequest(
                        agent_id=str(self.state.agent_id),
                        csr_der=csr,
                        generation=self.state.generation,
                        timestamp_unix=stamp,
                        proof=proof,
                    ),
                    timeout=30,
                )
            except grpc.RpcError as exc:
                raise _rpc_error(exc, "recovery") from exc
        self.state.save_cert(bytes(reply.certificate_pem), int(reply.generation))
        self.state.trust(reply.orchestrator_keys)
        log.info("recovered: certificate generation %d", reply.generation)

    def _link_target(self) -> str:
        from stella_core.agents._proto import agent_pb2 as pb
        from stella_core.agents._proto import agent_pb2_grpc as rpc

        host, port = split_server(self.state.server)
        with _channel(_target(host, port), self.state.ca_pem()) as channel:
            reply = rpc.EnrollmentStub(channel).Discover(pb.DiscoverRequest(), timeout=15)
        return _target(reply.link.host or host, reply.link.port)

    def _send(self, **body: Any) -> bool:
        from stella_core.agents._proto import agent_pb2 as pb

        with self._out_lock:
            out = self._out
            if out is None:
                return False
            out.put(pb.AgentMessage(**body))
            return True

    def _outgoing(self, out: queue.Queue[Any]) -> Iterator[Any]:
        while True:
            item = out.get()
            if item is _END:
                return
            yield item

    def _connect_once(self) -> None:
        import grpc

        from stella_core.agents._proto import agent_pb2 as pb
        from stella_core.agents._proto import agent_pb2_grpc as rpc

        target = self._link_target()
        out: queue.Queue[Any] = queue.Queue()
        with _channel(
            target, self.state.ca_pem(), self.state.key_pem(), self.state.cert_pem()
        ) as channel:
            with self._out_lock:
                self._out = out
            hello = pb.Hello(
                version=VERSION, hostname=socket.gethostname(), runtimes=self._runtimes()
            )
            out.put(pb.AgentMessage(hello=hello))
            call = rpc.AgentLinkStub(channel).Connect(self._outgoing(out))
            self._call = call
            beats = threading.Event()
            heart = threading.Thread(
                target=self._heartbeats, args=(beats, 10.0), name="agent-heartbeat", daemon=True
            )
            try:
                for message in call:
                    kind = message.WhichOneof("body")
                    if kind == "welcome":
                        self.state.trust(message.welcome.orchestrator_keys)
                        self.backoff.reset()
                        self.connected.set()
                        if not heart.is_alive():
                            heart.start()
                        log.info("linked as %s (%s)", self.state.name, self.state.agent_id)
                    elif kind == "task":
                        self._work.put((message.task.task_id, bytes(message.task.envelope)))
                    elif kind == "cancel":
                        self._cancelled.add(message.cancel.task_id)
                    elif kind == "renewed":
                        self.state.save_cert(
                            bytes(message.renewed.certificate_pem), int(message.renewed.generation)
                        )
                        log.info("renewed: certificate generation %d", message.renewed.generation)
                        # Move to the new certificate at once (standards §D.3).
                        self._reconnect_now = True
                        call.cancel()
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
                    raise _Refused(exc.details()) from exc
                if code != grpc.StatusCode.CANCELLED:
                    raise
            finally:
                beats.set()
                with self._out_lock:
                    self._out = None
                out.put(_END)
                self._call = None

    def _runtimes(self) -> list[str]:
        # Looked at on each dial: a runtime installed meanwhile is reported at the next link.
        try:
            return local_runtimes(path=self._runtime_path)
        except Exception:  # never worth losing the link over
            log.exception("could not tell which container runtimes this machine has")
            return []

    def _heartbeats(self, stop: threading.Event, every: float) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        from stella_core.agents._proto import agent_pb2 as pb
        from stella_core.agents.authority import make_csr

        asked = False
        while True:
            cert = self._cert()
            if not asked and renew_due(
                cert.not_valid_before_utc, cert.not_valid_after_utc, self.clock.now()
            ):
                from cryptography.hazmat.primitives import serialization

                key = serialization.load_pem_private_key(self.state.key_pem(), None)
                assert isinstance(key, ec.EllipticCurvePrivateKey)
                asked = self._send(renew=pb.RenewRequest(csr_der=make_csr(key)))
            self._send(heartbeat=pb.Heartbeat(sent_unix_ms=int(time.time() * 1000)))
            if stop.wait(every):
                return

    # tasks ------------------------------------------------------------------------------
    def _work_loop(self) -> None:
        while True:
            item = self._work.get()
            if item is _END:
                return
            task_id, envelope = item
            try:
                self.handle(task_id, envelope)
            except Exception:
                log.exception("task %s could not be handled", task_id)

    def _result(self, task_id: str, outcome: Mapping[str, Any], *, from_journal: bool) -> None:
        from stella_core.agents._proto import agent_pb2 as pb

        def ms(value: Any) -> int:
            if not isinstance(value, str):
                return 0
            return int(datetime.fromisoformat(value).timestamp() * 1000)

        self._send(
            result=pb.TaskResult(
                task_id=task_id,
                ok=bool(outcome.get("ok")),
                outputs_json=json.dumps(outcome.get("outputs") or {}).encode(),
                error=str(outcome.get("error") or ""),
                error_type=str(outcome.get("error_type") or ""),
                retryable=bool(outcome.get("retryable")),
                started_unix_ms=ms(outcome.get("started_at")),
                finished_unix_ms=ms(outcome.get("finished_at")),
                from_journal=from_journal,
            )
        )

    def handle(self, task_id: str, envelope: bytes) -> None:
        """Check a delivered task, then answer it from the journal or run it once."""
        from stella_core.agents._proto import agent_pb2 as pb
        from stella_core.deploy.taskwire import TaskRejectedError, open_task

        now = self.clock.now()
        try:
            spec = open_task(envelope, self.state.trusted_keys(), self.state.agent_id, now)
            if str(spec.id) != task_id:
                raise TaskRejectedError("the task's id differs from its delivery", "malformed")
        except TaskRejectedError as exc:
            log.warning("task %s refused: %s", task_id, exc.message)
            self._result(
                task_id,
                {"ok": False, "error": exc.message, "error_type": f"rejected:{exc.reason}"},
                from_journal=False,
            )
            return
        key = spec.idempotency_key
        if key in self._running:
            return  # running here now; its answer follows
        known = self.journal.lookup(key)
        if known is not None and known[0] == "done" and known[1] is not None:
            self._result(task_id, known[1], from_journal=True)
            return
        if task_id in self._cancelled:
            return
        if not self.journal.begin(key, spec.id, now):
            return
        self._running.add(key)
        try:
            self._send(started=pb.TaskStarted(task_id=task_id))
            outcome = self._run(spec, task_id, now)
            self.journal.finish(key, outcome, self.clock.now())
        finally:
            self._running.discard(key)
        self._result(task_id, outcome, from_journal=False)

    def _run(self, spec: Any, task_id: str, started: datetime) -> dict[str, Any]:
        from stella_core.agents._proto import agent_pb2 as pb

        def log_line(line: str) -> None:
            self._send(log=pb.TaskLog(task_id=task_id, line=str(line)[:8192]))

        outcome: dict[str, Any] = {"started_at": started.isoformat()}
        try:
            runner = self._runner or _default_runner()
            host = self._host_factory() if self._host_factory else _local_host()
            try:
                outputs = runner(
                    spec.type,
                    spec.payload,
                    host,
                    log=log_line,
                    allow_commands=self.state.allow_commands(),
                )
            finally:
                with contextlib.suppress(Exception):
                    host.close()
            outputs = outputs if isinstance(outputs, dict) else {}
            if spec.type == "inspect" and "containers" in outputs:
                outputs |= self._signed_report(spec, outputs["containers"])
            outcome |= {"ok": True, "outputs": outputs}
        except StellaError as exc:
            outcome |= {
                "ok": False,
                "outputs": {},
                "error": exc.message,
                "error_type": getattr(exc, "error_type", None) or "failed",
                "retryable": bool(getattr(exc, "retryable", False)),
            }
        except Exception as exc:
            log.exception("task %s failed unexpectedly", task_id)
            outcome |= {
                "ok": False,
                "outputs": {},
                "error": f"the agent failed running the task: {type(exc).__name__}",
                "error_type": "internal",
            }
        outcome["finished_at"] = self.clock.now().isoformat()
        return outcome

    def _signed_report(self, spec: Any, containers: Any) -> dict[str, Any]:
        """What it saw, signed with its own key: the orchestrator keeps it as evidence."""
        from stella_core.agents.reports import sign_report

        return sign_report(
            self.state.key_pem(),
            self.state.cert_pem(),
            agent_id=self.state.agent_id,
            target=spec.target,
            task_id=str(spec.id),
            at=self.clock.now(),
            containers=containers,
        )


def _default_runner() -> Runner:
    from stella_core.deploy.runner import run_task

    return run_task


def _local_host() -> Any:
    from stella_core.deploy.hosts import LocalHost

    return LocalHost()


# --- command line ----------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stella-agent", description="Stella Release Desk agent")
    parser.add_argument("--verbose", "-v", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("enroll", help="enroll this machine with a one-time token")
    p.add_argument("--server", required=True, help="the orchestrator's agent port, HOST:PORT")
    p.add_argument("--token", required=True)
    p.add_argument("--ca-fingerprint", required=True, help="SHA-256 of the agent CA")
    p.add_argument("--state-dir", required=True, type=Path)
    p.add_argument("--output", "-o", choices=["text", "json"], default="text")
    p = sub.add_parser("run", help="keep the link to the orchestrator and run tasks")
    p.add_argument("--state-dir", required=True, type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose or args.command == "run" else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "enroll":
            state = enroll(args.server, args.token, args.ca_fingerprint, args.state_dir)
            doc = {
                "agent_id": str(state.agent_id),
                "name": state.name,
                "generation": state.generation,
            }
            if args.output == "json":
                print(json.dumps(doc, indent=2))
            else:
                print(f"enrolled as {state.name} ({state.agent_id})")
            return 0
        agent = Agent(args.state_dir)
        stop = threading.Event()
        import signal

        def stopping(*_: object) -> None:
            stop.set()
            agent.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, stopping)
        try:
            agent.run(stop)
        finally:
            agent.close()
        return 0
    except StellaError as exc:
        print(f"stella-agent: error: {exc.message}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
