"""The real OpenSSH sshd on a free loopback port, with throwaway host and client keys.

`start_sshd(tmp)` runs `/usr/sbin/sshd -D -e -f CONFIG` as this process's user: as root it
lets root log in with a key only (`PermitRootLogin prohibit-password`; rootful podman is what
works on these machines), otherwise the current user logs in. Password and keyboard-interactive
authentication are off, `UsePAM no`, `StrictModes no` (the scratch directory sits under /tmp,
which is world-writable). `extra_env` becomes `SetEnv` lines, so remote commands see, e.g., the
tests' podman configuration. Without sshd the tests fail in CI (STELLA_REQUIRE_SERVICES=1) and
are skipped elsewhere (see reference/platform.md §6 for the failures met and their fixes).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.registry import free_port

SSHD = "/usr/sbin/sshd"


@dataclass
class RunningSshd:
    host: str
    port: int
    user: str
    client_key_pem: str
    known_hosts: str
    host_key_pub: str
    directory: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def log_tail(self, lines: int = 40) -> str:
        path = self.directory / "sshd.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def require_sshd() -> str:
    """sshd's path; without it the test fails in CI and is skipped elsewhere."""
    if os.access(SSHD, os.X_OK) and shutil.which("ssh-keygen"):
        return SSHD
    message = (
        f"OpenSSH's sshd is not installed at {SSHD} (packaging/dev.sh installs openssh-server; "
        "or apt-get install -y openssh-server)"
    )
    if os.environ.get("STELLA_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


def keygen(path: Path, comment: str = "stella-test") -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )


def start_sshd(
    directory: Path,
    *,
    extra_env: Mapping[str, str] | None = None,
    timeout: float = 15.0,
) -> RunningSshd:
    binary = require_sshd()
    directory.mkdir(parents=True, exist_ok=True)
    keygen(directory / "host_key", "stella-test-host")
    keygen(directory / "client_key", "stella-test-client")
    user = getpass.getuser()
    (directory / "authkeys").mkdir(exist_ok=True)
    shutil.copy(directory / "client_key.pub", directory / "authkeys" / user)
    # sshd refuses to start without its privilege separation directory.
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    port = free_port()
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {directory / 'host_key'}",
        "PidFile none",
        f"AuthorizedKeysFile {directory / 'authkeys'}/%u",
        "StrictModes no",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        f"AllowUsers {user}",
        "AllowAgentForwarding no",
        "AllowTcpForwarding no",
        "X11Forwarding no",
        "Subsystem sftp internal-sftp",
        "LogLevel VERBOSE",
    ]
    if os.geteuid() == 0:
        lines.append("PermitRootLogin prohibit-password")
    if extra_env:
        lines.append("SetEnv " + " ".join(f'"{k}={v}"' for k, v in extra_env.items()))
    config = directory / "sshd_config"
    config.write_text("\n".join(lines) + "\n")
    log = open(directory / "sshd.log", "wb")  # noqa: SIM115 (sshd writes it while it runs)
    process = subprocess.Popen(
        [binary, "-D", "-e", "-f", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    host_pub = (directory / "host_key.pub").read_text().split()
    running = RunningSshd(
        host="127.0.0.1",
        port=port,
        user=user,
        client_key_pem=(directory / "client_key").read_text(),
        known_hosts=f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n",
        host_key_pub=" ".join(host_pub[:2]),
        directory=directory,
        process=process,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited with {process.returncode}:\n{running.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return running
        time.sleep(0.05)
    running.stop()
    raise RuntimeError(f"sshd did not listen on port {port} within {timeout} s")


@contextlib.contextmanager
def sshd_running(
    directory: Path, *, extra_env: Mapping[str, str] | None = None
) -> Iterator[RunningSshd]:
    running = start_sshd(directory, extra_env=extra_env)
    try:
        yield running
    finally:
        running.stop()
