"""OCI image layout directories as an offline manifest source (air-gapped imports).

Layout per repository: `<root>/<repository>/` holds `oci-layout`, `index.json` and
`blobs/sha256/<hex>`. A tag is the `org.opencontainers.image.ref.name` annotation of an
`index.json` entry. Everything read is size-capped, hashed and kept inside the root.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import stat
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from stella_core.errors import (
    DigestMismatchError,
    InvalidReferenceError,
    ManifestNotFoundError,
    RegistryError,
)
from stella_core.releases.model import MANIFEST_ACCEPT, MediaType, ResolvedManifest
from stella_core.releases.oci import (
    MAX_MANIFEST_BYTES,
    media_type_of,
    parse_manifest_reference,
    sha256_digest,
)
from stella_core.releases.reference import check_digest, check_repository, check_tag

OCI_LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
LAYOUT_VERSION = "1.0.0"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
MAX_JSON_BYTES = 4 * 1024 * 1024
MAX_BLOB_BYTES = 256 * 1024 * 1024
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def canonical_json(value: object) -> bytes:
    """Sorted keys, no spaces: the same document always gives the same bytes and digest."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _infer_media_type(document: Mapping[str, object]) -> str | None:
    # OCI made mediaType optional for a while; the shape tells index from manifest.
    if isinstance(document.get("manifests"), list):
        return MediaType.OCI_INDEX.value
    if isinstance(document.get("config"), dict) and isinstance(document.get("layers"), list):
        return MediaType.OCI_MANIFEST.value
    return None


