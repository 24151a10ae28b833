"""Runs, their steps, events and approvals: creation, reading, and the engine's state changes.

The engine's hot path (claim, complete, advance) is plain SQL text: each call is one round trip
and psycopg prepares statements it sees repeatedly. Every method that changes a run expects the
caller to hold the run's lock (`lock_run`), taken after at most one step row lock (see engine).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.rows import namedtuple_row
from sqlalchemy import text

from stella_core.workflows.model import (
    Approval,
    RunEvent,
    RunInfo,
    RunStatus,
    StepRunInfo,
    StepStatus,
    TemplateVersionInfo,
)
from stella_core.workflows.store.base import Rows, as_json


def channel(tenant_id: UUID) -> str:
    """The NOTIFY channel of a tenant. PostgreSQL lets any login LISTEN on any channel, so a
    notification only wakes workers and carries nothing (no run id): what is ready is read
    under row-level security."""
    return f"stella_workflow_{tenant_id.hex}"


@dataclass(frozen=True)
class RunRow:
    """A run as the engine sees it while holding its lock."""

    id: UUID
    tenant_id: UUID
    template_version_id: UUID
    status: str
    phase: str
    cancel_requested: bool
    # The run of an approved promotion: its approval steps are satisfied by these people.
    approved_by: tuple[str, ...] | None = None

    @property
    def terminal(self) -> bool:
        return RunStatus(self.status).terminal


@dataclass(frozen=True)
class ClaimedStep:
    run_id: UUID
    tenant_id: UUID
    node_id: str
    template_version_id: UUID
    previous_status: str
    previous_owner: str | None
    attempts: int
    lost_leases: int
    resume: bool
    rollback: bool
    idempotency_key: str
    inputs: dict[str, Any] | None
    started_at: datetime
    db_now: datetime
    # The lease's fencing token, and where the previous holder of an expired lease ran.
    generation: int = 0
    previous_host: str | None = None


@dataclass(frozen=True)
class Event:
    """A run-log entry to append; `seq`, `at` and `actor` are given by the database."""

    kind: str
    node_id: str | None = None
    details: dict[str, Any] | None = None


# update more than one row.
_CLAIM = """
WITH picked AS MATERIALIZED (
  SELECT c.run_id, c.node_id, c.status, c.lease_owner, c.lease_host
    FROM workflow.step_runs c
   WHERE c.status IN ('ready', 'running', 'waiting')
     AND ((c.status = 'ready' AND (c.not_before IS NULL OR c.not_before <= now()))
       -- An expired lease: at once where this worker can fence what is left of the attempt
       -- (same host), else once the grace has passed (see fencing.py).
       OR (c.status = 'running' AND c.lease_until < now()
           AND (c.lease_host = %(host)s
                OR c.lease_until < now() - make_interval(secs => %(grace)s)))
       OR (c.status = 'waiting' AND c.wake_at <= now()))
     AND (%(run)s::uuid IS NULL OR c.run_id = %(run)s::uuid)
   LIMIT 1
   FOR UPDATE OF c SKIP LOCKED
), claimed AS (
  UPDATE workflow.step_runs s SET
    status = 'running',
    -- A lost lease is not a failed attempt: only a claim of a ready step counts one.
    attempts = s.attempts + CASE WHEN s.status = 'ready' THEN 1 ELSE 0 END,
    lost_leases = s.lost_leases + CASE WHEN s.status = 'running' THEN 1 ELSE 0 END,
    lease_generation = s.lease_generation + 1,
    lease_host = %(host)s,
    resume = CASE WHEN s.status = 'waiting' THEN true WHEN s.status = 'ready' THEN false
                  ELSE s.resume END,
    started_at = CASE WHEN s.status = 'waiting' THEN s.started_at ELSE clock_timestamp() END,
    lease_owner = %(worker)s,
    lease_until = now() + make_interval(secs => %(lease)s),
    not_before = NULL
  FROM picked
  WHERE s.run_id = picked.run_id AND s.node_id = picked.node_id
  RETURNING s.run_id, s.tenant_id, s.node_id, picked.status AS previous_status,
    picked.lease_owner AS previous_owner, picked.lease_host AS previous_host, s.attempts,
    s.lost_leases, s.resume, s.rollback, s.idempotency_key, s.inputs, s.started_at,
    s.lease_generation
), run AS MATERIALIZED (
  SELECT r.id, r.template_version_id, r.status, r.phase, r.cancel_requested, r.approved_by
    FROM workflow.runs r WHERE r.id = (SELECT run_id FROM picked)
    FOR NO KEY UPDATE
)
SELECT claimed.*, run.template_version_id, run.status AS run_status, run.phase,
       run.cancel_requested, run.approved_by, now() AS db_now
  FROM claimed CROSS JOIN run
