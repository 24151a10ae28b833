"""`stella serve --agent-listen HOST:PORT` runs the gateway; an agent process enrolls at that same
HOST:PORT, links, and links again by itself after the orchestrator restarts. Without the flag,
`stella serve` starts no gateway."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_agent_enrollment import agent_cli, agents_json
from tests.integration.test_cli import ok_json
from tests.support.registry import free_port
from tests.support.workflow_helpers import wait_until


def serve(world, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "stella_core.cli.main", "serve", "--workers", "1", *args],
        env=world.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return err


def test_serve_runs_the_gateway_and_an_agent_relinks_after_a_restart(
    world, tmp_path: Path, processes
) -> None:
    world.open()  # initialise the database and this home's profiles
    env = world.env()
    port, link = free_port(), free_port()
    listen = f"127.0.0.1:{port}"
    first = serve(world, "--agent-listen", listen, "--agent-link-listen", f"127.0.0.1:{link}")
    processes.append(first)
    wait_until(lambda: listening(port) and listening(link), timeout=60, what="the gateway")

    created = ok_json(env, "agent", "token", "create", "--name", "edge", "--output", "json")
    state = tmp_path / "agent"
    enrolled = agent_cli(
        "enroll",
        "--server",
        listen,
        "--token",
        created["token"],
        "--ca-fingerprint",
        created["ca_fingerprint"],
        "--state-dir",
        str(state),
    )
    assert enrolled.returncode == 0, enrolled.stderr
    agent = subprocess.Popen(
        [sys.executable, "-m", "stella_core.agents.daemon", "run", "--state-dir", str(state)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    processes.append(agent)
    wait_until(lambda: agents_json(world)[0]["status"] == "online", timeout=30, what="online")

    err = stop(first)
    assert "agent gateway: enrollment on 127.0.0.1" in err
    wait_until(lambda: agents_json(world)[0]["status"] == "offline", timeout=10, what="offline")
    # The same CA (its key sealed in this home) vouches for the restarted gateway.
    second = serve(world, "--agent-listen", listen, "--agent-link-listen", f"127.0.0.1:{link}")
    processes.append(second)
    wait_until(lambda: agents_json(world)[0]["status"] == "online", timeout=60, what="relinked")
    stop(second)


def test_serve_without_the_flag_starts_no_gateway(world, processes) -> None:
    world.open()
    proc = serve(world)
    processes.append(proc)
    wait_until(lambda: proc.stderr is not None, timeout=5)
    import time

    time.sleep(3)
    assert proc.poll() is None
    err = stop(proc)
    assert "agent gateway" not in err


def test_a_bad_listen_address_is_a_usage_error(world) -> None:
    world.open()
    result = subprocess.run(
        [sys.executable, "-m", "stella_core.cli.main", "serve", "--agent-listen", "nonsense"],
        env=world.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--agent-listen" in result.stderr
