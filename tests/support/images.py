"""A tiny, deterministic OCI image that really runs: Debian's static busybox serving a page.

One gzip layer: `/bin/busybox` (from the busybox-static package) with applet symlinks, and
`/www/index.html`. The config's command traps TERM (PID 1 that ignores TERM makes every stop
wait its full timeout), prints a greeting and runs busybox httpd on ${PORT:-8080}:

    trap 'exit 0' TERM INT; echo hello $DEMO_VARIANT; httpd -f -p ${PORT:-8080} -h /www & wait

`variant` is the build argument: it lands in the page and in DEMO_VARIANT, so two variants have
two digests, and the same variant always has the same digest (mtime 0, sorted entries, owner 0,
gzip without a timestamp, compact sorted JSON).
"""

from __future__ import annotations

import gzip
import io
import json
import platform
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tests.support.registry import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    Auth,
    BuiltImage,
    push_built,
    sha256_of,
)

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "httpd", "echo", "sleep", "cat", "ls", "wget", "true")
COMMAND = (
    "trap 'exit 0' TERM INT; echo hello $DEMO_VARIANT; httpd -f -p ${PORT:-8080} -h /www & wait"
)


def platform_arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _info(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.linkname = link
    return info


def _layer(variant: str, busybox: bytes) -> bytes:
    page = f"hello from {variant}\n".encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries: list[tuple[tarfile.TarInfo, bytes | None]] = [
            (_info("bin", tarfile.DIRTYPE, 0o755), None),
            (_info("bin/busybox", tarfile.REGTYPE, 0o755, len(busybox)), busybox),
            (_info("tmp", tarfile.DIRTYPE, 0o1777), None),
            (_info("www", tarfile.DIRTYPE, 0o755), None),
            (_info("www/index.html", tarfile.REGTYPE, 0o644, len(page)), page),
        ]
        entries += [
            (_info(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox"), None)
            for applet in APPLETS
        ]
        for info, data in sorted(entries, key=lambda e: e[0].name):
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _compact(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def build_busybox_image(variant: str = "a", *, busybox: Path = BUSYBOX) -> BuiltImage:
    """The image's exact bytes; `.digest` is its manifest digest."""
    tar = _layer(variant, busybox.read_bytes())
    layer = gzip.compress(tar, compresslevel=9, mtime=0)
    config = _compact(
        {
            "architecture": platform_arch(),
            "os": "linux",
            "config": {
                "Env": ["PATH=/bin", f"DEMO_VARIANT={variant}"],
                "Cmd": ["/bin/sh", "-c", COMMAND],
                "WorkingDir": "/",
                "StopSignal": "SIGTERM",
            },
            "rootfs": {"type": "layers", "diff_ids": [sha256_of(tar)]},
        }
    )
    manifest = _compact(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256_of(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": sha256_of(layer), "size": len(layer)}],
        }
    )
    return BuiltImage(layer=layer, config=config, manifest=manifest, media_type=OCI_MANIFEST)


@dataclass(frozen=True)
class PushedImage:
    repository: str  # host:port/repo, as an image reference names it
    tag: str
    digest: str

    @property
    def pinned(self) -> str:
        return f"{self.repository}@{self.digest}"


def push_busybox_image(
    registry_url: str, repository: str, tag: str, variant: str = "a", *, auth: Auth = None
) -> PushedImage:
    """Build the variant and push it over the distribution API (blobs, then the manifest)."""
    image = build_busybox_image(variant)
    digest = push_built(registry_url, repository, tag, image, auth=auth)
    assert digest == image.digest
    host = registry_url.split("://", 1)[-1].rstrip("/")
    return PushedImage(repository=f"{host}/{repository}", tag=tag, digest=digest)