class OciLayoutSource:
    """A ManifestSource over OCI layout directories below one root."""

    def __init__(self, root: Path) -> None:
        self._root = Path(root)

    @property
    def root(self) -> Path:
        return self._root

    def __repr__(self) -> str:
        return f"OciLayoutSource(root={str(self._root)!r})"

    def close(self) -> None:
        """Nothing to release; present to satisfy ManifestSource."""

    def resolve(self, repository: str, reference: str) -> ResolvedManifest:
        return self.manifest(repository, reference)[0]

    def manifest(self, repository: str, reference: str) -> tuple[ResolvedManifest, bytes]:
        """A manifest (by tag or digest) and its exact bytes, checked against its digest."""
        check_repository(repository)
        tag, digest = parse_manifest_reference(reference)
        layout = self._layout_dir(repository)
        entries = self._index_entries(layout)
        entry: dict[str, object]
        if tag is not None:
            entry = self._entry_for_tag(entries, layout, repository, tag)
            digest = self._entry_digest(entry, layout)
            expected_size = entry.get("size")
            if not isinstance(expected_size, int) or isinstance(expected_size, bool):
                raise RegistryError(
                    f"{layout / INDEX_FILE}: entry for tag {tag!r} has no integer size"
                )
        else:
            assert digest is not None  # parse_manifest_reference returns exactly one
            entry = next((e for e in entries if e.get("digest") == digest), {})
            expected_size = None
        label = f"{repository}:{tag}" if tag is not None else f"{repository}@{digest}"
        body = self._read_blob(layout, digest, expected_size, label)
        document = _json_dict(body)
        if document is None:
            raise RegistryError(f"{label} in {layout} is not a JSON manifest")
        if document.get("schemaVersion") != 2:
            raise RegistryError(f"{label} in {layout} is not a schemaVersion 2 manifest")
        # The blob's own mediaType is covered by the digest; the index entry's is not.
        media_type = media_type_of(None, body)
        if media_type is None:
            declared = entry.get("mediaType")
            media_type = declared if isinstance(declared, str) else None
        if media_type is None:
            media_type = _infer_media_type(document)
        if media_type not in MANIFEST_ACCEPT:
            raise RegistryError(
                f"{label} in {layout} has unsupported media type {media_type!r}; "
                f"expected one of {', '.join(MANIFEST_ACCEPT)}"
            )
        assert media_type is not None
        return ResolvedManifest(digest=digest, media_type=media_type, size=len(body)), body

    def blob(self, repository: str, digest: str, *, cap: int = MAX_BLOB_BYTES) -> bytes:
        """A blob's exact bytes, kept inside the root, size-capped and checked against its
        digest."""
        check_repository(repository)
        check_digest(digest)
        layout = self._layout_dir(repository)
        algorithm, _, hex_digest = digest.partition(":")
        path = layout / "blobs" / algorithm / hex_digest
        if not path.exists() and not path.is_symlink():
            raise ManifestNotFoundError(f"{repository}@{digest} not found: blob {path} is missing")
        body = self._read_file(path, cap)
        computed = sha256_digest(body)
        if computed != digest:
            raise DigestMismatchError(
                f"{repository}@{digest}: blob {path} hashes to {computed}, not {digest}"
            )
        return body

    # -- reading ------------------------------------------------------------------------------

    def _root_real(self) -> Path:
        return self._root.resolve()

    def _inside(self, path: Path) -> Path:
        """Resolve symlinks and refuse anything that ends up outside the root."""
        real = path.resolve()
        if not real.is_relative_to(self._root_real()):
            raise RegistryError(
                f"refusing {path}: it resolves outside the layout root {self._root}"
            )
        return real

    def _layout_dir(self, repository: str) -> Path:
        # check_repository already excluded '..', absolute paths and empty components.
        path = self._root.joinpath(*repository.split("/"))
        if not path.exists() and not path.is_symlink():
            raise ManifestNotFoundError(
                f"repository {repository!r} not found: no OCI layout at {path} "
                f"(layout root {self._root})"
            )
        real = self._inside(path)
        if not real.is_dir() or not (real / OCI_LAYOUT_FILE).exists():
            raise ManifestNotFoundError(
                f"repository {repository!r} not found: {path} is not an OCI image layout "
                f"(no {OCI_LAYOUT_FILE} file)"
            )
        return path

    def _read_file(self, path: Path, cap: int) -> bytes:
        real = self._inside(path)
        try:
            info = real.stat()
        except FileNotFoundError as exc:
            raise ManifestNotFoundError(f"{path} does not exist") from exc
        if not stat.S_ISREG(info.st_mode):
            raise RegistryError(f"{path} is not a regular file")
        if info.st_size > cap:
            raise RegistryError(f"{path} is {info.st_size} bytes, over the {cap} byte limit")
        with real.open("rb") as handle:
            data = handle.read(cap + 1)
        if len(data) > cap:
            raise RegistryError(f"{path} grew over the {cap} byte limit while reading")
        return data

    def _read_json(self, path: Path) -> dict[str, object]:
        if not path.exists() and not path.is_symlink():
            raise RegistryError(f"malformed OCI layout: {path} is missing")
        data = self._read_file(path, MAX_JSON_BYTES)
        document = _json_dict(data)
        if document is None:
            raise RegistryError(f"malformed {path}: not a JSON object")
        return document

    def _index_entries(self, layout: Path) -> list[dict[str, object]]:
        marker_path = layout / OCI_LAYOUT_FILE
        marker = self._read_json(marker_path)
        if marker.get("imageLayoutVersion") != LAYOUT_VERSION:
            raise RegistryError(
                f"malformed {marker_path}: imageLayoutVersion must be {LAYOUT_VERSION!r}, "
                f"got {marker.get('imageLayoutVersion')!r}"
            )
        index_path = layout / INDEX_FILE
        index = self._read_json(index_path)
        manifests = index.get("manifests")
        if index.get("schemaVersion") != 2 or not isinstance(manifests, list):
            raise RegistryError(
                f"malformed {index_path}: expected schemaVersion 2 and a 'manifests' list"
            )
        entries: list[dict[str, object]] = []
        for position, entry in enumerate(manifests):
            if not isinstance(entry, dict):
                raise RegistryError(
                    f"malformed {index_path}: manifests[{position}] is not an object"
                )
            entries.append(entry)
        return entries

    def _entry_for_tag(
        self, entries: list[dict[str, object]], layout: Path, repository: str, tag: str
    ) -> dict[str, object]:
        matches = [e for e in entries if _ref_name(e) == tag]
        if not matches:
            raise ManifestNotFoundError(
                f"{repository}:{tag} not found: no entry tagged {tag!r} in {layout / INDEX_FILE}"
            )
        if len(matches) > 1:
            raise RegistryError(f"malformed {layout / INDEX_FILE}: tag {tag!r} appears twice")
        return matches[0]

    def _entry_digest(self, entry: Mapping[str, object], layout: Path) -> str:
        digest = entry.get("digest")
        if not isinstance(digest, str):
            raise RegistryError(f"malformed {layout / INDEX_FILE}: an entry has no digest")
        try:
            return check_digest(digest)
        except InvalidReferenceError as exc:
            raise RegistryError(
                f"malformed {layout / INDEX_FILE}: unsupported digest {digest!r} "
                "(only sha256 is supported)"
            ) from exc

    def _read_blob(self, layout: Path, digest: str, expected_size: int | None, label: str) -> bytes:
        algorithm, _, hex_digest = digest.partition(":")
        path = layout / "blobs" / algorithm / hex_digest
        real = self._inside(path)
        try:
            actual_size = real.stat().st_size
        except FileNotFoundError as exc:
            raise ManifestNotFoundError(f"{label} not found: blob {path} is missing") from exc
        if expected_size is not None and actual_size != expected_size:
            raise DigestMismatchError(
                f"{label}: blob {path} is {actual_size} bytes but {INDEX_FILE} says {expected_size}"
            )
        body = self._read_file(path, MAX_MANIFEST_BYTES)
        computed = sha256_digest(body)
        if computed != digest:
            raise DigestMismatchError(f"{label}: blob {path} hashes to {computed}, not {digest}")
        return body


