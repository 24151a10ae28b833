"""Warm commands: while the embedded server lingers, a process with the core already imported
runs commands for this STELLA_HOME, so a command costs little more than `stella --help`.

Importing the ORM, the driver and the models takes most of a command's time; the server being up
saves the rest. So after a command on the embedded default, a detached process (one per home,
holding ``pg/warm.lock``) imports the core and listens on ``pg/cli.sock`` (in the home's private
0700 directory; it also checks the caller's uid). For each command it forks: the child takes the
caller's standard input, output and error (passed as descriptors), working directory, umask and
environment, runs the command exactly as `stella` would, and reports its exit code; signals sent
to the caller (Ctrl-C) are passed on to it. The process leaves when the server stops or the
installed code changes. `STELLA_CLI_WARM=0` turns it off; `stella serve`, `stella db …` and help
always run in their own process.

The caller's side imports only the standard library.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

WARM_ENV = "STELLA_CLI_WARM"
_COLD_GROUPS = {"serve", "db"}  # long-running, or managing the server itself
_SOCKET = "cli.sock"
_LOCK = "warm.lock"
_MAX_HEADER = 4 * 1024 * 1024
_SPAWN_ENV = {"PATH", "LANG", "HOME", "TZ", "PYTHONPATH", "VIRTUAL_ENV"}
_PACKAGE = Path(__file__).resolve().parents[1]  # stella_core


class _Here:
    in_child = False  # set in a warm process's child: it runs the command itself


def fingerprint() -> str:
    """The interpreter and the newest source file of the core: a changed one retires the warm
    process (it would run the old code)."""
    newest = 0
    stack = [str(_PACKAGE)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != "__pycache__":
                        stack.append(entry.path)
                elif entry.name.endswith(".py"):
                    newest = max(newest, entry.stat().st_mtime_ns)
    return f"{sys.executable}|{_PACKAGE}|{newest}"


def _state_dir() -> Path | None:
    override = os.environ.get("STELLA_HOME")
    if override:
        home = Path(override)
    else:
        import platformdirs

        home = Path(platformdirs.user_data_dir("stella-desk"))
    state = home / "pg"
    return state if state.is_dir() else None


def _enabled(group: str | None, argv: Sequence[str]) -> bool:
    if _Here.in_child or os.environ.get(WARM_ENV, "1") == "0" or group is None:
        return False
    return not any(arg in ("-h", "--help") for arg in argv)


def _short_path(dir_fd: int) -> str:
    # A unix socket path is limited to ~107 bytes and homes can be long: reach it by descriptor.
    return f"/proc/self/fd/{dir_fd}/{_SOCKET}"


# ---------------------------------------------------------------------------- the caller


def run_warm(group: str | None, argv: Sequence[str]) -> int | None:
    """The command's exit code, run by the warm process; None when there is none to run it
    (the caller then runs it itself)."""
    if not _enabled(group, argv) or group in _COLD_GROUPS:
        return None
    state = _state_dir()
    if state is None or not (state / _SOCKET).exists():
        return None
    try:
        dir_fd = os.open(state, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.connect(_short_path(dir_fd))
        except OSError:
            return None  # left over from a warm process that is gone
        header = json.dumps(
            {
                "argv": list(argv),
                "env": dict(os.environ),
                "cwd": os.getcwd(),
                "umask": _umask(),
                "fingerprint": fingerprint(),
                "encoding": sys.stdout.encoding,
                "errors": sys.stdout.errors,
            }
        ).encode()
        try:
            socket.send_fds(sock, [struct.pack("!I", len(header)) + header], [0, 1, 2])
            reply = _recv_exact(sock, 5)
        except OSError:
            return None
        if reply is None or reply[:1] != b"P":
            return None  # refused (stale code): nothing ran
        child = struct.unpack("!I", reply[1:])[0]
        return _wait_for(sock, child)
    finally:
        sock.close()
        os.close(dir_fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _wait_for(sock: socket.socket, child: int) -> int:
    def forward(signum: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    try:
        while True:
            try:
                reply = _recv_exact(sock, 5)
                break
            except InterruptedError:
                continue
    except OSError:
        reply = None
    if reply is None or reply[:1] != b"X":
        print("stella: error: the command ended without an exit code", file=sys.stderr)
        return 1
    code: int = struct.unpack("!i", reply[1:])[0]
    return code


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def start_if_useful(group: str | None, argv: Sequence[str]) -> None:
    """After a command ran in its own process: start the home's warm process if the embedded
    server lingers and none runs (best effort; a failure only leaves commands cold)."""
    if not _enabled(group, argv) or os.environ.get("STELLA_DATABASE_URL"):
        return
    state = _state_dir()
    if state is None:
        return
    try:
        import subprocess

        from stella_core.db.embedded import EmbeddedPostgres, configured_linger

        if configured_linger() <= 0 or not EmbeddedPostgres(state.parent, linger=0).is_running():
            return
        if _locked(state / _LOCK):
            return
        code = (
            "import os, sys\n"
            "if os.fork():\n    os._exit(0)\n"  # detach: init adopts the warm process
            "os.setsid()\n"
            f"sys.path.insert(0, {str(_PACKAGE.parent)!r})\n"
            "from stella_core.cli.warm import serve\n"
            "serve(sys.argv[1])\n"
        )
        # Only what finding Python's modules needs: no passphrase lives on in a lasting process
        # (each command gets its caller's environment).
        kept = {k: v for k, v in os.environ.items() if k in _SPAWN_ENV or k.startswith("LC_")}
        with open(state / "warm.log", "ab") as log:
            subprocess.run(
                [sys.executable, "-c", code, str(state)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd="/",
                env=kept,
                start_new_session=True,
                timeout=60,
                check=False,
            )
    except Exception as exc:  # never fail or add to a command that already ran
        import logging

        logging.getLogger(__name__).debug("no warm command process: %s", exc)


def _locked(path: Path) -> bool:
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


# ---------------------------------------------------------------------------- the warm process

# What a command needs, imported once here instead of in every command.
_PRELOAD = (
    "stella_core.cli.main",
    "stella_core.bootstrap",
    "stella_core.releases.service",
    "stella_core.evidence.service",
    "stella_core.environments.service",
    "stella_core.workflows.service",
    "stella_core.promotions.service",
    "stella_core.tenancy.service",
)


def serve(state_dir: str) -> None:
    """Run commands for the home whose ``pg`` directory is `state_dir` until its embedded
    server stops or the code changes."""
    import fcntl
    import importlib
    import selectors

    state = Path(state_dir)
    lock_fd = os.open(state / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # another warm process serves this home
    mine = fingerprint()
    for module in _PRELOAD:
        importlib.import_module(module)
    from stella_core.cli import main as cli_main
    from stella_core.db.embedded import EmbeddedPostgres

    for _, _, module in cli_main.GROUPS:
        importlib.import_module(f"stella_core.cli.{module}")
    server = EmbeddedPostgres(state.parent, linger=0)
    dir_fd = os.open(state, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = _short_path(dir_fd)
    (state / _SOCKET).unlink(missing_ok=True)
    old_mask = os.umask(0o177)  # the socket is ours alone (its directory is 0700 as well)
    try:
        listener.bind(path)
    finally:
        os.umask(old_mask)
    listener.listen(64)
    bound = os.stat(state / _SOCKET).st_ino
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    try:
        while server.is_running():
            ready = selector.select(timeout=1.0)
            _reap_children()
            if not ready:
                continue
            conn, _ = listener.accept()
            if not _serve_one(conn, mine, (listener.fileno(), lock_fd, dir_fd)):
                break  # the code changed: a new warm process will be started
    finally:
        listener.close()
        try:
            if os.stat(state / _SOCKET).st_ino == bound:
                (state / _SOCKET).unlink()
        except OSError:
            pass
        os.close(dir_fd)
        os.close(lock_fd)


def _reap_children() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _serve_one(conn: socket.socket, mine: str, inherited: tuple[int, ...]) -> bool:
    """Fork a child for one command; False when the caller's code differs from ours."""
    fds: list[int] = []
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        if uid != os.getuid():
            return True  # not this user: refused without a word
        conn.settimeout(10)
        data, fds, _, _ = socket.recv_fds(conn, 65536, 3)
        if len(data) < 4 or len(fds) != 3:
            return True
        size = struct.unpack("!I", data[:4])[0]
        if size > _MAX_HEADER:
            return True
        rest = _recv_exact(conn, size - (len(data) - 4)) if size > len(data) - 4 else b""
        if rest is None:
            return True
        header = json.loads(data[4:] + rest)
        if header.get("fingerprint") != mine:
            conn.sendall(b"S\0\0\0\0")
            return False
        conn.settimeout(None)
        pid = os.fork()
        if pid == 0:
            _child(conn, fds, header, inherited)  # never returns
        return True
    except (OSError, ValueError) as exc:
        print(f"warm: a request failed: {exc}", file=sys.stderr, flush=True)
        return True
    finally:
        for fd in fds:
            os.close(fd)
        conn.close()


