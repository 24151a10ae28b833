"""Deploying a release to an environment's targets, and what it leaves behind.

One deployment: a compose lockfile pinned by digest (one for every target of the deployment,
named by its digest in the evidence), a signed `deploy` task per target, run by the target's
agent or, for SSH and WinRM targets, by this worker over the connection; every answer is
checked here again (each running container's digest against the release), then one
`deployment` evidence packet records what each target answered, and a version sticker signed by
the orchestrator goes to every target that succeeded, naming that packet.

Nothing runs twice: task ids and idempotency keys derive from the step attempt's idempotency key,
so a worker that takes a step over finds the tasks already written and their answers.

A target counts once it is healthy: each component's `x-stella-health` check (deploy.health) is
polled on the target as `health-check` tasks. `roll_out` adds the strategies (deploy.strategy):
rolling batches and canary rungs, each healthy before the next, a failed one stopping the
rollout and (`rollback_on_failure`) putting every target reached back on what it ran before
(its previous succeeded placement, by digest); a canary parks between rungs until a promotion
approval lets it go on; blue-green deploys to the idle group and, in a later `retire` step,
records the live group and stops the old one.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import Connection

from stella_core.clock import Clock, SystemClock
from stella_core.db.engine import Database
from stella_core.deploy import store
from stella_core.deploy.health import (
    Check,
    ContainerHealth,
    checks_of,
    container_health_of,
    health_of,
)
from stella_core.deploy.hosts import Host, HostError
from stella_core.deploy.model import (
    Deployment,
    Placement,
    TaskOutcome,
    TaskSpec,
    TaskStatus,
    TaskType,
)
from stella_core.deploy.strategy import Rollout, idle_group, plan_batches, plan_rungs
from stella_core.deploy.tasks import TaskQueue, TaskState, task_state
from stella_core.errors import (
    AuthorizationError,
    ConnectorError,
    DefinitionError,
    NotFoundError,
    StellaError,
)
from stella_core.evidence.model import Input, Refs
from stella_core.evidence.predicates import (
    DEPLOYMENT_V1,
    LOCKFILE_MEDIA_TYPE,
    TargetOutcome,
    deployment_predicate,
)
from stella_core.evidence.service import EvidenceService
from stella_core.releases.service import ReleaseService
from stella_core.tenancy.keys import ORCHESTRATOR
from stella_core.tenancy.service import TenancyService
from stella_core.workflows.service import WorkflowService

log = logging.getLogger(__name__)

# Task ids derive from the step attempt's idempotency key under this namespace.
TASK_NAMESPACE = UUID("0b6c5f1e-8f5e-4d38-9a51-4c3c6b8d2a77")
# Targets deployed at once by one deployment (each a thread waiting on its task's answer).
MAX_PARALLEL_TARGETS = 32
ROLLED_WITH_THE_ROLLOUT = "rolled back with the rollout"
HEALTH_TASK_SLACK = 30.0  # a poll's task may wait this long for its agent beyond the request
# Health answers that may change by asking again (anything else stops the polling).
RETRY_HEALTH = frozenset({"health-check-failed", "timeout", "expired", "unreachable", None})
DEFAULT_TASK_SECONDS = 900.0
STICKER_SECONDS = 120.0


@dataclass(frozen=True)
class Image:
    component: str
    reference: str  # where targets pull from: "host:port/repository"
    tag: str | None
    digest: str

    @property
    def pinned(self) -> str:
        return f"{self.reference}@{self.digest}"


@dataclass(frozen=True)
class Destination:
    """A target as a deployment needs it (bootstrap resolves targets, agents and secrets)."""

    id: UUID
    name: str
    transport: str  # agent | ssh | winrm
    runtime: str
    directory: str
    agent_id: UUID | None = None
    # Agentless: how to reach it (the connection is opened for the task and closed after).
    open_host: Callable[[], Host] | None = None
    # Why nothing can be deployed there (an unknown or revoked agent): the target fails with it.
    problem: str | None = None


@dataclass(frozen=True)
class DeployRequest:
    run_id: UUID | None  # None: not a workflow step's (a remediation)
    key: str  # the step attempt's idempotency key
    release_id: UUID
    release_name: str
    release_created_at: datetime
    images: tuple[Image, ...]
    services: Mapping[str, Mapping[str, Any] | None]
    environment: str
    environment_id: UUID
    deployer: str
    promotion_id: UUID | None = None
    timeout: float | None = None
    node_id: str | None = None  # the workflow step deploying (its tasks show in the run)
    strategy: str = "all-at-once"
    kind: str = "deploy"  # deploy | rollback | remediation


@dataclass(frozen=True)
class TargetReport:
    target: str
    target_id: UUID
    transport: str
    status: str  # succeeded | failed
    digests: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    sticker: str | None = None  # where it was written
    back_to: RolledBackTo | None = None  # what it runs again after a rollback

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "target": self.target,
            "status": self.status,
            "digests": dict(self.digests),
        }
        if self.error:
            found["error"] = self.error
        if self.back_to is not None:
            found["rolled_back_to"] = self.back_to.release_name
        return found


@dataclass(frozen=True)
class DeploymentReport:
    deployment_id: UUID
    status: str  # succeeded | failed
    targets: tuple[TargetReport, ...]
    lockfile_digest: str
    packet_id: UUID | None
    detail: Mapping[str, Any] = field(default_factory=dict)  # e.g. the blue-green group

    @property
    def failures(self) -> list[TargetReport]:
        return [t for t in self.targets if t.status != "succeeded"]

    def outputs(self) -> dict[str, Any]:
        return {
            "targets": [t.to_json() for t in self.targets],
            "deployment_id": str(self.deployment_id),
            "lockfile_digest": self.lockfile_digest,
            "evidence_packet": str(self.packet_id) if self.packet_id else "",
            "status": self.status,
            **{k: v for k, v in self.detail.items() if k in ("group", "previous_group")},
        }


@dataclass(frozen=True)
class RolledBackTo:
    release_id: UUID
    release_name: str
    digests: Mapping[str, str]
    lockfile_digest: str


@dataclass(frozen=True)
class Parked:
    """A canary waiting, between rungs, for an approval to go on (`rung` rungs are done)."""

    rung: int
    deployment_id: UUID


@dataclass(frozen=True)
class GroupSwitch:
    """A blue-green retire: `live` is now the live group, `stopped` the one brought down."""

    deployment_id: UUID
    live: str
    stopped: str | None
    targets: tuple[TargetReport, ...]

    @property
    def failures(self) -> list[TargetReport]:
        return [t for t in self.targets if t.status != "succeeded"]

    def outputs(self) -> dict[str, Any]:
        return {
            "targets": [t.to_json() for t in self.targets],
            "deployment_id": str(self.deployment_id),
            "live_group": self.live,
            "stopped_group": self.stopped or "",
            "status": "failed" if self.failures else "succeeded",
        }


@dataclass(frozen=True)
class _Begun:
    deployment_id: UUID
    started: datetime
    lockfile: str
    lock_bytes: bytes
    lock_digest: str
    expected: Mapping[str, str]
    checks: tuple[Check, ...]


def _overall(reports: Sequence[TargetReport]) -> str:
    if all(r.status == "succeeded" for r in reports):
        return "succeeded"
    if any(r.status == "rolled-back" for r in reports):
        return "rolled-back"
    return "failed"


def _join(first: str | None, then: str) -> str:
    return f"{first}; {then}" if first else then


def project_name(environment: str, target: str) -> str:
    """The compose project a deployment to `environment` runs as on `target` (one host may
    carry several targets, so the target is part of it)."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", f"{environment}-{target}".lower()).strip("-_") or "env"
    return f"stella-{slug}"[:63]


