"""Rollout planning: batches, canary rungs, the idle blue-green group, and the deploy step's
inputs checked with errors that name the input."""

from __future__ import annotations

from typing import Any

import pytest

from stella_core.deploy.health import health_of
from stella_core.deploy.strategy import (
    idle_group,
    plan_batches,
    plan_rungs,
    resolve,
    rollout_of,
)
from stella_core.errors import DefinitionError

TARGETS = [f"t{i}" for i in range(1, 11)]


def test_rolling_batches_by_count_and_by_percentage() -> None:
    assert plan_batches(TARGETS[:4], 2, None) == [["t1", "t2"], ["t3", "t4"]]
    assert plan_batches(TARGETS[:5], 2, None) == [["t1", "t2"], ["t3", "t4"], ["t5"]]
    # 25% of 10 is 2.5: a batch rounds up.
    assert [len(b) for b in plan_batches(TARGETS, "25%", None)] == [3, 3, 3, 1]
    # No batch size: one target at a time.
    assert plan_batches(TARGETS[:3], None, None) == [["t1"], ["t2"], ["t3"]]
    # Bigger than the estate: one batch.
    assert plan_batches(TARGETS[:3], 10, None) == [TARGETS[:3]]
    assert plan_batches([], 2, None) == []


def test_max_unavailable_caps_each_batch_and_rounds_down() -> None:
    assert [len(b) for b in plan_batches(TARGETS, 5, 2)] == [2, 2, 2, 2, 2]
    # 15% of 10 is 1.5: at most one down at a time.
    assert [len(b) for b in plan_batches(TARGETS, "50%", "15%")] == [1] * 10
    # Only max_unavailable: batches as big as it allows.
    assert [len(b) for b in plan_batches(TARGETS, None, "30%")] == [3, 3, 3, 1]
    # A percentage that rounds to nothing still lets one through.
    assert resolve("1%", 10, round_up=False) == 1
    assert resolve("1%", 10, round_up=True) == 1
    assert resolve("100%", 7, round_up=True) == 7


def test_canary_rungs_are_cumulative_and_never_empty() -> None:
    assert plan_rungs(TARGETS, [10, 50, 100]) == [["t1"], TARGETS[1:5], TARGETS[5:]]
    # 4 targets, 10% -> 1, 50% -> 2, 100% -> 4.
    assert [len(r) for r in plan_rungs(TARGETS[:4], [10, 50, 100])] == [1, 1, 2]
    # Two targets: 10% and 20% both round up to one: the second rung would add nothing.
    assert [len(r) for r in plan_rungs(TARGETS[:2], [10, 20, 100])] == [1, 1]
    assert sum(len(r) for r in plan_rungs(TARGETS, [33, 66, 100])) == 10


def test_blue_green_deploys_to_the_group_not_live() -> None:
    assert idle_group(("blue", "green"), None) == "blue"
    assert idle_group(("blue", "green"), "blue") == "green"
    assert idle_group(("blue", "green"), "green") == "blue"


def test_inputs_default_to_all_at_once() -> None:
    rollout = rollout_of({})
    assert rollout.strategy == "all-at-once"
    assert rollout.rollback_on_failure is True
    rolling = rollout_of({"strategy": "rolling", "batch_size": "25%", "max_unavailable": 1})
    assert (rolling.batch_size, rolling.max_unavailable) == ("25%", 1)
    canary = rollout_of(
        {"strategy": "canary", "canary_percentages": [10, 100], "canary_approval": True}
    )
    assert canary.canary_percentages == (10, 100)
    bg = rollout_of({"strategy": "blue-green", "groups": ["blue", "green"], "phase": "retire"})
    assert (bg.groups, bg.phase) == (("blue", "green"), "retire")


@pytest.mark.parametrize(
    ("inputs", "field"),
    [
        ({"strategy": "big-bang"}, "strategy"),
        ({"strategy": "rolling", "batch_size": 0}, "batch_size"),
        ({"strategy": "rolling", "batch_size": "150%"}, "batch_size"),
        ({"strategy": "rolling", "batch_size": True}, "batch_size"),
        ({"strategy": "rolling", "max_unavailable": "x%"}, "max_unavailable"),
        ({"batch_size": 2}, "batch_size"),  # not rolling
        ({"strategy": "canary", "canary_percentages": [50, 10, 100]}, "canary_percentages"),
        ({"strategy": "canary", "canary_percentages": [10, 50]}, "canary_percentages"),
        ({"strategy": "canary", "canary_percentages": [0, 100]}, "canary_percentages"),
        ({"strategy": "canary", "canary_percentages": "10,100"}, "canary_percentages"),
        ({"strategy": "blue-green"}, "groups"),
        ({"strategy": "blue-green", "groups": ["blue", "blue"]}, "groups"),
        ({"strategy": "blue-green", "groups": ["blue", "../x"]}, "groups"),
        ({"strategy": "rolling", "groups": ["a", "b"]}, "groups"),
        ({"strategy": "rolling", "pause_seconds": -1}, "pause_seconds"),
        ({"strategy": "rolling", "rollback_on_failure": "yes"}, "rollback_on_failure"),
        ({"strategy": "rolling", "canary_approval": True}, "canary_approval"),
        ({"strategy": "rolling", "phase": "retire"}, "phase"),
    ],
)
def test_bad_inputs_name_the_input(inputs: dict[str, Any], field: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        rollout_of(inputs)
    assert caught.value.field == field


def test_health_checks_are_read_from_the_fragment_and_checked() -> None:
    check = health_of(
        "web", {"x-stella-health": {"url": "http://127.0.0.1:8080/{target}", "timeout": 5}}
    )
    assert check is not None
    assert check.url_for("edge") == "http://127.0.0.1:8080/edge"
    assert (check.expect_status, check.interval, check.polls) == (200, 1.0, 6)
    assert health_of("web", {"environment": {}}) is None
    assert health_of("web", None) is None
    for bad in (
        {"url": "file:///etc/passwd"},
        {"url": "http://x", "expect_status": 700},
        {"url": "http://x", "interval": 0},
        {"url": "http://x", "timeout": 10_000},
        {"url": "http://x", "retries": 3},
        "http://x",
    ):
        with pytest.raises(DefinitionError, match="x-stella-health"):
            health_of("web", {"x-stella-health": bad})
