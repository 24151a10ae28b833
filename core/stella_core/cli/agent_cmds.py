"""`stella agent …`: enrollment tokens, the enrolled agents, revocation."""

from __future__ import annotations

import argparse
import re
from datetime import timedelta
from typing import Any

from stella_core.cli.common import Leaf, UsageError, acting, show

_TTL = re.compile(r"^([0-9]{1,6})([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def ttl_flag(text: str) -> timedelta:
    """`24h`, `30m`, `7d`, `90s` or plain seconds."""
    match = _TTL.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (for example 24h, 30m, 7d)")
    return timedelta(seconds=int(match[1]) * _UNITS[match[2]])


def label_flag(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not a label KEY=VALUE")
    return key, value


def agents_of(stella: Any) -> Any:
    """The agents service of a person's session; where this machine runs the orchestrator, it
    makes the tenant's agent CA on first need."""
    from stella_core.agents.service import AgentService, enrollment_for

    orchestrator = stella.orchestrator
    authority = None
    if orchestrator is not None:

        def authority() -> str:
            return enrollment_for(orchestrator).ca_fingerprint()

    return AgentService(stella.db, stella.tenancy, authority=authority)


def cmd_token_create(args: argparse.Namespace) -> None:
    labels: dict[str, str] = {}
    for key, value in args.label:
        if key in labels:
            raise UsageError(f"label {key} is given twice")
        labels[key] = value
    with acting(args) as stella:
        issued = agents_of(stella).create_token(args.name, labels, args.ttl)
    show(
        args,
        {
            "token": issued.token,
            "expires_at": issued.expires_at.isoformat(),
            "ca_fingerprint": issued.ca_fingerprint,
        },
        lambda: [
            f"token for agent {issued.name} (single use, expires "
            f"{issued.expires_at.strftime('%Y-%m-%d %H:%M')} UTC):",
            issued.token,
            f"CA fingerprint (SHA-256): {issued.ca_fingerprint}",
        ],
    )


def cmd_agent_list(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        service = agents_of(stella)
        agents = service.list()
        now = service.clock.now()
    rows = [a.to_json(now) for a in agents]
    show(
        args,
        rows,
        lambda: (
            [
                f"{r['name']:20} {r['status']:8} gen {r['generation']:<3} {r['id']}  "
                f"last heartbeat {r['last_heartbeat'] or '-'}"
                for r in rows
            ]
            or ["no agents enrolled"]
        ),
    )


def cmd_agent_revoke(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        service = agents_of(stella)
        agent = service.revoke(args.id, args.reason)
        now = service.clock.now()
    show(args, agent.to_json(now), lambda: [f"agent {agent.name} ({agent.id}) is revoked"])


def cmd_agent_show(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        service = agents_of(stella)
        agent = service.get(args.id)
        events = service.events(str(agent.id))
        now = service.clock.now()
    value = {**agent.to_json(now), "events": events}
    show(
        args,
        value,
        lambda: [
            f"{agent.name} ({agent.id}) {value['status']}, generation {agent.generation_in_use}",
            *(f"  {e['at']} {e['kind']} by {e['actor']}" for e in events),
        ],
    )


def group_agent(groups: Any, leaf: Leaf, help_: str) -> None:
    agent = groups.add_parser("agent", help=help_).add_subparsers(dest="cmd", required=True)
    token = agent.add_parser("token", help="enrollment tokens").add_subparsers(
        dest="token_cmd", required=True
    )
    p = leaf(token, "create", cmd_token_create, "create a one-time enrollment token (admins)")
    p.add_argument("--name", required=True, help="the name the enrolled agent gets")
    p.add_argument("--label", type=label_flag, action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--ttl", type=ttl_flag, default=timedelta(hours=24), help="e.g. 24h, 30m")
    leaf(agent, "list", cmd_agent_list, "enrolled agents and their status")
    p = leaf(agent, "show", cmd_agent_show, "one agent and its history")
    p.add_argument("id", help="the agent's id or name")
    p = leaf(agent, "revoke", cmd_agent_revoke, "revoke an agent: its link is cut (admins)")
    p.add_argument("id", help="the agent's id or name")
    p.add_argument("--reason", default="revoked by an admin")


GROUPS = {"agent": group_agent}
