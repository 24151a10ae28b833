"""`WinrmHost`: a Windows target reached over WinRM (WS-Management) with pywinrm.

- HTTPS with the server's certificate checked by default (the system's CAs, or the target's own
  CA file); NTLM or Kerberos, or Basic over HTTPS only (Basic sends the password as it is). Plain
  http is possible only when the target was explicitly allowed it, and never with Basic.
- A command is a PowerShell script run as `powershell.exe -EncodedCommand`: each argument is a
  single-quoted PowerShell string (quotes doubled), so no argument is ever read as code.
- Files go in base64 chunks to a temporary file beside the target, then `Move-Item -Force`
  over it (a reader sees the old file or the new one).
- No message, log or repr carries the password.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import secrets
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from stella_core.deploy.hosts import OUTPUT_LIMIT, CommandTimeoutError, HostError, HostResult

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# PowerShell treats these as single quotes too; inside a single-quoted string each is doubled.
_PS_QUOTES = "'\u2018\u2019\u201a\u201b"
# Raw bytes per upload command: its base64 inside the script, then the script as UTF-16LE
# base64 on the command line, stays well under cmd.exe's 8,191 characters.
CHUNK = 1500
TRANSPORTS = ("ntlm", "kerberos", "basic")
_MISSING = 3
_TOO_LARGE = 4


def ps_quote(value: str) -> str:
    """A PowerShell single-quoted string literal holding exactly `value`."""
    if "\x00" in value:
        raise HostError("a command argument contains a NUL character")
    out = []
    for char in value:
        out.append(char * 2 if char in _PS_QUOTES else char)
    return "'" + "".join(out) + "'"


def powershell_script(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> str:
    """The script `run` sends: stop on errors, set the environment, enter the directory, call
    the program with its arguments, and exit with its exit code."""
    if not argv:
        raise HostError("no command given")
    for word in argv[1:]:
        if '"' in word:
            # Windows PowerShell 5.1 passes embedded double quotes to programs inconsistently.
            raise HostError("a command argument for a Windows host contains a double quote")
    lines = ["$ErrorActionPreference = 'Stop'", "$ProgressPreference = 'SilentlyContinue'"]
    for name, value in (env or {}).items():
        if not _ENV_NAME.match(name):
            raise HostError(f"{name!r} is not an environment variable name")
        lines.append(f"$env:{name} = {ps_quote(value)}")
    if cwd is not None:
        lines.append(f"Set-Location -LiteralPath {ps_quote(cwd)}")
    lines.append("& " + " ".join(ps_quote(word) for word in argv))
    lines.append("exit $LASTEXITCODE")
    return "\n".join(lines)


def encoded_command(script: str) -> list[str]:
    """powershell.exe's arguments for a script (UTF-16LE, base64: nothing left to quote)."""
    encoded = base64.b64encode(script.encode("utf-16-le")).decode("ascii")
    return ["-NoLogo", "-NoProfile", "-NonInteractive", "-EncodedCommand", encoded]


