"""What makes the demo's images runnable: this machine's static busybox, when it has one.

Each demo image then carries `/bin/busybox` with a few applet links (a base layer shared by
every image, built once per process) and a command that says which app and version is up and
waits, leaving at once on TERM (a PID 1 that ignores TERM makes every stop wait its full
timeout). Only a statically linked busybox is taken: a dynamically linked one needs a loader
and libraries the image does not hold (its ELF has a program interpreter).
"""

from __future__ import annotations

import functools
import struct
from pathlib import Path

from stella_core.releases.layout import Layer, build_layer

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "sleep", "echo", "cat", "ls", "true")
# Ready (the file its health check looks for) unless the image was built never to be: the
# demo's broken web 1.3.0, which a rolling deployment stops at and rolls back.
COMMAND = (
    "trap 'exit 0' TERM INT; [ \"$READY\" = never ] || : > /tmp/ready; "
    'echo "$APP $VERSION up"; while :; do sleep 1; done'
)
# Each demo component's own health check: the file the command writes once it is up.
HEALTHCHECK = {"test": ["CMD-SHELL", "test -f /tmp/ready"], "interval": "10s", "retries": 1}
MAX_BUSYBOX_BYTES = 8 * 1024 * 1024
NO_PROGRAM = (
    "the demo images hold no program to run: no static busybox was found on this machine when "
    "the demo was seeded (apt-get install busybox-static, then seed the demo again)"
)
_PT_INTERP = 3


def is_static_elf(data: bytes) -> bool:
    """An ELF executable with no program interpreter (statically linked)."""
    if len(data) < 64 or data[:4] != b"\x7fELF":
        return False
    klass, order = data[4], data[5]
    if klass not in (1, 2) or order not in (1, 2):
        return False
    end = "<" if order == 1 else ">"
    if klass == 2:
        phoff, phentsize, phnum = (
            struct.unpack_from(end + "Q", data, 0x20)[0],
            *struct.unpack_from(end + "HH", data, 0x36),
        )
    else:
        phoff, phentsize, phnum = (
            struct.unpack_from(end + "I", data, 0x1C)[0],
            *struct.unpack_from(end + "HH", data, 0x2A),
        )
    if phnum == 0 or phentsize < 4 or phoff + phentsize * phnum > len(data):
        return False
    for i in range(phnum):
        (p_type,) = struct.unpack_from(end + "I", data, phoff + i * phentsize)
        if p_type == _PT_INTERP:
            return False
    return True


def static_busybox(path: Path = BUSYBOX) -> bytes | None:
    """This machine's busybox if it is a static executable, else None."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_BUSYBOX_BYTES:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    return data if is_static_elf(data) else None


@functools.lru_cache(maxsize=2)
def _busybox_layer(path: Path, size: int, mtime_ns: int) -> Layer | None:
    data = static_busybox(path)
    if data is None:
        return None
    return build_layer(
        {"bin/busybox": data, "tmp/.keep": b""},
        modes={"bin/busybox": 0o755},
        symlinks={f"bin/{applet}": "busybox" for applet in APPLETS},
    )


def busybox_layer(path: Path = BUSYBOX) -> Layer | None:
    """The shared base layer with static busybox, or None where this machine has none."""
    try:
        info = path.stat()
    except OSError:
        return None
    return _busybox_layer(path, info.st_size, info.st_mtime_ns)


def runnable_config(app: str, version: str, *, ready: bool = True) -> dict[str, object]:
    """The image config section of a runnable demo image (`ready` False: it never passes its
    health check)."""
    env = ["PATH=/bin", f"APP={app}", f"VERSION={version}"]
    if not ready:
        env.append("READY=never")
    return {
        "Env": env,
        "Cmd": ["/bin/sh", "-c", COMMAND],
        "WorkingDir": "/",
        "StopSignal": "SIGTERM",
    }
