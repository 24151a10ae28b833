"""Drift checks: each target's sticker and what really runs, against what the database says.

For each target: its newest succeeded placement (what should run), its sticker read back and
checked against the orchestrator's keys, and an `inspect` task (its agent signs the report with
its own key; over SSH/WinRM the orchestrator looks itself and says so). Every check is a
finding (`drift.findings`); a change of a target's status is a `drift` evidence packet naming
the report it rests on by digest. Environments that opted in get drifted targets put back: the
expected release redeployed through the deploy path (`kind="remediation"`), whose deployment
packet the drift packet names.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

from sqlalchemy import Connection

from stella_core.clock import Clock, SystemClock
from stella_core.db.engine import Database
from stella_core.deploy.model import Placement, TaskType
from stella_core.deploy.service import (
    DeployService,
    Destination,
    StickerReading,
    project_name,
    task_id_for,
)
from stella_core.drift import store
from stella_core.drift.model import Difference, DriftStatus, TargetDrift, compare, summary
from stella_core.environments.service import EnvironmentService
from stella_core.errors import ConnectorError, StellaError
from stella_core.evidence.model import Input, Refs
from stella_core.evidence.packets import canonical_json
from stella_core.evidence.predicates import DRIFT_V1, drift_predicate
from stella_core.evidence.service import EvidenceService

log = logging.getLogger(__name__)

INSPECT_SECONDS = 60.0
STICKER_SECONDS = 60.0
MAX_PARALLEL_TARGETS = 8
REPORT_MEDIA_TYPE = "application/vnd.stella.inspection-report+json"
NO_STICKER = "there is no sticker on the target"


@dataclass(frozen=True)
class _Seen:
    """What one target's check found, before it is recorded."""

    drift: TargetDrift
    placement: Placement | None
    report: dict[str, Any] | None = None  # the report row to keep (by digest)
    sticker_digest: str | None = None
    serial: str | None = None
    destination: Destination | None = None


