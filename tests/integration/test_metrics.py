"""`stella serve --metrics-listen HOST:PORT`: Prometheus metrics read from the database at scrape
time. A real `stella serve` process, a real agent linked over mutual TLS, a real task and a real
workflow step; the scrape is parsed with the official client's parser."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stella_core.agents.daemon import enroll
from stella_core.agents.service import AgentService, enrollment_for
from stella_core.deploy.model import TaskType
from stella_core.deploy.tasks import TaskQueue
from tests.integration.test_agent_enrollment import RunningAgent
from tests.integration.test_agent_serve import listening, serve, stop
from tests.integration.test_agent_tasks import Runner
from tests.support.registry import free_port
from tests.support.workflow_helpers import template, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def scrape(port: int) -> Samples:
    answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    found: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_follow_agents_tasks_and_steps(world, tmp_path: Path, processes) -> None:
    admin = world.open()
    enroll_port, link_port, metrics_port = free_port(), free_port(), free_port()
    proc = serve(
        world,
        "--agent-listen",
        f"127.0.0.1:{enroll_port}",
        "--agent-link-listen",
        f"127.0.0.1:{link_port}",
        "--metrics-listen",
        f"127.0.0.1:{metrics_port}",
    )
    processes.append(proc)
    wait_until(
        lambda: proc.poll() is not None or (listening(enroll_port) and listening(metrics_port)),
        timeout=60,
        what="serve",
    )
    assert proc.poll() is None, proc.communicate()[1]
    # Bound to the address given only: another loopback address finds nothing there.
    with socket.socket() as sock:
        sock.settimeout(2)
        assert sock.connect_ex(("127.0.0.2", metrics_port)) != 0

    before = scrape(metrics_port)
    assert value(before, "stella_database_up") == 1
    assert value(before, "stella_agents_connected") == 0
    assert value(before, "process_resident_memory_bytes") > 0

    # An agent enrolls and links: connected goes to 1.
    orchestrator = admin.orchestrator
    agents = AgentService(
        admin.db, admin.tenancy, authority=lambda: enrollment_for(orchestrator).ca_fingerprint()
    )
    token = agents.create_token("edge-1")
    state = enroll(
        f"127.0.0.1:{enroll_port}", token.token, token.ca_fingerprint, tmp_path / "agent"
    )
    runner = Runner()
    running = RunningAgent(tmp_path / "agent", runner=runner)
    try:
        running.wait_linked()
        linked = wait_until(
            lambda: (s := scrape(metrics_port)) and value(s, "stella_agents_connected") == 1 and s,
            timeout=20,
            what="the agent counted as connected",
        )
        assert value(linked, "stella_agents_enrolled") == 1

        # A task runs on it: finished tasks of its type count one more success.
        from tests.integration.test_agent_tasks import submit

        class Orchestra:  # what `submit` needs of the test_agent_tasks fixture
            def __init__(self) -> None:
                self.orchestrator = orchestrator

        task_id = submit(Orchestra(), state.agent_id, {"project": "web", "runtime": "podman"})  # type: ignore[arg-type]
        outcome = TaskQueue(orchestrator.db).wait(task_id, timeout=30)
        assert outcome is not None
        assert outcome.ok
        assert len(runner.runs) == 1
        after_task = scrape(metrics_port)
        inspect = TaskType.INSPECT.value
        assert value(
            after_task, "stella_tasks_finished_total", type=inspect, status="succeeded"
        ) == (value(before, "stella_tasks_finished_total", type=inspect, status="succeeded") + 1)
        for status in ("queued", "delivered", "running"):
            assert value(after_task, "stella_tasks", type=inspect, status=status) == 0
    finally:
        running.close()

    # A workflow step run by serve's worker shows in the step-duration histogram.
    admin.workflows.import_template(
        template("tick", [{"id": "n", "type": "notify", "inputs": {"message": "tick"}}])
    )
    run = admin.workflows.start_run("tick")
    assert admin.workflows.wait_run(run.id, timeout=60, drive=False).status == "succeeded"
    steps = scrape(metrics_port)
    labels = {"step_type": "notify", "status": "succeeded"}
    assert value(steps, "stella_step_duration_seconds_count", **labels) == 1
    assert value(steps, "stella_step_duration_seconds_bucket", le="+Inf", **labels) == 1

    # The agent gone: it no longer counts as connected (the numbers come from the database).
    wait_until(
        lambda: value(scrape(metrics_port), "stella_agents_connected") == 0,
        # A link closed under load may be noticed only by keepalive (10 s + 10 s); an agent
        # no longer heard from counts as gone after 45 s in any case.
        timeout=60,
        what="the agent counted as gone",
    )
    err = stop(proc)
    assert f"metrics on http://127.0.0.1:{metrics_port}/metrics" in err
    assert not listening(metrics_port)


def test_a_bad_metrics_address_is_a_usage_error(world) -> None:
    world.open()
    result = subprocess.run(
        [sys.executable, "-m", "stella_core.cli.main", "serve", "--metrics-listen", "nonsense"],
        env=world.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "--metrics-listen" in result.stderr


def test_drift_counts_come_from_the_reader_given_and_a_failing_one_spoils_nothing(world) -> None:
    from dataclasses import dataclass

    from prometheus_client import generate_latest
    from prometheus_client.registry import CollectorRegistry
    from sqlalchemy import text

    from stella_core.metrics import StellaCollector, drift_counts_from

    @dataclass
    class Finding:
        status: str

    admin = world.open()
    db = admin.orchestrator.database(pool_size=1)

    def scrape_with(drift) -> Samples:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(StellaCollector(db, drift))
        found: Samples = {}
        for family in text_string_to_metric_families(generate_latest(registry).decode()):
            for sample in family.samples:
                found[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return found

    try:
        latest = [Finding("in_sync"), Finding("drifted"), Finding("in_sync")]
        counted = scrape_with(drift_counts_from(lambda conn: latest))
        assert value(counted, "stella_drift_targets", status="in_sync") == 2
        assert value(counted, "stella_drift_targets", status="drifted") == 1
        assert ("stella_drift_targets", frozenset({("status", "unknown")})) in counted

        # Without a reader there is no drift family at all (no zeros that would read as "in
        # sync"); a reader whose table is missing fails alone and the scrape goes on.
        def broken(conn):
            conn.execute(text("SELECT status FROM drift.no_such_table"))
            return {}

        for drift in (None, broken):
            samples = scrape_with(drift)
            assert not any(name == "stella_drift_targets" for name, _ in samples)
            assert value(samples, "stella_database_up") == 1
            assert ("stella_agents_connected", frozenset()) in samples
    finally:
        db.dispose()
