"""A component's compose service fragment: everything of a compose service but its image.

The release decides the image (`repo@sha256:…`, issue 11 §4); the fragment says how it runs:
command, environment, ports, volumes, network mode, health check. It reaches a target's compose
runtime as root, so it is checked here when a person stores it and again when a lockfile is
rendered (`deploy.lockfile`), since a row could have been written behind the service's back.

Keys are an allow-list of the compose specification's service keys (unknown keys are refused,
so a typo or a newer key that could escape the container is never passed on unseen), minus the
ones that would let a fragment reach past its container onto the host:

- `image`, `build`: the release pins the image by digest; a fragment must not replace it.
- `privileged`, `cap_add`, `security_opt`, `devices`, `device_cgroup_rules`, `cgroup_parent`,
  `runtime`, `sysctls`, `userns_mode: host`, `cgroup: host`: each gives the container powers of
  the host's root (all capabilities, raw devices, no seccomp/SELinux/AppArmor, another OCI
  runtime; sysctls change the host's kernel settings when the network namespace is the host's).
- `pid`, `ipc`, `uts` set to `host` (or `container:…`): the host's processes, shared memory or
  hostname become the container's.
- bind mounts of an absolute host path or one that climbs out with `..` (`/`, `/etc`,
  `/var/run/docker.sock`, …): the host's files become the container's. Named volumes, tmpfs and
  paths inside the deployment directory (`./data`) are allowed.
- `env_file`, `extends`, `configs`, `secrets`, `volumes_from`: they read other files or other
  containers' data on the target that the release does not pin.
- `container_name`, `profiles`, `scale`, `pull_policy`: the deployment names, starts and pulls
  the containers itself (fixed names collide, a profile would leave a service unstarted, and a
  pull policy could fetch something other than the pinned digest).
- `network_mode` only `host`, `none`, `bridge` or `service:NAME` (never `container:…`).
- `$` in values is not refused but written as `$$` into the lockfile (`deploy.lockfile`), so
  compose never substitutes the target's environment variables into it: `${HOME}:/h` would
  otherwise be a bind mount of a host path, and `${SECRET}` a host secret in the container.
- labels starting with `stella.`: those are the deployment's own (`stella.digest`, …).

Pure: no I/O.
"""

from __future__ import annotations

import json
import math
import posixpath
import re
from collections.abc import Mapping
from typing import Any

import yaml

from stella_core.errors import DefinitionError

MAX_FRAGMENT_BYTES = 64 * 1024
MAX_NODES = 10_000  # after YAML aliases are expanded: an alias bomb stops here
MAX_DEPTH = 16

ALLOWED_KEYS = frozenset(
    {
        "annotations",
        "attach",
        "blkio_config",
        "cap_drop",
        "command",
        "cpu_count",
        "cpu_percent",
        "cpu_period",
        "cpu_quota",
        "cpu_rt_period",
        "cpu_rt_runtime",
        "cpu_shares",
        "cpus",
        "cpuset",
        "depends_on",
        "deploy",
        "dns",
        "dns_opt",
        "dns_search",
        "domainname",
        "entrypoint",
        "environment",
        "expose",
        "extra_hosts",
        "group_add",
        "healthcheck",
        "hostname",
        "init",
        "ipc",
        "labels",
        "links",
        "logging",
        "mac_address",
        "mem_limit",
        "mem_reservation",
        "mem_swappiness",
        "memswap_limit",
        "network_mode",
        "networks",
        "oom_kill_disable",
        "oom_score_adj",
        "pid",
        "pids_limit",
        "platform",
        "ports",
        "read_only",
        "restart",
        "shm_size",
        "stdin_open",
        "stop_grace_period",
        "stop_signal",
        "tmpfs",
        "tty",
        "ulimits",
        "user",
        "uts",
        "volumes",
        "working_dir",
    }
)

