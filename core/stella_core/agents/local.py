"""The embedded default's own agent: this machine, as a deploy target of its own orchestrator.

Enrolled once, without the network: the agent's key and CSR are made here, a one-time token is
created for it (admins only: the database says so) and handed straight to the orchestrator's
enrollment, and what the enrollment gave is kept in the same files `stella-agent enroll`
writes (`daemon.write_enrollment`), in STELLA_HOME/local-agent. After that it is an ordinary
agent: `LocalAgent` starts a gateway on loopback ports (new ones at each start) and the agent
daemon on a thread beside it, which dials that gateway over mutual TLS like any other.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import resource
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from stella_core.agents.daemon import (
    VERSION,
    Agent,
    AgentState,
    is_enrolled,
    write_enrollment,
)
from stella_core.deploy.hosts import LocalHost
from stella_core.errors import AuthorizationError, NotFoundError, StellaError

log = logging.getLogger(__name__)

LOCAL_AGENT = "local"
STATE_DIR = "local-agent"
# Where an enrollment made without the network says the gateway is: nowhere yet. The desk
# passes the gateway's port at each start (`Agent(server=...)`), which is what is dialled.
UNSET_SERVER = "127.0.0.1:0"
TOKEN_TTL = timedelta(minutes=5)
STOP_SECONDS = 2.0


def local_agent_dir(home: Path) -> Path:
    return home / STATE_DIR


def search_path() -> str:
    """Where this machine's agent looks for programs: PATH, then the directory of the Python
    running it (a virtual environment's `bin`, where podman-compose from PyPI is installed)."""
    here = str(Path(sys.executable).parent)
    parts = [p for p in os.environ.get("PATH", os.defpath).split(os.pathsep) if p]
    return os.pathsep.join(parts if here in parts else [*parts, here])


def local_runtime() -> str:
    """The runtime a local target uses: podman-compose where podman is, else docker compose
    where docker is, else podman-compose (its target then says it is missing)."""
    if shutil.which("podman", path=search_path()):
        return "podman-compose"
    if shutil.which("docker", path=search_path()):
        return "docker compose"
    return "podman-compose"


def local_runtime_ready() -> bool:
    """Whether `local_runtime()` can run here: its compose tool and its engine are both found
    (podman-compose with podman, or docker with its compose plugin)."""
    from stella_core.agents.daemon import local_runtimes

    found = set(local_runtimes(path=search_path()))
    if {"podman-compose", "podman"} <= found and _podman_works():
        return True
    return "docker compose" in found


def _podman_works() -> bool:
    """Whether podman runs here as this user: installed is not enough (rootless podman needs
    newuidmap and subordinate ids, which a machine may lack), and `podman info` says so."""
    podman = shutil.which("podman", path=search_path())
    if podman is None:
        return False
    try:
        answer = subprocess.run(
            [podman, "info", "--format", "{{.Host.OCIRuntime.Name}}"],
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return answer.returncode == 0


def _lacks_sys_resource() -> bool:
    """Whether this process may not raise its hard limits (no CAP_SYS_RESOURCE: a container or
    a microVM's root, reference/container-runtime.md §1)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return not (int(line.split()[1], 16) >> 24) & 1
    return False


def runtime_settings(state_dir: Path) -> dict[str, str]:
    """Environment the local agent's container commands get beyond this process's own.

    Rootful podman asks the kernel for nofile=1048576 for every container; root without
    CAP_SYS_RESOURCE may not raise its hard limits that far, so each container fails to start
    (`setrlimit RLIMIT_NOFILE: Operation not permitted`). There, and only where no
    CONTAINERS_CONF is set already, the agent's podman gets one of its own (in the agent's state
    directory) whose default ulimits are what this process may have."""
    if os.geteuid() != 0 or "CONTAINERS_CONF" in os.environ or not _lacks_sys_resource():
        return {}
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nofile = 1048576 if nofile == resource.RLIM_INFINITY else nofile
    nproc = 32768 if nproc == resource.RLIM_INFINITY else min(nproc, 32768)
    conf = state_dir / "containers.conf"
    text = (
        "# Written by stella's local agent: this machine's root cannot raise its hard limits.\n"
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
    )
    state_dir.mkdir(parents=True, exist_ok=True)
    if not conf.is_file() or conf.read_text() != text:
        tmp = conf.with_name(".containers.conf.tmp")
        tmp.write_text(text)
        os.replace(tmp, conf)
    return {"CONTAINERS_CONF": str(conf)}


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """One enrollment at a time on this machine (the desk and `stella demo seed` may race)."""
    state_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(state_dir.parent / f"{state_dir.name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _enrolled_here(state_dir: Path, enrollment: Any) -> bool:
    """The state directory holds an agent the database knows, enrolled and not revoked."""
    if not is_enrolled(state_dir):
        return False
    try:
        state = AgentState.load(state_dir)
    except StellaError as exc:
        log.warning("the local agent's state is unusable (%s): enrolling it again", exc.message)
        return False
    if state.tenant_id != enrollment.tenant_id:
        return False
    agent = enrollment.agent(state.agent_id)
    return agent is not None and agent.revoked_at is None


def local_agent_enrolled(stella: Any, state_dir: Path | None = None) -> bool:
    """Whether this machine's agent is enrolled (anyone may ask)."""
    from stella_core.agents.service import enrollment_for

    if stella.orchestrator is None:
        return False
    state_dir = state_dir or local_agent_dir(stella.home)
    return _enrolled_here(state_dir, enrollment_for(stella.orchestrator))


def enroll_local(stella: Any, state_dir: Path | None = None) -> bool:
    """Enroll this machine's agent with the orchestrator this machine runs, unless it is
    enrolled already (then nothing changes: False). `stella` is a person's session (bootstrap's
    Stella) holding the orchestrator; the person must be an admin, who alone may create the
    token (AuthorizationError otherwise). A local agent whose state here was lost is revoked
    and enrolled again."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from stella_core.agents._proto import agent_pb2 as pb
    from stella_core.agents.authority import make_csr, pem_chain, private_pem
    from stella_core.agents.gateway import orchestrator_public_keys
    from stella_core.agents.service import AgentService, enrollment_for

    orchestrator = stella.orchestrator
    if orchestrator is None:
        raise NotFoundError(
            "this machine does not run the orchestrator, so it has no local agent",
            remedy=("serve",),
        )
    state_dir = state_dir or local_agent_dir(stella.home)
    enrollment = enrollment_for(orchestrator)
    with _locked(state_dir):
        if _enrolled_here(state_dir, enrollment):
            return False
        agents = AgentService(stella.db, stella.tenancy, authority=enrollment.ca_fingerprint)
        try:
            stale = agents.id_of(LOCAL_AGENT)
        except NotFoundError:
            stale = None
        if stale is not None:
            # Its key lived only in this directory: without it the agent can never link again.
            agents.revoke(str(stale), "its state on this machine was lost; enrolled again")
        # Refused unless an admin (the database checks it too).
        token = agents.create_token(LOCAL_AGENT, {"machine": "local"}, TOKEN_TTL)
        key = ec.generate_private_key(ec.SECP256R1())
        issued = enrollment.enroll(token.token, make_csr(key), socket.gethostname(), VERSION)
        keys = orchestrator_public_keys(orchestrator.db, orchestrator.evidence)()
        for stale_file in ("journal.sqlite3", "journal.sqlite3-wal", "journal.sqlite3-shm"):
            (state_dir / stale_file).unlink(missing_ok=True)
        write_enrollment(
            state_dir,
            private_pem(key),
            certificate_pem=pem_chain(issued.certificate),
            ca_pem=enrollment.authority().cert_pem,
            agent_id=issued.agent.id,
            tenant_id=enrollment.tenant_id,
            name=issued.agent.name,
            server=UNSET_SERVER,
            generation=issued.generation,
            orchestrator_keys=[pb.PublicKey(key_id=k.key_id, pem=k.pem()) for k in keys],
        )
    log.info("enrolled this machine's agent %s (%s)", issued.agent.name, issued.agent.id)
    return True


def ensure_local_agent(stella: Any, state_dir: Path | None = None) -> bool:
    """Enrolled now or before (True), or not, and this person may not enroll it (False)."""
    try:
        enroll_local(stella, state_dir)
    except AuthorizationError:
        return local_agent_enrolled(stella, state_dir)
    return True


class LocalAgent:
    """A gateway on loopback ephemeral ports and this machine's enrolled agent on a thread,
    dialling it. `start()` blocks until the gateway listens (call it off the UI thread);
    `stop()` ends both within about `STOP_SECONDS`."""

    def __init__(
        self,
        orchestrator: Any,
        state_dir: Path,
        *,
        pool_size: int = 4,
        home: Path | None = None,
    ) -> None:
        self.orchestrator = orchestrator
        self.state_dir = state_dir
        self.pool_size = pool_size
        # STELLA_HOME: where a served OCI layout (the demo's registry) is recorded.
        self.home = home if home is not None else state_dir.parent
        self.gateway: Any = None
        self.layout_server: Any = None
        self.agent: Agent | None = None
        self._db: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        # (enrollment port, link port) of the last start: new ones each time.
        self.ports: tuple[int, int] | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        from stella_core.agents.gateway import open_gateway

        self._stop.clear()
        self._db = self.orchestrator.database(pool_size=self.pool_size)
        try:
            self.gateway = open_gateway(
                self.orchestrator,
                listen="127.0.0.1:0",
                link_listen="127.0.0.1:0",
                db=self._db,
            ).start()
            self.ports = (self.gateway.enroll_port, self.gateway.link_port)
            path = search_path()
            env = {**os.environ, "PATH": path, **runtime_settings(self.state_dir)}
            self.agent = Agent(
                self.state_dir,
                server=f"127.0.0.1:{self.gateway.enroll_port}",
                host_factory=lambda: LocalHost(env),
                runtime_path=path,
            )
            self._serve_layout()
        except BaseException:
            self.stop()
            raise
        self._thread = threading.Thread(
            target=self._run, args=(self.agent,), name="stella-local-agent", daemon=True
        )
        self._thread.start()
        log.info(
            "local agent started (gateway: enrollment on port %d, links on %d)",
            self.gateway.enroll_port,
            self.gateway.link_port,
        )

    def _serve_layout(self) -> None:
        """Serve the OCI layout recorded in STELLA_HOME (the demo's registry) on its loopback
        port, for this machine's podman or docker to pull from, as long as the agent runs. A
        taken port is said once and the agent runs on: deploys of those images then fail."""
        from stella_core.releases.layout_server import (
            LayoutServer,
            LayoutServerError,
            served_layout,
        )

        recorded = served_layout(self.home)
        if recorded is None:
            return
        try:
            self.layout_server = LayoutServer(*recorded).start()
        except LayoutServerError as exc:
            log.warning("%s; the demo's images cannot be pulled from there", exc.message)

    def _run(self, agent: Agent) -> None:
        try:
            agent.run(self._stop)
        except Exception:
            log.exception("the local agent stopped")

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        self._stop.set()
        agent, thread = self.agent, self._thread
        if agent is not None:
            agent.stop()
            if thread is not None:
                thread.join(timeout)
            agent.close(timeout=max(0.1, timeout / 2))
        if self.gateway is not None:
            self.gateway.stop(grace=0.5)
        if self.layout_server is not None:
            self.layout_server.stop()
        self.layout_server = None
        if self._db is not None:
            self._db.dispose()
        self.agent, self._thread, self.gateway, self._db = None, None, None, None


@contextlib.contextmanager
def local_agent_beside(stella: Any, *, wanted: bool = True) -> Iterator[LocalAgent | None]:
    """On the embedded default, this machine's agent run here for the length of a command
    that needs it (a run it drives that deploys to it, a sticker read from it) when nothing
    else runs it: no desk and no stella serve has a live worker. Not wanted, not enrolled, or
    a failure to start: the command goes on without it (the agent is then said not to answer)."""
    from stella_core.profiles import EMBEDDED

    local = None
    if wanted and stella.backend.target == EMBEDDED and stella.orchestrator is not None:
        state = local_agent_dir(stella.home)
        try:
            if stella.workflows.live_workers() == 0 and local_agent_enrolled(stella, state):
                local = LocalAgent(stella.orchestrator, state, home=stella.home)
                local.start()
        except (StellaError, OSError) as exc:
            log.warning("this machine's agent did not start: %s", getattr(exc, "message", exc))
            local = None
    try:
        yield local
    finally:
        if local is not None:
            local.stop()
