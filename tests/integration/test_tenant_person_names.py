"""Person names are unique per tenant: two tenants each add `alice`, through the CLI, and each
alice acts as herself in her own tenant (login roles are cluster-wide, so they are named by
tenant and person)."""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg

from stella_core.profiles import Profile
from stella_core.tenancy.model import ProductRole
from stella_core.tenancy.service import Provisioner, person_role_name


def stella(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stella_core.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ok_json(env: dict[str, str], *args: str):
    result = stella(env, *args, "--output", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _second_tenant(world, admin) -> None:
    """Tenant 'other' with its own admin 'zed', as a second profile on this machine."""
    tenant_id, password = Provisioner(admin.backend.admin_engine).initialise("other", "zed")
    login = person_role_name(tenant_id, "zed")
    admin.profiles.save(
        Profile("zed", admin.backend.target, login, password, str(tenant_id), person="zed")
    )


def test_two_tenants_each_add_alice_and_each_alice_is_herself(world) -> None:
    admin = world.open()
    _second_tenant(world, admin)
    env = world.env()

    first = ok_json(env, "user", "add", "alice", "--role", "release-manager")
    second = ok_json(env, "--profile", "zed", "user", "add", "alice", "--role", "approver")
    assert (first["name"], second["name"]) == ("alice", "alice")
    assert first["id"] != second["id"]
    # Both on this machine: the second alice's profile says which tenant she is in.
    assert (first["profile"], second["profile"]) == ("alice", "alice@other")

    mine = ok_json(env, "--profile", "alice", "whoami")
    theirs = ok_json(env, "--profile", "alice@other", "whoami")
    assert (mine["user"], mine["role"], mine["tenant"]) == ("alice", "release-manager", "default")
    assert (theirs["user"], theirs["role"], theirs["tenant"]) == ("alice", "approver", "other")
    # Each sees only the people of her own tenant.
    assert sorted(u["name"] for u in ok_json(env, "--profile", "alice@other", "user", "list")) == [
        "alice",
        "zed",
    ]
    # What a person writes is stamped with their name, not their login role's.
    zed = world.open("zed")
    zed.tenancy.add_user("bob", ProductRole.RELEASE_MANAGER)
    added = [e for e in zed.tenancy.audit_entries() if e.action == "user.add"]
    assert [(e.actor, e.entity_id) for e in added] == [("zed", "alice"), ("zed", "bob")]
    assert world.open("alice@other").tenancy.whoami().user == "alice"
    # Their login roles are distinct and carry the tenant; the names stay the people's own.
    with psycopg.connect(world.admin_url.replace("+psycopg", "")) as conn:
        roles = conn.execute(
            "SELECT t.name, u.db_role FROM tenancy.users u JOIN tenancy.tenants t"
            " ON t.id = u.tenant_id WHERE u.name = 'alice' ORDER BY t.name"
        ).fetchall()
    assert [t for t, _ in roles] == ["default", "other"]
    assert all(r.startswith("stella_p_") for _, r in roles)
    assert roles[0][1] != roles[1][1]


def test_a_long_name_gets_a_login_role_within_postgresqls_limit(world) -> None:
    admin = world.open()
    name = "a" + "b" * 62  # 63 characters: the longest name a person may have
    user, password = admin.tenancy.add_user(name, ProductRole.AUDITOR)
    profile = admin.save_profile_for(user.name, password)
    assert len(profile.user.encode()) <= 63
    assert profile.user != person_role_name(admin.profile.tenant, name + "x")
    assert world.open(profile.name).tenancy.whoami().user == name
