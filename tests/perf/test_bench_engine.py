"""Benchmark: a 1,000-node layered template of no-op steps run to completion with 1 and 2
workers, against the ceiling of this design measured on the same database in the same run: bare
claim-and-complete transactions (`FOR UPDATE SKIP LOCKED` pick, mark done, commit; one item per
transaction) through the same driver stack. Printed, never asserted (only that every step ran
exactly once).

Workers take up to 32 instant steps of a run per transaction (the default); the figures with one
step per transaction are printed too, as the like-for-like comparison with the ceiling.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy import text

from tests.support.workflow_helpers import template

LAYERS = 20
WIDTH = 50
NODES = LAYERS * WIDTH
CEILING_ITEMS = 2000

CLAIM = text(
    "UPDATE bench.queue SET state = 'running' WHERE id = ("
    "SELECT id FROM bench.queue WHERE state = 'ready' LIMIT 1 FOR UPDATE SKIP LOCKED) "
    "RETURNING id"
)
COMPLETE = text("UPDATE bench.queue SET state = 'done' WHERE id = :id")


def layered() -> dict:
    """Each node depends on two nodes of the layer before: fan-in and fan-out everywhere."""
    nodes = [
        {"id": f"n{layer}_{i}", "type": "notify", "inputs": {"message": "tick"}}
        for layer in range(LAYERS)
        for i in range(WIDTH)
    ]
    edges = [
        (f"n{layer - 1}_{j}", f"n{layer}_{i}")
        for layer in range(1, LAYERS)
        for i in range(WIDTH)
        for j in {i, (i + 1) % WIDTH}
    ]
    return template("bench", nodes, edges)


def ceiling(stella, superuser, threads: int) -> float:
    superuser.execute("DROP TABLE IF EXISTS bench.queue")
    superuser.execute("CREATE TABLE bench.queue (id int PRIMARY KEY, state text NOT NULL)")
    superuser.execute(
        "INSERT INTO bench.queue SELECT g, 'ready' FROM generate_series(1, %s) g",
        (CEILING_ITEMS,),
    )
    superuser.execute("GRANT SELECT, UPDATE ON bench.queue TO stella_app")
    superuser.execute("ANALYZE bench.queue")

    def drain() -> None:
        while True:
            with stella.db.engine.begin() as conn:
                claimed = conn.execute(CLAIM).scalar()
                if claimed is None:
                    return
                conn.execute(COMPLETE, {"id": claimed})

    workers = [threading.Thread(target=drain) for _ in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    done = superuser.execute("SELECT count(*) FROM bench.queue WHERE state = 'done'").fetchone()
    assert done == (CEILING_ITEMS,)
    return CEILING_ITEMS / elapsed


def engine_rate(stella, workers: int, batch: int) -> float:
    run = stella.workflows.start_run("bench")
    stop = threading.Event()
    pool = [stella.workflows.worker() for _ in range(workers)]
    for worker in pool:
        worker.batch_size = batch
    threads = [threading.Thread(target=w.run_forever, args=(stop,)) for w in pool]
    for t in threads:
        t.start()
    try:
        run = stella.workflows.wait_run(run.id, timeout=120, drive=False)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert run.status == "succeeded"
    assert all(s.status == "succeeded" and s.attempts == 1 for s in run.steps)
    events = stella.workflows.run_events(run.id)
    assert sum(1 for e in events if e.kind == "step.started") == NODES
    # Database clock: from the run's first claim to the commit that ended it.
    began = next(e.at for e in events if e.kind == "run.started")
    ended = next(e.at for e in events if e.kind == "run.succeeded")
    return NODES / (ended - began).total_seconds()


def test_engine_throughput_against_bare_claim_and_complete(world, superuser) -> None:
    stella = world.open()
    superuser.execute("CREATE SCHEMA bench")
    superuser.execute("GRANT USAGE ON SCHEMA bench TO stella_app")
    started = time.perf_counter()
    stella.workflows.import_template(layered())
    imported = time.perf_counter() - started
    engine_rate(stella, 1, 32)  # warm-up: plan cache, prepared statements, table statistics
    superuser.execute("ANALYZE workflow.step_runs")
    results = {}
    for workers in (1, 2):
        bare = ceiling(stella, superuser, workers)
        results[workers] = (engine_rate(stella, workers, 32), engine_rate(stella, workers, 1), bare)
    print(f"\n[bench] {NODES}-node layered template ({LAYERS}x{WIDTH}) imported in {imported:.2f}s")
    for workers, (batched, single, bare) in results.items():
        print(
            f"[bench] {workers} worker(s): {batched:,.0f} steps/s ({batched / bare:.0%} of the "
            f"ceiling); one step per transaction {single:,.0f} steps/s ({single / bare:.0%}); "
            f"bare claim-and-complete {bare:,.0f}/s with {workers} connection(s)"
        )
