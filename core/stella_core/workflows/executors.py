"""Where commands run: a pluggable executor interface, and the local executor.

A command is always an argument list, never passed through a shell. The local executor runs it
on the orchestrator's own host, which is why a tenant setting (off unless an admin turns it on;
on in the embedded default) decides whether steps may use it. Targets (agents) come later and
implement the same interface.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Protocol

from stella_core.errors import ConnectorError, DefinitionError

OUTPUT_LIMIT = 64 * 1024
MINIMAL_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
}
_POLL_S = 0.05
_KILL_GRACE_S = 2.0


@dataclass(frozen=True)
class CommandRequest:
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    # The same for every attempt of one step: lets a retried call be recognised.
    idempotency_key: str | None = None
    timeout: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    output_limit: int = OUTPUT_LIMIT


@dataclass(frozen=True)
class CommandResult:
    exit_code: int | None  # None when the process was killed (timeout or cancel)
    stdout: str
    stderr: str
    timed_out: bool = False
    cancelled: bool = False
    duration_s: float = 0.0


class Executor(Protocol):
    name: str

    def run(self, request: CommandRequest) -> CommandResult: ...


class ExecutorUnavailableError(ConnectorError):
    """No executor by that name, or it is turned off for this tenant."""


class _Capped:
    """Drains a pipe to the end (so the child never blocks) but keeps only the first bytes."""

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        self.limit = limit
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
            out += f"\n[... {self.dropped} more bytes not kept]"
        return out


class LocalExecutor:
    """Runs commands as child processes of the worker, each in its own process group."""

    name = "local"

    def run(self, request: CommandRequest) -> CommandResult:
        if not request.argv:
            raise DefinitionError("the command is empty")
        env = dict(MINIMAL_ENV)
        env.update(request.env)
        if request.idempotency_key:
            env["STELLA_IDEMPOTENCY_KEY"] = request.idempotency_key
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="stella-step-") as workdir:
            env.setdefault("HOME", workdir)
            try:
                proc = subprocess.Popen(
                    list(request.argv),
                    env=env,
                    cwd=workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,  # a process group we can kill as a whole
                    close_fds=True,
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
            out = _Capped(proc.stdout, request.output_limit)
            err = _Capped(proc.stderr, request.output_limit)
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
                    _kill_group(proc)
                    break
            stdout, stderr = out.text(), err.text()
        return CommandResult(
            exit_code=None if (timed_out or cancelled) else proc.returncode,
            stdout=stdout,
            stderr=stderr,
            timed_out=timed_out,
            cancelled=cancelled,
            duration_s=time.monotonic() - started,
        )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the whole group, then SIGKILL what is left after a short grace."""
    for sig, wait in ((signal.SIGTERM, _KILL_GRACE_S), (signal.SIGKILL, 5.0)):
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


class Executors:
    """Executors by name; the composition root registers them (targets come later)."""

    def __init__(self, executors: Mapping[str, Executor] | None = None) -> None:
        self._by_name: dict[str, Executor] = dict(executors or {})

    @classmethod
    def default(cls) -> Executors:
        return cls({"local": LocalExecutor()})

    def register(self, executor: Executor) -> None:
        self._by_name[executor.name] = executor

    def get(self, name: str) -> Executor:
        executor = self._by_name.get(name)
        if executor is None:
            known = ", ".join(sorted(self._by_name)) or "none"
            raise ExecutorUnavailableError(f"no executor named {name!r} (known: {known})")
        return executor