def _child(
    conn: socket.socket, fds: list[int], header: dict[str, Any], inherited: tuple[int, ...]
) -> None:
    _Here.in_child = True
    code = 1
    try:
        for fd in inherited:
            os.close(fd)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        fds.clear()
        os.chdir(header["cwd"])
        os.umask(int(header["umask"]))
        os.environ.clear()
        os.environ.update(header["env"])
        import time

        time.tzset()
        encoding, errors = header.get("encoding") or "utf-8", header.get("errors") or "strict"
        sys.stdin = _text(0, "r", encoding, errors, line_buffering=False)
        sys.stdout = _text(1, "w", encoding, errors, line_buffering=os.isatty(1))
        sys.stderr = _text(2, "w", encoding, "backslashreplace", line_buffering=True)
        argv = [str(a) for a in header["argv"]]
        sys.argv = ["stella", *argv]
        import getpass
        import logging

        logging.root.handlers.clear()
        getpass.getpass = _getpass_on_stdin  # no controlling terminal here: use the caller's
        conn.sendall(b"P" + struct.pack("!I", os.getpid()))
        code = _run(argv)
    except BaseException as exc:
        print(f"stella: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    finally:
        try:
            import atexit

            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
            conn.sendall(b"X" + struct.pack("!i", code))
        finally:
            os._exit(code & 0xFF)


def _text(fd: int, mode: str, encoding: str, errors: str, *, line_buffering: bool) -> Any:
    """A text stream on one of the caller's descriptors, as the interpreter would make it."""
    import io

    raw = io.FileIO(fd, mode, closefd=False)
    buffered = io.BufferedWriter(raw) if mode == "w" else io.BufferedReader(raw)
    return io.TextIOWrapper(
        buffered, encoding=encoding, errors=errors, line_buffering=line_buffering
    )


def _run(argv: list[str]) -> int:
    from stella_core.cli.main import main

    try:
        return main(argv)
    except SystemExit as exc:  # a handler's own exit, as the interpreter would report it
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1


def _getpass_on_stdin(prompt: str = "Password: ", stream: Any = None) -> str:
    """getpass for a process without a controlling terminal: echo turned off on the caller's
    terminal (its standard input), the prompt on its standard error."""
    import termios

    if not os.isatty(0):
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")
    old = termios.tcgetattr(0)
    quiet = list(old)
    quiet[3] &= ~termios.ECHO
    sys.stderr.write(prompt)
    sys.stderr.flush()
    try:
        termios.tcsetattr(0, termios.TCSAFLUSH, quiet)
        line = sys.stdin.readline()
    finally:
        termios.tcsetattr(0, termios.TCSAFLUSH, old)
        sys.stderr.write("\n")
    if not line:
        raise EOFError
    return line.rstrip("\n")
