"""The deploy task on this machine with real rootful podman, podman-compose and the registry.

Images are built in the test (static busybox serving a page), pushed over the distribution API
and deployed by digest through `LocalHost` (what the agent uses). Services use host networking
on free loopback ports, or none. Every test removes its containers (compose down, then by the
project's label) and the session fixture resets podman's scratch store.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from stella_core.deploy.hosts import LocalHost
from stella_core.deploy.lockfile import LockedComponent, render_lockfile
from stella_core.deploy.model import TaskType
from stella_core.deploy.runner import TaskFailedError, run_task
from tests.support.containers import Podman, host_port, podman_fixture  # noqa: F401
from tests.support.images import PushedImage, build_busybox_image, platform_arch, push_busybox_image
from tests.support.registry import RewritingProxy, RunningRegistry, free_port, push_oci_index
from tests.support.workflow_helpers import wait_until


def _unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


class Deployment:
    """Renders a lockfile for pushed images and runs the deploy task; removes what it started."""

    def __init__(self, podman: Podman, directory: Path) -> None:
        self.podman = podman
        self.directory = directory
        self.project = _unique("t")
        self.host = LocalHost(base_env=podman.host_env)

    def lockfile(self, parts: list[tuple[str, PushedImage, dict[str, Any]]]) -> str:
        now = datetime.now(UTC).replace(microsecond=0)
        return render_lockfile(
            release_id=uuid.uuid4(),
            release_name="test-1",
            release_created_at=now,
            environment_id=uuid.uuid4(),
            environment_name="dev",
            deployment_id=uuid.uuid4(),
            started_at=now,
            components=[
                LockedComponent(
                    name=name,
                    image=image.repository,
                    digest=image.digest,
                    tag=image.tag,
                    service=service,
                )
                for name, image, service in parts
            ],
        )

    def payload(
        self, parts: list[tuple[str, PushedImage, dict[str, Any]]], **changes: Any
    ) -> dict[str, Any]:
        payload = {
            "project": self.project,
            "directory": str(self.directory),
            "runtime": "podman-compose",
            "lockfile": self.lockfile(parts),
            "images": [{"component": name, "image": image.pinned} for name, image, _ in parts],
        }
        payload.update(changes)
        return payload

    def run(self, payload: dict[str, Any], log: list[str] | None = None) -> dict[str, Any]:
        return run_task(
            TaskType.DEPLOY, payload, self.host, log=(log if log is not None else []).append
        )

    def containers(self) -> list[str]:
        listed = self.podman.run(
            "ps",
            "-a",
            "--filter",
            f"label=com.docker.compose.project={self.project}",
            "--format",
            "{{.Names}}",
        )
        return sorted(listed.stdout.split())

    def running_digest(self, container: str) -> str:
        return self.podman.run("inspect", "--format", "{{.ImageDigest}}", container).stdout.strip()

    def remove(self) -> None:
        lock = self.directory / "compose.stella.lock.yml"
        if lock.exists():
            subprocess.run(
                [self.podman.compose, "-p", self.project, "-f", str(lock), "down", "-t", "2"],
                env=self.podman.host_env,
                capture_output=True,
                timeout=120,
                check=False,
            )
        for name in self.containers():
            self.podman.run("rm", "-f", "-t", "2", name, check=False)
        self.podman.run("pod", "rm", "-f", f"pod_{self.project}", check=False)


@pytest.fixture
def deployment(podman: Podman, tmp_path: Path) -> Iterator[Deployment]:
    d = Deployment(podman, tmp_path / "stella" / "target")
    try:
        yield d
    finally:
        d.remove()
        assert d.containers() == []


def _page(port: int, starts: str) -> str:
    """The page on the port once it starts with `starts` (httpd starts just after `up`)."""

    def fetch() -> str | None:
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text
        except httpx.TransportError:
            return None
        return text if text.startswith(starts) else None

    return str(wait_until(fetch, timeout=30, what=f"a page starting {starts!r} on port {port}"))


def _push(registry: RunningRegistry, variant: str) -> PushedImage:
    return push_busybox_image(registry.url, _unique("r") + "/app", "v1", variant)


def test_two_components_run_by_digest_and_answer(
    deployment: Deployment, registry: RunningRegistry
) -> None:
    web = _push(registry, _unique("web-"))
    worker = _push(registry, _unique("worker-"))
    assert web.digest != worker.digest
    port = free_port()
    parts = [
        (
            "web",
            web,
            # Values reach the container as written: never the target's environment variables.
            {"network_mode": "host", "environment": {"PORT": str(port), "LITERAL": "${HOME}-$$x"}},
        ),
        ("worker", worker, {"network_mode": "none"}),
    ]
    log: list[str] = []
    outputs = deployment.run(deployment.payload(parts), log)

    assert outputs["digests"] == {"web": web.digest, "worker": worker.digest}
    assert {c["component"]: c["digest"] for c in outputs["containers"]} == outputs["digests"]
    # What podman itself says each running container was created from.
    for c in outputs["containers"]:
        assert deployment.running_digest(c["container"]) == outputs["digests"][c["component"]]
        assert c["state"] == "running"
    lock = Path(outputs["lockfile"])
    assert lock == deployment.directory / "compose.stella.lock.yml"
    assert f"image: {web.pinned}  # tag: v1" in lock.read_text()
    # Every pull came before the start.
    commands = [line for line in log if line.startswith("$ ")]
    ups = [i for i, line in enumerate(commands) if line.endswith(" up -d")]
    pulls = [i for i, line in enumerate(commands) if " pull " in line]
    assert len(pulls) == 2
    assert ups
    assert max(pulls) < ups[0]

    assert _page(port, "hello from web-")
    env = deployment.podman.run(
        "inspect", "--format", "{{json .Config.Env}}", f"{deployment.project}_web_1"
    ).stdout
    assert "LITERAL=${HOME}-$$x" in json.loads(env)

    health = run_task(
        TaskType.HEALTH_CHECK,
        {"url": f"http://127.0.0.1:{port}/", "expect_status": 200, "timeout": 5},
        deployment.host,
    )
    assert health == {"status": 200}
    inspected = run_task(
        TaskType.INSPECT,
        {"project": deployment.project, "runtime": "podman-compose"},
        deployment.host,
    )
    by_component = {c["component"]: c for c in inspected["containers"]}
    assert by_component["web"]["digest"] == web.digest
    assert by_component["web"]["labels"]["stella.digest"] == web.digest
    assert by_component["worker"]["labels"]["stella.component"] == "worker"


def test_deploying_the_next_release_replaces_the_running_containers(
    deployment: Deployment, registry: RunningRegistry
) -> None:
    repository = _unique("r") + "/app"
    first = push_busybox_image(registry.url, repository, "v1", _unique("first-"))
    second = push_busybox_image(registry.url, repository, "v2", _unique("second-"))
    port = free_port()
    service = {"network_mode": "host", "environment": {"PORT": str(port)}}
    deployment.run(deployment.payload([("web", first, service)]))
    assert _page(port, "hello from first-")
    outputs = deployment.run(deployment.payload([("web", second, service)]))
    assert outputs["digests"] == {"web": second.digest}
    assert len(outputs["containers"]) == 1
    assert _page(port, "hello from second-")


def test_a_release_pinned_to_a_multi_platform_index_runs_by_that_digest(
    deployment: Deployment, registry: RunningRegistry
) -> None:
    # Releases pin the index digest of a multi-platform image; podman runs the platform's
    # manifest, and the check after `up` must still recognise the index digest.
    child = _push(registry, _unique("indexed-"))
    repository = child.repository.split("/", 1)[1]
    index = push_oci_index(
        registry.url, repository, "v1", [(child.digest, f"linux/{platform_arch()}")]
    )
    pinned = PushedImage(repository=child.repository, tag="v1", digest=index)
    outputs = deployment.run(deployment.payload([("web", pinned, {"network_mode": "none"})]))
    assert outputs["digests"] == {"web": index}
    assert outputs["containers"][0]["digest"] == index


def test_a_registry_serving_other_bytes_fails_and_starts_nothing(
    deployment: Deployment, registry: RunningRegistry
) -> None:
    good = _push(registry, _unique("good-"))
    pushed = _push(registry, _unique("tampered-"))
    proxy = RewritingProxy(registry.url)
    try:
        proxy.tamper_body = True  # every manifest and blob comes back with a byte added
        deployment.podman.allow_insecure(host_port(proxy.url))
        via_proxy = PushedImage(
            repository=pushed.repository.replace(host_port(registry.url), host_port(proxy.url)),
            tag=pushed.tag,
            digest=pushed.digest,
        )
        parts = [
            ("good", good, {"network_mode": "none"}),
            ("tampered", via_proxy, {"network_mode": "none"}),
        ]
        with pytest.raises(TaskFailedError) as caught:
            deployment.run(deployment.payload(parts))
        assert proxy.methods(), "podman never asked the proxy"
    finally:
        proxy.stop()
    error = caught.value
    assert error.error_type == "digest-mismatch", error.message
    assert "tampered" in error.message
    assert via_proxy.pinned in error.message
    # The good component came first and was pulled, but nothing was started.
    assert deployment.containers() == []


def test_a_registry_whose_stored_layer_was_altered_fails_and_starts_nothing(
    deployment: Deployment, registry: RunningRegistry
) -> None:
    variant = _unique("altered-")
    pushed = _push(registry, variant)
    # The manifest is intact; the layer's bytes on the registry's disk are not.
    layer = build_busybox_image(variant).layer
    hex_digest = hashlib.sha256(layer).hexdigest()
    stored = registry.workdir / "data/docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest
    data = stored / "data"
    assert data.read_bytes() == layer
    data.write_bytes(gzip.compress(b"other bytes", mtime=0))
    with pytest.raises(TaskFailedError) as caught:
        deployment.run(deployment.payload([("web", pushed, {"network_mode": "none"})]))
    assert caught.value.error_type == "digest-mismatch", caught.value.message
    assert pushed.pinned in caught.value.message
    assert deployment.containers() == []


def test_a_digest_missing_from_the_registry_fails_before_anything_starts(
    deployment: Deployment, registry: RunningRegistry
) -> None:
    good = _push(registry, _unique("there-"))
    missing = PushedImage(
        repository=good.repository, tag="gone", digest="sha256:" + uuid.uuid4().hex * 2
    )
    parts = [("web", good, {"network_mode": "none"}), ("api", missing, {"network_mode": "none"})]
    with pytest.raises(TaskFailedError) as caught:
        deployment.run(deployment.payload(parts))
    assert caught.value.error_type == "pull-failed"
    assert "api" in caught.value.message
    assert "manifest unknown" in caught.value.message
    assert deployment.containers() == []


def test_a_runtime_that_starts_another_image_is_a_digest_mismatch(
    deployment: Deployment, registry: RunningRegistry, tmp_path: Path
) -> None:
    repository = _unique("r") + "/app"
    pinned = push_busybox_image(registry.url, repository, "v1", _unique("pinned-"))
    other = push_busybox_image(registry.url, repository, "v2", _unique("other-"))
    # A compose wrapper that swaps the digest before starting: broken or hostile, the check
    # after `up` must catch what really runs.
    wrapper = tmp_path / "swapping-compose"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'[ "$1" = version ] && exec {shlex.quote(deployment.podman.compose)} version\n'
        f'sed "s/{pinned.digest}/{other.digest}/g" "$4" > "$4.swapped"\n'
        f'exec {shlex.quote(deployment.podman.compose)} -p "$2" -f "$4.swapped" up -d\n'
    )
    wrapper.chmod(0o755)
    payload = deployment.payload(
        [("web", pinned, {"network_mode": "none"})], runtime=str(wrapper), engine="podman"
    )
    with pytest.raises(TaskFailedError) as caught:
        deployment.run(payload)
    assert caught.value.error_type == "digest-mismatch"
    assert other.digest in caught.value.message
    assert pinned.digest in caught.value.message


def test_a_missing_runtime_is_one_sentence(
    deployment: Deployment, registry: RunningRegistry
) -> None:
    image = _push(registry, _unique("x-"))
    # podman-compose lives in the virtual environment only; this PATH does not have it.
    host = LocalHost(base_env={**deployment.podman.env, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    payload = deployment.payload([("web", image, {"network_mode": "none"})])
    with pytest.raises(TaskFailedError) as caught:
        run_task(TaskType.DEPLOY, payload, host)
    assert caught.value.error_type == "runtime-missing"
    assert caught.value.message == "podman-compose is not installed on this machine"
    assert not (deployment.directory / "compose.stella.lock.yml").exists()

    docker = deployment.payload(
        [("web", image, {"network_mode": "none"})], runtime="no-such-compose --flag"
    )
    with pytest.raises(TaskFailedError) as caught:
        run_task(TaskType.DEPLOY, docker, deployment.host)
    assert caught.value.message == "no-such-compose --flag is not installed on this machine"


def test_a_lockfile_that_disagrees_with_the_images_is_refused(
    deployment: Deployment, registry: RunningRegistry
) -> None:
    one = _push(registry, _unique("one-"))
    two = _push(registry, _unique("two-"))
    payload = deployment.payload([("web", one, {"network_mode": "none"})])
    payload["images"] = [{"component": "web", "image": two.pinned}]
    with pytest.raises(TaskFailedError) as caught:
        deployment.run(payload)
    assert caught.value.error_type == "bad-payload"
    assert deployment.containers() == []


def test_a_containers_own_health_check_is_asked_of_podman(
    deployment: Deployment, registry: RunningRegistry
) -> None:
    good = _push(registry, _unique("good-"))
    bad = _push(registry, _unique("bad-"))
    parts = [
        (
            "good",
            good,
            {"network_mode": "none", "healthcheck": {"test": ["CMD-SHELL", "test -x /bin/sh"]}},
        ),
        (
            "bad",
            bad,
            {"network_mode": "none", "healthcheck": {"test": ["CMD-SHELL", "test -f /ready"]}},
        ),
        ("plain", good, {"network_mode": "none"}),
    ]
    deployment.run(deployment.payload(parts))

    def ask(component: str) -> dict[str, Any]:
        payload = {
            "project": deployment.project,
            "runtime": "podman-compose",
            "component": component,
        }
        return run_task(TaskType.HEALTH_CHECK, payload, deployment.host)

    assert ask("good") == {"status": "healthy", "containers": 1}
    with pytest.raises(TaskFailedError) as failed:
        ask("bad")
    assert failed.value.error_type == "health-check-failed"
    assert "bad's own health check fails" in failed.value.message
    # A container without a check cannot be asked (podman says so): not a passing answer.
    with pytest.raises(TaskFailedError) as no_check:
        ask("plain")
    assert no_check.value.error_type == "health-check-error"
    with pytest.raises(TaskFailedError) as absent:
        ask("ghost")
    assert "ghost has no container" in absent.value.message
