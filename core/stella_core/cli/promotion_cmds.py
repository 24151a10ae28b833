"""`stella env freeze|freezes|freeze-lift|freeze-edit`, `stella promote`, `stella promotion …`,
`stella approve|reject`.

A refused decision (self-approval under separation of duties, not eligible, already decided)
exits 3 with the reason, so a script can tell a refusal from a failure (1) or bad input (2).
"""

from __future__ import annotations

import argparse
from typing import Any

from stella_core.cli.common import Leaf, acting, number_flag, out, seconds_flag, time_flag
from stella_core.environments.model import MAX_REQUIRED_APPROVALS
from stella_core.errors import DefinitionError, StellaError
from stella_core.limits import MAX_LIST_ROWS, MAX_WAIT_SECONDS, whole_number
from stella_core.promotions.model import EXCEPTION_GATES

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_quorum(items: list[str]) -> dict[str, int]:
    quorum: dict[str, int] = {}
    for item in items:
        role, sep, count = item.partition("=")
        if not role or not sep:
            raise DefinitionError(f"--quorum {item!r} must be ROLE=N with N at least 1")
        quorum[role] = whole_number(
            count, f"--quorum {role}=N:", low=1, high=MAX_REQUIRED_APPROVALS
        )
    return quorum


def parse_window(text: str) -> dict[str, Any]:
    """`mon,tue,wed,thu,fri@08:00-18:00` (UTC; `mon-fri` also works)."""
    days_text, _, hours = text.partition("@")
    start, _, end = hours.partition("-")
    days: list[str] = []
    for part in days_text.lower().split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise DefinitionError(
                f"--window {text!r}: days are {','.join(DAYS)} or a range such as mon-fri"
            )
        if last:
            i, j = DAYS.index(first), DAYS.index(last)
            days.extend(DAYS[i : j + 1] if i <= j else DAYS[i:] + DAYS[: j + 1])
        else:
            days.append(first)
    if not start or not end:
        raise DefinitionError(f"--window {text!r} must look like mon-fri@08:00-18:00 (UTC)")
    return {"days": sorted(set(days), key=DAYS.index), "start": start, "end": end}


