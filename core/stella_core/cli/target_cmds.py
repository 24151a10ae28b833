"""`stella target …`: where an environment's releases run (an agent, an SSH or a WinRM host).

Secrets never come as flag values: the SSH private key is read from a file, the WinRM password
from standard input; neither is ever shown (`has_secret` says whether one is held)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from stella_core.cli.common import (
    Leaf,
    UsageError,
    acting,
    named_values,
    number_flag,
    secret_line,
    show,
)

PORT = number_flag(1, 65535)
# Flags only one type of target takes (as the command line spells them).
ONLY = {
    "agent": ("agent",),
    "ssh": ("host", "port", "key_file", "known_hosts"),
    "winrm": ("url", "password_stdin", "insecure_http", "auth", "ca_file"),
}
NEEDS = {
    "agent": ("agent",),
    "ssh": ("host", "user", "key_file", "known_hosts"),
    "winrm": ("url", "user", "password_stdin"),
}
# A private key, a known_hosts file or a CA bundle is small: more is not one of them.
MAX_KEY_FILE = 64 * 1024
MAX_KNOWN_HOSTS = 1024 * 1024
MAX_CA_FILE = 256 * 1024


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _given(args: argparse.Namespace, dest: str) -> bool:
    value = getattr(args, dest)
    return value not in (None, False)


def target_add_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The service's arguments from the flags: a flag of another type of target, or a missing
    one, is a usage error (exit 2) before any file is read or anything stored."""
    from stella_core.limits import read_text

    kind = args.type
    for other, flags in ONLY.items():
        if other == kind:
            continue
        wrong = [_flag(d) for d in flags if d not in ONLY[kind] and _given(args, d)]
        if wrong:
            raise UsageError(f"a {kind} target takes no {', '.join(wrong)}")
    if kind == "agent" and args.user is not None:
        raise UsageError("an agent target takes no --user (the agent runs as its own user)")
    missing = [_flag(d) for d in NEEDS[kind] if not _given(args, d)]
    if missing:
        raise UsageError(f"a {kind} target needs {', '.join(missing)}")
    given: dict[str, Any] = {
        "environment": args.env,
        "type": kind,
        "labels": named_values(args.label, "--label"),
        "group": args.group,
        "directory": args.dir,
    }
    if args.runtime is not None:
        given["runtime"] = args.runtime
    if kind == "agent":
        given["agent"] = args.agent
    elif kind == "ssh":
        given.update(
            host=args.host,
            port=args.port,
            user=args.user,
            private_key=read_text(args.key_file, MAX_KEY_FILE, "the key file"),
            known_hosts=read_text(args.known_hosts, MAX_KNOWN_HOSTS, "the known_hosts file"),
        )
    else:
        password = secret_line("the password")
        if not password:
            raise UsageError("no password on standard input")
        given.update(
            url=args.url,
            user=args.user,
            password=password,
            insecure_http=args.insecure_http,
            auth=args.auth,
        )
        if args.ca_file is not None:
            given["ca_cert"] = read_text(args.ca_file, MAX_CA_FILE, "the CA file")
    return given


def cmd_target_add(args: argparse.Namespace) -> None:
    given = target_add_arguments(args)
    with acting(args) as stella:
        target = stella.environments.add_target(args.name, **given)
    if target.url is not None and target.url.startswith("http://"):
        print(
            f"stella: warning: target {target.name} talks WinRM over plain http: its traffic "
            "can be read on the network; use https",
            file=sys.stderr,
        )
    show(
        args,
        target.to_json(),
        lambda: [f"added target {target.name} ({target.description}) to {target.environment}"],
    )


def cmd_target_list(args: argparse.Namespace) -> None:
    from stella_core.agents.model import runtime_problem
    from stella_core.agents.service import AgentService

    with acting(args) as stella:
        targets = stella.environments.list_targets(args.env)
        agents = {}
        if any(t.agent is not None for t in targets):
            # The enrolled agent of each name (a revoked one has no runtimes to speak of).
            listed = AgentService(stella.db, stella.tenancy).list()
            agents = {a.name: a for a in listed if a.revoked_at is None}
    rows = []
    for t in targets:
        row = t.to_json()
        if t.agent is not None:
            agent = agents.get(t.agent)
            reported = agent.runtimes if agent is not None else None
            row["runtime_problem"] = runtime_problem(t.runtime, t.agent, reported)
        rows.append(row)
    show(
        args,
        rows,
        lambda: [
            f"{t.environment:12} {t.name:20} {t.description}"
            + (f"  group={t.group}" if t.group else "")
            + (f"  ({row['runtime_problem']})" if row.get("runtime_problem") else "")
            for t, row in zip(targets, rows, strict=True)
        ],
    )


