"""Change notices: hear what another process (the CLI, another desk, `stella serve`) changed.

Every write to a table a view shows NOTIFYs `stella_<topic>_<tenant>` on commit (migration 0010).
The payload is empty: PostgreSQL lets any login LISTEN on any channel, so a notice says only
which kind of thing changed, never what; the listener reads it again under row-level security.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from enum import StrEnum
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from stella_core.db.engine import Database, translate_driver

log = logging.getLogger(__name__)


class Topic(StrEnum):
    """What a notice can be about (the tables behind each are listed in migration 0010)."""

    RELEASES = "releases"  # releases, their components, components, registries
    ENVIRONMENTS = "environments"  # environments, their policy, freezes
    PROMOTIONS = "promotions"  # promotions, approvals, exceptions
    PEOPLE = "people"
    RUNS = "runs"  # runs and their approvals (not every step: a run's status says enough)
    WORKFLOWS = "workflows"  # templates and their versions
    EVIDENCE = "evidence"  # ledger packets


def channel(topic: Topic, tenant_id: UUID) -> str:
    return f"stella_{topic.value}_{tenant_id.hex}"


class ChangeListener:
    """LISTENs on a dedicated autocommit connection (never a pooled one: a pooled connection
    would carry its LISTENs to whoever borrows it next). One thread waits on it at a time."""

    def __init__(self, conn: psycopg.Connection[Any], channels: dict[str, Topic]) -> None:
        self._conn = conn
        self._channels = channels

    @classmethod
    def open(cls, db: Database, topics: Iterable[Topic] = tuple(Topic)) -> ChangeListener:
        """Raises `DatabaseError` when the connection or the LISTEN fails."""
        if db.tenant_id is None:
            raise ValueError("change notices need a tenant")
        url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        channels = {channel(topic, db.tenant_id): topic for topic in topics}
        try:
            conn = psycopg.connect(
                url, autocommit=True, connect_timeout=10, application_name="stella-listen"
            )
        except psycopg.Error as exc:
            raise translate_driver(exc) from exc
        try:
            for name in channels:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            conn.close()
            raise translate_driver(exc) from exc
        return cls(conn, channels)

    def wait(self, timeout: float) -> set[Topic]:
        """The topics heard within `timeout` seconds: returns at the first notice, with every
        notice already waiting folded in (empty when none came). Raises `DatabaseError` when
        the connection broke."""
        heard: set[Topic] = set()
        try:
            for notice in self._conn.notifies(timeout=max(0.0, timeout), stop_after=1):
                heard.add(self._channels[notice.channel])
            if heard:  # what arrived with it: one wake-up for a burst
                for notice in self._conn.notifies(timeout=0.0):
                    heard.add(self._channels[notice.channel])
        except psycopg.Error as exc:
            raise translate_driver(exc) from exc
        return heard

    @property
    def closed(self) -> bool:
        return self._conn.closed

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self._conn.close()