"""

_CLAIM_MORE = """
WITH picked AS MATERIALIZED (
  SELECT c.run_id, c.node_id FROM workflow.step_runs c
   WHERE c.run_id = %(run)s AND c.status = 'ready'
     AND (c.not_before IS NULL OR c.not_before <= now())
     AND c.step_type = ANY(%(types)s::text[])
   LIMIT %(limit)s
   FOR UPDATE OF c SKIP LOCKED
)
UPDATE workflow.step_runs s SET
  status = 'running', attempts = s.attempts + 1, resume = false,
  started_at = clock_timestamp(), lease_owner = %(worker)s,
  lease_until = now() + make_interval(secs => %(lease)s), not_before = NULL,
  lease_generation = s.lease_generation + 1, lease_host = %(host)s
FROM picked, workflow.runs r
WHERE s.run_id = picked.run_id AND s.node_id = picked.node_id AND r.id = s.run_id
RETURNING s.run_id, s.tenant_id, s.node_id, r.template_version_id, s.attempts, s.lost_leases,
  s.rollback, s.idempotency_key, s.inputs, s.started_at, now() AS db_now, s.lease_generation
"""

# (`ORDER BY seq DESC LIMIT 1` rather than max(): the planner then always walks the index
# backwards instead of reading every entry of a long run.)
# Completing steps (one, or a batch of instant ones) in one round trip: their rows, their
# dependants counted down (at zero: ready if a
# dependency was live, else skipped), the log entries (with gap-free `seq`: the caller holds the
# run lock), a NOTIFY when something became ready, and whether anything of the phase is still
# open. The statement sees the rows as they were before it, so the open check leaves out the
# finished step and what it skipped.
_FINISH_AND_ADVANCE = """
WITH upd AS (
  -- One UPDATE for the finished steps ('f') and their pending dependants ('d'): no row is both
  -- (a dependant of a finished step cannot have been claimed), and one statement means one
  -- evaluation of the row-level security policies.
  UPDATE workflow.step_runs s SET
    status = CASE WHEN x.kind = 'f' THEN x.status
                  WHEN s.deps_open - x.dec > 0 THEN s.status
                  WHEN s.deps_live + x.inc > 0 THEN 'ready' ELSE 'skipped' END,
    outputs = CASE WHEN x.kind = 'f' THEN COALESCE(x.outputs::jsonb, s.outputs)
                   ELSE s.outputs END,
    inputs = CASE WHEN x.kind = 'f' THEN COALESCE(x.inputs::jsonb, s.inputs) ELSE s.inputs END,
    error = CASE WHEN x.kind = 'f' THEN x.error ELSE s.error END,
    deps_open = s.deps_open - x.dec,
    deps_live = s.deps_live + x.inc,
    finished_at = CASE WHEN x.kind = 'f' OR (s.deps_open - x.dec = 0 AND s.deps_live + x.inc = 0)
                       THEN clock_timestamp() ELSE s.finished_at END,
    lease_owner = CASE WHEN x.kind = 'f' THEN NULL ELSE s.lease_owner END,
    lease_until = CASE WHEN x.kind = 'f' THEN NULL ELSE s.lease_until END,
    wake_at = CASE WHEN x.kind = 'f' THEN NULL ELSE s.wake_at END,
    resume = CASE WHEN x.kind = 'f' THEN false ELSE s.resume END
  FROM (
    SELECT 'f' AS kind, node_id, status, outputs, inputs, error, 0 AS dec, 0 AS inc
      FROM unnest(%(fnodes)s::text[], %(fstatus)s::text[], %(foutputs)s::text[],
                  %(finputs)s::text[], %(ferrors)s::text[])
           AS f(node_id, status, outputs, inputs, error)
    UNION ALL
    SELECT 'd', node_id, NULL, NULL, NULL, NULL, dec, inc
      FROM unnest(%(dnodes)s::text[], %(ddec)s::int[], %(dinc)s::int[]) AS d(node_id, dec, inc)
  ) x
  WHERE s.run_id = %(run)s AND s.node_id = ANY(%(fnodes)s::text[] || %(dnodes)s::text[])
    AND s.node_id = x.node_id AND (x.kind = 'f' OR s.status = 'pending')
  RETURNING x.kind, s.node_id, s.status
), changed AS (
  SELECT node_id, status FROM upd WHERE kind = 'd' AND status <> 'pending'
), entries AS (
  SELECT node_id, kind, details, ord
    FROM unnest(%(enodes)s::text[], %(ekinds)s::text[], %(edetails)s::text[])
         WITH ORDINALITY AS x(node_id, kind, details, ord)
  UNION ALL
  SELECT node_id, 'step.' || status,
         CASE WHEN status = 'skipped'
              THEN '{"reason": "only reachable through skipped steps"}' ELSE '{}' END,
         1000000 + row_number() OVER (ORDER BY node_id)
    FROM changed
), ev AS (
  INSERT INTO workflow.run_events (run_id, tenant_id, seq, node_id, kind, details, at, actor)
  SELECT %(run)s, %(tenant)s, base.seq + row_number() OVER (ORDER BY e.ord), e.node_id, e.kind,
         e.details::jsonb, clock_timestamp(), ''
    FROM (SELECT COALESCE((SELECT seq FROM workflow.run_events WHERE run_id = %(run)s
                            ORDER BY seq DESC LIMIT 1), 0) AS seq) base, entries e
  RETURNING 1
)
SELECT
  (SELECT COALESCE(json_agg(json_build_array(node_id, status)), '[]'::json) FROM changed)
    AS changed,
  EXISTS (SELECT 1 FROM workflow.step_runs o
           WHERE o.run_id = %(run)s AND o.rollback = %(rollback)s
             AND o.status IN ('pending', 'ready', 'running', 'waiting')
             AND o.node_id <> ALL(%(fnodes)s::text[])
             AND o.node_id NOT IN (SELECT node_id FROM changed WHERE status = 'skipped'))
    AS open,
  (SELECT count(*) FROM ev) AS events,
  (SELECT count(*) FROM upd) AS updated,
  (SELECT pg_notify(%(channel)s, %(payload)s)
    WHERE (SELECT count(*) FROM changed WHERE status = 'ready') >= %(notify_min)s) AS notified