def task_id_for(key: str) -> UUID:
    return uuid.uuid5(TASK_NAMESPACE, key)


class DeployService:
    """Acts as the orchestrator (its database login and its key)."""

    def __init__(
        self,
        db: Database,
        evidence: EvidenceService,
        tasks: TaskQueue,
        *,
        clock: Clock | None = None,
        promotion_environment: Callable[[Connection, UUID], tuple[UUID, str, str, str] | None]
        | None = None,
        environment_id: Callable[[Connection, str], UUID | None] | None = None,
        rung_approvers: Callable[[Connection, UUID, int], list[str]] | None = None,
        promotion_kind: Callable[[Connection, UUID], str | None] | None = None,
    ) -> None:
        self.db = db
        self.evidence = evidence
        self.tasks = tasks
        self.clock = clock or SystemClock()
        # (promotion id, environment, release, status) of the promotion a run carries out.
        self.promotion_environment = promotion_environment
        self.environment_id = environment_id
        # Who approved going on past a canary rung of a run's promotion (verified signatures,
        # eligible people, never the requester): the promotions module knows.
        self.rung_approvers = rung_approvers
        # "rollback" for a promotion that rolls back: its deployment is recorded as one.
        self.promotion_kind = promotion_kind

    # what to deploy ---------------------------------------------------------------------
    def request_for_run(
        self,
        run_id: UUID,
        environment: str | None,
        key: str,
        *,
        timeout: float | None = None,
        node_id: str | None = None,
    ) -> DeployRequest:
        """What a run's `deploy` step deploys: the release of the promotion the run carries out,
        to that promotion's environment (`environment`, when given, must be that one)."""
        with self.db.transaction() as conn:
            run = WorkflowService.run_in(conn, run_id)
            if run is None:
                raise NotFoundError(f"no run {run_id}")
            promotion = (
                self.promotion_environment(conn, run_id) if self.promotion_environment else None
            )
            # Only what a promotion decided is deployed, and only where it was decided: a
            # workflow someone wrote (or a run started by hand) cannot reach an environment
            # its approvals never covered.
            if promotion is None:
                raise AuthorizationError(
                    "a deploy step deploys only what a promotion decided, and this run carries "
                    "out no promotion; request a promotion of the release to the environment"
                )
            promotion_id, promoted_to, promoted_release, status = promotion
            if status != "deploying":
                raise AuthorizationError(
                    f"the promotion this run carries out is {status}, not deploying"
                )
            if environment and environment != promoted_to:
                raise AuthorizationError(
                    f"this run carries out the promotion of {promoted_release} to {promoted_to}; "
                    f"its deploy step cannot deploy to {environment}",
                    field="environment",
                )
            release_name = (run.release or {}).get("name")
            if release_name != promoted_release:
                raise AuthorizationError(
                    f"this run's release {release_name!r} is not the promoted {promoted_release!r}"
                )
            kind = self.promotion_kind(conn, promotion_id) if self.promotion_kind else None
            return self.request_in(
                conn,
                str(release_name),
                promoted_to,
                key,
                run_id=run_id,
                deployer=run.created_by,
                promotion_id=promotion_id,
                timeout=timeout,
                node_id=node_id,
                kind="rollback" if kind == "rollback" else "deploy",
            )

    def request_in(
        self,
        conn: Connection,
        release_name: str,
        env_name: str,
        key: str,
        *,
        run_id: UUID | None,
        deployer: str,
        promotion_id: UUID | None = None,
        timeout: float | None = None,
        node_id: str | None = None,
        strategy: str = "all-at-once",
        kind: str = "deploy",
    ) -> DeployRequest:
        """What deploying `release_name` to `env_name` takes (images pinned by digest, where
        targets pull them from). The caller decides whether it may: a promotion's run
        (`request_for_run`), or the orchestrator putting back what a deployment placed
        (remediation)."""
        found = ReleaseService.releases_in(conn, release_name)
        if not found:
            raise NotFoundError(f"no release named {release_name!r}")
        release = found[0]
        registries = ReleaseService.registry_hosts_in(conn)
        services = ReleaseService.component_services_in(conn)
        env_id = self.environment_id(conn, env_name) if self.environment_id else None
        if env_id is None:
            raise NotFoundError(f"no environment named {env_name!r}", field="environment")
        images = []
        for c in release.components:
            host = registries.get(c.registry or "")
            if host is None:
                raise DefinitionError(
                    f"component {c.name!r} comes from registry {c.registry!r}, which targets "
                    "cannot pull from (an OCI layout on this machine, or a registry since removed)"
                )
            images.append(Image(c.name, f"{host}/{c.repository}", c.tag, c.digest))
            # A fragment may say why its image cannot run here (the demo's, seeded where no
            # static busybox was): said now, in that sentence, not as a runtime's error later.
            # A malformed check stops it here.
            health_of(c.name, services.get(c.name))
            container_health_of(c.name, services.get(c.name))
            cannot_run = (services.get(c.name) or {}).get("x-stella-cannot-run")
            if isinstance(cannot_run, str) and cannot_run.strip():
                raise DefinitionError(f"component {c.name!r} cannot run: {cannot_run[:300]}")
        return DeployRequest(
            run_id=run_id,
            key=key,
            release_id=release.id,
            release_name=release.name,
            release_created_at=release.created_at,
            images=tuple(images),
            services={c.name: services.get(c.name) for c in release.components},
            environment=env_name,
            environment_id=env_id,
            deployer=deployer,
            promotion_id=promotion_id,
            timeout=timeout,
            node_id=node_id,
            strategy=strategy,
            kind=kind,
        )

    # deploying --------------------------------------------------------------------------
    def deploy(
        self,
        request: DeployRequest,
        destinations: Sequence[Destination],
        *,
        cancel: threading.Event | None = None,
        on_progress: Callable[[str], None] | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> DeploymentReport:
        """Every destination at once; each counts once it runs the release and is healthy."""
        if not destinations:
            raise DefinitionError(
                f"environment {request.environment!r} has no targets to deploy to; add one first",
                remedy=("target-add", request.environment),
            )
        cancel = cancel or threading.Event()
        say = on_progress or (lambda line: None)
        begun = self._begin(request)
        ended = self._ended(begun.deployment_id)
        if ended is not None:
            return ended
        reports = self._batch(request, destinations, begun, cancel, say)
        return self._finish(request, destinations, begun, reports, cancel, detail=detail)

    def roll_out(
        self,
        request: DeployRequest,
        destinations: Sequence[Destination],
        rollout: Rollout,
        *,
        cancel: threading.Event | None = None,
        on_progress: Callable[[str], None] | None = None,
    ) -> DeploymentReport | Parked | GroupSwitch:
        """Deploy with the step's strategy. Called again on a parked step's resume: every task
        of the stages done answers from the queue (nothing runs twice), so the rollout picks
        up where it stopped."""
        cancel = cancel or threading.Event()
        say = on_progress or (lambda line: None)
        if not destinations:
            raise DefinitionError(
                f"environment {request.environment!r} has no targets to deploy to; add one first",
                remedy=("target-add", request.environment),
            )
        if rollout.strategy == "all-at-once":
            return self.deploy(request, destinations, cancel=cancel, on_progress=say)
        if rollout.strategy == "blue-green":
            return self._blue_green(request, destinations, rollout, cancel, say)
        ordered = sorted(destinations, key=lambda d: d.name)
        if rollout.strategy == "rolling":
            stages = plan_batches(ordered, rollout.batch_size, rollout.max_unavailable)
            word = "batch"
        else:
            stages = plan_rungs(ordered, rollout.canary_percentages)
            word = "rung"
        begun = self._begin(request)
        ended = self._ended(begun.deployment_id)
        if ended is not None:
            return ended
        reports: list[TargetReport] = []
        failed = False
        for i, stage in enumerate(stages):
            first_key = f"{begun.deployment_id}:{stage[0].id}:deploy"
            started_before = self._written(first_key)
            if i > 0 and rollout.canary_approval and not started_before:
                approvers = self._rung_approvers(request, i)
                if not approvers:
                    say(f"rung {i} is healthy; waiting for an approval to go on")
                    return Parked(rung=i, deployment_id=begun.deployment_id)
                say(f"rung {i} approved by {', '.join(approvers)}")
            elif i > 0 and rollout.pause_seconds and not started_before:
                say(f"pausing {rollout.pause_seconds} s before {word} {i + 1}")
                cancel.wait(rollout.pause_seconds)
            if cancel.is_set():
                break  # the targets not reached yet are left as they are
            names = ", ".join(d.name for d in stage)
            say(f"{word} {i + 1} of {len(stages)}: {names}")
            done = self._batch(request, stage, begun, cancel, say)
            reports.extend(done)
            if any(r.status != "succeeded" for r in done):
                failed = True
                say(f"{word} {i + 1} failed: the rollout stops here")
                break
        if failed and rollout.rollback_on_failure:
            reports = self._roll_back(request, destinations, begun, reports, cancel, say)
        reached = {r.target_id for r in reports}
        unreached = [d for d in destinations if d.id not in reached]
        # A rollout cut short by cancelling did not succeed, whatever the batches it finished.
        cut_short = bool(unreached) and not failed
        return self._finish(
            request,
            destinations,
            begun,
            reports,
            cancel,
            status="cancelled" if cut_short else None,
        )

    def _rung_approvers(self, request: DeployRequest, rung: int) -> list[str]:
        if self.rung_approvers is None or request.run_id is None:
            raise DefinitionError(
                "a canary with approvals between rungs needs a promotion's run to approve in"
            )
        with self.db.transaction() as conn:
            return self.rung_approvers(conn, request.run_id, rung)

    def _blue_green(
        self,
        request: DeployRequest,
        destinations: Sequence[Destination],
        rollout: Rollout,
        cancel: threading.Event,
        say: Callable[[str], None],
    ) -> DeploymentReport | GroupSwitch:
        from stella_core.environments.service import EnvironmentService

        assert rollout.groups is not None
        with self.db.transaction() as conn:
            group_of = {
                t.id: t.group for t in EnvironmentService.targets_in(conn, request.environment)
            }
            live = store.live_group(conn, request.environment)
        if rollout.phase == "retire":
            return self._retire(request, destinations, rollout.groups, group_of, cancel, say)
        idle = idle_group(rollout.groups, live)
        chosen = [d for d in destinations if group_of.get(d.id) == idle]
        if not chosen:
            raise DefinitionError(
                f"no target of {request.environment} is in group {idle!r}, the idle one of "
                f"{' and '.join(rollout.groups)}; set the group of its targets",
                field="groups",
            )
        say(f"deploying to the idle group {idle} (live: {live or 'none yet'})")
        return self.deploy(
            request,
            chosen,
            cancel=cancel,
            on_progress=say,
            detail={"group": idle, "previous_group": live or ""},
        )

    def _retire(
        self,
        request: DeployRequest,
        destinations: Sequence[Destination],
        groups: tuple[str, str],
        group_of: Mapping[UUID, str | None],
        cancel: threading.Event,
        say: Callable[[str], None],
    ) -> GroupSwitch:
        """After the workflow's switch: the group this run deployed is live (recorded by the
        orchestrator only), and the other group's projects are brought down."""
        if request.run_id is None:
            raise DefinitionError("a blue-green retire belongs to a promotion's run")
        with self.db.transaction() as conn:
            deployed = next(
                (
                    r
                    for r in store.run_deployments(conn, request.run_id)
                    if r.strategy == "blue-green"
                    and r.status == "succeeded"
                    and (r.detail or {}).get("group") in groups
                ),
                None,
            )
        if deployed is None:
            raise DefinitionError(
                "a blue-green retire needs a blue-green deploy of the same run that succeeded "
                "before it (deploy, then the switch, then retire)",
                field="phase",
            )
        live = str(deployed.detail["group"])
        old = groups[1] if live == groups[0] else groups[0]
        with self.db.transaction() as conn:
            store.insert_group_switch(
                conn,
                environment=request.environment,
                live_group=live,
                previous_group=old,
                deployment_id=deployed.id,
                run_id=request.run_id,
            )
        say(f"{live} is live; stopping {old}")

        def stop(dest: Destination) -> TargetReport:
            if dest.problem:
                return TargetReport(
                    dest.name, dest.id, dest.transport, "failed", error=dest.problem
                )
            outcome = self._run(
                request,
                dest,
                TaskType.DEPLOY,
                {
                    "project": project_name(request.environment, dest.name),
                    "directory": dest.directory,
                    "runtime": dest.runtime,
                    "action": "down",
                },
                f"{deployed.id}:{dest.id}:retire",
                cancel,
            )
            status = "succeeded" if outcome.ok else "failed"
            say(f"{dest.name}: stopped" if outcome.ok else f"{dest.name}: {outcome.error}")
            return TargetReport(dest.name, dest.id, dest.transport, status, error=outcome.error)

        old_targets = [d for d in destinations if group_of.get(d.id) == old]
        workers = max(1, min(MAX_PARALLEL_TARGETS, len(old_targets)))
        with ThreadPoolExecutor(workers, thread_name_prefix="retire") as pool:
            reports = tuple(pool.map(stop, old_targets))
        return GroupSwitch(UUID(str(deployed.id)), live, old, reports)

    # the phases of one deployment ---------------------------------------------------------
    def _begin(self, request: DeployRequest) -> _Begun:
        """The deployment's lockfile and row. A step resumed or taken over finds both: the
        lockfile its tasks carry (never rendered anew, its digest is in the row and the
        evidence), and the row's start."""
        from stella_core.deploy.lockfile import LockedComponent, render_lockfile

        deployment_id = uuid.uuid5(TASK_NAMESPACE, f"deployment:{request.key}")
        with self.db.transaction() as conn:
            row = store.deployment_row(conn, deployment_id)
            written = store.deployment_lockfile(conn, f"{deployment_id}:%:deploy")
        started = row.started_at if row is not None else self.clock.now()
        lockfile = written or render_lockfile(
            release_id=request.release_id,
            release_name=request.release_name,
            release_created_at=request.release_created_at,
            environment_id=request.environment_id,
            environment_name=request.environment,
            deployment_id=deployment_id,
            started_at=started,
            components=[
                LockedComponent(
                    name=i.component,
                    image=i.reference,
                    digest=i.digest,
                    tag=i.tag,
                    service=request.services.get(i.component),
                )
                for i in request.images
            ],
        )
        lock_bytes = lockfile.encode()
        lock_digest = "sha256:" + hashlib.sha256(lock_bytes).hexdigest()
        if row is None:
            with self.db.transaction() as conn:
                store.insert_deployment(
                    conn,
                    id=deployment_id,
                    kind=request.kind,
                    environment=request.environment,
                    environment_id=request.environment_id,
                    release_id=request.release_id,
                    release_name=request.release_name,
                    strategy=request.strategy,
                    run_id=request.run_id,
                    promotion_id=request.promotion_id,
                    lockfile_digest=lock_digest,
                )
        return _Begun(
            deployment_id=deployment_id,
            started=started,
            lockfile=lockfile,
            lock_bytes=lock_bytes,
            lock_digest=lock_digest,
            expected={i.component: i.digest for i in request.images},
            checks=tuple(checks_of(request.services)),
        )

    def _ended(self, deployment_id: UUID) -> DeploymentReport | None:
        """A deployment that ended already (its step taken over after its end was written):
        its report, never a second packet."""
        with self.db.transaction() as conn:
            row = store.deployment_row(conn, deployment_id)
        if row is None or row.status == "running":
            return None
        targets = tuple(
            TargetReport(
                str(t.get("target")),
                UUID(int=0),
                "",
                str(t.get("status")),
                digests=dict(t.get("digests") or {}),
                error=t.get("error"),
            )
            for t in (row.detail or {}).get("targets", [])
        )
        return DeploymentReport(
            deployment_id,
            row.status,
            targets,
            row.lockfile_digest,
            UUID(str(row.packet_id)) if row.packet_id else None,
            detail={k: v for k, v in (row.detail or {}).items() if k != "targets"},
        )

    def _batch(
        self,
        request: DeployRequest,
        destinations: Sequence[Destination],
        begun: _Begun,
        cancel: threading.Event,
        say: Callable[[str], None],
    ) -> list[TargetReport]:
        payload = {
            "lockfile": begun.lockfile,
            "images": [{"component": i.component, "image": i.pinned} for i in request.images],
        }

        def one(dest: Destination) -> TargetReport:
            say(f"{dest.name}: deploying over {dest.transport}")
            report = self._deploy_one(
                request, dest, begun.deployment_id, payload, begun.expected, cancel
            )
            if report.status == "succeeded" and begun.checks:
                problem, asked = self._health(request, dest, begun, cancel, say)
                if problem:
                    report = replace(report, status="failed", error=f"unhealthy: {problem}")
                if asked:
                    # The verdict beside the deploy task's own log, where the run shows it.
                    self._progress(
                        begun.deployment_id,
                        dest,
                        {"phase": "health", "healthy": not problem, "line": problem or "healthy"},
                    )
            say(f"{dest.name}: {report.status}" + (f" ({report.error})" if report.error else ""))
            return report

        workers = max(1, min(MAX_PARALLEL_TARGETS, len(destinations)))
        with ThreadPoolExecutor(workers, thread_name_prefix="deploy") as pool:
            return list(pool.map(one, destinations))

    def _health(
        self,
        request: DeployRequest,
        dest: Destination,
        begun: _Begun,
        cancel: threading.Event,
        say: Callable[[str], None],
    ) -> tuple[str | None, bool]:
        """None once every component's check answers as expected on `dest`, else why not; and
        whether any poll was asked now (not replayed). Each poll is a `health-check` task run
        on the target; polls are counted (not timed) and their keys numbered, so a resumed
        step replays the same answers from the queue."""
        asked = False
        for check in begun.checks:
            payload: dict[str, Any]
            if isinstance(check, ContainerHealth):
                payload = {
                    "project": project_name(request.environment, dest.name),
                    "runtime": dest.runtime,
                    "component": check.component,
                    "timeout": check.request_seconds,
                }
                which = f"{check.component}:container"
            else:
                payload = {
                    "url": check.url_for(dest.name),
                    "expect_status": check.expect_status,
                    "timeout": check.request_seconds,
                }
                which = check.component
            last = "no answer"
            healthy = False
            for n in range(check.polls):
                if cancel.is_set():
                    return "cancelled", asked
                outcome, fresh = self._run_task(
                    request,
                    dest,
                    TaskType.HEALTH_CHECK,
                    payload,
                    f"{begun.deployment_id}:{dest.id}:health:{which}:{n}",
                    cancel,
                    seconds=check.request_seconds + HEALTH_TASK_SLACK,
                )
                asked = asked or fresh
                if outcome.ok:
                    healthy = True
                    break
                last = outcome.error or "the check failed without a reason"
                if outcome.error_type not in RETRY_HEALTH:
                    break  # a bad URL or no curl: asking again will not help
                if fresh and n + 1 < check.polls:
                    cancel.wait(check.interval)
            if not healthy:
                say(f"{dest.name}: {check.component} is unhealthy ({last})")
                return f"{check.component}: {last}", asked
            say(f"{dest.name}: {check.component} is healthy")
        return None, asked

    def _progress(self, deployment_id: UUID, dest: Destination, data: dict[str, Any]) -> None:
        """A progress line on the target's deploy task (the run monitor lists its events)."""
        try:
            self.tasks.record_event(
                task_id_for(f"{deployment_id}:{dest.id}:deploy"), "progress", data
            )
        except Exception:  # a progress line is never worth failing a deployment for
            log.warning("progress of %s not recorded", dest.name, exc_info=True)

    def _roll_back(
        self,
        request: DeployRequest,
        destinations: Sequence[Destination],
        begun: _Begun,
        reports: Sequence[TargetReport],
        cancel: threading.Event,
        say: Callable[[str], None],
    ) -> list[TargetReport]:
        """Every target the rollout reached goes back to what it ran before (its newest
        succeeded placement, written before this deployment's), by digest."""
        from stella_core.deploy.lockfile import LockedComponent, render_lockfile

        def one(report: TargetReport) -> TargetReport:
            dest = next(d for d in destinations if d.id == report.target_id)
            with self.db.transaction() as conn:
                before = self.placements_in(conn, target_id=dest.id, status="succeeded", limit=1)
                if not before:
                    return replace(
                        report,
                        status="failed",
                        error=_join(report.error, "nothing ran there before to go back to"),
                    )
                previous = before[0]
                old = self.request_in(
                    conn,
                    previous.release_name,
                    request.environment,
                    f"{request.key}:rollback",
                    run_id=request.run_id,
                    deployer=request.deployer,
                    promotion_id=request.promotion_id,
                    node_id=request.node_id,
                    timeout=request.timeout,
                    strategy=request.strategy,
                    kind="rollback",
                )
            say(f"{dest.name}: rolling back to {previous.release_name}")
            lockfile = render_lockfile(
                release_id=old.release_id,
                release_name=old.release_name,
                release_created_at=old.release_created_at,
                environment_id=old.environment_id,
                environment_name=old.environment,
                deployment_id=begun.deployment_id,
                started_at=begun.started,
                components=[
                    LockedComponent(
                        name=i.component,
                        image=i.reference,
                        digest=i.digest,
                        tag=i.tag,
                        service=old.services.get(i.component),
                    )
                    for i in old.images
                ],
            )
            back = self._deploy_one(
                old,
                dest,
                begun.deployment_id,
                {
                    "lockfile": lockfile,
                    "images": [{"component": i.component, "image": i.pinned} for i in old.images],
                },
                {i.component: i.digest for i in old.images},
                cancel,
                step="rollback",
            )
            if back.status != "succeeded":
                say(f"{dest.name}: rolling back failed ({back.error})")
                return replace(
                    report,
                    status="failed",
                    error=_join(
                        report.error, f"rolling back to {old.release_name} failed: {back.error}"
                    ),
                )
            say(f"{dest.name}: rolled back to {old.release_name}")
            self._progress(
                begun.deployment_id,
                dest,
                {"phase": "rollback", "line": f"rolled back to {old.release_name}"},
            )
            return replace(
                report,
                status="rolled-back",
                error=report.error or ROLLED_WITH_THE_ROLLOUT,
                back_to=RolledBackTo(
                    old.release_id,
                    old.release_name,
                    dict(back.digests),
                    "sha256:" + hashlib.sha256(lockfile.encode()).hexdigest(),
                ),
            )

        workers = max(1, min(MAX_PARALLEL_TARGETS, len(reports)))
        with ThreadPoolExecutor(workers, thread_name_prefix="rollback") as pool:
            return list(pool.map(one, reports))

    def _finish(
        self,
        request: DeployRequest,
        destinations: Sequence[Destination],
        begun: _Begun,
        reports: Sequence[TargetReport],
        cancel: threading.Event,
        *,
        detail: Mapping[str, Any] | None = None,
        status: str | None = None,
    ) -> DeploymentReport:
        """One evidence packet for the whole deployment, then the stickers (they name it), then
        the placements and the deployment's end (`status`: how it ended, when not from what
        the targets answered)."""
        deployment_id = begun.deployment_id
        forced = status
        status = forced or _overall(reports)
        finished = self.clock.now()
        with self.db.transaction() as conn:
            predicate = deployment_predicate(
                deployment_id=deployment_id,
                release_name=request.release_name,
                release_components=begun.expected,
                environment=request.environment,
                status=status.replace("-", "_"),
                targets=[
                    TargetOutcome(
                        id=str(r.target_id),
                        name=r.target,
                        status=r.status.replace("-", "_"),
                        transport=r.transport,
                        observed=r.digests or None,
                        error=r.error,
                    )
                    for r in reports
                ],
                started_at=begun.started,
                finished_at=finished,
                actor=request.deployer,
                lockfile_digest=begun.lock_digest,
                strategy=request.strategy,
                promotion_id=request.promotion_id,
                run_id=request.run_id,
            )
            packet = self.evidence.emit(
                conn,
                predicate_type=DEPLOYMENT_V1,
                subjects=sorted(begun.expected.items()),
                predicate=predicate,
                signer=self.evidence.orchestrator_signer(conn),
                inputs=[Input(LOCKFILE_MEDIA_TYPE, begun.lock_bytes)],
                refs=Refs(
                    release=request.release_name,
                    environment=request.environment,
                    promotion_id=request.promotion_id,
                    run_id=request.run_id,
                ),
            )
        # Stickers name the packet, so they follow it; a target whose sticker cannot be
        # written fails (its containers run, but nothing on it says what they are). A target
        # rolled back keeps the sticker it had: it runs what that sticker says again.
        by_id = {d.id: d for d in destinations}

        def sticker(r: TargetReport) -> TargetReport:
            if r.status != "succeeded":
                return r
            return self._sticker(
                request,
                by_id[r.target_id],
                deployment_id,
                begun.started,
                begun.lock_digest,
                packet.id,
                r,
                cancel,
            )

        # As many at once as the deploy tasks (one at a time, 500 targets took minutes).
        workers = max(1, min(MAX_PARALLEL_TARGETS, len(reports)))
        with ThreadPoolExecutor(workers, thread_name_prefix="sticker") as pool:
            final = list(pool.map(sticker, reports))
        status = forced or _overall(final)
        extra = dict(detail or {})
        self._record(request, deployment_id, status, final, begun.lock_digest, packet.id, extra)
        return DeploymentReport(
            deployment_id, status, tuple(final), begun.lock_digest, packet.id, detail=extra
        )

    def _record(
        self,
        request: DeployRequest,
        deployment_id: UUID,
        status: str,
        reports: Sequence[TargetReport],
        lock_digest: str,
        packet_id: UUID | None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """What each target runs now (its placement) and how the deployment ended. A target
        rolled back has two: this release's, rolled back, then the one it went back to."""
        with self.db.transaction() as conn:
            for r in reports:
                store.insert_placement(
                    conn,
                    deployment_id=deployment_id,
                    target_id=r.target_id,
                    target=r.target,
                    environment=request.environment,
                    release_id=request.release_id,
                    release_name=request.release_name,
                    digests=dict(r.digests),
                    lockfile_digest=lock_digest,
                    status=r.status,
                    error=(r.error or None) and r.error[:2000],
                )
                if r.back_to is not None:
                    store.insert_placement(
                        conn,
                        deployment_id=deployment_id,
                        target_id=r.target_id,
                        target=r.target,
                        environment=request.environment,
                        release_id=r.back_to.release_id,
                        release_name=r.back_to.release_name,
                        digests=dict(r.back_to.digests),
                        lockfile_digest=r.back_to.lockfile_digest,
                        status="succeeded",
                        error=None,
                    )
            store.finish_deployment(
                conn,
                deployment_id,
                status,
                packet_id,
                {**dict(detail or {}), "targets": [r.to_json() for r in reports]},
            )

    def _deploy_one(
        self,
        request: DeployRequest,
        dest: Destination,
        deployment_id: UUID,
        payload: Mapping[str, Any],
        expected: Mapping[str, str],
        cancel: threading.Event,
        *,
        step: str = "deploy",
    ) -> TargetReport:
        def failed(error: str) -> TargetReport:
            return TargetReport(dest.name, dest.id, dest.transport, "failed", error=error)

        if dest.problem:
            return failed(dest.problem)
        outcome = self._run(
            request,
            dest,
            TaskType.DEPLOY,
            {
                **payload,
                "project": project_name(request.environment, dest.name),
                "directory": dest.directory,
                "runtime": dest.runtime,
            },
            f"{deployment_id}:{dest.id}:{step}",
            cancel,
        )
        if not outcome.ok:
            return failed(outcome.error or "the target reported a failure without a reason")
        observed = outcome.outputs.get("digests")
        if not isinstance(observed, Mapping):
            return failed("the target's answer names no running digests")
        seen = {str(k): str(v) for k, v in observed.items()}
        # The target checked this already; what it answered is checked again here.
        wrong = sorted(c for c in expected if seen.get(c) != expected[c])
        if wrong:
            details = ", ".join(f"{c} runs {seen.get(c) or 'nothing'}" for c in wrong)
            return TargetReport(
                dest.name,
                dest.id,
                dest.transport,
                "failed",
                digests=seen,
                error=f"what runs is not the release: {details}",
            )
        return TargetReport(dest.name, dest.id, dest.transport, "succeeded", digests=seen)

    def _sticker(
        self,
        request: DeployRequest,
        dest: Destination,
        deployment_id: UUID,
        started: datetime,
        lock_digest: str,
        packet_id: UUID,
        report: TargetReport,
        cancel: threading.Event,
    ) -> TargetReport:
        from stella_core.deploy.sticker import (
            HistoryEntry,
            StickerComponent,
            build_sticker,
            sign_sticker,
        )

        with self.db.transaction() as conn:
            before = self.placements_in(conn, target_id=dest.id, status="succeeded", limit=20)
        # The releases this target ran before, newest first, once each (a redeploy of the
        # same release is not history).
        history: list[HistoryEntry] = []
        for p in before:
            if p.release_id == request.release_id or any(
                h.release_id == p.release_id for h in history
            ):
                continue
            history.append(
                HistoryEntry(p.release_id, p.release_name, p.deployment_id, p.digests, p.placed_at)
            )
        body = build_sticker(
            release_id=request.release_id,
            release_name=request.release_name,
            release_created_at=request.release_created_at,
            components=[StickerComponent(i.component, i.digest, i.tag) for i in request.images],
            deployment_id=deployment_id,
            promotion_id=request.promotion_id,
            environment_id=request.environment_id,
            environment_name=request.environment,
            target_id=dest.id,
            target_name=dest.name,
            started_at=started,
            completed_at=self.clock.now(),
            deployed_by=request.deployer,
            evidence_packet_id=packet_id,
            compose_lock_sha256=lock_digest.removeprefix("sha256:"),
            generated_at=self.clock.now(),
            strategy=request.strategy,
            history=history,
        )
        with self.db.transaction() as conn:
            sticker = sign_sticker(body, self.evidence.orchestrator_signer(conn))
        outcome = self._run(
            request,
            dest,
            TaskType.WRITE_STICKER,
            {"directory": dest.directory, "sticker": sticker},
            f"{deployment_id}:{dest.id}:write-sticker",
            cancel,
            seconds=STICKER_SECONDS,
        )
        if not outcome.ok:
            return replace(
                report,
                status="failed",
                error=f"deployed, but the version sticker could not be written: {outcome.error}",
            )
        return replace(report, sticker=str(outcome.outputs.get("path") or ""))

    def _run(
        self,
        request: DeployRequest | None,
        dest: Destination,
        task_type: TaskType,
        payload: dict[str, Any],
        key: str,
        cancel: threading.Event,
        *,
        seconds: float | None = None,
    ) -> TaskOutcome:
        """One task on one target: written (signed) to the queue, then run by its agent or,
        agentless, here. A task written before (a worker took the step over) is not run again:
        its answer is the answer."""
        return self._run_task(request, dest, task_type, payload, key, cancel, seconds=seconds)[0]

    def _written(self, key: str) -> bool:
        """Whether the task of `key` was written (by this step before it parked, or by a
        worker that died)."""
        with self.db.transaction() as conn:
            return store.task_row(conn, task_id_for(key)) is not None

    def _run_task(
        self,
        request: DeployRequest | None,
        dest: Destination,
        task_type: TaskType,
        payload: dict[str, Any],
        key: str,
        cancel: threading.Event,
        *,
        seconds: float | None = None,
    ) -> tuple[TaskOutcome, bool]:
        """`_run`, and whether the answer is new (False: it came from the queue)."""
        from stella_core.deploy.taskwire import seal_task

        budget = seconds or (request.timeout if request else None) or DEFAULT_TASK_SECONDS
        now = self.clock.now()
        spec = TaskSpec(
            id=task_id_for(key),
            type=task_type,
            target=dest.name,
            target_id=dest.id,
            agent_id=dest.agent_id,
            idempotency_key=key,
            payload=payload,
            issued_at=now,
            expires_at=now + timedelta(seconds=budget),
        )
        with self.db.transaction() as conn:
            envelope = seal_task(spec, self.evidence.orchestrator_signer(conn))
            task_id = self.tasks.submit(
                conn,
                spec,
                envelope,
                run_id=request.run_id if request else None,
                node_id=request.node_id if request else None,
            )
        state = self.tasks.get(task_id)
        if state.status.finished and state.outcome is not None:
            return state.outcome, False
        if dest.transport == "agent":
            answer = self.tasks.wait(task_id, timeout=budget, cancel=cancel)
            if answer is None:
                return TaskOutcome(
                    ok=False,
                    error=f"no answer from the agent of {dest.name} within {budget:.0f} s "
                    "(is it running and connected?)",
                    error_type="expired",
                    retryable=True,
                ), True
            return answer, True
        # Agentless and not finished: never run, or its worker died mid-way (then it runs
        # again: the same lockfile brought up again changes nothing that already matches).
        return self._run_here(
            task_id, task_type, payload, dest, rerun=state.status is TaskStatus.RUNNING
        ), True

    def _run_here(
        self,
        task_id: UUID,
        task_type: TaskType,
        payload: dict[str, Any],
        dest: Destination,
        *,
        rerun: bool = False,
    ) -> TaskOutcome:
        from stella_core.deploy.runner import TaskFailedError, run_task

        if dest.open_host is None:
            raise DefinitionError(f"target {dest.name!r} has no way to be reached")
        if not rerun:
            self.tasks.mark_started(task_id)
        started = self.clock.now()

        def log(line: str) -> None:
            self.tasks.record_event(task_id, "log", {"line": line})

        try:
            host = dest.open_host()
            try:
                outputs = run_task(task_type, payload, host, log=log)
            finally:
                host.close()
            outcome = TaskOutcome(ok=True, outputs=outputs, started_at=started)
        except TaskFailedError as exc:
            outcome = TaskOutcome(
                ok=False, error=exc.message, error_type=exc.error_type, started_at=started
            )
        except HostError as exc:
            outcome = TaskOutcome(
                ok=False,
                error=exc.message,
                error_type="unreachable",
                retryable=exc.retryable,
                started_at=started,
            )
        except (ConnectorError, StellaError) as exc:
            outcome = TaskOutcome(ok=False, error=exc.message, started_at=started)
        outcome = replace(outcome, finished_at=self.clock.now())
        self.tasks.finish(task_id, outcome)
        return outcome

    # what the database says ------------------------------------------------------------
    @staticmethod
    def current_placements_in(conn: Connection, environment: str | None = None) -> list[Placement]:
        """What should run on each target (of `environment`): its newest placement that
        succeeded. Targets never deployed to have none."""
        return [_placement(r) for r in store.current_placement_rows(conn, environment)]

    @staticmethod
    def placements_in(
        conn: Connection,
        *,
        target_id: UUID | None = None,
        environment: str | None = None,
        status: str | None = None,
        limit: int = 1000,
    ) -> list[Placement]:
        """Placements, newest first (a target's history)."""
        rows = store.placement_rows(
            conn, target_id=target_id, environment=environment, status=status, limit=limit
        )
        return [_placement(r) for r in rows]

    @staticmethod
    def live_group_in(conn: Connection, environment: str) -> str | None:
        """The blue-green group live in `environment` (None: never switched)."""
        return store.live_group(conn, environment)

    @staticmethod
    def deployments_in(
        conn: Connection, environment: str | None = None, limit: int = 100
    ) -> list[Deployment]:
        return [_deployment(r) for r in store.deployment_rows(conn, environment, limit)]

    @staticmethod
    def deployment_in(conn: Connection, deployment_id: UUID) -> Deployment | None:
        row = store.deployment_row(conn, deployment_id)
        return _deployment(row) if row is not None else None

    @staticmethod
    def run_tasks_in(conn: Connection, run_id: UUID) -> list[tuple[str | None, TaskState]]:
        """The tasks a run's steps wrote, oldest first, with the step that wrote each."""
        return [(r.node_id, task_state(r)) for r in store.run_tasks(conn, run_id)]

    @staticmethod
    def task_events_in(
        conn: Connection, task_ids: Sequence[UUID], after: int = 0
    ) -> list[dict[str, Any]]:
        """Progress and log lines of `task_ids` after event `after` (`seq` orders them)."""
        return store.events_after(conn, task_ids, after)

    # health on demand ---------------------------------------------------------------------
    def target_health(
        self, dest: Destination, environment: str, *, seconds: float = 60.0
    ) -> TargetHealth:
        """How the target's components are now: each container's state (read on the target)
        and, where the component has one, its HTTP check asked once from the target."""
        from stella_core.releases.service import ReleaseService

        if dest.problem:
            raise ConnectorError(f"target {dest.name}: {dest.problem}")
        with self.db.transaction() as conn:
            placed = self.placements_in(conn, target_id=dest.id, status="succeeded", limit=1)
            services = ReleaseService.component_services_in(conn)
        key = f"target-health:{dest.id}:{uuid.uuid4()}"
        cancel = threading.Event()
        outcome = self._run(
            None,
            dest,
            TaskType.INSPECT,
            {"project": project_name(environment, dest.name), "runtime": dest.runtime},
            f"{key}:inspect",
            cancel,
            seconds=seconds,
        )
        if not outcome.ok:
            raise ConnectorError(
                f"target {dest.name}: its containers could not be read: {outcome.error}",
                retryable=outcome.retryable,
            )
        listed = outcome.outputs.get("containers")
        containers = (
            [c for c in listed if isinstance(c, Mapping)] if isinstance(listed, list) else []
        )
        names = set(placed[0].digests) if placed else {str(c.get("component")) for c in containers}
        found = []
        for name in sorted(n for n in names if n):
            mine = [c for c in containers if c.get("component") == name]
            states = sorted({str(c.get("state") or "unknown")[:40] for c in mine}) or ["missing"]
            check = health_of(name, services.get(name))
            http: dict[str, Any] | None = None
            if check is not None:
                answer = self._run(
                    None,
                    dest,
                    TaskType.HEALTH_CHECK,
                    {
                        "url": check.url_for(dest.name),
                        "expect_status": check.expect_status,
                        "timeout": check.request_seconds,
                    },
                    f"{key}:{name}",
                    cancel,
                    seconds=check.request_seconds + HEALTH_TASK_SLACK,
                )
                http = {
                    "url": check.url_for(dest.name),
                    "expect_status": check.expect_status,
                    "ok": answer.ok,
                    "status": answer.outputs.get("status") if answer.ok else None,
                    "error": answer.error,
                }
            own: dict[str, Any] | None = None
            if container_health_of(name, services.get(name)) is not None:
                answer = self._run(
                    None,
                    dest,
                    TaskType.HEALTH_CHECK,
                    {
                        "project": project_name(environment, dest.name),
                        "runtime": dest.runtime,
                        "component": name,
                    },
                    f"{key}:{name}:container",
                    cancel,
                    seconds=seconds,
                )
                own = {"ok": answer.ok, "error": answer.error}
            healthy = (
                states == ["running"]
                and (http is None or bool(http["ok"]))
                and (own is None or bool(own["ok"]))
            )
            found.append(ComponentHealth(name, states, healthy, http, own))
        return TargetHealth(
            dest.name,
            environment,
            placed[0].release_name if placed else None,
            tuple(found),
        )

    # reading back ------------------------------------------------------------------------
    def read_sticker(self, dest: Destination, *, seconds: float = 60.0) -> StickerReading:
        """The sticker on `dest` as it is now, checked against the orchestrator's registered
        keys (never anyone else's)."""
        from stella_core.deploy.sticker import verify_sticker

        if dest.problem:
            raise ConnectorError(f"target {dest.name}: {dest.problem}")
        key = f"read-sticker:{dest.id}:{uuid.uuid4()}"
        outcome = self._run(
            None,
            dest,
            TaskType.READ_STICKER,
            {"directory": dest.directory},
            key,
            threading.Event(),
            seconds=seconds,
        )
        if not outcome.ok:
            raise ConnectorError(
                f"target {dest.name}: the sticker could not be read: {outcome.error}",
                retryable=outcome.retryable,
            )
        raw_b64 = outcome.outputs.get("raw_b64")
        path = str(outcome.outputs.get("path") or dest.directory)
        if not isinstance(raw_b64, str):
            return StickerReading(dest.name, path, None, False, "there is no sticker on the target")
        try:
            raw = base64.b64decode(raw_b64, validate=True)
        except ValueError:
            return StickerReading(dest.name, path, None, False, "the target's answer is garbled")
        with self.db.transaction() as conn:
            keys = {
                k.key_id: k.public_key
                for k in TenancyService.keys_in(conn)
                if k.owner_kind == ORCHESTRATOR
            }
        check = verify_sticker(raw, keys)
        return StickerReading(dest.name, path, check.sticker, check.ok, check.reason)


def _placement(r: Any) -> Placement:
    return Placement(
        deployment_id=UUID(str(r.deployment_id)),
        target_id=UUID(str(r.target_id)),
        target=r.target,
        environment=r.environment,
        release_id=UUID(str(r.release_id)),
        release_name=r.release_name,
        digests={str(k): str(v) for k, v in (r.digests or {}).items()},
        lockfile_digest=r.lockfile_digest,
        status=r.status,
        error=r.error,
        placed_at=r.placed_at,
    )


def _deployment(r: Any) -> Deployment:
    return Deployment(
        id=UUID(str(r.id)),
        kind=r.kind,
        environment=r.environment,
        environment_id=UUID(str(r.environment_id)),
        release_id=UUID(str(r.release_id)),
        release_name=r.release_name,
        strategy=r.strategy,
        run_id=UUID(str(r.run_id)) if r.run_id else None,
        promotion_id=UUID(str(r.promotion_id)) if r.promotion_id else None,
        status=r.status,
        lockfile_digest=r.lockfile_digest,
        packet_id=UUID(str(r.packet_id)) if r.packet_id else None,
        detail=dict(r.detail or {}),
        started_at=r.started_at,
        finished_at=r.finished_at,
        created_by=r.created_by,
    )


@dataclass(frozen=True)
class ComponentHealth:
    component: str
    states: list[str]  # of its containers on the target ("missing": none)
    healthy: bool
    http: dict[str, Any] | None  # its x-stella-health answer, when it has one
    container: dict[str, Any] | None = None  # its compose healthcheck's answer, when it has one

    def to_json(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "healthy": self.healthy,
            "state": self.states[0] if len(self.states) == 1 else ",".join(self.states),
            "http": self.http,
            "container": self.container,
        }


@dataclass(frozen=True)
class TargetHealth:
    target: str
    environment: str
    release: str | None  # what should run there (its newest succeeded placement)
    components: tuple[ComponentHealth, ...]

    @property
    def healthy(self) -> bool:
        return bool(self.components) and all(c.healthy for c in self.components)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "environment": self.environment,
            "release": self.release,
            "healthy": self.healthy,
            "components": [c.to_json() for c in self.components],
        }


@dataclass(frozen=True)
class StickerReading:
    target: str
    path: str
    sticker: dict[str, Any] | None
    signature_ok: bool
    reason: str | None

    def to_json(self) -> dict[str, Any]:
        """The sticker itself, with the verdict beside its own members."""
        found: dict[str, Any] = dict(self.sticker or {})
        found["signature_ok"] = self.signature_ok
        found["target"] = found.get("target", self.target)
        found["path"] = self.path
        if self.reason:
            found["reason"] = self.reason
        return found