class DriftService:
    """Acts as the orchestrator (its login and its key): it alone records findings."""

    def __init__(
        self,
        db: Database,
        evidence: EvidenceService,
        deploy: DeployService,
        destinations: Callable[[str | None], list[Destination]],
        *,
        clock: Clock | None = None,
        deployer: str = "stella-orchestrator",
    ) -> None:
        self.db = db
        self.evidence = evidence
        self.deploy = deploy
        self.destinations = destinations
        self.clock = clock or SystemClock()
        self.deployer = deployer

    # reading ----------------------------------------------------------------------------
    @staticmethod
    def latest_in(conn: Connection, environment: str | None = None) -> list[TargetDrift]:
        """Each target's newest recorded finding (of `environment`), by target name; targets
        never checked are absent."""
        return [_finding(r) for r in store.latest_findings(conn, environment)]

    @staticmethod
    def report_in(conn: Connection, digest: str) -> dict[str, Any] | None:
        """A kept inspection report: who saw it, what it says, its signature and certificate."""
        row = store.report(conn, digest)
        if row is None:
            return None
        return {
            "digest": row.digest,
            "target": row.target,
            "observer_kind": row.observer_kind,
            "observer": row.observer,
            "agent_id": str(row.agent_id) if row.agent_id else None,
            "task_id": str(row.task_id),
            "report": row.report,
            "signature": row.signature,
            "certificate": row.certificate,
        }

    # checking ---------------------------------------------------------------------------
    def check(self, environment: str | None = None) -> list[TargetDrift]:
        """Check every target (of `environment`) now; record each finding, emit a `drift`
        packet where a status changed, and remediate where the environment opted in."""
        check_id = uuid.uuid4()
        dests = self.destinations(environment)
        with self.db.transaction() as conn:
            placements = {
                p.target_id: p for p in DeployService.current_placements_in(conn, environment)
            }
            targets = {t.id: t for t in EnvironmentService.targets_in(conn, environment)}
            remediating = EnvironmentService.remediate_drift_in(conn)
        envs = {d.id: targets[d.id].environment for d in dests if d.id in targets}

        def one(dest: Destination) -> _Seen:
            try:
                return self._check_one(dest, envs.get(dest.id, ""), placements.get(dest.id))
            except StellaError as exc:  # never let one target stop the others
                return self._unknown(dest, envs.get(dest.id, ""), placements.get(dest.id), exc)

        workers = max(1, min(MAX_PARALLEL_TARGETS, len(dests)))
        with ThreadPoolExecutor(workers, thread_name_prefix="drift") as pool:
            seen = list(pool.map(one, dests))
        remedied = self._remediate(check_id, seen, remediating)
        found = [self._record(check_id, s, remedied.get(s.drift.target_id)) for s in seen]
        return sorted(found, key=lambda d: d.target)

    def _unknown(
        self, dest: Destination, env: str, placement: Placement | None, why: StellaError | str
    ) -> _Seen:
        reason = why if isinstance(why, str) else why.message
        return _Seen(
            TargetDrift(
                target=dest.name,
                target_id=dest.id,
                environment=env,
                status=DriftStatus.UNKNOWN,
                differences=(),
                reason=reason[:2000],
                expected_release=placement.release_name if placement else None,
                checked_at=self.clock.now(),
                report_digest=None,
            ),
            placement,
            destination=dest,
        )

    def _check_one(self, dest: Destination, env: str, placement: Placement | None) -> _Seen:
        if placement is None:
            return self._unknown(
                dest, env, None, "never deployed: the database names no release for this target"
            )
        if dest.problem:
            return self._unknown(dest, env, placement, f"unreachable: {dest.problem}")
        try:
            reading = self.deploy.read_sticker(dest, seconds=STICKER_SECONDS)
        except ConnectorError as exc:
            return self._unknown(dest, env, placement, f"unreachable: {exc.message}")
        problem = _sticker_problem(reading, dest.name)
        if problem:
            return self._unknown(dest, env, placement, problem)
        assert reading.sticker is not None
        sticker_digests, tags = _sticker_components(reading.sticker)
        report, containers, serial, observer = self._inspect(dest, env)
        if isinstance(report, str):
            return self._unknown(dest, env, placement, report)
        running = [c for c in containers if str(c.get("state") or "running") == "running"]
        differences = compare(placement.digests, running, sticker_digests, tags)
        status = DriftStatus.DRIFTED if differences else DriftStatus.IN_SYNC
        return _Seen(
            TargetDrift(
                target=dest.name,
                target_id=dest.id,
                environment=env,
                status=status,
                differences=tuple(differences),
                reason=summary(differences) if differences else None,
                expected_release=placement.release_name,
                checked_at=self.clock.now(),
                report_digest=report["digest"],
                observer=observer,
            ),
            placement,
            report=report,
            sticker_digest=_sticker_digest(reading),
            serial=serial,
            destination=dest,
        )

    def _inspect(
        self, dest: Destination, env: str
    ) -> tuple[dict[str, Any] | str, list[dict[str, Any]], str | None, str]:
        """(the report row to keep, or why there is none; the containers it names; the
        certificate serial that signed it; who saw it)."""
        from stella_core.agents.reports import report_digest, verify_report_in

        key = f"inspect:{dest.id}:{uuid.uuid4()}"
        task_id = task_id_for(key)
        opened = self.clock.now()
        # The deploy service runs the task (signed, queued; the agent's, or here over
        # SSH/WinRM) exactly as it runs a deployment's.
        outcome = self.deploy._run(
            None,
            dest,
            TaskType.INSPECT,
            {"project": project_name(env, dest.name), "runtime": dest.runtime},
            key,
            threading.Event(),
            seconds=INSPECT_SECONDS,
        )
        closed = self.clock.now()
        if not outcome.ok:
            return f"unreachable: what runs could not be inspected: {outcome.error}", [], None, ""
        if dest.transport == "agent" and dest.agent_id is not None:
            try:
                with self.db.transaction() as conn:
                    verified = verify_report_in(
                        conn,
                        outcome.outputs,
                        tenant_id=_tenant(self.db),
                        agent_id=dest.agent_id,
                        task_id=task_id,
                        target=dest.name,
                        issued_at=opened,
                        expires_at=closed,
                    )
            except StellaError as exc:
                log.warning("drift: %s: inspection report refused: %s", dest.name, exc.message)
                return f"the agent's inspection report is refused: {exc.message}", [], None, ""
            observer = f"agent {verified.agent_name or dest.agent_id}"
            row = {
                "digest": verified.digest,
                "observer_kind": "agent",
                "observer": observer,
                "agent_id": dest.agent_id,
                "task_id": task_id,
                "report": verified.report,
                "signature": verified.signature,
                "certificate": verified.certificate,
            }
            return row, verified.containers, verified.serial, observer
        containers = outcome.outputs.get("containers")
        if not isinstance(containers, list) or not all(isinstance(c, dict) for c in containers):
            return "the target's inspection answer is malformed", [], None, ""
        # Over SSH/WinRM the orchestrator saw it itself: its report says so (the packet that
        # names it is signed with the orchestrator's key).
        seen: list[dict[str, Any]] = [
            {k: c[k] for k in ("component", "container", "digest", "state") if k in c}
            for c in containers
        ]
        report: dict[str, Any] = {
            "version": 1,
            "target": dest.name,
            "taskId": str(task_id),
            "observer": "orchestrator",
            "transport": dest.transport,
            "at": closed.isoformat(),
            "containers": seen,
        }
        row = {
            "digest": report_digest({"report": report}),
            "observer_kind": "orchestrator",
            "observer": "orchestrator",
            "agent_id": None,
            "task_id": task_id,
            "report": report,
            "signature": None,
            "certificate": None,
        }
        return row, seen, None, "orchestrator"

    # remediation ------------------------------------------------------------------------
    def _remediate(
        self, check_id: UUID, seen: Sequence[_Seen], remediating: Mapping[str, bool]
    ) -> dict[UUID, dict[str, Any]]:
        """Drifted targets of environments that opted in: their expected release deployed
        again (one deployment per environment and release). target id -> what it did."""
        groups: dict[tuple[str, str], list[_Seen]] = {}
        for s in seen:
            if (
                s.drift.status is DriftStatus.DRIFTED
                and remediating.get(s.drift.environment)
                and s.placement is not None
                and s.destination is not None
            ):
                groups.setdefault((s.drift.environment, s.placement.release_name), []).append(s)
        done: dict[UUID, dict[str, Any]] = {}
        for (env, release), items in groups.items():
            key = f"drift-remediation:{check_id}:{env}:{release}"
            try:
                with self.db.transaction() as conn:
                    request = self.deploy.request_in(
                        conn,
                        release,
                        env,
                        key,
                        run_id=None,
                        deployer=self.deployer,
                        kind="remediation",
                    )
                report = self.deploy.deploy(
                    request, [s.destination for s in items if s.destination is not None]
                )
            except StellaError as exc:
                log.warning("drift: remediating %s on %s failed: %s", release, env, exc.message)
                continue
            for s in items:
                done[s.drift.target_id] = {
                    "deploymentId": str(report.deployment_id),
                    "status": report.status,
                    "packetId": str(report.packet_id) if report.packet_id else None,
                }
        return done

    # recording --------------------------------------------------------------------------
    def _record(
        self, check_id: UUID, seen: _Seen, remediation: Mapping[str, Any] | None
    ) -> TargetDrift:
        drift = seen.drift
        with self.db.transaction() as conn:
            store.lock_target(conn, drift.target_id)
            before = store.latest_finding(conn, drift.target_id)
            previous = str(before.status) if before is not None else None
            report = seen.report
            if report is not None:
                store.insert_report(
                    conn,
                    digest=report["digest"],
                    target_id=drift.target_id,
                    target=drift.target,
                    observer_kind=report["observer_kind"],
                    observer=report["observer"],
                    agent_id=report["agent_id"],
                    task_id=report["task_id"],
                    report=report["report"],
                    signature=report["signature"],
                    certificate=report["certificate"],
                )
            packet_id = None
            changed = previous != drift.status.value
            # A target never deployed to has nothing to drift from: its finding is kept, but
            # there is no release to say anything about.
            if seen.placement is not None and (changed or remediation is not None):
                packet_id = self._emit(conn, check_id, seen, previous, remediation)
            row = store.insert_finding(
                conn,
                {
                    "check_id": check_id,
                    "target_id": drift.target_id,
                    "target": drift.target,
                    "environment": drift.environment,
                    "status": drift.status.value,
                    "differences": [d.to_json() for d in drift.differences],
                    "reason": drift.reason,
                    "expected_release": drift.expected_release,
                    "report_digest": report["digest"] if report else None,
                    "packet_id": packet_id,
                    "remediation_id": UUID(remediation["deploymentId"]) if remediation else None,
                },
            )
        return replace(
            drift,
            checked_at=row.checked_at,
            packet_id=packet_id,
            remediation_id=UUID(remediation["deploymentId"]) if remediation else None,
        )

    def _emit(
        self,
        conn: Connection,
        check_id: UUID,
        seen: _Seen,
        previous: str | None,
        remediation: Mapping[str, Any] | None,
    ) -> UUID:
        drift = seen.drift
        placement = seen.placement
        assert placement is not None
        report = seen.report
        predicate = drift_predicate(
            check_id=check_id,
            environment=drift.environment,
            target_id=drift.target_id,
            target_name=drift.target,
            checked_at=drift.checked_at,
            expected_release=placement.release_name,
            expected_components=placement.digests,
            status=drift.status.value,
            findings=[d.to_json() for d in drift.differences],
            reason=drift.reason,
            previous_status=previous,
            sticker_digest=seen.sticker_digest,
            report=(
                {
                    "digest": report["digest"],
                    "observerKind": report["observer_kind"],
                    "observer": report["observer"],
                    "certificateSerial": seen.serial,
                }
                if report
                else None
            ),
            remediation=remediation,
        )
        inputs = []
        if report is not None:
            # The report itself travels with the packet (an export carries it), so the
            # finding shows who saw what without the database.
            envelope = {"report": report["report"]}
            if report["signature"] is not None:
                envelope |= {"signature": report["signature"], "certificate": report["certificate"]}
            body = canonical_json(envelope)
            # Named in the predicate by this digest (the kept report's).
            assert "sha256:" + hashlib.sha256(body).hexdigest() == report["digest"]
            inputs.append(Input(REPORT_MEDIA_TYPE, body))
        packet = self.evidence.emit(
            conn,
            predicate_type=DRIFT_V1,
            subjects=sorted(placement.digests.items()),
            predicate=predicate,
            signer=self.evidence.orchestrator_signer(conn),
            inputs=inputs,
            refs=Refs(release=placement.release_name, environment=drift.environment),
        )
        return packet.id


