"""The desk's own workflow worker, for the embedded default (DESIGN: "the embedded desktop runs
one in-process").

One core `Worker` serves the tenant on a thread of its own, with its own small connection pool,
exactly like one `stella serve` worker. It is not an `Ops` operation: it runs for the whole
session and must not hold the busy indicator or one of the operation threads. `main()` stops it
at exit with a bound, before the core closes: a step still running gets `STEP_GRACE` seconds,
then it is stopped and handed back (its lease released), so another worker takes it and nothing
is lost.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING

from stella_core.profiles import EMBEDDED
from stella_core.tenancy.model import ProductRole

if TYPE_CHECKING:
    from stella_core.bootstrap import Stella
    from stella_core.db.engine import Database
    from stella_core.tenancy.model import Identity
    from stella_core.workflows.engine import Worker

log = logging.getLogger(__name__)

STEP_GRACE = 2.0  # seconds a running step gets at exit before it is handed back
POOL_SIZE = 3  # claims, lease heartbeats, and one spare


def reason_not_to_serve(stella: Stella, identity: Identity | None) -> str | None:
    """Why this window should not run steps (None: it should)."""
    if stella.backend.target != EMBEDDED:
        # A shared server has its own `stella serve` workers; a desk should not run scripts on
        # a person's laptop behind their back.
        return "steps run on the server's workers (stella serve)"
    if identity is not None and identity.role is ProductRole.AUDITOR:
        return "an auditor does not move runs along"
    if stella.orchestrator is None:
        return "this machine holds no orchestrator login; stella serve moves runs"
    return None


class DeskWorker:
    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._worker: Worker | None = None
        self.error: str | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def worker_id(self) -> str | None:
        return self._worker.worker_id if self._worker is not None else None

    def start(self, stella: Stella) -> None:
        """Start serving as the orchestrator this desk runs (UI thread; no I/O: engines
        connect lazily)."""
        if self.running:
            return
        if stella.orchestrator is None:
            self.error = "this machine does not run the orchestrator; stella serve moves runs"
            return
        db = stella.orchestrator.database(pool_size=POOL_SIZE)
        self._stop.clear()
        self.error = None
        self._worker = stella.workflows.worker(db=db, shutdown_grace_seconds=STEP_GRACE)
        self._thread = threading.Thread(
            target=self._serve,
            args=(self._worker, db),
            name="stella-desk-worker",
            daemon=True,  # never keeps the process alive past main()'s bounded wait
        )
        self._thread.start()
        log.info("in-process workflow worker %s started", self._worker.worker_id)

    def _serve(self, worker: Worker, db: Database) -> None:  # the worker's own thread
        try:
            worker.run_forever(self._stop)
        except Exception as exc:  # logged; the runs page says the worker stopped
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("the in-process workflow worker stopped")
        finally:
            db.dispose()

    async def stop(self, timeout: float = 10.0) -> bool:
        """Stop serving; wait at most `timeout` seconds. True when the thread has ended."""
        self._stop.set()
        thread = self._thread
        if thread is None:
            return True
        # `timeout` bounds the join; the grace a running step gets is shorter than that.
        await asyncio.to_thread(thread.join, timeout)
        if thread.is_alive():
            log.warning("the in-process workflow worker is still stopping")
            return False
        self._thread = None
        return True
