"""Digest-first releases against the real CNCF registry: resolution, immutability, bad input."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from sqlalchemy import text

from stella_core.errors import (
    AlreadyExistsError,
    DefinitionError,
    InvalidReferenceError,
    ManifestNotFoundError,
    NotFoundError,
    RegistryAuthError,
    RegistryUnreachableError,
)
from stella_core.releases.model import ComponentPin
from tests.support.registry import (
    push_docker_image,
    push_docker_list,
    push_image,
    push_oci_index,
)


def _repo() -> str:
    # The registry fixture is shared by the session; each test gets its own repositories.
    return f"t{uuid.uuid4().hex[:10]}/app"


def _audit_count(stella) -> int:
    with stella.db.transaction() as conn:
        return conn.execute(text("SELECT count(*) FROM tenancy.audit_log")).scalar_one()


def test_release_pins_single_manifest_index_and_manifest_list_digests(world, registry) -> None:
    repo = _repo()
    single = push_image(registry.url, f"{repo}-single", "1.0")
    docker = push_docker_image(registry.url, f"{repo}-docker", "1.0")
    amd = push_image(registry.url, f"{repo}-multi", "amd", architecture="amd64")
    arm = push_image(registry.url, f"{repo}-multi", "arm", architecture="arm64")
    index = push_oci_index(
        registry.url, f"{repo}-multi", "1.0", [(amd, "linux/amd64"), (arm, "linux/arm64")]
    )
    d_amd = push_docker_image(registry.url, f"{repo}-list", "amd", architecture="amd64")
    d_arm = push_docker_image(registry.url, f"{repo}-list", "arm", architecture="arm64")
    mlist = push_docker_list(
        registry.url, f"{repo}-list", "1.0", [(d_amd, "linux/amd64"), (d_arm, "linux/arm64")]
    )

    stella = world.open()
    stella.releases.add_registry("local", registry.url, insecure=True)
    for name in ("single", "docker", "multi", "list"):
        stella.releases.add_component(name, f"local/{repo}-{name}")
    progress: list[tuple[int, int]] = []
    rel = stella.releases.create_release(
        "2026.11.27-1",
        [ComponentPin(component=n, tag="1.0") for n in ("single", "docker", "multi", "list")],
        progress=lambda done, total, _msg: progress.append((done, total)),
    )
    got = {c.name: c.digest for c in rel.components}
    assert got == {"single": single, "docker": docker, "multi": index, "list": mlist}
    # The manifest list resolves to the list itself, never the amd64 child the registry
    # would hand out to a client with an incomplete Accept header.
    assert got["list"] != d_amd
    assert progress[-1] == (4, 4)
    shown = stella.releases.get_release("2026.11.27-1").to_json()
    assert shown["created_by"] == stella.profile.person_name
    assert [c["tag"] for c in shown["components"]] == ["1.0"] * 4
    assert all(len(c["digest"]) == 71 for c in shown["components"])


def test_moving_a_tag_later_leaves_the_release_unchanged(world, registry) -> None:
    repo = _repo()
    first = push_image(registry.url, repo, "stable", files={"v": b"1"})
    stella = world.open()
    stella.releases.add_registry("local", registry.url, insecure=True)
    stella.releases.add_component("web", f"local/{repo}")
    stella.releases.create_release("r1", [ComponentPin(component="web", tag="stable")])
    moved = push_image(registry.url, repo, "stable", files={"v": b"2"})
    assert moved != first
    assert stella.releases.get_release("r1").components[0].digest == first
    again = stella.releases.create_release("r2", [ComponentPin(component="web", tag="stable")])
    assert again.components[0].digest == moved
    with pytest.raises(AlreadyExistsError):
        stella.releases.create_release("r1", [ComponentPin(component="web", tag="stable")])
    assert stella.releases.get_release("r1").components[0].digest == first


def test_pinning_by_digest_is_verified_against_the_registry(world, registry) -> None:
    repo = _repo()
    digest = push_image(registry.url, repo, "1.0")
    stella = world.open()
    stella.releases.add_registry("local", registry.url, insecure=True)
    stella.releases.add_component("web", f"local/{repo}")
    rel = stella.releases.create_release(
        "by-digest", [ComponentPin(component="web", digest=digest)]
    )
    assert rel.components[0].digest == digest
    assert rel.components[0].tag is None
    absent = "sha256:" + hashlib.sha256(b"not pushed").hexdigest()
    with pytest.raises(ManifestNotFoundError):
        stella.releases.create_release("absent", [ComponentPin(component="web", digest=absent)])


def test_every_bad_input_is_typed_and_stores_nothing(world, registry, closed_port_url) -> None:
    repo = _repo()
    push_image(registry.url, repo, "1.0")
    stella = world.open()
    stella.releases.add_registry("local", registry.url, insecure=True)
    stella.releases.add_registry("down", closed_port_url, insecure=True)
    stella.releases.add_component("web", f"local/{repo}")
    stella.releases.add_component("ghost", f"local/{repo}-nothing-here")
    stella.releases.add_component("far", f"down/{repo}")
    before = _audit_count(stella)

    cases = [
        ([ComponentPin(component="web", tag="9.9")], ManifestNotFoundError, "9.9"),
        ([ComponentPin(component="ghost", tag="1.0")], ManifestNotFoundError, "nothing-here"),
        ([ComponentPin(component="nope", tag="1.0")], NotFoundError, "nope"),
        ([ComponentPin(component="far", tag="1.0")], RegistryUnreachableError, "127.0.0.1"),
        # all or nothing: one good pin does not save the release
        (
            [ComponentPin(component="web", tag="1.0"), ComponentPin(component="ghost", tag="1.0")],
            ManifestNotFoundError,
            "nothing-here",
        ),
    ]
    for pins, error, needle in cases:
        with pytest.raises(error, match=needle):
            stella.releases.create_release("bad", pins)
    with pytest.raises(InvalidReferenceError):
        stella.releases.add_component("x", "local/UPPER/case")
    with pytest.raises(DefinitionError):
        stella.releases.create_release(
            "bad name with spaces", [ComponentPin(component="web", tag="1.0")]
        )
    with pytest.raises(NotFoundError):
        stella.releases.add_component("y", f"unknown/{repo}")
    with pytest.raises(DefinitionError):
        stella.releases.add_registry("creds", "http://user:pw@127.0.0.1:1")
    assert stella.releases.list_releases() == []
    assert _audit_count(stella) == before


def test_basic_auth_registry_right_and_wrong_password(world, registry_basic, superuser) -> None:
    repo = _repo()
    digest = push_image(registry_basic.url, repo, "1.0", auth=registry_basic.auth)
    stella = world.open()
    stella.releases.add_registry(
        "good",
        registry_basic.url,
        username=registry_basic.username,
        password=registry_basic.password,
        insecure=True,
    )
    stella.releases.add_registry(
        "bad",
        registry_basic.url,
        username=registry_basic.username,
        password="wrong-password",
        insecure=True,
    )
    stella.releases.add_registry("none", registry_basic.url, insecure=True)
    for reg in ("good", "bad", "none"):
        stella.releases.add_component(reg, f"{reg}/{repo}")
    rel = stella.releases.create_release("ok", [ComponentPin(component="good", tag="1.0")])
    assert rel.components[0].digest == digest
    for reg in ("bad", "none"):
        with pytest.raises(RegistryAuthError) as info:
            stella.releases.create_release(f"r-{reg}", [ComponentPin(component=reg, tag="1.0")])
        assert registry_basic.password not in str(info.value)
        assert "wrong-password" not in str(info.value)
    assert [r.name for r in stella.releases.list_releases()] == ["ok"]
    # Stored encrypted: neither the ciphertext column nor the audit log hold the password.
    raw = superuser.execute(
        "SELECT password_ciphertext FROM release.registries WHERE name = 'good'"
    ).fetchone()[0]
    assert registry_basic.password.encode() not in bytes(raw)
    dump = superuser.execute(
        "SELECT string_agg(details::text, ' ') FROM tenancy.audit_log"
    ).fetchone()[0]
    assert registry_basic.password not in dump


def test_token_auth_registry(world, registry_token) -> None:
    repo = _repo()
    digest = push_image(registry_token.url, repo, "1.0", auth=registry_token.auth)
    stella = world.open()
    stella.releases.add_registry(
        "tok",
        registry_token.url,
        username=registry_token.username,
        password=registry_token.password,
        insecure=True,
    )
    stella.releases.add_component("web", f"tok/{repo}")
    rel = stella.releases.create_release("tok-1", [ComponentPin(component="web", tag="1.0")])
    assert rel.components[0].digest == digest


def test_approver_cannot_create_releases(world, registry) -> None:
    from stella_core.errors import AuthorizationError
    from stella_core.tenancy.model import ProductRole

    admin = world.open()
    admin.releases.add_registry("local", registry.url, insecure=True)
    user, password = admin.tenancy.add_user("bob", ProductRole.APPROVER)
    admin.save_profile_for(user.name, password)
    bob = world.open("bob")
    with pytest.raises(AuthorizationError):
        bob.releases.add_component("web", f"local/{_repo()}")
