"""Strict reference grammar: what a release manager types is parsed exactly or refused clearly."""

from __future__ import annotations

import pytest

from stella_core.errors import DefinitionError, InvalidNameError, InvalidReferenceError
from stella_core.releases.model import RegistryKind
from stella_core.releases.reference import parse_component_pin, parse_image
from stella_core.releases.service import normalise_registry_url

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("web=1.4.2", ("web", "1.4.2", None)),
        (f"web={DIGEST}", ("web", None, DIGEST)),
        (f"web=1.4.2@{DIGEST}", ("web", "1.4.2", DIGEST)),
        ("api=latest_2026-11", ("api", "latest_2026-11", None)),
    ],
)
def test_component_pins(raw, expected) -> None:
    assert parse_component_pin(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "web",  # no '='
        "web=",  # empty reference
        "web=-bad",  # tag may not start with '-'
        "web=has space",
        "web=" + "x" * 129,  # tag too long
        "web=sha256:abc",  # short digest
        "web=sha256:" + "AB" * 32,  # upper-case hex
        "web=md5:" + "a" * 32,
        f"web=1.0@{DIGEST}x",
    ],
)
def test_malformed_pins_are_refused(raw) -> None:
    with pytest.raises(InvalidReferenceError):
        parse_component_pin(raw)


def test_bad_component_name_is_a_name_error() -> None:
    with pytest.raises(InvalidNameError):
        parse_component_pin("Web App=1.0")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("hub/team/web", ("hub", "team/web")), ("local/a.b/c-d__e", ("local", "a.b/c-d__e"))],
)
def test_images(raw, expected) -> None:
    assert parse_image(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "web",
        "hub/",
        "/web",
        "hub/Team/web",
        "hub/web:1.0",
        f"hub/web@{DIGEST}",
        "hub/../etc",
        "hub/web/",
    ],
)
def test_malformed_images_are_refused(raw) -> None:
    with pytest.raises(DefinitionError):
        parse_image(raw)


@pytest.mark.parametrize(
    ("url", "insecure", "kind", "normalised"),
    [
        ("https://reg.example/", False, RegistryKind.DISTRIBUTION, "https://reg.example"),
        ("reg.example:5000", False, RegistryKind.DISTRIBUTION, "https://reg.example:5000"),
        ("reg.example:5000", True, RegistryKind.DISTRIBUTION, "http://reg.example:5000"),
        ("127.0.0.1:5000", False, RegistryKind.DISTRIBUTION, "http://127.0.0.1:5000"),
        ("/srv/oci", False, RegistryKind.OCI_LAYOUT, "file:///srv/oci"),
        ("file:///srv/oci", False, RegistryKind.OCI_LAYOUT, "file:///srv/oci"),
        ("file://localhost/srv/oci", False, RegistryKind.OCI_LAYOUT, "file:///srv/oci"),
        ("file:/srv/oci", False, RegistryKind.OCI_LAYOUT, "file:///srv/oci"),
        ("file:///srv/my%20oci", False, RegistryKind.OCI_LAYOUT, "file:///srv/my%20oci"),
        ("/srv/my oci", False, RegistryKind.OCI_LAYOUT, "file:///srv/my%20oci"),
        ("http://[::1]:5000", True, RegistryKind.DISTRIBUTION, "http://[::1]:5000"),
    ],
)
def test_registry_urls(url, insecure, kind, normalised) -> None:
    assert normalise_registry_url(url, insecure=insecure) == (kind, normalised)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "ftp://reg.example",
        "https://u:p@reg.example",
        "https://reg.example/?x=1",
        "https://:5000",
        "https://reg.example:99999",
        "file://relative/path",
        "http://[::1",
        "http://[zz]",
        "[::1",
        "file:",
        "file://build-host/srv/oci",
        "file:///srv/a%00b",
        "https://reg.example/a b",
        "https://reg.example\x00",
        "reg.example:",
    ],
)
def test_bad_registry_urls(url) -> None:
    with pytest.raises(DefinitionError):
        normalise_registry_url(url, insecure=False)
