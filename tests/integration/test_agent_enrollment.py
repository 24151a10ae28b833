"""Enrolling agents: a one-time token, a CSR, and a CA pinned by fingerprint, over real gRPC and
TLS on loopback against a real PostgreSQL. The agent is its own process where it matters.

The helpers here (a started gateway, an agent running in a thread) serve the other
test_agent_*.py files too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from stella_core.agents.daemon import Agent, AgentError, Backoff, enroll
from stella_core.agents.gateway import AgentGateway, open_gateway
from stella_core.agents.service import AgentService, enrollment_for
from stella_core.errors import AuthorizationError, IntegrityError
from tests.integration.test_cli import ok_json, stella
from tests.support.workflow_helpers import wait_until


class Shifted:
    """A clock `delta` away from the real one."""

    def __init__(self, delta: timedelta) -> None:
        self.delta = delta

    def now(self) -> datetime:
        return datetime.now(UTC) + self.delta


@dataclass
class Orchestra:
    """An admin's session, its orchestrator, and a started gateway on loopback."""

    admin: Any
    gateway: AgentGateway

    @property
    def orchestrator(self) -> Any:
        return self.admin.orchestrator

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.gateway.enroll_port}"

    def agents(self, who: Any = None) -> AgentService:
        session = who or self.admin
        orchestrator = self.orchestrator

        def authority() -> str:
            return enrollment_for(orchestrator).ca_fingerprint()

        return AgentService(session.db, session.tenancy, authority=authority)

    def token(self, name: str, **kw: Any) -> tuple[str, str]:
        issued = self.agents().create_token(name, **kw)
        return issued.token, issued.ca_fingerprint

    def enroll(self, name: str, state: Path) -> Any:
        token, fingerprint = self.token(name)
        return enroll(self.server, token, fingerprint, state, hostname="test-host")


@pytest.fixture
def orchestra(world) -> Iterator[Orchestra]:
    admin = world.open()
    gateway = open_gateway(admin.orchestrator, listen="127.0.0.1:0", link_listen="127.0.0.1:0")
    gateway.poll_seconds = 0.2
    gateway.start()
    yield Orchestra(admin, gateway)
    gateway.stop()


class RunningAgent:
    """An agent daemon in a thread of this process (so a test can give it a runner)."""

    def __init__(self, state: Path, **kw: Any) -> None:
        kw.setdefault("backoff", Backoff(tiers=((None, 0.1, 0.3),)))
        self.agent = Agent(state, **kw)
        self.stopper = threading.Event()
        self.thread = threading.Thread(target=self.agent.run, args=(self.stopper,), daemon=True)
        self.thread.start()

    def wait_linked(self, timeout: float = 20) -> None:
        assert self.agent.connected.wait(timeout), "the agent did not link"

    def close(self) -> None:
        self.stopper.set()
        self.agent.close()
        self.thread.join(10)


