"""`stella demo seed` and `stella audit …`."""

from __future__ import annotations

import argparse
from typing import Any

from stella_core.cli.common import LIMIT, Leaf, acting, show


def cmd_demo_seed(args: argparse.Namespace) -> None:
    from stella_core.demo.seed import seed

    with acting(args) as stella:
        summary = seed(stella, history=not args.no_history)
    show(args, summary, lambda: [f"{k}: {v}" for k, v in summary.items()])


def cmd_audit_verify(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        count, problems = stella.tenancy.verify_audit()
    value = {"ok": not problems, "entries": count, "problems": problems}
    show(args, value, lambda: [f"{count} entries, {'ok' if not problems else 'BROKEN'}", *problems])
    if problems:
        raise SystemExit(1)


def cmd_audit_list(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        entries = stella.tenancy.audit_entries(args.limit)
    value = [e.model_dump(mode="json") for e in entries]
    show(
        args,
        value,
        lambda: [
            f"{e.chain_index:5} {e.at:%Y-%m-%d %H:%M:%S} {e.actor:12} {e.action:18} {e.entity_id}"
            for e in entries
        ],
    )


def group_demo(groups: Any, leaf: Leaf, help_: str) -> None:
    demo = groups.add_parser("demo", help=help_).add_subparsers(dest="cmd", required=True)
    p = leaf(demo, "seed", cmd_demo_seed, "create the demo people, environments and releases")
    p.add_argument(
        "--no-history",
        action="store_true",
        help="skip playing the demo's past promotions (dev and stage for every release)",
    )


def group_audit(groups: Any, leaf: Leaf, help_: str) -> None:
    audit = groups.add_parser("audit", help=help_).add_subparsers(dest="cmd", required=True)
    leaf(audit, "verify", cmd_audit_verify, "check the audit hash chain")
    p = leaf(audit, "list", cmd_audit_list, "list audit entries")
    p.add_argument("--limit", type=LIMIT, default=None)


GROUPS = {"demo": group_demo, "audit": group_audit}
