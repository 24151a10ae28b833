"""The demo's rollout story from the command line on the embedded default, as a newcomer plays
it: dev has three targets on this machine and promotes with a rolling deployment, one target at
a time. A release with the demo's broken web 1.3.0 (its container never passes its own health
check) stops at the first target and rolls it back; a container removed by hand shows as
drift; `stella rollback` puts the last good release back on every target, by digest.

Real parts: PostgreSQL (embedded, as `stella` starts it), the local agent beside each command,
the layout server, rootful podman with podman-compose (scratch config and storage), the
containers' own health checks run by podman.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from stella_core.demo.seed import RELEASES
from tests.integration.test_cli import ok_json, stella
from tests.integration.test_demo_deploy import PROJECTS, remove_project
from tests.integration.test_deploy_e2e import running_digests
from tests.support.containers import Podman, podman_fixture

__all__ = ["podman_fixture"]

BROKEN = "shop-2026.12.1"


def test_a_broken_release_stops_and_rolls_back_drift_shows_and_rollback_restores(
    podman: Podman, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "STELLA_DATABASE_URL"}
    env.update(podman.env, STELLA_HOME=str(tmp_path / "home"))
    seeded = ok_json(env, "demo", "seed", "--output", "json")
    assert seeded["workflows"] == ["dev: promote-web"]
    targets = ok_json(env, "target", "list", "--env", "dev", "--output", "json")
    assert sorted(t["name"] for t in targets) == ["local", "local-2", "local-3"]
    older, newer = RELEASES[-2][0], RELEASES[-1][0]

    def digests_of(release: str) -> dict[str, str]:
        shown = ok_json(env, "release", "show", release, "-o", "json")
        return {c["name"]: c["digest"] for c in shown["components"]}

    def running() -> dict[str, dict[str, str]]:
        return {p: running_digests(podman, p) for p in PROJECTS}

    try:
        for release in (older, newer):
            promoted = ok_json(
                env, "--profile", "alice", "promote", release, "--to", "dev", "-o", "json"
            )
            assert promoted["status"] == "deployed", promoted
        good = digests_of(newer)
        assert running() == dict.fromkeys(PROJECTS, good)

        # The broken web: the first batch (one target) never turns healthy, so the rollout
        # stops there and puts that target back; the other two were never touched.
        ok_json(
            env,
            "--profile",
            "alice",
            "release",
            "create",
            BROKEN,
            "--component",
            "web=1.3.0",
            "--component",
            "api=2.4.0",
            "--component",
            "worker=0.9.1",
            "-o",
            "json",
        )
        broken = stella(env, "--profile", "alice", "promote", BROKEN, "--to", "dev", "-o", "json")
        shown = json.loads(broken.stdout)
        assert shown["status"] == "rolled_back", (broken.stdout, broken.stderr)
        run = ok_json(env, "run", "show", shown["run_id"], "-o", "json")
        deploy = next(s for s in run["steps"] if s["id"] == "deploy")
        assert deploy["outputs"]["status"] == "rolled-back", deploy
        reached = {t["target"]: t for t in deploy["outputs"]["targets"]}
        assert "unhealthy" in reached["local"]["error"], reached
        assert "local-3" not in reached or reached["local-3"]["status"] != "succeeded", reached
        assert running() == dict.fromkeys(PROJECTS, good)
        with_history = ok_json(env, "target", "sticker", "local", "--output", "json")
        assert with_history["signature_ok"] is True
        assert with_history["release"]["name"] == newer

        # Everything is where the database says; then someone removes a container by hand.
        checked = ok_json(env, "drift", "check", "--env", "dev", "--output", "json")
        assert {c["target"]: c["status"] for c in checked} == {
            "local": "in_sync",
            "local-2": "in_sync",
            "local-3": "in_sync",
        }
        web = podman.run(
            "ps",
            "-q",
            "--filter",
            "label=io.podman.compose.project=stella-dev-local-2",
            "--filter",
            "label=stella.component=web",
        ).stdout.split()
        assert len(web) == 1
        podman.run("rm", "-f", "-t", "1", web[0])
        checked = {
            c["target"]: c
            for c in ok_json(env, "drift", "check", "--env", "dev", "--output", "json")
        }
        assert checked["local-2"]["status"] == "drifted", checked["local-2"]
        assert [d["component"] for d in checked["local-2"]["differences"]] == ["web"]
        assert checked["local"]["status"] == checked["local-3"]["status"] == "in_sync"

        # Rollback: the newest release every target's sticker says it ran, other than the one
        # running now, back by digest on all three (the removed container included).
        rolled = ok_json(
            env,
            "--profile",
            "alice",
            "rollback",
            "--env",
            "dev",
            "--reason",
            "web 1.3.0 never turned healthy",
            "--output",
            "json",
        )
        assert (rolled["release"], rolled["status"]) == (older, "deployed"), rolled
        assert rolled["promotion_id"]
        assert running() == {p: digests_of(older) for p in PROJECTS}
        after = ok_json(env, "drift", "check", "--env", "dev", "--output", "json")
        assert {c["status"] for c in after} == {"in_sync"}
    finally:
        remove_project(podman)
