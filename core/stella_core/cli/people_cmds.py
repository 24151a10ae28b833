"""`stella whoami`, `stella user …`, `stella profile …`: people and this machine's profiles."""

from __future__ import annotations

import argparse
from typing import Any

from stella_core.cli.common import ROLES, Leaf, UsageError, acting, show


def cmd_whoami(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        me = stella.tenancy.whoami()
        demo = stella.tenancy.is_demo()
    value = {
        "user": me.user,
        "role": me.role.value,
        "tenant": me.tenant_name,
        "tenant_id": str(me.tenant_id),
        "profile": stella.profile.name,
        "demo": demo,
    }
    show(
        args,
        value,
        lambda: [
            f"{me.user} ({me.role.value}) in tenant {me.tenant_name}{' (a demo)' if demo else ''}"
        ],
    )


def cmd_user_add(args: argparse.Namespace) -> None:
    from stella_core.cli.common import secret_line
    from stella_core.tenancy.model import ProductRole

    passphrase = None
    if args.passphrase_stdin:
        if args.role == ProductRole.AUDITOR.value:
            raise UsageError(
                "auditors sign nothing and get no key: --passphrase-stdin is for others"
            )
        passphrase = secret_line()
    with acting(args) as stella:
        user, key = stella.add_person(args.name, ProductRole(args.role), passphrase)
        # Their name, or `name@tenant` where another tenant's person has that profile here.
        profile = stella.profiles.name_for(stella.backend.target, user.tenant_id, user.name)
    profile = profile or user.name
    value = {
        "id": str(user.id),
        "name": user.name,
        "role": user.role.value,
        "created_at": user.created_at.isoformat(),
        "created_by": user.created_by,
        "profile": profile,
        "signing_key_id": key.key_id if key else None,
        "key_passphrase": passphrase is not None,
    }
    signs = f"; signing key {key.key_id[:16]}…" if key else ""
    show(
        args,
        value,
        lambda: [f"added {user.name} ({user.role.value}); profile {profile}{signs}"],
    )


def cmd_user_list(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        users = stella.tenancy.list_users()
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
    show(args, value, lambda: [f"{u.name:20} {u.role.value}" for u in users])


def cmd_profile_list(args: argparse.Namespace) -> None:
    from stella_core.profiles import (
        ProfileStore,
        configured_database_url,
        stella_home,
        target_of,
    )

    store = ProfileStore(stella_home())
    target = target_of(configured_database_url(stella_home()))
    default = store.default_name(target)
    names = store.names(target)
    value = [{"name": n, "default": n == default, "target": target} for n in names]
    show(args, value, lambda: [("* " if n == default else "  ") + n for n in names])


def group_whoami(groups: Any, leaf: Leaf, help_: str) -> None:
    leaf(groups, "whoami", cmd_whoami, help_)


def group_user(groups: Any, leaf: Leaf, help_: str) -> None:
    user = groups.add_parser("user", help=help_).add_subparsers(dest="cmd", required=True)
    p = leaf(user, "add", cmd_user_add, "add a person (login role, user, profile)")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument(
        "--passphrase-stdin",
        action="store_true",
        help="make their signing key under this passphrase (one line of standard input) rather "
        "than this machine's; they give it when they sign",
    )
    leaf(user, "list", cmd_user_list, "list people of this tenant")


def group_profile(groups: Any, leaf: Leaf, help_: str) -> None:
    prof = groups.add_parser("profile", help=help_).add_subparsers(dest="cmd", required=True)
    leaf(prof, "list", cmd_profile_list, "profiles on this machine")


GROUPS = {"whoami": group_whoami, "user": group_user, "profile": group_profile}
