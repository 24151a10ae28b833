"""Rollout strategies for real: rolling with a failing health check and its rollback, a canary
waiting for an approval its requester cannot give, and blue-green recording the live group.

Everything is the real thing, as in test_deploy_e2e: PostgreSQL, the CNCF registry, rootful
podman + podman-compose, agent processes enrolled over mutual TLS, OpenSSH's sshd. Health
checks are HTTP requests run on the targets (curl, through the agent or the SSH session)
against a server on loopback that the test tells which targets are healthy.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest

from stella_core.agents.gateway import AgentGateway, open_gateway
from stella_core.agents.service import AgentService, enrollment_for
from stella_core.deploy.service import DeployService
from stella_core.evidence.predicates import DEPLOYMENT_V1
from stella_core.promotions.model import ApprovalRefusedError, PromotionStatus
from stella_core.releases.model import ComponentPin
from stella_core.tenancy.model import ProductRole
from tests.integration.test_cli import stella as stella_cli
from tests.integration.test_deploy_e2e import _agent_process, running_digests
from tests.integration.test_promotions import role_conn
from tests.support.containers import Podman, podman_fixture
from tests.support.images import PushedImage, push_busybox_image
from tests.support.registry import RunningRegistry
from tests.support.sshd import RunningSshd, start_sshd
from tests.support.workflow_helpers import wait_until

__all__ = ["podman_fixture"]


class HealthServer:
    """Answers GET /<target> with the status the test set for that target (200 by default)."""

    def __init__(self) -> None:
        self.status: dict[str, int] = {}
        self.asked: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                target = self.path.strip("/")
                owner.asked.append(target)
                code = owner.status.get(target, 200)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{{target}}"

    def stop(self) -> None:
        self.server.shutdown()


@dataclass
class Estate:
    admin: Any
    alice: Any
    world: Any
    podman: Podman
    health: HealthServer
    images: dict[str, PushedImage]
    dirs: dict[str, Path]
    projects: list[str] = field(default_factory=list)


def _workflow(name: str, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "name": name,
        "version": 1,
        "description": "roll the release out",
        "inputs": {},
        "nodes": nodes,
        "edges": [{"from": a["id"], "to": b["id"]} for a, b in itertools.pairwise(nodes)],
    }


def _deploy_node(node_id: str = "deploy", **inputs: Any) -> dict[str, Any]:
    return {
        "id": node_id,
        "type": "deploy",
        "name": node_id,
        "inputs": inputs,
        "timeout_seconds": 600,
    }


def _enroll(admin: Any, gateway: AgentGateway, name: str, state: Path, env: dict[str, str]) -> Any:
    orchestrator = admin.orchestrator
    agents = AgentService(
        admin.db, admin.tenancy, authority=lambda: enrollment_for(orchestrator).ca_fingerprint()
    )
    token = agents.create_token(name)
    state.mkdir()
    enrolled = subprocess.run(
        [
            sys.executable,
            "-m",
            "stella_core.agents.daemon",
            "enroll",
            "--server",
            f"127.0.0.1:{gateway.enroll_port}",
            "--token",
            token.token,
            "--ca-fingerprint",
            token.ca_fingerprint,
            "--state-dir",
            str(state),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert enrolled.returncode == 0, enrolled.stderr
    process = _agent_process(state, "", env)
    wait_until(lambda: agents.get(name).connected, timeout=30)
    return process


@dataclass
class Setup:
    world: Any
    registry: RunningRegistry
    podman: Podman
    tmp: Path
    cleanup: list[Any] = field(default_factory=list)

    def estate(
        self,
        workflow: dict[str, Any],
        *,
        agents: tuple[str, ...] = (),
        ssh: tuple[str, ...] = (),
        groups: dict[str, str] | None = None,
        env_settings: dict[str, Any] | None = None,
        people: tuple[tuple[str, ProductRole], ...] = (),
    ) -> Estate:
        admin = self.world.open()
        admin.add_person("alice", ProductRole.RELEASE_MANAGER)
        for name, role in people:
            admin.add_person(name, role)
        alice = self.world.open("alice")
        health = HealthServer()
        self.cleanup.append(health.stop)
        images = {
            "1": push_busybox_image(self.registry.url, "ro/web", "1", variant="web-1"),
            "2": push_busybox_image(self.registry.url, "ro/web", "2", variant="web-2"),
        }
        admin.releases.add_registry("local", self.registry.url, insecure=True)
        alice.releases.add_component(
            "web",
            "local/ro/web",
            service={
                "network_mode": "none",
                "x-stella-health": {"url": health.url, "interval": 1, "timeout": 3},
            },
        )
        alice.workflows.import_template(workflow)
        admin.environments.add("dev", order=0, workflow=workflow["name"], **(env_settings or {}))
        dirs: dict[str, Path] = {}
        groups = groups or {}
        if agents:
            gateway = open_gateway(
                admin.orchestrator, listen="127.0.0.1:0", link_listen="127.0.0.1:0"
            )
            gateway.poll_seconds = 0.2
            gateway.start()
            self.cleanup.append(gateway.stop)
            for target in agents:
                process = _enroll(
                    admin, gateway, f"agent-{target}", self.tmp / target, self.podman.host_env
                )
                self.cleanup.insert(0, lambda p=process: (p.terminate(), p.wait(10)))
                dirs[target] = self.tmp / f"on-{target}"
                admin.environments.add_target(
                    target,
                    environment="dev",
                    type="agent",
                    agent=f"agent-{target}",
                    directory=str(dirs[target]),
                    group=groups.get(target),
                )
        if ssh:
            sshd: RunningSshd = start_sshd(
                self.tmp / "sshd",
                extra_env={**self.podman.env, "PATH": self.podman.host_env["PATH"]},
            )
            self.cleanup.append(sshd.stop)
            for target in ssh:
                dirs[target] = self.tmp / f"on-{target}"
                admin.environments.add_target(
                    target,
                    environment="dev",
                    type="ssh",
                    host=sshd.host,
                    port=sshd.port,
                    user=sshd.user,
                    private_key=sshd.client_key_pem,
                    known_hosts=sshd.known_hosts,
                    directory=str(dirs[target]),
                    group=groups.get(target),
                )
        estate = Estate(admin, alice, self.world, self.podman, health, images, dirs)
        estate.projects = [f"stella-dev-{t}" for t in dirs]
        self.cleanup.append(lambda: _remove_projects(self.podman, estate.projects))
        return estate


def _remove_projects(podman: Podman, projects: list[str]) -> None:
    for project in projects:
        ids = podman.run("ps", "-aq", "--filter", f"label=io.podman.compose.project={project}")
        for cid in ids.stdout.split():
            podman.run("rm", "-f", cid, check=False)


@pytest.fixture
def setup(world, registry: RunningRegistry, podman: Podman, tmp_path: Path) -> Iterator[Setup]:
    made = Setup(world, registry, podman, tmp_path)
    yield made
    for step in made.cleanup:
        with contextlib.suppress(Exception):  # cleanup goes on whatever one step says
            step()


def _release(estate: Estate, name: str, tag: str) -> dict[str, str]:
    release = estate.alice.releases.create_release(
        name, [ComponentPin(component="web", tag=tag, digest=None)]
    )
    return {c.name: c.digest for c in release.components}


def _step(estate: Estate, run_id: Any, node_id: str) -> Any:
    return next(s for s in estate.alice.workflows.get_run(run_id).steps if s.id == node_id)


# ----------------------------------------------------------------------------------- rolling
def test_a_rolling_deployment_stops_at_the_unhealthy_batch_and_rolls_back(setup: Setup) -> None:
    estate = setup.estate(
        _workflow(
            "roll",
            [_deploy_node(strategy="rolling", batch_size="25%", rollback_on_failure=True)],
        ),
        agents=("a-edge", "c-edge"),
        ssh=("b-box", "d-box"),
    )
    alice = estate.alice
    first = _release(estate, "r1", "1")
    second = _release(estate, "r2", "2")
    assert first != second

    promotion = alice.promotions.request("r1", "dev", "first")
    alice.workflows.wait_run(promotion.run_id, timeout=300)
    assert alice.promotions.get(promotion.id).status is PromotionStatus.DEPLOYED
    for target in ("a-edge", "b-box", "c-edge", "d-box"):
        assert running_digests(estate.podman, f"stella-dev-{target}") == first
    # Every target was asked for its health, from the target itself.
    assert set(estate.health.asked) == {"a-edge", "b-box", "c-edge", "d-box"}

    # r2: the third batch (c-edge, one target: 25% of four) never becomes healthy.
    estate.health.status["c-edge"] = 500
    estate.health.asked.clear()
    promotion = alice.promotions.request("r2", "dev", "second")
    run = alice.workflows.wait_run(promotion.run_id, timeout=300)
    assert alice.promotions.get(promotion.id).status is PromotionStatus.FAILED, run.to_json()
    step = _step(estate, promotion.run_id, "deploy")
    assert step.status == "failed"
    assert "c-edge" in (step.error or "")
    assert "500" in (step.error or "")

    # The rollout stopped there: d-box was never asked to run r2 ...
    assert "d-box" not in estate.health.asked
    # ... and every target it reached runs r1 again, by digest (podman says so).
    for target in ("a-edge", "b-box", "c-edge", "d-box"):
        assert running_digests(estate.podman, f"stella-dev-{target}") == first, target
    assert {t["target"]: t["status"] for t in step.outputs["targets"]} == {
        "a-edge": "rolled-back",
        "b-box": "rolled-back",
        "c-edge": "rolled-back",
    }

    with estate.admin.db.transaction() as conn:
        placed = DeployService.current_placements_in(conn, "dev")
        deployment = DeployService.deployments_in(conn, "dev")[0]
        history = DeployService.placements_in(
            conn, target_id=next(p.target_id for p in placed if p.target == "c-edge")
        )
    # The database says r1 should run everywhere, and says why.
    assert {p.target: p.release_name for p in placed} == {
        "a-edge": "r1",
        "b-box": "r1",
        "c-edge": "r1",
        "d-box": "r1",
    }
    assert (deployment.release_name, deployment.strategy, deployment.status) == (
        "r2",
        "rolling",
        "rolled-back",
    )
    assert [(p.release_name, p.status) for p in history[:3]] == [
        ("r1", "succeeded"),
        ("r2", "rolled-back"),
        ("r1", "succeeded"),
    ]
    # One deployment packet for r2, saying it was rolled back.
    packets = [p for p in estate.admin.evidence.find() if p.predicate_type == DEPLOYMENT_V1]
    predicates = [estate.admin.evidence.get(p.id)["statement"]["predicate"] for p in packets]
    rolled = [p for p in predicates if p["release"]["name"] == "r2"]
    assert len(rolled) == 1
    assert rolled[0]["status"] == "rolled_back"
    assert rolled[0]["strategy"] == "rolling"

    # Each target's progress and log lines are in its tasks' events, linked to the run.
    with estate.admin.db.transaction() as conn:
        tasks = DeployService.run_tasks_in(conn, promotion.run_id)
        events = DeployService.task_events_in(conn, [t.id for _, t in tasks])
    by_task = {t.id: t.target for _, t in tasks}
    progress = [(by_task[e["task_id"]], e["data"]) for e in events if e["kind"] == "progress"]
    assert ("c-edge", {"phase": "health", "healthy": False}) in [
        (t, {k: d.get(k) for k in ("phase", "healthy")}) for t, d in progress
    ]
    assert {t for t, d in progress if d.get("phase") == "rollback"} == {"a-edge", "b-box", "c-edge"}
    logs = " ".join(str(e["data"].get("line")) for e in events if e["kind"] == "log")
    assert "answered 500" in logs

    # The command line checks a target's health on demand: c-edge's check still fails.
    env = estate.world.env()
    shown = stella_cli(env, "target", "health", "a-edge", "--output", "json")
    assert shown.returncode == 0, shown.stderr
    value = json.loads(shown.stdout)
    assert value["healthy"] is True
    assert value["release"] == "r1"
    assert value["components"][0]["state"] == "running"
    shown = stella_cli(env, "target", "health", "c-edge", "--output", "json")
    assert shown.returncode == 1
    assert json.loads(shown.stdout)["components"][0]["http"]["status"] is None


# ------------------------------------------------------------------------------------ canary
def test_a_canary_waits_for_an_approval_its_requester_cannot_give(setup: Setup) -> None:
    estate = setup.estate(
        _workflow(
            "canary",
            [_deploy_node(strategy="canary", canary_percentages=[50, 100], canary_approval=True)],
        ),
        agents=("a-edge",),
        ssh=("b-box",),
        env_settings={"separation_of_duties": True, "approver_roles": ["approver"]},
        people=(("bob", ProductRole.APPROVER), ("carol", ProductRole.RELEASE_MANAGER)),
    )
    alice = estate.alice
    first = _release(estate, "r1", "1")
    promotion = alice.promotions.request("r1", "dev", "canary")
    assert promotion.run_id is not None

    # The run is driven here, in the background, as `stella run wait` would.
    driver = threading.Thread(
        target=alice.workflows.wait_run, args=(promotion.run_id,), kwargs={"timeout": 240}
    )
    driver.start()
    wait_until(lambda: _step(estate, promotion.run_id, "deploy").status == "waiting", timeout=180)
    # Rung 1 (half the targets: a-edge) runs r1; b-box waits for the approval.
    assert running_digests(estate.podman, "stella-dev-a-edge") == first
    assert running_digests(estate.podman, "stella-dev-b-box") == {}

    # The requester cannot let it go on, through the service or by raw SQL ...
    with pytest.raises(ApprovalRefusedError, match="separation of duties"):
        alice.promotions.approve_rung(promotion.id, 1)
    # ... nor someone the environment's policy does not name ...
    carol = estate.world.open("carol")
    with pytest.raises(ApprovalRefusedError, match="not eligible"):
        carol.promotions.approve_rung(promotion.id, 1)
    for name in ("alice", "carol"):
        person = role_conn(estate.world, name)
        with pytest.raises(psycopg.Error):
            person.execute(
                "INSERT INTO promotion.rung_approvals (tenant_id, promotion_id, rung, packet_id)"
                " SELECT tenant_id, id, 1, gen_random_uuid() FROM promotion.promotions"
            )
        person.rollback()
        person.close()
    # ... nor an eligible approver with a packet that is not theirs.
    bob_sql = role_conn(estate.world, "bob")
    with pytest.raises(psycopg.Error, match="approval packet"):
        bob_sql.execute(
            "INSERT INTO promotion.rung_approvals (tenant_id, promotion_id, rung, packet_id)"
            " SELECT p.tenant_id, p.id, 1, e.id FROM promotion.promotions p, evidence.packets e"
            " LIMIT 1"
        )
    bob_sql.rollback()
    bob_sql.close()
    time.sleep(6)  # a resume or more: it parks again, nothing approved it
    assert _step(estate, promotion.run_id, "deploy").status == "waiting"
    assert running_digests(estate.podman, "stella-dev-b-box") == {}

    # An eligible approver can, from the command line; the canary goes on.
    shown = stella_cli(
        estate.world.env(),
        "--profile",
        "bob",
        "approve",
        str(promotion.id),
        "--rung",
        "1",
        "--output",
        "json",
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["approver"] == "bob"
    driver.join(240)
    run = alice.workflows.get_run(promotion.run_id)
    assert alice.promotions.get(promotion.id).status is PromotionStatus.DEPLOYED, run.to_json()
    assert running_digests(estate.podman, "stella-dev-b-box") == first
    assert running_digests(estate.podman, "stella-dev-a-edge") == first
    # Rung 1 ran once: its deploy task was answered from the queue on every resume.
    with estate.admin.db.transaction() as conn:
        tasks = [t for _, t in DeployService.run_tasks_in(conn, promotion.run_id)]
    deploys = [t.target for t in tasks if t.type == "deploy"]
    assert sorted(deploys) == ["a-edge", "b-box"]
    assert all(t.deliveries <= 1 for t in tasks if t.target == "a-edge")
    packets = [p for p in estate.admin.evidence.find() if p.predicate_type == DEPLOYMENT_V1]
    assert len(packets) == 1
    assert [a["approver"] for a in estate.admin.promotions.rung_approvals(promotion.id)] == ["bob"]


# -------------------------------------------------------------------------------- blue-green
def test_blue_green_deploys_to_the_idle_group_and_records_the_live_one(setup: Setup) -> None:
    groups = ["blue", "green"]
    estate = setup.estate(
        _workflow(
            "bluegreen",
            [
                _deploy_node(strategy="blue-green", groups=groups),
                {
                    "id": "switch",
                    "type": "notify",
                    "name": "Switch",
                    "inputs": {"message": "router now points at ${{ steps.deploy.outputs.group }}"},
                },
                _deploy_node("retire", strategy="blue-green", groups=groups, phase="retire"),
            ],
        ),
        ssh=("box-blue", "box-green"),
        groups={"box-blue": "blue", "box-green": "green"},
    )
    alice = estate.alice
    first = _release(estate, "r1", "1")
    second = _release(estate, "r2", "2")

    promotion = alice.promotions.request("r1", "dev", "blue first")
    run = alice.workflows.wait_run(promotion.run_id, timeout=240)
    assert alice.promotions.get(promotion.id).status is PromotionStatus.DEPLOYED, run.to_json()
    assert _step(estate, promotion.run_id, "deploy").outputs["group"] == "blue"
    assert running_digests(estate.podman, "stella-dev-box-blue") == first
    assert running_digests(estate.podman, "stella-dev-box-green") == {}
    with estate.admin.db.transaction() as conn:
        assert DeployService.live_group_in(conn, "dev") == "blue"

    promotion = alice.promotions.request("r2", "dev", "then green")
    run = alice.workflows.wait_run(promotion.run_id, timeout=240)
    assert alice.promotions.get(promotion.id).status is PromotionStatus.DEPLOYED, run.to_json()
    assert _step(estate, promotion.run_id, "deploy").outputs["group"] == "green"
    retire = _step(estate, promotion.run_id, "retire")
    assert (retire.outputs["live_group"], retire.outputs["stopped_group"]) == ("green", "blue")
    assert running_digests(estate.podman, "stella-dev-box-green") == second
    assert running_digests(estate.podman, "stella-dev-box-blue") == {}  # the old group stopped
    with estate.admin.db.transaction() as conn:
        assert DeployService.live_group_in(conn, "dev") == "green"

    # Nobody's own login says which group is live.
    person = role_conn(estate.world, "alice")
    with pytest.raises(psycopg.Error):
        person.execute(
            "INSERT INTO deploy.group_switches (tenant_id, environment, live_group,"
            " deployment_id) SELECT tenant_id, environment, 'blue', id FROM deploy.deployments"
            " LIMIT 1"
        )
    person.rollback()
    person.close()
