"""Building workflow templates and reading run logs in tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from stella_core.workflows.executors import MINIMAL_ENV
from stella_core.workflows.sandbox import INSTALL_HINT, Bubblewrap

SCRIPT = str(Path(__file__).with_name("workflow_script.py"))
# The system's Python, which the sandbox shows (a virtual environment's may live anywhere, e.g.
# under /root); the helper script needs only the standard library.
PYTHON = shutil.which("python3", path=MINIMAL_ENV["PATH"]) or "python3"


def require_sandbox() -> str:
    """bwrap's path; without a usable one the test fails in CI (STELLA_REQUIRE_SERVICES=1)
    and is skipped elsewhere."""
    status = Bubblewrap().status()
    if status.name is None:
        message = f"no usable bubblewrap sandbox ({status.problem}): {INSTALL_HINT}"
        if os.environ.get("STELLA_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    assert status.binary is not None
    return status.binary


def processes_mentioning(marker: str) -> list[int]:
    """Host PIDs of live processes whose command line mentions `marker` (a test's own effects
    directory). A sandboxed script knows only its PID inside the sandbox's namespace."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path("/proc", entry, "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry))
    return found


def notify(node_id: str, message: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "notify", "inputs": {"message": message or node_id}, **extra}


def script(node_id: str, *args: str, **extra: Any) -> dict[str, Any]:
    """A script step running tests/support/workflow_script.py with `args`."""
    inputs = {"command": [PYTHON, SCRIPT, *args]}
    inputs.update(extra.pop("inputs", {}))
    return {"id": node_id, "type": "script", "inputs": inputs, **extra}


def template(
    name: str,
    nodes: Iterable[dict[str, Any]],
    edges: Iterable[tuple[str, str]] = (),
    inputs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "name": name,
        "inputs": inputs or {},
        "nodes": list(nodes),
        "edges": [{"from": a, "to": b} for a, b in edges],
    }


def statuses(run: Any) -> dict[str, str]:
    return {s.id: s.status for s in run.steps}


def spans(events: Iterable[Any]) -> dict[str, tuple[Any, Any]]:
    """(started, finished) per step from the run log (the last attempt's start)."""
    started: dict[str, Any] = {}
    finished: dict[str, Any] = {}
    for e in events:
        if e.kind == "step.started":
            started[e.node_id] = e.at
        elif e.kind in ("step.succeeded", "step.failed", "step.continued", "step.timed_out"):
            finished[e.node_id] = e.at
    return {n: (started[n], finished[n]) for n in started if n in finished}


def overlap(a: tuple[Any, Any], b: tuple[Any, Any]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def wait_until(predicate, timeout: float = 30.0, what: str = "condition"):
    """Poll `predicate` until it returns something true (returned), or fail after `timeout` s."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
