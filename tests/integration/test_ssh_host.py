"""SshHost against the real OpenSSH sshd on loopback: commands with their arguments intact,
files written atomically over SFTP, and every refusal a deployer relies on (an unknown or
changed host key, a wrong client key, a command that hangs)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stella_core.deploy.hosts import CommandTimeoutError, HostError
from stella_core.deploy.ssh import HostKeyRejectedError, SshHost
from tests.support.registry import free_port
from tests.support.sshd import RunningSshd, keygen, start_sshd


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSshd]:
    running = start_sshd(
        tmp_path_factory.mktemp("sshd"), extra_env={"STELLA_PROBE": "set by sshd_config"}
    )
    yield running
    running.stop()


@pytest.fixture
def host(sshd: RunningSshd) -> Iterator[SshHost]:
    found = SshHost(sshd.host, sshd.port, sshd.user, sshd.client_key_pem, sshd.known_hosts)
    yield found
    found.close()


def fingerprint_of(pub_file: Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(pub_file)], capture_output=True, text=True, check=True
    ).stdout
    return out.split()[1]


def other_key(tmp_path: Path, name: str) -> Path:
    keygen(tmp_path / name)
    return tmp_path / name


# ---------------------------------------------------------------------------------- commands
def test_a_command_runs_with_its_arguments_intact(host: SshHost, sshd: RunningSshd) -> None:
    tricky = ["a b", "it's", "$HOME", "`id`", "; rm -rf /", "*"]
    result = host.run(["printf", "%s|", *tricky])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "".join(f"{t}|" for t in tricky)
    assert host.run(["id", "-un"]).stdout.strip() == sshd.user


def test_exit_code_environment_and_directory(host: SshHost, tmp_path: Path) -> None:
    failed = host.run(["sh", "-c", "echo oops >&2; exit 7"])
    assert (failed.exit_code, failed.stderr.strip()) == (7, "oops")
    seen = host.run(
        ["sh", "-c", 'echo "$GREETING"; echo "$STELLA_PROBE"; pwd'],
        env={"GREETING": "hello world; $(id)"},
        cwd=str(tmp_path),
    )
    assert seen.stdout.splitlines() == [
        "hello world; $(id)",
        "set by sshd_config",
        str(tmp_path),
    ]
    with pytest.raises(HostError, match="not an environment variable name"):
        host.run(["true"], env={"A=B; touch /tmp/x": "1"})


def test_a_command_past_its_timeout_fails_and_the_host_stays_usable(host: SshHost) -> None:
    started = time.monotonic()
    with pytest.raises(CommandTimeoutError, match="did not finish within 1 s") as caught:
        host.run(["sleep", "30"], timeout=1)
    assert time.monotonic() - started < 10
    assert caught.value.retryable
    assert host.run(["echo", "still here"]).stdout == "still here\n"


# ------------------------------------------------------------------------------------- files
def test_files_are_written_atomically_and_read_back(host: SshHost, tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "compose.stella.lock.yml"
    host.write_file(str(target), b"first\n", mode=0o600)
    assert target.read_bytes() == b"first\n"
    assert target.stat().st_mode & 0o777 == 0o600
    inode = target.stat().st_ino
    host.write_file(str(target), b"second\n")
    # A rename over the old file (a new inode), never a write into it: a reader sees the old
    # bytes or the new ones, never half of them.
    assert target.stat().st_ino != inode
    assert target.read_bytes() == b"second\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["compose.stella.lock.yml"]
    assert host.read_file(str(target)) == b"second\n"
    assert host.read_file(str(tmp_path / "missing.json")) is None
    with pytest.raises(HostError, match="larger than 4 bytes"):
        host.read_file(str(target), limit=4)


def test_relative_paths_are_in_the_logins_home(host: SshHost, sshd: RunningSshd) -> None:
    name = f"stella-test-{os.getpid()}-{time.monotonic_ns()}"
    home = Path(host.run(["sh", "-c", "echo $HOME"]).stdout.strip())
    try:
        host.write_file(f"{name}/a/stella.version.json", b"{}")
        assert (home / name / "a" / "stella.version.json").read_bytes() == b"{}"
        assert host.read_file(f"~/{name}/a/stella.version.json") == b"{}"
    finally:
        host.run(["rm", "-rf", str(home / name)])


# ---------------------------------------------------------------------------------- refusals
def test_an_unknown_host_key_is_refused_and_nothing_runs(sshd: RunningSshd, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    # known_hosts pins keys, but none for this host and port.
    stranger = other_key(tmp_path, "stranger").with_suffix(".pub").read_text().split()
    known = f"[127.0.0.1]:{free_port()} {stranger[0]} {stranger[1]}\n"
    host = SshHost(sshd.host, sshd.port, sshd.user, sshd.client_key_pem, known)
    with pytest.raises(HostKeyRejectedError) as caught:
        host.run(["touch", str(marker)])
    real = fingerprint_of(sshd.directory / "host_key.pub")
    message = caught.value.message
    assert f"[127.0.0.1]:{sshd.port}" in message
    assert real in message
    assert "does not pin" in message
    assert not caught.value.retryable
    assert not marker.exists()
    host.close()


def test_a_changed_host_key_is_refused(sshd: RunningSshd, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    impostor = other_key(tmp_path, "impostor").with_suffix(".pub").read_text().split()
    known = f"[127.0.0.1]:{sshd.port} {impostor[0]} {impostor[1]}\n"
    host = SshHost(sshd.host, sshd.port, sshd.user, sshd.client_key_pem, known)
    with pytest.raises(HostKeyRejectedError, match="differs from the one pinned") as caught:
        host.write_file(str(marker), b"x")
    assert fingerprint_of(sshd.directory / "host_key.pub") in caught.value.message
    assert fingerprint_of(tmp_path / "impostor.pub") in caught.value.message
    assert not marker.exists()


def test_a_wrong_client_key_is_refused_without_showing_it(
    sshd: RunningSshd, tmp_path: Path
) -> None:
    wrong = other_key(tmp_path, "wrong").read_text()
    host = SshHost(sshd.host, sshd.port, sshd.user, wrong, sshd.known_hosts)
    with pytest.raises(HostError, match=f"refused the key for {sshd.user}") as caught:
        host.run(["true"])
    assert not caught.value.retryable
    body = wrong.splitlines()[1]
    assert body not in str(caught.value)
    assert body not in repr(host)


def test_no_server_is_a_retryable_error(sshd: RunningSshd) -> None:
    port = free_port()
    known = sshd.known_hosts.replace(str(sshd.port), str(port))
    host = SshHost("127.0.0.1", port, sshd.user, sshd.client_key_pem, known, connect_timeout=3)
    where = f"\\[127.0.0.1\\]:{port}"
    with pytest.raises(HostError, match=f"could not connect to the SSH host {where}") as caught:
        host.run(["true"])
    assert caught.value.retryable
