"""Prometheus metrics of `stella serve` (`--metrics-listen HOST:PORT`), with the official client.

Every number is read from the database at scrape time (one read-only transaction, as the
orchestrator, each statement bounded by a timeout), never counted in this process: the figures
survive a restart, and several `stella serve` hosts on one database answer the same. Durations
are histograms computed in SQL over the rows that carry a start and an end.

Labels carry only what an operator needs and what the product defines (task type, status,
deployment kind and strategy, step type, drift status): no tenant, environment, target or person
names, no secrets.

Drift counts come from a callable given by the composition root (the drift module reads its own
table); without one, no drift family is exposed rather than zeros that would say "all in sync".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import Connection, text

from stella_core.db.engine import Database
from stella_core.errors import DefinitionError, StellaError

log = logging.getLogger(__name__)

# Seconds. Deployments go from a few seconds (one target) to an hour (a slow rolling rollout).
DEPLOYMENT_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
STEP_BUCKETS = (0.05, 0.25, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
# An agent heard from within this long counts as connected (agents.model.ONLINE_WITHIN).
CONNECTED_WITHIN_SECONDS = 45
STATEMENT_TIMEOUT_MS = 5000
OPEN_TASK_STATUSES = ("queued", "delivered", "running")
ENDED_TASK_STATUSES = ("succeeded", "failed", "expired", "cancelled")
DRIFT_STATUSES = ("in_sync", "drifted", "unknown")

DriftCounts = Callable[[Connection], Mapping[str, int]]


def _histogram_sql(table: str, group: Sequence[str], where: str, buckets: Sequence[float]) -> str:
    """One aggregate statement: per group, the count at or under each bound, the count and
    the sum of the durations (finished_at - started_at, seconds). Only constants are spliced."""
    cols = ", ".join(group)
    duration = "extract(epoch FROM finished_at - started_at)"
    under = ", ".join(f"count(*) FILTER (WHERE d <= {float(b)!r})" for b in buckets)
    return (
        f"SELECT {cols}, count(*), coalesce(sum(d), 0), {under} FROM ("
        f"SELECT {cols}, greatest({duration}, 0) AS d FROM {table}"
        f" WHERE started_at IS NOT NULL AND finished_at IS NOT NULL AND {where}"
        f") s GROUP BY {cols}"
    )


def _le(bound: float) -> str:
    return repr(float(bound))


@dataclass(eq=False)  # registries keep collectors in a set: hashed by identity
class StellaCollector(Collector):
    """Reads the orchestrator's database on each `collect()` (a scrape)."""

    db: Database
    drift: DriftCounts | None = None

    def describe(self) -> list[Metric]:
        # Nothing described up front: registering must not query the database.
        return []

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "stella_database_up", "1 when this scrape could read the database, else 0"
        )
        try:
            with self.db.transaction() as conn:
                conn.execute(text("SET TRANSACTION READ ONLY"))
                conn.execute(text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
                families = list(self._families(conn))
        except StellaError as exc:
            log.warning("metrics: could not read the database: %s", exc.message)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    # the families -------------------------------------------------------------------------
    def _families(self, conn: Connection) -> Iterator[Metric]:
        yield from self._agents(conn)
        yield from self._tasks(conn)
        yield from self._deployments(conn)
        yield from self._steps(conn)
        yield from self._drift(conn)

    def _agents(self, conn: Connection) -> Iterator[Metric]:
        row = conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE connected AND last_heartbeat >"
                f" now() - interval '{CONNECTED_WITHIN_SECONDS} seconds'),"
                " count(*) FROM agent.agents WHERE revoked_at IS NULL"
            )
        ).one()
        connected = GaugeMetricFamily(
            "stella_agents_connected",
            "Agents linked to an orchestrator and heard from within the last "
            f"{CONNECTED_WITHIN_SECONDS} s",
        )
        connected.add_metric([], int(row[0]))
        yield connected
        enrolled = GaugeMetricFamily("stella_agents_enrolled", "Agents enrolled and not revoked")
        enrolled.add_metric([], int(row[1]))
        yield enrolled

    def _tasks(self, conn: Connection) -> Iterator[Metric]:
        rows = conn.execute(
            text("SELECT type, status, count(*) FROM deploy.tasks GROUP BY type, status")
        ).all()
        counts = {(str(r[0]), str(r[1])): int(r[2]) for r in rows}
        types = sorted({t for t, _ in counts})
        open_ = GaugeMetricFamily(
            "stella_tasks",
            "Tasks not finished yet, by type and status (queued, delivered, running)",
            labels=["type", "status"],
        )
        ended = CounterMetricFamily(
            "stella_tasks_finished",
            "Tasks finished, by type and how they ended (succeeded, failed, expired, cancelled)",
            labels=["type", "status"],
        )
        for task_type in types:
            for status in OPEN_TASK_STATUSES:
                open_.add_metric([task_type, status], counts.get((task_type, status), 0))
            for status in ENDED_TASK_STATUSES:
                ended.add_metric([task_type, status], counts.get((task_type, status), 0))
        yield open_
        yield ended

    def _deployments(self, conn: Connection) -> Iterator[Metric]:
        rows = conn.execute(
            text(
                "SELECT kind, strategy, status, count(*) FROM deploy.deployments"
                " GROUP BY kind, strategy, status"
            )
        ).all()
        running = GaugeMetricFamily(
            "stella_deployments_running", "Deployments in progress, by kind", labels=["kind"]
        )
        ended = CounterMetricFamily(
            "stella_deployments",
            "Deployments that ended, by kind, strategy and status",
            labels=["kind", "strategy", "status"],
        )
        rollbacks = CounterMetricFamily(
            "stella_rollbacks",
            "Rollbacks: deployments of kind rollback that ended, by status, plus deployments "
            "whose targets were rolled back (status rolled-back)",
            labels=["status"],
        )
        in_progress: dict[str, int] = {}
        rolled: dict[str, int] = {}
        for kind, strategy, status, count in rows:
            if status == "running":
                in_progress[kind] = in_progress.get(kind, 0) + int(count)
                continue
            ended.add_metric([kind, strategy, status], int(count))
            if kind == "rollback":
                rolled[status] = rolled.get(status, 0) + int(count)
            elif status == "rolled-back":
                rolled["rolled-back"] = rolled.get("rolled-back", 0) + int(count)
        for kind in ("deploy", "rollback", "remediation"):
            running.add_metric([kind], in_progress.get(kind, 0))
        for status, count in sorted(rolled.items()):
            rollbacks.add_metric([status], count)
        yield running
        yield ended
        yield rollbacks
        yield _histogram(
            conn,
            "stella_deployment_duration_seconds",
            "How long deployments took from start to end, by kind, strategy and status",
            "deploy.deployments",
            ["kind", "strategy", "status"],
            "status <> 'running'",
            DEPLOYMENT_BUCKETS,
        )

    def _steps(self, conn: Connection) -> Iterator[Metric]:
        yield _histogram(
            conn,
            "stella_step_duration_seconds",
            "How long workflow steps took from start to end, by step type and status",
            "workflow.step_runs",
            ["step_type", "status"],
            "status NOT IN ('pending', 'ready', 'running', 'waiting')",
            STEP_BUCKETS,
        )

    def _drift(self, conn: Connection) -> Iterator[Metric]:
        if self.drift is None:
            return
        try:
            with conn.begin_nested():  # a failing reader leaves the rest of the scrape intact
                counts = dict(self.drift(conn))
        except Exception:  # the drift reader is another module's: never fail the scrape
            log.exception("metrics: could not count drift findings")
            return
        family = GaugeMetricFamily(
            "stella_drift_targets",
            "Targets by their latest drift status (targets never checked are not counted)",
            labels=["status"],
        )
        for status in sorted({*DRIFT_STATUSES, *(s for s in counts if s in DRIFT_STATUSES)}):
            family.add_metric([status], int(counts.get(status, 0)))
        yield family


