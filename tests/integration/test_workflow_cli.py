"""The workflow CLI contract as acceptance checks drive it: flags, JSON fields, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.workflow_helpers import SCRIPT, notify, script, template

RUN_KEYS = {"run_id", "status", "steps"}
STEP_KEYS = {"id", "status", "attempts", "outputs", "started_at", "finished_at"}


def stella(env: dict[str, str], *args: str, timeout: float = 120):
    return subprocess.run(
        [sys.executable, "-m", "stella_core.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ok_json(env, *args):
    result = stella(env, *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def write(path: Path, doc: dict) -> str:
    path.write_text(json.dumps(doc))
    return str(path)


def test_validate_needs_no_database(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "STELLA_DATABASE_URL"}
    env["STELLA_HOME"] = str(tmp_path / "home")
    good = write(tmp_path / "good.json", template("ok", [notify("a"), notify("b")], [("a", "b")]))
    result = stella(env, "workflow", "validate", good, "--output", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"valid": True, "errors": []}

    bad = write(
        tmp_path / "bad.json",
        template(
            "bad",
            [
                notify("a"),
                {"id": "b", "type": "teleport"},
                notify("c", "${{ steps.a.outputs.nope }}"),
            ],
            [("a", "b"), ("b", "a"), ("a", "c")],
        ),
    )
    result = stella(env, "workflow", "validate", bad, "--output", "json")
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert report["valid"] is False
    assert all(set(e) == {"node", "field", "message"} for e in report["errors"])
    nodes = {(e["node"], e["field"]) for e in report["errors"]}
    assert ("b", "type") in nodes
    assert any(e["node"] == "c" and "nope" in e["message"] for e in report["errors"])
    assert any("cycle" in e["message"] for e in report["errors"])

    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    result = stella(env, "workflow", "validate", str(garbage), "--output", "json")
    assert result.returncode == 2
    assert json.loads(result.stdout)["valid"] is False
    text = stella(env, "workflow", "validate", bad)
    assert text.returncode == 2
    assert "b.type:" in text.stdout
    # Validation is pure: no database was started or created.
    assert not (tmp_path / "home" / "pg").exists()
    assert stella(env, "workflow", "validate", str(tmp_path / "missing.json")).returncode == 2


def test_contract_against_an_external_database(world, tmp_path: Path) -> None:
    env = world.env()
    world.open()  # the first admin
    ok_json(env, "user", "add", "bob", "--role", "approver", "--output", "json")
    assert ok_json(env, "workflow", "settings", "--local-executor", "on", "-o", "json") == {
        "local_executor": True
    }
    doc = template(
        "release-flow",
        [
            notify("hello", "${{ 'hello ' + inputs.who }}"),
            script("build", "echo", "${{ inputs.who }}"),
            {
                "id": "gate",
                "type": "approval",
                "inputs": {"approvers": ["approver"], "required": 1},
            },
            notify("done"),
        ],
        [("hello", "build"), ("build", "gate"), ("gate", "done")],
        inputs={"who": {"type": "string", "required": True}, "n": {"type": "integer"}},
    )
    path = write(tmp_path / "flow.json", doc)
    imported = ok_json(env, "workflow", "import", path, "--output", "json")
    assert set(imported) == {"name", "version", "id"}
    assert (imported["name"], imported["version"]) == ("release-flow", 1)

    exported = stella(env, "workflow", "export", "release-flow")
    assert exported.returncode == 0, exported.stderr
    document = json.loads(exported.stdout)
    assert document["nodes"][0]["inputs"] == doc["nodes"][0]["inputs"]
    again = write(tmp_path / "exported.json", document)
    assert ok_json(env, "workflow", "import", again, "--output", "json") == imported
    assert json.loads(stella(env, "workflow", "export", "release-flow", "--version", "1").stdout)
    listed = ok_json(env, "workflow", "list", "--output", "json")
    assert [(t["name"], t["version"]) for t in listed] == [("release-flow", 1)]

    started = ok_json(
        env, "run", "start", "release-flow", "--input", "who=world", "--input", "n=3", "-o", "json"
    )
    assert set(started) == {"run_id", "status"}
    assert started["status"] == "pending"
    run_id = started["run_id"]

    # No `stella serve`: the waiter runs the steps, then stops at the approval.
    waiting = stella(env, "run", "wait", run_id, "--timeout", "3", "--output", "json")
    assert waiting.returncode == 1
    shown = json.loads(waiting.stdout)
    assert set(shown) == RUN_KEYS
    assert shown["status"] == "waiting"
    steps = {s["id"]: s for s in shown["steps"]}
    assert all(set(s) == STEP_KEYS for s in shown["steps"])
    assert steps["hello"]["outputs"] == {"message": "hello world"}
    assert steps["build"]["outputs"]["stdout"] == "world\n"
    assert steps["gate"]["status"] == "waiting"

    denied = stella(env, "run", "approve", run_id, "--step", "gate")  # the admin is not listed
    assert denied.returncode == 1
    assert "may not decide" in denied.stderr
    ok_json(env, "--profile", "bob", "run", "approve", run_id, "--step", "gate", "-o", "json")
    done = stella(env, "run", "wait", run_id, "--timeout", "60", "--output", "json")
    assert done.returncode == 0, done.stderr
    shown = ok_json(env, "run", "show", run_id, "--output", "json")
    assert shown["status"] == "succeeded"
    assert {s["id"]: s["status"] for s in shown["steps"]} == dict.fromkeys(
        ("build", "done", "gate", "hello"), "succeeded"
    )
    gate = next(s for s in shown["steps"] if s["id"] == "gate")
    assert gate["outputs"] == {"approved_by": ["bob"]}
    assert gate["attempts"] == 1
    assert gate["started_at"] <= gate["finished_at"]
    listed = ok_json(env, "run", "list", "--output", "json")
    assert [(r["run_id"], r["status"]) for r in listed] == [(run_id, "succeeded")]
    events = ok_json(env, "run", "events", run_id, "--output", "json")
    assert events[0]["kind"] == "run.created"
    assert events[-1]["kind"] == "run.succeeded"
    assert any(e["kind"] == "step.approved" and e["actor"] == "bob" for e in events)

    # bad input exits 2, with the reason on stderr
    assert stella(env, "run", "start", "nope").returncode == 2
    assert stella(env, "run", "start", "release-flow").returncode == 2  # `who` is required
    assert stella(env, "run", "start", "release-flow", "--input", "who").returncode == 2
    assert stella(env, "run", "show", "not-a-run").returncode == 2


def test_cancel_and_reject_through_the_cli(world, tmp_path: Path) -> None:
    env = world.env()
    world.open()
    ok_json(env, "user", "add", "bob", "--role", "approver", "--output", "json")
    ok_json(env, "workflow", "settings", "--local-executor", "on", "-o", "json")
    slow = template(
        "slow", [script("sleepy", "sleep", "60"), notify("after")], [("sleepy", "after")]
    )
    ok_json(env, "workflow", "import", write(tmp_path / "slow.json", slow), "-o", "json")
    serve = subprocess.Popen(
        [sys.executable, "-m", "stella_core.cli.main", "serve", "--workers", "1"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run_id = ok_json(env, "run", "start", "slow", "-o", "json")["run_id"]
        for _ in range(200):
            shown = ok_json(env, "run", "show", run_id, "-o", "json")
            if {s["id"]: s["status"] for s in shown["steps"]}["sleepy"] == "running":
                break
        cancelled = ok_json(env, "run", "cancel", run_id, "-o", "json")
        assert cancelled["status"] == "cancelled"
        assert stella(env, "run", "wait", run_id, "--timeout", "30").returncode == 1
    finally:
        serve.terminate()
        assert serve.wait(timeout=30) == 0
    statuses = {
        s["id"]: s["status"] for s in ok_json(env, "run", "show", run_id, "-o", "json")["steps"]
    }
    assert statuses == {"after": "cancelled", "sleepy": "cancelled"}

    gated = template(
        "gated",
        [{"id": "gate", "type": "approval", "inputs": {"approvers": ["bob"], "required": 1}}],
    )
    ok_json(env, "workflow", "import", write(tmp_path / "gated.json", gated), "-o", "json")
    started = stella(env, "run", "start", "gated", "--wait", "--timeout", "2", "-o", "json")
    assert started.returncode == 1  # --wait: the run did not succeed (yet)
    assert json.loads(started.stdout)["status"] == "waiting"
    run_id = json.loads(started.stdout)["run_id"]
    rejected = ok_json(
        env,
        "--profile",
        "bob",
        "run",
        "reject",
        run_id,
        "--step",
        "gate",
        "--comment",
        "no",
        "-o",
        "json",
    )
    assert rejected["status"] == "failed"
    assert stella(env, "run", "wait", run_id).returncode == 1


def test_start_then_wait_without_serve_on_the_embedded_default(tmp_path: Path) -> None:
    """One machine, nothing configured: the waiter runs the run, scripts included."""
    env = {k: v for k, v in os.environ.items() if k != "STELLA_DATABASE_URL"}
    env["STELLA_HOME"] = str(tmp_path / "home")
    doc = template(
        "local",
        [
            script("build", "echo", "${{ 'built ' + inputs.version }}"),
            {"id": "pause", "type": "wait", "inputs": {"seconds": 1}},
            notify("announce", "${{ steps.build.outputs.stdout }}"),
        ],
        [("build", "pause"), ("pause", "announce")],
        inputs={"version": {"type": "string", "default": "1.0"}},
    )
    ok_json(env, "workflow", "import", write(tmp_path / "local.json", doc), "-o", "json")
    assert ok_json(env, "workflow", "settings", "-o", "json") == {
        "local_executor": True,
        "allow_unsandboxed": False,
        "sandbox": "bubblewrap",
    }
    run_id = ok_json(env, "run", "start", "local", "--input", "version=2.1", "-o", "json")["run_id"]
    waited = stella(env, "run", "wait", run_id, "--timeout", "60", "-o", "json")
    assert waited.returncode == 0, waited.stderr
    shown = ok_json(env, "run", "show", run_id, "-o", "json")
    assert shown["status"] == "succeeded"
    outputs = {s["id"]: s["outputs"] for s in shown["steps"]}
    assert outputs["build"]["stdout"] == "built 2.1\n"
    assert outputs["announce"] == {"message": "built 2.1\n"}
    assert outputs["pause"] == {"waited_seconds": 1}
    assert SCRIPT  # the steps ran the test helper script through the local executor
