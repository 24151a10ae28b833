"""Bounding an expression's memory while it evaluates.

cel-cpp's iteration budget bounds CPU, not memory: `[100 ints].map(a, [98 ints].map(b, s + s))`
with a 50 KB string allocates 1 GB in under a second (expressions.md section 3), and a worker went
to 8 GB that way. Checking sizes afterwards is too late, and cel-cpp cannot be instrumented from
Python. So an expression that might grow (a comprehension, or many references to a big context;
see `runtime._bounded_here`) is evaluated in a helper process whose address space the kernel
limits (RLIMIT_AS): past the limit an allocation fails, cel-cpp raises `MemoryError`, and the
caller gets an `ExpressionLimitError` at once while its own memory never grew. The helper is
started once per process (on first need), serves one expression at a time, dies with its parent
and is started again if it dies or is killed for running too long.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import struct
import subprocess
import sys
import threading
import time
from typing import IO, Any

from stella_core.workflows.expressions.errors import (
    ExpressionCompileError,
    ExpressionError,
    ExpressionEvalError,
    ExpressionLimitError,
)

# What one evaluation may add to the helper's address space.
MEMORY_LIMIT_BYTES = 512 * 1024 * 1024
# A wall-clock bound on top of the iteration budget (which already bounds CPU).
TIMEOUT_S = 30.0
_START_TIMEOUT_S = 60.0
_HEADER = struct.Struct(">I")
_ERRORS: dict[str, type[ExpressionError]] = {
    cls.__name__: cls
    for cls in (ExpressionError, ExpressionCompileError, ExpressionEvalError, ExpressionLimitError)
}


class _Helper:
    def __init__(self) -> None:
        from stella_core.workflows.fencing import die_with_parent

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stella_core.workflows.expressions.guard"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
            preexec_fn=die_with_parent(),  # noqa: PLW1509 (only a system call runs there)
        )
        ready = self._read(_START_TIMEOUT_S)
        if ready != {"ready": True}:
            self.close()
            raise ExpressionLimitError("the expression evaluator could not start")

    def ask(self, src: str, data: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        body = json.dumps({"src": src, "data": data}, separators=(",", ":")).encode()
        self.proc.stdin.write(_HEADER.pack(len(body)) + body)
        self.proc.stdin.flush()
        return self._read(TIMEOUT_S)

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        header = _read_exactly(self.proc.stdout, _HEADER.size, deadline)
        (size,) = _HEADER.unpack(header)
        reply: dict[str, Any] = json.loads(_read_exactly(self.proc.stdout, size, deadline))
        return reply

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


def _read_exactly(stream: IO[bytes], size: int, deadline: float) -> bytes:
    out = bytearray()
    fd = stream.fileno()
    while len(out) < size:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            raise TimeoutError
        chunk = os.read(fd, size - len(out))
        if not chunk:
            raise EOFError
        out += chunk
    return bytes(out)


_lock = threading.Lock()
_helper: _Helper | None = None


def evaluate(src: str, data: dict[str, Any]) -> Any:
    """Evaluate `src` against `data` in the helper process; returns its JSON value or raises the
    expression error it raised there."""
    global _helper  # noqa: PLW0603 (one helper per process)
    with _lock:
        if _helper is None or _helper.proc.poll() is not None:
            _helper = _Helper()
        helper = _helper
        try:
            reply = helper.ask(src, data)
        except TimeoutError:
            helper.close()
            _helper = None
            raise ExpressionLimitError(
                f"the expression ran longer than {TIMEOUT_S:g} s", source=src
            ) from None
        except (EOFError, OSError):
            helper.close()
            _helper = None
            raise ExpressionLimitError(
                f"the expression ran out of memory (at most {_mib(MEMORY_LIMIT_BYTES)})",
                source=src,
            ) from None
        if reply.get("restart"):
            # cel-cpp was interrupted mid-allocation: start afresh next time.
            helper.close()
            _helper = None
    if "error" in reply:
        cls = _ERRORS.get(reply["error"], ExpressionEvalError)
        message = reply["message"]
        if reply.get("restart"):
            message = f"{message} (at most {_mib(MEMORY_LIMIT_BYTES)})"
        raise cls(message, source=reply.get("source"))
    return reply["value"]


def _mib(size: int) -> str:
    return f"{size // (1024 * 1024)} MiB"


def _serve() -> None:
    """The helper: answer requests on stdin until it closes, under the memory limit."""
    from stella_core.workflows.expressions.runtime import evaluate_unguarded

    evaluate_unguarded("1 + 1", {})  # load everything before the limit is set
    with open("/proc/self/statm", encoding="ascii") as fh:
        in_use = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = in_use + MEMORY_LIMIT_BYTES
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # The protocol has stdout to itself: anything printed by a library goes nowhere.
    stdin, stdout = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)

    def send(reply: dict[str, Any]) -> None:
        body = json.dumps(reply, separators=(",", ":")).encode()
        stdout.write(_HEADER.pack(len(body)) + body)
        stdout.flush()

    send({"ready": True})
    while True:
        header = stdin.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return
        (size,) = _HEADER.unpack(header)
        request = json.loads(stdin.read(size))
        try:
            send({"value": evaluate_unguarded(request["src"], request["data"])})
        except ExpressionError as exc:
            memory = "out of memory" in exc.message
            send(
                {
                    "error": type(exc).__name__,
                    "message": exc.message,
                    "source": exc.source,
                    "restart": memory,
                }
            )
        except MemoryError:
            send(
                {
                    "error": "ExpressionLimitError",
                    "message": "the expression ran out of memory",
                    "source": request["src"],
                    "restart": True,
                }
            )


if __name__ == "__main__":
    _serve()
