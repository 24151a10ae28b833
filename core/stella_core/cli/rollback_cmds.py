"""`stella rollback --env ENV [--to RELEASE] [--reason TEXT]`."""

from __future__ import annotations

import argparse
from typing import Any

from stella_core.cli.common import Leaf, acting, out
from stella_core.cli.promotion_cmds import _promotion_lines, _waiting
from stella_core.cli.promotion_cmds import local_agent_while_driving as _local_agent

DESCRIPTION = """\
Go back to an earlier release on every target of an environment, by digest.

Without --to, the release is the newest one (by creation), other than the one every target runs
now, whose exact digests every target of the environment still holds according to its version
sticker (stickers are signed by the orchestrator and remember their target's last five
releases). With --to, that release must be held by every target. A target whose sticker cannot
be read, is missing or does not verify makes the rollback refuse, naming it.

A rollback is a promotion of that release to the environment, marked as a rollback: the
environment's policy decides it as any promotion (approvals, freeze and deployment windows,
and where the environment asks for separation of duties, its requester cannot approve it).
Once approved it runs the environment's workflow, whose deploy step deploys the release by
digest: that workflow is the rollback's workflow path (one that declares an input `kind` gets
`rollback`, so its conditions can tell, e.g. `${{ inputs.kind == 'rollback' }}`). When the run
ends, a signed `rollback` evidence packet records each target's release and digests before,
the release gone back to, the reason and the outcome (`stella evidence verify` checks it
offline).

Prints {"release", "promotion_id", "status"} (status as `stella promotion show` has it:
deployed, awaiting_approval, failed, ...). Exit code 0 when the rollback was requested (whatever
its status), 2 when it is refused (nothing requested), 1 on other failures."""


def cmd_rollback(args: argparse.Namespace) -> None:
    # This machine's agent (on the embedded default) answers both the sticker reads and the
    # run's deploy, so it runs for the whole command, once.
    with acting(args) as stella, _local_agent(stella, args.env):
        promotion = stella.rollbacks.rollback(args.env, to=args.to, reason=args.reason or "")
        if not args.no_wait and promotion.run_id is not None and promotion.status == "deploying":
            # As `stella promote` does: the approved rollback's run is driven here.
            stella.workflows.wait_run(promotion.run_id, timeout=args.timeout)
            promotion = stella.promotions.get(promotion.id)
    value: dict[str, Any] = {
        "release": promotion.release,
        "promotion_id": str(promotion.id),
        "status": promotion.status.value,
        **promotion.to_json(),
    }
    out(args, value, _promotion_lines(value))


def group_rollback(groups: Any, leaf: Leaf, help_: str) -> None:
    p = leaf(groups, "rollback", cmd_rollback, help_)
    p.description = DESCRIPTION
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--env", required=True, help="the environment to roll back")
    p.add_argument(
        "--to",
        default=None,
        metavar="RELEASE",
        help="the release to go back to (default: the newest on every target)",
    )
    p.add_argument("--reason", default="", help="why (recorded in the promotion and the packet)")
    _waiting(p)


GROUPS = {"rollback": group_rollback}