class WinrmHost:
    """One WinRM endpoint and login. Each call opens a remote shell and closes it after."""

    def __init__(
        self,
        url: str,
        user: str,
        password: str,
        *,
        transport: str = "ntlm",
        verify_tls: bool = True,
        ca_file: str | None = None,
        ca_pem: str | None = None,
        operation_timeout: int = 20,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise HostError(f"{url!r} is not a WinRM URL (https://HOST:5986/wsman)")
        if transport not in TRANSPORTS:
            raise HostError(f"WinRM authentication {transport!r} is not ntlm, kerberos or basic")
        if transport == "basic" and parts.scheme != "https":
            raise HostError(
                "Basic authentication sends the password as it is: WinRM with Basic is "
                "allowed over https only"
            )
        self.url = url
        self.user = user
        self.transport = transport
        self.description = f"winrm {url}"
        self.operation_timeout = operation_timeout
        self._password = password
        self._verify = verify_tls
        self._ca_file = ca_file
        self._ca_temp: str | None = None
        if ca_pem is not None and ca_file is None:
            fd, self._ca_temp = tempfile.mkstemp(prefix="stella-winrm-ca-", suffix=".pem")
            with os.fdopen(fd, "w") as out:
                out.write(ca_pem)
            self._ca_file = self._ca_temp

    def __repr__(self) -> str:
        return f"WinrmHost({self.description}, user={self.user!r}, {self.transport})"

    def _protocol(self) -> Any:
        # Imported when a WinRM target is used, not with the deploy module.
        from winrm.protocol import Protocol

        return Protocol(
            endpoint=self.url,
            transport=self.transport,  # type: ignore[arg-type]
            username=self.user,
            password=self._password,
            server_cert_validation="validate" if self._verify else "ignore",
            # Only the given CA file, else the default store; no environment variable decides.
            ca_trust_path=self._ca_file,  # type: ignore[arg-type]
            proxy=None,
            operation_timeout_sec=self.operation_timeout,
            read_timeout_sec=self.operation_timeout + 10,
        )

    def _failure(self, exc: BaseException, doing: str) -> HostError:
        """A pywinrm or requests exception as one sentence, without the password or the
        server's answer body."""
        import requests
        from winrm.exceptions import InvalidCredentialsError, WinRMError, WinRMTransportError

        if isinstance(exc, requests.exceptions.SSLError):
            return HostError(
                f"{self.description}: the host's TLS certificate is not trusted (not signed by "
                "a CA this target trusts, or not for this host name)",
                retryable=False,
            )
        if isinstance(exc, InvalidCredentialsError):
            return HostError(
                f"{self.description} refused the credentials of {self.user}", retryable=False
            )
        if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            return HostError(f"could not reach {self.description} {doing}", retryable=True)
        if isinstance(exc, WinRMTransportError):
            return HostError(
                f"{self.description} answered HTTP {exc.code} {doing}", retryable=exc.code >= 500
            )
        if isinstance(exc, WinRMError):
            # pywinrm's own words (a fault's reason, a missing Kerberos library): no secrets.
            return HostError(f"{self.description} failed {doing}: {_first_line(str(exc))}")
        return HostError(f"{self.description} failed {doing}: {type(exc).__name__}")

    def _script(self, script: str, *, timeout: float | None, what: str) -> HostResult:
        """Run one PowerShell script in a fresh remote shell."""
        import requests
        from winrm.exceptions import WinRMError, WinRMOperationTimeoutError

        try:
            protocol = self._protocol()
            shell = protocol.open_shell(codepage=65001, noprofile=True)
        except (requests.exceptions.RequestException, WinRMError) as exc:
            raise self._failure(exc, "opening a shell") from None
        deadline = None if timeout is None else time.monotonic() + timeout
        stdout, stderr = bytearray(), bytearray()
        command = None
        try:
            command = protocol.run_command(shell, "powershell.exe", encoded_command(script))
            while True:
                if deadline is not None and time.monotonic() > deadline:
                    raise CommandTimeoutError(
                        f"{what} did not finish within {timeout:.0f} s on {self.description}"
                    )
                try:
                    out, err, code, done = protocol.get_command_output_raw(shell, command)
                except WinRMOperationTimeoutError:
                    continue  # no output within the operation timeout: ask again
                _keep_tail(stdout, out)
                _keep_tail(stderr, err)
                if done:
                    break
        except (requests.exceptions.RequestException, WinRMError) as exc:
            raise self._failure(exc, f"running {what}") from None
        finally:
            with contextlib.suppress(Exception):
                if command is not None:
                    protocol.cleanup_command(shell, command)
            with contextlib.suppress(Exception):
                protocol.close_shell(shell)
        return HostResult(int(code), stdout.decode("utf-8", "replace"), _clixml(bytes(stderr)))

    # Host --------------------------------------------------------------------------------
    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> HostResult:
        script = powershell_script(argv, env=env, cwd=cwd)
        return self._script(script, timeout=timeout, what=argv[0])

    def write_file(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        # `mode` has no Windows meaning: the file inherits its folder's access rules.
        final = ps_quote(path)
        temp = ps_quote(f"{path}.{secrets.token_hex(6)}.tmp")
        prelude = f"$ErrorActionPreference = 'Stop'\n$p = {final}\n$t = {temp}\n"
        chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
        for index, chunk in enumerate(chunks):
            lines = [prelude]
            if index == 0:
                lines.append(
                    "$d = [IO.Path]::GetDirectoryName([IO.Path]::GetFullPath($p))\n"
                    "if ($d) { [void][IO.Directory]::CreateDirectory($d) }\n"
                )
            mode_name = "Create" if index == 0 else "Append"
            lines.append(
                f"$b = [Convert]::FromBase64String('{base64.b64encode(chunk).decode()}')\n"
                f"$f = [IO.File]::Open($t, [IO.FileMode]::{mode_name}, [IO.FileAccess]::Write)\n"
                "try { $f.Write($b, 0, $b.Length) } finally { $f.Close() }\n"
            )
            if index == len(chunks) - 1:
                lines.append("Move-Item -LiteralPath $t -Destination $p -Force\n")
            result = self._script("".join(lines), timeout=None, what=f"writing {path}")
            if result.exit_code != 0:
                with contextlib.suppress(HostError):
                    self._script(
                        f"Remove-Item -LiteralPath {temp} -Force -ErrorAction SilentlyContinue",
                        timeout=None,
                        what="cleaning up",
                    )
                raise HostError(
                    f"could not write {path} on {self.description}: {_first_line(result.stderr)}"
                )

    def read_file(self, path: str, *, limit: int = 4 * 1024 * 1024) -> bytes | None:
        script = (
            "$ErrorActionPreference = 'Stop'\n"
            f"$p = {ps_quote(path)}\n"
            f"if (-not (Test-Path -LiteralPath $p -PathType Leaf)) {{ exit {_MISSING} }}\n"
            f"if ((Get-Item -LiteralPath $p).Length -gt {int(limit)}) {{ exit {_TOO_LARGE} }}\n"
            "[Convert]::ToBase64String([IO.File]::ReadAllBytes($p))\n"
        )
        result = self._script(script, timeout=None, what=f"reading {path}")
        if result.exit_code == _MISSING:
            return None
        if result.exit_code == _TOO_LARGE:
            raise HostError(f"{path} on {self.description} is larger than {limit} bytes")
        if result.exit_code != 0:
            raise HostError(
                f"could not read {path} on {self.description}: {_first_line(result.stderr)}"
            )
        try:
            data = base64.b64decode("".join(result.stdout.split()), validate=True)
        except (binascii.Error, ValueError):
            raise HostError(f"{self.description} sent {path} back garbled") from None
        if len(data) > limit:
            raise HostError(f"{path} on {self.description} is larger than {limit} bytes")
        return data

    def close(self) -> None:
        if self._ca_temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._ca_temp)
            self._ca_temp = None


def _keep_tail(buffer: bytearray, chunk: bytes) -> None:
    buffer.extend(chunk)
    if len(buffer) > OUTPUT_LIMIT:
        del buffer[: len(buffer) - OUTPUT_LIMIT]


_CLIXML_TEXT = re.compile(r'<S S="Error">(.*?)</S>', re.DOTALL)


def _clixml(data: bytes) -> str:
    """PowerShell's error stream as text: it arrives as CLIXML when it is not a console."""
    text = data.decode("utf-8", "replace")
    if not text.startswith("#< CLIXML"):
        return text
    parts = _CLIXML_TEXT.findall(text)
    joined = "".join(parts).replace("_x000D__x000A_", "\n")
    for entity, char in (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&amp;", "&")):
        joined = joined.replace(entity, char)
    return joined.strip() + ("\n" if joined.strip() else "")


def _first_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0][:200] if lines else "no reason given"
