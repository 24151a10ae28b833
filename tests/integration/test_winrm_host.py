"""WinrmHost through pywinrm against the WS-Management stand-in (tests/support/winrm_standin.py),
the suite's one test double: no WinRM server runs on Linux. The stand-in checks every envelope
pywinrm sends (and the tests assert it found nothing wrong) and records the PowerShell that
arrived, so these tests prove the exact commands we send, over TLS with the certificate checked,
and the refusals: an untrusted certificate, Basic over plain http, a wrong password. They do not
prove what a real Windows host would do with the commands."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from stella_core.deploy.hosts import CommandTimeoutError, HostError
from stella_core.deploy.transports import host_for
from stella_core.deploy.winrm import WinrmHost, ps_quote
from stella_core.environments.model import Target, TargetType, WinrmAuth
from tests.support.winrm_standin import HANG, Answer, WinrmStandin, make_ca

USER = "Administrator"
PASSWORD = "Wsman-s3cret-9d1e-never-shown"
SHELL_SEQUENCE = ["Create", "Command", "Receive", "Signal", "Delete"]


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[WinrmStandin]:
    running = WinrmStandin(tmp_path, username=USER, password=PASSWORD)
    yield running
    running.stop()
    assert running.errors == []


def basic_host(standin: WinrmStandin, **options) -> WinrmHost:
    return WinrmHost(
        standin.url, USER, PASSWORD, transport="basic", ca_file=str(standin.ca_file), **options
    )


def test_a_command_runs_over_tls_as_exactly_this_powershell(standin: WinrmStandin) -> None:
    standin.answer = lambda script: Answer(0, b"started web\n")
    host = basic_host(standin)
    result = host.run(
        ["podman-compose", "-f", "it's \u2018quoted\u2019.yml", "up", "-d", "$(Remove-Item C:\\)"],
        env={"COMPOSE_PROJECT_NAME": "shop web"},
        cwd="C:\\Users\\deploy\\stella\\web",
        timeout=30,
    )
    assert (result.exit_code, result.stdout, result.stderr) == (0, "started web\n", "")
    assert standin.scripts == [
        "$ErrorActionPreference = 'Stop'\n"
        "$ProgressPreference = 'SilentlyContinue'\n"
        "$env:COMPOSE_PROJECT_NAME = 'shop web'\n"
        "Set-Location -LiteralPath 'C:\\Users\\deploy\\stella\\web'\n"
        "& 'podman-compose' '-f' 'it''s \u2018\u2018quoted\u2019\u2019.yml' 'up' '-d' "
        "'$(Remove-Item C:\\)'\n"
        "exit $LASTEXITCODE"
    ]
    assert standin.actions == SHELL_SEQUENCE


def test_a_failing_command_gives_its_exit_code_and_error_text(standin: WinrmStandin) -> None:
    clixml = (
        b'#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/'
        b'2004/04"><S S="Error">podman-compose : not recognized &amp; more_x000D__x000A_</S>'
        b"</Objs>"
    )
    standin.answer = lambda script: Answer(1, b"", clixml)
    result = basic_host(standin).run(["podman-compose", "version"])
    assert result.exit_code == 1
    assert result.stderr == "podman-compose : not recognized & more\n"


def test_a_command_past_its_timeout_is_terminated(standin: WinrmStandin) -> None:
    standin.answer = lambda script: HANG
    with pytest.raises(CommandTimeoutError, match="did not finish within 1 s"):
        basic_host(standin).run(["ping", "-t", "localhost"], timeout=1)
    # The command was told to stop and the shell closed.
    assert standin.actions[-2:] == ["Signal", "Delete"]


def test_files_go_in_chunks_to_a_temporary_file_then_move_over(standin: WinrmStandin) -> None:
    data = bytes(range(256)) * 16  # 4096 bytes: three chunks
    basic_host(standin).write_file("C:\\stella\\web\\compose.stella.lock.yml", data)
    assert len(standin.scripts) == 3
    received = b"".join(
        base64.b64decode(re.search(r"FromBase64String\('([^']*)'\)", s).group(1))
        for s in standin.scripts
    )
    assert received == data
    temps = {re.search(r"\$t = '([^']*)'", s).group(1) for s in standin.scripts}
    (temp,) = temps
    assert re.fullmatch(r"C:\\stella\\web\\compose\.stella\.lock\.yml\.[0-9a-f]{12}\.tmp", temp)
    assert "CreateDirectory" in standin.scripts[0]
    assert "[IO.FileMode]::Create" in standin.scripts[0]
    assert all("[IO.FileMode]::Append" in s for s in standin.scripts[1:])
    assert all("Move-Item" not in s for s in standin.scripts[:-1])
    assert standin.scripts[-1].endswith("Move-Item -LiteralPath $t -Destination $p -Force\n")


def test_files_are_read_back_or_missing(standin: WinrmStandin) -> None:
    sticker = b'{"release": "shop-2026.11.1"}'
    answers = {
        "present": Answer(0, base64.b64encode(sticker) + b"\r\n"),
        "absent": Answer(3),
        "huge": Answer(4),
    }
    standin.answer = lambda script: next(a for k, a in answers.items() if k in script)
    host = basic_host(standin)
    assert host.read_file("C:\\stella\\present\\stella.version.json") == sticker
    assert "Test-Path -LiteralPath $p -PathType Leaf" in standin.scripts[0]
    assert host.read_file("C:\\stella\\absent\\stella.version.json") is None
    with pytest.raises(HostError, match="larger than 1024 bytes"):
        host.read_file("C:\\stella\\huge\\stella.version.json", limit=1024)


# ---------------------------------------------------------------------------------- refusals
def test_a_certificate_from_an_untrusted_ca_is_refused_by_default(
    standin: WinrmStandin, tmp_path: Path
) -> None:
    errors = []
    # No CA given: the system's store, which does not hold the stand-in's CA.
    plain = WinrmHost(standin.url, USER, PASSWORD, transport="basic")
    other = tmp_path / "other-ca.pem"
    from cryptography.hazmat.primitives import serialization

    other.write_bytes(make_ca("another CA")[1].public_bytes(serialization.Encoding.PEM))
    for host in (
        plain,
        WinrmHost(standin.url, USER, PASSWORD, transport="basic", ca_file=str(other)),
    ):
        with pytest.raises(HostError, match="TLS certificate is not trusted") as caught:
            host.run(["hostname"])
        assert not caught.value.retryable
        errors.append(str(caught.value))
    # The handshake failed: no request, so no password, ever reached the server.
    assert standin.requests == 0
    assert all(PASSWORD not in e for e in errors)


def test_basic_over_plain_http_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    http = WinrmStandin(tmp_path, username=USER, password=PASSWORD, tls=False)
    try:
        with pytest.raises(HostError, match="allowed over https only") as caught:
            WinrmHost(http.url, USER, PASSWORD, transport="basic")
        assert PASSWORD not in str(caught.value)
        assert http.requests == 0
    finally:
        http.stop()


def test_a_wrong_password_is_refused_and_no_error_shows_a_password(
    standin: WinrmStandin,
) -> None:
    wrong = "Wrong-pa55-4c2a-never-shown"
    host = WinrmHost(standin.url, USER, wrong, transport="basic", ca_file=str(standin.ca_file))
    with pytest.raises(HostError, match=f"refused the credentials of {USER}") as caught:
        host.run(["hostname"])
    assert not caught.value.retryable
    for text in (str(caught.value), repr(caught.value), repr(host), host.description):
        assert wrong not in text
        assert PASSWORD not in text


def test_arguments_that_windows_would_mangle_are_refused() -> None:
    host = WinrmHost("https://127.0.0.1:1/wsman", USER, PASSWORD, transport="basic")
    with pytest.raises(HostError, match="double quote"):
        host.run(["cmd", 'a"b'])
    with pytest.raises(HostError, match="not an environment variable name"):
        host.run(["hostname"], env={"A;B": "x"})
    assert ps_quote("a'b\u2019c") == "'a''b\u2019\u2019c'"


def test_a_winrm_target_becomes_a_ready_host(standin: WinrmStandin) -> None:
    target = Target(
        id="00000000-0000-0000-0000-000000000001",
        name="win-1",
        environment="prod",
        type=TargetType.WINRM,
        directory="stella/win-1",
        url=standin.url,
        user=USER,
        auth=WinrmAuth.BASIC,
        ca_cert=standin.ca_pem,
        has_secret=True,
    )
    standin.answer = lambda script: Answer(0, b"WIN-1\r\n")
    host = host_for(target, PASSWORD)
    try:
        assert host.run(["hostname"]).stdout == "WIN-1\r\n"
    finally:
        host.close()
    with pytest.raises(HostError, match="reached through its agent edge-1"):
        host_for(target.model_copy(update={"type": TargetType.AGENT, "agent": "edge-1"}), None)