def _sticker_problem(reading: StickerReading, target: str) -> str | None:
    """Why the sticker says nothing trustworthy (missing, corrupt, badly signed), or None."""
    if reading.signature_ok and reading.sticker is not None:
        named = (reading.sticker.get("deployment") or {}).get("targetName")
        if named not in (None, target):
            return f"sticker mismatch: the sticker on {target} was written for {named}"
        return None
    if reading.sticker is None and reading.reason == NO_STICKER:
        return f"sticker missing: {NO_STICKER}"
    if reading.sticker is None:
        return f"sticker corrupt: {reading.reason or 'it cannot be read'}"
    return f"sticker badly signed: {reading.reason or 'its signature does not hold'}"


def _sticker_components(sticker: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str | None]]:
    release = sticker.get("release") or {}
    digests: dict[str, str] = {}
    tags: dict[str, str | None] = {}
    for c in release.get("components") or [] if isinstance(release, Mapping) else []:
        if isinstance(c, Mapping) and isinstance(c.get("name"), str):
            digests[c["name"]] = str(c.get("digest"))
            tags[c["name"]] = str(c["tag"]) if c.get("tag") else None
    return digests, tags


def _sticker_digest(reading: StickerReading) -> str | None:
    from stella_core.deploy.sticker import sticker_bytes

    if reading.sticker is None:
        return None
    try:
        return "sha256:" + hashlib.sha256(sticker_bytes(reading.sticker)).hexdigest()
    except (TypeError, ValueError):
        return None


def _finding(r: Any) -> TargetDrift:
    return TargetDrift(
        target=r.target,
        target_id=UUID(str(r.target_id)),
        environment=r.environment,
        status=DriftStatus(r.status),
        differences=tuple(Difference.from_json(d) for d in (r.differences or [])),
        reason=r.reason,
        expected_release=r.expected_release,
        checked_at=r.checked_at,
        report_digest=r.report_digest,
        observer=r.observer,
        packet_id=UUID(str(r.packet_id)) if r.packet_id else None,
        remediation_id=UUID(str(r.remediation_id)) if r.remediation_id else None,
    )


def _tenant(db: Database) -> UUID:
    if db.tenant_id is None:
        raise StellaError("the orchestrator acts for no tenant")
    return db.tenant_id
