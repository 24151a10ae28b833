"""Fencing a step's earlier attempt before another one starts.

A step attempt is the worker's lease (owner, generation) plus, for script steps, a process tree
and a scratch directory on the worker's host. The lease generation is the fencing token: it
grows with every claim, and every write of the attempt's outcome or heartbeat names it, so an
attempt whose lease was taken over can no longer change the step. Its processes are fenced too:

- They die with their worker: the command's first process gets PR_SET_PDEATHSIG (bubblewrap's
  `--die-with-parent` does the same and takes its PID namespace with it), and it runs in a
  process group of its own.
- A worker that cannot renew its lease stops its step before the lease runs out (`_watch` in the
  engine), so once a lease has expired plus `FENCE_GRACE_S`, its attempt has ended anywhere.
- A worker that takes over an expired lease on the same host (same boot, PID namespace and user)
  does not wait for that: it finds the earlier attempt's processes by the token in their
  environment, kills them, waits until they are gone and removes their scratch directories.
  On another host it may only take the step once the grace has passed too.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from uuid import UUID

# In the command's environment: which attempt it belongs to ("<run>:<node>:<generation>").
ATTEMPT_ENV = "WORKFLOW_ATTEMPT_TOKEN"
SCRATCH_PREFIX = "stella-step-"
# After a lease expired, how long a worker on another host waits before taking the step: the
# earlier worker stopped its command when the lease ran out, and killing takes a few seconds.
FENCE_GRACE_S = 10.0
_FENCE_WAIT_S = 5.0
_PR_SET_PDEATHSIG = 1


class AttemptStillRunningError(RuntimeError):
    """An earlier attempt's processes outlived SIGKILL (uninterruptible): try again later."""


@functools.cache
def host_identity() -> str:
    """Who can see and signal this worker's commands: the host and its boot, the PID namespace
    and the user. Two workers with the same identity can fence each other's attempts."""
    boot = ""
    with contextlib.suppress(OSError):
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    pidns = ""
    with contextlib.suppress(OSError):
        pidns = str(os.stat("/proc/self/ns/pid").st_ino)
    return f"{socket.gethostname()}/{boot}/{pidns}/{os.getuid()}"


def attempt_token(run_id: UUID, node_id: str, generation: int) -> str:
    return f"{run_id}:{node_id}:{generation}"


def _step_part(token: str) -> str:
    """The token without its generation: what every attempt of one step shares."""
    return token.rsplit(":", 1)[0]


def scratch_prefix(run_id: UUID | str, node_id: str) -> str:
    """Scratch directories of one step's attempts start with this (in the temp directory)."""
    digest = hashlib.sha256(f"{run_id}:{node_id}".encode()).hexdigest()[:16]
    return f"{SCRATCH_PREFIX}{digest}-"


def scratch_prefix_of(token: str | None) -> str:
    if token is None:
        return SCRATCH_PREFIX
    run_id, node_id = _step_part(token).split(":", 1)
    return scratch_prefix(run_id, node_id)


def die_with_parent() -> Callable[[], None]:
    """A `preexec_fn` that makes the command die with the thread that started it.

    Everything is looked up before the fork; in the child only the system call runs. A parent
    that died between fork and prctl is noticed by its changed PID."""
    parent = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    kill = int(signal.SIGKILL)

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(137)

    return preexec


def attempt_processes(run_id: UUID, node_id: str, before_generation: int) -> list[int]:
    """PIDs of live processes that belong to an attempt of this step older than
    `before_generation` (read from their environment; processes we may not read are not ours)."""
    prefix = f"{ATTEMPT_ENV}={run_id}:{node_id}:".encode()
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            environ = Path("/proc", entry, "environ").read_bytes()
        except OSError:
            continue
        for item in environ.split(b"\0"):
            if item.startswith(prefix):
                generation = item[len(prefix) :]
                if generation.isdigit() and int(generation) < before_generation:
                    found.append(int(entry))
                break
    return found


def _zombie(pid: int) -> bool:
    try:
        stat = Path("/proc", str(pid), "stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def fence(run_id: UUID, node_id: str, generation: int) -> list[int]:
    """Kill what is left of this step's earlier attempts on this host and wait until it is gone;
    then remove their scratch directories. Returns the PIDs that were killed."""
    killed: list[int] = []
    deadline = time.monotonic() + _FENCE_WAIT_S
    while True:
        alive = [p for p in attempt_processes(run_id, node_id, generation) if not _zombie(p)]
        if not alive:
            break
        if time.monotonic() >= deadline:
            raise AttemptStillRunningError(
                f"an earlier attempt of step {node_id} still runs (PIDs {alive}) after SIGKILL"
            )
        for pid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            if pid not in killed:
                killed.append(pid)
        time.sleep(0.05)
    remove_scratch(run_id, node_id)
    return killed


def remove_scratch(run_id: UUID, node_id: str) -> int:
    """Remove this step's scratch directories left in this host's temp directory."""
    prefix = scratch_prefix(run_id, node_id)
    removed = 0
    top = Path(tempfile.gettempdir())
    with contextlib.suppress(OSError):
        for path in top.iterdir():
            if path.name.startswith(prefix) and path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
    return removed