# Refused with the reason, so the person reads why rather than "unknown key".
REFUSED_KEYS: Mapping[str, str] = {
    "image": "the release sets the image, pinned by digest",
    "build": "the release sets the image, pinned by digest; nothing is built on a target",
    "privileged": "a privileged container holds the host's root powers",
    "cap_add": "added capabilities reach past the container onto the host",
    "security_opt": "it can turn off the container's seccomp, SELinux or AppArmor confinement",
    "devices": "it hands the host's devices to the container",
    "device_cgroup_rules": "it hands the host's devices to the container",
    "cgroup_parent": "it places the container in a host control group of its choosing",
    "cgroup": "it can share the host's control groups",
    "runtime": "it picks another OCI runtime on the target",
    "sysctls": "with host networking it changes the host's kernel settings",
    "userns_mode": "it can share the host's user namespace",
    "env_file": "it reads files on the target that the release does not pin",
    "extends": "it reads other compose files on the target",
    "configs": "it reads files on the target that the release does not pin",
    "secrets": "it reads files on the target that the release does not pin",
    "volumes_from": "it mounts other containers' data",
    "container_name": "the deployment names its containers itself",
    "profiles": "a service behind a profile would not be started",
    "scale": "the replica count belongs under deploy",
    "pull_policy": "the deployment pulls the pinned digest itself",
    "credential_spec": "it is for Windows containers, which a compose target does not run",
    "isolation": "it is for Windows containers, which a compose target does not run",
    "external_links": "it links containers the release does not pin",
    "storage_opt": "it changes the target's storage driver settings",
    "gpus": "it hands the host's devices to the container",
    "develop": "it is for development only",
    "post_start": "hooks run commands outside the image's own command",
    "pre_stop": "hooks run commands outside the image's own command",
}

_NAMESPACE_KEYS = ("pid", "ipc", "uts")
_NETWORK_MODE = re.compile(r"^(host|none|bridge|service:[A-Za-z0-9._-]+)$")


class ServiceFragmentError(DefinitionError):
    """A compose service fragment is malformed or asks for something not allowed."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message, field="service")
        self.key = key


def parse_service_fragment(text: bytes | str, source: str = "the service file") -> dict[str, Any]:
    """A fragment from YAML or JSON text (JSON is YAML), checked."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    if len(raw) > MAX_FRAGMENT_BYTES:
        raise ServiceFragmentError(f"{source} is larger than {MAX_FRAGMENT_BYTES} bytes")
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ServiceFragmentError(f"{source} is not UTF-8 text") from exc
    try:
        value = yaml.safe_load(decoded)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ServiceFragmentError(f"{source} is not valid YAML or JSON{where}") from exc
    return check_service_fragment(value, source)


