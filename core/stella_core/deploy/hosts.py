"""Where a task's commands run and its files land: a `Host`. The agent uses `LocalHost` (its own
machine, as its own user); the orchestrator reaches SSH and WinRM targets through `SshHost`
(`ssh.py`) and `WinrmHost` (`winrm.py`). The task runner (`runner.py`) sees only this interface,
so a deployment is the same procedure over each transport.

Commands are argument lists, never a shell line built from strings.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from stella_core.errors import ConnectorError

# A command's output is kept up to this much per stream (the tail is what explains a failure).
OUTPUT_LIMIT = 256 * 1024


@dataclass(frozen=True)
class HostResult:
    exit_code: int
    stdout: str
    stderr: str


class HostError(ConnectorError):
    """The host could not be reached or could not do what was asked (not a command's own
    non-zero exit, which is a `HostResult`)."""


class CommandTimeoutError(HostError):
    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class Host(Protocol):
    # Says where, for messages: "this machine", "ssh deploy@10.0.0.5:22", "winrm https://…".
    description: str

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> HostResult:
        """Run a command to its end; a non-zero exit is a result, not an error."""
        ...

    def write_file(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        """Write atomically: a temporary file beside `path`, then a rename over it. Parent
        directories are made as needed."""
        ...

    def read_file(self, path: str, *, limit: int = 4 * 1024 * 1024) -> bytes | None:
        """The file's bytes, or None when there is no such file; more than `limit` bytes is an
        error (a sticker or lockfile is small)."""
        ...

    def close(self) -> None: ...


def _tail(data: bytes) -> str:
    return data[-OUTPUT_LIMIT:].decode("utf-8", "replace")


class LocalHost:
    """This machine, as the user this process runs as (the agent's host)."""

    description = "this machine"

    def __init__(self, base_env: Mapping[str, str] | None = None) -> None:
        # The environment commands start from (the agent's own, by default).
        self.base_env = dict(os.environ if base_env is None else base_env)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> HostResult:
        if not argv:
            raise HostError("no command given")
        try:
            done = subprocess.run(
                list(argv),
                capture_output=True,
                timeout=timeout,
                env={**self.base_env, **(env or {})},
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except FileNotFoundError as exc:
            raise HostError(f"{argv[0]} is not installed on {self.description}") from exc
        except subprocess.TimeoutExpired as exc:
            raise CommandTimeoutError(f"{argv[0]} did not finish within {timeout:.0f} s") from exc
        except OSError as exc:
            raise HostError(f"could not run {argv[0]}: {exc.strerror}") from exc
        return HostResult(done.returncode, _tail(done.stdout), _tail(done.stderr))

    def write_file(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        final = Path(path).expanduser()
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temp, mode)
            os.replace(temp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    def read_file(self, path: str, *, limit: int = 4 * 1024 * 1024) -> bytes | None:
        try:
            with open(Path(path).expanduser(), "rb") as f:
                data = f.read(limit + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise HostError(f"could not read {path}: {exc.strerror}") from exc
        if len(data) > limit:
            raise HostError(f"{path} is larger than {limit} bytes")
        return data

    def close(self) -> None:
        pass
