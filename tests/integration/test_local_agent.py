"""This machine's own agent (the embedded default's) and the runtimes every agent reports.

Real parts: PostgreSQL, the agent gateway on loopback, the agent daemon (a thread for the local
agent, its own process for the one whose PATH lacks podman-compose), the CNCF registry.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy

from stella_core.agents.daemon import AgentError, AgentState, local_runtimes
from stella_core.agents.gateway import open_gateway
from stella_core.agents.local import (
    LOCAL_AGENT,
    LocalAgent,
    enroll_local,
    ensure_local_agent,
    local_agent_dir,
    local_runtime,
    search_path,
)
from stella_core.agents.service import AgentService, enrollment_for
from stella_core.demo import seed as demo_seed
from stella_core.demo.seed import seed
from stella_core.errors import AuthorizationError, DatabaseError
from stella_core.promotions.model import PromotionStatus
from stella_core.releases.model import ComponentPin
from stella_core.tenancy.model import ProductRole
from tests.integration.test_cli import ok_json
from tests.integration.test_cli import stella as stella_cli
from tests.support.containers import Podman, podman_fixture
from tests.support.images import push_busybox_image
from tests.support.registry import RunningRegistry
from tests.support.workflow_helpers import wait_until

__all__ = ["podman_fixture"]

SHIP = {
    "schema_version": 1,
    "name": "ship",
    "version": 1,
    "description": "deploy the release to the environment's targets",
    "inputs": {},
    "nodes": [
        {"id": "deploy", "type": "deploy", "name": "Deploy", "inputs": {}, "timeout_seconds": 120}
    ],
    "edges": [],
}


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def agents_of(stella) -> AgentService:
    orchestrator = stella.orchestrator
    return AgentService(
        stella.db, stella.tenancy, authority=lambda: enrollment_for(orchestrator).ca_fingerprint()
    )


def test_the_local_agent_is_enrolled_once_by_an_admin_and_links_reporting_its_runtimes(
    world,
) -> None:
    admin = world.open()
    admin.add_person("alice", ProductRole.RELEASE_MANAGER)
    alice = world.open("alice")
    state_dir = local_agent_dir(world.home)

    # Only an admin may make its token: a release manager's start enrolls nothing.
    with pytest.raises(AuthorizationError):
        enroll_local(alice)
    assert ensure_local_agent(alice) is False
    assert not (state_dir / "agent.json").exists()

    assert enroll_local(admin) is True
    state = AgentState.load(state_dir)
    assert state.name == LOCAL_AGENT
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((state_dir / "agent.key").stat().st_mode) == 0o600
    assert state.trusted  # the orchestrator key tasks are checked against
    key_before = (state_dir / "agent.key").read_bytes()

    # Idempotent: nothing changes, for the admin or anyone else.
    assert enroll_local(admin) is False
    assert ensure_local_agent(alice) is True
    assert (state_dir / "agent.key").read_bytes() == key_before
    assert [a.name for a in agents_of(admin).list()] == [LOCAL_AGENT]

    # A release manager's desk starts the agent enrolled before: it links over mutual TLS.
    local = LocalAgent(alice.orchestrator, state_dir)
    local.start()
    enroll_port, link_port = local.gateway.enroll_port, local.gateway.link_port
    try:
        agents = agents_of(admin)
        # Its hello (which says the runtimes) follows the link's opening.
        wait_until(lambda: agents.get(LOCAL_AGENT).runtimes is not None, timeout=30, what="hello")
        assert agents.get(LOCAL_AGENT).connected
        reported = agents.get(LOCAL_AGENT).runtimes
        assert reported == tuple(local_runtimes(path=search_path()))
        if (Path(sys.executable).parent / "podman-compose").exists():
            # podman-compose from PyPI beside the desk's Python counts, on PATH or not.
            assert "podman-compose" in reported
        listed = ok_json(world.env(), "agent", "list", "--output", "json")
        [row] = listed
        assert row["name"] == LOCAL_AGENT
        assert row["status"] == "online"
        assert row["runtimes"] == list(reported)
        assert {"id", "labels", "last_heartbeat"} <= set(row)
    finally:
        began = time.monotonic()
        local.stop()
        stopping = time.monotonic() - began
    assert stopping < 3  # the desk's quit waits for this
    assert not local.running
    assert refused(enroll_port)
    assert refused(link_port)


def test_a_local_agent_that_cannot_start_closes_its_gateway_and_says_why(
    world, tmp_path: Path
) -> None:
    admin = world.open()
    local = LocalAgent(admin.orchestrator, tmp_path / "never-enrolled")
    with pytest.raises(AgentError, match="holds no enrolled agent"):
        local.start()
    assert local.gateway is None
    assert not local.running
    assert local.ports is not None  # it listened, then let go
    assert refused(local.ports[0])
    assert refused(local.ports[1])


def test_runtimes_are_kept_to_known_names_and_written_by_the_orchestrator_only(world) -> None:
    admin = world.open()
    assert enroll_local(admin) is True
    agent_id = AgentState.load(local_agent_dir(world.home)).agent_id
    enrollment = enrollment_for(admin.orchestrator)
    # What an agent says is untrusted: unknown names are dropped, the order is ours.
    enrollment.connected(agent_id, "box", "0.1.0", ["docker", "rm -rf /", "podman", "docker"])
    assert agents_of(admin).get(LOCAL_AGENT).runtimes == ("podman", "docker")
    # A person, even an admin, cannot say what an agent runs.
    update = sqlalchemy.text("UPDATE agent.agents SET runtimes = ARRAY['podman-compose']")
    with (
        pytest.raises(AuthorizationError, match="only the orchestrator"),
        admin.db.transaction() as conn,
    ):
        conn.execute(update)
    # Nor can the orchestrator store a name the database does not know.
    unknown = sqlalchemy.text("UPDATE agent.agents SET runtimes = ARRAY['nerdctl']")
    with (
        pytest.raises(DatabaseError, match="agents_runtimes_check"),
        admin.orchestrator.db.transaction() as conn,
    ):
        conn.execute(unknown)
    assert agents_of(admin).get(LOCAL_AGENT).runtimes == ("podman", "docker")


def test_a_lost_local_state_is_enrolled_again_and_the_old_agent_revoked(world) -> None:
    admin = world.open()
    assert enroll_local(admin) is True
    first = AgentState.load(local_agent_dir(world.home)).agent_id
    (local_agent_dir(world.home) / "agent.json").unlink()
    assert enroll_local(admin) is True
    second = AgentState.load(local_agent_dir(world.home)).agent_id
    assert second != first
    agents = agents_of(admin)
    assert agents.get(str(first)).revoked_at is not None
    assert agents.id_of(LOCAL_AGENT) == second


def test_demo_seed_gives_dev_the_local_target_once(world) -> None:
    admin = world.open()
    first = seed(admin)
    assert first["targets"] == ["local", "local-2", "local-3"]
    again = seed(admin)
    assert again["targets"] == []
    targets = {t.name: t for t in admin.environments.list_targets("dev")}
    assert sorted(targets) == ["local", "local-2", "local-3"]
    for target in targets.values():
        assert target.type.value == "agent"
        assert target.agent == LOCAL_AGENT
        assert target.runtime == local_runtime()
    # One agent, three compose projects in three folders.
    deploy = local_agent_dir(world.home) / "deploy"
    assert {n: t.directory for n, t in targets.items()} == {
        "local": str(deploy / "dev"),
        "local-2": str(deploy / "dev-local-2"),
        "local-3": str(deploy / "dev-local-3"),
    }
    assert [a.name for a in agents_of(admin).list()] == [LOCAL_AGENT]
    listed = ok_json(world.env(), "target", "list", "--output", "json")
    assert [t["name"] for t in listed] == ["local", "local-2", "local-3"]
    # Never linked yet: nothing is known to be missing.
    assert all(t["runtime_problem"] is None for t in listed)


def test_the_demo_promotion_workflow_is_valid_and_deploys() -> None:
    template = Path(demo_seed.__file__).with_name("templates") / "promote-web.json"
    result = stella_cli({**os.environ}, "workflow", "validate", str(template))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "valid"
    document = json.loads(template.read_text())
    assert [n["type"] for n in document["nodes"] if not n.get("rollback")] == [
        "approval",
        "deploy",
        "http-check",
        "notify",
    ]
    [deploy] = [n for n in document["nodes"] if n["type"] == "deploy"]
    # dev's three targets one at a time, each healthy before the next, a failure rolled back.
    assert deploy["inputs"] == {
        "environment": "${{ inputs.environment }}",
        "strategy": "rolling",
        "batch_size": 1,
        "rollback_on_failure": True,
    }
    deliver = json.loads((template.parent / "deliver.json").read_text())
    assert "deploy" not in {n["type"] for n in deliver["nodes"]}  # the seed's history plays it


def test_a_target_whose_agent_lacks_its_runtime_says_so_and_its_deploy_fails_in_one_sentence(
    world, registry: RunningRegistry, tmp_path: Path
) -> None:
    admin = world.open()
    admin.add_person("alice", ProductRole.RELEASE_MANAGER)
    alice = world.open("alice")
    image = push_busybox_image(registry.url, "bare/web", "1.0", variant="bare-1")
    admin.releases.add_registry("local", registry.url, insecure=True)
    alice.releases.add_component("web", "local/bare/web", service={"network_mode": "none"})
    alice.workflows.import_template(SHIP)
    admin.environments.add("dev", order=0, workflow="ship")

    gateway = open_gateway(admin.orchestrator, listen="127.0.0.1:0", link_listen="127.0.0.1:0")
    gateway.poll_seconds = 0.2
    gateway.start()
    token = agents_of(admin).create_token("bare")
    state = tmp_path / "agent"
    server = f"127.0.0.1:{gateway.enroll_port}"
    daemon = [sys.executable, "-m", "stella_core.agents.daemon"]
    # Podman is in /usr/bin; podman-compose only in the virtual environment, not on this PATH.
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(tmp_path)}
    enrolled = subprocess.run(
        [
            *daemon,
            *("enroll", "--server", server, "--token", token.token),
            *("--ca-fingerprint", token.ca_fingerprint, "--state-dir", str(state)),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert enrolled.returncode == 0, enrolled.stderr
    agent = subprocess.Popen(
        [*daemon, "run", "--state-dir", str(state)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "agent.log", "wb"),  # noqa: SIM115 (closed with the process)
    )
    try:
        admin.environments.add_target(
            "bare", environment="dev", type="agent", agent="bare", runtime="podman-compose"
        )
        agents = agents_of(admin)
        wait_until(lambda: agents.get("bare").runtimes is not None, timeout=30, what="hello")
        assert "podman-compose" not in agents.get("bare").runtimes

        listed = ok_json(world.env(), "target", "list", "--output", "json")
        [row] = listed
        assert row["runtime_problem"] == (
            "podman-compose is not installed on the machine of agent bare"
        )
        assert {"name", "environment", "type", "agent", "runtime", "directory"} <= set(row)
        [agent_row] = ok_json(world.env(), "agent", "list", "--output", "json")
        assert "podman-compose" not in agent_row["runtimes"]

        alice.releases.create_release("bare-1", [ComponentPin(component="web", tag="1.0")])
        promotion = alice.promotions.request("bare-1", "dev", "try it")
        assert promotion.run_id is not None
        run = alice.workflows.wait_run(promotion.run_id, timeout=180)
        assert alice.promotions.get(promotion.id).status is PromotionStatus.FAILED
        [step] = [s for s in run.steps if s.id == "deploy"]
        assert step.error == "target bare: podman-compose is not installed on this machine"
        assert image.digest  # pushed: the failure is the runtime, not the image
    finally:
        agent.terminate()
        agent.wait(10)
        gateway.stop()


def test_promote_web_runs_the_release_by_digest_on_this_machine_through_the_local_agent(
    world, registry: RunningRegistry, podman: Podman, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The agent's commands start from this process's environment: the session's podman config.
    for name, value in podman.env.items():
        monkeypatch.setenv(name, value)
    admin = world.open()
    seed(admin)  # people, environments, promote-web, and dev's targets `local`, `local-2`, …
    for other in ("local-2", "local-3"):
        admin.environments.remove_target(other)  # one target is all this test needs
    [target] = admin.environments.list_targets("dev")
    assert target.runtime == "podman-compose"
    image = push_busybox_image(registry.url, "here/probe", "1.0", variant="here-1")
    admin.releases.add_registry("lab", registry.url, insecure=True)
    alice = world.open("alice")
    alice.releases.add_component("probe", "lab/here/probe", service={"network_mode": "none"})
    release = alice.releases.create_release("here-1", [ComponentPin(component="probe", tag="1.0")])
    assert release.components[0].digest == image.digest

    local = LocalAgent(admin.orchestrator, local_agent_dir(world.home))
    local.start()
    try:
        agents = agents_of(admin)
        wait_until(lambda: agents.get(LOCAL_AGENT).runtimes is not None, timeout=30, what="hello")
        [row] = ok_json(world.env(), "target", "list", "--output", "json")
        assert row["runtime_problem"] is None
        # A deploy step deploys only what a promotion decided: dev promotes with promote-web.
        admin.environments.set("dev", workflow="promote-web", reason="deploy here")
        promotion = alice.promotions.request("here-1", "dev", "ship it here")
        assert promotion.run_id is not None
        run = alice.workflows.wait_run(promotion.run_id, timeout=240)
        done = alice.workflows.get_run(run.id)
        steps = {s.id: s for s in done.steps}
        assert done.status == "succeeded", {k: (s.status, s.error) for k, s in steps.items()}
        assert steps["check_web"].status == "skipped"  # no health URL given
        [deployed] = steps["deploy"].outputs["targets"]
        assert deployed == {
            "target": "local",
            "status": "succeeded",
            "digests": {"probe": image.digest},
        }
        listed = podman.run(
            "ps", "--filter", "label=io.podman.compose.project=stella-dev-local", "--format", "json"
        )
        [container] = json.loads(listed.stdout)
        inspected = json.loads(podman.run("inspect", container["Id"]).stdout)[0]
        assert inspected["ImageDigest"] == image.digest
        folder = Path(target.directory)
        assert (
            f"here/probe@{image.digest}".encode()
            in (folder / "compose.stella.lock.yml").read_bytes()
        )
        assert (folder / "stella.version.json").exists()
    finally:
        local.stop()
        ids = podman.run(
            "ps", "-aq", "--filter", "label=io.podman.compose.project=stella-dev-local"
        )
        for cid in ids.stdout.split():
            podman.run("rm", "-f", cid, check=False)
