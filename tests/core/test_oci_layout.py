"""OCI image layout: the writer is deterministic, the source verifies everything it reads."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from stella_core.errors import (
    DigestMismatchError,
    InvalidReferenceError,
    ManifestNotFoundError,
    RegistryError,
)
from stella_core.releases.layout import (
    REF_NAME_ANNOTATION,
    IndexChild,
    OciLayoutSource,
    OciLayoutWriter,
)
from stella_core.releases.model import MediaType, ResolvedManifest
from stella_core.releases.oci import ManifestSource

FILES = {"etc/app.conf": b"port=8080\n", "bin/run": b"#!/bin/sh\nexec app\n", "README": b"hi"}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_path(root: Path, repository: str, digest: str) -> Path:
    return root.joinpath(*repository.split("/"), "blobs", "sha256", digest.split(":")[1])


def read_json(path: Path) -> dict[str, object]:
    document = json.loads(path.read_bytes())
    assert isinstance(document, dict)
    return document


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, ResolvedManifest]:
    root = tmp_path / "layouts"
    manifest = OciLayoutWriter(root).write_image(
        "team/web", "1.0.0", files=FILES, config={"Cmd": ["/bin/run"]}
    )
    return root, manifest


# -- writer -------------------------------------------------------------------------------------


def test_same_inputs_give_same_digests(tmp_path: Path) -> None:
    first = OciLayoutWriter(tmp_path / "a").write_image("team/web", "v1", files=FILES)
    reordered = dict(reversed(list(FILES.items())))
    second = OciLayoutWriter(tmp_path / "b").write_image("team/web", "v1", files=reordered)
    different = OciLayoutWriter(tmp_path / "c").write_image(
        "team/web", "v1", files={**FILES, "README": b"changed"}
    )

    assert first == second
    assert different.digest != first.digest
    blobs_a = sorted(p.name for p in (tmp_path / "a/team/web/blobs/sha256").iterdir())
    blobs_b = sorted(p.name for p in (tmp_path / "b/team/web/blobs/sha256").iterdir())
    assert blobs_a == blobs_b


def test_written_image_is_a_valid_oci_layout(written: tuple[Path, ResolvedManifest]) -> None:
    root, manifest = written
    layout = root / "team" / "web"

    assert read_json(layout / "oci-layout") == {"imageLayoutVersion": "1.0.0"}
    index = read_json(layout / "index.json")
    assert index["schemaVersion"] == 2
    assert index["manifests"] == [
        {
            "mediaType": MediaType.OCI_MANIFEST.value,
            "digest": manifest.digest,
            "size": manifest.size,
            "annotations": {REF_NAME_ANNOTATION: "1.0.0"},
        }
    ]
    manifest_bytes = blob_path(root, "team/web", manifest.digest).read_bytes()
    assert sha256(manifest_bytes) == manifest.digest
    assert len(manifest_bytes) == manifest.size
    body = json.loads(manifest_bytes)
    assert body["mediaType"] == MediaType.OCI_MANIFEST.value

    config_bytes = blob_path(root, "team/web", body["config"]["digest"]).read_bytes()
    layer_bytes = blob_path(root, "team/web", body["layers"][0]["digest"]).read_bytes()
    assert sha256(config_bytes) == body["config"]["digest"]
    assert sha256(layer_bytes) == body["layers"][0]["digest"]
    assert body["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"

    config = json.loads(config_bytes)
    tar_bytes = gzip.decompress(layer_bytes)
    assert config["architecture"] == "amd64"
    assert config["os"] == "linux"
    assert config["config"] == {"Cmd": ["/bin/run"]}
    assert config["rootfs"] == {"type": "layers", "diff_ids": [sha256(tar_bytes)]}

    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names)
        assert set(names) == {"README", "bin", "bin/run", "etc", "etc/app.conf"}
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
        extracted = tar.extractfile("etc/app.conf")
        assert extracted is not None
        assert extracted.read() == FILES["etc/app.conf"]
    assert layer_bytes[4:8] == b"\x00\x00\x00\x00"  # gzip header mtime is zero


def test_retagging_replaces_the_entry(tmp_path: Path) -> None:
    writer = OciLayoutWriter(tmp_path)
    old = writer.write_image("team/web", "latest", files={"v": b"1"})
    writer.write_image("team/web", "1.0", files={"v": b"1"})
    new = writer.write_image("team/web", "latest", files={"v": b"2"})

    entries = read_json(tmp_path / "team/web/index.json")["manifests"]
    assert isinstance(entries, list)
    tags = [e["annotations"][REF_NAME_ANNOTATION] for e in entries]
    assert tags == ["latest", "1.0"]
    source = OciLayoutSource(tmp_path)
    assert source.resolve("team/web", "latest") == new
    assert source.resolve("team/web", "1.0") == old


@pytest.mark.parametrize("name", ["/etc/passwd", "../escape", "a/../../b", "", "."])
def test_writer_refuses_unsafe_file_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError):
        OciLayoutWriter(tmp_path).write_image("team/web", "v1", files={name: b"x"})


# -- source -------------------------------------------------------------------------------------


def test_resolves_tag_and_digest(written: tuple[Path, ResolvedManifest]) -> None:
    root, manifest = written
    source: ManifestSource = OciLayoutSource(root)

    assert source.resolve("team/web", "1.0.0") == manifest
    assert source.resolve("team/web", manifest.digest) == manifest
    source.close()


def test_multi_arch_index_resolves_to_index_digest(tmp_path: Path) -> None:
    writer = OciLayoutWriter(tmp_path)
    amd64 = writer.write_image("team/multi", None, files=FILES, architecture="amd64")
    arm64 = writer.write_image("team/multi", None, files=FILES, architecture="arm64")
    index = writer.write_index(
        "team/multi",
        "2.0",
        [IndexChild(amd64, "amd64"), IndexChild(arm64, "arm64", variant="v8")],
    )
    index_bytes = blob_path(tmp_path, "team/multi", index.digest).read_bytes()

    resolved = OciLayoutSource(tmp_path).resolve("team/multi", "2.0")

    assert resolved.digest == sha256(index_bytes)
    assert resolved.media_type == MediaType.OCI_INDEX.value
    assert resolved.digest not in (amd64.digest, arm64.digest)
    assert amd64.digest != arm64.digest  # the config differs, so the manifests do
    children = json.loads(index_bytes)["manifests"]
    assert [c["digest"] for c in children] == [amd64.digest, arm64.digest]
    assert children[1]["platform"] == {"architecture": "arm64", "os": "linux", "variant": "v8"}
    # untagged children are still resolvable by digest
    assert OciLayoutSource(tmp_path).resolve("team/multi", arm64.digest) == arm64


def test_index_needs_children_written_first(tmp_path: Path) -> None:
    ghost = ResolvedManifest(
        digest="sha256:" + "1" * 64, media_type=MediaType.OCI_MANIFEST.value, size=10
    )
    with pytest.raises(ValueError, match="write it first"):
        OciLayoutWriter(tmp_path).write_index("team/multi", "x", [IndexChild(ghost, "amd64")])


def test_media_type_comes_from_blob_when_entry_has_none(
    written: tuple[Path, ResolvedManifest],
) -> None:
    root, manifest = written
    index_path = root / "team/web/index.json"
    index = read_json(index_path)
    entries = index["manifests"]
    assert isinstance(entries, list)
    del entries[0]["mediaType"]
    index_path.write_text(json.dumps(index))

    assert OciLayoutSource(root).resolve("team/web", "1.0.0").media_type == manifest.media_type


def test_tampered_blob_same_size_is_a_digest_mismatch(
    written: tuple[Path, ResolvedManifest],
) -> None:
    root, manifest = written
    path = blob_path(root, "team/web", manifest.digest)
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01  # same length, different bytes
    path.write_bytes(bytes(data))

    with pytest.raises(DigestMismatchError) as err:
        OciLayoutSource(root).resolve("team/web", "1.0.0")
    assert manifest.digest in str(err.value)

    with pytest.raises(DigestMismatchError):
        OciLayoutSource(root).resolve("team/web", manifest.digest)


def test_blob_with_wrong_size_is_a_digest_mismatch(
    written: tuple[Path, ResolvedManifest],
) -> None:
    root, manifest = written
    path = blob_path(root, "team/web", manifest.digest)
    path.write_bytes(path.read_bytes() + b" ")

    with pytest.raises(DigestMismatchError, match="bytes"):
        OciLayoutSource(root).resolve("team/web", "1.0.0")


def test_missing_tag_repository_and_blob_are_not_found(
    written: tuple[Path, ResolvedManifest],
) -> None:
    root, manifest = written
    source = OciLayoutSource(root)

    with pytest.raises(ManifestNotFoundError, match="'nope'"):
        source.resolve("team/web", "nope")
    with pytest.raises(ManifestNotFoundError, match="team/api"):
        source.resolve("team/api", "1.0.0")
    with pytest.raises(ManifestNotFoundError, match="not an OCI image layout"):
        source.resolve("team", "1.0.0")  # a parent directory, not a layout
    with pytest.raises(ManifestNotFoundError):
        source.resolve("team/web", "sha256:" + "e" * 64)
    with pytest.raises(ManifestNotFoundError):
        OciLayoutSource(root / "absent").resolve("team/web", "1.0.0")

    blob_path(root, "team/web", manifest.digest).unlink()
    with pytest.raises(ManifestNotFoundError, match="missing"):
        source.resolve("team/web", "1.0.0")


def test_malformed_index_and_layout_files_are_named(
    written: tuple[Path, ResolvedManifest],
) -> None:
    root, _ = written
    layout = root / "team/web"
    source = OciLayoutSource(root)

    (layout / "index.json").write_text("{not json")
    with pytest.raises(RegistryError, match=r"index\.json"):
        source.resolve("team/web", "1.0.0")

    (layout / "index.json").write_text('{"schemaVersion": 2, "manifests": {}}')
    with pytest.raises(RegistryError, match=r"index\.json"):
        source.resolve("team/web", "1.0.0")

    (layout / "oci-layout").write_text('{"imageLayoutVersion": "9.9.9"}')
    with pytest.raises(RegistryError, match="oci-layout"):
        source.resolve("team/web", "1.0.0")


def test_oversized_index_is_refused(written: tuple[Path, ResolvedManifest]) -> None:
    root, _ = written
    (root / "team/web/index.json").write_bytes(b" " * (4 * 1024 * 1024 + 1))

    with pytest.raises(RegistryError, match="limit"):
        OciLayoutSource(root).resolve("team/web", "1.0.0")


def test_fifo_blob_is_refused_without_blocking(written: tuple[Path, ResolvedManifest]) -> None:
    root, manifest = written
    path = blob_path(root, "team/web", manifest.digest)
    path.unlink()
    os.mkfifo(path)

    with pytest.raises((RegistryError, DigestMismatchError)):
        OciLayoutSource(root).resolve("team/web", manifest.digest)


# -- containment --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("repository", "reference"),
    [
        ("../outside", "v1"),
        ("team/../../etc", "v1"),
        ("/etc", "v1"),
        ("team/web", "../../index"),
        ("team/web", "sha256:../../../etc/passwd"),
        ("team/web", "v1@sha256:" + "a" * 64),
    ],
)
def test_traversal_is_refused_by_the_grammar(
    written: tuple[Path, ResolvedManifest], repository: str, reference: str
) -> None:
    root, _ = written
    with pytest.raises(InvalidReferenceError):
        OciLayoutSource(root).resolve(repository, reference)


def test_symlinked_repository_escaping_the_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    OciLayoutWriter(outside).write_image("evil/app", "v1", files=FILES)
    root = tmp_path / "root"
    (root / "team").mkdir(parents=True)
    (root / "team" / "web").symlink_to(outside / "evil" / "app")

    with pytest.raises(RegistryError, match="outside the layout root"):
        OciLayoutSource(root).resolve("team/web", "v1")


def test_symlinked_blob_escaping_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    manifest = OciLayoutWriter(root).write_image("team/web", "v1", files=FILES)
    stolen = tmp_path / "secret-manifest"
    path = blob_path(root, "team/web", manifest.digest)
    stolen.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(stolen)

    with pytest.raises(RegistryError, match="outside the layout root"):
        OciLayoutSource(root).resolve("team/web", "v1")


def test_symlink_inside_the_root_is_allowed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    manifest = OciLayoutWriter(root).write_image("team/web", "v1", files=FILES)
    (root / "team" / "alias").symlink_to(root / "team" / "web")

    assert OciLayoutSource(root).resolve("team/alias", "v1") == manifest