def cmd_target_remove(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        target = stella.environments.remove_target(args.name)
    show(args, target.to_json(), lambda: [f"removed target {target.name}"])


def cmd_target_sticker(args: argparse.Namespace) -> None:
    """The sticker on the target, read now (through its agent or its connection) and checked
    against the orchestrator's keys; exit 1 when it is missing or its signature does not hold,
    with the JSON printed all the same."""
    from stella_core.errors import IntegrityError, OrchestratorUnavailableError

    with acting(args) as stella:
        if stella.orchestrator is None:
            raise OrchestratorUnavailableError(
                "reading a target's sticker goes through the orchestrator, and this machine "
                "holds no orchestrator login for this tenant",
                remedy=("serve",),
            )
        from stella_core.agents.local import LOCAL_AGENT, local_agent_beside

        orchestrator = stella.orchestrator
        (dest,) = orchestrator.destinations(None, args.name)
        local = stella.environments.target(args.name).agent == LOCAL_AGENT
        with local_agent_beside(stella, wanted=local):
            reading = orchestrator.deploy.read_sticker(dest, seconds=args.timeout)
    value = reading.to_json()

    def lines() -> list[str]:
        verdict = "verified" if reading.signature_ok else f"NOT verified: {reading.reason}"
        release = (reading.sticker or {}).get("release") or {}
        found = [f"{args.name}: {reading.path}: {verdict}"]
        if release:
            found.append(f"  release {release.get('name')}")
            found += [
                f"  {c.get('name'):16} {c.get('digest')}" for c in release.get("components") or []
            ]
        return found

    show(args, value, lines)
    if not reading.signature_ok:
        raise IntegrityError(f"the sticker on {args.name} does not verify: {reading.reason}")


def cmd_target_health(args: argparse.Namespace) -> None:
    """The target's components as they are now: each container's state and, where the
    component declares `x-stella-health`, its HTTP check asked from the target. Exit 1 when a
    component is not healthy, with the JSON printed all the same."""
    from stella_core.errors import ConnectorError, OrchestratorUnavailableError

    with acting(args) as stella:
        if stella.orchestrator is None:
            raise OrchestratorUnavailableError(
                "checking a target's health goes through the orchestrator, and this machine "
                "holds no orchestrator login for this tenant",
                remedy=("serve",),
            )
        from stella_core.agents.local import LOCAL_AGENT, local_agent_beside

        orchestrator = stella.orchestrator
        target = stella.environments.target(args.name)
        (dest,) = orchestrator.destinations(None, args.name)
        with local_agent_beside(stella, wanted=target.agent == LOCAL_AGENT):
            health = orchestrator.deploy.target_health(
                dest, target.environment, seconds=args.timeout
            )
    value = health.to_json()

    def lines() -> list[str]:
        verdict = "healthy" if health.healthy else "NOT healthy"
        found = [f"{args.name}: {verdict} (release {health.release or 'none recorded'})"]
        for c in health.components:
            http = c.http
            answer = ""
            if http is not None:
                answer = f"  {http['url']} -> {http['status'] or http['error']}"
            found.append(f"  {c.component:16} {c.to_json()['state']}{answer}")
        return found

    show(args, value, lines)
    if not health.healthy:
        raise ConnectorError(f"target {args.name} is not healthy")


def group_target(groups: Any, leaf: Leaf, help_: str) -> None:
    target = groups.add_parser("target", help=help_).add_subparsers(dest="cmd", required=True)
    p = leaf(target, "add", cmd_target_add, "admins: add a target to an environment")
    p.add_argument("name")
    p.add_argument("--env", required=True, help="the environment it belongs to")
    p.add_argument("--type", required=True, choices=["agent", "ssh", "winrm"])
    p.add_argument("--agent", default=None, metavar="AGENT_NAME", help="agent: the agent's name")
    p.add_argument("--host", default=None, help="ssh: host name or IP address")
    p.add_argument("--port", type=PORT, default=None, help="ssh: port (default 22)")
    p.add_argument("--user", default=None, help="ssh, winrm: the login")
    p.add_argument(
        "--key-file", type=str, default=None, metavar="F", help="ssh: private key (no passphrase)"
    )
    p.add_argument(
        "--known-hosts",
        type=str,
        default=None,
        metavar="F",
        help="ssh: known_hosts file pinning the host's key",
    )
    p.add_argument("--url", default=None, help="winrm: https://HOST:5986/wsman")
    p.add_argument(
        "--password-stdin", action="store_true", help="winrm: read the password from stdin"
    )
    p.add_argument(
        "--insecure-http", action="store_true", help="winrm: allow a plain http URL (warned)"
    )
    p.add_argument(
        "--auth",
        default=None,
        choices=["ntlm", "kerberos", "basic"],
        help="winrm: authentication (default ntlm; basic over https only)",
    )
    p.add_argument(
        "--ca-file",
        type=str,
        default=None,
        metavar="F",
        help="winrm: CA certificates the host's HTTPS certificate is checked against",
    )
    p.add_argument(
        "--runtime",
        default=None,
        help='compose command on the target: "podman-compose" (default), "docker compose"',
    )
    p.add_argument(
        "--dir", default=None, metavar="PATH", help="lockfile and sticker folder (stella/NAME)"
    )
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--group", default=None, help="target group")
    p = leaf(target, "list", cmd_target_list, "list targets (never their secrets)")
    p.add_argument("--env", default=None, help="only this environment's")
    p = leaf(target, "remove", cmd_target_remove, "admins: remove a target")
    p.add_argument("name")
    p = leaf(target, "sticker", cmd_target_sticker, "read a target's version sticker and verify it")
    p.add_argument("name")
    p.add_argument(
        "--timeout",
        type=number_flag(1, 3600),
        default=60,
        metavar="SECONDS",
        help="how long to wait for the target's answer",
    )

    p = leaf(target, "health", cmd_target_health, "check a target's containers and health checks")
    p.add_argument("name")
    p.add_argument(
        "--timeout",
        type=number_flag(1, 3600),
        default=60,
        metavar="SECONDS",
        help="how long to wait for the target's answers",
    )


GROUPS = {"target": group_target}