def agent_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60):
    return subprocess.run(
        [sys.executable, "-m", "stella_core.agents.daemon", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


def agents_json(world) -> list[dict[str, Any]]:
    return ok_json(world.env(), "agent", "list", "--output", "json")


# ------------------------------------------------------------------------- the contract path
def test_an_agent_process_enrolls_with_a_token_links_and_is_cut_when_revoked(
    orchestra: Orchestra, world, tmp_path: Path
) -> None:
    env = world.env()
    created = ok_json(
        env,
        "agent",
        "token",
        "create",
        "--name",
        "edge-1",
        "--label",
        "site=lab",
        "--ttl",
        "2h",
        "--output",
        "json",
    )
    assert set(created) == {"token", "expires_at", "ca_fingerprint"}
    assert created["ca_fingerprint"] == orchestra.gateway.enrollment.ca_fingerprint()
    # Stored hashed: the token itself is nowhere in the database.
    with orchestra.orchestrator.db.transaction() as conn:
        hashes = conn.execute(text("SELECT token_hash FROM agent.tokens")).scalars().all()
    assert created["token"] not in hashes
    assert len(hashes) == 1

    state = tmp_path / "agent-state"
    enrolled = agent_cli(
        "enroll",
        "--server",
        orchestra.server,
        "--token",
        created["token"],
        "--ca-fingerprint",
        created["ca_fingerprint"],
        "--state-dir",
        str(state),
    )
    assert enrolled.returncode == 0, enrolled.stderr
    assert (state / "agent.key").stat().st_mode & 0o777 == 0o600
    assert (state / "agent.json").stat().st_mode & 0o777 == 0o600
    assert json.loads((state / "config.json").read_text()) == {"allow_commands": []}
    key_pem = (state / "agent.key").read_bytes()
    assert b"PRIVATE KEY" in key_pem

    (listed,) = agents_json(world)
    assert listed["name"] == "edge-1"
    assert listed["labels"] == {"site": "lab"}
    assert listed["status"] == "offline"
    assert listed["generation"] == 1
    # The bound key is the agent's own, which never left its directory.
    from cryptography.hazmat.primitives import serialization

    from stella_core.agents.authority import key_fingerprint

    private = serialization.load_pem_private_key(key_pem, None)
    with orchestra.orchestrator.db.transaction() as conn:
        bound = conn.execute(text("SELECT key_fingerprint FROM agent.agents")).scalar_one()
    assert bound == key_fingerprint(private.public_key())  # type: ignore[arg-type]

    run = subprocess.Popen(
        [sys.executable, "-m", "stella_core.agents.daemon", "run", "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ},
    )
    try:
        wait_until(lambda: agents_json(world)[0]["status"] == "online", timeout=30)
        online = agents_json(world)[0]
        assert online["last_heartbeat"] is not None
        assert orchestra.gateway.connected_agents() == [__import__("uuid").UUID(online["id"])]

        revoked = ok_json(env, "agent", "revoke", online["id"], "--output", "json")
        assert revoked["status"] == "revoked"
        # The live link is cut at once (within a poll), and the agent's next dial is refused.
        started = time.monotonic()
        wait_until(lambda: not orchestra.gateway.connected_agents(), timeout=5)
        assert time.monotonic() - started < 3
        with orchestra.orchestrator.db.transaction() as conn:
            kinds = conn.execute(text("SELECT kind FROM agent.events ORDER BY id")).scalars().all()
        assert kinds == ["enrolled", "revoked"]
    finally:
        run.terminate()
        output, _ = run.communicate(timeout=20)
    assert "revoked" in output
    assert "PRIVATE KEY" not in output


def test_a_token_is_single_use(orchestra: Orchestra, tmp_path: Path) -> None:
    token, fingerprint = orchestra.token("edge-2")
    enroll(orchestra.server, token, fingerprint, tmp_path / "a")
    with pytest.raises(AgentError, match="used already"):
        enroll(orchestra.server, token, fingerprint, tmp_path / "b")
    assert not (tmp_path / "b" / "agent.json").exists()
    assert [a.name for a in orchestra.agents().list()] == ["edge-2"]


def test_an_expired_token_is_refused(orchestra: Orchestra, tmp_path: Path) -> None:
    token, fingerprint = orchestra.token("edge-3", ttl=timedelta(hours=1))
    orchestra.gateway.enrollment.clock = Shifted(timedelta(hours=2))
    with pytest.raises(AgentError, match="expired"):
        enroll(orchestra.server, token, fingerprint, tmp_path / "a")
    assert orchestra.agents().list() == []


def test_a_made_up_token_is_refused(orchestra: Orchestra, tmp_path: Path) -> None:
    _, fingerprint = orchestra.token("edge-4")
    with pytest.raises(AgentError, match="not valid"):
        enroll(orchestra.server, "stella_enroll_guess", fingerprint, tmp_path / "a")


def test_a_wrong_ca_fingerprint_is_refused_before_the_token_is_sent(
    orchestra: Orchestra, tmp_path: Path
) -> None:
    token, fingerprint = orchestra.token("edge-5")
    wrong = ("0" if fingerprint[0] != "0" else "1") + fingerprint[1:]
    with pytest.raises(IntegrityError, match="not vouched for"):
        enroll(orchestra.server, token, wrong, tmp_path / "a")
    # The token was never presented: it still enrolls with the right pin.
    enroll(orchestra.server, token, fingerprint.upper(), tmp_path / "b")
    assert [a.name for a in orchestra.agents().list()] == ["edge-5"]


def test_the_cli_refuses_a_wrong_fingerprint_with_a_clear_message(
    orchestra: Orchestra, tmp_path: Path
) -> None:
    token, _ = orchestra.token("edge-6")
    result = agent_cli(
        "enroll",
        "--server",
        orchestra.server,
        "--token",
        token,
        "--ca-fingerprint",
        "ab" * 32,
        "--state-dir",
        str(tmp_path / "s"),
    )
    assert result.returncode != 0
    assert "not vouched for by the CA" in result.stderr
    assert token not in result.stderr


def test_only_admins_create_tokens_and_revoke(orchestra: Orchestra, world) -> None:
    from stella_core.tenancy.model import ProductRole

    orchestra.admin.add_person("rita", ProductRole.RELEASE_MANAGER)
    rita = world.open("rita")
    with pytest.raises(AuthorizationError):
        orchestra.agents(rita).create_token("edge-7")
    result = stella(world.env(), "--profile", "rita", "agent", "token", "create", "--name", "x")
    assert result.returncode == 1
    assert "needs admin" in result.stderr