"""

_LOCK_RUN = text("""
SELECT id, tenant_id, template_version_id, status, phase, cancel_requested, approved_by
  FROM workflow.runs WHERE id = :run FOR NO KEY UPDATE
""")

_EVENTS = text("""
INSERT INTO workflow.run_events (run_id, tenant_id, seq, node_id, kind, details, at, actor)
SELECT :run, :tenant,
       COALESCE((SELECT seq FROM workflow.run_events WHERE run_id = :run
                 ORDER BY seq DESC LIMIT 1), 0) + e.ord,
       e.node_id, e.kind, CAST(e.details AS jsonb), clock_timestamp(), ''
  FROM unnest(CAST(:nodes AS text[]), CAST(:kinds AS text[]), CAST(:details AS text[]))
       WITH ORDINALITY AS e(node_id, kind, details, ord)
""")

_FINISH_STEP = text("""
UPDATE workflow.step_runs SET
  status = :status, outputs = COALESCE(CAST(:outputs AS jsonb), outputs), error = :error,
  finished_at = clock_timestamp(), lease_owner = NULL, lease_until = NULL, wake_at = NULL,
  resume = false
WHERE run_id = :run AND node_id = :node
""")

_OWNED = text("""
SELECT status FROM workflow.step_runs
 WHERE run_id = :run AND node_id = :node AND status = 'running' AND lease_owner = :worker
   AND lease_generation = :generation
 FOR UPDATE
""")

_ADVANCE = text("""
UPDATE workflow.step_runs s SET
  deps_open = s.deps_open - d.dec,
  deps_live = s.deps_live + d.inc,
  status = CASE WHEN s.deps_open - d.dec > 0 THEN s.status
                WHEN s.deps_live + d.inc > 0 THEN 'ready' ELSE 'skipped' END,
  finished_at = CASE WHEN s.deps_open - d.dec = 0 AND s.deps_live + d.inc = 0
                     THEN clock_timestamp() ELSE s.finished_at END
FROM unnest(CAST(:nodes AS text[]), CAST(:dec AS int[]), CAST(:inc AS int[]))
     AS d(node_id, dec, inc)
WHERE s.run_id = :run AND s.node_id = ANY(CAST(:nodes AS text[])) AND s.node_id = d.node_id
  AND s.status = 'pending'
RETURNING s.node_id, s.status
""")

_ANY_OPEN = text("""
SELECT EXISTS (SELECT 1 FROM workflow.step_runs
                WHERE run_id = :run AND rollback = :rollback
                  AND status IN ('pending', 'ready', 'running', 'waiting'))
""")

_NEXT_DUE = text("""
SELECT EXTRACT(EPOCH FROM (LEAST(
         min(not_before) FILTER (WHERE status = 'ready'),
         min(wake_at) FILTER (WHERE status = 'waiting'),
         min(lease_until + CASE WHEN lease_host IS NOT DISTINCT FROM :host THEN interval '0'
                                ELSE make_interval(secs => :grace) END)
           FILTER (WHERE status = 'running')) - now()))::float8 AS due,
       bool_or(status = 'ready' AND not_before IS NULL) AS ready_now
  FROM workflow.step_runs
 WHERE status IN ('ready', 'running', 'waiting')
   AND (CAST(:run AS uuid) IS NULL OR run_id = CAST(:run AS uuid))
""")

_HEARTBEAT = text("""
UPDATE workflow.step_runs s SET lease_until = now() + make_interval(secs => :lease)
  FROM workflow.runs r
 WHERE s.run_id = :run AND s.node_id = :node AND s.lease_owner = :worker
   AND s.lease_generation = :generation AND s.status = 'running' AND r.id = s.run_id
