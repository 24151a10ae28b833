"""The `stella` CLI contract as acceptance checks drive it: flags, JSON fields, exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

from tests.support.registry import push_image

DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")


def stella(env: dict[str, str], *args: str, stdin: str | None = None):
    return subprocess.run(
        [sys.executable, "-m", "stella_core.cli.main", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ok_json(env, *args, stdin=None):
    result = stella(env, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_contract_against_an_external_database(world, registry_basic) -> None:
    env = world.env()
    repo = f"c{uuid.uuid4().hex[:8]}/web"
    digest = push_image(registry_basic.url, repo, "1.4.2", auth=registry_basic.auth)

    upgrade = ok_json(env, "db", "upgrade", "--output", "json")
    assert upgrade["after"] == upgrade["head"]
    assert ok_json(env, "db", "upgrade", "--output", "json")["before"] == upgrade["head"]

    ok_json(env, "user", "add", "alice", "--role", "release-manager", "--output", "json")
    bob = ok_json(env, "user", "add", "bob", "--role", "approver", "--output", "json")
    assert ok_json(env, "--profile", "alice", "whoami", "--output", "json")["user"] == "alice"
    # A person's signing key comes with their profile, registered by their own session.
    keys = ok_json(env, "keys", "list", "--output", "json")
    (bobs,) = [k for k in keys if k["owner"] == "bob"]
    assert bobs["key_id"] == bob["signing_key_id"]
    assert bobs["registered_by"] == "bob"
    assert bobs["active"]

    ok_json(
        env,
        "--profile",
        "alice",
        "registry",
        "add",
        "hub",
        "--url",
        registry_basic.url,
        "--username",
        registry_basic.username,
        "--password-stdin",
        "--insecure",
        "--output",
        "json",
        stdin=registry_basic.password + "\n",
    )
    ok_json(
        env,
        "--profile",
        "alice",
        "component",
        "add",
        "web",
        "--image",
        f"hub/{repo}",
        "--output",
        "json",
    )
    created = ok_json(
        env,
        "--profile",
        "alice",
        "release",
        "create",
        "1.4.2",
        "--component",
        "web=1.4.2",
        "--output",
        "json",
    )
    assert set(created) == {"id", "name", "created_at", "created_by", "components"}
    assert created["name"] == "1.4.2"
    assert created["created_by"] == "alice"
    assert created["components"] == [
        {"name": "web", "repository": repo, "tag": "1.4.2", "digest": digest}
    ]
    assert DIGEST.match(created["components"][0]["digest"])
    assert ok_json(env, "release", "show", "1.4.2", "--output", "json") == created
    assert ok_json(env, "--profile", "bob", "release", "list", "--output", "json") == [created]

    # exit codes: 2 bad input, 1 other failures, reason on stderr
    bad = stella(
        env,
        "--profile",
        "alice",
        "release",
        "create",
        "x",
        "--component",
        "web=bad tag!",
        "--output",
        "json",
    )
    assert bad.returncode == 2
    assert "invalid tag" in bad.stderr
    missing = stella(
        env,
        "--profile",
        "alice",
        "release",
        "create",
        "x",
        "--component",
        "web=9.9.9",
        "--output",
        "json",
    )
    assert missing.returncode == 1
    assert "9.9.9" in missing.stderr
    assert stella(env, "release", "show", "nope").returncode == 2
    assert stella(env, "user", "add", "carol", "--role", "boss").returncode == 2
    denied = stella(env, "--profile", "bob", "component", "add", "api", "--image", f"hub/{repo}")
    assert denied.returncode == 1
    assert "approver" in denied.stderr
    # the password never shows up in any output or in the profiles file's registry section
    for result in (bad, missing, denied):
        assert registry_basic.password not in result.stdout + result.stderr
    assert [r["name"] for r in ok_json(env, "release", "list", "--output", "json")] == ["1.4.2"]


def test_wrong_registry_password_exits_1_and_stores_nothing(world, registry_basic) -> None:
    env = world.env()
    repo = f"w{uuid.uuid4().hex[:8]}/web"
    push_image(registry_basic.url, repo, "1.0", auth=registry_basic.auth)
    ok_json(
        env,
        "registry",
        "add",
        "hub",
        "--url",
        registry_basic.url,
        "--username",
        registry_basic.username,
        "--password-stdin",
        "--insecure",
        "-o",
        "json",
        stdin="not-it\n",
    )
    ok_json(env, "component", "add", "web", "--image", f"hub/{repo}", "--output", "json")
    result = stella(env, "release", "create", "r", "--component", "web=1.0", "--output", "json")
    assert result.returncode == 1
    assert "not-it" not in result.stderr
    assert ok_json(env, "release", "list", "--output", "json") == []


def test_embedded_default_from_nothing(tmp_path: Path) -> None:
    """No database configured: the CLI starts its own PostgreSQL in STELLA_HOME."""
    from stella_core.agents.local import local_runtime_ready
    from stella_core.demo.seed import demo_images_runnable

    env = {k: v for k, v in os.environ.items() if k != "STELLA_DATABASE_URL"}
    env["STELLA_HOME"] = str(tmp_path / "home")
    ok_json(env, "db", "upgrade", "--output", "json")
    assert ok_json(env, "whoami", "--output", "json")["demo"] is False
    seeded = ok_json(env, "demo", "seed", "--output", "json")
    assert seeded["demo_declared"] is True
    # The database now says it is a demo, to every person of the tenant.
    assert ok_json(env, "--profile", "bob", "whoami", "--output", "json")["demo"] is True
    assert set(seeded["people"]) == {"alice", "bob", "carol", "dave"}
    assert seeded["templates"] == ["promote-web", "deliver"]
    # this machine, through its own agent, three times over (dev's rolling deployment)
    assert seeded["targets"] == ["local", "local-2", "local-3"]
    # Once its past is played, dev deploys, where this machine can run the demo's containers.
    runs_here = demo_images_runnable() and local_runtime_ready()
    assert seeded["workflows"] == (["dev: promote-web"] if runs_here else [])
    # The demo's past: every release reached dev and stage, prod runs the first one.
    assert len(seeded["promotions"]) == 7
    deployed = ok_json(env, "promotion", "list", "--status", "deployed", "-o", "json")
    assert {(p["release"], p["environment"]) for p in deployed} >= {
        ("shop-2026.11.1", "prod"),
        ("shop-2026.11.3", "stage"),
    }
    releases = ok_json(env, "--profile", "alice", "release", "list", "--output", "json")
    assert len(releases) == 3
    assert all(c["digest"].startswith("sha256:") for r in releases for c in r["components"])
    # seeding twice changes nothing
    again = ok_json(env, "demo", "seed", "--output", "json")
    assert again["demo_declared"] is False
    assert again["people"] == []
    assert again["templates"] == []
    assert again["releases"] == []
    assert again["targets"] == []
    assert again["workflows"] == []
    listed = ok_json(env, "target", "list", "--output", "json")
    assert [(t["name"], t["environment"], t["agent"]) for t in listed] == [
        ("local", "dev", "local"),
        ("local-2", "dev", "local"),
        ("local-3", "dev", "local"),
    ]
    envs = ok_json(env, "env", "list", "--output", "json")
    assert [(e["name"], e["required_approvals"], e["separation_of_duties"]) for e in envs] == [
        ("dev", 0, False),
        ("stage", 1, False),
        ("prod", 2, True),
    ]
