"""Where commands run: a pluggable executor interface, and the local executor.

A command is always an argument list, never passed through a shell. The local executor runs it
on the orchestrator's own host, which is why a tenant setting (off unless an admin turns it on;
on in the embedded default) decides whether steps may use it, and why it runs every command in a
sandbox (`sandbox.py`: bubblewrap) that cannot see STELLA_HOME, keys, profiles or the
database's credentials. Where no sandbox is usable it refuses, unless the tenant's admin allowed
unsandboxed scripts. Either way the command gets a cleared environment (a short allow-list, the
step's own variables, nothing named STELLA_*), a scratch directory of its own that is removed
afterwards, and capped output. Targets (agents) come later and implement the same interface.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from stella_core.errors import ConnectorError, DefinitionError
from stella_core.workflows.fencing import ATTEMPT_ENV, die_with_parent, scratch_prefix_of
from stella_core.workflows.sandbox import (
    INSTALL_HINT,
    READ_PATHS_ENV,
    WRITE_PATHS_ENV,
    Bubblewrap,
    listed_paths,
    protected_paths,
)

# stdout and stderr together keep at most this much, half each: a step's stdout still fits an
# expression (`${{ steps.x.outputs.stdout }}` interpolates at most 64 KiB), and a flood on one
# stream cannot push out the other's error message.
OUTPUT_LIMIT = 128 * 1024
MINIMAL_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
}
RESERVED_ENV_PREFIX = "STELLA_"
UNSANDBOXED_ON = "the tenant's workflow setting 'unsandboxed'"
_POLL_S = 0.05
_KILL_GRACE_S = 2.0


def _never() -> bool:
    return False


@dataclass(frozen=True)
class CommandRequest:
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    # The same for every attempt of one step: lets a retried call be recognised.
    idempotency_key: str | None = None
    timeout: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    output_limit: int = OUTPUT_LIMIT
    # Asked only where no sandbox is usable: may this command run without one?
    unsandboxed_allowed: Callable[[], bool] = _never
    # Which attempt this is (fencing.attempt_token): in the command's environment and its
    # scratch directory's name, so a worker taking the step over can find what is left of it.
    attempt_token: str | None = None


@dataclass(frozen=True)
class CommandResult:
    exit_code: int | None  # None when the process was killed (timeout or cancel)
    stdout: str
    stderr: str
    timed_out: bool = False
    cancelled: bool = False
    duration_s: float = 0.0
    sandbox: str | None = None  # what it ran in ("bubblewrap"); None: unsandboxed


class Executor(Protocol):
    name: str

    def run(self, request: CommandRequest) -> CommandResult: ...

    def sandbox(self) -> str | None:
        """The sandbox commands run in on this machine (None: none is usable)."""
        ...


class ExecutorUnavailableError(ConnectorError):
    """No executor by that name, or it is turned off for this tenant."""


class SandboxUnavailableError(ExecutorUnavailableError):
    """No usable sandbox on this machine, and the tenant does not allow running without one."""


class _Capped:
    """Drains a pipe to the end (so the child never blocks) but keeps only the first bytes."""

    def __init__(self, stream: IO[bytes], limit: int, name: str) -> None:
        self.limit = limit
        self.name = name
        self.data = bytearray()
        self.dropped = 0
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.thread.start()

    def _pump(self, stream: IO[bytes]) -> None:
        with contextlib.suppress(OSError, ValueError):
            while chunk := stream.read(8192):
                room = self.limit - len(self.data)
                if room > 0:
                    self.data += chunk[:room]
                self.dropped += max(0, len(chunk) - max(room, 0))
        with contextlib.suppress(OSError):
            stream.close()

    def text(self) -> str:
        self.thread.join(timeout=5)
        # JSONB refuses NUL characters; replace rather than lose the rest of the output.
        out = self.data.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
        if self.dropped:
            out += "" if out.endswith("\n") else "\n"
            out += (
                f"[output truncated: {self.dropped} more bytes not kept; a step keeps the "
                f"first {self.limit} bytes of its {self.name}]"
            )
        return out


class LocalExecutor:
    """Runs commands as child processes of the worker, in a bubblewrap sandbox (see the module
    docstring), each in its own process group."""

    name = "local"

    def __init__(self, bubblewrap: Bubblewrap | None = None) -> None:
        self.bubblewrap = bubblewrap or Bubblewrap()

    def sandbox(self) -> str | None:
        return self.bubblewrap.status().name

    def run(self, request: CommandRequest) -> CommandResult:
        if not request.argv:
            raise DefinitionError("the command is empty")
        reserved = sorted(k for k in request.env if k.startswith(RESERVED_ENV_PREFIX))
        if reserved:
            raise DefinitionError(
                f"environment names starting with {RESERVED_ENV_PREFIX} are reserved: "
                + ", ".join(reserved)
            )
        status = self.bubblewrap.status()
        if status.name is None and not request.unsandboxed_allowed():
            raise SandboxUnavailableError(
                "script steps run in a bubblewrap sandbox on the orchestrator's host, and "
                f"this host has none ({status.problem}): {INSTALL_HINT}, or an admin may "
                f"allow unsandboxed scripts with {UNSANDBOXED_ON}",
                retryable=False,
            )
        env = dict(MINIMAL_ENV)
        env.update(request.env)
        if request.idempotency_key:
            env["WORKFLOW_IDEMPOTENCY_KEY"] = request.idempotency_key
        if request.attempt_token:
            env[ATTEMPT_ENV] = request.attempt_token
        started = time.monotonic()
        # A scratch directory per attempt: the working directory and HOME, removed afterwards
        # (or, if the worker dies, by the worker that takes the step over).
        workdir = Path(tempfile.mkdtemp(prefix=scratch_prefix_of(request.attempt_token)))
        try:
            env.setdefault("HOME", str(workdir))
            argv = list(request.argv)
            if status.name is not None:
                assert status.binary is not None
                argv = self.bubblewrap.command(
                    status.binary,
                    argv,
                    workdir,
                    read=listed_paths(READ_PATHS_ENV),
                    write=listed_paths(WRITE_PATHS_ENV),
                    protected=protected_paths(),
                )
            result = self._spawn(request, argv, env, workdir, started, status.name)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        # bwrap's own words when the command is not there (inside the sandbox).
        not_found = f"bwrap: execvp {request.argv[0]}:"
        if result.sandbox and result.exit_code == 1 and result.stderr.startswith(not_found):
            raise ExecutorUnavailableError(
                f"command not found in the sandbox: {request.argv[0]!r} (a script step sees "
                f"/usr, /etc and the paths listed in {READ_PATHS_ENV} and {WRITE_PATHS_ENV})",
                retryable=False,
            )
        return result

    def _spawn(
        self,
        request: CommandRequest,
        argv: list[str],
        env: dict[str, str],
        workdir: Path,
        started: float,
        sandbox: str | None,
    ) -> CommandResult:
        try:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # a process group we can kill as a whole
                close_fds=True,
                # Killed with its worker, even by SIGKILL (bwrap also has --die-with-parent).
                preexec_fn=die_with_parent(),  # noqa: PLW1509 (only a system call runs there)
            )
        except FileNotFoundError as exc:
            raise ExecutorUnavailableError(
                f"command not found: {request.argv[0]!r}", retryable=False
            ) from exc
        except PermissionError as exc:
            raise ExecutorUnavailableError(
                f"command not executable: {request.argv[0]!r}", retryable=False
            ) from exc
        except OSError as exc:
            raise ExecutorUnavailableError(
                f"cannot start {request.argv[0]!r}: {exc}", retryable=True
            ) from exc
        assert proc.stdout is not None
        assert proc.stderr is not None
        half = max(1, request.output_limit // 2)
        out = _Capped(proc.stdout, half, "stdout")
        err = _Capped(proc.stderr, half, "stderr")
        deadline = None if request.timeout is None else started + request.timeout
        timed_out = cancelled = False
        while True:
            try:
                proc.wait(timeout=_POLL_S)
                break
            except subprocess.TimeoutExpired:
                pass
            if request.cancel.is_set():
                cancelled = True
            elif deadline is not None and time.monotonic() >= deadline:
                timed_out = True
            if timed_out or cancelled:
                _kill(proc, sandboxed=sandbox is not None)
                break
        stdout, stderr = out.text(), err.text()
        return CommandResult(
            exit_code=None if (timed_out or cancelled) else proc.returncode,
            stdout=stdout,
            stderr=stderr,
            timed_out=timed_out,
            cancelled=cancelled,
            duration_s=time.monotonic() - started,
            sandbox=sandbox,
        )


def _kill(proc: subprocess.Popen[bytes], *, sandboxed: bool) -> None:
    """SIGTERM what runs, then SIGKILL what is left after a short grace.

    Unsandboxed, that is the command's process group. Sandboxed, the command is in a session of
    its own inside bwrap's PID namespace: SIGTERM goes to every process in the sandbox but its
    init, then SIGKILL to bwrap, whose death takes the whole namespace with it (--die-with-parent).
    """
    for sig, wait in ((signal.SIGTERM, _KILL_GRACE_S), (signal.SIGKILL, 5.0)):
        targets = _sandboxed(proc.pid) if sandboxed and sig == signal.SIGTERM else []
        for pid in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        if not targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            # Children that ignored the signal still hold the pipes: finish them too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            return
        except subprocess.TimeoutExpired:
            continue


def _sandboxed(bwrap_pid: int) -> list[int]:
    """Host PIDs of the processes in bwrap's sandbox except its init (PID 1 inside)."""
    found: list[int] = []
    pending = [bwrap_pid]
    while pending:
        pid = pending.pop()
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as fh:
                    pending += [int(child) for child in fh.read().split()]
        if pid != bwrap_pid and _pid_inside(pid) not in (None, 1):
            found.append(pid)
    return found


def _pid_inside(pid: int) -> int | None:
    """A process's PID in its innermost namespace (None: gone, or not in a nested one)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("NSpid:"):
                pids = line.split()[1:]
                return int(pids[-1]) if len(pids) > 1 else None
    return None


class Executors:
    """Executors by name; the composition root registers them (targets come later)."""

    def __init__(self, executors: Mapping[str, Executor] | None = None) -> None:
        self._by_name: dict[str, Executor] = dict(executors or {})

    @classmethod
    def default(cls) -> Executors:
        return cls({"local": LocalExecutor()})

    def register(self, executor: Executor) -> None:
        self._by_name[executor.name] = executor

    def sandbox(self, name: str) -> str | None:
        """The sandbox the named executor has on this machine (None: none, or no executor)."""
        executor = self._by_name.get(name)
        return executor.sandbox() if executor is not None else None

    def get(self, name: str) -> Executor:
        executor = self._by_name.get(name)
        if executor is None:
            known = ", ".join(sorted(self._by_name)) or "none"
            raise ExecutorUnavailableError(f"no executor named {name!r} (known: {known})")
        return executor
