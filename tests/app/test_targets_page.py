"""The Targets page against a real database and real agents: the demo's own agent (`local`,
enrolled by the seed) and dev's target on it, listed with the columns a person checks; a
sticker read through the orchestrator and this machine's agent (run beside the read, as the
command line does on the embedded default), verified or not; revocation with a reason; the
enrollment dialog, whose copied command really enrolls an agent over TLS on loopback and whose
token reaches no log record.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QImage

from stella_core.agents import daemon
from stella_core.agents.gateway import open_gateway
from stella_core.agents.local import LOCAL_AGENT, LocalAgent, local_agent_dir
from stella_core.agents.service import enrollment_for
from stella_core.deploy.sticker import (
    STICKER_NAME,
    StickerComponent,
    build_sticker,
    sign_sticker,
    sticker_bytes,
)
from stella_desk.screenshots import save
from stella_desk.targets import drift
from stella_desk.targets.page import TargetsPage
from stella_desk.window import MainWindow

from .test_screens import distinct_colours

DIGEST = "sha256:" + "ab" * 32


def cells(page: TargetsPage, which: str) -> list[dict[str, str]]:
    model = page.agents if which == "agents" else page.targets
    heads = [c.title for c in model.columns]
    return [
        {h: model.data(model.index(r, c)) for c, h in enumerate(heads)}
        for r in range(model.rowCount())
    ]


def row_of(page: TargetsPage, which: str, name: str) -> dict[str, str]:
    key = "Agent" if which == "agents" else "Target"
    [found] = [r for r in cells(page, which) if r[key] == name]
    return found


def open_targets(desk: MainWindow) -> TargetsPage:
    page = desk.show_page("targets")
    assert isinstance(page, TargetsPage)
    return page


async def until(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


def write_signed_sticker(stella, target_name: str) -> Path:
    """What a deployment leaves on the target: a sticker signed by the orchestrator key."""
    target = stella.environments.target(target_name)
    env = stella.environments.get(target.environment)
    now = datetime.now(UTC)
    body = build_sticker(
        release_id=uuid.uuid4(),
        release_name="shop-2026.12.0",
        release_created_at=now,
        components=[StickerComponent(name="web", digest=DIGEST, tag="1.2.0")],
        deployment_id=uuid.uuid4(),
        promotion_id=None,
        environment_id=env.id,
        environment_name=env.name,
        target_id=target.id,
        target_name=target.name,
        started_at=now,
        completed_at=now,
        deployed_by="alice",
        evidence_packet_id=None,
        compose_lock_sha256="cd" * 32,
        generated_at=now,
    )
    orchestrator = stella.orchestrator
    with orchestrator.db.transaction() as conn:
        signed = sign_sticker(body, orchestrator.evidence.orchestrator_signer(conn))
    path = Path(target.directory) / STICKER_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(sticker_bytes(signed))
    return path


def test_agents_and_targets_are_listed_with_the_columns_a_person_checks(
    desk: MainWindow, run, seeded, world, tmp_path: Path
) -> None:
    page = open_targets(desk)
    run(page.refresh())
    local = row_of(page, "agents", LOCAL_AGENT)
    # Enrolled by the seed, not running: offline, nothing reported yet.
    assert local["Status"] == "offline"
    assert local["Labels"] == "machine=local"
    assert local["Generation"] == "1"
    assert local["Last heartbeat"] == "never"
    assert local["Runtimes"] == "not reported yet"
    agent = page.agents.records[0]
    assert local["Certificate expires"]
    assert agent.cert_not_after > datetime.now(UTC)

    target = row_of(page, "targets", "local")
    assert target["Environment"] == "dev"
    assert target["Transport"] == "agent local"
    assert target["Should run"] == "nothing deployed yet"
    assert target["Last sticker"] == "not read"
    expected_drift = drift.NOT_CHECKED if drift.available() else "unavailable"
    assert target["Drift"] == expected_drift
    assert page.drift_button.isEnabled() is drift.available()
    if not drift.available():
        assert page.drift_note.text() == "(drift checks unavailable in this build)"

    # Running, the agent links over mutual TLS and reports what it can run.
    agent_thread = LocalAgent(seeded.orchestrator, local_agent_dir(world.home), home=world.home)
    agent_thread.start()
    try:

        async def connected() -> None:
            await until(lambda: seeded.orchestrator is not None and _reported(seeded))
            await page.refresh()

        run(connected(), timeout=90)
        local = row_of(page, "agents", LOCAL_AGENT)
        assert local["Status"] == "connected"
        assert local["Last heartbeat"] != "never"
        assert local["Runtimes"] != "not reported yet"
        assert page.agents_title.text() == "AGENTS · 1 · 1 CONNECTED"
        shot = save(desk, tmp_path / "targets.png")
        print(shot)
        assert distinct_colours(QImage(str(shot))) > 60
    finally:
        agent_thread.stop()


def _reported(stella) -> bool:
    from stella_desk.targets.read import agents_of

    return agents_of(stella).get(LOCAL_AGENT).runtimes is not None


def test_read_sticker_says_plainly_whether_it_verifies(
    desk: MainWindow, run, seeded, world, tmp_path: Path
) -> None:
    page = open_targets(desk)
    run(page.refresh())
    assert page.select_target("local")
    # This machine's agent, as the desk runs it on the embedded default (the test database is
    # a server of its own, where the read does not run one beside itself).
    agent = LocalAgent(seeded.orchestrator, local_agent_dir(world.home), home=world.home)
    agent.start()
    try:
        read_and_check(desk, page, run, seeded, tmp_path)
    finally:
        agent.stop()


def read_and_check(desk: MainWindow, page: TargetsPage, run, seeded, tmp_path: Path) -> None:
    # Nothing deployed there yet: no sticker, so nothing verifies.
    found = run(page.read_sticker("local"), timeout=150)
    assert found.ok is False
    assert found.text == "NOT verified: there is no sticker on the target"
    assert row_of(page, "targets", "local")["Last sticker"] == found.text

    path = write_signed_sticker(seeded, "local")
    found = run(page.read_sticker("local"), timeout=150)
    assert found.ok is True, found.detail
    assert found.text == "verified · shop-2026.12.0"
    cell = page.targets.index(0, 6)
    assert page.targets.data(cell, Qt.ItemDataRole.ForegroundRole).name() == "#15803d"
    assert "verified" in page.detail.text()
    assert "web@sha256:abab" in page.detail.text()
    shot = save(desk, tmp_path / "targets-sticker.png")
    print(shot)

    # One byte changed on the target: the signature no longer holds, and the page says so.
    path.write_bytes(path.read_bytes().replace(b"shop-2026.12.0", b"shop-2026.12.9"))
    found = run(page.read_sticker("local"), timeout=150)
    assert found.ok is False
    assert found.text == (
        "NOT verified: the sticker's signature does not match its content · shop-2026.12.9"
    )
    assert page.targets.data(cell, Qt.ItemDataRole.ForegroundRole).name() == "#b91c1c"


def test_an_admin_revokes_an_agent_with_a_reason_and_others_get_no_such_control(
    desk: MainWindow, run, seeded
) -> None:
    page = open_targets(desk)
    run(page.refresh())
    assert page.revoke_button.isVisible()
    assert page.enroll_button.isVisible()
    assert page.select_agent(LOCAL_AGENT)
    dialog = page.open_revoke()
    assert dialog is not None
    run(dialog.submit())
    assert dialog.isVisible()  # a reason is required
    assert dialog.error.text() == "Say why the agent is revoked."
    dialog.reason.setText("the lab machine was reimaged")
    run(dialog.submit())
    assert not dialog.isVisible()
    run(page.refresh())
    local = row_of(page, "agents", LOCAL_AGENT)
    assert local["Status"] == "revoked"
    tip = page.agents.data(page.agents.index(0, 1), Qt.ItemDataRole.ToolTipRole)
    assert "the lab machine was reimaged" in tip
    assert not page.revoke_button.isEnabled()  # revoked already
    # The core agrees: its target can no longer be reached through it.
    for dest in seeded.orchestrator.destinations("dev"):
        assert dest.problem == "its agent 'local' is not enrolled, or was revoked"

    # A release manager reads the same page, with no control that changes agents.
    assert run(desk.switch_person("alice"))
    run(desk.ops.idle())
    run(page.refresh())
    assert not page.revoke_button.isVisible()
    assert not page.enroll_button.isVisible()
    assert row_of(page, "agents", LOCAL_AGENT)["Status"] == "revoked"


def test_the_enrollment_command_enrolls_an_agent_and_its_token_is_never_logged(
    desk: MainWindow, run, seeded, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    page = open_targets(desk)
    run(page.refresh())
    gateway = open_gateway(
        seeded.orchestrator, listen="127.0.0.1:0", link_listen="127.0.0.1:0"
    ).start()
    caplog.set_level(logging.DEBUG)
    try:
        dialog = page.open_enroll()
        dialog.name.setText("edge-1")
        dialog.labels.setText("site=lab, os=linux")
        dialog.server.setText(f"127.0.0.1:{gateway.enroll_port}")
        assert run(dialog.make_token())
        command = dialog.command.toPlainText()
        issued = dialog._issued
        assert issued is not None
        token = issued.token
        fingerprint = enrollment_for(seeded.orchestrator).ca_fingerprint()
        assert command == (
            f"stella-agent enroll --server 127.0.0.1:{gateway.enroll_port} --token {token} "
            f"--ca-fingerprint {fingerprint} --state-dir ~/.stella-agent"
        )
        assert dialog.primary.text() == "Done"
        assert not dialog.name.isEnabled()
        assert fingerprint in dialog.note.text()
        assert dialog.copy() == command
        assert QGuiApplication.clipboard().text() == command
        shot = save(dialog, tmp_path / "enroll-agent.png")
        print(shot)
        assert distinct_colours(QImage(str(shot))) > 40

        # The command as copied, run as the target's shell would (its own state folder).
        argv = shlex.split(command.replace("~/.stella-agent", str(tmp_path / "edge-1")))
        assert argv[:2] == ["stella-agent", "enroll"]
        assert daemon.main(argv[1:]) == 0
        run(page.refresh())
        edge = row_of(page, "agents", "edge-1")
        assert edge["Labels"] == "os=linux, site=lab"
        assert edge["Generation"] == "1"

        status = desk.statusBar().currentMessage()
        dialog.accept()
        assert dialog.command.toPlainText() == ""
        assert dialog._issued is None
        # Shown once, logged never: no record, no status message, no operation label has it.
        for record in caplog.records:
            assert token not in record.getMessage(), record.name
            assert token not in repr(record.args)
        assert token not in status
        assert token not in repr(issued)
    finally:
        gateway.stop(grace=0.5)


def test_the_enrollment_dialog_says_what_is_wrong_in_place(desk: MainWindow, run) -> None:
    page = open_targets(desk)
    dialog = page.open_enroll()
    assert not run(dialog.make_token())
    assert dialog.error.text() == "An agent needs a name."
    dialog.name.setText("edge-2")
    dialog.labels.setText("site")
    assert not run(dialog.make_token())
    assert dialog.error.text() == "'site' is not a label KEY=VALUE"
    dialog.labels.setText("")
    dialog.name.setText(LOCAL_AGENT)  # enrolled already
    assert not run(dialog.make_token())
    assert (
        dialog.error.text() == f"an agent called {LOCAL_AGENT} is enrolled already; revoke it first"
    )
    assert dialog.command.toPlainText() == ""
    assert dialog.isVisible()
    dialog.reject()


def finding(target: str, env: str, status: str) -> drift.DriftView:
    return drift.DriftView(target, env, status, None, (), datetime.now(UTC))


def test_drift_badges_count_each_environments_findings_and_say_the_worst(
    desk, run, tmp_path: Path
) -> None:
    from stella_desk.promotions.board import EnvironmentColumn

    findings = [
        finding("a", "dev", "in_sync"),
        finding("b", "dev", "drifted"),
        finding("c", "dev", "unknown"),
        finding("d", "stage", "in_sync"),
        finding("e", "prod", "unknown"),
    ]
    counted = drift.summaries(findings)
    assert counted is not None
    assert drift.summaries(None) is None  # unavailable stays unavailable
    assert drift.summary_pill(counted["dev"], True)[:3] == (
        "drift: 1 drifted",
        "1 in sync, 1 drifted, 1 unknown (of 3 targets checked)",
        "#b91c1c",
    )
    assert drift.summary_pill(counted["stage"], True)[0] == "drift: in sync"
    assert drift.summary_pill(counted["prod"], True)[0] == "drift: 1 unknown"
    assert drift.summary_pill(None, True)[0] == "drift: not checked"
    assert drift.summary_pill(None, False)[0] == "drift: unavailable"

    column = {"environment": {"name": "dev"}, "current": None, "pending": []}
    shown = EnvironmentColumn(column, [], drift_summary=counted["dev"], drift_available=True)
    assert shown.drift.text() == "drift: 1 drifted"
    assert "#b91c1c" in shown.drift.styleSheet()
    hidden = EnvironmentColumn(column, [], drift_available=False)
    assert hidden.drift.isHidden()
    shown.resize(290, 260)
    print(save(shown, tmp_path / "board-drift-column.png"))

    # As the board and the dashboard read it from this build's database.
    board = desk.show_page("promotions")
    run(board.refresh())
    assert set(board.columns) == {"dev", "stage", "prod"}
    for name, col in board.columns.items():
        assert col.drift.isVisible() is drift.available(), name
        if drift.available():
            assert col.drift.text() == "drift: not checked"  # nothing checked in a new world
    dashboard = desk.show_page("dashboard")
    run(dashboard.refresh())
    assert (dashboard.drift is None) is (not drift.available())
    assert bool(dashboard.drift_badges) is drift.available()
    # The path with findings, as it shows once drift checks have run.
    dashboard.drift = counted
    dashboard._show_path()
    for _ in range(3):
        run(asyncio.sleep(0))
    assert dashboard.drift_badges["dev"].text() == "drift: 1 drifted"
    assert dashboard.drift_badges["stage"].text() == "drift: in sync"
    print(save(desk, tmp_path / "dashboard-drift.png"))


def test_check_drift_now_shows_each_targets_finding_on_the_page_and_the_board(
    desk: MainWindow, run, seeded, world, tmp_path: Path
) -> None:
    page = open_targets(desk)
    run(page.refresh())
    if not drift.available():
        # This build has no drift checks: said plainly, and nothing offers to run one.
        assert not page.drift_button.isEnabled()
        assert run(page.check_drift()) is None
        assert row_of(page, "targets", "local")["Drift"] == "unavailable"
        return
    agent = LocalAgent(seeded.orchestrator, local_agent_dir(world.home), home=world.home)
    agent.start()
    try:
        found = run(page.check_drift(), timeout=240)
    finally:
        agent.stop()
    assert found is not None
    [local] = [f for f in found if f.target == "local"]
    # Never deployed to: no sticker there, so what runs cannot be vouched for.
    assert local.status == "unknown", local
    assert local.reason
    row = row_of(page, "targets", "local")
    assert row["Drift"] == "unknown"
    tip = page.targets.data(page.targets.index(0, 7), Qt.ItemDataRole.ToolTipRole)
    assert local.reason in tip
    assert page.select_target("local")
    print(save(desk, tmp_path / "targets-drift.png"))
    board = desk.show_page("promotions")
    run(board.refresh())
    assert board.columns["dev"].drift.text() == "drift: 3 unknown"  # dev's three targets
    assert board.columns["dev"].drift.isVisible()
