"""Real rootful podman (with runc) for tests, every bit of its state in a scratch directory.

reference/container-runtime.md §3: this machine has no CAP_SYS_RESOURCE and hybrid cgroups, so
podman needs `default_ulimits` no higher than the hard limits and runc instead of crun. Three
environment variables point podman (and podman-compose, which runs podman) at our own files, so
no flag is needed and nothing under /var/lib/containers is touched:

    CONTAINERS_CONF, CONTAINERS_STORAGE_CONF, CONTAINERS_REGISTRIES_CONF

`podman_env(tmp, "127.0.0.1:PORT")` writes the three files and returns those variables. An
agent or an sshd session that must see the same podman gets the same three variables (an sshd
`SetEnv` line each). The `podman` fixture (import `podman_fixture` into a test module) gives
them to a whole session and cleans up after it.

Tests use `network_mode: host` (on free loopback ports) or `none` only: bridge networking sends
traffic to private ranges and leaves CNI state behind.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.registry import RunningRegistry

# dev.sh exports this so it can clean up after a run even if a test process was killed.
SCRATCH_ROOT_ENV = "STELLA_TEST_PODMAN_ROOT"
INSTALL_HINT = (
    "apt-get install --no-install-recommends podman runc busybox-static "
    "(and podman-compose from the dev extra)"
)
PODMAN_TIMEOUT = 120.0


def _nproc_limit() -> int:
    # nproc must not exceed the hard limit either (the reference's second rlimit failure).
    hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    return 32768 if hard == resource.RLIM_INFINITY else min(32768, hard)


def _nofile_limit() -> int:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 1048576 if hard == resource.RLIM_INFINITY else int(hard)


def podman_env(tmp: Path, registry_host_port: str, *more_insecure: str) -> dict[str, str]:
    """Write containers.conf, storage.conf and registries.conf under `tmp` and return the three
    variables that make podman use them. `registry_host_port` (and `more_insecure`) are plain
    HTTP registries podman may pull from."""
    tmp = tmp.resolve()
    tmp.mkdir(parents=True, exist_ok=True)
    for sub in ("libpod-tmp", "storage", "run", "cni", "volumes"):
        (tmp / sub).mkdir(exist_ok=True)
    nofile = _nofile_limit()
    nproc = _nproc_limit()
    (tmp / "containers.conf").write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "[engine]\n"
        # crun fails on hybrid cgroups here; runc is what works (and is explicit on purpose).
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        f'events_logfile_path = "{tmp}/events.log"\n'
        f'tmp_dir = "{tmp}/libpod-tmp"\n'
        f'volume_path = "{tmp}/volumes"\n'
        "[network]\n"
        f'network_config_dir = "{tmp}/cni"\n'
    )
    (tmp / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{tmp}/storage"\nrunroot = "{tmp}/run"\n'
    )
    (tmp / "registries.conf").write_text("")
    env = {
        "CONTAINERS_CONF": str(tmp / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(tmp / "storage.conf"),
        "CONTAINERS_REGISTRIES_CONF": str(tmp / "registries.conf"),
    }
    for host_port in (registry_host_port, *more_insecure):
        allow_insecure_registry(env, host_port)
    return env


def allow_insecure_registry(env: Mapping[str, str], host_port: str) -> None:
    """Let podman pull over plain HTTP from `host_port` (e.g. a RewritingProxy in front of the
    registry); podman reads registries.conf afresh on each command."""
    with open(env["CONTAINERS_REGISTRIES_CONF"], "a", encoding="utf-8") as out:
        out.write(f'[[registry]]\nlocation = "{host_port}"\ninsecure = true\n')


def host_port(url: str) -> str:
    """`http://127.0.0.1:5000` -> `127.0.0.1:5000` (how image references name a registry)."""
    return url.split("://", 1)[-1].rstrip("/")


def podman_compose_binary() -> str | None:
    """podman-compose from the dev extra: beside this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "podman-compose"
    if beside.exists():
        return str(beside)
    return shutil.which("podman-compose")


def podman_problem() -> str | None:
    """Why podman cannot run here, or None."""
    for program in ("podman", "runc"):
        if shutil.which(program) is None:
            return f"{program} is not installed"
    if podman_compose_binary() is None:
        return "podman-compose is not installed"
    if os.geteuid() != 0:
        # Rootful is what was checked on these machines; rootless is untested (reference §3).
        return "the container tests run rootful podman and need root"
    return None


def require_podman() -> None:
    """Fail in CI (STELLA_REQUIRE_SERVICES=1) when podman cannot run; skip elsewhere."""
    problem = podman_problem()
    if problem is None:
        return
    message = f"{problem}: {INSTALL_HINT}"
    if os.environ.get("STELLA_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


def run_podman(
    env: Mapping[str, str], *args: str, timeout: float = PODMAN_TIMEOUT, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["podman", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done


def _processes_mentioning(root: Path) -> list[int]:
    """PIDs (not ours) whose command line names the scratch root: conmon, a podman service."""
    needle = str(root).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            found.append(int(entry.name))
    return found


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    mounts = []
    with contextlib.suppress(OSError), open("/proc/self/mounts", encoding="utf-8") as f:
        for line in f:
            point = line.split()[1].replace("\\040", " ")
            if point.startswith(prefix):
                mounts.append(point)
    return sorted(mounts, key=len, reverse=True)  # deepest first


def cleanup_podman(env: Mapping[str, str]) -> None:
    """Remove every container, pod and image of this scratch store, then anything that outlived
    that: processes naming the scratch directory (by PID) and mounts under it."""
    root = Path(env["CONTAINERS_CONF"]).parent
    for args in (("rm", "-af", "-t", "2"), ("pod", "rm", "-af"), ("system", "reset", "-f")):
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            run_podman(env, *args, check=False)
    pids = _processes_mentioning(root)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if Path(f"/proc/{p}").exists()]
        if pids:
            time.sleep(0.05)  # waiting for processes we signalled to exit
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    for point in _mounts_under(root):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


@dataclass(frozen=True)
class Podman:
    """A session's podman: `env` holds the three variables; `host_env` is this process's
    environment plus them, with podman-compose on PATH (what a LocalHost should start from)."""

    env: dict[str, str]
    root: Path
    registry: str  # host:port of the test registry
    compose: str  # podman-compose's path

    @property
    def host_env(self) -> dict[str, str]:
        path = os.pathsep.join([str(Path(self.compose).parent), os.environ.get("PATH", "")])
        return {**os.environ, **self.env, "PATH": path}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_podman(self.env, *args, check=check)

    def allow_insecure(self, host_port: str) -> None:
        allow_insecure_registry(self.env, host_port)


def scratch_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Under $STELLA_TEST_PODMAN_ROOT when dev.sh set it (so it can clean up after a killed
    run), else a pytest temporary directory."""
    base = os.environ.get(SCRATCH_ROOT_ENV)
    if base:
        path = Path(base) / f"session-{os.getpid()}"
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("podman")


@pytest.fixture(scope="session", name="podman")
def podman_fixture(
    tmp_path_factory: pytest.TempPathFactory, registry: RunningRegistry
) -> Iterator[Podman]:
    """Rootful podman with scratch config pointing at the session's test registry."""
    require_podman()
    root = scratch_dir(tmp_path_factory)
    registry_host = host_port(registry.url)
    env = podman_env(root, registry_host)
    compose = podman_compose_binary()
    assert compose is not None
    try:
        yield Podman(env=env, root=root, registry=registry_host, compose=compose)
    finally:
        cleanup_podman(env)
