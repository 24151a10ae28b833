"""A promotion deploys for real: an environment with one agent target and one SSH target.

Everything is the real thing: PostgreSQL, the CNCF registry, rootful podman + runc +
podman-compose, an agent process enrolled with a one-time token and linked over mutual TLS, and
OpenSSH's sshd. The release's images are built here (deterministic busybox), pushed, and must
then run on both targets by digest; both stickers verify offline and a flipped byte does not.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from stella_core.agents.gateway import AgentGateway, open_gateway
from stella_core.agents.service import AgentService, enrollment_for
from stella_core.crypto.keys import PublicKey
from stella_core.deploy.service import DeployService
from stella_core.deploy.sticker import sticker_history, verify_sticker
from stella_core.evidence.predicates import DEPLOYMENT_V1
from stella_core.promotions.model import PromotionStatus
from stella_core.releases.model import ComponentPin
from stella_core.tenancy.model import ProductRole
from tests.integration.test_cli import stella as stella_cli
from tests.integration.test_promotions import role_conn
from tests.support.containers import Podman, podman_fixture
from tests.support.images import PushedImage, push_busybox_image
from tests.support.registry import RunningRegistry
from tests.support.sshd import RunningSshd, start_sshd
from tests.support.workflow_helpers import wait_until

__all__ = ["podman_fixture"]

WORKFLOW = {
    "schema_version": 1,
    "name": "ship",
    "version": 1,
    "description": "deploy the release to the environment's targets",
    "inputs": {},
    "nodes": [
        {"id": "deploy", "type": "deploy", "name": "Deploy", "inputs": {}, "timeout_seconds": 300},
        {
            "id": "announce",
            "type": "notify",
            "name": "Announce",
            "inputs": {"message": "deployed to ${{ size(steps.deploy.outputs.targets) }} targets"},
        },
    ],
    "edges": [{"from": "deploy", "to": "announce"}],
}


@dataclass
class Estate:
    admin: Any
    alice: Any
    world: Any
    gateway: AgentGateway
    agent: subprocess.Popen[bytes]
    sshd: RunningSshd
    podman: Podman
    images: dict[str, PushedImage]
    dirs: dict[str, Path]


def _agent_process(state: Path, server: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "stella_core.agents.daemon", "run", "--state-dir", str(state)],
        env=env,
        cwd=state,
        stdout=subprocess.DEVNULL,
        stderr=open(state / "agent.log", "wb"),
    )


@pytest.fixture
def estate(world, registry: RunningRegistry, podman: Podman, tmp_path: Path) -> Iterator[Estate]:
    admin = world.open()
    admin.add_person("alice", ProductRole.RELEASE_MANAGER)
    alice = world.open("alice")
    images = {
        "web": push_busybox_image(registry.url, "e2e/web", "1.0", variant="web-1"),
        "worker": push_busybox_image(registry.url, "e2e/worker", "1.0", variant="worker-1"),
    }
    admin.releases.add_registry("local", registry.url, insecure=True)
    for name in images:
        # No network at all: two targets on this one machine must not fight over a port.
        alice.releases.add_component(
            name,
            f"local/e2e/{name}",
            service={"network_mode": "none", "environment": {"ROLE": name}},
        )
    alice.workflows.import_template(WORKFLOW)
    admin.environments.add("dev", order=0, workflow="ship")

    gateway = open_gateway(admin.orchestrator, listen="127.0.0.1:0", link_listen="127.0.0.1:0")
    gateway.poll_seconds = 0.2
    gateway.start()
    orchestrator = admin.orchestrator
    agents = AgentService(
        admin.db, admin.tenancy, authority=lambda: enrollment_for(orchestrator).ca_fingerprint()
    )
    token = agents.create_token("edge-1")
    state = tmp_path / "agent"
    state.mkdir()
    server = f"127.0.0.1:{gateway.enroll_port}"
    enrolled = subprocess.run(
        [
            sys.executable,
            "-m",
            "stella_core.agents.daemon",
            "enroll",
            "--server",
            server,
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
    agent = _agent_process(state, server, podman.host_env)
    sshd = start_sshd(tmp_path / "sshd", extra_env={**podman.env, "PATH": podman.host_env["PATH"]})
    dirs = {"edge": tmp_path / "on-edge", "box": tmp_path / "on-box"}
    admin.environments.add_target(
        "edge", environment="dev", type="agent", agent="edge-1", directory=str(dirs["edge"])
    )
    admin.environments.add_target(
        "box",
        environment="dev",
        type="ssh",
        host=sshd.host,
        port=sshd.port,
        user=sshd.user,
        private_key=sshd.client_key_pem,
        known_hosts=sshd.known_hosts,
        directory=str(dirs["box"]),
    )
    wait_until(lambda: agents.get("edge-1").connected, timeout=30)
    yield Estate(admin, alice, world, gateway, agent, sshd, podman, images, dirs)
    agent.terminate()
    agent.wait(10)
    gateway.stop()
    sshd.stop()
    for project in ("stella-dev-edge", "stella-dev-box"):
        ids = podman.run("ps", "-aq", "--filter", f"label=io.podman.compose.project={project}")
        for cid in ids.stdout.split():
            podman.run("rm", "-f", cid, check=False)


def running_digests(podman: Podman, project: str) -> dict[str, str]:
    listed = podman.run(
        "ps", "--filter", f"label=io.podman.compose.project={project}", "--format", "json"
    )
    found = {}
    for container in json.loads(listed.stdout or "[]"):
        inspected = json.loads(podman.run("inspect", container["Id"]).stdout)[0]
        found[inspected["Config"]["Labels"]["stella.component"]] = inspected["ImageDigest"]
    return found


def orchestrator_keys(admin: Any) -> dict[str, PublicKey]:
    return {
        k.key_id: k.public_key
        for k in admin.evidence.signing_keys()
        if k.owner_kind == "orchestrator"
    }


def test_a_promotion_runs_the_release_by_digest_on_an_agent_and_an_ssh_target(
    estate: Estate,
) -> None:
    alice = estate.alice
    release = alice.releases.create_release(
        "e2e-1", [ComponentPin(component=c, tag="1.0", digest=None) for c in estate.images]
    )
    expected = {c.name: c.digest for c in release.components}
    assert expected == {name: image.digest for name, image in estate.images.items()}

    promotion = alice.promotions.request("e2e-1", "dev", "ship it")
    assert promotion.run_id is not None
    run = alice.workflows.wait_run(promotion.run_id, timeout=240)
    promotion = alice.promotions.get(promotion.id)
    assert promotion.status is PromotionStatus.DEPLOYED, (run.to_json(), promotion.to_json())

    # What runs on each target is the release, by digest.
    assert running_digests(estate.podman, "stella-dev-edge") == expected
    assert running_digests(estate.podman, "stella-dev-box") == expected

    # The step's output names each target and the digests found running there.
    step = next(s for s in alice.workflows.get_run(promotion.run_id).steps if s.id == "deploy")
    assert sorted(t["target"] for t in step.outputs["targets"]) == ["box", "edge"]
    assert all(t["status"] == "succeeded" for t in step.outputs["targets"])
    assert all(t["digests"] == expected for t in step.outputs["targets"])

    # The lockfile on each target pins every image by digest, and evidence names its digest.
    lockfile = (estate.dirs["edge"] / "compose.stella.lock.yml").read_bytes()
    assert lockfile == (estate.dirs["box"] / "compose.stella.lock.yml").read_bytes()
    for image in estate.images.values():
        assert f"{image.repository}@{image.digest}".encode() in lockfile
    packets = estate.admin.evidence.find()
    (deployment,) = [p for p in packets if p.predicate_type == DEPLOYMENT_V1]
    body = estate.admin.evidence.get(deployment.id)
    assert body["verified"] is True
    predicate = body["statement"]["predicate"]
    assert predicate["lockfile"]["digest"]["sha256"] == hashlib.sha256(lockfile).hexdigest()
    assert {t["name"]: t["status"] for t in predicate["targets"]} == {
        "box": "succeeded",
        "edge": "succeeded",
    }

    # Both stickers verify offline against the orchestrator's key, and name the packet.
    keys = orchestrator_keys(estate.admin)
    for target, folder in estate.dirs.items():
        raw = (folder / "stella.version.json").read_bytes()
        check = verify_sticker(raw, keys)
        assert check.ok, (target, check.reason)
        assert check.sticker is not None
        assert check.sticker["deployment"]["evidencePacketId"] == str(deployment.id)
        assert check.sticker["deployment"]["targetName"] == target
        assert {c["name"]: c["digest"] for c in check.sticker["release"]["components"]} == expected

    # The command line reads them back through the agent and over SSH.
    env = estate.world.env()
    for target in ("edge", "box"):
        shown = stella_cli(env, "target", "sticker", target, "--output", "json")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["signature_ok"] is True

    # A flipped byte in a sticker on the target is caught.
    sticker = estate.dirs["box"] / "stella.version.json"
    data = bytearray(sticker.read_bytes())
    at = data.index(b"e2e-1")
    data[at] ^= 0x01
    sticker.write_bytes(bytes(data))
    shown = stella_cli(env, "target", "sticker", "box", "--output", "json")
    assert shown.returncode == 1
    assert json.loads(shown.stdout)["signature_ok"] is False

    # People can read the tasks, each answered once.
    with estate.admin.db.transaction() as conn:
        tasks = conn.execute(
            text("SELECT target, type, status FROM deploy.tasks ORDER BY target, type")
        ).all()
    assert [(t, ty, st) for t, ty, st in tasks if ty != "read-sticker"] == [
        ("box", "deploy", "succeeded"),
        ("box", "write-sticker", "succeeded"),
        ("edge", "deploy", "succeeded"),
        ("edge", "write-sticker", "succeeded"),
    ]
    assert os.environ.get("STELLA_REQUIRE_SERVICES") != "1" or estate.agent.poll() is None

    # The database says what should run on each target: the placement of that deployment.
    with estate.admin.db.transaction() as conn:
        placed = DeployService.current_placements_in(conn, "dev")
        (recorded,) = DeployService.deployments_in(conn, "dev")
        steps = {n for n, _ in DeployService.run_tasks_in(conn, promotion.run_id)}
    assert {p.target: (p.release_name, p.digests) for p in placed} == {
        "box": ("e2e-1", expected),
        "edge": ("e2e-1", expected),
    }
    assert (recorded.status, recorded.packet_id, recorded.run_id) == (
        "succeeded",
        deployment.id,
        promotion.run_id,
    )
    assert steps == {"deploy"}  # the run's tasks name the step that wrote them

    # The next release's stickers remember the one before (rollback reads them).
    alice.releases.create_release(
        "e2e-2", [ComponentPin(component=c, tag="1.0", digest=None) for c in estate.images]
    )
    second = alice.promotions.request("e2e-2", "dev", "again")
    assert second.run_id is not None
    alice.workflows.wait_run(second.run_id, timeout=240)
    assert alice.promotions.get(second.id).status is PromotionStatus.DEPLOYED
    for target, folder in estate.dirs.items():
        check = verify_sticker((folder / "stella.version.json").read_bytes(), keys)
        assert check.ok, (target, check.reason)
        assert check.sticker is not None
        assert sticker_history(check.sticker) == [("e2e-2", expected), ("e2e-1", expected)]
    with estate.admin.db.transaction() as conn:
        assert {p.release_name for p in DeployService.current_placements_in(conn, "dev")} == {
            "e2e-2"
        }

    # Nobody's own login says what should run where: placements and deployments are the
    # orchestrator's to write, and an ended deployment stays as it ended.
    for name in (estate.admin.profile.name, alice.profile.name):
        person = role_conn(estate.world, name)
        with pytest.raises(psycopg.Error):
            person.execute(
                "INSERT INTO deploy.placements (tenant_id, deployment_id, target_id, target,"
                " environment, release_id, release_name, digests, lockfile_digest, status)"
                " SELECT tenant_id, deployment_id, target_id, target, environment, release_id,"
                " 'forged', digests, lockfile_digest, 'succeeded' FROM deploy.placements LIMIT 1"
            )
        person.rollback()
        assert person.execute("UPDATE deploy.deployments SET status = 'failed'").rowcount == 0
        person.close()
