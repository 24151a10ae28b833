"""How a `deploy` step rolls a release out: the strategy and its settings, read from the step's
inputs, and the plans they make of an environment's targets (batches, canary rungs, the idle
blue-green group). Pure: no I/O.

- all-at-once: every target at once (the default).
- rolling: batches of `batch_size` targets (a count or "NN%" of the targets, rounded up), never
  more than `max_unavailable` at once (a count or "NN%", rounded down, at least one), each
  healthy before the next starts, `pause_seconds` between them.
- canary: rungs by cumulative percentage (`canary_percentages`, ascending, ending at 100), each
  healthy before the next; with `canary_approval` a promotion approval is needed between rungs.
- blue-green: `groups` names two target groups; the step deploys to the idle one (`phase`
  "deploy"); after the workflow's own switch step, a second deploy step with `phase` "retire"
  records the new group as live and stops the old one. The product does not move traffic
  itself: the switch is the workflow's, e.g.

      deploy  {strategy: blue-green, groups: [blue, green]}         -> outputs.group (idle)
      switch  {type: script, command: [repoint-lb, ${{ steps.deploy.outputs.group }}]}
      retire  {type: deploy, strategy: blue-green, groups: [blue, green], phase: retire}

  The live group is `deploy.group_switches`' newest row (`DeployService.live_group_in`),
  written by the orchestrator only; the first deployment goes to the first group.

A canary that waits for approvals parks between rungs; its step's `timeout_seconds` bounds the
wait (set it long enough for an approver to look).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from stella_core.errors import DefinitionError

STRATEGIES = ("all-at-once", "rolling", "canary", "blue-green")
PHASES = ("deploy", "retire")
MAX_PAUSE_SECONDS = 3600
MAX_RUNGS = 10
_PERCENT = re.compile(r"^(100|[1-9][0-9]?)%$")
_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")

T = TypeVar("T")

Amount = int | str  # a count, or a percentage such as "25%"


@dataclass(frozen=True)
class Rollout:
    strategy: str = "all-at-once"
    batch_size: Amount | None = None
    max_unavailable: Amount | None = None
    canary_percentages: tuple[int, ...] = (10, 50, 100)
    groups: tuple[str, str] | None = None
    pause_seconds: int = 0
    rollback_on_failure: bool = True
    canary_approval: bool = False
    phase: str = "deploy"


def _amount(value: Any, name: str) -> Amount:
    if isinstance(value, bool):
        raise DefinitionError(f"{name} must be a whole number or a percentage", field=name)
    if isinstance(value, int):
        if value < 1:
            raise DefinitionError(f"{name} must be at least 1", field=name)
        return value
    if isinstance(value, str) and _PERCENT.match(value.strip()):
        return value.strip()
    raise DefinitionError(
        f'{name} must be a whole number of targets or a percentage such as "25%"', field=name
    )


def rollout_of(inputs: Mapping[str, Any]) -> Rollout:
    """The rollout a deploy step's inputs ask for, or DefinitionError naming the input at fault
    (inputs come from a template someone wrote: every one is checked)."""
    strategy = inputs.get("strategy", "all-at-once")
    if strategy not in STRATEGIES:
        raise DefinitionError(
            f"strategy must be one of {', '.join(STRATEGIES)}, not {str(strategy)[:40]!r}",
            field="strategy",
        )
    batch = inputs.get("batch_size")
    unavailable = inputs.get("max_unavailable")
    for name in ("batch_size", "max_unavailable"):
        if inputs.get(name) is not None and strategy != "rolling":
            raise DefinitionError(f"{name} applies to the rolling strategy only", field=name)
    percentages: tuple[int, ...] = Rollout.canary_percentages
    raw = inputs.get("canary_percentages")
    if raw is not None:
        if strategy != "canary":
            raise DefinitionError(
                "canary_percentages applies to the canary strategy only", field="canary_percentages"
            )
        if (
            not isinstance(raw, list)
            or not 1 <= len(raw) <= MAX_RUNGS
            or not all(isinstance(p, int) and not isinstance(p, bool) for p in raw)
        ):
            raise DefinitionError(
                f"canary_percentages must be a list of 1 to {MAX_RUNGS} whole percentages",
                field="canary_percentages",
            )
        if any(not 1 <= p <= 100 for p in raw) or any(a >= b for a, b in itertools.pairwise(raw)):
            raise DefinitionError(
                "canary_percentages must rise strictly, each from 1 to 100",
                field="canary_percentages",
            )
        if raw[-1] != 100:
            raise DefinitionError(
                "canary_percentages must end at 100 (the last rung reaches every target)",
                field="canary_percentages",
            )
        percentages = tuple(raw)
    groups: tuple[str, str] | None = None
    raw_groups = inputs.get("groups")
    if strategy == "blue-green" or raw_groups is not None:
        if strategy != "blue-green":
            raise DefinitionError("groups applies to the blue-green strategy only", field="groups")
        if (
            not isinstance(raw_groups, list)
            or len(raw_groups) != 2
            or not all(isinstance(g, str) and _GROUP.match(g) for g in raw_groups)
            or raw_groups[0] == raw_groups[1]
        ):
            raise DefinitionError(
                "groups must name two different target groups (blue-green)", field="groups"
            )
        groups = (raw_groups[0], raw_groups[1])
    pause = inputs.get("pause_seconds", 0)
    if isinstance(pause, bool) or not isinstance(pause, int) or not 0 <= pause <= MAX_PAUSE_SECONDS:
        raise DefinitionError(
            f"pause_seconds must be a whole number from 0 to {MAX_PAUSE_SECONDS}",
            field="pause_seconds",
        )
    flags = {}
    for name, default in (("rollback_on_failure", True), ("canary_approval", False)):
        value = inputs.get(name, default)
        if not isinstance(value, bool):
            raise DefinitionError(f"{name} must be true or false", field=name)
        flags[name] = value
    if flags["canary_approval"] and strategy != "canary":
        raise DefinitionError(
            "canary_approval applies to the canary strategy only", field="canary_approval"
        )
    phase = inputs.get("phase", "deploy")
    if phase not in PHASES or (phase != "deploy" and strategy != "blue-green"):
        raise DefinitionError(
            "phase must be deploy or retire, and retire applies to blue-green only",
            field="phase",
        )
    return Rollout(
        strategy=strategy,
        batch_size=None if batch is None else _amount(batch, "batch_size"),
        max_unavailable=None if unavailable is None else _amount(unavailable, "max_unavailable"),
        canary_percentages=percentages,
        groups=groups,
        pause_seconds=pause,
        rollback_on_failure=flags["rollback_on_failure"],
        canary_approval=flags["canary_approval"],
        phase=phase,
    )


def resolve(amount: Amount, total: int, *, round_up: bool) -> int:
    """A count of targets out of `total`: a percentage rounded up (batch sizes) or down (how
    many may be down at once), never below one."""
    if isinstance(amount, int):
        return max(1, amount)
    share = int(amount.rstrip("%")) * total / 100
    return max(1, math.ceil(share) if round_up else math.floor(share))


def plan_batches(
    targets: Sequence[T], batch_size: Amount | None, max_unavailable: Amount | None
) -> list[list[T]]:
    """Rolling batches, in the targets' order. A batch is at most `batch_size` targets and at
    most `max_unavailable` (a target being deployed is unavailable); with neither, one."""
    total = len(targets)
    if total == 0:
        return []
    down = None if max_unavailable is None else resolve(max_unavailable, total, round_up=False)
    # Without a batch size, as many at once as may be down.
    size = resolve(batch_size, total, round_up=True) if batch_size is not None else down or 1
    if down is not None:
        size = min(size, down)
    size = max(1, min(size, total))
    return [list(targets[i : i + size]) for i in range(0, total, size)]


def plan_rungs(targets: Sequence[T], percentages: Sequence[int]) -> list[list[T]]:
    """Canary rungs: the targets each rung adds, so that after rung i, percentages[i]% of the
    targets (rounded up, at least one) run the release. Rungs that would add nothing are
    dropped (few targets, close percentages)."""
    total = len(targets)
    rungs: list[list[T]] = []
    done = 0
    for p in percentages:
        reach = min(total, max(1, math.ceil(p * total / 100)))
        if reach > done:
            rungs.append(list(targets[done:reach]))
            done = reach
    return rungs


def idle_group(groups: tuple[str, str], live: str | None) -> str:
    """The group a blue-green deployment goes to: the one not live (the first when none is)."""
    return groups[1] if live == groups[0] else groups[0]
