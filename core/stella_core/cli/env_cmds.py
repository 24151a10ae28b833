"""`stella env …`: environments and their signed policy (freezes: promotion_cmds)."""

from __future__ import annotations

import argparse
from typing import Any

from stella_core.cli.common import ROLES, Leaf, acting, number_flag, show
from stella_core.environments.model import MAX_ORDER, MAX_REQUIRED_APPROVALS

# Flags' ranges: what the columns hold, and no more than makes sense.
ORDER = number_flag(0, MAX_ORDER)
APPROVALS = number_flag(0, MAX_REQUIRED_APPROVALS)


def cmd_env_add(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        from stella_core.cli.promotion_cmds import parse_quorum, parse_window

        env = stella.environments.add(
            args.name,
            order=args.order,
            required_approvals=args.required_approvals,
            separation_of_duties=args.separation_of_duties,
            workflow=args.workflow,
            approver_roles=args.approver_role or None,
            approver_persons=args.approver,
            quorum=parse_quorum(args.quorum),
            schedule=[parse_window(w) for w in args.window] if args.window else None,
            auto_promote_from=args.auto_promote_from,
            reason=args.reason,
        )
    show(args, env.to_json(), lambda: [f"added environment {env.name} (order {env.order})"])


def cmd_env_set(args: argparse.Namespace) -> None:
    """An admin changes an environment's policy: a new version, signed and audited."""
    from stella_core.cli.promotion_cmds import parse_quorum, parse_window

    changes: dict[str, Any] = {}
    if args.order is not None:
        changes["order"] = args.order
    if args.required_approvals is not None:
        changes["required_approvals"] = args.required_approvals
    if args.separation_of_duties is not None:
        changes["separation_of_duties"] = args.separation_of_duties
    if args.no_workflow:
        changes["workflow"] = None
    elif args.workflow is not None:
        changes["workflow"] = args.workflow
    if args.approver_role:
        changes["approver_roles"] = args.approver_role
    if args.no_approvers:
        changes["approver_persons"] = []
    elif args.approver:
        changes["approver_persons"] = args.approver
    if args.no_quorum:
        changes["quorum"] = {}
    elif args.quorum:
        changes["quorum"] = parse_quorum(args.quorum)
    if args.no_windows:
        changes["schedule"] = None
    elif args.window:
        changes["schedule"] = [parse_window(w) for w in args.window]
    if args.no_auto_promote:
        changes["auto_promote_from"] = None
    elif args.auto_promote_from is not None:
        changes["auto_promote_from"] = args.auto_promote_from
    remediate = args.remediate_drift
    if not changes and remediate is None:
        from stella_core.errors import DefinitionError

        raise DefinitionError("nothing to change: name at least one setting")
    with acting(args) as stella:
        if changes:
            env = stella.environments.set(args.name, reason=args.reason or "", **changes)
        else:
            env = stella.environments.get(args.name)
        if remediate is not None:
            # Not part of the signed policy (it decides no promotion): an admin's switch,
            # audited by the database.
            stella.environments.set_remediate_drift(args.name, remediate == "on")
        on = stella.environments.remediate_drift(args.name)
    show(
        args,
        {**env.to_json(), "remediate_drift": on},
        lambda: [
            f"environment {env.name}: policy version {env.policy_version}, drift "
            + ("remediated" if on else "detected only")
        ],
    )


def cmd_env_policies(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        versions = stella.environments.policy_versions(args.name)
    show(
        args,
        versions,
        lambda: [
            f"v{v['version']:<3} {v['changed_at']}  by {v['changed_by']}  "
            f"{v['packet'] or 'unsigned (from before signed policies)'}"
            for v in versions
        ],
    )


def cmd_env_list(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        envs = stella.environments.list()
    show(
        args,
        [e.to_json() for e in envs],
        lambda: [
            f"{e.order:3} {e.name:16} approvals={e.required_approvals} "
            f"sod={'yes' if e.separation_of_duties else 'no'}"
            for e in envs
        ],
    )


def group_env(groups: Any, leaf: Leaf, help_: str) -> None:
    from stella_core.cli import promotion_cmds

    env = groups.add_parser("env", help=help_).add_subparsers(dest="cmd", required=True)
    p = leaf(env, "add", cmd_env_add, "add an environment")
    p.add_argument("name")
    p.add_argument("--order", type=ORDER, required=True)
    p.add_argument("--required-approvals", type=APPROVALS, default=0)
    p.add_argument("--separation-of-duties", action="store_true")
    p.add_argument("--workflow", default=None, help="workflow template a promotion runs")
    p.add_argument(
        "--approver-role",
        action="append",
        default=[],
        choices=ROLES,
        help="a role whose people may approve (default: approver and admin)",
    )
    p.add_argument("--approver", action="append", default=[], metavar="PERSON")
    p.add_argument("--quorum", action="append", default=[], metavar="ROLE=N")
    p.add_argument(
        "--window",
        action="append",
        default=[],
        metavar="DAYS@HH:MM-HH:MM",
        help="allowed deployment window in UTC, e.g. mon-fri@08:00-18:00 (repeatable)",
    )
    p.add_argument("--auto-promote-from", default=None, metavar="ENV")
    p.add_argument("--reason", default="", help="why (kept in the signed policy packet)")
    p = leaf(env, "set", cmd_env_set, "admins: change an environment's policy (signed, audited)")
    p.add_argument("name")
    p.add_argument(
        "--reason", default=None, help="why the policy changes (required for a policy change)"
    )
    p.add_argument(
        "--remediate-drift",
        choices=["on", "off"],
        default=None,
        help="admins: on redeploys the expected release where drift is found; off (the "
        "default) only reports it",
    )
    p.add_argument("--order", type=ORDER, default=None)
    p.add_argument("--required-approvals", type=APPROVALS, default=None)
    p.add_argument(
        "--separation-of-duties",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bar the requester from approving (or --no-separation-of-duties)",
    )
    p.add_argument("--workflow", default=None)
    p.add_argument("--no-workflow", action="store_true", help="promotions run no workflow")
    p.add_argument("--approver-role", action="append", default=[], choices=ROLES)
    p.add_argument("--approver", action="append", default=[], metavar="PERSON")
    p.add_argument("--no-approvers", action="store_true", help="clear the named approvers")
    p.add_argument("--quorum", action="append", default=[], metavar="ROLE=N")
    p.add_argument("--no-quorum", action="store_true")
    p.add_argument("--window", action="append", default=[], metavar="DAYS@HH:MM-HH:MM")
    p.add_argument("--no-windows", action="store_true", help="deploy at any time")
    p.add_argument("--auto-promote-from", default=None, metavar="ENV")
    p.add_argument("--no-auto-promote", action="store_true")
    p = leaf(env, "policies", cmd_env_policies, "every version of an environment's policy")
    p.add_argument("name")
    leaf(env, "list", cmd_env_list, "list environments in promotion order")

    promotion_cmds.register_env(env, leaf)


GROUPS = {"env": group_env}