def _json_dict(data: bytes) -> dict[str, object] | None:
    try:
        parsed = json.loads(data)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _ref_name(entry: Mapping[str, object]) -> str | None:
    annotations = entry.get("annotations")
    if isinstance(annotations, dict):
        name = annotations.get(REF_NAME_ANNOTATION)
        return name if isinstance(name, str) else None
    return None


# -- writing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexChild:
    """A platform-specific manifest to list in an OCI index."""

    manifest: ResolvedManifest
    architecture: str
    os: str = "linux"
    variant: str | None = None

    def descriptor(self) -> dict[str, object]:
        platform: dict[str, object] = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            platform["variant"] = self.variant
        return {
            "mediaType": self.manifest.media_type,
            "digest": self.manifest.digest,
            "size": self.manifest.size,
            "platform": platform,
        }


def _clean_member(name: str) -> str:
    text = name
    while text.startswith("./"):
        text = text[2:]
    pure = PurePosixPath(text)
    if not text or pure.is_absolute() or ".." in pure.parts or "\\" in text:
        raise ValueError(f"invalid file name in image: {name!r}")
    cleaned = str(pure)  # folds 'a//b' and a trailing '/'
    if cleaned == ".":
        raise ValueError(f"invalid file name in image: {name!r}")
    return cleaned


def build_layer_tar(
    files: Mapping[str, bytes],
    *,
    modes: Mapping[str, int] | None = None,
    symlinks: Mapping[str, str] | None = None,
) -> bytes:
    """A reproducible tar: sorted, parents added, mtime 0, root owner, fixed modes (0644 unless
    `modes` names a file; `symlinks` maps a name to the link's target)."""
    members = {_clean_member(name): data for name, data in files.items()}
    links = {_clean_member(name): target for name, target in (symlinks or {}).items()}
    file_modes = {_clean_member(name): mode & 0o7777 for name, mode in (modes or {}).items()}
    if links.keys() & members.keys():
        raise ValueError(f"names both files and links: {sorted(links.keys() & members.keys())}")
    unknown = file_modes.keys() - members.keys()
    if unknown:
        raise ValueError(f"modes for files not in the image: {sorted(unknown)}")
    directories: set[str] = set()
    for name in [*members, *links]:
        parent = PurePosixPath(name).parent
        while str(parent) not in ("", "."):
            directories.add(str(parent))
            parent = parent.parent
    overlap = directories & (members.keys() | links.keys())
    if overlap:
        raise ValueError(f"file names used as directories too: {sorted(overlap)}")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(directories | members.keys() | links.keys()):
            info = tarfile.TarInfo(name)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if name in directories:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            elif name in links:
                info.type = tarfile.SYMTYPE
                info.mode = 0o777
                info.linkname = links[name]
                tar.addfile(info)
            else:
                data = members[name]
                info.mode = file_modes.get(name, 0o644)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass(frozen=True)
class Layer:
    """A gzip'd layer blob and the digest of its uncompressed tar (the config's diff_id)."""

    blob: bytes
    diff_id: str


def build_layer(
    files: Mapping[str, bytes],
    *,
    modes: Mapping[str, int] | None = None,
    symlinks: Mapping[str, str] | None = None,
) -> Layer:
    tar = build_layer_tar(files, modes=modes, symlinks=symlinks)
    return Layer(blob=gzip_deterministic(tar), diff_id=sha256_digest(tar))


