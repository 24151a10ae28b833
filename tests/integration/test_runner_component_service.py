"""`stella component add NAME --image REGISTRY/REPO --service FILE`: a component carries its compose
service (everything but `image`), checked when stored, shown by `component list`, and kept
within bounds by the database too."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.integration.test_cli import ok_json, stella

SERVICE = """\
# the web front end
network_mode: host
environment:
  PORT: "18090"
volumes:
  - ./data:/var/lib/web
  - cache:/cache
healthcheck:
  test: ["CMD", "wget", "-q", "-O-", "http://127.0.0.1:18090/"]
  interval: 10s
labels:
  team: shop
"""


def _setup(world, registry, tmp_path: Path) -> dict[str, str]:
    env = world.env()
    ok_json(env, "db", "upgrade", "--output", "json")
    ok_json(env, "user", "add", "alice", "--role", "release-manager", "--output", "json")
    ok_json(env, "user", "add", "bob", "--role", "approver", "--output", "json")
    ok_json(
        env,
        "--profile",
        "alice",
        "registry",
        "add",
        "local",
        "--url",
        registry.url,
        "--insecure",
        "--output",
        "json",
    )
    return env


def test_a_component_carries_its_service_and_list_shows_it(world, registry, tmp_path) -> None:
    env = _setup(world, registry, tmp_path)
    service = tmp_path / "web.yml"
    service.write_text(SERVICE)
    added = ok_json(
        env,
        "--profile",
        "alice",
        "component",
        "add",
        "web",
        "--image",
        "local/shop/web",
        "--service",
        str(service),
        "--output",
        "json",
    )
    expected = {
        "network_mode": "host",
        "environment": {"PORT": "18090"},
        "volumes": ["./data:/var/lib/web", "cache:/cache"],
        "healthcheck": {
            "test": ["CMD", "wget", "-q", "-O-", "http://127.0.0.1:18090/"],
            "interval": "10s",
        },
        "labels": {"team": "shop"},
    }
    assert added["service"] == expected
    # JSON is YAML too; without --service a component keeps having none.
    worker = tmp_path / "worker.json"
    worker.write_text('{"network_mode": "none", "command": ["sleep", "3600"]}')
    ok_json(
        env,
        "--profile",
        "alice",
        "component",
        "add",
        "worker",
        "--image",
        "local/shop/worker",
        "--service",
        str(worker),
        "--output",
        "json",
    )
    ok_json(
        env,
        "--profile",
        "alice",
        "component",
        "add",
        "plain",
        "--image",
        "local/shop/plain",
        "--output",
        "json",
    )
    listed = {c["name"]: c for c in ok_json(env, "component", "list", "--output", "json")}
    assert listed["web"]["service"] == expected
    assert listed["worker"]["service"] == {"network_mode": "none", "command": ["sleep", "3600"]}
    assert listed["plain"]["service"] is None


BAD_FRAGMENTS = (
    ("image: evil/other:latest\n", "'image' is not allowed"),
    ("build: .\n", "'build' is not allowed"),
    ("privileged: true\n", "'privileged' is not allowed"),
    ("pid: host\n", "'pid' set to 'host' is not allowed"),
    ("cap_add: [SYS_ADMIN]\n", "'cap_add' is not allowed"),
    ("volumes: ['/:/host']\n", "bind mount of host path '/'"),
    ("volumes: [{type: bind, source: /var/run/docker.sock, target: /s}]\n", "host path"),
    ("volumes: ['../../etc:/etc']\n", "bind mount of host path"),
    ("network_mode: container:db\n", "network_mode 'container:db' is not allowed"),
    ("labels: {stella.digest: x}\n", "'stella.digest' is not allowed"),
    ("imgae: x\n", "'imgae' is not a compose service key"),
    ("- a list\n", "must be a mapping"),
    ("ports: [\n", "not valid YAML or JSON"),
)


def test_a_bad_fragment_is_refused_naming_the_key_and_nothing_is_stored(
    world, registry, tmp_path
) -> None:
    env = _setup(world, registry, tmp_path)
    bad = tmp_path / "bad.yml"
    for text, words in BAD_FRAGMENTS:
        bad.write_text(text)
        result = stella(
            env,
            "--profile",
            "alice",
            "component",
            "add",
            "web",
            "--image",
            "local/shop/web",
            "--service",
            str(bad),
        )
        assert result.returncode == 2, (text, result.stderr)
        assert words in result.stderr, (text, result.stderr)
    big = tmp_path / "big.yml"
    big.write_text("environment:\n" + "".join(f"  K{i}: {'x' * 60}\n" for i in range(2000)))
    bomb = tmp_path / "bomb.yml"
    bomb.write_text(
        "x-a: &a [1,1,1,1,1,1,1,1,1,1]\nx-b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
        "x-c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nx-d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
        "x-e: [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    )
    for path, words in ((big, "bytes"), (bomb, "more than")):
        result = stella(
            env,
            "--profile",
            "alice",
            "component",
            "add",
            "web",
            "--image",
            "local/shop/web",
            "--service",
            str(path),
        )
        assert result.returncode == 2
        assert words in result.stderr
    # People write services as they write components: an approver may not.
    good = tmp_path / "web.yml"
    good.write_text(SERVICE)
    denied = stella(
        env,
        "--profile",
        "bob",
        "component",
        "add",
        "web",
        "--image",
        "local/shop/web",
        "--service",
        str(good),
    )
    assert denied.returncode == 1
    assert "approver" in denied.stderr
    assert ok_json(env, "component", "list", "--output", "json") == []


def test_the_database_refuses_an_image_in_a_fragment_even_behind_the_services_back(
    world, registry, tmp_path, superuser: psycopg.Connection
) -> None:
    env = _setup(world, registry, tmp_path)
    ok_json(
        env,
        "--profile",
        "alice",
        "component",
        "add",
        "web",
        "--image",
        "local/shop/web",
        "--output",
        "json",
    )
    for value in ('{"image": "evil/x:latest"}', '{"build": "."}', '["not", "a", "mapping"]'):
        with pytest.raises(psycopg.errors.CheckViolation):
            superuser.execute(
                "UPDATE release.components SET service = %s::jsonb WHERE name = 'web'", (value,)
            )
