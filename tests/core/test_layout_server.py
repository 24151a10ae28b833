"""The read-only distribution endpoint over an OCI layout, over real HTTP on loopback, and the
static busybox check that makes the demo's images runnable."""

from __future__ import annotations

import hashlib
import http.client
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stella_core.demo.images import BUSYBOX, is_static_elf, static_busybox
from stella_core.releases.layout import OciLayoutWriter, build_layer
from stella_core.releases.layout_server import (
    LayoutServer,
    LayoutServerError,
    save_served_layout,
    served_layout,
)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[LayoutServer, Path]]:
    root = tmp_path / "layout"
    writer = OciLayoutWriter(root)
    base = build_layer({"bin/tool": b"#!/bin/sh\n"}, modes={"bin/tool": 0o755}, symlinks={})
    writer.write_image("shop/web", "1.0", files={"srv/VERSION": b"1.0\n"}, base_layers=[base])
    with LayoutServer(root) as server:
        yield server, root


def get(server: LayoutServer, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_serves_manifests_and_blobs_with_the_bytes_and_digests_as_stored(served) -> None:
    server, root = served
    assert server.url == f"http://127.0.0.1:{server.port}"
    status, headers, _ = get(server, "/v2/")
    assert status == 200
    assert headers["docker-distribution-api-version"] == "registry/2.0"

    status, headers, manifest = get(server, "/v2/shop/web/manifests/1.0")
    assert status == 200
    digest = sha256(manifest)
    assert headers["content-type"] == OCI_MANIFEST
    assert headers["docker-content-digest"] == digest
    [entry] = json.loads((root / "shop/web/index.json").read_bytes())["manifests"]
    assert entry["digest"] == digest  # what the layout's index says the tag is

    status, headers, again = get(server, f"/v2/shop/web/manifests/{digest}")
    assert (status, again) == (200, manifest)
    status, headers, empty = get(server, f"/v2/shop/web/manifests/{digest}", "HEAD")
    assert (status, empty, headers["content-length"]) == (200, b"", str(len(manifest)))

    document = json.loads(manifest)
    assert len(document["layers"]) == 2  # the shared base layer, then the image's files
    for descriptor in [document["config"], *document["layers"]]:
        status, headers, blob = get(server, f"/v2/shop/web/blobs/{descriptor['digest']}")
        assert status == 200
        assert sha256(blob) == descriptor["digest"] == headers["docker-content-digest"]
        assert len(blob) == descriptor["size"]


def test_refuses_traversal_unknown_names_and_writes(served, tmp_path: Path) -> None:
    server, root = served
    outside = tmp_path / "secret"
    outside.write_bytes(b"not for you")
    # A blob file that is a link out of the root is not served, even under a valid digest.
    link_digest = sha256(outside.read_bytes())
    (root / "shop/web/blobs/sha256" / link_digest.split(":")[1]).symlink_to(outside)
    for path in (
        f"/v2/shop/web/blobs/{link_digest}",
        "/v2/../../etc/passwd",
        "/v2/shop/../../secret/manifests/1.0",
        "/v2/shop/web/blobs/sha256:..%2f..%2fsecret",
        "/v2/shop/web/blobs/..%2F..%2Fsecret",
        "/v2/shop/web/manifests/..",
        "/v2/%2e%2e/web/manifests/1.0",
        "/v2/shop/nothing/manifests/1.0",
        "/v2/shop/web/manifests/9.9",
        f"/v2/shop/web/blobs/{sha256(b'absent')}",
        "/v2/_catalog",
        "/etc/passwd",
    ):
        status, _, body = get(server, path)
        assert status == 404, path
        assert b"not for you" not in body
    for method in ("PUT", "POST", "DELETE", "PATCH"):
        status, headers, _ = get(server, "/v2/shop/web/manifests/1.0", method)
        assert status == 405
        assert headers["allow"] == "GET, HEAD"


def test_a_taken_port_is_one_clear_error_and_the_port_is_kept_in_stella_home(
    served, tmp_path: Path
) -> None:
    server, root = served
    with pytest.raises(
        LayoutServerError, match=f"cannot serve the OCI layout .* on 127.0.0.1:{server.port}: "
    ):
        LayoutServer(root, server.port).start()
    home = tmp_path / "home"
    home.mkdir()
    assert served_layout(home) is None
    save_served_layout(home, root, server.port)
    assert served_layout(home) == (root, server.port)
    (home / "served-layout.json").write_text('{"layout": "/x", "port": "80"}')
    assert served_layout(home) is None


def test_only_a_static_busybox_makes_the_demo_images_runnable(tmp_path: Path) -> None:
    # The Python running this is dynamically linked: it names a program interpreter.
    assert not is_static_elf(Path(sys.executable).resolve().read_bytes())
    assert not is_static_elf(b"#!/bin/sh\n" + b"\0" * 100)
    fake = tmp_path / "busybox"
    fake.write_bytes(Path(sys.executable).resolve().read_bytes())
    assert static_busybox(fake) is None
    if BUSYBOX.exists():
        assert static_busybox(BUSYBOX) is not None  # Debian's busybox-static
