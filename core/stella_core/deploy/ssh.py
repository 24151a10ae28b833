"""`SshHost`: a target reached over SSH with paramiko, as the orchestrator's worker does it.

- Key authentication only: the target's private key, never a password, an SSH agent or keys
  found on this machine (`look_for_keys=False`, `allow_agent=False`); nothing is forwarded.
- The host key is checked against the target's own known_hosts text alone: no system or user
  known_hosts file is read, and an unknown host is refused (`RejectPolicy`, never
  `AutoAddPolicy`). A changed key is refused too, and the message names the key offered.
- Commands are argument lists quoted with `shlex.join` for the login's POSIX shell; files go
  over SFTP to a temporary name beside the target, renamed over it (`posix-rename`).
"""

from __future__ import annotations

import contextlib
import errno
import posixpath
import re
import secrets
import select
import shlex
import time
from collections.abc import Mapping, Sequence
from typing import Any

import paramiko

from stella_core.deploy.hosts import OUTPUT_LIMIT, CommandTimeoutError, HostError, HostResult
from stella_core.environments.connection import (
    fingerprint,
    known_hosts_name,
    load_private_key,
    parse_known_hosts,
)

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class HostKeyRejectedError(HostError):
    """The host's key is not the one pinned for it (unknown or changed): nothing was sent."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class _RejectUnpinned(paramiko.RejectPolicy):  # type: ignore[misc]  # paramiko has no types
    """paramiko's RejectPolicy, saying which key was refused."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: Any) -> None:
        raise HostKeyRejectedError(
            f"the SSH host {hostname} offered a {key.get_name()} host key "
            f"{fingerprint(key)} that its known_hosts does not pin; nothing was run there"
        )


