"""`stella rollback`: back to the newest release every target still holds, as a promotion.

The real thing: PostgreSQL, the CNCF registry, rootful podman + podman-compose, an agent process
enrolled with a one-time token and linked over mutual TLS, and OpenSSH's sshd. Three releases
differ by their web image's digest; which one runs is read back from podman itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from stella_core.agents.gateway import AgentGateway, open_gateway
from stella_core.agents.service import AgentService, enrollment_for
from stella_core.deploy.sticker import sticker_history, verify_sticker
from stella_core.evidence.predicates import ROLLBACK_V1
from stella_core.promotions.model import PromotionStatus
from stella_core.releases.model import ComponentPin
from stella_core.tenancy.model import ProductRole
from tests.integration.test_cli import ok_json
from tests.integration.test_cli import stella as stella_cli
from tests.integration.test_deploy_e2e import (
    WORKFLOW,
    _agent_process,
    orchestrator_keys,
    running_digests,
)
from tests.integration.test_evidence_cli import auditor_env
from tests.integration.test_promotions import role_conn
from tests.support.containers import Podman, podman_fixture
from tests.support.images import push_busybox_image
from tests.support.registry import RunningRegistry
from tests.support.sshd import RunningSshd, start_sshd
from tests.support.workflow_helpers import wait_until

__all__ = ["podman_fixture"]

PROJECTS = {"edge": "stella-prod-edge", "box": "stella-prod-box"}
# The deploy workflow, told whether it carries out a rollback (its `kind` input).
SHIP = {
    **WORKFLOW,
    "inputs": {"kind": {"type": "string", "default": "promotion"}},
    "nodes": [
        WORKFLOW["nodes"][0],
        {
            "id": "announce",
            "type": "notify",
            "name": "Announce",
            "inputs": {"message": "${{ inputs.kind }} deployed"},
        },
    ],
}


@dataclass
class Estate:
    admin: Any
    alice: Any  # release manager: requests promotions and rollbacks
    bob: Any  # approver
    world: Any
    gateway: AgentGateway
    agent: subprocess.Popen[bytes]
    sshd: RunningSshd
    podman: Podman
    dirs: dict[str, Path]
    releases: dict[str, dict[str, str]]  # name -> component digests

    def add_target(self, name: str) -> None:
        if name == "edge":
            self.admin.environments.add_target(
                "edge",
                environment="prod",
                type="agent",
                agent="edge-1",
                directory=str(self.dirs[name]),
            )
        else:
            self.admin.environments.add_target(
                "box",
                environment="prod",
                type="ssh",
                host=self.sshd.host,
                port=self.sshd.port,
                user=self.sshd.user,
                private_key=self.sshd.client_key_pem,
                known_hosts=self.sshd.known_hosts,
                directory=str(self.dirs[name]),
            )

    def deploy(self, release: str) -> None:
        """Promote `release` to prod the ordinary way (bob approves) and wait for its run."""
        promotion = self.alice.promotions.request(release, "prod", f"ship {release}")
        if promotion.status is PromotionStatus.AWAITING_APPROVAL:
            promotion = self.bob.promotions.approve(promotion.id, "ok")
        assert promotion.run_id is not None, promotion.to_json()
        self.alice.workflows.wait_run(promotion.run_id, timeout=240)
        done = self.alice.promotions.get(promotion.id)
        assert done.status is PromotionStatus.DEPLOYED, done.to_json()

    def holdings(self, target: str) -> list[tuple[str, dict[str, str]]]:
        raw = (self.dirs[target] / "stella.version.json").read_bytes()
        check = verify_sticker(raw, orchestrator_keys(self.admin))
        assert check.ok, check.reason
        assert check.sticker is not None
        return sticker_history(check.sticker)

    def cli(self, person: str, *args: str) -> subprocess.CompletedProcess[str]:
        return stella_cli(self.world.env(), "--profile", person, *args)


def _estate(
    world, registry: RunningRegistry, podman: Podman, tmp_path: Path, approvals: int
) -> Iterator[Estate]:
    admin = world.open()
    admin.add_person("alice", ProductRole.RELEASE_MANAGER)
    admin.add_person("bob", ProductRole.APPROVER)
    alice = world.open("alice")
    bob = world.open("bob")
    admin.releases.add_registry("local", registry.url, insecure=True)
    for name in ("web", "worker"):
        alice.releases.add_component(
            name,
            f"local/rb/{name}",
            service={"network_mode": "none", "environment": {"ROLE": name}},
        )
    push_busybox_image(registry.url, "rb/worker", "1", variant="worker-1")
    releases: dict[str, dict[str, str]] = {}
    for n in (1, 2, 3):
        # Each release runs another web image (its own digest); the worker stays the same.
        push_busybox_image(registry.url, "rb/web", str(n), variant=f"web-{n}")
        made = alice.releases.create_release(
            f"r{n}",
            [
                ComponentPin(component="web", tag=str(n), digest=None),
                ComponentPin(component="worker", tag="1", digest=None),
            ],
        )
        releases[made.name] = {c.name: c.digest for c in made.components}
    assert len({d["web"] for d in releases.values()}) == 3
    alice.workflows.import_template(SHIP)
    admin.environments.add(
        "prod",
        order=0,
        workflow="ship",
        required_approvals=approvals,
        separation_of_duties=approvals > 0,
    )
    # Releases deployed to prod go on to `later` by themselves (it has no workflow to run).
    admin.environments.add("later", order=1, auto_promote_from="prod")

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
    wait_until(lambda: agents.get("edge-1").connected, timeout=30)
    yield Estate(admin, alice, bob, world, gateway, agent, sshd, podman, dirs, releases)
    agent.terminate()
    agent.wait(10)
    gateway.stop()
    sshd.stop()
    for project in PROJECTS.values():
        ids = podman.run("ps", "-aq", "--filter", f"label=io.podman.compose.project={project}")
        for cid in ids.stdout.split():
            podman.run("rm", "-f", cid, check=False)


@pytest.fixture
def estate(world, registry: RunningRegistry, podman: Podman, tmp_path: Path) -> Iterator[Estate]:
    yield from _estate(world, registry, podman, tmp_path, approvals=0)


@pytest.fixture
def guarded(world, registry: RunningRegistry, podman: Podman, tmp_path: Path) -> Iterator[Estate]:
    """prod needs one approval, never the requester's."""
    yield from _estate(world, registry, podman, tmp_path, approvals=1)


