"""compose.stella.lock.yml: images pinned by digest with the tag as a comment, the deployment's
labels and x-stella block, the same bytes for the same inputs, and fragments checked again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import pytest
import yaml

from stella_core.deploy.lockfile import (
    LockedComponent,
    lockfile_sha256,
    parse_pinned,
    pinned_images,
    render_lockfile,
)
from stella_core.errors import DefinitionError, InvalidReferenceError
from stella_core.releases.compose import ServiceFragmentError

WEB = "sha256:" + "a" * 64
WORKER = "sha256:" + "b" * 64
RELEASE = UUID("11111111-1111-4111-8111-111111111111")
ENVIRONMENT = UUID("22222222-2222-4222-8222-222222222222")
DEPLOYMENT = UUID("33333333-3333-4333-8333-333333333333")
STARTED = datetime(2026, 12, 2, 13, 0, 5, tzinfo=UTC)


def _render(**changes: Any) -> str:
    inputs: dict[str, Any] = {
        "release_id": RELEASE,
        "release_name": "shop-2026.12.1",
        "release_created_at": datetime(2026, 12, 1, 9, 30, tzinfo=UTC),
        "environment_id": ENVIRONMENT,
        "environment_name": "staging",
        "deployment_id": DEPLOYMENT,
        "started_at": STARTED,
        "components": [
            LockedComponent(
                name="web",
                image="127.0.0.1:5000/shop/web",
                digest=WEB,
                tag="v1.4",
                service={
                    "network_mode": "host",
                    "environment": {"PORT": "18090"},
                    "labels": {"team": "shop"},
                    "healthcheck": {"test": ["CMD", "wget", "-q", "localhost:18090"]},
                },
            ),
            LockedComponent(
                name="worker",
                image="registry.example.com/shop/worker",
                digest=WORKER,
                tag=None,
                service={"network_mode": "none", "command": ["sleep", "3600"]},
            ),
        ],
    }
    inputs.update(changes)
    return render_lockfile(**inputs)


def test_each_image_is_pinned_by_digest_with_the_tag_as_a_comment() -> None:
    text = _render()
    lines = text.splitlines()
    assert "    image: 127.0.0.1:5000/shop/web@" + WEB + "  # tag: v1.4" in lines
    assert "    image: registry.example.com/shop/worker@" + WORKER in lines
    doc = yaml.safe_load(text)
    assert doc["services"]["web"]["image"] == "127.0.0.1:5000/shop/web@" + WEB
    assert pinned_images(text) == {
        "web": "127.0.0.1:5000/shop/web@" + WEB,
        "worker": "registry.example.com/shop/worker@" + WORKER,
    }
    # No tag reference anywhere a runtime would read.
    assert ":v1.4" not in text


def test_the_fragment_the_labels_and_the_x_stella_block() -> None:
    doc = yaml.safe_load(_render())
    web = doc["services"]["web"]
    assert web["network_mode"] == "host"
    assert web["environment"] == {"PORT": "18090"}
    assert web["labels"] == {
        "team": "shop",
        "stella.release.id": str(RELEASE),
        "stella.component": "web",
        "stella.digest": WEB,
        "stella.deployment.id": str(DEPLOYMENT),
    }
    assert doc["services"]["worker"]["command"] == ["sleep", "3600"]
    x = doc["x-stella"]
    assert x["release"] == {
        "id": str(RELEASE),
        "name": "shop-2026.12.1",
        "created_at": "2026-12-01T09:30:00Z",
    }
    assert x["environment"] == {"id": str(ENVIRONMENT), "name": "staging"}
    assert x["deployment"] == {"id": str(DEPLOYMENT), "started_at": "2026-12-02T13:00:05Z"}
    assert x["checksums"]["services"].startswith("sha256:")


def test_the_header_says_generated_do_not_edit_release_time_and_generator() -> None:
    header = [line for line in _render().splitlines() if line.startswith("#")]
    assert "do not edit" in header[0]
    assert any("shop-2026.12.1" in line for line in header)
    assert any("2026-12-02T13:00:05Z" in line for line in header)
    assert any(line.startswith("# Generator: stella-release-desk/") for line in header)


def test_same_inputs_same_bytes_and_hash_other_inputs_other_hash() -> None:
    first = _render()
    # The same instant in another time zone is the same input.
    same = _render(started_at=STARTED.astimezone(timezone(timedelta(hours=5))))
    assert first == same
    assert lockfile_sha256(first) == lockfile_sha256(same)
    assert len(lockfile_sha256(first)) == 64
    other = _render(started_at=STARTED + timedelta(seconds=1))
    assert lockfile_sha256(other) != lockfile_sha256(first)


@pytest.mark.parametrize(
    ("service", "key"),
    [
        ({"image": "evil/other:latest"}, "image"),
        ({"privileged": True}, "privileged"),
        ({"pid": "host"}, "pid"),
        ({"cap_add": ["SYS_ADMIN"]}, "cap_add"),
        ({"volumes": ["/:/host"]}, "volumes"),
        ({"labels": {"stella.digest": "sha256:" + "0" * 64}}, "labels"),
    ],
)
def test_a_fragment_written_behind_the_services_back_is_refused_again(
    service: dict[str, Any], key: str
) -> None:
    component = LockedComponent(name="web", image="127.0.0.1:5000/web", digest=WEB, service=service)
    with pytest.raises(ServiceFragmentError) as caught:
        _render(components=[component])
    assert caught.value.key == key


@pytest.mark.parametrize(
    "component",
    [
        LockedComponent(name="web", image="web", digest=WEB),  # no registry host
        LockedComponent(name="web", image="127.0.0.1:5000/Web", digest=WEB),
        LockedComponent(name="web", image="127.0.0.1:5000/web", digest="sha256:abc"),
        LockedComponent(name="web", image="127.0.0.1:5000/web", digest=WEB, tag="v1\n# x"),
        LockedComponent(name="Web Server", image="127.0.0.1:5000/web", digest=WEB),
    ],
)
def test_bad_references_and_names_are_refused(component: LockedComponent) -> None:
    with pytest.raises(DefinitionError):
        _render(components=[component])


def test_parse_pinned() -> None:
    assert parse_pinned("127.0.0.1:5000/a/b@" + WEB) == ("127.0.0.1:5000/a/b", WEB)
    for bad in ("127.0.0.1:5000/a:v1", "a@" + WEB, "127.0.0.1:5000/a@sha256:xyz"):
        with pytest.raises(InvalidReferenceError):
            parse_pinned(bad)


def test_dollar_signs_are_written_literally_never_substituted_by_compose() -> None:
    component = LockedComponent(
        name="web",
        image="127.0.0.1:5000/web",
        digest=WEB,
        service={"environment": {"A": "${HOME}", "B": "$$"}, "labels": {"x": "$y"}},
    )
    doc = yaml.safe_load(_render(components=[component]))
    assert doc["services"]["web"]["environment"] == {"A": "$${HOME}", "B": "$$$$"}
    assert doc["services"]["web"]["labels"]["x"] == "$$y"


def test_a_volume_whose_source_is_a_path_is_a_bind_mount() -> None:
    spec = {"type": "volume", "source": "/etc", "target": "/e"}
    component = LockedComponent(
        name="web", image="127.0.0.1:5000/web", digest=WEB, service={"volumes": [spec]}
    )
    with pytest.raises(ServiceFragmentError, match="bind mount of host path '/etc'"):
        _render(components=[component])
