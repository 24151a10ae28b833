"""A worker killed or stalled mid-step (`stella serve` processes): the step's command dies with
its worker or is fenced by the worker that takes over, never overlaps its retry, the lost lease
counts no attempt and the killed attempt's scratch directory is removed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.workflow_helpers import (
    lines,
    processes_mentioning,
    require_sandbox,
    script,
    template,
    wait_until,
)

LEASE_S = "2"


def serve(world, *, sandbox: bool) -> subprocess.Popen[str]:
    env = world.env()
    if not sandbox:
        # No bwrap on this worker's PATH: its scripts run unsandboxed (the tenant allows it),
        # so only the worker itself (PR_SET_PDEATHSIG) makes them die with it.
        env["PATH"] = "/nonexistent"
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stella_core.cli.main",
            "serve",
            "--workers",
            "1",
            "--lease-seconds",
            LEASE_S,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def servers() -> Iterator[list[subprocess.Popen[str]]]:
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


def _executions(effects: Path) -> list[tuple[str, str, str, str]]:
    """(step, attempt, execution id, scratch directory) per execution."""
    out = []
    for line in lines(effects / "executions.log"):
        step, attempt, _, execution, cwd = line.split(maxsplit=4)
        out.append((step, attempt, execution, cwd))
    return out


def _alive_between(effects: Path) -> dict[str, tuple[float, float]]:
    """(first tick, last tick) per execution of the sleeping step."""
    spans: dict[str, tuple[float, float]] = {}
    for line in lines(effects / "ticks.log"):
        _, execution, at = line.split()
        first, _ = spans.get(execution, (float(at), float(at)))
        spans[execution] = (first, float(at))
    return spans


def _start(admin, effects: Path, servers, world, *, sandbox: bool, sleep: float = 5):
    step = script("b", "effect", str(effects), "--sleep", str(sleep), "--ticks")
    admin.workflows.import_template(template("fenced", [step]))
    first = serve(world, sandbox=sandbox)
    servers.append(first)
    run = admin.workflows.start_run("fenced")
    wait_until(lambda: len(_alive_between(effects)) == 1, what="the step to be running")
    return first, run


def _check_once_in_flight(admin, run, effects: Path, first_pid: int) -> None:
    run = admin.workflows.get_run(run.id)
    assert run.status == "succeeded", run.error
    executions = _executions(effects)
    # Two executions of b, never at the same time: the second began after the first's last sign
    # of life.
    assert [e[0] for e in executions] == ["b", "b"]
    (_, _, old, old_cwd), (_, _, new, _) = executions
    spans = _alive_between(effects)
    assert spans[old][1] < spans[new][0]
    # The side effect itself happened once (the retry recognised it by its idempotency key).
    assert len(lines(effects / "effects.log")) == 1
    # The lost lease counted no attempt: both executions ran as attempt 1.
    b = run.steps[0]
    assert b.attempts == 1
    assert [e[1] for e in executions] == ["1", "1"]
    # The killed attempt's scratch directory is gone (and so is the finished one's).
    assert old_cwd.startswith("/")
    assert not Path(old_cwd).exists()
    assert not processes_mentioning(str(effects))
    expired = [e for e in admin.workflows.run_events(run.id) if e.kind == "step.lease_expired"]
    assert [e.details["previous_owner"].split(":")[2] for e in expired] == [str(first_pid)]
    assert expired[0].details["fenced"].startswith("on this host")


@pytest.mark.parametrize("sandbox", [True, False], ids=["sandboxed", "unsandboxed"])
def test_a_killed_workers_step_dies_with_it_and_runs_again_once(
    world, admin, servers, effects: Path, sandbox: bool
) -> None:
    if sandbox:
        require_sandbox()
    else:
        admin.workflows.set_unsandboxed(True)
    first, run = _start(admin, effects, servers, world, sandbox=sandbox)
    first.kill()  # SIGKILL: the worker cleans up nothing
    first.wait(timeout=10)
    try:
        # The command died with its worker, before any other worker was there to fence it.
        wait_until(lambda: not processes_mentioning(str(effects)), timeout=3, what="death")
    finally:
        for pid in processes_mentioning(str(effects)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    (_, _, _, scratch) = _executions(effects)[0]
    assert Path(scratch).is_dir()  # left behind by the killed worker, until the next one
    servers.append(serve(world, sandbox=sandbox))
    run = admin.workflows.wait_run(run.id, timeout=60, drive=False)
    _check_once_in_flight(admin, run, effects, first.pid)


def test_a_stalled_workers_step_is_fenced_before_it_runs_again(
    world, admin, servers, effects: Path
) -> None:
    """A worker that stops (SIGSTOP: its command runs on, its lease runs out) is fenced by the
    worker that takes the step over: that one kills the command before starting its own."""
    require_sandbox()
    # Long enough to outlast the takeover by far: it must be killed, not end by itself.
    first, run = _start(admin, effects, servers, world, sandbox=True, sleep=30)
    first.send_signal(signal.SIGSTOP)
    try:
        time.sleep(float(LEASE_S) + 0.5)
        # Still running, with the lease expired: a takeover now would overlap it.
        assert processes_mentioning(str(effects))
        servers.append(serve(world, sandbox=True))
        run = admin.workflows.wait_run(run.id, timeout=90, drive=False)
        _check_once_in_flight(admin, run, effects, first.pid)
        expired = next(
            e for e in admin.workflows.run_events(run.id) if e.kind == "step.lease_expired"
        )
        assert not expired.details["fenced"].endswith(": 0 process(es) killed")
    finally:
        first.kill()


def test_an_expired_lease_of_another_host_is_taken_only_after_its_grace(
    admin, effects: Path
) -> None:
    """A worker cannot see another host's processes: it leaves that host's expired lease alone
    until the grace has passed (by then the other worker has stopped its command)."""
    from stella_core.workflows.engine import run_tx

    admin.workflows.import_template(template("far", [script("s", "effect", str(effects))]))
    run = admin.workflows.start_run("far")
    elsewhere = admin.workflows.worker(lease_seconds=0.5)
    elsewhere.host = "another-host/boot/ns/1000"
    # It claims the step and is never heard of again (its host went away).
    assert run_tx(elsewhere.db, elsewhere._claim, tenant=False) is not None
    here = admin.workflows.worker(lease_seconds=5)
    here.fence_grace_seconds = 2.0
    time.sleep(1.0)
    assert not here.run_once()  # the lease expired, but its grace has not passed
    assert not lines(effects / "executions.log")
    waited = time.monotonic()
    wait_until(here.run_once, timeout=10, what="the takeover")
    assert time.monotonic() - waited > 0.8
    run = admin.workflows.get_run(run.id)
    assert run.status == "succeeded"
    assert run.steps[0].attempts == 1
    expired = [e for e in admin.workflows.run_events(run.id) if e.kind == "step.lease_expired"]
    assert [e.details["fenced"] for e in expired] == ["lease expired and its grace passed"]


def test_a_worker_that_cannot_renew_its_lease_stops_its_step_before_others_take_it(
    admin, effects: Path, monkeypatch
) -> None:
    """Self-fencing: cut off from the database, a worker stops its command once the lease it
    last renewed runs out, which is what lets another host take over after the grace."""
    from stella_core.errors import DatabaseError
    from stella_core.workflows.store import WorkflowStore

    admin.workflows.import_template(
        template("cut", [script("s", "effect", str(effects), "--sleep", "30", "--ticks")])
    )
    run = admin.workflows.start_run("cut")
    worker = admin.workflows.worker(lease_seconds=1.5)

    def unreachable(*args, **kwargs):
        raise DatabaseError("database unavailable: connection refused")

    monkeypatch.setattr(WorkflowStore, "heartbeat", unreachable)
    started = time.monotonic()
    assert worker.run_once()
    took = time.monotonic() - started
    # Stopped about when the lease ran out (plus the command's SIGTERM grace), not after 30 s.
    assert took < 8
    assert not processes_mentioning(str(effects))
    ticks = _alive_between(effects)
    assert len(ticks) == 1
    ((first, last),) = ticks.values()
    assert last - first < 1.5 + 0.5
    # Its outcome was not written: the step waits, lease expired, for a worker to take it over.
    step = admin.workflows.get_run(run.id).steps[0]
    assert step.status == "running"
    admin.workflows.cancel_run(run.id)
