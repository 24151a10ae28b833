"""Run one task on a host: the same procedure over the agent (LocalHost), SSH and WinRM.

`run_task(task_type, payload, host)` -> the task's outputs, or `TaskFailedError` with a short
`error_type` ("runtime-missing", "pull-failed", "digest-mismatch", "not-allowed", …) and one
sentence that says what went wrong where. The payload came over the wire: every field is
checked (type, size, grammar) before anything runs, and commands are argument lists, never
shell text. Only `host.run`, `host.write_file` and `host.read_file` touch the host.

A deploy (reference/container-runtime.md §4): compose `up` is not atomic (a bad digest in one
service leaves the others running), so every image is pulled by digest first and the digest of
what was pulled is checked; only then is the lockfile started; then the digest each running
container was created from is read back and compared with the pinned one.

Payloads (JSON objects; unknown members are refused):
- deploy: {project, directory, runtime, lockfile, images: [{component, image}], engine?}, or
  {project, directory, runtime, action: "down", engine?}: stops and removes the project's
  containers (a blue-green deployment's old group) with the lockfile already there
- inspect: {project, runtime, engine?}
- health-check: {url, expect_status?, timeout?} (HTTP, asked from the host), or
  {project, runtime, component, engine?, timeout?} (the container's own compose healthcheck)
- execute-command: {argv, timeout?} (only an argv equal to an entry of `allow_commands`)
- upload-files: {directory, files: [{path, content_b64, mode?}]}
- write-sticker: {directory, sticker}
- read-sticker: {directory}
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import posixpath
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from stella_core.deploy.hosts import CommandTimeoutError, Host, HostError, HostResult
from stella_core.deploy.lockfile import LOCKFILE_NAME, parse_pinned, pinned_images
from stella_core.deploy.model import TaskType
from stella_core.deploy.sticker import MAX_STICKER_BYTES, STICKER_NAME, sticker_bytes
from stella_core.errors import ConnectorError, DefinitionError
from stella_core.limits import check_name

Log = Callable[[str], None]

MAX_LOCKFILE_BYTES = 1024 * 1024
MAX_IMAGES = 200
MAX_UPLOAD_FILES = 100
MAX_UPLOAD_BYTES = 16 * 1024 * 1024
MAX_ARGV = 64
PULL_TIMEOUT = 600.0
UP_TIMEOUT = 600.0
QUICK_TIMEOUT = 60.0
_PROJECT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_URL = re.compile(r"^https?://[^\s/?#]+(?:[/?#][^\s]*)?$")
ENGINES = ("podman", "docker")


class TaskFailedError(ConnectorError):
    """A task did not do what it was asked; `error_type` is a short machine word for why."""

    def __init__(self, message: str, error_type: str, *, retryable: bool = False) -> None:
        super().__init__(message, retryable=retryable)
        self.error_type = error_type


def _bad(message: str) -> TaskFailedError:
    return TaskFailedError(message, "bad-payload")


# -- payload checks ---------------------------------------------------------------------------


def _object(payload: Any, allowed: set[str], required: set[str], what: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise _bad(f"the {what} payload is not an object")
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise _bad(f"the {what} payload has unknown member {unknown[0]!r}")
    missing = sorted(required - set(payload))
    if missing:
        raise _bad(f"the {what} payload has no {missing[0]!r}")
    return payload


def _text(value: Any, name: str, *, limit: int = 1024) -> str:
    if not isinstance(value, str) or not value:
        raise _bad(f"{name} must be non-empty text")
    if len(value) > limit:
        raise _bad(f"{name} is longer than {limit} characters")
    if _CONTROL.search(value):
        raise _bad(f"{name} holds a control character")
    return value


def _directory(value: Any) -> str:
    directory = _text(value, "directory")
    if ".." in directory.replace("\\", "/").split("/"):
        raise _bad("directory must not climb out with '..'")
    return directory.rstrip("/") or "/"


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _bad(f"{name} must be a number from {low:g} to {high:g}")
    return float(value)


def _runtime(value: Any) -> list[str]:
    text = _text(value, "runtime", limit=256)
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise _bad(f"runtime {text!r} is not a command line") from exc
    if not argv or len(argv) > 8:
        raise _bad("runtime must be a command of 1 to 8 words")
    return argv


def _engine(payload: Mapping[str, Any], runtime: Sequence[str]) -> str:
    """The container engine the runtime drives: given, or read from the runtime's name."""
    if "engine" in payload:
        engine = payload["engine"]
        if engine not in ENGINES:
            raise _bad(f"engine must be one of {', '.join(ENGINES)}")
        return str(engine)
    program = posixpath.basename(runtime[0])
    return "docker" if program.startswith("docker") else "podman"