class SshHost:
    """One SSH login on one host. Connects on first use and keeps the connection until
    `close()`."""

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        private_key_pem: str,
        known_hosts: str,
        *,
        connect_timeout: float = 10,
    ) -> None:
        self.host = host
        self.port = port
        self.user = user
        self.description = f"ssh {user}@{host}:{port}"
        self.connect_timeout = connect_timeout
        # Parsed now: a bad key or known_hosts text fails before any connection is tried.
        self._key = load_private_key(private_key_pem)
        self._host_keys = parse_known_hosts(known_hosts)
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    def __repr__(self) -> str:
        return f"SshHost({self.description})"

    # connection -------------------------------------------------------------------------
    def _connected(self) -> paramiko.SSHClient:
        if self._client is not None:
            transport = self._client.get_transport()
            if transport is not None and transport.is_active():
                return self._client
            self.close()
        client = paramiko.SSHClient()
        # Only the target's pinned keys: no system or user known_hosts file is loaded.
        pinned = client.get_host_keys()
        for name in self._host_keys:
            for key_type, key in self._host_keys[name].items():
                pinned.add(name, key_type, key)
        client.set_missing_host_key_policy(_RejectUnpinned())
        name = known_hosts_name(self.host, self.port)
        try:
            client.connect(
                self.host,
                port=self.port,
                username=self.user,
                pkey=self._key,
                look_for_keys=False,
                allow_agent=False,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
                channel_timeout=self.connect_timeout,
            )
        except HostKeyRejectedError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyRejectedError(
                f"the SSH host {name} offered a {exc.key.get_name()} host key "
                f"{fingerprint(exc.key)} that differs from the one pinned "
                f"({fingerprint(exc.expected_key)}); it may have been replaced or the "
                "connection intercepted; nothing was run there"
            ) from None
        except paramiko.AuthenticationException:
            client.close()
            raise HostError(
                f"the SSH host {name} refused the key for {self.user}", retryable=False
            ) from None
        except TimeoutError:
            client.close()
            raise HostError(
                f"the SSH host {name} did not answer within {self.connect_timeout:.0f} s",
                retryable=True,
            ) from None
        except (paramiko.SSHException, OSError) as exc:
            client.close()
            raise HostError(
                f"could not connect to the SSH host {name}: {_reason(exc)}", retryable=True
            ) from None
        self._client = client
        return client

    def _sftp_client(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            try:
                self._sftp = self._connected().open_sftp()
            except (paramiko.SSHException, OSError) as exc:
                raise HostError(
                    f"{self.description} offers no SFTP: {_reason(exc)}", retryable=True
                ) from None
        return self._sftp

    def close(self) -> None:
        if self._sftp is not None:
            with contextlib.suppress(Exception):
                self._sftp.close()
            self._sftp = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    # commands ---------------------------------------------------------------------------
    def command_line(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> str:
        """The line the login's shell runs: each argument quoted, the environment given with
        `env NAME=value` (names checked), the directory entered first."""
        if not argv:
            raise HostError("no command given")
        words = list(argv)
        if env:
            for name in env:
                if not _ENV_NAME.match(name):
                    raise HostError(f"{name!r} is not an environment variable name")
            words = ["env", *(f"{k}={v}" for k, v in env.items()), *words]
        for word in words:
            if "\x00" in word:
                raise HostError("a command argument contains a NUL character")
        line = shlex.join(words)
        if cwd is not None:
            line = f"cd {shlex.quote(cwd)} && {line}"
        return line

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> HostResult:
        line = self.command_line(argv, env=env, cwd=cwd)
        client = self._connected()
        try:
            transport = client.get_transport()
            if transport is None:
                raise paramiko.SSHException("the connection closed")
            channel = transport.open_session(timeout=self.connect_timeout)
            channel.exec_command(line)
            channel.shutdown_write()  # no standard input
        except (paramiko.SSHException, OSError) as exc:
            self.close()
            raise HostError(
                f"could not start {argv[0]} on {self.description}: {_reason(exc)}",
                retryable=True,
            ) from None
        deadline = None if timeout is None else time.monotonic() + timeout
        stdout, stderr = bytearray(), bytearray()
        try:
            while True:
                while channel.recv_ready():
                    _keep_tail(stdout, channel.recv(65536))
                while channel.recv_stderr_ready():
                    _keep_tail(stderr, channel.recv_stderr(65536))
                if channel.exit_status_ready() and not (
                    channel.recv_ready() or channel.recv_stderr_ready()
                ):
                    break
                if channel.closed and channel.eof_received:
                    break
                wait = 0.5
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        raise CommandTimeoutError(
                            f"{argv[0]} did not finish within {timeout:.0f} s on {self.description}"
                        )
                select.select([channel], [], [], wait)
            code = channel.recv_exit_status()
        except CommandTimeoutError:
            # Closing the session ends the remote command (it loses its output pipes).
            with contextlib.suppress(Exception):
                channel.close()
            raise
        except (paramiko.SSHException, OSError) as exc:
            self.close()
            raise HostError(
                f"the connection to {self.description} broke while {argv[0]} ran: {_reason(exc)}",
                retryable=True,
            ) from None
        finally:
            with contextlib.suppress(Exception):
                channel.close()
        return HostResult(
            code, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace")
        )

    # files ------------------------------------------------------------------------------
    def write_file(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        target = _sftp_path(path)
        sftp = self._sftp_client()
        folder, name = posixpath.split(target)
        temp = posixpath.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            if folder:
                self._makedirs(sftp, folder)
            with sftp.open(temp, "wb") as out:
                out.write(data)
                out.chmod(mode)
                out.flush()
            sftp.posix_rename(temp, target)
        except (paramiko.SSHException, OSError) as exc:
            with contextlib.suppress(Exception):
                sftp.remove(temp)
            raise HostError(
                f"could not write {path} on {self.description}: {_reason(exc)}",
                retryable=isinstance(exc, (paramiko.SSHException, EOFError)),
            ) from None

    @staticmethod
    def _makedirs(sftp: paramiko.SFTPClient, folder: str) -> None:
        """mkdir -p over SFTP (relative folders start at the login's home)."""
        parts = folder.split("/")
        current = "/" if folder.startswith("/") else ""
        for part in parts:
            if not part:
                continue
            current = posixpath.join(current, part) if current else part
            try:
                sftp.stat(current)
            except FileNotFoundError:
                sftp.mkdir(current)

    def read_file(self, path: str, *, limit: int = 4 * 1024 * 1024) -> bytes | None:
        sftp = self._sftp_client()
        try:
            with sftp.open(_sftp_path(path), "rb") as handle:
                data = handle.read(limit + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise HostError(
                f"could not read {path} on {self.description}: {_reason(exc)}", retryable=False
            ) from None
        except paramiko.SSHException as exc:
            raise HostError(
                f"could not read {path} on {self.description}: {_reason(exc)}", retryable=True
            ) from None
        if len(data) > limit:
            raise HostError(f"{path} on {self.description} is larger than {limit} bytes")
        return bytes(data)


def _sftp_path(path: str) -> str:
    """SFTP paths are relative to the login's home already; `~/x` means the same."""
    if path == "~":
        return "."
    if path.startswith("~/"):
        return path[2:]
    return path


def _keep_tail(buffer: bytearray, chunk: bytes) -> None:
    buffer.extend(chunk)
    if len(buffer) > OUTPUT_LIMIT:
        del buffer[: len(buffer) - OUTPUT_LIMIT]


def _reason(exc: BaseException) -> str:
    """An exception's words, never more than a line (they carry no secret: paramiko's messages
    name hosts, algorithms and errno texts)."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