RETURNING r.status, r.phase, r.cancel_requested
""")


class RunRows(Rows):
    # runs: creation and reading ---------------------------------------------------------
    def insert_run(
        self,
        tenant_id: UUID,
        version: TemplateVersionInfo,
        release_id: UUID | None,
        release: dict[str, Any] | None,
        inputs: dict[str, Any],
        *,
        promotion_id: UUID | None = None,
        requested_by: str | None = None,
    ) -> UUID:
        # A promotion's run gets its approvers and requester from the database, not from here.
        value = self.conn.execute(
            text(
                "INSERT INTO workflow.runs (tenant_id, template_version_id, template_name, "
                "template_version, release_id, release, inputs, promotion_id, requested_by) "
                "VALUES (:t, :v, :n, :vn, :rid, CAST(:rel AS jsonb), CAST(:inp AS jsonb), "
                ":promotion, :requested_by) RETURNING id"
            ),
            {
                "promotion": promotion_id,
                "requested_by": requested_by,
                "t": tenant_id,
                "v": version.id,
                "n": version.name,
                "vn": version.version,
                "rid": release_id,
                "rel": as_json(release),
                "inp": as_json(inputs),
            },
        ).scalar_one()
        return UUID(str(value))

    def insert_steps(
        self,
        run_id: UUID,
        tenant_id: UUID,
        steps: Sequence[tuple[str, str, bool, int, str, str]],
    ) -> None:
        """(node id, type, rollback, dependency count, status, idempotency key) per node."""
        if not steps:
            return
        self.conn.execute(
            text(
                "INSERT INTO workflow.step_runs (run_id, tenant_id, node_id, step_type, rollback, "
                "deps_total, deps_open, status, idempotency_key) "
                "SELECT :run, :t, n, ty, rb, d, d, st, k FROM unnest(CAST(:n AS text[]), "
                "CAST(:ty AS text[]), CAST(:rb AS boolean[]), CAST(:d AS int[]), "
                "CAST(:st AS text[]), CAST(:k AS text[])) AS x(n, ty, rb, d, st, k)"
            ),
            {
                "run": run_id,
                "t": tenant_id,
                "n": [s[0] for s in steps],
                "ty": [s[1] for s in steps],
                "rb": [s[2] for s in steps],
                "d": [s[3] for s in steps],
                "st": [s[4] for s in steps],
                "k": [s[5] for s in steps],
            },
        )

    _RUN_COLUMNS = (
        "id, template_name, template_version, template_version_id, release, inputs, status, "
        "phase, error, rollback_from, created_at, created_by, started_at, finished_at"
    )

    def get_run(self, run_id: UUID, *, with_steps: bool = True) -> RunInfo | None:
        row = self.conn.execute(
            text(f"SELECT {self._RUN_COLUMNS} FROM workflow.runs WHERE id = :id"), {"id": run_id}
        ).first()
        if row is None:
            return None
        steps = self.step_infos(run_id) if with_steps else []
        return self._run_info(row, steps, self._derived_waiting(run_id, row.status))

    def list_runs(self, limit: int | None = None) -> list[RunInfo]:
        sql = f"SELECT {self._RUN_COLUMNS} FROM workflow.runs ORDER BY created_at DESC, id"
        if limit:
            sql += f" LIMIT {int(limit)}"
        rows = list(self.conn.execute(text(sql)))
        waiting = self._waiting_runs([r.id for r in rows if r.status == RunStatus.RUNNING])
        return [self._run_info(r, [], r.id in waiting) for r in rows]

    def _derived_waiting(self, run_id: UUID, status: str) -> bool:
        return status == RunStatus.RUNNING and run_id in self._waiting_runs([run_id])

    def _waiting_runs(self, run_ids: list[UUID]) -> set[UUID]:
        """Running runs where only approvals or timers are outstanding: shown as `waiting`."""
        if not run_ids:
            return set()
        rows = self.conn.execute(
            text(
                "SELECT run_id FROM workflow.step_runs WHERE run_id = ANY(CAST(:ids AS uuid[])) "
                "AND status IN ('ready', 'running', 'waiting') GROUP BY run_id "
                "HAVING bool_and(status = 'waiting' "
                "OR (status = 'ready' AND not_before > now()))"
            ),
            {"ids": [str(i) for i in run_ids]},
        )
        return {UUID(str(r.run_id)) for r in rows}

    @staticmethod
    def _run_info(row: Any, steps: list[StepRunInfo], waiting: bool) -> RunInfo:
        return RunInfo(
            id=row.id,
            template=row.template_name,
            template_version=row.template_version,
            template_version_id=row.template_version_id,
            release=row.release,
            inputs=row.inputs,
            status=RunStatus.WAITING if waiting else row.status,
            phase=row.phase,
            error=row.error,
            rollback_from=row.rollback_from,
            created_at=row.created_at,
            created_by=row.created_by,
            started_at=row.started_at,
            finished_at=row.finished_at,
            steps=tuple(steps),
        )

    def promotion_of(self, run_id: UUID) -> UUID | None:
        value = self.conn.execute(
            text("SELECT promotion_id FROM workflow.runs WHERE id = :id"), {"id": run_id}
        ).scalar()
        return UUID(str(value)) if value else None

    def step_infos(self, run_id: UUID) -> list[StepRunInfo]:
        rows = self.conn.execute(
            text(
                "SELECT node_id, step_type, rollback, status, attempts, inputs, outputs, error, "
                "started_at, finished_at, lease_owner, not_before, wake_at, idempotency_key "
                "FROM workflow.step_runs WHERE run_id = :id "
                "ORDER BY rollback, started_at NULLS LAST, node_id"
            ),
            {"id": run_id},
        )
        return [
            StepRunInfo(
                id=r.node_id,
                type=r.step_type,
                rollback=r.rollback,
                status=r.status,
                attempts=r.attempts,
                inputs=r.inputs,
                outputs=r.outputs,
                error=r.error,
                started_at=r.started_at,
                finished_at=r.finished_at,
                lease_owner=r.lease_owner,
                not_before=r.not_before,
                wake_at=r.wake_at,
                idempotency_key=r.idempotency_key,
            )
            for r in rows
        ]

    def run_context(self, run_id: UUID) -> tuple[dict[str, Any], dict[str, Any] | None]:
        row = self.conn.execute(
            text("SELECT inputs, release FROM workflow.runs WHERE id = :id"), {"id": run_id}
        ).one()
        return dict(row.inputs), row.release

    def step_outputs(self, run_id: UUID) -> dict[str, dict[str, Any]]:
        rows = self.conn.execute(
            text(
                "SELECT node_id, outputs FROM workflow.step_runs "
                "WHERE run_id = :id AND outputs IS NOT NULL"
            ),
            {"id": run_id},
        )
        return {r.node_id: dict(r.outputs) for r in rows}

    def events(self, run_id: UUID, after_seq: int = 0) -> list[RunEvent]:
        rows = self.conn.execute(
            text(
                "SELECT seq, at, node_id, kind, details, actor FROM workflow.run_events "
                "WHERE run_id = :id AND seq > :after ORDER BY seq"
            ),
            {"id": run_id, "after": after_seq},
        )
        return [
            RunEvent(
                seq=r.seq,
                at=r.at,
                node_id=r.node_id,
                kind=r.kind,
                details=r.details,
                actor=r.actor,
            )
            for r in rows
        ]

    # the engine's state changes ---------------------------------------------------------
    def _driver(self) -> Any:
        """The psycopg connection under this transaction (for pipelining the hot path)."""
        return self.conn.connection.driver_connection

    def claim(
        self,
        tenant_id: UUID,
        worker: str,
        lease_seconds: float,
        run_id: UUID | None,
        *,
        host: str = "",
        grace_seconds: float = 0.0,
    ) -> tuple[ClaimedStep, RunRow] | None:
        """Select the tenant and claim one step with its run locked: one round trip (the
        transaction must not have set its tenant yet)."""
        raw = self._driver()
        with raw.pipeline():
            raw.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant_id),))
            cur = raw.cursor(row_factory=namedtuple_row)
            cur.execute(
                _CLAIM,
                {
                    "worker": worker,
                    "lease": lease_seconds,
                    "run": str(run_id) if run_id else None,
                    "host": host,
                    "grace": grace_seconds,
                },
            )
        row = cur.fetchone()
        if row is None:
            return None
        claimed = ClaimedStep(
            run_id=row.run_id,
            tenant_id=row.tenant_id,
            node_id=row.node_id,
            template_version_id=row.template_version_id,
            previous_status=row.previous_status,
            previous_owner=row.previous_owner,
            attempts=row.attempts,
            lost_leases=row.lost_leases,
            resume=row.resume,
            rollback=row.rollback,
            idempotency_key=row.idempotency_key,
            inputs=row.inputs,
            started_at=row.started_at,
            db_now=row.db_now,
            generation=row.lease_generation,
            previous_host=row.previous_host,
        )
        run = RunRow(
            id=row.run_id,
            tenant_id=row.tenant_id,
            template_version_id=row.template_version_id,
            status=row.run_status,
            phase=row.phase,
            cancel_requested=row.cancel_requested,
            approved_by=tuple(row.approved_by) if row.approved_by is not None else None,
        )
        return claimed, run

    def claim_more(
        self,
        run_id: UUID,
        worker: str,
        lease_seconds: float,
        step_types: Sequence[str],
        limit: int,
        host: str = "",
    ) -> list[ClaimedStep]:
        """More ready steps of a run whose lock we hold, of the given (instant) types."""
        if limit < 1 or not step_types:
            return []
        cur = self._driver().cursor(row_factory=namedtuple_row)
        cur.execute(
            _CLAIM_MORE,
            {
                "run": run_id,
                "worker": worker,
                "lease": lease_seconds,
                "types": list(step_types),
                "limit": limit,
                "host": host,
            },
        )
        return [
            ClaimedStep(
                run_id=row.run_id,
                tenant_id=row.tenant_id,
                node_id=row.node_id,
                template_version_id=row.template_version_id,
                previous_status=StepStatus.READY,
                previous_owner=None,
                attempts=row.attempts,
                lost_leases=row.lost_leases,
                resume=False,
                rollback=row.rollback,
                idempotency_key=row.idempotency_key,
                inputs=row.inputs,
                started_at=row.started_at,
                db_now=row.db_now,
                generation=row.lease_generation,
            )
            for row in cur.fetchall()
        ]

    def finish_and_advance(
        self,
        run: RunRow,
        finished: Sequence[
            tuple[str, str, dict[str, Any] | None, dict[str, Any] | None, str | None]
        ],
        *,
        decrements: dict[str, tuple[int, int]],
        events: Sequence[Event],
        notify_min: int = 1,
    ) -> tuple[list[tuple[str, str]], bool]:
        """Finish steps ((node, status, outputs, inputs, error) each), count their dependants
        down, append `events` and then one entry per dependant that became ready or skipped;
        NOTIFY when at least `notify_min` became ready. Returns (node, new status) of those
        dependants and whether anything of the run's phase is still open."""
        nodes = sorted(decrements)
        cur = self._driver().cursor(row_factory=namedtuple_row)
        cur.execute(
            _FINISH_AND_ADVANCE,
            {
                "run": run.id,
                "tenant": run.tenant_id,
                "fnodes": [f[0] for f in finished],
                "fstatus": [f[1] for f in finished],
                "foutputs": [as_json(f[2]) for f in finished],
                "finputs": [as_json(f[3]) for f in finished],
                "ferrors": [f[4] for f in finished],
                "dnodes": nodes,
                "ddec": [decrements[n][0] for n in nodes],
                "dinc": [decrements[n][1] for n in nodes],
                "enodes": [e.node_id for e in events],
                "ekinds": [e.kind for e in events],
                "edetails": [as_json(e.details or {}) for e in events],
                "rollback": run.phase == "rollback",
                "channel": channel(run.tenant_id),
                "payload": "",
                "notify_min": notify_min,
            },
        )
        row = cur.fetchone()
        assert row is not None
        return [(n, st) for n, st in row.changed], bool(row.open)

    def lock_run(self, run_id: UUID) -> RunRow | None:
        row = self.conn.execute(_LOCK_RUN, {"run": run_id}).first()
        if row is None:
            return None
        return RunRow(
            id=row.id,
            tenant_id=row.tenant_id,
            template_version_id=row.template_version_id,
            status=row.status,
            phase=row.phase,
            cancel_requested=row.cancel_requested,
            approved_by=tuple(row.approved_by) if row.approved_by is not None else None,
        )

    def lock_step(self, run_id: UUID, node_id: str, *, lock: bool = True) -> Any | None:
        return self.conn.execute(
            text(
                "SELECT node_id, step_type, status, attempts, lost_leases, inputs, rollback, "
                "deps_open, deps_total FROM workflow.step_runs "
                "WHERE run_id = :r AND node_id = :n" + (" FOR UPDATE" if lock else "")
            ),
            {"r": run_id, "n": node_id},
        ).first()

    def owns(self, run_id: UUID, node_id: str, worker: str, generation: int) -> bool:
        """Lock the step if this worker still holds its lease under the generation it claimed
        (else the result is stale)."""
        row = self.conn.execute(
            _OWNED, {"run": run_id, "node": node_id, "worker": worker, "generation": generation}
        )
        return row.first() is not None

    def heartbeat(
        self, run_id: UUID, node_id: str, worker: str, lease_seconds: float, generation: int
    ) -> tuple[str, str, bool] | None:
        row = self.conn.execute(
            _HEARTBEAT,
            {
                "run": run_id,
                "node": node_id,
                "worker": worker,
                "lease": lease_seconds,
                "generation": generation,
            },
        ).first()
        return None if row is None else (row.status, row.phase, row.cancel_requested)

    def next_due(
        self, run_id: UUID | None, host: str = "", grace_seconds: float = 0.0
    ) -> tuple[float | None, bool]:
        row = self.conn.execute(
            _NEXT_DUE,
            {"run": str(run_id) if run_id else None, "host": host, "grace": grace_seconds},
        ).one()
        return row.due, bool(row.ready_now)

    def append_events(self, run_id: UUID, tenant_id: UUID, events: Iterable[Event]) -> None:
        batch = list(events)
        if not batch:
            return
        self.conn.execute(
            _EVENTS,
            {
                "run": run_id,
                "tenant": tenant_id,
                "nodes": [e.node_id for e in batch],
                "kinds": [e.kind for e in batch],
                "details": [as_json(e.details or {}) for e in batch],
            },
        )

    def notify(self, tenant_id: UUID, run_id: UUID) -> None:
        """Wake the tenant's workers about `run_id` (which the notification does not name)."""
        self.conn.execute(text("SELECT pg_notify(:c, '')"), {"c": channel(tenant_id)})

    def set_run_started(self, run_id: UUID) -> None:
        self.conn.execute(
            text(
                "UPDATE workflow.runs SET status = 'running', started_at = clock_timestamp() "
                "WHERE id = :r AND status = 'pending'"
            ),
            {"r": run_id},
        )

    def set_step_inputs(self, run_id: UUID, node_id: str, inputs: dict[str, Any]) -> None:
        self.conn.execute(
            text(
                "UPDATE workflow.step_runs SET inputs = CAST(:i AS jsonb), error = NULL "
                "WHERE run_id = :r AND node_id = :n"
            ),
            {"r": run_id, "n": node_id, "i": as_json(inputs)},
        )

    def finish_step(
        self,
        run_id: UUID,
        node_id: str,
        status: str,
        outputs: dict[str, Any] | None,
        error: str | None,
    ) -> None:
        self.conn.execute(
            _FINISH_STEP,
            {
                "run": run_id,
                "node": node_id,
                "status": status,
                "outputs": as_json(outputs),
                "error": error,
            },
        )

    def retry_later(
        self,
        run_id: UUID,
        node_id: str,
        delay_ms: int,
        outputs: dict[str, Any] | None,
        error: str,
    ) -> None:
        self.conn.execute(
            text(
                "UPDATE workflow.step_runs SET status = 'ready', lease_owner = NULL, "
                "lease_until = NULL, resume = false, error = :e, "
                "outputs = COALESCE(CAST(:o AS jsonb), outputs), "
                "not_before = clock_timestamp() + make_interval(secs => :d / 1000.0) "
                "WHERE run_id = :r AND node_id = :n"
            ),
            {"r": run_id, "n": node_id, "d": delay_ms, "o": as_json(outputs), "e": error},
        )

    def release_step(self, run_id: UUID, node_id: str, resume: bool) -> None:
        """Give a claimed step back (clean shutdown): it is claimable again at once."""
        self.conn.execute(
            text(
                "UPDATE workflow.step_runs SET status = CASE WHEN :resume THEN 'waiting' "
                "ELSE 'ready' END, wake_at = CASE WHEN :resume THEN now() ELSE wake_at END, "
                "lease_owner = NULL, lease_until = NULL, lost_leases = lost_leases + 1, "
                # Handed back, not failed: claiming it as ready counts the attempt again.
                "attempts = attempts - CASE WHEN :resume THEN 0 ELSE 1 END "
                "WHERE run_id = :r AND node_id = :n"
            ),
            {"r": run_id, "n": node_id, "resume": resume},
        )

    def set_waiting(
        self,
        run_id: UUID,
        node_id: str,
        wait_seconds: float | None,
        timeout_seconds: int | None,
        outputs: dict[str, Any] | None,
    ) -> datetime | None:
        """Park a step; it wakes at the earlier of its timer and its timeout (if any)."""
        value: datetime | None = self.conn.execute(
            text(
                "UPDATE workflow.step_runs SET status = 'waiting', lease_owner = NULL, "
                "lease_until = NULL, outputs = COALESCE(CAST(:o AS jsonb), outputs), "
                "wake_at = LEAST(clock_timestamp() + make_interval(secs => :w), "
                "started_at + make_interval(secs => :t)) "
                "WHERE run_id = :r AND node_id = :n RETURNING wake_at"
            ),
            {
                "r": run_id,
                "n": node_id,
                "w": wait_seconds,
                "t": timeout_seconds,
                "o": as_json(outputs),
            },
        ).scalar()
        return value

    def advance(
        self, run_id: UUID, decrements: dict[str, tuple[int, int]]
    ) -> list[tuple[str, str]]:
        """Count finished dependencies down; returns (node, new status) for every pending step
        touched, so the caller sees which became ready or skipped."""
        if not decrements:
            return []
        nodes = sorted(decrements)
        rows = self.conn.execute(
            _ADVANCE,
            {
                "run": run_id,
                "nodes": nodes,
                "dec": [decrements[n][0] for n in nodes],
                "inc": [decrements[n][1] for n in nodes],
            },
        )
        return [(r.node_id, r.status) for r in rows]

    def any_open(self, run_id: UUID, rollback: bool) -> bool:
        return bool(
            self.conn.execute(_ANY_OPEN, {"run": run_id, "rollback": rollback}).scalar_one()
        )

    def finish_run(self, run_id: UUID, status: str, error: str | None) -> None:
        self.conn.execute(
            text(
                "UPDATE workflow.runs SET status = :s, error = COALESCE(:e, error), "
                "finished_at = clock_timestamp(), "
                "started_at = COALESCE(started_at, clock_timestamp()), "
                "cancel_requested = cancel_requested OR :s = 'cancelled' WHERE id = :r"
            ),
            {"r": run_id, "s": status, "e": error},
        )

    def start_rollback(self, run_id: UUID, node_id: str, error: str) -> None:
        self.conn.execute(
            text(
                "UPDATE workflow.runs SET status = 'rolling_back', phase = 'rollback', "
                "rollback_from = :n, error = :e WHERE id = :r"
            ),
            {"r": run_id, "n": node_id, "e": error},
        )

    def close_open_steps(
        self, run_id: UUID, status: str, *, rollback: bool | None, statuses: Sequence[str]
    ) -> list[str]:
        """Close steps that are not running; rows another transaction is claiming right now are
        skipped (it sees the run's new state once it holds the run lock and closes them)."""
        rows = self.conn.execute(
            text(
                "WITH c AS MATERIALIZED (SELECT node_id FROM workflow.step_runs "
                "WHERE run_id = :r AND status = ANY(CAST(:from AS text[])) "
                "AND (CAST(:rb AS boolean) IS NULL OR rollback = CAST(:rb AS boolean)) "
                "FOR UPDATE SKIP LOCKED) "
                "UPDATE workflow.step_runs s SET status = :st, finished_at = clock_timestamp(), "
                "wake_at = NULL, not_before = NULL FROM c "
                "WHERE s.run_id = :r AND s.node_id = c.node_id RETURNING s.node_id"
            ),
            {"r": run_id, "st": status, "from": list(statuses), "rb": rollback},
        )
        return sorted(r.node_id for r in rows)

    def make_ready(self, run_id: UUID, node_ids: Sequence[str]) -> None:
        self.conn.execute(
            text(
                "UPDATE workflow.step_runs SET status = 'ready', not_before = NULL "
                "WHERE run_id = :r AND node_id = ANY(CAST(:n AS text[]))"
            ),
            {"r": run_id, "n": list(node_ids)},
        )

    def reset_steps(self, run_id: UUID, updates: Sequence[tuple[str, str, int, int]]) -> None:
        """Set (node, status, open dependencies, live dependencies) and clear the attempt."""
        if not updates:
            return
        self.conn.execute(
            text(
                "UPDATE workflow.step_runs s SET status = u.status, deps_open = u.open, "
                "deps_live = u.live, attempts = 0, lost_leases = 0, error = NULL, "
                "finished_at = CASE WHEN u.status = 'skipped' THEN clock_timestamp() END, "
                "started_at = NULL, not_before = NULL, wake_at = NULL, lease_owner = NULL, "
                "lease_until = NULL, resume = false "
                "FROM unnest(CAST(:n AS text[]), CAST(:s AS text[]), CAST(:o AS int[]), "
                "CAST(:l AS int[])) AS u(node_id, status, open, live) "
                "WHERE s.run_id = :r AND s.node_id = u.node_id"
            ),
            {
                "r": run_id,
                "n": [u[0] for u in updates],
                "s": [u[1] for u in updates],
                "o": [u[2] for u in updates],
                "l": [u[3] for u in updates],
            },
        )

    def reopen_run(self, run_id: UUID) -> None:
        self.conn.execute(
            text(
                "UPDATE workflow.runs SET status = 'running', error = NULL, finished_at = NULL "
                "WHERE id = :r"
            ),
            {"r": run_id},
        )

    # approvals --------------------------------------------------------------------------
    def insert_approval(
        self,
        tenant_id: UUID,
        run_id: UUID,
        node_id: str,
        attempt: int,
        decision: str,
        comment: str,
    ) -> None:
        self.conn.execute(
            text(
                "INSERT INTO workflow.approvals (tenant_id, run_id, node_id, attempt, person, "
                "product_role, decision, comment) VALUES (:t, :r, :n, :a, '', '', :d, :c)"
            ),
            {"t": tenant_id, "r": run_id, "n": node_id, "a": attempt, "d": decision, "c": comment},
        )

    def approvals(self, run_id: UUID, node_id: str, attempt: int) -> list[Approval]:
        rows = self.conn.execute(
            text(
                "SELECT person, product_role, decision, comment, at FROM workflow.approvals "
                "WHERE run_id = :r AND node_id = :n AND attempt = :a ORDER BY at"
            ),
            {"r": run_id, "n": node_id, "a": attempt},
        )
        return [
            Approval(
                person=r.person,
                product_role=r.product_role,
                decision=r.decision,
                comment=r.comment,
                at=r.at,
            )
            for r in rows
        ]

    def session_person(self) -> tuple[str, str | None]:
        row = self.conn.execute(
            text("SELECT tenancy.actor_name() AS who, tenancy.current_product_role() AS role")
        ).one()
        return row.who, row.role
