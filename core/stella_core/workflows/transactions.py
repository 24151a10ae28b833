"""The engine's transactions: retried on deadlock and serialization failures, then the
run-finished hooks for the runs they ended."""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar
from uuid import UUID

import psycopg
import sqlalchemy.exc
from sqlalchemy import Connection

from stella_core.db.engine import Database, translate
from stella_core.errors import DatabaseError, StellaError

log = logging.getLogger(__name__)

T = TypeVar("T")
# Called after the transaction that ended a run commits: (run id, final status). The single
# place later issues hook evidence into.
RunFinishedHook = Callable[[UUID, str], None]
_TX_ATTEMPTS = 5


def _retryable(exc: BaseException) -> bool:
    cause = exc.__cause__
    orig = getattr(cause, "orig", cause)
    return isinstance(orig, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure)


@contextlib.contextmanager
def _bare_transaction(db: Database) -> Iterator[Connection]:
    """A transaction whose first statement selects the tenant itself (the claim pipelines it)."""
    try:
        with db.engine.begin() as conn:
            yield conn
    except sqlalchemy.exc.DBAPIError as exc:
        raise translate(exc) from exc
    except psycopg.Error as exc:  # raised by statements sent on the driver connection
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else "database error"
        raise DatabaseError(message) from exc


def run_tx(
    db: Database,
    work: Callable[[Connection], T],
    hooks: Sequence[RunFinishedHook] = (),
    *,
    tenant: bool = True,
) -> T:
    """Run `work` in one transaction (retried on deadlock); then the run-finished hooks.
    With `tenant=False` the work must select the tenant itself, first thing."""
    for attempt in range(_TX_ATTEMPTS):
        finished: list[tuple[UUID, str]] = []
        try:
            with db.transaction() if tenant else _bare_transaction(db) as conn:
                conn.info["stella.finished"] = finished
                try:
                    value = work(conn)
                finally:
                    conn.info.pop("stella.finished", None)
        except StellaError as exc:
            if attempt + 1 < _TX_ATTEMPTS and _retryable(exc):
                time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))  # noqa: S311
                continue
            raise
        for run_id, status in finished:
            for hook in hooks:
                try:
                    hook(run_id, status)
                except Exception:
                    log.exception("run-finished hook failed for run %s", run_id)
        return value
    raise AssertionError("unreachable")
