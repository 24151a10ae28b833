"""Benchmark: resolving a many-component release in parallel against sequential resolution.

Prints the ratio of the two, both measured in this run against the real registry; never asserts
wall-clock times (only that both ways agree on every digest).
"""

from __future__ import annotations

import time
import uuid

from stella_core.releases import service as release_service
from stella_core.releases.model import ComponentPin
from tests.support.registry import push_image

COMPONENTS = 24


def test_parallel_resolution_against_sequential_baseline(world, registry, monkeypatch) -> None:
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    for i in range(COMPONENTS):
        push_image(registry.url, f"{prefix}/c{i}", "1.0")
    stella = world.open()
    stella.releases.add_registry("local", registry.url, insecure=True)
    for i in range(COMPONENTS):
        stella.releases.add_component(f"c{i}", f"local/{prefix}/c{i}")
    pins = [ComponentPin(component=f"c{i}", tag="1.0") for i in range(COMPONENTS)]

    def run(name: str) -> tuple[float, dict[str, str]]:
        start = time.perf_counter()
        rel = stella.releases.create_release(name, pins)
        return time.perf_counter() - start, {c.name: c.digest for c in rel.components}

    monkeypatch.setattr(release_service, "RESOLVE_THREADS", 1)
    baseline, sequential = run("bench-sequential")
    monkeypatch.setattr(release_service, "RESOLVE_THREADS", 8)
    measured, parallel = run("bench-parallel")
    assert parallel == sequential
    print(
        f"\n[bench] create_release with {COMPONENTS} components: sequential {baseline:.3f}s, "
        f"8 threads {measured:.3f}s, speed-up x{baseline / measured:.2f}"
    )
