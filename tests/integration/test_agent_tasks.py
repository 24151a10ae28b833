"""Tasks through the gateway to a real agent over mutual TLS, recorded in `deploy.tasks`.

The agent's runner is injected (the one thing faked: what a task does on the host); everything
else is real: the orchestrator key signs, the queue is PostgreSQL, the link is gRPC over mTLS,
the journal is the agent's sqlite file.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from stella_core.crypto.keys import SigningKey
from stella_core.deploy.model import TaskSpec, TaskStatus, TaskType
from stella_core.deploy.tasks import TaskQueue
from stella_core.deploy.taskwire import seal_task
from stella_core.errors import ConnectorError
from tests.integration.test_agent_enrollment import Orchestra, RunningAgent, orchestra
from tests.integration.test_promotions import role_conn
from tests.support.workflow_helpers import wait_until

__all__ = ["orchestra"]


class Runner:
    """Counts what it runs; may be held (a long task) or fail like the real runner does."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, dict[str, Any]]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()

    def __call__(self, task_type, payload, host, *, log, allow_commands) -> dict[str, Any]:
        self.runs.append((str(task_type), payload))
        self.entered.set()
        log(f"running {task_type} on {host.description}")
        self.hold.wait(30)
        if payload.get("fail"):
            error = ConnectorError("the runtime is missing on this machine")
            error.error_type = "runtime-missing"  # type: ignore[attr-defined]
            raise error
        return {"echo": payload, "allowed": allow_commands}


def submit(
    orchestra: Orchestra,
    agent_id: UUID,
    payload: dict[str, Any],
    *,
    key: SigningKey | None = None,
    idempotency_key: str | None = None,
    task_type: TaskType = TaskType.INSPECT,
    ttl: timedelta = timedelta(minutes=10),
) -> UUID:
    orchestrator = orchestra.orchestrator
    now = datetime.now(UTC)
    spec = TaskSpec(
        id=uuid4(),
        type=task_type,
        target="box-1",
        target_id=uuid4(),
        agent_id=agent_id,
        idempotency_key=idempotency_key or f"k-{uuid4()}",
        payload=payload,
        issued_at=now,
        expires_at=now + ttl,
    )
    queue = TaskQueue(orchestrator.db)
    if key is None:  # the orchestrator key, as the deploy service signs
        return queue.submit_signed(spec, orchestrator.evidence.orchestrator_signer)
    with orchestrator.db.transaction() as conn:
        return queue.submit(conn, spec, seal_task(spec, key))


def queue_of(orchestra: Orchestra) -> TaskQueue:
    return TaskQueue(orchestra.orchestrator.db)


def test_a_signed_task_runs_and_its_log_and_result_are_recorded(
    orchestra: Orchestra, world, tmp_path: Path
) -> None:
    state = orchestra.enroll("box-1", tmp_path / "s")
    (tmp_path / "s" / "config.json").write_text('{"allow_commands": [["podman", "ps"]]}')
    runner = Runner()
    running = RunningAgent(tmp_path / "s", runner=runner)
    try:
        running.wait_linked()
        task_id = submit(orchestra, state.agent_id, {"project": "web", "runtime": "podman"})
        outcome = queue_of(orchestra).wait(task_id, timeout=20)
    finally:
        running.close()
    assert outcome is not None
    assert outcome.ok, outcome
    assert outcome.outputs == {
        "echo": {"project": "web", "runtime": "podman"},
        "allowed": [["podman", "ps"]],
    }
    assert runner.runs == [("inspect", {"project": "web", "runtime": "podman"})]
    events = queue_of(orchestra).events(task_id)
    kinds = [e["kind"] for e in events]
    assert kinds[:2] == ["queued", "delivered"]
    assert {"started", "log", "result"} <= set(kinds)
    assert any(e["data"].get("line") == "running inspect on this machine" for e in events)
    # People read their tenant's tasks but never write them.
    person = role_conn(world, orchestra.admin.profile.name)
    assert person.execute("SELECT status FROM deploy.tasks").fetchone()[0] == "succeeded"
    cur = person.execute("UPDATE deploy.tasks SET status = 'queued'")
    assert cur.rowcount == 0
    with pytest.raises(psycopg.Error):
        person.execute(
            "INSERT INTO deploy.task_events (tenant_id, task_id, kind) SELECT"
            " tenant_id, id, 'result' FROM deploy.tasks"
        )
    person.close()


def test_a_failure_comes_back_with_its_kind(orchestra: Orchestra, tmp_path: Path) -> None:
    state = orchestra.enroll("box-2", tmp_path / "s")
    running = RunningAgent(tmp_path / "s", runner=Runner())
    try:
        running.wait_linked()
        task_id = submit(orchestra, state.agent_id, {"fail": True})
        outcome = queue_of(orchestra).wait(task_id, timeout=20)
    finally:
        running.close()
    assert outcome is not None
    assert not outcome.ok
    assert outcome.error_type == "runtime-missing"
    assert outcome.error == "the runtime is missing on this machine"
    assert queue_of(orchestra).get(task_id).status is TaskStatus.FAILED


def test_a_task_not_signed_by_the_orchestrator_key_is_refused_and_not_run(
    orchestra: Orchestra, tmp_path: Path
) -> None:
    """Someone who can put a row in deploy.tasks (here: the orchestrator's own login, the only
    one allowed to) but holds another key cannot make an agent act."""
    state = orchestra.enroll("box-3", tmp_path / "s")
    runner = Runner()
    running = RunningAgent(tmp_path / "s", runner=runner)
    try:
        running.wait_linked()
        forged = submit(
            orchestra,
            state.agent_id,
            {"argv": ["rm", "-rf", "/"]},
            key=SigningKey.generate(),
            task_type=TaskType.EXECUTE_COMMAND,
        )
        outcome = queue_of(orchestra).wait(forged, timeout=20)
        # A task addressed to another agent, properly signed, is refused too.
        other = submit(orchestra, uuid4(), {"project": "x"})
    finally:
        running.close()
    assert outcome is not None
    assert not outcome.ok
    assert outcome.error_type == "rejected:unknown-key"
    assert runner.runs == []
    # The other agent's task was never even handed to this one.
    assert queue_of(orchestra).get(other).deliveries == 0


