"""The desk on the embedded default runs this machine's agent beside its orchestrator.

A real embedded PostgreSQL in a STELLA_HOME of the test's own (no database URL: the embedded
default), the desk's own start-up path (`run_desk`), the real gateway on loopback and the agent
daemon on its thread; quitting the desk stops both (their ports close).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtGui import QImage

from stella_core.agents.local import LOCAL_AGENT, local_agent_dir
from stella_core.agents.service import AgentService
from stella_core.db.embedded import SYSTEM_DIR, EmbeddedPostgres
from stella_core.profiles import EMBEDDED
from stella_desk.local_agent import DeskAgent
from stella_desk.main import parse_args, run_desk
from stella_desk.screenshots import render_screens
from stella_desk.session import Session
from stella_desk.window import WINDOW_SIZE, MainWindow

from .conftest import next_emission


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def distinct_colours(image: QImage) -> int:
    step = 7
    return len(
        {
            image.pixel(x, y)
            for x in range(0, image.width(), step)
            for y in range(0, image.height(), step)
        }
    )


@pytest.fixture
def embedded_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "stella-home"
    monkeypatch.setenv("STELLA_HOME", str(home))
    monkeypatch.delenv("STELLA_DATABASE_URL", raising=False)
    monkeypatch.setenv("STELLA_EMBEDDED_LINGER", "0")  # stops as the desk lets go
    yield home
    pg = EmbeddedPostgres(home, durable=False)
    try:
        if pg.is_running():
            pg.stop()
    finally:
        cluster = pg.data_dir.parent
        if cluster.parent == SYSTEM_DIR / "clusters":
            shutil.rmtree(cluster, ignore_errors=True)


async def until(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


def test_the_desk_on_the_embedded_default_runs_the_local_agent_and_stops_it_on_quit(
    embedded_home: Path, request, qapp, qtbot, run, ops, aloop, tmp_path: Path
) -> None:
    qapp.setQuitOnLastWindowClosed(False)
    request.addfinalizer(lambda: qapp.setQuitOnLastWindowClosed(True))
    window = MainWindow(ops, Session())
    qtbot.addWidget(window)
    window.resize(WINDOW_SIZE)
    window.show()
    local = DeskAgent()
    seen: dict[str, object] = {}

    async def start_use_and_quit() -> int:
        desk = asyncio.ensure_future(run_desk(parse_args([]), window, ops, local))
        await next_emission(window.releases.loaded)
        stella = window.session.stella
        assert stella is not None
        assert stella.backend.target == EMBEDDED
        # The window is usable while the agent starts beside it (on its own thread).
        assert window.releases.model.rowCount() == 3
        await until(lambda: local.running)
        agents = AgentService(stella.db, stella.tenancy)
        await until(lambda: agents.get(LOCAL_AGENT).runtimes is not None)
        agent = agents.get(LOCAL_AGENT)
        assert agent.connected
        seen["ports"] = local.gateway_ports
        seen["target"] = [t.name for t in stella.environments.list_targets("dev")]
        # The screens as a person sees them with the agent running (looked at; not blank).
        shots = await render_screens(window, tmp_path / "screens")
        seen["shots"] = len(shots)
        window.grab().save(str(tmp_path / "desk.png"))
        started = time.monotonic()
        window.close()
        code = await desk
        seen["stopping"] = time.monotonic() - started
        return code

    assert run(start_use_and_quit(), timeout=240) == 0
    enroll_port, link_port = seen["ports"]  # type: ignore[misc]
    assert refused(enroll_port)
    assert refused(link_port)
    assert not local.running
    assert seen["target"] == ["local", "local-2", "local-3"]  # dev's targets: this machine
    assert (local_agent_dir(embedded_home) / "agent.json").exists()
    assert seen["stopping"] < 15  # the core's close included; the agent's part is ~2 s
    assert seen["shots"] >= 10
    for shot in (tmp_path / "screens").glob("*.png"):
        assert distinct_colours(QImage(str(shot))) > 50, shot.name
