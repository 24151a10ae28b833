"""The demo deploys for real on the embedded default: `stella demo seed`, then a promotion of the
newest demo release to dev runs its containers by digest on this machine, through the local
agent as the desk runs it, pulling from the demo's OCI layout served on loopback.

Real parts: PostgreSQL, the agent gateway and the local agent (a thread, as in the desk), the
layout server, rootful podman with runc and podman-compose (scratch config and storage; its
registries.conf does not list the demo registry, so the plain-HTTP pull on loopback is the
runner's own doing).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

import pytest

from stella_core.agents.local import (
    LOCAL_AGENT,
    LocalAgent,
    local_agent_dir,
    runtime_settings,
)
from stella_core.demo.images import NO_PROGRAM
from stella_core.demo.seed import DEMO_REGISTRY, RELEASES, seed
from stella_core.evidence.predicates import DEPLOYMENT_V1
from stella_core.promotions.model import PromotionStatus
from stella_core.releases.layout_server import served_layout
from tests.integration.test_deploy_e2e import orchestrator_keys, running_digests
from tests.integration.test_local_agent import agents_of
from tests.support.containers import Podman, podman_fixture
from tests.support.workflow_helpers import wait_until

__all__ = ["podman_fixture"]

PROJECT = "stella-dev-local"
# dev's three targets on this machine, each its own compose project.
PROJECTS = (PROJECT, "stella-dev-local-2", "stella-dev-local-3")


def remove_project(podman: Podman) -> None:
    for project in PROJECTS:
        ids = podman.run("ps", "-aq", "--filter", f"label=io.podman.compose.project={project}")
        for cid in ids.stdout.split():
            podman.run("rm", "-f", "-t", "2", cid, check=False)


def test_the_demo_promotion_to_dev_runs_the_newest_release_by_digest_on_this_machine(
    world, podman: Podman, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The agent's commands start from this process's environment: the session's podman config.
    for name, value in podman.env.items():
        monkeypatch.setenv(name, value)
    admin = world.open()
    summary = seed(admin, history=True)
    assert summary["workflows"] == ["dev: promote-web"]
    workflows = {e.name: e.workflow for e in admin.environments.list()}
    assert workflows == {"dev": "promote-web", "stage": "deliver", "prod": "deliver"}
    # The demo registry is the layout, served on the loopback port kept in STELLA_HOME.
    recorded = served_layout(world.home)
    assert recorded is not None
    assert recorded[0] == Path(summary["layout"])
    [registry] = [r for r in admin.releases.list_registries() if r.name == DEMO_REGISTRY]
    assert registry.url.rstrip("/") == f"http://127.0.0.1:{recorded[1]}"
    # Seeding twice changes nothing.
    again = seed(admin, history=True)
    assert (again["releases"], again["promotions"], again["workflows"]) == ([], [], [])
    assert served_layout(world.home) == recorded

    newest = RELEASES[-1][0]
    release = admin.releases.get_release(newest)
    expected = {c.name: c.digest for c in release.components}
    assert set(expected) == {"web", "api", "worker"}

    local = LocalAgent(admin.orchestrator, local_agent_dir(world.home))
    local.start()
    alice = world.open("alice")
    try:
        assert local.layout_server is not None
        assert local.layout_server.port == recorded[1]
        agents = agents_of(admin)
        wait_until(lambda: agents.get(LOCAL_AGENT).runtimes is not None, timeout=30, what="hello")
        promotion = alice.promotions.request(newest, "dev", "run it here")
        assert promotion.run_id is not None
        run_id = promotion.run_id

        # The promotion's decision is the run's approval: it goes straight on to deploy.
        run = alice.workflows.wait_run(run_id, timeout=240)
        promotion = alice.promotions.get(promotion.id)
        steps = {s.id: s for s in alice.workflows.get_run(run_id).steps}
        assert promotion.status is PromotionStatus.DEPLOYED, (
            run.to_json(),
            {k: (s.status, s.error) for k, s in steps.items()},
        )
        deployed = steps["deploy"].outputs["targets"]
        assert sorted(t["target"] for t in deployed) == ["local", "local-2", "local-3"]
        assert all(t["status"] == "succeeded" and t["digests"] == expected for t in deployed)

        # Running, by the release's digests, as podman itself says, on each of the three.
        for project in PROJECTS:
            assert running_digests(podman, project) == expected, project
        listed = json.loads(
            podman.run(
                "ps", "--filter", f"label=io.podman.compose.project={PROJECT}", "--format", "json"
            ).stdout
        )
        assert len(listed) == 3
        assert all(c["State"] == "running" for c in listed)
        logs = podman.run("logs", next(c["Id"] for c in listed if "web" in c["Names"][0]))
        assert "web 1.2.0 up" in logs.stdout + logs.stderr

        # Evidence of the deployment, and a sticker on this machine that verifies and names it.
        packets = [p for p in admin.evidence.find() if p.predicate_type == DEPLOYMENT_V1]
        assert len(packets) == 1
        (dest,) = admin.orchestrator.destinations(None, "local")
        reading = admin.orchestrator.deploy.read_sticker(dest, seconds=60)
        assert reading.signature_ok, reading.reason
        sticker = reading.sticker or {}
        assert sticker["deployment"]["evidencePacketId"] == str(packets[0].id)
        assert {c["name"]: c["digest"] for c in sticker["release"]["components"]} == expected
        assert set(orchestrator_keys(admin))  # the keys the sticker was checked against
    finally:
        local.stop()
        remove_project(podman)
    assert all(running_digests(podman, p) == {} for p in PROJECTS)


def test_the_local_agents_podman_gets_ulimits_it_may_have_only_where_it_needs_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTAINERS_CONF", "/somewhere/containers.conf")
    assert runtime_settings(tmp_path) == {}  # someone configured podman already: theirs
    monkeypatch.delenv("CONTAINERS_CONF")
    settings = runtime_settings(tmp_path)
    status = Path("/proc/self/status").read_text()
    cap_eff = int(next(ln for ln in status.splitlines() if ln.startswith("CapEff:")).split()[1], 16)
    if os.geteuid() != 0 or (cap_eff >> 24) & 1:
        assert settings == {}
        return
    # Root without CAP_SYS_RESOURCE (this machine): podman's own 1048576 would be refused.
    conf = Path(settings["CONTAINERS_CONF"])
    assert conf.parent == tmp_path
    text = conf.read_text()
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert f'"nofile={hard}:{hard}"' in text
    assert "nproc=" in text


def test_without_a_static_busybox_a_demo_deploy_says_why_in_one_sentence(
    world, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stella_core.demo import images

    monkeypatch.setattr(images, "BUSYBOX", Path("/nonexistent/busybox"))
    monkeypatch.setattr(images.busybox_layer, "__defaults__", (Path("/nonexistent/busybox"),))
    admin = world.open()
    # Its containers could only fail here, so dev keeps promoting with deliver...
    assert seed(admin, history=True)["workflows"] == []
    assert admin.environments.get("dev").workflow == "deliver"
    web = next(c for c in admin.releases.list_components() if c.name == "web")
    assert web.service is not None
    assert web.service["network_mode"] == "none"
    # ...and where an admin makes it deploy anyway, the deploy says why, in one sentence.
    admin.environments.set("dev", workflow="promote-web", reason="try it here")
    alice = world.open("alice")
    promotion = alice.promotions.request(RELEASES[-1][0], "dev", "try it here")
    assert promotion.run_id is not None
    alice.workflows.wait_run(promotion.run_id, timeout=120)
    deploy = next(s for s in alice.workflows.get_run(promotion.run_id).steps if s.id == "deploy")
    assert deploy.status == "failed"
    names = ("web", "api", "worker")
    assert deploy.error in {f"component {n!r} cannot run: {NO_PROGRAM}" for n in names}
    # promote-web rolls back a failed deploy (it reports it): nothing was started.
    assert alice.promotions.get(promotion.id).status is PromotionStatus.ROLLED_BACK


def test_the_local_agent_runs_on_when_the_demo_registry_port_is_taken(
    world, caplog: pytest.LogCaptureFixture
) -> None:
    admin = world.open()
    seed(admin)
    recorded = served_layout(world.home)
    assert recorded is not None
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", recorded[1]))
        squatter.listen()
        local = LocalAgent(admin.orchestrator, local_agent_dir(world.home))
        with caplog.at_level(logging.WARNING, logger="stella_core.agents.local"):
            local.start()
        try:
            assert local.running
            assert local.layout_server is None
            [line] = [r.getMessage() for r in caplog.records if "OCI layout" in r.getMessage()]
            assert f"127.0.0.1:{recorded[1]}" in line
            assert "the demo's images cannot be pulled from there" in line
        finally:
            local.stop()


def test_the_command_line_promotes_to_dev_and_the_release_runs_here(
    podman: Podman, tmp_path: Path
) -> None:
    """The embedded default from the command line alone (no desk, no stella serve): the
    command that drives the promotion's run has this machine's agent run beside it."""
    from tests.integration.test_cli import ok_json

    env = {k: v for k, v in os.environ.items() if k != "STELLA_DATABASE_URL"}
    env.update(podman.env, STELLA_HOME=str(tmp_path / "home"))
    seeded = ok_json(env, "demo", "seed", "--output", "json")
    assert seeded["workflows"] == ["dev: promote-web"]
    newest = RELEASES[-1][0]
    try:
        promoted = ok_json(
            env, "--profile", "alice", "promote", newest, "--to", "dev", "-o", "json"
        )
        assert promoted["status"] == "deployed", promoted
        release = ok_json(env, "release", "show", newest, "-o", "json")
        expected = {c["name"]: c["digest"] for c in release["components"]}
        for project in PROJECTS:
            assert running_digests(podman, project) == expected, project
        sticker = ok_json(env, "target", "sticker", "local", "--output", "json")
        assert sticker["signature_ok"] is True
    finally:
        remove_project(podman)