def _histogram(
    conn: Connection,
    name: str,
    documentation: str,
    table: str,
    labels: list[str],
    where: str,
    buckets: Sequence[float],
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for row in conn.execute(text(_histogram_sql(table, labels, where, buckets))).all():
        values = [str(v) for v in row[: len(labels)]]
        count, total = int(row[len(labels)]), float(row[len(labels) + 1])
        under = [int(v) for v in row[len(labels) + 2 :]]
        family.add_metric(
            values,
            [*((_le(b), c) for b, c in zip(buckets, under, strict=True)), ("+Inf", count)],
            total,
        )
    return family


def drift_counts_from(latest: Callable[[Connection], Iterable[Any]]) -> DriftCounts:
    """A drift reader from a function giving each target's latest finding (objects with a
    `status`, e.g. `DriftService.latest_in`)."""

    def counts(conn: Connection) -> Mapping[str, int]:
        found: dict[str, int] = {}
        for finding in latest(conn):
            status = str(getattr(finding.status, "value", finding.status))
            found[status] = found.get(status, 0) + 1
        return found

    return counts


@dataclass
class MetricsServer:
    """The `/metrics` endpoint, on its own thread; `close()` stops it and lets go of the
    database pool it reads."""

    host: str
    port: int
    db: Database
    _server: Any
    _thread: Any

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self.db.dispose()


def serve_metrics(
    listen: str, db: Database, *, drift: DriftCounts | None = None, process: bool = True
) -> MetricsServer:
    """Serve Prometheus metrics on `listen` (HOST:PORT, bound to that address only)."""
    from prometheus_client import ProcessCollector, start_http_server

    host, sep, port_text = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise DefinitionError(
            f"the metrics listen address {listen!r} is not HOST:PORT", field="metrics listen"
        )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StellaCollector(db, drift))
    if process:
        # This process's own resident memory and CPU (process_resident_memory_bytes, ...).
        ProcessCollector(registry=registry)
    try:
        server, thread = start_http_server(int(port_text), addr=host, registry=registry)
    except OSError as exc:
        raise StellaError(
            f"the metrics endpoint cannot listen on {host}:{port_text} ({exc.strerror})"
        ) from exc
    return MetricsServer(host, int(server.server_address[1]), db, server, thread)
