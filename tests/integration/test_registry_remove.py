"""`stella registry remove`: a registry no component uses goes (audited); one in use stays."""

from __future__ import annotations

from tests.integration.test_cli import ok_json, stella


def test_a_registry_is_removed_unless_a_component_uses_it(world) -> None:
    env = world.env()
    ok_json(env, "db", "upgrade", "--output", "json")
    ok_json(env, "registry", "add", "main", "--url", "https://main.example.test", "-o", "json")
    ok_json(env, "registry", "add", "old", "--url", "https://old.example.test", "-o", "json")
    ok_json(env, "component", "add", "web", "--image", "main/shop/web", "-o", "json")

    refused = stella(env, "registry", "remove", "main")
    assert refused.returncode == 2
    assert "used by component(s) web" in refused.stderr
    removed = ok_json(env, "registry", "remove", "old", "--output", "json")
    assert removed["name"] == "old"
    assert [r["name"] for r in ok_json(env, "registry", "list", "-o", "json")] == ["main"]
    audit = ok_json(env, "audit", "list", "--output", "json")
    assert any(e["action"] == "registry.remove" and e["entity_id"] == "old" for e in audit)
    missing = stella(env, "registry", "remove", "old")
    assert missing.returncode == 2
    assert "no registry named 'old'" in missing.stderr
