"""Rollback: a promotion of a release the environment ran before, back to every target.

Which release: the newest (by creation) release other than the one every target runs now whose
exact digests every target of the environment still holds, according to its version sticker
(signed by the orchestrator and checked; a sticker remembers its target's last five releases).
A target whose sticker cannot be read, is missing, or does not verify makes the rollback refuse
and say which: guessing what ran there would be worse than not rolling back.

How: a rollback is a promotion (kind `rollback`) decided under the environment's policy like any
other. No gate is relaxed for it: approvals and separation of duties apply (an insider must not
get around them by calling a change a rollback), and so do freeze windows (their allow list) and
deployment windows (an admin's signed exception is the emergency path). None of the gates
refuses an older release as such: the predecessor gate reads where the release ever reached, and
a release every target ran has passed it (or an exception to it) on its way here. The database
accepts the marker only for a release every target ran (see migration 0021), so it cannot be
forged, and it grants nothing.

Once approved it runs the environment's workflow, whose `deploy` step deploys the release by
digest like any promotion's. When that run ends, the orchestrator signs a `rollback` packet with
the state before (each target's sticker: release, digests, deployment), the release gone back
to, the reason, the trigger, the requester and the outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Connection

from stella_core.environments.service import EnvironmentService
from stella_core.errors import DefinitionError, NotFoundError, OrchestratorUnavailableError
from stella_core.evidence.model import Refs
from stella_core.evidence.predicates import (
    ROLLBACK_V1,
    TargetBefore,
    rollback_predicate,
)
from stella_core.evidence.service import EvidenceService
from stella_core.promotions.model import Promotion
from stella_core.promotions.service import REQUESTERS, PromotionService
from stella_core.promotions.store import PromotionStore
from stella_core.releases.model import Release
from stella_core.releases.service import ReleaseService
from stella_core.workflows.model import RunStatus

log = logging.getLogger(__name__)

MANUAL = "manual"
# How the rollback's run ended, in the packet's words.
PACKET_STATUS = {
    RunStatus.SUCCEEDED.value: "succeeded",
    RunStatus.CANCELLED.value: "cancelled",
}


class RollbackRefusedError(DefinitionError):
    """No rollback can be chosen or requested as asked (exit code 2: nothing was changed)."""


@dataclass(frozen=True)
class TargetHoldings:
    """What one target holds according to its sticker (the orchestrator read and checked it):
    (release, component digests), the one running now first, then its history newest first.
    `problem` says why nothing can be known about it (unreachable, no sticker, bad signature)."""

    target: str
    target_id: UUID | None = None
    releases: tuple[tuple[str, Mapping[str, str]], ...] = ()
    deployment_id: str | None = None
    problem: str | None = None

    @property
    def current(self) -> tuple[str, Mapping[str, str]] | None:
        return self.releases[0] if self.releases else None

    def holds(self, release: Release) -> bool:
        digests = _digests(release)
        return any(name == release.name and dict(d) == digests for name, d in self.releases)


@dataclass(frozen=True)
class RollbackPlan:
    environment: str
    release: str
    holdings: tuple[TargetHoldings, ...]
    from_release: str
    from_components: dict[str, str] = field(default_factory=dict)
    to_components: dict[str, str] = field(default_factory=dict)

    def before(self) -> dict[str, Any]:
        """The state before, as `promotion.rollbacks.before` keeps it."""
        return {
            "from": {"release": self.from_release, "components": dict(self.from_components)},
            "targets": [
                {
                    "target": h.target,
                    "targetId": str(h.target_id) if h.target_id else None,
                    "release": h.current[0] if h.current else None,
                    "components": dict(h.current[1]) if h.current else {},
                    "deploymentId": h.deployment_id,
                }
                for h in sorted(self.holdings, key=lambda h: h.target)
            ],
        }


def choose(
    environment: str,
    holdings: Sequence[TargetHoldings],
    releases: Sequence[Release],
    to: str | None = None,
) -> RollbackPlan:
    """The release to go back to (pure: what the stickers hold against the releases known).

    Raises RollbackRefusedError naming the targets that make it impossible."""
    if not holdings:
        raise RollbackRefusedError(f"environment {environment} has no targets to roll back")
    unknown = [h for h in holdings if h.problem]
    if unknown:
        said = "; ".join(f"target {h.target}: {h.problem}" for h in unknown)
        raise RollbackRefusedError(
            f"cannot tell what every target of {environment} ran, so no rollback is chosen: {said}"
        )
    # What the environment runs now: the release every target runs (where they differ, each
    # target's own current release is still one the others may go back to).
    currents = {h.current[0] for h in holdings if h.current}
    running_everywhere = currents.pop() if len(currents) == 1 else None
    from_release, from_components = _from(holdings, releases)
    if to is not None:
        found = [r for r in releases if r.name == to]
        if not found:
            raise NotFoundError(f"no release named {to!r}", field="to")
        lacking = [h.target for h in holdings if not h.holds(found[0])]
        if lacking:
            raise RollbackRefusedError(
                f"release {to} is not on every target of {environment}: "
                f"{', '.join(sorted(lacking))} never ran it (or not within their last five "
                "releases)"
            )
        if to == running_everywhere:
            raise RollbackRefusedError(
                f"every target of {environment} runs {to} already: there is nothing to roll back"
            )
        return RollbackPlan(
            environment, to, tuple(holdings), from_release, from_components, _digests(found[0])
        )
    candidates = [
        r for r in releases if r.name != running_everywhere and all(h.holds(r) for h in holdings)
    ]
    if not candidates:
        runs = ", ".join(
            f"{h.target} holds {', '.join(name for name, _ in h.releases) or 'nothing'}"
            for h in sorted(holdings, key=lambda h: h.target)
        )
        raise RollbackRefusedError(
            f"no earlier release is on every target of {environment}: {runs}"
        )
    newest = max(candidates, key=lambda r: (r.created_at, r.name))
    return RollbackPlan(
        environment, newest.name, tuple(holdings), from_release, from_components, _digests(newest)
    )


def _digests(release: Release) -> dict[str, str]:
    return {c.name: c.digest for c in release.components}


def _from(
    holdings: Sequence[TargetHoldings], releases: Sequence[Release]
) -> tuple[str, dict[str, str]]:
    """The release the environment is rolled back from: the one most targets run now (the
    newest among equals)."""
    created = {r.name: r.created_at for r in releases}
    counts: dict[str, int] = {}
    digests: dict[str, Mapping[str, str]] = {}
    for h in holdings:
        if h.current is not None:
            counts[h.current[0]] = counts.get(h.current[0], 0) + 1
            digests.setdefault(h.current[0], h.current[1])
    if not counts:
        raise RollbackRefusedError("no target says what it runs")
    name = max(counts, key=lambda n: (counts[n], created.get(n) is not None, created.get(n), n))
    return name, dict(digests[name])


class RollbackService:
    """Rollbacks as one principal sees them: a release manager requests one (reading the
    stickers is the orchestrator's, where it runs here); the orchestrator signs the packet when
    the rollback's run ends."""

    def __init__(
        self,
        promotions: PromotionService,
        evidence: EvidenceService,
        targets: Callable[[str], Sequence[TargetHoldings]] | None,
    ) -> None:
        self.promotions = promotions
        self.evidence = evidence
        # Each target's holdings, read from its sticker through its agent or connection.
        self.targets = targets

    def plan(self, environment: str, to: str | None = None) -> RollbackPlan:
        """What a rollback would go back to now (nothing is recorded)."""
        self.promotions.tenancy.whoami()
        if self.targets is None:
            raise OrchestratorUnavailableError(
                "this machine does not run the orchestrator, which alone reads the targets' "
                "stickers: run the rollback where stella serve runs"
            )
        with self.promotions.db.transaction() as conn:
            env = EnvironmentService.get_in(conn, environment)
            if env is None:
                raise NotFoundError(f"no environment named {environment!r}", field="env")
            if env.workflow is None:
                raise RollbackRefusedError(
                    f"environment {environment} has no workflow, so nothing would deploy the "
                    "rollback to its targets"
                )
            releases = ReleaseService.releases_in(conn)
        template = self.promotions.workflows.get_template(env.workflow)
        if not any(n.type == "deploy" for n in template.nodes):
            raise RollbackRefusedError(
                f"workflow {env.workflow} of {environment} has no deploy step, so a rollback "
                "would change nothing on its targets"
            )
        return choose(environment, self.targets(environment), releases, to)

    def rollback(
        self, environment: str, *, to: str | None = None, reason: str = "", trigger: str = MANUAL
    ) -> Promotion:
        """Request the rollback (a promotion of kind rollback) and have it decided now where
        the orchestrator runs here; approved, its run deploys the release."""
        identity = self.promotions.tenancy.require(*REQUESTERS)
        engine = self.promotions._orchestrator()
        plan = self.plan(environment, to)
        why_text = reason.strip() or (
            f"rollback of {environment} from {plan.from_release} to {plan.release}"
        )
        # What the packet will say is checked now, before anything is requested: a state
        # before it could not record would otherwise surface only when the run ends.
        now = self.promotions.clock.now()
        packet_predicate(
            plan.before(),
            rollback_id=UUID(int=0),
            environment=environment,
            to_release=plan.release,
            to_components=plan.to_components,
            trigger=trigger,
            reason=why_text,
            status="succeeded",
            started_at=now,
            finished_at=now,
            actor=identity.user,
        )
        with self.promotions.db.transaction() as conn:
            promotion_id = self.promotions._request_in(
                conn, identity.tenant_id, plan.release, environment, why_text, kind="rollback"
            )
        with engine.db.transaction() as conn:
            PromotionStore(conn).insert_rollback_state(
                engine.tenant_id, promotion_id, environment, trigger, plan.before()
            )
        self.promotions._decide_now(promotion_id)
        return self.promotions.get(promotion_id)

    # the orchestrator, when a rollback's run ends --------------------------------------
    def run_ended(self, conn: Connection, run_id: UUID, status: str) -> None:
        """Sign the rollback packet in the transaction that ends the run (nothing for runs
        that carry out no rollback)."""
        store = PromotionStore(conn)
        row = store.row_of_run(run_id)
        if row is None or row.kind != "rollback":
            return
        state = store.rollback_state(row.id)
        components = dict(row.components)
        predicate = packet_predicate(
            dict(state.before) if state is not None else {},
            rollback_id=row.id,
            environment=row.environment,
            to_release=row.release_name,
            to_components=components,
            trigger=state.trigger_kind if state is not None else MANUAL,
            reason=row.reason or f"rollback of {row.environment} to {row.release_name}",
            status=PACKET_STATUS.get(str(status), "failed"),
            started_at=row.requested_at,
            finished_at=self.promotions.clock.now(),
            actor=row.requested_by,
            run_id=run_id,
            run_status=str(status),
        )
        self.evidence.emit(
            conn,
            predicate_type=ROLLBACK_V1,
            subjects=sorted(components.items()),
            predicate=predicate,
            signer=self.evidence.orchestrator_signer(conn),
            refs=Refs(
                release=row.release_name,
                environment=row.environment,
                promotion_id=row.id,
                run_id=run_id,
            ),
        )
        log.info("rollback %s of %s ended %s", row.id, row.environment, status)


def packet_predicate(
    before: Mapping[str, Any],
    *,
    rollback_id: UUID,
    environment: str,
    to_release: str,
    to_components: Mapping[str, str],
    trigger: str,
    reason: str,
    status: str,
    started_at: datetime,
    finished_at: datetime,
    actor: str,
    run_id: UUID | None = None,
    run_status: str | None = None,
) -> dict[str, Any]:
    """The rollback packet's predicate from the state before as `promotion.rollbacks` keeps
    it (the rollback is its promotion: same id)."""
    source = before.get("from") or {}
    targets = [
        TargetBefore(
            target=str(t["target"]),
            release=str(t["release"]),
            components=dict(t.get("components") or {}),
            target_id=t.get("targetId"),
            deployment_id=t.get("deploymentId"),
        )
        for t in before.get("targets") or []
        if t.get("release")
    ]
    # The deployment rolled back, where every target's sticker names the same one.
    deployments = {t.deployment_id for t in targets}
    return rollback_predicate(
        rollback_id=rollback_id,
        environment=environment,
        from_release=str(source.get("release") or "unknown"),
        from_components=dict(source.get("components") or {}),
        to_release=to_release,
        to_components=to_components,
        trigger=trigger,
        reason=reason,
        status=status,
        started_at=started_at,
        finished_at=finished_at,
        actor=actor,
        before=targets,
        promotion_id=rollback_id,
        run_id=run_id,
        run_status=run_status,
        deployment_id=next(iter(deployments)) if len(deployments) == 1 else None,
    )
