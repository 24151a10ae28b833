"""`stella` entry point. Exit codes: 0 success, 2 bad input, 1 other failures (reason on stderr)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from stella_core import __version__
from stella_core.errors import DefinitionError, StellaError

Handler = Callable[[argparse.Namespace], Any]

ROLES = ["release-manager", "approver", "auditor", "admin"]


class UsageError(DefinitionError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own exit code 2 matches "bad input"
        raise UsageError(f"{self.prog}: {message}")


def _out(args: argparse.Namespace, value: Any, text_lines: Callable[[], list[str]]) -> None:
    if args.output == "json":
        json.dump(value, sys.stdout, indent=2, sort_keys=False, default=str)
        sys.stdout.write("\n")
    else:
        for line in text_lines():
            print(line)


def _open(args: argparse.Namespace) -> Any:
    from stella_core.bootstrap import Stella

    return Stella.open(args.profile)


# ------------------------------------------------------------------------------- handlers
def cmd_db_upgrade(args: argparse.Namespace) -> None:
    from stella_core.bootstrap import Backend
    from stella_core.db import migrate
    from stella_core.profiles import ProfileStore

    backend = Backend.open()
    try:
        before, after = backend.upgrade()
        backend.ensure_ready(ProfileStore(backend.home))
        value = {
            "target": backend.target,
            "before": before,
            "after": after,
            "head": migrate.head_revision(),
        }
    finally:
        backend.close()
    _out(args, value, lambda: [f"database {value['target']} at revision {after} (was {before})"])


def cmd_whoami(args: argparse.Namespace) -> None:
    stella = _open(args)
    try:
        me = stella.tenancy.whoami()
    finally:
        stella.close()
    value = {
        "user": me.user,
        "role": me.role.value,
        "tenant": me.tenant_name,
        "tenant_id": str(me.tenant_id),
        "profile": stella.profile.name,
    }
    _out(args, value, lambda: [f"{me.user} ({me.role.value}) in tenant {me.tenant_name}"])


def cmd_user_add(args: argparse.Namespace) -> None:
    from stella_core.tenancy.model import ProductRole

    stella = _open(args)
    try:
        user, password = stella.tenancy.add_user(args.name, ProductRole(args.role))
        stella.save_profile_for(user.name, password)
    finally:
        stella.close()
    value = {
        "id": str(user.id),
        "name": user.name,
        "role": user.role.value,
        "created_at": user.created_at.isoformat(),
        "created_by": user.created_by,
        "profile": user.name,
    }
    _out(args, value, lambda: [f"added {user.name} ({user.role.value}); profile {user.name}"])


def cmd_user_list(args: argparse.Namespace) -> None:
    stella = _open(args)
    try:
        users = stella.tenancy.list_users()
    finally:
        stella.close()
    value = [
        {
            "id": str(u.id),
            "name": u.name,
            "role": u.role.value,
            "disabled": u.disabled,
            "created_at": u.created_at.isoformat(),
            "created_by": u.created_by,
        }
        for u in users
    ]
    _out(args, value, lambda: [f"{u.name:20} {u.role.value}" for u in users])


def cmd_profile_list(args: argparse.Namespace) -> None:
    import os

    from stella_core.profiles import ProfileStore, stella_home, target_of

    store = ProfileStore(stella_home())
    target = target_of(os.environ.get("STELLA_DATABASE_URL"))
    default = store.default_name(target)
    names = store.names(target)
    value = [{"name": n, "default": n == default, "target": target} for n in names]
    _out(args, value, lambda: [("* " if n == default else "  ") + n for n in names])


def _registry_json(r: Any) -> dict[str, Any]:
    return {
        "id": str(r.id),
        "name": r.name,
        "url": r.url,
        "kind": r.kind.value,
        "username": r.username,
        "has_password": r.has_password,
        "insecure": r.insecure,
        "created_at": r.created_at.isoformat(),
    }


def cmd_registry_add(args: argparse.Namespace) -> None:
    password = None
    if args.password_stdin:
        if not args.username:
            raise UsageError("--password-stdin needs --username")
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise UsageError("no password on standard input")
    elif args.username:
        raise UsageError("--username needs --password-stdin (passwords are never taken as flags)")
    stella = _open(args)
    try:
        reg = stella.releases.add_registry(
            args.name, args.url, username=args.username, password=password, insecure=args.insecure
        )
    finally:
        stella.close()
    _out(args, _registry_json(reg), lambda: [f"added registry {reg.name} ({reg.url})"])


def cmd_registry_list(args: argparse.Namespace) -> None:
    stella = _open(args)
    try:
        regs = stella.releases.list_registries()
    finally:
        stella.close()
    _out(args, [_registry_json(r) for r in regs], lambda: [f"{r.name:20} {r.url}" for r in regs])


def _component_json(c: Any) -> dict[str, Any]:
    return {
        "id": str(c.id),
        "name": c.name,
        "registry": c.registry,
        "repository": c.repository,
        "created_at": c.created_at.isoformat(),
    }


def cmd_component_add(args: argparse.Namespace) -> None:
    stella = _open(args)
    try:
        comp = stella.releases.add_component(args.name, args.image)
    finally:
        stella.close()
    _out(
        args,
        _component_json(comp),
        lambda: [f"added component {comp.name} ({comp.registry}/{comp.repository})"],
    )


def cmd_component_list(args: argparse.Namespace) -> None:
    stella = _open(args)
    try:
        comps = stella.releases.list_components()
    finally:
        stella.close()
    _out(
        args,
        [_component_json(c) for c in comps],
        lambda: [f"{c.name:20} {c.registry}/{c.repository}" for c in comps],
    )


def _release_lines(rel: Any) -> list[str]:
    lines = [f"{rel.name}  created {rel.created_at:%Y-%m-%d %H:%M:%S} by {rel.created_by}"]
    lines += [f"  {c.name:16} {c.tag or '-':16} {c.digest}" for c in rel.components]
    return lines


def cmd_release_create(args: argparse.Namespace) -> None:
    from stella_core.releases.model import ComponentPin
    from stella_core.releases.reference import check_release_name, parse_component_pin

    check_release_name(args.name)
    if not args.component:
        raise UsageError("give at least one --component COMPONENT=TAG_OR_DIGEST")
    pins = []
    for raw in args.component:
        name, tag, digest = parse_component_pin(raw)
        pins.append(ComponentPin(component=name, tag=tag, digest=digest))
    stella = _open(args)
    try:
        rel = stella.releases.create_release(args.name, pins)
    finally:
        stella.close()
    _out(args, rel.to_json(), lambda: _release_lines(rel))


def cmd_release_show(args: argparse.Namespace) -> None:
    stella = _open(args)
    try:
        rel = stella.releases.get_release(args.name)
    finally:
        stella.close()
    _out(args, rel.to_json(), lambda: _release_lines(rel))


def cmd_release_list(args: argparse.Namespace) -> None:
    stella = _open(args)
    try:
        rels = stella.releases.list_releases()
    finally:
        stella.close()
    _out(
        args,
        [r.to_json() for r in rels],
        lambda: [
            f"{r.name:24} {r.created_at:%Y-%m-%d %H:%M} {r.created_by:12} "
            f"{len(r.components)} components"
            for r in rels
        ],
    )


def cmd_env_add(args: argparse.Namespace) -> None:
    stella = _open(args)
    try:
        env = stella.environments.add(
            args.name,
            order=args.order,
            required_approvals=args.required_approvals,
            separation_of_duties=args.separation_of_duties,
        )
    finally:
        stella.close()
    _out(args, env.to_json(), lambda: [f"added environment {env.name} (order {env.order})"])


def cmd_env_list(args: argparse.Namespace) -> None:
    stella = _open(args)
    try:
        envs = stella.environments.list()
    finally:
        stella.close()
    _out(
        args,
        [e.to_json() for e in envs],
        lambda: [
            f"{e.order:3} {e.name:16} approvals={e.required_approvals} "
            f"sod={'yes' if e.separation_of_duties else 'no'}"
            for e in envs
        ],
    )


def cmd_demo_seed(args: argparse.Namespace) -> None:
    from stella_core.demo.seed import seed

    stella = _open(args)
    try:
        summary = seed(stella)
    finally:
        stella.close()
    _out(args, summary, lambda: [f"{k}: {v}" for k, v in summary.items()])


def cmd_audit_verify(args: argparse.Namespace) -> None:
    stella = _open(args)
    try:
        count, problems = stella.tenancy.verify_audit()
    finally:
        stella.close()
    value = {"ok": not problems, "entries": count, "problems": problems}
    _out(args, value, lambda: [f"{count} entries, {'ok' if not problems else 'BROKEN'}", *problems])
    if problems:
        raise SystemExit(1)


def cmd_audit_list(args: argparse.Namespace) -> None:
    stella = _open(args)
    try:
        entries = stella.tenancy.audit_entries(args.limit)
    finally:
        stella.close()
    value = [e.model_dump(mode="json") for e in entries]
    _out(
        args,
        value,
        lambda: [
            f"{e.chain_index:5} {e.at:%Y-%m-%d %H:%M:%S} {e.actor:12} {e.action:18} {e.entity_id}"
            for e in entries
        ],
    )


# ------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--output", "-o", choices=["text", "json"], default="text")
    common.add_argument(
        "--profile", default=argparse.SUPPRESS, help="act as this person (a connection profile)"
    )

    parser = _Parser(prog="stella", description="Stella Release Desk command line")
    parser.add_argument("--version", action="version", version=f"stella {__version__}")
    parser.add_argument("--profile", default=None, help="act as this person (a connection profile)")
    parser.add_argument("--verbose", "-v", action="store_true")
    groups = parser.add_subparsers(dest="group", required=True, parser_class=_Parser)

    def leaf(sub: Any, name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, parents=[common], help=help_)
        p.set_defaults(handler=handler)
        return p

    db = groups.add_parser("db", help="database schema").add_subparsers(dest="cmd", required=True)
    leaf(db, "upgrade", cmd_db_upgrade, "create or migrate the schema (idempotent)")

    leaf(groups, "whoami", cmd_whoami, "who this profile acts as")

    user = groups.add_parser("user", help="people").add_subparsers(dest="cmd", required=True)
    p = leaf(user, "add", cmd_user_add, "add a person (login role, user, profile)")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=ROLES)
    leaf(user, "list", cmd_user_list, "list people of this tenant")

    prof = groups.add_parser("profile", help="connection profiles").add_subparsers(
        dest="cmd", required=True
    )
    leaf(prof, "list", cmd_profile_list, "profiles on this machine")

    reg = groups.add_parser("registry", help="OCI registries").add_subparsers(
        dest="cmd", required=True
    )
    p = leaf(reg, "add", cmd_registry_add, "add a registry or an OCI layout directory")
    p.add_argument("name")
    p.add_argument("--url", required=True)
    p.add_argument("--username")
    p.add_argument("--password-stdin", action="store_true")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow plain HTTP and skip TLS certificate verification",
    )
    leaf(reg, "list", cmd_registry_list, "list registries")

    comp = groups.add_parser("component", help="components").add_subparsers(
        dest="cmd", required=True
    )
    p = leaf(comp, "add", cmd_component_add, "add a component")
    p.add_argument("name")
    p.add_argument("--image", required=True, help="REGISTRY_NAME/REPOSITORY")
    leaf(comp, "list", cmd_component_list, "list components")

    rel = groups.add_parser("release", help="releases").add_subparsers(dest="cmd", required=True)
    p = leaf(rel, "create", cmd_release_create, "create an immutable release")
    p.add_argument("name")
    p.add_argument("--component", action="append", default=[], metavar="COMPONENT=TAG_OR_DIGEST")
    p = leaf(rel, "show", cmd_release_show, "show a release")
    p.add_argument("name")
    leaf(rel, "list", cmd_release_list, "list releases")

    env = groups.add_parser("env", help="environments").add_subparsers(dest="cmd", required=True)
    p = leaf(env, "add", cmd_env_add, "add an environment")
    p.add_argument("name")
    p.add_argument("--order", type=int, required=True)
    p.add_argument("--required-approvals", type=int, default=0)
    p.add_argument("--separation-of-duties", action="store_true")
    leaf(env, "list", cmd_env_list, "list environments in promotion order")

    demo = groups.add_parser("demo", help="demo data").add_subparsers(dest="cmd", required=True)
    leaf(demo, "seed", cmd_demo_seed, "create the demo people, environments and releases")

    audit = groups.add_parser("audit", help="the audit log").add_subparsers(
        dest="cmd", required=True
    )
    leaf(audit, "verify", cmd_audit_verify, "check the audit hash chain")
    p = leaf(audit, "list", cmd_audit_list, "list audit entries")
    p.add_argument("--limit", type=int, default=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
        )
        args.handler(args)
    except StellaError as exc:
        print(f"stella: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("stella: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an unexpected failure still gets a one-line reason and exit 1
        logging.getLogger("stella").debug("unexpected failure", exc_info=True)
        print(f"stella: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
