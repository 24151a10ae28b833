"""The sandbox the local executor runs script steps in: bubblewrap (`bwrap`).

Why bubblewrap rather than a dedicated system user: the product runs as an ordinary user on the
embedded default, and making and switching to another user needs root; bubblewrap needs only
unprivileged user namespaces. A sandboxed step sees:

- `/usr` (and the `/bin`, `/sbin`, `/lib*` links or directories) and `/etc`, read-only. Entries of
  `/etc` that an ordinary user could not read (shadow files, SSH host keys, `/etc/ssl/private`)
  are masked, since the orchestrator may run as root.
- its own `/proc` (a new PID namespace: no other process of the host is visible, so neither is
  the orchestrator's memory or environment), a minimal `/dev`, a private empty `/tmp`.
- its scratch directory (its working directory and HOME), read-write, removed after the attempt.
- paths the person who runs the orchestrator lists in `STELLA_SANDBOX_READ` (read-only) and
  `STELLA_SANDBOX_WRITE` (read-write), separated by `:` (tools, a deploy key, a drop folder).

Nothing else: not `/home`, `/root`, `/var` (so not `/var/lib/stella-desk`, where the embedded
database lives when run as root), not STELLA_HOME (profiles, the secrets file, keys, the embedded
superuser password), not the host's `/tmp`. STELLA_HOME is masked even where a listed path would
contain it, and a listed path inside it is refused.

The network is shared: script steps exist to reach deployment targets and registries. What
that leaves reachable on this host is loopback services; the embedded PostgreSQL among them
accepts only SCRAM passwords, which the sandbox cannot read. (Abstract Unix sockets, such as an X
server's, also belong to the network namespace; a headless `stella serve` has none.)
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from stella_core.db.embedded import SYSTEM_DIR
from stella_core.errors import DefinitionError

NAME = "bubblewrap"
BINARY = "bwrap"
INSTALL_HINT = (
    "install bubblewrap (Debian and Ubuntu: 'apt-get install bubblewrap'; "
    "Fedora: 'dnf install bubblewrap')"
)
READ_PATHS_ENV = "STELLA_SANDBOX_READ"
WRITE_PATHS_ENV = "STELLA_SANDBOX_WRITE"
# Read-only as they are; /bin, /lib and friends are links into /usr on merged-/usr systems.
SYSTEM_DIRS = ("/usr", "/etc")
SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# /etc/resolv.conf points here where systemd-resolved manages DNS.
RESOLVER_DIR = "/run/systemd/resolve"
_PROBE_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class SandboxStatus:
    """What this machine has: the sandbox's name, or why there is none."""

    name: str | None
    problem: str | None = None
    binary: str | None = None


def protected_paths() -> list[Path]:
    """Where this machine keeps what a script must never read (STELLA_HOME and the embedded
    database's system directory). Without side effects: nothing is created."""
    homes = [Path(platformdirs.user_data_dir("stella-desk"))]
    if os.environ.get("STELLA_HOME"):
        homes.append(Path(os.environ["STELLA_HOME"]))
    return [_absolute(p) for p in (*homes, SYSTEM_DIR)]


def listed_paths(variable: str) -> list[Path]:
    """The paths an environment variable lists (absolute, `:`-separated)."""
    out = []
    for item in os.environ.get(variable, "").split(os.pathsep):
        if not item:
            continue
        if not os.path.isabs(item):
            raise DefinitionError(f"{variable} lists {item!r}: paths must be absolute")
        out.append(_absolute(Path(item)))
    return out