def gzip_deterministic(data: bytes) -> bytes:
    # mtime=0 and no file name in the header; fixed level so the same zlib gives same bytes.
    return gzip.compress(data, compresslevel=9, mtime=0)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class OciLayoutWriter:
    """Write deterministic OCI layouts below a root (demo data, tests, offline bundles)."""

    def __init__(self, root: Path) -> None:
        self._root = Path(root)

    @property
    def root(self) -> Path:
        return self._root

    def __repr__(self) -> str:
        return f"OciLayoutWriter(root={str(self._root)!r})"

    def layout_dir(self, repository: str) -> Path:
        check_repository(repository)
        return self._root.joinpath(*repository.split("/"))

    def _ensure_layout(self, repository: str) -> Path:
        layout = self.layout_dir(repository)
        (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        marker = layout / OCI_LAYOUT_FILE
        if not marker.exists():
            _write_atomic(marker, canonical_json({"imageLayoutVersion": LAYOUT_VERSION}))
        index = layout / INDEX_FILE
        if not index.exists():
            _write_atomic(index, self._index_bytes([]))
        return layout

    @staticmethod
    def _index_bytes(manifests: list[dict[str, object]]) -> bytes:
        return canonical_json(
            {"schemaVersion": 2, "mediaType": MediaType.OCI_INDEX.value, "manifests": manifests}
        )

    def add_blob(self, data: bytes, *, repository: str) -> tuple[str, int]:
        """Store a blob in the repository's layout; returns (digest, size)."""
        layout = self._ensure_layout(repository)
        digest = sha256_digest(data)
        path = layout / "blobs" / "sha256" / digest.removeprefix("sha256:")
        if not (path.is_file() and path.stat().st_size == len(data)):
            _write_atomic(path, data)
        return digest, len(data)

    def write_image(
        self,
        repository: str,
        tag: str | None,
        *,
        files: Mapping[str, bytes],
        config: Mapping[str, object] | None = None,
        architecture: str = "amd64",
        os_name: str = "linux",
        base_layers: Sequence[Layer] = (),
    ) -> ResolvedManifest:
        """An OCI image: `base_layers` (built once, shared by images), then a layer from
        `files`; `config` is the image config's `config` section (Env, Cmd, Labels...). A tag
        of None writes the blobs without an index.json entry (for children of a multi-arch
        index)."""
        if tag is not None:
            check_tag(tag)
        layers = [*base_layers, build_layer(files)]
        descriptors: list[dict[str, object]] = []
        for layer in layers:
            layer_digest, layer_size = self.add_blob(layer.blob, repository=repository)
            descriptors.append(
                {"mediaType": OCI_LAYER_GZIP, "digest": layer_digest, "size": layer_size}
            )
        image_config: dict[str, object] = {
            "architecture": architecture,
            "os": os_name,
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        }
        if config:
            image_config["config"] = dict(config)
        config_digest, config_size = self.add_blob(
            canonical_json(image_config), repository=repository
        )
        manifest = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": MediaType.OCI_MANIFEST.value,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
                "layers": descriptors,
            }
        )
        digest, size = self.add_blob(manifest, repository=repository)
        resolved = ResolvedManifest(
            digest=digest, media_type=MediaType.OCI_MANIFEST.value, size=size
        )
        if tag is not None:
            self.tag(repository, tag, resolved)
        return resolved

    def write_index(
        self, repository: str, tag: str | None, children: Sequence[IndexChild]
    ) -> ResolvedManifest:
        """A multi-arch OCI index over children already written to this repository."""
        if tag is not None:
            check_tag(tag)
        layout = self._ensure_layout(repository)
        for child in children:
            blob = layout / "blobs" / "sha256" / child.manifest.digest.removeprefix("sha256:")
            if not blob.is_file():
                raise ValueError(
                    f"child {child.manifest.digest} is not in {layout}; write it first"
                )
        body = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": MediaType.OCI_INDEX.value,
                "manifests": [child.descriptor() for child in children],
            }
        )
        digest, size = self.add_blob(body, repository=repository)
        resolved = ResolvedManifest(digest=digest, media_type=MediaType.OCI_INDEX.value, size=size)
        if tag is not None:
            self.tag(repository, tag, resolved)
        return resolved

    def tag(self, repository: str, tag: str, manifest: ResolvedManifest) -> None:
        """Point `tag` at a manifest in index.json, replacing an entry with the same tag."""
        check_tag(tag)
        layout = self._ensure_layout(repository)
        index_path = layout / INDEX_FILE
        index = _json_dict(index_path.read_bytes())
        raw_entries = index.get("manifests") if index is not None else None
        if not isinstance(raw_entries, list):
            raise RegistryError(f"malformed {index_path}: expected a 'manifests' list")
        entry: dict[str, object] = {
            "mediaType": manifest.media_type,
            "digest": manifest.digest,
            "size": manifest.size,
            "annotations": {REF_NAME_ANNOTATION: tag},
        }
        entries: list[dict[str, object]] = []
        replaced = False
        for existing in raw_entries:
            if isinstance(existing, dict) and _ref_name(existing) == tag:
                if not replaced:
                    entries.append(entry)  # keep the tag's position: stable index.json diffs
                    replaced = True
                continue
            entries.append(existing)
        if not replaced:
            entries.append(entry)
        _write_atomic(index_path, self._index_bytes(entries))


__all__ = [
    "INDEX_FILE",
    "OCI_LAYOUT_FILE",
    "REF_NAME_ANNOTATION",
    "IndexChild",
    "Layer",
    "OciLayoutSource",
    "OciLayoutWriter",
    "build_layer",
    "build_layer_tar",
    "canonical_json",
    "gzip_deterministic",
]
