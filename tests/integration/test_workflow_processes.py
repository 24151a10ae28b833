"""Workers in separate processes (`stella serve`): sharing one run, and one killed with SIGKILL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.workflow_helpers import (
    lines,
    notify,
    processes_mentioning,
    script,
    statuses,
    template,
    wait_until,
)


def serve(world, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "stella_core.cli.main", "serve", *args],
        env=world.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def servers(world) -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


@pytest.fixture
def admin(world):
    stella = world.open()
    stella.workflows.set_local_executor(True)
    return stella


def _kill_leftover_scripts(effects: Path) -> None:
    """Scripts die with their worker (bwrap --die-with-parent); make sure of it all the same."""
    for pid in processes_mentioning(str(effects)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def test_two_worker_processes_share_one_run(world, admin, servers, effects: Path) -> None:
    middle = [script(f"s{i}", "effect", str(effects), "--sleep", "0.3") for i in range(12)]
    ids = [n["id"] for n in middle]
    admin.workflows.import_template(
        template(
            "shared",
            [notify("root"), *middle, notify("join")],
            [("root", i) for i in ids] + [(i, "join") for i in ids],
        )
    )
    servers += [serve(world, "--workers", "1"), serve(world, "--workers", "1")]
    wait_until(lambda: admin.workflows.live_workers() == 2, what="two live workers")
    run = admin.workflows.start_run("shared")
    # Live `stella serve` workers: the waiter only watches, it runs nothing itself.
    run = admin.workflows.wait_run(run.id, timeout=60)
    assert run.status == "succeeded"
    # Each step executed exactly once, its side effect exactly once.
    executed = Counter(line.split()[0] for line in lines(effects / "executions.log"))
    assert executed == dict.fromkeys(ids, 1)
    assert sorted(line.split()[0] for line in lines(effects / "effects.log")) == sorted(ids)
    events = admin.workflows.run_events(run.id)
    started_by = {e.details["worker"].split(":")[2] for e in events if e.kind == "step.started"}
    assert started_by == {str(p.pid) for p in servers}
    # Clean shutdown: SIGTERM, exit 0, the workers are gone from the registry.
    for proc in servers:
        proc.send_signal(signal.SIGTERM)
    for proc in servers:
        assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
    assert admin.workflows.live_workers() == 0


def test_a_worker_killed_mid_step_loses_nothing(world, admin, servers, effects: Path) -> None:
    admin.workflows.import_template(
        template(
            "survive",
            [
                script("a", "effect", str(effects)),
                script("b", "effect", str(effects), "--sleep", "4"),
                script("c", "effect", str(effects)),
            ],
            [("a", "b"), ("b", "c")],
        )
    )
    first = serve(world, "--workers", "1", "--lease-seconds", "2")
    servers.append(first)
    try:
        run = admin.workflows.start_run("survive")
        wait_until(
            lambda: any(line.startswith("b ") for line in lines(effects / "executions.log")),
            what="step b to be running",
        )
        first.kill()  # SIGKILL: no cleanup at all
        first.wait(timeout=10)
        servers.append(serve(world, "--workers", "1", "--lease-seconds", "2"))
        run = admin.workflows.wait_run(run.id, timeout=60, drive=False)
    finally:
        _kill_leftover_scripts(effects)
    assert run.status == "succeeded", run.error
    assert set(statuses(run).values()) == {"succeeded"}
    executed = Counter(line.split()[0] for line in lines(effects / "executions.log"))
    # a completed before the kill and never ran again; b was taken over; c ran once.
    assert executed == {"a": 1, "b": 2, "c": 1}
    # The second execution of b recognised the first one's effect by its idempotency key.
    keys = {s.id: s.idempotency_key for s in run.steps}
    assert lines(effects / "effects.log") == [f"{n} {keys[n]}" for n in ("a", "b", "c")]
    b = next(s for s in run.steps if s.id == "b")
    assert b.attempts == 1  # the lost lease counted no attempt
    assert b.outputs["stdout"].strip() == "already done"
    expired = [e for e in admin.workflows.run_events(run.id) if e.kind == "step.lease_expired"]
    assert [e.node_id for e in expired] == ["b"]
    assert expired[0].details["previous_owner"].split(":")[2] == str(first.pid)


def test_sigterm_hands_a_running_step_back(world, admin, servers, effects: Path) -> None:
    admin.workflows.import_template(
        template("handback", [script("long", "effect", str(effects), "--sleep", "30")])
    )
    proc = serve(world, "--workers", "1", "--grace", "0.5")
    servers.append(proc)
    run = admin.workflows.start_run("handback")
    wait_until(lambda: lines(effects / "executions.log"), what="the script to start")
    assert processes_mentioning(str(effects))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    step = admin.workflows.get_run(run.id).steps[0]
    # Stopped after the grace period and handed back: claimable at once, lease released, and
    # the attempt not counted (it did not fail).
    assert (step.status, step.lease_owner, step.attempts) == ("ready", None, 0)
    wait_until(lambda: not processes_mentioning(str(effects)), what="the script to end")
    kinds = [e.kind for e in admin.workflows.run_events(run.id)]
    assert kinds[-1] == "step.released"
    assert admin.workflows.live_workers() == 0
    admin.workflows.cancel_run(run.id)


def test_serve_runs_a_promotion_and_seals_the_ledger_at_intervals(world, servers) -> None:
    """The approved promotion's workflow runs in `stella serve`, which also seals the ledger."""
    from stella_core.demo.seed import seed
    from stella_core.promotions.model import PromotionStatus

    admin = world.open()
    seed(admin)
    servers.append(serve(world, "--workers", "1", "--checkpoint-every", "0.5"))
    alice = world.open("alice")
    wait_until(lambda: alice.workflows.live_workers() >= 1, what="a live worker")
    promotion = alice.promotions.request("shop-2026.11.1", "dev")
    assert promotion.status is PromotionStatus.DEPLOYING
    wait_until(
        lambda: alice.promotions.get(promotion.id).status is PromotionStatus.DEPLOYED,
        what="the promotion deployed by the serving worker",
    )
    size = len(alice.evidence.find())
    wait_until(
        lambda: any(c.tree_size == size for c in alice.evidence.checkpoints()),
        what="a checkpoint over the whole ledger",
    )
