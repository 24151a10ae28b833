"""The command line's side of rollouts that needs no targets: a component's health check given
with flags, checked before anything is stored."""

from __future__ import annotations

import json

from tests.integration.test_cli import stella
from tests.support.registry import RunningRegistry


def test_component_add_takes_a_health_check_and_refuses_a_bad_one(
    world, registry: RunningRegistry
) -> None:
    admin = world.open()
    admin.releases.add_registry("local", registry.url, insecure=True)
    env = world.env()
    added = stella(
        env,
        "component",
        "add",
        "web",
        "--image",
        "local/ro/web",
        "--health-url",
        "http://127.0.0.1:8080/health",
        "--health-timeout",
        "5",
        "--output",
        "json",
    )
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["service"]["x-stella-health"] == {
        "url": "http://127.0.0.1:8080/health",
        "timeout": 5.0,
    }
    # A check asked of a file, or one that could never answer, stores nothing.
    for flags in (
        ["--health-url", "file:///etc/shadow"],
        ["--health-url", "http://127.0.0.1/", "--health-expect-status", "999"],
        ["--health-timeout", "5"],
    ):
        refused = stella(env, "component", "add", "api", "--image", "local/ro/api", *flags)
        assert refused.returncode == 2, (flags, refused.stderr)
    assert [c.name for c in admin.releases.list_components()] == ["web"]