def _plain(value: Any, path: str, budget: list[int], depth: int) -> Any:
    """A JSON copy of `value` (what jsonb stores), refusing what JSON cannot hold."""
    budget[0] -= 1
    if budget[0] < 0:
        raise ServiceFragmentError(f"the fragment has more than {MAX_NODES} values")
    if depth > MAX_DEPTH:
        raise ServiceFragmentError(f"{path} is nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool | int | str):
        if isinstance(value, str) and "\x00" in value:
            raise ServiceFragmentError(f"{path} holds a NUL character", key=path)
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ServiceFragmentError(f"{path} is not a finite number", key=path)
        return value
    if isinstance(value, list):
        return [_plain(v, f"{path}[{i}]", budget, depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ServiceFragmentError(f"{path} has a key that is not text: {k!r}", key=path)
            out[k] = _plain(v, f"{path}.{k}", budget, depth + 1)
        return out
    raise ServiceFragmentError(
        f"{path} is a {type(value).__name__}; use text, numbers, lists and mappings", key=path
    )


def _check_volume(spec: Any, where: str) -> None:
    source: Any = None
    kind = "volume"
    if isinstance(spec, str):
        parts = spec.split(":")
        if len(parts) >= 2:
            source = parts[0]
            if source.startswith(("/", ".", "~")) or "/" in source:
                kind = "bind"
    elif isinstance(spec, dict):
        kind = str(spec.get("type", "volume"))
        source = spec.get("source")
        if kind not in ("volume", "bind", "tmpfs"):
            raise ServiceFragmentError(
                f"{where}: volume type {kind!r} is not allowed (volume, bind or tmpfs)",
                key="volumes",
            )
        if kind == "volume" and isinstance(source, str) and source.startswith(("/", ".", "~")):
            kind = "bind"  # a "volume" whose source is a path is a bind mount to a runtime
    else:
        raise ServiceFragmentError(f"{where} is neither text nor a mapping", key="volumes")
    if kind != "bind":
        return
    if not isinstance(source, str) or not source:
        raise ServiceFragmentError(f"{where}: a bind mount needs a source path", key="volumes")
    normal = posixpath.normpath(source)
    if source.startswith(("/", "~")) or normal == ".." or normal.startswith("../"):
        raise ServiceFragmentError(
            f"{where}: bind mount of host path {source!r} is not allowed: the host's files "
            "would become the container's; use a named volume or a path inside the deployment "
            "directory such as ./data",
            key="volumes",
        )


def check_service_fragment(value: Any, source: str = "the service fragment") -> dict[str, Any]:
    """The fragment as plain JSON data, or a ServiceFragmentError naming the key at fault."""
    if not isinstance(value, dict):
        raise ServiceFragmentError(
            f"{source} must be a mapping of compose service keys (e.g. environment, ports)"
        )
    fragment: dict[str, Any] = _plain(value, "service", [MAX_NODES], 0)
    if len(json.dumps(fragment, separators=(",", ":"))) > MAX_FRAGMENT_BYTES:
        raise ServiceFragmentError(f"{source} is larger than {MAX_FRAGMENT_BYTES} bytes")
    for key, setting in fragment.items():
        if key.startswith("x-"):
            continue
        if key in REFUSED_KEYS:
            if key == "privileged" and setting is False:
                continue
            raise ServiceFragmentError(
                f"service key {key!r} is not allowed: {REFUSED_KEYS[key]}", key=key
            )
        if key not in ALLOWED_KEYS:
            raise ServiceFragmentError(f"{key!r} is not a compose service key", key=key)
    for key in _NAMESPACE_KEYS:
        mode = fragment.get(key)
        if mode is not None and (
            not isinstance(mode, str) or mode == "host" or mode.startswith("container:")
        ):
            raise ServiceFragmentError(
                f"service key {key!r} set to {mode!r} is not allowed: it shares the host's "
                "or another container's namespace",
                key=key,
            )
    mode = fragment.get("network_mode")
    if mode is not None and not (isinstance(mode, str) and _NETWORK_MODE.match(mode)):
        raise ServiceFragmentError(
            f"network_mode {mode!r} is not allowed: use host, none, bridge or service:NAME",
            key="network_mode",
        )
    volumes = fragment.get("volumes")
    if volumes is not None:
        if not isinstance(volumes, list):
            raise ServiceFragmentError("volumes must be a list", key="volumes")
        for i, spec in enumerate(volumes):
            _check_volume(spec, f"volumes[{i}]")
    labels = fragment.get("labels")
    if labels is not None:
        names: list[Any]
        if isinstance(labels, dict):
            names = list(labels)
        elif isinstance(labels, list):
            names = [str(item).split("=", 1)[0] for item in labels]
        else:
            raise ServiceFragmentError("labels must be a mapping or a list", key="labels")
        for name in names:
            if str(name).startswith("stella."):
                raise ServiceFragmentError(
                    f"label {name!r} is not allowed: labels starting with 'stella.' are the "
                    "deployment's own",
                    key="labels",
                )
    return fragment


def labels_of(fragment: Mapping[str, Any]) -> dict[str, str]:
    """The fragment's labels as a mapping (compose accepts a list of `k=v` too)."""
    labels = fragment.get("labels")
    if isinstance(labels, dict):
        return {str(k): "" if v is None else str(v) for k, v in labels.items()}
    if isinstance(labels, list):
        pairs = (str(item).split("=", 1) for item in labels)
        return {p[0]: p[1] if len(p) > 1 else "" for p in pairs}
    return {}
