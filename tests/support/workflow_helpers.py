"""Building workflow templates and reading run logs in tests."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SCRIPT = str(Path(__file__).with_name("workflow_script.py"))


def notify(node_id: str, message: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "notify", "inputs": {"message": message or node_id}, **extra}


def script(node_id: str, *args: str, **extra: Any) -> dict[str, Any]:
    """A script step running tests/support/workflow_script.py with `args`."""
    inputs = {"command": [sys.executable, SCRIPT, *args]}
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