# ------------------------------------------------------------------------------- commands
def cmd_env_freeze(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        freeze = stella.environments.freeze(
            args.name,
            start=time_flag(args.start, "--start"),
            end=time_flag(args.end, "--end"),
            reason=args.reason,
            allow=args.allow,
        )
    value = freeze.to_json()
    out(
        args,
        value,
        [f"{args.name} frozen from {value['start']} to {value['end']}: {freeze.reason}"],
    )


def _freeze_line(f: Any) -> str:
    lifted = f"  (lifted by {f.changed_by})" if f.lifted else ""
    return (
        f"{f.environment:12} {f.starts_at:%Y-%m-%d %H:%M} → {f.ends_at:%Y-%m-%d %H:%M}"
        f"  {f.reason}  [{str(f.id).replace('-', '')[:8]}]{lifted}"
    )


def cmd_env_freezes(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        freezes = stella.environments.freezes(args.name)
    value = [f.to_json() for f in freezes]
    out(args, value, [_freeze_line(f) for f in freezes] or ["no freeze windows"])


def cmd_env_freeze_lift(args: argparse.Namespace) -> None:
    """Admins: end a freeze now (kept and audited by the database)."""
    with acting(args) as stella:
        freeze = stella.environments.lift_freeze(args.freeze, reason=args.reason)
    out(
        args,
        freeze.to_json(),
        [f"lifted the freeze on {freeze.environment}: {_freeze_line(freeze)}"],
    )


def cmd_env_freeze_edit(args: argparse.Namespace) -> None:
    """Admins: change a freeze's dates, reason or allow list (kept and audited)."""
    changes: dict[str, Any] = {}
    if args.start is not None:
        changes["start"] = time_flag(args.start, "--start")
    if args.end is not None:
        changes["end"] = time_flag(args.end, "--end")
    if args.freeze_reason is not None:
        changes["freeze_reason"] = args.freeze_reason
    if args.no_allow:
        changes["allow"] = []
    elif args.allow:
        changes["allow"] = args.allow
    if not changes:
        raise DefinitionError(
            "nothing to change: give --start, --end, --freeze-reason, --allow or --no-allow"
        )
    with acting(args) as stella:
        freeze = stella.environments.edit_freeze(args.freeze, reason=args.reason, **changes)
    out(args, freeze.to_json(), [_freeze_line(freeze)])


def _promotion_lines(p: dict[str, Any]) -> list[str]:
    lines = [
        f"promotion {p['promotion_id']}: {p['release']} → {p['environment']}  [{p['status']}]",
        f"  requested by {p['requested_by']}; approvals {p['approval_progress']}",
    ]
    if p.get("status_reason"):
        lines.append(f"  {p['status_reason']}")
    for a in p["approvals"]:
        ok = "signature ok" if a["signature_ok"] else "SIGNATURE NOT VALID"
        lines.append(f"  {a['decision']:8} {a['by']:12} {a['at']}  {ok}  {a['comment']}")
    for g in p["gates"]:
        lines.append(f"  gate {g['gate']:14} {g['status']:8} {'; '.join(g['reasons'])}")
    return lines


def _settled(stella: Any, promotion: Any, args: argparse.Namespace) -> Any:
    """An approved promotion's workflow runs here (as `stella run wait` does) unless a
    `stella serve` is alive or --no-wait was given; the promotion as it ends up."""
    if args.no_wait or promotion.run_id is None or promotion.status.value != "deploying":
        return promotion
    with local_agent_while_driving(stella, promotion.environment):
        stella.workflows.wait_run(promotion.run_id, timeout=args.timeout)
    return stella.promotions.get(promotion.id)


def local_agent_while_driving(stella: Any, environment: str) -> Any:
    """This machine's agent, run here while this command drives a run that deploys to it."""
    from stella_core.agents.local import LOCAL_AGENT, local_agent_beside

    try:
        env = stella.environments.get(environment)
        deploys = env.workflow is not None and any(
            n.type == "deploy" for n in stella.workflows.get_template(env.workflow).nodes
        )
        local_target = any(
            t.agent == LOCAL_AGENT for t in stella.environments.list_targets(environment)
        )
    except StellaError:
        deploys = local_target = False
    return local_agent_beside(stella, wanted=deploys and local_target)


def cmd_promote(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        promotion = stella.promotions.request(args.release, args.to, args.reason or "")
        promotion = _settled(stella, promotion, args)
    value = promotion.to_json()
    out(args, value, _promotion_lines(value))


def cmd_promotion_show(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        value = stella.promotions.get(args.promotion_id).to_json()
    out(args, value, _promotion_lines(value))


def cmd_promotion_list(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        found = stella.promotions.find(
            statuses=args.status or None,
            environment=args.environment,
            release=args.release,
            limit=args.limit,
        )
    value = [p.to_json() for p in found]
    out(
        args,
        value,
        [
            f"{p.id}  {p.release:20} → {p.environment:10} {p.status.value:18} "
            f"{p.progress()} approvals  by {p.requested_by}"
            for p in found
        ]
        or ["no promotions"],
    )


def cmd_promotion_why(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        value = stella.promotions.why(args.promotion_id)
    lines = [
        f"promotion {value['promotion_id']} ({value['status']}): verdict {value['verdict']} "
        f"at {value['evaluated_at']}"
    ]
    for g in value["gates"]:
        mark = {"pass": "ok  ", "pending": "wait", "fail": "FAIL"}.get(g["status"], g["status"])
        lines.append(f"  [{mark}] {g['gate']}: {'; '.join(g['reasons'])}")
        lines += [f"         to unblock: {u}" for u in g["unblock"] if g["status"] != "pass"]
    eligible = ", ".join(value["eligible_approvers"]) or "nobody"
    lines.append(f"  approvals {value['approval_progress']}; may still approve: {eligible}")
    out(args, value, lines)


def cmd_promotion_cancel(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        value = stella.promotions.cancel(args.promotion_id, args.reason or "").to_json()
    out(args, value, _promotion_lines(value))


def cmd_promotion_evaluate(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        promotion = stella.promotions.evaluate(args.promotion_id)
        value = _settled(stella, promotion, args).to_json()
    out(args, value, _promotion_lines(value))


def cmd_promotion_inbox(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        found = stella.promotions.inbox()
    value = [p.to_json() for p in found]
    out(
        args,
        value,
        [
            f"{p.id}  {p.release} → {p.environment}  {p.progress()}  by {p.requested_by}"
            for p in found
        ]
        or ["nothing waits for your decision"],
    )


def cmd_promotion_exception(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        value = stella.promotions.grant_exception(
            args.release,
            args.env,
            reason=args.reason,
            expires_at=time_flag(args.expires, "--expires"),
            gate=args.gate,
        )
    out(
        args,
        value,
        [
            f"{value['release']} may pass the {value['gate']} gate of {value['environment']} "
            f"until {value['expires_at']} (signed by {value['granted_by']})"
        ],
    )


def cmd_approve(args: argparse.Namespace) -> None:
    if args.rung is not None:
        # A canary's approval to go on past a rung: the run goes on by itself (it re-checks).
        with acting(args) as stella:
            given = stella.promotions.approve_rung(args.promotion_id, args.rung, args.comment or "")
        out(
            args,
            given,
            [f"{given['approver']} approved rung {given['rung']} of {given['promotion_id']}"],
        )
        return
    with acting(args) as stella:
        promotion = stella.promotions.approve(args.promotion_id, args.comment or "")
        value = _settled(stella, promotion, args).to_json()
    out(args, value, _promotion_lines(value))


def cmd_reject(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        value = stella.promotions.reject(args.promotion_id, args.reason).to_json()
    out(args, value, _promotion_lines(value))


def _waiting(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="once approved, leave the workflow run to 'stella serve' instead of running it here",
    )
    p.add_argument(
        "--timeout",
        type=seconds_flag(0, MAX_WAIT_SECONDS),
        default=600.0,
        help="seconds to wait for the run",
    )


def register_env(env: Any, leaf: Leaf) -> None:
    """`env freeze` and `env freezes`, in the env group."""
    p = leaf(env, "freeze", cmd_env_freeze, "add a freeze window to an environment")
    p.add_argument("name")
    p.add_argument("--start", required=True, help="ISO 8601 time with a timezone")
    p.add_argument("--end", required=True, help="ISO 8601 time with a timezone")
    p.add_argument("--reason", required=True)
    p.add_argument(
        "--allow",
        nargs="+",
        action="extend",
        default=[],
        metavar="PERSON",
        help="people who may still promote into it",
    )
    p = leaf(env, "freezes", cmd_env_freezes, "list freeze windows")
    p.add_argument("name", nargs="?", default=None)
    p = leaf(env, "freeze-lift", cmd_env_freeze_lift, "admins: end a freeze window now")
    p.add_argument("freeze", help="the freeze's id (its first 8 characters are enough)")
    p.add_argument("--reason", required=True, help="why it is lifted")
    p = leaf(env, "freeze-edit", cmd_env_freeze_edit, "admins: change a freeze window")
    p.add_argument("freeze", help="the freeze's id (its first 8 characters are enough)")
    p.add_argument("--reason", required=True, help="why it changes")
    p.add_argument("--start", default=None, help="ISO 8601 time with a timezone")
    p.add_argument("--end", default=None, help="ISO 8601 time with a timezone")
    p.add_argument("--freeze-reason", default=None, help="the freeze's own reason, new text")
    p.add_argument(
        "--allow",
        nargs="+",
        action="extend",
        default=[],
        metavar="PERSON",
        help="people who may still promote into it (replaces the list)",
    )
    p.add_argument("--no-allow", action="store_true", help="nobody may promote into it")


def group_promote(groups: Any, leaf: Leaf, help_: str) -> None:
    p = leaf(groups, "promote", cmd_promote, help_)
    p.add_argument("release")
    p.add_argument("--to", required=True, help="target environment")
    p.add_argument("--reason", default="")
    _waiting(p)


def group_promotion(groups: Any, leaf: Leaf, help_: str) -> None:
    promo = groups.add_parser("promotion", help=help_).add_subparsers(dest="cmd", required=True)
    p = leaf(promo, "show", cmd_promotion_show, "a promotion, its approvals and gates")
    p.add_argument("promotion_id")
    p = leaf(promo, "why", cmd_promotion_why, "why a promotion is blocked, gate by gate")
    p.add_argument("promotion_id")
    p = leaf(promo, "list", cmd_promotion_list, "promotions, newest first")
    p.add_argument("--status", action="append", default=[])
    p.add_argument("--environment", default=None)
    p.add_argument("--release", default=None)
    p.add_argument("--limit", type=number_flag(1, MAX_LIST_ROWS), default=None)
    p = leaf(promo, "cancel", cmd_promotion_cancel, "cancel an open or running promotion")
    p.add_argument("promotion_id")
    p.add_argument("--reason", default="")
    p = leaf(promo, "evaluate", cmd_promotion_evaluate, "decide an open promotion again now")
    p.add_argument("promotion_id")
    _waiting(p)
    leaf(promo, "inbox", cmd_promotion_inbox, "promotions waiting for your decision")
    p = leaf(
        promo,
        "exception",
        cmd_promotion_exception,
        "admins: let a release pass the predecessor or schedule gate of an environment "
        "until a time (signed, expiring)",
    )
    p.add_argument("release")
    p.add_argument("--env", required=True)
    p.add_argument("--reason", required=True)
    p.add_argument("--expires", required=True, help="ISO 8601 time with a timezone")
    p.add_argument("--gate", default="predecessor", choices=list(EXCEPTION_GATES))


def group_approve(groups: Any, leaf: Leaf, help_: str) -> None:
    p = leaf(groups, "approve", cmd_approve, help_)
    p.add_argument("promotion_id")
    p.add_argument("--comment", default="")
    p.add_argument(
        "--rung",
        type=int,
        default=None,
        metavar="N",
        help="approve a deploying canary going on past its rung N (1 = the first)",
    )
    _waiting(p)


def group_reject(groups: Any, leaf: Leaf, help_: str) -> None:
    p = leaf(groups, "reject", cmd_reject, help_)
    p.add_argument("promotion_id")
    p.add_argument("--reason", required=True)


GROUPS = {
    "promote": group_promote,
    "promotion": group_promotion,
    "approve": group_approve,
    "reject": group_reject,
}