def _project(value: Any) -> str:
    project = _text(value, "project", limit=63)
    if not _PROJECT.match(project):
        raise _bad(
            f"project {project!r} must be 1-63 characters a-z, 0-9, '_' or '-', "
            "starting with a letter or digit"
        )
    return project


# -- commands ---------------------------------------------------------------------------------


def _detail(result: HostResult) -> str:
    """The last meaningful line a failed command printed, cleaned for a one-line message."""
    lines = [line.strip() for line in (result.stderr or result.stdout).splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return f"exit code {result.exit_code}"
    line = _CONTROL.sub(" ", lines[-1]).removeprefix("Error: ").removeprefix("ERROR: ")
    return line if len(line) <= 400 else line[:400] + "…"


def _run(
    host: Host, argv: Sequence[str], *, timeout: float, log: Log, error_type: str = "host-error"
) -> HostResult:
    log("$ " + shlex.join(argv))
    try:
        return host.run(argv, timeout=timeout)
    except CommandTimeoutError as exc:
        raise TaskFailedError(exc.message, "timeout", retryable=True) from exc
    except HostError as exc:
        raise TaskFailedError(exc.message, error_type, retryable=exc.retryable) from exc


def _write(host: Host, path: str, data: bytes, mode: int, log: Log) -> None:
    log(f"writing {path}")
    try:
        host.write_file(path, data, mode=mode)
    except HostError as exc:
        raise TaskFailedError(exc.message, "host-error", retryable=exc.retryable) from exc
    except OSError as exc:  # LocalHost lets the operating system's refusal through
        raise TaskFailedError(
            f"could not write {path} on {host.description}: {exc.strerror or exc}", "host-error"
        ) from exc


def _missing_program(result: HostResult) -> bool:
    text = (result.stderr + result.stdout).lower()
    return result.exit_code in (126, 127) or "is not a docker command" in text


def _require(host: Host, argv: Sequence[str], name: str, log: Log) -> None:
    """`name` runs on the host, or a runtime-missing failure in one sentence."""
    missing = f"{name} is not installed on {host.description}"
    try:
        result = host.run(argv, timeout=QUICK_TIMEOUT)
    except CommandTimeoutError as exc:
        raise TaskFailedError(exc.message, "timeout", retryable=True) from exc
    except HostError as exc:
        # LocalHost says "… is not installed"; anything else (unreachable) is said as it is.
        if "not installed" in exc.message:
            raise TaskFailedError(missing, "runtime-missing") from exc
        raise TaskFailedError(exc.message, "host-error", retryable=exc.retryable) from exc
    if result.exit_code == 0:
        return
    if _missing_program(result):
        raise TaskFailedError(missing, "runtime-missing")
    raise TaskFailedError(
        f"{name} does not work on {host.description}: {_detail(result)}", "runtime-missing"
    )


def _require_runtime(host: Host, runtime: Sequence[str], engine: str, log: Log) -> None:
    log(f"checking {shlex.join(runtime)} and {engine} on {host.description}")
    _require(host, [*runtime, "version"], shlex.join(runtime), log)
    _require(host, [engine, "--version"], engine, log)


# -- deploy -----------------------------------------------------------------------------------


def _images(value: Any) -> dict[str, str]:
    if not isinstance(value, list) or not value:
        raise _bad("images must be a non-empty list")
    if len(value) > MAX_IMAGES:
        raise _bad(f"a deployment holds at most {MAX_IMAGES} images")
    images: dict[str, str] = {}
    for item in value:
        entry = _object(item, {"component", "image"}, {"component", "image"}, "images entry")
        component = _text(entry["component"], "component", limit=63)
        try:
            check_name("component", component)
            parse_pinned(_text(entry["image"], "image", limit=700))
        except DefinitionError as exc:
            raise _bad(exc.message) from exc
        if component in images:
            raise _bad(f"component {component!r} appears twice in images")
        images[component] = entry["image"]
    return images


def _pulled_digest_ok(
    host: Host, engine: str, image: str, digest: str, log: Log
) -> tuple[bool, str]:
    """Whether the image the engine now holds for `image` is that digest (and what it holds)."""
    fmt = "{{.Digest}} {{json .RepoDigests}}" if engine == "podman" else "{{json .RepoDigests}}"
    result = _run(
        host, [engine, "image", "inspect", "--format", fmt, image], timeout=QUICK_TIMEOUT, log=log
    )
    if result.exit_code != 0:
        return False, _detail(result)
    text = result.stdout.strip()
    first, _, rest = text.partition(" ")
    if engine == "podman" and first == digest:
        return True, first
    try:
        repo_digests = json.loads(rest if engine == "podman" else text)
    except ValueError:
        repo_digests = []
    expected = image
    if isinstance(repo_digests, list) and expected in repo_digests:
        return True, digest
    return False, first if engine == "podman" else text[:200]


def _loopback_registry(image: str) -> bool:
    """The image comes from a registry on this machine's loopback (`127.x.x.x:PORT/…`,
    `localhost:PORT/…`, `[::1]:PORT/…`)."""
    registry = image.split("/", 1)[0]
    if registry.startswith("["):
        name = registry.split("]", 1)[0] + "]"
    else:
        name = registry.rsplit(":", 1)[0]
    return name in {"localhost", "[::1]"} or re.fullmatch(r"127(\.\d{1,3}){3}", name) is not None


def _pull_argv(engine: str, image: str) -> list[str]:
    # A registry on loopback speaks plain HTTP (the desk's demo registry); docker allows that
    # for 127.0.0.0/8 by itself, podman only when told. Nothing leaves the machine, and the
    # pulled digest is checked below either way.
    if engine == "podman" and _loopback_registry(image):
        return [engine, "pull", "--tls-verify=false", image]
    return [engine, "pull", image]


def _pull_all(host: Host, engine: str, images: Mapping[str, str], log: Log) -> None:
    for component, image in images.items():
        log(f"pulling {component}: {image}")
        result = _run(host, _pull_argv(engine, image), timeout=PULL_TIMEOUT, log=log)
        if result.exit_code != 0:
            detail = _detail(result)
            kind = (
                "digest-mismatch"
                if "digest" in detail.lower() and "match" in detail.lower()
                else "pull-failed"
            )
            raise TaskFailedError(
                f"pulling {component} ({image}) on {host.description} failed: {detail}", kind
            )
        _, digest = parse_pinned(image)
        ok, held = _pulled_digest_ok(host, engine, image, digest, log)
        if not ok:
            raise TaskFailedError(
                f"{component}: {engine} on {host.description} holds {held} for {image}, "
                "not the pinned digest",
                "digest-mismatch",
            )


_CONTAINER_FORMAT = {
    # podman says which manifest a container was created from; docker keeps the image id only.
    "podman": "{{.Id}}\t{{.Name}}\t{{.Image}}\t{{.ImageDigest}}\t{{.State.Status}}\t"
    "{{json .Config.Labels}}",
    "docker": "{{.Id}}\t{{.Name}}\t{{.Image}}\t-\t{{.State.Status}}\t{{json .Config.Labels}}",
}


def _containers(
    host: Host, engine: str, project: str, log: Log, pinned: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """The project's containers: id, name, the digest each was created from, state, labels.
    `pinned` (component -> digest) is what a deploy expects; without it the containers' own
    `stella.digest` labels are what is looked for."""
    listed = _run(
        host,
        [
            engine,
            "ps",
            "-a",
            "--filter",
            f"label=com.docker.compose.project={project}",
            "--format",
            "{{.ID}}",
        ],
        timeout=QUICK_TIMEOUT,
        log=log,
    )
    if listed.exit_code != 0:
        raise TaskFailedError(
            f"listing the containers of {project} on {host.description} failed: {_detail(listed)}",
            "inspect-failed",
        )
    ids = [line.strip() for line in listed.stdout.splitlines() if line.strip()]
    containers: list[dict[str, Any]] = []
    for container_id in ids:
        if not re.fullmatch(r"[0-9a-f]{12,64}", container_id):
            raise TaskFailedError(f"{engine} listed a malformed container id", "inspect-failed")
        result = _run(
            host,
            [engine, "inspect", "--format", _CONTAINER_FORMAT[engine], container_id],
            timeout=QUICK_TIMEOUT,
            log=log,
        )
        if result.exit_code != 0:
            continue  # removed between the listing and now
        parts = result.stdout.strip().split("\t", 5)
        if len(parts) != 6:
            raise TaskFailedError(
                f"{engine} inspect answered in an unexpected form", "inspect-failed"
            )
        full_id, name, image_id, direct, state, labels_json = parts
        try:
            labels = json.loads(labels_json) or {}
        except ValueError:
            labels = {}
        if not isinstance(labels, dict):
            labels = {}
        component = str(labels.get("com.docker.compose.service", ""))
        wanted = (pinned or {}).get(component) or str(labels.get("stella.digest", ""))
        containers.append(
            {
                "id": full_id,
                "container": name.lstrip("/"),
                "component": component,
                "digest": _created_from(host, engine, image_id, direct, wanted, log),
                "state": state,
                "labels": {
                    str(k): str(v) for k, v in labels.items() if str(k).startswith("stella.")
                },
            }
        )
    return containers


def _created_from(
    host: Host, engine: str, image_id: str, direct: str, wanted: str, log: Log
) -> str:
    """The manifest digest a container's image was pulled by. podman names one (for an image
    pulled through a multi-platform index, the platform's manifest); the image's RepoDigests
    hold every digest that names it, the index's too. `wanted` is the answer only if the image
    really carries it."""
    if engine == "podman" and direct == wanted:
        return direct
    result = _run(
        host,
        [engine, "image", "inspect", "--format", "{{json .RepoDigests}}", image_id],
        timeout=QUICK_TIMEOUT,
        log=log,
    )
    try:
        repo_digests = json.loads(result.stdout) if result.exit_code == 0 else []
    except ValueError:
        repo_digests = []
    if not isinstance(repo_digests, list):
        repo_digests = []
    digests = sorted({str(r).rpartition("@")[2] for r in repo_digests if "@" in str(r)})
    if wanted and wanted in digests:
        return wanted
    if engine == "podman" and direct.startswith("sha256:"):
        return direct
    return digests[0] if digests else image_id


def _deploy(payload: Any, host: Host, log: Log) -> dict[str, Any]:
    if isinstance(payload, dict) and "action" in payload:
        return _down(payload, host, log)
    p = _object(
        payload,
        {"project", "directory", "runtime", "lockfile", "images", "engine"},
        {"project", "directory", "runtime", "lockfile", "images"},
        "deploy",
    )
    project = _project(p["project"])
    directory = _directory(p["directory"])
    runtime = _runtime(p["runtime"])
    engine = _engine(p, runtime)
    lockfile = p["lockfile"]
    if not isinstance(lockfile, str) or not lockfile:
        raise _bad("lockfile must be non-empty text")
    data = lockfile.encode("utf-8")
    if len(data) > MAX_LOCKFILE_BYTES:
        raise _bad(f"the lockfile is larger than {MAX_LOCKFILE_BYTES} bytes")
    images = _images(p["images"])
    try:
        in_lockfile = pinned_images(lockfile)
    except DefinitionError as exc:
        raise _bad(exc.message) from exc
    if in_lockfile != images:
        raise _bad("the lockfile's services and images differ from the images to deploy")

    _require_runtime(host, runtime, engine, log)
    path = posixpath.join(directory, LOCKFILE_NAME)
    _write(host, path, data, 0o644, log)

    _pull_all(host, engine, images, log)

    log(f"starting {project}")
    up = _run(host, [*runtime, "-p", project, "-f", path, "up", "-d"], timeout=UP_TIMEOUT, log=log)
    if up.exit_code != 0:
        raise TaskFailedError(
            f"{shlex.join(runtime)} up on {host.description} failed: {_detail(up)}", "start-failed"
        )

    pinned_digests = {c: parse_pinned(image)[1] for c, image in images.items()}
    containers = _containers(host, engine, project, log, pinned_digests)
    by_component: dict[str, list[dict[str, Any]]] = {}
    for c in containers:
        by_component.setdefault(c["component"], []).append(c)
    digests: dict[str, str] = {}
    for component, image in images.items():
        _, pinned = parse_pinned(image)
        running = by_component.get(component, [])
        if not running:
            raise TaskFailedError(
                f"no container of {component} is on {host.description} after starting {project}",
                "start-failed",
            )
        for c in running:
            if c["digest"] != pinned:
                raise TaskFailedError(
                    f"{component}: container {c['container']} on {host.description} was created "
                    f"from {c['digest']}, not the pinned {pinned}",
                    "digest-mismatch",
                )
        digests[component] = pinned
    log(f"{project}: {len(digests)} components running by digest")
    return {
        "containers": [
            {
                "component": c["component"],
                "container": c["container"],
                "digest": c["digest"],
                "state": c["state"],
            }
            for c in containers
            if c["component"] in images
        ],
        "digests": digests,
        "lockfile": path,
        "lockfile_sha256": hashlib.sha256(data).hexdigest(),
    }


def _down(payload: Any, host: Host, log: Log) -> dict[str, Any]:
    p = _object(
        payload,
        {"project", "directory", "runtime", "action", "engine"},
        {"project", "directory", "runtime", "action"},
        "deploy",
    )
    if p["action"] != "down":
        raise _bad("action must be down")
    project = _project(p["project"])
    directory = _directory(p["directory"])
    runtime = _runtime(p["runtime"])
    engine = _engine(p, runtime)
    path = posixpath.join(directory, LOCKFILE_NAME)
    if host.read_file(path, limit=MAX_LOCKFILE_BYTES) is None:
        log(f"{project}: no lockfile at {path}, nothing to stop")
        return {"stopped": False, "project": project}
    _require_runtime(host, runtime, engine, log)
    log(f"stopping {project}")
    down = _run(host, [*runtime, "-p", project, "-f", path, "down"], timeout=UP_TIMEOUT, log=log)
    if down.exit_code != 0:
        raise TaskFailedError(
            f"{shlex.join(runtime)} down on {host.description} failed: {_detail(down)}",
            "stop-failed",
        )
    return {"stopped": True, "project": project}


def _inspect(payload: Any, host: Host, log: Log) -> dict[str, Any]:
    p = _object(payload, {"project", "runtime", "engine"}, {"project", "runtime"}, "inspect")
    project = _project(p["project"])
    runtime = _runtime(p["runtime"])
    engine = _engine(p, runtime)
    _require(host, [engine, "--version"], engine, log)
    containers = _containers(host, engine, project, log)
    return {
        "containers": [
            {k: c[k] for k in ("component", "container", "digest", "state", "labels")}
            for c in containers
        ]
    }


# -- the other task types ---------------------------------------------------------------------


def _health_check(payload: Any, host: Host, log: Log) -> dict[str, Any]:
    if isinstance(payload, dict) and "component" in payload:
        return _container_health(payload, host, log)
    p = _object(payload, {"url", "expect_status", "timeout"}, {"url"}, "health-check")
    url = _text(p["url"], "url", limit=2048)
    if not _URL.match(url):
        raise _bad("url must be an http:// or https:// address")
    expect = p.get("expect_status", 200)
    if isinstance(expect, bool) or not isinstance(expect, int) or not 100 <= expect <= 599:
        raise _bad("expect_status must be a whole number from 100 to 599")
    timeout = _number(p.get("timeout", 10), "timeout", 0.1, 300)
    # Asked from the host itself (the service may listen on its loopback only).
    curl = [
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        f"{timeout:g}",
        url,
    ]
    try:
        result = host.run(curl, timeout=timeout + 10)
    except CommandTimeoutError as exc:
        raise TaskFailedError(exc.message, "timeout", retryable=True) from exc
    except HostError as exc:
        if "not installed" in exc.message:
            raise TaskFailedError(
                f"curl is not installed on {host.description}", "runtime-missing"
            ) from exc
        raise TaskFailedError(exc.message, "host-error", retryable=exc.retryable) from exc
    if _missing_program(result):
        raise TaskFailedError(f"curl is not installed on {host.description}", "runtime-missing")
    code = result.stdout.strip()[-3:]
    status = int(code) if code.isdigit() else 0
    log(f"{url} answered {status or 'nothing'}")
    if status != expect:
        got = f"status {status}" if status else _detail(result)
        raise TaskFailedError(
            f"{url} answered {got} on {host.description}, expected {expect}",
            "health-check-failed",
            retryable=True,
        )
    return {"status": status}


def _container_health(payload: Any, host: Host, log: Log) -> dict[str, Any]:
    """The container's own health check (compose `healthcheck`), asked of its engine: podman
    runs the check now (`podman healthcheck run`: without systemd nothing runs it on a timer),
    docker answers the status its daemon keeps."""
    p = _object(
        payload,
        {"project", "runtime", "component", "engine", "timeout"},
        {"project", "runtime", "component"},
        "health-check",
    )
    project = _project(p["project"])
    runtime = _runtime(p["runtime"])
    engine = _engine(p, runtime)
    component = _text(p["component"], "component", limit=128)
    timeout = _number(p.get("timeout", 10), "timeout", 0.1, 300)
    _require(host, [engine, "--version"], engine, log)
    found = [c for c in _containers(host, engine, project, log) if c["component"] == component]
    if not found:
        raise TaskFailedError(
            f"{component} has no container in {project} on {host.description}",
            "health-check-failed",
            retryable=True,
        )
    for c in found:
        if c["state"] != "running":
            raise TaskFailedError(
                f"{component} is {c['state']} on {host.description}, not running",
                "health-check-failed",
                retryable=True,
            )
        if engine == "podman":
            argv = [engine, "healthcheck", "run", c["container"]]
        else:
            argv = [engine, "inspect", "--format", "{{.State.Health.Status}}", c["container"]]
        try:
            result = host.run(argv, timeout=timeout + 10)
        except CommandTimeoutError as exc:
            raise TaskFailedError(exc.message, "timeout", retryable=True) from exc
        answer = (result.stdout.strip() or result.stderr.strip())[-200:]
        if engine == "podman":
            healthy = result.exit_code == 0
            if result.exit_code not in (0, 1):
                # 125: no health check defined, or the engine failed: asking again will not help.
                raise TaskFailedError(
                    f"{engine} could not run the health check of {component} on "
                    f"{host.description}: {_detail(result)}",
                    "health-check-error",
                )
        else:
            healthy = result.exit_code == 0 and answer == "healthy"
        log(f"{component} ({c['container'][:12]}): {'healthy' if healthy else 'unhealthy'}")
        if not healthy:
            raise TaskFailedError(
                f"{component}'s own health check fails on {host.description}"
                + (f": {answer}" if answer and answer != "unhealthy" else ""),
                "health-check-failed",
                retryable=True,
            )
    return {"status": "healthy", "containers": len(found)}


def _execute(
    payload: Any, host: Host, log: Log, allow_commands: Sequence[Sequence[str]]
) -> dict[str, Any]:
    p = _object(payload, {"argv", "timeout"}, {"argv"}, "execute-command")
    argv = p["argv"]
    if not isinstance(argv, list) or not argv or len(argv) > MAX_ARGV:
        raise _bad(f"argv must be a list of 1 to {MAX_ARGV} words")
    if not all(isinstance(a, str) and "\x00" not in a for a in argv):
        raise _bad("argv must hold text only")
    timeout = _number(p.get("timeout", 300), "timeout", 0.1, 3600)
    if not any(list(allowed) == argv for allowed in allow_commands):
        raise TaskFailedError(
            f"{shlex.join(argv)} is not in the allow-list of {host.description}", "not-allowed"
        )
    result = _run(host, argv, timeout=timeout, log=log)
    if result.exit_code != 0:
        raise TaskFailedError(
            f"{argv[0]} exited with {result.exit_code} on {host.description}: {_detail(result)}",
            "command-failed",
        )
    return {"exit_code": result.exit_code, "stdout": result.stdout, "stderr": result.stderr}


def _relative_path(value: Any) -> str:
    path = _text(value, "path", limit=1024)
    parts = path.split("/")
    if path.startswith("/") or "\\" in path or any(part in ("", ".", "..") for part in parts):
        raise _bad(f"path {path!r} must be relative, without '.', '..' or empty parts")
    return path


def _upload(payload: Any, host: Host, log: Log) -> dict[str, Any]:
    p = _object(payload, {"directory", "files"}, {"directory", "files"}, "upload-files")
    directory = _directory(p["directory"])
    files = p["files"]
    if not isinstance(files, list) or not files or len(files) > MAX_UPLOAD_FILES:
        raise _bad(f"files must be a list of 1 to {MAX_UPLOAD_FILES} files")
    decoded: list[tuple[str, bytes, int]] = []
    total = 0
    for item in files:
        entry = _object(item, {"path", "content_b64", "mode"}, {"path", "content_b64"}, "file")
        path = _relative_path(entry["path"])
        content = entry["content_b64"]
        if not isinstance(content, str):
            raise _bad(f"content_b64 of {path!r} must be base64 text")
        try:
            data = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _bad(f"content_b64 of {path!r} is not base64") from exc
        mode = entry.get("mode", 0o644)
        # No set-id or sticky bits: an uploaded file is data or a script, never a privilege.
        if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o777:
            raise _bad(f"mode of {path!r} must be a permission from 0 to 0o777")
        total += len(data)
        if total > MAX_UPLOAD_BYTES:
            raise _bad(f"the files are larger than {MAX_UPLOAD_BYTES} bytes together")
        decoded.append((posixpath.join(directory, path), data, mode))
    written = []
    for path, data, mode in decoded:
        _write(host, path, data, mode, log)
        written.append(path)
    return {"paths": written}


def _write_sticker(payload: Any, host: Host, log: Log) -> dict[str, Any]:
    p = _object(payload, {"directory", "sticker"}, {"directory", "sticker"}, "write-sticker")
    directory = _directory(p["directory"])
    sticker = p["sticker"]
    if not isinstance(sticker, dict) or "signature" not in sticker:
        raise _bad("sticker must be a signed sticker object")
    try:
        data = sticker_bytes(sticker)
    except (TypeError, ValueError) as exc:
        raise _bad("sticker is not JSON") from exc
    if len(data) > MAX_STICKER_BYTES:
        raise _bad(f"the sticker is larger than {MAX_STICKER_BYTES} bytes")
    path = posixpath.join(directory, STICKER_NAME)
    _write(host, path, data, 0o644, log)
    return {"path": path, "sha256": hashlib.sha256(data).hexdigest()}


def _read_sticker(payload: Any, host: Host, log: Log) -> dict[str, Any]:
    p = _object(payload, {"directory"}, {"directory"}, "read-sticker")
    path = posixpath.join(_directory(p["directory"]), STICKER_NAME)
    log(f"reading {path}")
    try:
        raw = host.read_file(path, limit=MAX_STICKER_BYTES)
    except HostError as exc:
        raise TaskFailedError(exc.message, "host-error", retryable=exc.retryable) from exc
    if raw is None:
        return {"path": path, "sticker": None, "raw": None, "raw_b64": None}
    sticker: Any
    try:
        sticker = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        sticker = None
    return {
        "path": path,
        "sticker": sticker if isinstance(sticker, dict) else None,
        "raw": raw.decode("utf-8", "replace"),
        # The exact bytes, for a signature check (`raw` may have lost undecodable bytes).
        "raw_b64": base64.b64encode(raw).decode("ascii"),
    }


def run_task(
    task_type: TaskType | str,
    payload: Any,
    host: Host,
    *,
    log: Log = lambda line: None,
    allow_commands: Sequence[Sequence[str]] = (),
) -> dict[str, Any]:
    """Run one task on `host` and return its outputs; `TaskFailedError` when it fails."""
    try:
        kind = TaskType(task_type)
    except ValueError:
        raise TaskFailedError(f"unknown task type {str(task_type)[:40]!r}", "bad-payload") from None
    if kind is TaskType.DEPLOY:
        return _deploy(payload, host, log)
    if kind is TaskType.INSPECT:
        return _inspect(payload, host, log)
    if kind is TaskType.HEALTH_CHECK:
        return _health_check(payload, host, log)
    if kind is TaskType.EXECUTE_COMMAND:
        return _execute(payload, host, log, allow_commands)
    if kind is TaskType.UPLOAD_FILES:
        return _upload(payload, host, log)
    if kind is TaskType.WRITE_STICKER:
        return _write_sticker(payload, host, log)
    return _read_sticker(payload, host, log)
