"""Benchmark: the evidence ledger against the bare ECDSA P-256 rates of `cryptography`, same run.

- sign + append: packets signed and appended to `evidence.packets` (real PostgreSQL, chain
  trigger, RLS) per second, against bare `private_key.sign(pae)` over the same messages
  (issue target: >= 50%). Batched (the way a worker appends a burst) and one per transaction.
- verify: `verify_capsule` over an exported 10,000-packet capsule (SHA256SUMS, signatures,
  inputs, chain, Merkle root and one inclusion proof per packet) against bare
  `public_key.verify` over the same 10,000 messages (target: >= 70%).

Printed, never asserted (only that everything verified).
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from stella_core.evidence.model import Input, Refs
from stella_core.evidence.packets import IN_TOTO_PAYLOAD_TYPE, b64decode, pae
from stella_core.evidence.service import Selection
from stella_core.evidence.verify import verify_capsule
from tests.perf.test_bench_signing import packet_inputs

ALGORITHM = ec.ECDSA(hashes.SHA256())
APPENDED = 2000
BATCH = 250
SINGLE = 300
CAPSULE = 10_000


def _items(start: int, count: int) -> list[tuple]:
    return [
        (*_swap(packet_inputs(n)), _documents(n), Refs(release=f"shop-{n}"))
        for n in range(start, start + count)
    ]


def _documents(n: int) -> list[Input]:
    """The documents `packet_inputs` names by digest (each digest is the sha256 of its name)."""
    names = ["policy", *(f"in-{n}-{i}" for i in range(6)), f"record-{n}"] if n % 2 else ["template"]
    return [Input("text/plain", name.encode()) for name in names]


def _swap(args: tuple) -> tuple:
    subjects, ptype, predicate = args
    return ptype, subjects, predicate


def test_sign_and_append_then_verify_a_10k_capsule(world) -> None:
    # The orchestrator signs and appends system evidence, in its own session.
    admin = world.open().orchestrator
    with admin.db.transaction() as conn:
        key = admin.evidence.orchestrator_signer(conn)
    raw = key._key  # the bare baseline needs the same key object

    batches = [_items(i, BATCH) for i in range(0, APPENDED, BATCH)]
    start = time.perf_counter()
    for items in batches:
        with admin.db.transaction() as conn:
            admin.evidence.emit_many(conn, items, signer=key)
    t_batched = time.perf_counter() - start

    singles = _items(APPENDED, SINGLE)
    start = time.perf_counter()
    for item in singles:
        with admin.db.transaction() as conn:
            admin.evidence.emit_many(conn, [item], signer=key)
    t_single = time.perf_counter() - start

    with admin.db.transaction() as conn:
        from stella_core.evidence.store import LedgerStore

        bundles = LedgerStore(conn).bundles(list(range(1, APPENDED + 1)))
    messages = [
        pae(IN_TOTO_PAYLOAD_TYPE, b64decode(json.loads(b)["dsseEnvelope"]["payload"]))
        for b in bundles.values()
    ]
    start = time.perf_counter()
    for message in messages:
        raw.sign(message, ALGORITHM)
    t_bare_sign = (time.perf_counter() - start) / len(messages)

    rate_batched = APPENDED / t_batched
    rate_single = SINGLE / t_single
    bare_sign = 1 / t_bare_sign
    print(f"\n[bench] sign+append: bare ECDSA sign {bare_sign:8.0f}/s")
    print(
        f"[bench] sign+append: batched ({BATCH}/tx) {rate_batched:8.0f}/s -> "
        f"{rate_batched / bare_sign:.0%} of bare (target >= 50%)"
    )
    print(
        f"[bench] sign+append: one per transaction {rate_single:8.0f}/s -> "
        f"{rate_single / bare_sign:.0%} of bare"
    )

    # Fill the ledger to 10,000 packets and export it all.
    done = APPENDED + SINGLE
    while done < CAPSULE:
        count = min(500, CAPSULE - done)
        with admin.db.transaction() as conn:
            admin.evidence.emit_many(conn, _items(done, count), signer=key)
        done += count
    files, count = admin.evidence.capsule_files(
        Selection(since=datetime(2000, 1, 1, tzinfo=UTC), until=datetime(2100, 1, 1, tzinfo=UTC))
    )
    assert count == CAPSULE
    trusted = [k.public_key for k in admin.evidence.signing_keys()]

    signed = [
        pae(IN_TOTO_PAYLOAD_TYPE, b64decode(json.loads(body)["dsseEnvelope"]["payload"]))
        for name, body in files.items()
        if name.startswith("packets/")
    ]
    signatures = [raw.sign(m, ALGORITHM) for m in signed]
    public = raw.public_key()
    jobs = os.cpu_count() or 1
    best_bare = best_verify = best_parallel = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        for message, signature in zip(signed, signatures, strict=True):
            public.verify(signature, message, ALGORITHM)
        best_bare = min(best_bare, time.perf_counter() - start)
        start = time.perf_counter()
        report = verify_capsule(files, trusted)
        best_verify = min(best_verify, time.perf_counter() - start)
        assert report.ok, report.to_json()["problems"][:3]
        # What `stella evidence verify` does: every core, only the verdict kept.
        start = time.perf_counter()
        parallel = verify_capsule(files, trusted, jobs=jobs, keep_verified=False)
        best_parallel = min(best_parallel, time.perf_counter() - start)
        assert parallel.ok
        assert parallel.checked == report.checked
    assert report.checked["signatures"] == CAPSULE + 1  # and the signed manifest
    print(
        f"[bench] verify 10k capsule: bare ECDSA verify {CAPSULE / best_bare:8.0f}/s (one core), "
        f"capsule {CAPSULE / best_verify:8.0f} packets/s -> "
        f"{best_bare / best_verify:.0%} of bare (target >= 70%)"
    )
    print(
        f"[bench] verify 10k capsule with {jobs} processes (the CLI's way): "
        f"{CAPSULE / best_parallel:8.0f} packets/s -> {best_bare / best_parallel:.0%} of one "
        "core's bare rate"
    )
