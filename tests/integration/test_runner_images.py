"""The test image the runner tests deploy: same inputs, same digest; another variant, another
digest; and the registry names the digest we computed."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import uuid

from tests.support.images import build_busybox_image, push_busybox_image
from tests.support.registry import RunningRegistry, sha256_of


def test_same_variant_same_digest_other_variant_other_digest() -> None:
    first = build_busybox_image("a")
    again = build_busybox_image("a")
    assert first.digest == again.digest
    assert (first.layer, first.config, first.manifest) == (
        again.layer,
        again.config,
        again.manifest,
    )
    assert build_busybox_image("b").digest != first.digest


def test_the_image_holds_busybox_its_applets_and_a_page_and_traps_term() -> None:
    image = build_busybox_image("demo")
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(image.layer))) as tar:
        members = {m.name: m for m in tar.getmembers()}
        page = tar.extractfile(members["www/index.html"])
        assert page is not None
        assert page.read() == b"hello from demo\n"
    assert members["bin/busybox"].isfile()
    assert members["bin/sh"].issym()
    assert members["bin/sh"].linkname == "busybox"
    assert {m.mtime for m in members.values()} == {0}
    config = json.loads(image.config)
    assert "DEMO_VARIANT=demo" in config["config"]["Env"]
    assert config["config"]["Cmd"][-1].startswith("trap 'exit 0' TERM INT;")
    assert config["rootfs"]["diff_ids"] == [sha256_of(gzip.decompress(image.layer))]


def test_the_registry_stores_it_under_the_digest_computed_here(registry: RunningRegistry) -> None:
    pushed = push_busybox_image(registry.url, f"i{uuid.uuid4().hex[:8]}/app", "v1", "reg")
    assert pushed.digest == build_busybox_image("reg").digest
    assert pushed.pinned.endswith("/app@" + pushed.digest)