def rollback_packets(admin: Any) -> list[dict[str, Any]]:
    found = [p for p in admin.evidence.find() if p.predicate_type == ROLLBACK_V1]
    return [admin.evidence.get(p.id) for p in found]


def test_rollback_goes_back_to_the_newest_release_on_every_target_and_leaves_a_packet(
    estate: Estate, tmp_path: Path
) -> None:
    estate.add_target("edge")
    estate.add_target("box")
    for release in ("r1", "r2", "r3"):
        estate.deploy(release)
    r2, r3 = estate.releases["r2"], estate.releases["r3"]
    for target, project in PROJECTS.items():
        assert running_digests(estate.podman, project) == r3
        assert [name for name, _ in estate.holdings(target)] == ["r3", "r2", "r1"]

    result = estate.cli("alice", "rollback", "--env", "prod", "--reason", "r3 broke", "-o", "json")
    assert result.returncode == 0, result.stderr
    value = json.loads(result.stdout)
    assert (value["release"], value["status"]) == ("r2", "deployed")
    assert value["kind"] == "rollback"
    run = estate.alice.workflows.get_run(value["run_id"])
    announce = next(s for s in run.steps if s.id == "announce")
    assert announce.outputs["message"] == "rollback deployed"
    # Going back in prod sends nothing on: `later` got r1, r2 and r3 when they were deployed,
    # and no second r2.
    later = estate.alice.promotions.find(environment="later")
    assert sorted(p.release for p in later) == ["r1", "r2", "r3"]

    # What runs now is r2, by digest, on both targets; their stickers say so.
    for target, project in PROJECTS.items():
        assert running_digests(estate.podman, project) == r2
        assert estate.holdings(target)[0] == ("r2", r2)

    # The packet: the state before (each target's sticker), where it went, why, who, outcome.
    (packet,) = rollback_packets(estate.admin)
    assert packet["verified"] is True
    predicate = packet["statement"]["predicate"]
    digests = {c["name"]: "sha256:" + c["digest"]["sha256"] for c in predicate["to"]["components"]}
    assert (predicate["to"]["name"], digests) == ("r2", r2)
    assert predicate["from"]["name"] == "r3"
    assert [(b["target"], b["release"]) for b in predicate["before"]] == [
        ("box", "r3"),
        ("edge", "r3"),
    ]
    for before in predicate["before"]:
        assert {c["name"]: "sha256:" + c["digest"]["sha256"] for c in before["components"]} == r3
    assert (predicate["reason"], predicate["trigger"], predicate["actor"]) == (
        "r3 broke",
        "manual",
        "alice",
    )
    assert (predicate["status"], predicate["promotionId"]) == ("succeeded", value["promotion_id"])

    # It verifies offline, on an auditor's machine, with only the orchestrator's public key.
    env = estate.world.env()
    capsule = tmp_path / "rollback.tar"
    ok_json(
        env,
        "evidence",
        "export",
        "--promotion",
        value["promotion_id"],
        "--out",
        str(capsule),
        "-o",
        "json",
    )
    pem = tmp_path / "orchestrator.pem"
    assert stella_cli(env, "keys", "export", "--out", str(pem)).returncode == 0
    auditor = auditor_env(tmp_path)
    verified = ok_json(
        auditor, "evidence", "verify", str(capsule), "--trusted-key", str(pem), "-o", "json"
    )
    assert verified["ok"] is True, verified["problems"]
    assert ok_json(auditor, "evidence", "replay", str(capsule), "-o", "json")["same"] is True

    # --to a release every target holds: back to r1.
    result = estate.cli("alice", "rollback", "--env", "prod", "--to", "r1", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert (json.loads(result.stdout)["release"], json.loads(result.stdout)["status"]) == (
        "r1",
        "deployed",
    )
    for project in PROJECTS.values():
        assert running_digests(estate.podman, project) == estate.releases["r1"]


def test_rollback_picks_only_what_every_target_holds_and_refuses_naming_who_lacks_it(
    estate: Estate,
) -> None:
    # box ran r1 and r2; edge joined later: it never ran r2.
    estate.add_target("box")
    estate.deploy("r1")
    estate.deploy("r2")
    estate.add_target("edge")
    estate.deploy("r1")
    assert [n for n, _ in estate.holdings("box")] == ["r1", "r2"]
    assert [n for n, _ in estate.holdings("edge")] == ["r1"]

    refused = estate.cli("alice", "rollback", "--env", "prod", "-o", "json")
    assert refused.returncode == 2, refused.stderr
    assert "no earlier release is on every target of prod" in refused.stderr
    assert "edge holds r1" in refused.stderr
    refused = estate.cli("alice", "rollback", "--env", "prod", "--to", "r2", "-o", "json")
    assert refused.returncode == 2
    assert "release r2 is not on every target of prod: edge never ran it" in refused.stderr
    assert {p.kind for p in estate.alice.promotions.find(environment="prod")} == {"promotion"}

    # r3 to both: r2 is newer than r1, but only r1 is on both.
    estate.deploy("r3")
    result = estate.cli("alice", "rollback", "--env", "prod", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert (json.loads(result.stdout)["release"], json.loads(result.stdout)["status"]) == (
        "r1",
        "deployed",
    )
    for project in PROJECTS.values():
        assert running_digests(estate.podman, project) == estate.releases["r1"]

    # A sticker that no longer verifies: the rollback refuses and names the target.
    sticker = estate.dirs["box"] / "stella.version.json"
    sticker.write_bytes(sticker.read_bytes().replace(b'"r1"', b'"r2"', 1))
    refused = estate.cli("alice", "rollback", "--env", "prod", "-o", "json")
    assert refused.returncode == 2
    assert "target box: the sticker's signature does not match its content" in refused.stderr


def test_a_rollback_waits_for_an_approver_and_its_marker_cannot_be_forged(
    guarded: Estate,
) -> None:
    estate = guarded
    estate.add_target("edge")
    estate.add_target("box")
    for release in ("r1", "r2", "r3"):
        estate.deploy(release)

    result = estate.cli("alice", "rollback", "--env", "prod", "--reason", "bad r3", "-o", "json")
    assert result.returncode == 0, result.stderr
    value = json.loads(result.stdout)
    assert (value["release"], value["status"]) == ("r2", "awaiting_approval")
    for project in PROJECTS.values():  # nothing moved yet
        assert running_digests(estate.podman, project) == estate.releases["r3"]
    assert rollback_packets(estate.admin) == []

    # Its requester cannot approve it (separation of duties), the approver can.
    refused = estate.cli("alice", "approve", value["promotion_id"], "-o", "json")
    assert refused.returncode == 3
    assert "separation of duties" in refused.stderr
    approved = estate.cli("bob", "approve", value["promotion_id"], "-o", "json")
    assert approved.returncode == 0, approved.stderr
    assert json.loads(approved.stdout)["status"] == "deployed"
    for project in PROJECTS.values():
        assert running_digests(estate.podman, project) == estate.releases["r2"]
    (packet,) = rollback_packets(estate.admin)
    assert packet["verified"] is True
    assert packet["statement"]["predicate"]["actor"] == "alice"

    # Raw SQL as the release manager: no rollback marker on a release prod never ran, none
    # added to a promotion afterwards, and no state-before written in the orchestrator's name.
    estate.alice.releases.create_release(
        "r4",
        [
            ComponentPin(component="web", tag="1", digest=None),
            ComponentPin(component="worker", tag="1", digest=None),
        ],
    )
    person = role_conn(estate.world, "alice")
    person.commit()  # keep the tenant set through the rollbacks below
    with pytest.raises(psycopg.Error, match="was not deployed to all of them"):
        person.execute(
            "INSERT INTO promotion.promotions (tenant_id, release_id, environment, reason, kind)"
            " SELECT tenant_id, id, 'prod', 'forged', 'rollback' FROM release.releases"
            " WHERE name = 'r4'"
        )
    person.rollback()
    with pytest.raises(psycopg.Error):
        person.execute("UPDATE promotion.promotions SET kind = 'rollback' WHERE kind = 'promotion'")
    person.rollback()
    with pytest.raises(psycopg.Error):
        person.execute(
            "INSERT INTO promotion.rollbacks (tenant_id, promotion_id, environment, trigger_kind,"
            " before) SELECT tenant_id, id, environment, 'manual', '{}' FROM"
            " promotion.promotions WHERE kind = 'promotion' LIMIT 1"
        )
    person.rollback()
    # A legitimate rollback request by raw SQL is accepted, and is only a request: it waits
    # for an approver like any other.
    person.execute(
        "INSERT INTO promotion.promotions (tenant_id, release_id, environment, reason, kind)"
        " SELECT tenant_id, id, 'prod', 'by hand', 'rollback' FROM release.releases"
        " WHERE name = 'r3'"
    )
    person.commit()
    person.close()
    (by_hand,) = [
        p for p in estate.alice.promotions.find(environment="prod") if p.reason == "by hand"
    ]
    assert by_hand.kind == "rollback"
    decided = estate.admin.orchestrator.promotions.decide(by_hand.id)
    assert decided.status is PromotionStatus.AWAITING_APPROVAL
    counts = [p.kind for p in estate.alice.promotions.find(environment="prod")]
    assert counts.count("rollback") == 2
