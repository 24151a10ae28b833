"""The run monitor shows each target's progress and log lines for a deploy step, live.

The demo's own world: dev deploys with `promote-web` to its target `local`, this machine's
agent (a real gateway and agent over mutual TLS on loopback, as the desk runs them), which pulls
the demo's images from the layout served on loopback and runs them with real rootful podman.
The window watches the run while a worker in this process moves it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from PySide6.QtGui import QImage

from stella_core.agents.local import LOCAL_AGENT, LocalAgent, local_agent_dir
from stella_core.demo.seed import RELEASES
from stella_core.promotions.model import PromotionStatus
from stella_desk.runs.page import RunsPage
from stella_desk.screenshots import save
from stella_desk.targets.read import agents_of
from stella_desk.window import WINDOW_SIZE, MainWindow
from tests.integration.conftest import registry
from tests.integration.test_demo_deploy import PROJECT, remove_project
from tests.support.containers import Podman, podman_fixture
from tests.support.workflow_helpers import wait_until

from .test_screens import distinct_colours

__all__ = ["podman_fixture", "registry"]


def test_a_deploy_step_shows_each_targets_tasks_and_log_lines_live(
    desk: MainWindow,
    run,
    seeded,
    world,
    podman: Podman,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # The agent's commands start from this process's environment: the session's podman config.
    for name, value in podman.env.items():
        monkeypatch.setenv(name, value)
    seeded.environments.set("dev", workflow="promote-web", reason="dev deploys here")
    agent = LocalAgent(seeded.orchestrator, local_agent_dir(world.home), home=world.home)
    agent.start()
    alice = world.open("alice")
    try:
        wait_until(
            lambda: agents_of(seeded).get(LOCAL_AGENT).runtimes is not None,
            timeout=60,
            what="the local agent's hello",
        )
        newest = RELEASES[-1][0]
        promotion = alice.promotions.request(newest, "dev", "run it here")
        assert promotion.run_id is not None
        run_id = promotion.run_id
        page = desk.show_page("runs")
        assert isinstance(page, RunsPage)
        assert run(page.open_run(run_id))
        monitor = page.monitor
        assert monitor.bottom_tabs.isTabVisible(1)  # promote-web deploys
        seen: list[list[tuple[str, str, str]]] = []

        async def drive_and_watch():
            # The run moves on a worker thread; the window polls meanwhile, never blocked.
            moving = asyncio.ensure_future(asyncio.to_thread(alice.workflows.wait_run, run_id, 240))
            while not moving.done():
                rows = monitor.targets.model.rows
                seen.append([(r.node_id, r.target, r.status) for r in rows])
                await asyncio.sleep(0.1)
            ended = await moving
            await monitor.watch.refresh()
            await monitor.tasks.refresh()
            return ended

        ended = run(drive_and_watch(), timeout=300)
        assert ended.status == "succeeded", ended.to_json()
        assert alice.promotions.get(promotion.id).status is PromotionStatus.DEPLOYED

        # Live: the target showed while its deploy still ran, before the run ended.
        assert any(("deploy", "local", "running") in sample for sample in seen), seen[-5:]
        monitor.select_step("deploy")
        run(asyncio.sleep(0.05))
        assert monitor.bottom_tabs.currentIndex() == 1
        assert monitor.bottom_tabs.tabText(1) == "Targets · 3"  # dev's three, one at a time
        rows = {r.target: r for r in monitor.targets.model.rows}
        assert sorted(rows) == ["local", "local-2", "local-3"]
        assert {(r.node_id, r.status) for r in rows.values()} == {("deploy", "succeeded")}
        row = rows["local"]
        # Deployed, found healthy (the containers' own checks), then its sticker.
        assert row.tasks_text().startswith("deploy ✓  health-check ✓"), row.tasks_text()
        assert row.tasks_text().endswith("write-sticker ✓"), row.tasks_text()
        assert monitor.targets.empty.text() == "3 of 3 targets done"
        # The lines the agent sent as it worked, with the task they belong to.
        assert monitor.targets.select_target("local")
        text = monitor.targets.plain_text()
        assert monitor.targets.heading.text() == "LOG · LOCAL · DEPLOY"
        for component in ("web", "api", "worker"):
            assert f"pulling {component}: " in text
        assert f"{PROJECT}: 3 components running by digest" in text
        assert "write-sticker" in text
        assert "running by digest" in row.last_line or "writing" in row.last_line

        monitor.fit()
        shot = save(desk, tmp_path / "run-targets.png")
        print(shot)
        assert distinct_colours(QImage(str(shot))) > 60
        # A running deploy's header and long outputs never widen the window past its screen.
        assert QImage(str(shot)).width() == WINDOW_SIZE.width()
        # Ended, nothing open: the targets stop being polled.
        assert not monitor.tasks.live
    finally:
        alice.close(keep_backend=True)
        agent.stop()
        remove_project(podman)