def test_an_expired_task_is_not_run(orchestra: Orchestra, tmp_path: Path) -> None:
    state = orchestra.enroll("box-4", tmp_path / "s")
    runner = Runner()
    from tests.integration.test_agent_enrollment import Shifted

    # The agent's clock is an hour ahead: the task looks expired to it and is not run.
    running = RunningAgent(tmp_path / "s", runner=runner, clock=Shifted(timedelta(hours=1)))
    try:
        running.wait_linked()
        task_id = submit(orchestra, state.agent_id, {"project": "x"})
        outcome = queue_of(orchestra).wait(task_id, timeout=20)
    finally:
        running.close()
    assert outcome is not None
    assert outcome.error_type == "rejected:expired"
    assert runner.runs == []


def test_a_task_redelivered_after_an_agent_restart_runs_once(
    orchestra: Orchestra, tmp_path: Path
) -> None:
    state = orchestra.enroll("box-5", tmp_path / "s")
    runner = Runner()
    runner.hold.clear()
    first = RunningAgent(tmp_path / "s", runner=runner)
    first.wait_linked()
    task_id = submit(orchestra, state.agent_id, {"project": "web"}, idempotency_key="deploy-42")
    assert runner.entered.wait(20)
    # The orchestrator goes away while the task runs: its result cannot be sent.
    orchestra.gateway.stop()
    runner.hold.set()
    wait_until(lambda: not first.agent.connected.is_set(), timeout=10)
    wait_until(lambda: (first.agent.journal.lookup("deploy-42") or ("",))[0] == "done", timeout=10)
    first.close()  # the agent restarts too
    assert queue_of(orchestra).get(task_id).status in (TaskStatus.DELIVERED, TaskStatus.RUNNING)

    orchestra.gateway.start()
    # Told where the gateway is now (the embedded default's way), it finds it all the same.
    second = RunningAgent(tmp_path / "s", runner=runner, server=orchestra.server)
    try:
        outcome = queue_of(orchestra).wait(task_id, timeout=30)
    finally:
        second.close()
    assert outcome is not None
    assert outcome.ok
    assert len(runner.runs) == 1
    state_after = queue_of(orchestra).get(task_id)
    assert state_after.deliveries == 2


def test_a_task_running_when_the_agent_died_is_answered_as_interrupted(
    orchestra: Orchestra, tmp_path: Path
) -> None:
    state = orchestra.enroll("box-6", tmp_path / "s")
    stuck = Runner()
    stuck.hold.clear()
    first = RunningAgent(tmp_path / "s", runner=stuck)
    first.wait_linked()
    task_id = submit(orchestra, state.agent_id, {"project": "web"})
    assert stuck.entered.wait(20)
    first.stopper.set()
    first.agent.stop()  # the process dies: its thread is abandoned mid-task
    runner = Runner()
    second = RunningAgent(tmp_path / "s", runner=runner)
    try:
        outcome = queue_of(orchestra).wait(task_id, timeout=30)
    finally:
        second.close()
        stuck.hold.set()
    assert outcome is not None
    assert not outcome.ok
    assert outcome.error == "interrupted by an agent restart"
    assert runner.runs == []


def test_submitting_twice_with_one_idempotency_key_gives_one_task(orchestra: Orchestra) -> None:
    agent_id = uuid4()
    first = submit(orchestra, agent_id, {"a": 1}, idempotency_key="same")
    second = submit(orchestra, agent_id, {"a": 1}, idempotency_key="same")
    assert first == second
    assert queue_of(orchestra).for_agent(agent_id) == [
        (first, queue_of(orchestra).for_agent(agent_id)[0][1])
    ]


def test_a_task_nobody_answers_expires(orchestra: Orchestra) -> None:
    task_id = submit(orchestra, uuid4(), {"a": 1}, ttl=timedelta(seconds=1))
    outcome = queue_of(orchestra).wait(task_id, timeout=10)
    assert outcome is not None
    assert outcome.error_type == "expired"
    assert queue_of(orchestra).get(task_id).status is TaskStatus.EXPIRED
    cancel = threading.Event()
    cancel.set()
    other = submit(orchestra, uuid4(), {"a": 2})
    assert queue_of(orchestra).wait(other, timeout=10, cancel=cancel) is None


def test_a_cancelled_task_not_yet_started_is_not_run(orchestra: Orchestra, tmp_path: Path) -> None:
    state = orchestra.enroll("box-7", tmp_path / "s")
    runner = Runner()
    runner.hold.clear()
    running = RunningAgent(tmp_path / "s", runner=runner)
    try:
        running.wait_linked()
        busy = submit(orchestra, state.agent_id, {"n": 1})
        assert runner.entered.wait(20)
        waiting = submit(orchestra, state.agent_id, {"n": 2})
        wait_until(lambda: queue_of(orchestra).get(waiting).deliveries == 1, timeout=10)
        assert queue_of(orchestra).cancel(waiting)
        wait_until(lambda: str(waiting) in running.agent._cancelled, timeout=10, what="cancel")
        runner.hold.set()
        assert queue_of(orchestra).wait(busy, timeout=20).ok
    finally:
        running.close()
    assert runner.runs == [("inspect", {"n": 1})]
    assert queue_of(orchestra).get(waiting).status is TaskStatus.CANCELLED