class Bubblewrap:
    """Finds `bwrap` on PATH and probes each one found once (a trivial sandboxed command), so a
    machine where user namespaces are disabled says so instead of failing every step."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._probed: dict[str, str | None] = {}

    def status(self) -> SandboxStatus:
        found = shutil.which(BINARY)
        if found is None:
            return SandboxStatus(None, f"{BINARY} is not on PATH")
        with self._lock:
            if found not in self._probed:
                self._probed[found] = self._probe(found)
            problem = self._probed[found]
        if problem is not None:
            return SandboxStatus(None, problem, found)
        return SandboxStatus(NAME, None, found)

    def _probe(self, binary: str) -> str | None:
        """None when a sandboxed `true` runs; else what went wrong."""
        scratch = Path(tempfile.mkdtemp(prefix="stella-probe-"))
        try:
            argv = self.command(binary, ["true"], scratch, read=(), write=(), protected=())
            done = subprocess.run(
                argv,
                env={"PATH": "/usr/bin:/bin"},
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=_PROBE_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"{binary} could not be run: {exc}"
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if done.returncode != 0:
            said = done.stderr.decode("utf-8", errors="replace").strip() or "no message"
            return (
                f"{binary} cannot make a sandbox here ({said}); unprivileged user namespaces "
                "may be turned off (sysctl kernel.unprivileged_userns_clone, "
                "user.max_user_namespaces, or an AppArmor policy)"
            )
        return None

    @staticmethod
    def command(
        binary: str,
        argv: Sequence[str],
        workdir: Path,
        *,
        read: Sequence[Path],
        write: Sequence[Path],
        protected: Sequence[Path],
    ) -> list[str]:
        """The `bwrap` argument list that runs `argv` in `workdir` (see the module docstring).

        bwrap applies its options in order, so each mask comes after what it covers.
        """
        for path in (*read, *write):
            if not path.exists():
                raise DefinitionError(
                    f"{READ_PATHS_ENV}/{WRITE_PATHS_ENV} lists {path}, which does not exist"
                )
            for secret in protected:
                if path == secret or path.is_relative_to(secret):
                    raise DefinitionError(
                        f"{READ_PATHS_ENV}/{WRITE_PATHS_ENV} lists {path}, which is inside "
                        f"{secret}: script steps never see it"
                    )
        args = [
            binary,
            "--unshare-all",
            "--share-net",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
        ]
        for name in SYSTEM_DIRS:
            if os.path.isdir(name):
                args += ["--ro-bind", name, name]
        for name in SYSTEM_LINKS:
            if os.path.islink(name):
                args += ["--symlink", os.readlink(name), name]
            elif os.path.isdir(name):
                args += ["--ro-bind", name, name]
        for hidden in _unreadable_to_others("/etc"):
            args += _mask(hidden)
        args += ["--ro-bind-try", RESOLVER_DIR, RESOLVER_DIR]
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]  # noqa: S108 (its own)
        for path in read:
            args += ["--ro-bind", str(path), str(path)]
        for path in write:
            args += ["--bind", str(path), str(path)]
        args += ["--bind", str(workdir), str(workdir), "--chdir", str(workdir)]
        visible = [*(Path(d) for d in SYSTEM_DIRS), *read, *write]
        for secret in protected:
            if any(secret.is_relative_to(p) for p in visible) and secret.is_dir():
                args += _mask(str(secret))
        return [*args, "--", *argv]


def _mask(path: str) -> list[str]:
    """An empty read-only directory, or /dev/null, in place of `path`."""
    if os.path.isdir(path) and not os.path.islink(path):
        return ["--tmpfs", path, "--remount-ro", path]
    return ["--ro-bind", "/dev/null", path]


def _unreadable_to_others(top: str) -> list[str]:
    """Entries under `top` that only their owner or group may read (walked each run: a few
    milliseconds for /etc, and never out of date)."""
    hidden: list[str] = []
    for root, dirs, files in os.walk(top):
        seen = len(hidden)
        for name in (*dirs, *files):
            path = os.path.join(root, name)
            try:
                mode = os.lstat(path).st_mode
            except OSError:
                continue
            if not stat.S_ISLNK(mode) and not mode & stat.S_IROTH:
                hidden.append(path)
        masked = set(hidden[seen:])
        dirs[:] = [d for d in dirs if os.path.join(root, d) not in masked]
    return hidden


def _absolute(path: Path) -> Path:
    return Path(os.path.realpath(path))
