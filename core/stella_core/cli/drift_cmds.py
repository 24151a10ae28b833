"""`stella drift …`: what really runs on targets, against what the database says should."""

from __future__ import annotations

import argparse
from typing import Any

from stella_core.cli.common import Leaf, acting, show


def cmd_drift_check(args: argparse.Namespace) -> None:
    """Check every target (of --env) now: its sticker and its running containers against its
    newest successful deployment. Each finding is recorded and a change of status leaves a
    `drift` evidence packet; environments that opted in get drifted targets redeployed.
    Exit 0 when the check ran, whatever it found (read `status`)."""
    from stella_core.errors import OrchestratorUnavailableError

    with acting(args) as stella:
        if stella.orchestrator is None:
            raise OrchestratorUnavailableError(
                "checking drift goes through the orchestrator, and this machine holds no "
                "orchestrator login for this tenant",
                remedy=("serve",),
            )
        from stella_core.agents.local import LOCAL_AGENT, local_agent_beside

        targets = stella.environments.list_targets(args.env)
        local = any(t.agent == LOCAL_AGENT for t in targets)
        with local_agent_beside(stella, wanted=local):
            found = stella.orchestrator.drift.check(args.env)
    value = [d.to_json() for d in found]

    def lines() -> list[str]:
        out = []
        for d in found:
            out.append(f"{d.target:20} {d.status.value:8} {d.reason or ''}".rstrip())
        return out or ["no targets"]

    show(args, value, lines)


def cmd_drift_status(args: argparse.Namespace) -> None:
    """Each target's newest recorded finding (nothing is checked now)."""
    with acting(args) as stella:
        found = stella.drift_findings(args.env)
    show(
        args,
        [d.to_json() for d in found],
        lambda: (
            [f"{d.target:20} {d.status.value:8} {d.checked_at:%Y-%m-%d %H:%M}" for d in found]
            or ["no findings yet"]
        ),
    )


def group_drift(groups: Any, leaf: Leaf, help_: str) -> None:
    drift = groups.add_parser("drift", help=help_).add_subparsers(dest="cmd", required=True)
    p = leaf(
        drift,
        "check",
        cmd_drift_check,
        "check targets for drift now: each one's status (in_sync, drifted, unknown) with its "
        "differences; exit 0 whatever it finds",
    )
    p.add_argument("--env", default=None, help="only this environment's targets")
    p = leaf(drift, "status", cmd_drift_status, "each target's newest drift finding")
    p.add_argument("--env", default=None, help="only this environment's targets")


GROUPS = {"drift": group_drift}
