"""The Runs page and the run monitor against the real workflow service (PostgreSQL): step states
painted on the editor's cards, the timeline, the log of the selected step, live updates while a
worker runs the steps in this process, start, cancel, retry and approve from the window.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QPoint, QRect, Qt
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QGraphicsItem

from stella_desk.qtcompat import protect_none_refcount
from stella_desk.runs.demo import prepare_demo_runs
from stella_desk.runs.monitor import RunMonitor
from stella_desk.runs.page import RunsPage
from stella_desk.runs.table import Column
from stella_desk.runs.worker import DeskWorker, reason_not_to_serve
from stella_desk.screenshots import save, show_run_monitor
from stella_desk.window import MainWindow
from tests.support.workflow_helpers import PYTHON

from .test_screens import distinct_colours

TERMINAL = {"succeeded", "failed", "cancelled", "timed_out", "rolled_back"}


# --- templates -------------------------------------------------------------------------------
def step(node_id: str, command: list[str], **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "script", "inputs": {"command": command}, **extra}


def template(name: str, nodes: list[dict[str, Any]], edges: list[tuple[str, str]], **extra: Any):
    return {
        "schema_version": 1,
        "name": name,
        "nodes": nodes,
        "edges": [{"from": a, "to": b} for a, b in edges],
        **extra,
    }


FAILING = template(
    "ship",
    [
        step("build", ["true"], name="Build"),
        step(
            "test",
            ["false"],
            name="Test",
            retry={"max_attempts": 2, "backoff_initial_ms": 0, "backoff_factor": 1.0},
        ),
        step("publish", ["true"], name="Publish"),
    ],
    [("build", "test"), ("test", "publish")],
)

GATED = template(
    "gated",
    [
        step("prepare", ["true"], name="Prepare"),
        {"id": "pause", "type": "wait", "name": "Settle", "inputs": {"seconds": 1}},
        {
            "id": "approve",
            "type": "approval",
            "name": "Go live?",
            "inputs": {"approvers": ["release-manager", "admin"], "required": 1},
        },
        step("done", ["true"], name="Go live"),
    ],
    [("prepare", "pause"), ("pause", "approve"), ("approve", "done")],
    inputs={"environment": {"type": "string", "required": True}},
)


# --- driving runs ----------------------------------------------------------------------------
def drive(stella, run_id, until: Callable[[Any], bool], timeout: float = 30.0):
    """Run the run's steps in this thread (a worker restricted to it) until `until(run)`."""
    service = stella.workflows
    worker = service.worker(run_id=run_id, shutdown_grace_seconds=1.0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = service.get_run(run_id)
        if until(current):
            return current
        if not worker.run_once():
            time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not get there: {service.get_run(run_id).status}")


async def adrive(stella, run_id, until: Callable[[Any], bool], timeout: float = 30.0):
    """`drive` on a thread: the window keeps running (and polling) meanwhile."""
    return await asyncio.to_thread(drive, stella, run_id, until, timeout)


def ended(run) -> bool:
    return run.status in TERMINAL


def step_is(step_id: str, status: str) -> Callable[[Any], bool]:
    return lambda run: any(s.id == step_id and s.status == status for s in run.steps)


async def until(predicate: Callable[[], Any], timeout: float = 20.0) -> None:
    """Let the window run (its polls included) until `predicate()` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("the window never got there")
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module", autouse=True)
def _none_refcount_guard() -> None:
    # A watched run polls and animates: hundreds of void Qt calls a second, each dropping a
    # reference to None on this binding (see stella_desk.qtcompat).
    protect_none_refcount()


@pytest.fixture
def admin(seeded):
    seeded.workflows.set_local_executor(True)
    return seeded


def card_states(monitor: RunMonitor) -> dict[str, str | None]:
    return {i: c.status for i, c in monitor.scene.item_for_node.items()}


def log_nodes(monitor: RunMonitor) -> set[str]:
    return {line.split()[1] for line in monitor.log.plain_text().splitlines() if line.strip()}


def open_runs(desk: MainWindow) -> RunsPage:
    page = desk.show_page("runs")
    assert isinstance(page, RunsPage)
    return page


# --- tests -----------------------------------------------------------------------------------
def test_monitor_paints_states_timeline_and_the_selected_steps_log(
    desk: MainWindow, run, admin
) -> None:
    admin.workflows.import_template(FAILING)
    started = admin.workflows.start_run("ship")
    finished = drive(admin, started.id, ended)
    assert finished.status == "failed"

    page = open_runs(desk)
    run(page.refresh())
    row = page.model.row_of(started.id)
    assert row is not None
    assert page.model.index(row, Column.STATUS).data() == "failed"

    assert run(page.open_run(started.id))
    monitor = page.monitor
    assert page.stack.currentWidget() is monitor
    # The editor's cards, read-only, painted with each step's state.
    assert card_states(monitor) == {"build": "succeeded", "test": "failed", "publish": "cancelled"}
    assert monitor.card("test").status_detail == "2 tries"
    for card in monitor.scene.item_for_node.values():
        assert not card.flags() & QGraphicsItem.GraphicsItemFlag.ItemIsMovable
    # The editor itself shows no run state.
    assert all(c.status is None for c in desk.workflows.scene.item_for_node.values())
    assert "step test failed" in monitor.error_label.text()
    assert monitor.badge.text() == "failed"

    # One bar per step that ran; the failed step's first attempt shows before its bar.
    assert set(monitor.timeline.bars) == {"build", "test"}
    assert monitor.timeline.bars["test"].status == "failed"
    assert monitor.timeline.bars["test"].attempts == 2
    assert len(monitor.timeline.earlier("test")) == 1
    assert monitor.timeline.bar_rect("build").left() < monitor.timeline.bar_rect("test").left()

    # No selection: the whole run's log; a step selected: only its entries, and its error.
    assert log_nodes(monitor) >= {"run", "build", "test", "publish"}
    monitor.select_step("test")
    assert monitor.selected == "test"
    assert log_nodes(monitor) == {"test"}
    text = monitor.log.plain_text()
    assert "step.retrying" in text
    assert "step.failed" in text
    assert "exited with code 1" in monitor.log.summary.text()
    assert monitor.timeline.selected == "test"
    # A click on the timeline selects too (and the graph follows).
    rect = monitor.timeline.bar_rect("build")
    monitor.timeline.step_clicked.emit(monitor.timeline.step_at(rect.center().y()))
    assert monitor.scene.selected_node_ids() == ["build"]
    assert log_nodes(monitor) == {"build"}

    # What can be done with a failed run: retry its failed step, not cancel it.
    assert monitor.retry_button.isVisible()
    assert monitor.retry_button.isEnabled() is False  # build is selected: it did not fail
    monitor.select_step(None)
    assert monitor.retry_button.isEnabled()
    assert monitor.retry_button.text() == "Retry test"
    assert not monitor.cancel_button.isVisible()
    assert not monitor.watch.live  # an ended run is not polled

    # Back to the list.
    monitor.back_button.click()
    assert page.stack.currentWidget() is page.list_page


def test_retry_from_the_window_reruns_the_failed_step(
    desk: MainWindow, run, admin, effects: Path
) -> None:
    # Where the sandboxed script can look (the session's script directory).
    effects.mkdir()
    flag = effects / "ready"
    check = f"import os, sys; sys.exit(0 if os.path.exists({str(flag)!r}) else 1)"
    admin.workflows.import_template(
        template(
            "gate-check",
            [step("build", ["true"]), step("gate", [PYTHON, "-c", check])],
            [("build", "gate")],
        )
    )
    started = admin.workflows.start_run("gate-check")
    assert drive(admin, started.id, ended).status == "failed"
    page = open_runs(desk)
    run(page.open_run(started.id))
    monitor = page.monitor
    assert card_states(monitor)["gate"] == "failed"
    monitor.select_step("gate")
    assert monitor.retry_button.isEnabled()

    flag.write_text("ok")
    qtbot_click(monitor.retry_button)
    run(until(lambda: monitor.run.status != "failed"))
    assert monitor.watch.live  # the reopened run is followed again
    assert card_states(monitor)["build"] == "succeeded"  # what succeeded stays done
    polls_before = monitor.watch.polls
    run(adrive(admin, started.id, ended))
    run(until(lambda: monitor.watch.settled))
    assert monitor.watch.polls > polls_before  # seen through polling, not a reload
    assert monitor.run.status == "succeeded"
    assert card_states(monitor) == {"build": "succeeded", "gate": "succeeded"}
    assert monitor.timeline.bars["gate"].status == "succeeded"
    assert len(monitor.timeline.earlier("gate")) == 1  # the failed attempt, before the retry
    assert [line.split()[2] for line in monitor.log.plain_text().splitlines()].count(
        "step.started"
    ) == 2
    monitor.select_step(None)
    assert "run.retried" in monitor.log.plain_text()
    row = page.model.row_of(started.id)
    assert page.model.index(row, Column.STATUS).data() == "succeeded"  # the list followed


def qtbot_click(button) -> None:
    assert button.isVisible()
    assert button.isEnabled()
    button.click()


def test_start_a_run_from_the_window_watch_it_live_and_approve(
    desk: MainWindow, run, admin
) -> None:
    admin.workflows.import_template(FAILING)
    admin.workflows.import_template(GATED)
    page = open_runs(desk)
    run(page.refresh())
    assert page.start_button.isEnabled()

    dialog = page.open_start_dialog()
    run(until(lambda: dialog.template.count() == 4))  # two here + the two demo templates
    dialog.choose("gated")
    # The demo's "deliver" also asks for an environment: wait until gated's inputs are read.
    run(until(lambda: "environment" in dialog.rows and dialog.start_button.isEnabled()))
    assert dialog.release.currentText() == "shop-2026.11.3"  # the newest release
    # A required input left empty is named next to its field; nothing starts.
    assert run(dialog.submit()) is None
    assert dialog.error_texts() == ["environment is required"]
    assert admin.workflows.list_runs() == []
    dialog.rows["environment"].edit.setText("stage")
    dialog.start_button.click()
    run(until(lambda: dialog.run is not None and page.monitor.run is not None))
    started = dialog.run
    assert not dialog.isVisible()
    monitor = page.monitor
    assert page.stack.currentWidget() is monitor
    assert monitor.run.id == started.id
    assert started.release["name"] == "shop-2026.11.3"
    assert started.inputs == {"environment": "stage"}
    assert "shop-2026.11.3" in monitor.title.text()
    assert monitor.watch.live

    # Record what the watch hands the views: new entries only, changed steps only.
    batches: list[list[Any]] = []
    changes: list[list[Any]] = []
    monitor.watch.events_added.connect(batches.append)
    monitor.watch.steps_changed.connect(changes.append)

    # A worker runs the steps on another thread; the window follows by polling.
    run(adrive(admin, started.id, step_is("approve", "waiting")))
    run(until(lambda: monitor.card("approve").status == "waiting"))
    assert card_states(monitor) == {
        "prepare": "succeeded",
        "pause": "succeeded",
        "approve": "waiting",
        "done": None,
    }
    assert monitor.badge.text() == "waiting"
    assert monitor.approval.isVisible()
    assert "Go live?" in monitor.approval.text.text()
    assert "release-manager, admin" in monitor.approval.text.text()
    assert monitor.approval.approve.isEnabled()  # an admin may decide this one
    assert monitor.cancel_button.isEnabled()
    assert set(monitor.timeline.bars) == {"prepare", "pause", "approve"}

    seqs = [e.seq for batch in batches for e in batch]
    assert seqs == sorted(set(seqs))  # every entry arrived once, in order
    assert [e.seq for e in monitor.watch.events][-len(seqs) :] == seqs
    seen: dict[str, Any] = {}
    for batch in changes:
        for changed in batch:
            assert seen.get(changed.id) != changed  # only steps that differ are repainted
            seen[changed.id] = changed

    monitor.approval.comment.setText("looks good")
    monitor.approval.approve.click()
    run(until(lambda: monitor.card("approve").status == "succeeded"))
    assert not monitor.approval.isVisible()
    run(adrive(admin, started.id, ended))
    run(until(lambda: monitor.watch.settled))
    assert monitor.run.status == "succeeded"
    assert set(card_states(monitor).values()) == {"succeeded"}
    assert set(monitor.timeline.bars) == {"prepare", "pause", "approve", "done"}
    monitor.select_step("approve")
    run(until(lambda: "step.approved" in monitor.log.plain_text()))
    text = monitor.log.plain_text()
    assert "looks good" in text
    assert desk.session.identity.user in text
    assert not monitor.watch.live
    assert not monitor.cancel_button.isVisible()


def test_cancel_a_waiting_run_from_the_window(desk: MainWindow, run, admin) -> None:
    admin.workflows.import_template(GATED)
    started = admin.workflows.start_run("gated", inputs={"environment": "prod"})
    drive(admin, started.id, step_is("approve", "waiting"))
    page = open_runs(desk)
    run(page.refresh())
    run(page.open_run(started.id))
    monitor = page.monitor
    assert monitor.card("approve").status == "waiting"

    monitor.cancel_button.click()
    assert monitor.confirm.isVisible()  # asked inline, no modal dialog
    assert admin.workflows.get_run(started.id).status == "waiting"
    monitor.confirm.go.click()
    run(until(lambda: monitor.run.status == "cancelled"))
    run(until(lambda: monitor.watch.settled))
    assert card_states(monitor)["approve"] == "cancelled"
    assert card_states(monitor)["done"] == "cancelled"
    assert card_states(monitor)["prepare"] == "succeeded"
    assert not monitor.cancel_button.isVisible()
    assert not monitor.approval.isVisible()
    assert admin.workflows.get_run(started.id).status == "cancelled"
    row = page.model.row_of(started.id)
    assert page.model.index(row, Column.STATUS).data() == "cancelled"


def test_who_may_act_and_a_rejection_from_the_window(desk: MainWindow, run, admin) -> None:
    admin.workflows.import_template(GATED)
    started = admin.workflows.start_run("gated", inputs={"environment": "prod"})
    drive(admin, started.id, step_is("approve", "waiting"))
    page = open_runs(desk)
    run(page.open_run(started.id))
    monitor = page.monitor

    # An auditor sees the run, and why they cannot act on it.
    run(desk.switch_person("dave"))
    run(desk.ops.idle())
    assert monitor.run.id == started.id
    assert monitor.approval.isVisible()
    assert not monitor.approval.approve.isEnabled()
    assert "Only release-manager, admin may decide" in monitor.approval.text.text()
    assert not monitor.cancel_button.isEnabled()
    assert not page.start_button.isEnabled()

    # The release manager rejects, with a reason; the run fails at that step.
    run(desk.switch_person("alice"))
    run(desk.ops.idle())
    assert monitor.approval.approve.isEnabled()
    assert page.start_button.isEnabled()
    monitor.approval.comment.setText("not during the sale")
    monitor.approval.reject.click()
    run(until(lambda: monitor.run.status == "failed"))
    run(until(lambda: monitor.watch.settled))
    assert card_states(monitor)["approve"] == "failed"
    assert card_states(monitor)["done"] == "cancelled"
    monitor.select_step("approve")
    # The action's answer shows the failed run at once; its events arrive with the poll after.
    run(until(lambda: "step.rejected" in monitor.log.plain_text()))
    text = monitor.log.plain_text()
    assert "by alice (release-manager)" in text
    assert "not during the sale" in text
    assert "rejected by alice" in monitor.error_label.text()


def test_cancel_a_running_run_stops_its_step(desk: MainWindow, run, admin) -> None:
    admin.workflows.import_template(
        template(
            "slow", [step("slow", ["sleep", "30"]), step("after", ["true"])], [("slow", "after")]
        )
    )
    started = admin.workflows.start_run("slow")
    page = open_runs(desk)
    run(page.open_run(started.id))
    monitor = page.monitor

    worker = admin.workflows.worker(run_id=started.id, lease_seconds=3.0)
    thread = threading.Thread(target=worker.run_once)  # claims `slow` and runs it
    thread.start()
    try:
        run(until(lambda: monitor.card("slow").status == "running"))
        assert monitor._pulse.isActive()  # the running card pulses
        run(until(lambda: monitor.card("slow").pulse > 0))
        monitor.cancel_button.click()
        monitor.confirm.go.click()
        run(until(lambda: monitor.run.status == "cancelled"))
        # The step was running: the worker notices at its next heartbeat and stops it; the
        # monitor keeps watching until it has.
        run(until(lambda: monitor.card("slow").status == "cancelled", timeout=30))
    finally:
        thread.join(timeout=30)
    assert not thread.is_alive()
    run(until(lambda: monitor.watch.settled))
    assert card_states(monitor) == {"slow": "cancelled", "after": "cancelled"}
    assert monitor.timeline.bars["slow"].status == "cancelled"


def test_the_in_process_worker_runs_what_the_window_starts(desk: MainWindow, run, admin) -> None:
    # The test database is reached like an external server: the desk would not serve it on
    # its own (a shared server has `stella serve`); here it is started by hand.
    assert reason_not_to_serve(admin, desk.session.identity) is not None
    admin.workflows.import_template(FAILING)
    desk_worker = DeskWorker()
    desk_worker.start(admin)
    try:
        assert desk_worker.running
        page = open_runs(desk)
        started = admin.workflows.start_run("ship")
        run(page.open_run(started.id))
        monitor = page.monitor
        run(until(lambda: monitor.watch.settled, timeout=30))
        assert monitor.run.status == "failed"
        workers = {
            e.details.get("worker") for e in monitor.watch.events if e.kind == "step.started"
        }
        assert workers == {desk_worker.worker_id}
    finally:
        stopped = run(desk_worker.stop(10.0))
    assert stopped
    assert not desk_worker.running
    assert run(desk_worker.stop(1.0))  # stopping twice is harmless


def test_run_list_filters(desk: MainWindow, run, admin, qtbot) -> None:
    admin.workflows.import_template(FAILING)
    admin.workflows.import_template(GATED)
    failed = admin.workflows.start_run("ship", release="shop-2026.11.1")
    drive(admin, failed.id, ended)
    admin.workflows.start_run("gated", inputs={"environment": "dev"})
    page = open_runs(desk)
    run(page.refresh())
    assert page.model.rowCount() == 2
    assert page.count.text() == "2 runs · 1 still going"
    page.filter.setText("failed")
    assert page.proxy.rowCount() == 1
    assert page.proxy.run_at(0).id == failed.id
    page.filter.setText("shop-2026.11.1 ship")
    assert page.proxy.rowCount() == 1
    page.filter.setText("gated")
    assert page.proxy.rowCount() == 1
    assert page.count.text().startswith("1 of 2 runs match")
    page.filter.clear()
    # A click on a row opens its monitor.
    index = page.proxy.index(0, Column.TEMPLATE)
    qtbot.mouseClick(
        page.view.viewport(), Qt.MouseButton.LeftButton, pos=page.view.visualRect(index).center()
    )
    run(until(lambda: page.monitor.run is not None))
    assert page.stack.currentWidget() is page.monitor
    assert page.monitor.run.id == page.model.run_at(0).id


def test_monitor_screenshot_of_the_demo_runs_is_not_blank(
    desk: MainWindow, run, admin, tmp_path: Path
) -> None:
    started = run(asyncio.to_thread(prepare_demo_runs, admin))
    assert len(started) == 3
    # The rehearsal is a workflow of its own: promote-web still really deploys.
    real = admin.workflows.get_template("promote-web")
    assert [n.type for n in real.nodes].count("deploy") == 1
    assert {admin.workflows.get_run(i).template for i in started} == {"promote-web-rehearsal"}
    statuses = [admin.workflows.get_run(i).status for i in started]
    assert statuses == ["succeeded", "rolled_back", "waiting"]
    page = open_runs(desk)
    run(page.refresh())
    assert run(show_run_monitor(desk))
    monitor = page.monitor
    assert monitor.run.status == "rolled_back"
    assert monitor.card("deploy").status == "failed"
    assert monitor.card("notify_rollback").status == "succeeded"
    assert monitor.selected == "deploy"
    path = save(desk, tmp_path / "run-monitor.png")
    image = QImage(str(path))
    assert distinct_colours(image) > 200
    # The graph itself is drawn (cards, status pills), not an empty canvas.
    origin = monitor.view.mapTo(desk, QPoint(0, 0))
    assert distinct_colours(image, QRect(origin, monitor.view.size())) > 60
    timeline = monitor.timeline.mapTo(desk, QPoint(0, 0))
    assert distinct_colours(image, QRect(timeline, monitor.timeline.size())) > 20

    # The waiting run too: its approval is offered in the window.
    waiting = started[2]
    run(page.open_run(waiting))
    assert monitor.card("approve").status == "waiting"
    assert monitor.approval.isVisible()
    image = QImage(str(save(desk, tmp_path / "run-monitor-waiting.png")))
    assert distinct_colours(image) > 200
