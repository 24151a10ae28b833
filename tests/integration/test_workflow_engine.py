"""The workflow engine against real PostgreSQL: graphs, parallel branches, retries, timeouts,
approvals, cancel, continue, rollback, conditions, the executor setting."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from stella_core.errors import AlreadyExistsError, AuthorizationError, DefinitionError
from stella_core.tenancy.model import ProductRole
from tests.support.workflow_helpers import (
    lines,
    notify,
    overlap,
    processes_mentioning,
    script,
    spans,
    statuses,
    template,
)


@contextmanager
def serving(stella, count: int = 2, **options) -> Iterator[list]:
    """`count` workers in threads of this process, like `stella serve --workers count`."""
    stop = threading.Event()
    workers = [stella.workflows.worker(**options) for _ in range(count)]
    threads = [threading.Thread(target=w.run_forever, args=(stop,)) for w in workers]
    for t in threads:
        t.start()
    try:
        yield workers
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)


def person(world, admin, name: str, role: ProductRole):
    user, password = admin.tenancy.add_user(name, role)
    admin.save_profile_for(user.name, password)
    return world.open(name)


def run_to_end(stella, name: str, timeout: float = 30, **start):
    run = stella.workflows.start_run(name, **start)
    return stella.workflows.wait_run(run.id, timeout=timeout)


def wait_for(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def admin(world):
    stella = world.open()
    stella.workflows.set_local_executor(True)
    return stella


def test_diamond_branches_run_in_parallel_with_two_workers(admin, effects: Path) -> None:
    admin.workflows.import_template(
        template(
            "diamond",
            [
                notify("a"),
                script("b", "effect", str(effects), "--sleep", "1"),
                script("c", "effect", str(effects), "--sleep", "1"),
                notify("d"),
            ],
            [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")],
        )
    )
    with serving(admin, 2):
        run = admin.workflows.start_run("diamond")
        run = admin.workflows.wait_run(run.id, timeout=30, drive=False)
    assert run.status == "succeeded"
    times = spans(admin.workflows.run_events(run.id))
    # b and c were running at the same time; d only after both, a before both.
    assert overlap(times["b"], times["c"])
    assert times["d"][0] >= max(times["b"][1], times["c"][1])
    assert times["a"][1] <= min(times["b"][0], times["c"][0])
    workers = {
        e.details["worker"] for e in admin.workflows.run_events(run.id) if e.kind == "step.started"
    }
    assert len(workers) == 2
    assert sorted(line.split()[0] for line in lines(effects / "effects.log")) == ["b", "c"]


def test_wide_fan_out_joins_once(admin, effects: Path) -> None:
    wide = [notify(f"n{i}") for i in range(40)]
    sleepers = [script(f"s{i}", "effect", str(effects), "--sleep", "0.4") for i in range(4)]
    middle = [n["id"] for n in wide + sleepers]
    admin.workflows.import_template(
        template(
            "fan",
            [notify("root"), *wide, *sleepers, notify("join")],
            [("root", m) for m in middle] + [(m, "join") for m in middle],
        )
    )
    with serving(admin, 2):
        run = admin.workflows.start_run("fan")
        run = admin.workflows.wait_run(run.id, timeout=60, drive=False)
    assert run.status == "succeeded"
    assert set(statuses(run).values()) == {"succeeded"}
    events = admin.workflows.run_events(run.id)
    assert [e.node_id for e in events if e.kind == "step.started"].count("join") == 1
    times = spans(events)
    assert any(overlap(times[a], times[b]) for a in times for b in times if a < b)
    assert times["join"][0] >= max(times[m][1] for m in middle)
    # The log's sequence is gap-free.
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert len(lines(effects / "effects.log")) == 4


def test_retry_with_backoff_then_success(admin, effects: Path) -> None:
    retry = {"max_attempts": 3, "backoff_initial_ms": 300, "backoff_factor": 2}
    admin.workflows.import_template(
        template("flaky", [script("s", "effect", str(effects), "--fail-first", "2", retry=retry)])
    )
    run = run_to_end(admin, "flaky")
    assert run.status == "succeeded"
    step = run.steps[0]
    assert step.attempts == 3
    assert step.outputs["stdout"].strip() == "done"
    events = admin.workflows.run_events(run.id)
    retrying = [e for e in events if e.kind == "step.retrying"]
    assert [e.details["delay_ms"] for e in retrying] == [300, 600]
    assert "exited with code 3" in retrying[0].details["error"]
    starts = [e.at for e in events if e.kind == "step.started"]
    # Each retry started no sooner than its backoff after the failure was recorded.
    for failed, started in zip(retrying, starts[1:], strict=True):
        assert (started - failed.at).total_seconds() >= failed.details["delay_ms"] / 1000
    # Every attempt carried the same idempotency key; the effect happened once.
    assert [line.split()[1] for line in lines(effects / "executions.log")] == ["1", "2", "3"]
    assert lines(effects / "effects.log") == [f"s {step.idempotency_key}"]


def test_retries_exhausted_fail_the_run_and_cut_the_rest(admin) -> None:
    admin.workflows.import_template(
        template(
            "doomed",
            [
                {
                    "id": "f",
                    "type": "fail",
                    "inputs": {"message": "broken"},
                    "retry": {"max_attempts": 2, "backoff_initial_ms": 0},
                },
                notify("after"),
            ],
            [("f", "after")],
        )
    )
    run = run_to_end(admin, "doomed")
    assert run.status == "failed"
    assert statuses(run) == {"f": "failed", "after": "cancelled"}
    attempts = {s.id: s.attempts for s in run.steps}
    assert attempts == {"f": 2, "after": 0}
    assert "broken" in (run.error or "")


def test_timeouts_kill_scripts_and_fire_timers(admin) -> None:
    admin.workflows.import_template(
        template("slow", [script("s", "sleep", "30", timeout_seconds=1)])
    )
    admin.workflows.import_template(
        template(
            "long-wait",
            [{"id": "w", "type": "wait", "inputs": {"seconds": 60}, "timeout_seconds": 1}],
        )
    )
    started = time.monotonic()
    slow = run_to_end(admin, "slow")
    waited = run_to_end(admin, "long-wait")
    assert time.monotonic() - started < 25
    assert slow.status == "timed_out"
    assert statuses(slow) == {"s": "timed_out"}
    assert slow.steps[0].outputs["exit_code"] is None
    assert "timed out after 1 s" in (slow.steps[0].error or "")
    assert waited.status == "timed_out"
    assert statuses(waited) == {"w": "timed_out"}


def _approval_template(required: int = 2) -> dict:
    gate = {
        "id": "gate",
        "type": "approval",
        "inputs": {"approvers": ["approver", "erin"], "required": required},
    }
    return template("gated", [notify("a"), gate, notify("b")], [("a", "gate"), ("gate", "b")])


def test_approval_waits_without_a_worker_then_counts_distinct_eligible_people(world, admin) -> None:
    bob = person(world, admin, "bob", ProductRole.APPROVER)
    carol = person(world, admin, "carol", ProductRole.APPROVER)
    alice = person(world, admin, "alice", ProductRole.RELEASE_MANAGER)
    admin.workflows.import_template(_approval_template())
    run = alice.workflows.start_run("gated")
    worker = admin.workflows.worker()
    assert worker.run_once()  # a
    assert worker.run_once()  # gate: starts waiting
    assert not worker.run_once()  # nothing to do: the approval holds no worker
    run = admin.workflows.get_run(run.id)
    assert run.status == "waiting"
    assert statuses(run)["gate"] == "waiting"

    with pytest.raises(AuthorizationError, match="may not decide"):
        alice.workflows.approve(run.id, "gate")
    bob.workflows.approve(run.id, "gate", "looks good")
    with pytest.raises(AlreadyExistsError):
        bob.workflows.approve(run.id, "gate")
    assert statuses(admin.workflows.get_run(run.id))["gate"] == "waiting"
    assert not worker.run_once()
    carol.workflows.approve(run.id, "gate")
    gate = next(s for s in admin.workflows.get_run(run.id).steps if s.id == "gate")
    assert gate.status == "succeeded"
    assert gate.outputs == {"approved_by": ["bob", "carol"]}
    assert worker.run_once()  # b
    run = admin.workflows.get_run(run.id)
    assert run.status == "succeeded"
    decided = [
        (e.kind, e.actor, e.details["person"])
        for e in admin.workflows.run_events(run.id)
        if e.kind == "step.approved"
    ]
    # The orchestrator writes the log; a decision's entry names who decided, as their own
    # decision row (stamped in their session) says.
    assert decided == [("step.approved", "bob", "bob"), ("step.approved", "carol", "carol")]
    actions = [e.action for e in admin.tenancy.audit_entries()]
    assert actions.count("workflow.step.approve") == 2


def test_rejection_fails_the_approval(world, admin) -> None:
    bob = person(world, admin, "bob", ProductRole.APPROVER)
    admin.workflows.import_template(_approval_template(required=1))
    run = admin.workflows.start_run("gated")
    worker = admin.workflows.worker()
    while worker.run_once():
        pass
    bob.workflows.reject(run.id, "gate", "not today")
    run = admin.workflows.get_run(run.id)
    assert run.status == "failed"
    assert statuses(run) == {"a": "succeeded", "gate": "failed", "b": "cancelled"}
    assert "rejected by bob: not today" in (run.error or "")
    with pytest.raises(DefinitionError, match="has ended"):
        bob.workflows.approve(run.id, "gate")


def test_approval_timeout(admin) -> None:
    doc = _approval_template(required=1)
    doc["nodes"][1]["timeout_seconds"] = 1
    admin.workflows.import_template(doc)
    run = run_to_end(admin, "gated")
    assert run.status == "timed_out"
    assert statuses(run)["gate"] == "timed_out"


def test_cancel_stops_running_scripts_and_pending_steps(admin, effects: Path) -> None:
    admin.workflows.import_template(
        template(
            "cancel-me",
            [script("long", "effect", str(effects), "--sleep", "60"), notify("after")],
            [("long", "after")],
        )
    )
    with serving(admin, 1):
        run = admin.workflows.start_run("cancel-me")
        wait_for(lambda: lines(effects / "executions.log"), what="the script to start")
        assert processes_mentioning(str(effects))  # bwrap and the script in its sandbox
        admin.workflows.cancel_run(run.id)
        cancelled = wait_for(
            lambda: statuses(admin.workflows.get_run(run.id))["long"] == "cancelled",
            what="the running step to be stopped",
        )
        assert cancelled
    run = admin.workflows.get_run(run.id)
    assert run.status == "cancelled"
    assert statuses(run) == {"long": "cancelled", "after": "cancelled"}
    assert wait_for(lambda: not processes_mentioning(str(effects)), what="the script to end")
    with pytest.raises(DefinitionError, match="ended already"):
        admin.workflows.cancel_run(run.id)


def test_on_failure_continue(admin) -> None:
    admin.workflows.import_template(
        template(
            "tolerant",
            [
                notify("a"),
                {"id": "f", "type": "fail", "inputs": {"message": "meh"}, "on_failure": "continue"},
                notify("b"),
            ],
            [("a", "f"), ("f", "b")],
        )
    )
    run = run_to_end(admin, "tolerant")
    assert run.status == "succeeded"
    assert statuses(run) == {"a": "succeeded", "f": "continued", "b": "succeeded"}


def test_rollback_runs_with_the_failed_runs_outputs(admin) -> None:
    admin.workflows.import_template(
        template(
            "deploy",
            [
                notify("build", "v1"),
                {
                    "id": "deploy",
                    "type": "fail",
                    "inputs": {"message": "boom"},
                    "on_failure": "rollback",
                },
                notify("smoke"),
                notify("undo", "${{ 'undo ' + steps.build.outputs.message }}", rollback=True),
                notify("report", "rolled back", rollback=True),
            ],
            [("build", "deploy"), ("deploy", "smoke"), ("undo", "report")],
        )
    )
    run = run_to_end(admin, "deploy")
    assert run.status == "rolled_back"
    assert run.rollback_from == "deploy"
    assert statuses(run) == {
        "build": "succeeded",
        "deploy": "failed",
        "smoke": "cancelled",
        "undo": "succeeded",
        "report": "succeeded",
    }
    undo = next(s for s in run.steps if s.id == "undo")
    assert undo.outputs == {"message": "undo v1"}
    kinds = [e.kind for e in admin.workflows.run_events(run.id)]
    assert kinds.index("run.rolling_back") < kinds.index("run.rolled_back")


def test_unused_rollback_path_is_skipped_on_success(admin) -> None:
    admin.workflows.import_template(template("fine", [notify("a"), notify("undo", rollback=True)]))
    run = run_to_end(admin, "fine")
    assert run.status == "succeeded"
    assert statuses(run) == {"a": "succeeded", "undo": "skipped"}


def test_false_condition_skips_the_step_and_what_only_it_leads_to(admin) -> None:
    admin.workflows.import_template(
        template(
            "conditional",
            [
                notify("a"),
                notify("b", condition="${{ inputs.deploy }}"),
                notify("c"),
                notify("d"),
                notify("e"),
                notify("f"),
            ],
            [("a", "b"), ("b", "c"), ("c", "e"), ("a", "d"), ("d", "e"), ("c", "f")],
            inputs={"deploy": {"type": "boolean", "default": False}},
        )
    )
    run = run_to_end(admin, "conditional")
    assert run.status == "succeeded"
    assert statuses(run) == {
        "a": "succeeded",
        "b": "skipped",
        "c": "skipped",  # only reachable through b
        "d": "succeeded",
        "e": "succeeded",  # also reachable through d
        "f": "skipped",
    }
    again = run_to_end(admin, "conditional", inputs={"deploy": "true"})
    assert set(statuses(again).values()) == {"succeeded"}


def test_a_failing_expression_fails_the_step_with_its_message(admin) -> None:
    admin.workflows.import_template(
        template(
            "div",
            [notify("a", "${{ string(10 / inputs.zero) }}")],
            inputs={"zero": {"type": "integer", "default": 0}},
        )
    )
    run = run_to_end(admin, "div")
    assert run.status == "failed"
    assert "divide by zero" in (run.steps[0].error or "")
    assert run.steps[0].attempts == 1


def test_script_outputs_exit_codes_and_capped_output(admin) -> None:
    admin.workflows.import_template(
        template(
            "scripts",
            [
                script("hello", "echo", "hello", inputs={"env": {"EXTRA": "1"}}),
                script("flood", "flood", "200000"),
                script("bad", "exit", "3", on_failure="continue"),
            ],
            [("hello", "flood"), ("flood", "bad")],
        )
    )
    run = run_to_end(admin, "scripts")
    assert run.status == "succeeded"
    steps = {s.id: s for s in run.steps}
    assert steps["hello"].outputs == {"exit_code": 0, "stdout": "hello\n", "stderr": "err\n"}
    assert len(steps["flood"].outputs["stdout"]) < 70_000
    assert "more bytes not kept" in steps["flood"].outputs["stdout"]
    assert steps["bad"].status == "continued"
    assert steps["bad"].outputs["exit_code"] == 3
    assert steps["bad"].outputs["stdout"] == "bye\n"
    assert "exited with code 3" in (steps["bad"].error or "")


def test_local_executor_off_fails_scripts_with_a_clear_error(world) -> None:
    stella = world.open()  # an external database: the setting starts off
    assert stella.workflows.settings() == {
        "local_executor": False,
        "allow_unsandboxed": False,
        "sandbox": "bubblewrap",
    }
    stella.workflows.import_template(template("s", [script("x", "echo", "hi")]))
    run = run_to_end(stella, "s")
    assert run.status == "failed"
    assert "local executor is turned off" in (run.steps[0].error or "")
    assert run.steps[0].outputs is None


def test_retry_step_resumes_a_failed_run_without_rerunning_what_succeeded(
    admin, effects: Path
) -> None:
    admin.workflows.import_template(
        template(
            "resume",
            [
                script("first", "effect", str(effects)),
                script("flaky", "effect", str(effects), "--fail-first", "1"),
                notify("last"),
            ],
            [("first", "flaky"), ("flaky", "last")],
        )
    )
    run = run_to_end(admin, "resume")
    assert run.status == "failed"
    assert statuses(run) == {"first": "succeeded", "flaky": "failed", "last": "cancelled"}
    with pytest.raises(DefinitionError, match="did not fail"):
        admin.workflows.retry_step(run.id, "first")
    admin.workflows.retry_step(run.id, "flaky")
    run = admin.workflows.wait_run(run.id, timeout=30)
    assert run.status == "succeeded"
    executed = [line.split()[0] for line in lines(effects / "executions.log")]
    assert executed == ["first", "flaky", "flaky"]


def test_start_run_checks_inputs_and_snapshots_the_release(admin) -> None:
    from stella_core.releases.layout import OciLayoutWriter
    from stella_core.releases.model import ComponentPin

    layout = admin.home / "layout"
    OciLayoutWriter(layout).write_image("team/web", "1.0", files={"a.txt": b"hello"})
    admin.releases.add_registry("local", str(layout))
    admin.releases.add_component("web", "local/team/web")
    release = admin.releases.create_release("r1", [ComponentPin(component="web", tag="1.0")])
    admin.workflows.import_template(
        template(
            "typed",
            [
                notify(
                    "a",
                    "${{ release.name + ' ' + release.components[0].digest }} x${{ inputs.n }}",
                )
            ],
            inputs={"n": {"type": "integer", "required": True}, "flag": {"type": "boolean"}},
        )
    )
    with pytest.raises(DefinitionError, match="required"):
        admin.workflows.start_run("typed", release="r1")
    with pytest.raises(DefinitionError, match="unknown input"):
        admin.workflows.start_run("typed", release="r1", inputs={"n": "1", "nope": "x"})
    with pytest.raises(DefinitionError, match="must be integer"):
        admin.workflows.start_run("typed", release="r1", inputs={"n": "one"})
    with pytest.raises(DefinitionError, match="no release"):
        admin.workflows.start_run("typed", release="r9", inputs={"n": "1"})
    run = admin.workflows.start_run("typed", release="r1", inputs={"n": "7"})
    assert run.inputs == {"n": 7, "flag": None}
    digest = release.components[0].digest
    assert run.release == {
        "name": "r1",
        "components": [{"name": "web", "repository": "team/web", "tag": "1.0", "digest": digest}],
    }
    run = admin.workflows.wait_run(run.id, timeout=30)
    assert run.steps[0].outputs == {"message": f"r1 {digest} x7"}


def test_http_check(admin) -> None:
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        admin.workflows.import_template(
            template(
                "probe",
                [
                    {"id": "up", "type": "http-check", "inputs": {"url": f"{base}/healthz"}},
                    {
                        "id": "gone",
                        "type": "http-check",
                        "inputs": {"url": f"{base}/nope", "expect_status": 200},
                        "on_failure": "continue",
                    },
                    {
                        "id": "missing",
                        "type": "http-check",
                        "inputs": {"url": f"{base}/nope", "expect_status": 404},
                    },
                ],
                [("up", "gone"), ("gone", "missing")],
            )
        )
        run = run_to_end(admin, "probe")
    finally:
        server.shutdown()
    steps = {s.id: s for s in run.steps}
    assert run.status == "succeeded"
    assert steps["up"].outputs == {"status": 200}
    assert steps["gone"].status == "continued"
    assert steps["gone"].outputs == {"status": 404}
    assert "expected 200" in (steps["gone"].error or "")
    assert steps["missing"].outputs == {"status": 404}
