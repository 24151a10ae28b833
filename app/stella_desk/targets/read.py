"""What the Targets page reads and does, as plain functions run on a worker thread (inside
`Ops.run`): agents and targets with what should run on each, a sticker read now, tokens and
revocation. No Qt here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from stella_core.agents.model import Agent, IssuedToken
from stella_core.deploy.model import Placement
from stella_core.environments.model import Target
from stella_core.errors import OrchestratorUnavailableError
from stella_desk.targets import drift
from stella_desk.targets.drift import DriftView

if TYPE_CHECKING:
    from stella_core.agents.service import AgentService
    from stella_core.bootstrap import Stella
    from stella_core.deploy.service import StickerReading


@dataclass(frozen=True)
class TargetRow:
    """A target with what the database says should run there and its last drift finding."""

    target: Target
    placement: Placement | None  # the newest that succeeded; None: never deployed there
    drift: DriftView | None  # None: never checked (or drift checks unavailable)


@dataclass(frozen=True)
class Estate:
    agents: list[Agent]
    targets: list[TargetRow]
    now: datetime  # the clock the agents' status is judged by
    drift_available: bool


def agents_of(stella: Stella) -> AgentService:
    """The agents service of a person's session; where this machine runs the orchestrator it
    makes the tenant's agent CA on first need, so a token can name its fingerprint (as the
    command line's `stella agent token create` does)."""
    from stella_core.agents.service import AgentService, enrollment_for

    orchestrator = stella.orchestrator
    if orchestrator is None:
        return AgentService(stella.db, stella.tenancy)
    return AgentService(
        stella.db,
        stella.tenancy,
        authority=lambda: enrollment_for(orchestrator).ca_fingerprint(),
    )


def read_estate(stella: Stella) -> Estate:
    from stella_core.deploy.service import DeployService

    service = agents_of(stella)
    agents = service.list()
    targets = stella.environments.list_targets()
    with stella.db.transaction() as conn:
        placements = {p.target_id: p for p in DeployService.current_placements_in(conn)}
    findings = drift.by_target(drift.latest(stella))
    rows = [TargetRow(t, placements.get(t.id), (findings or {}).get(t.name)) for t in targets]
    return Estate(agents, rows, service.clock.now(), findings is not None)


def read_sticker(
    stella: Stella, name: str, seconds: float = 60.0, *, beside: bool = True
) -> StickerReading:
    """The sticker on target `name` now, checked against the orchestrator's keys. Through the
    orchestrator, as `stella target sticker` reads it: on the embedded default this machine's
    agent is run beside the read when no worker runs and `beside` (the desk runs none)."""
    if stella.orchestrator is None:
        raise OrchestratorUnavailableError(
            "reading a target's sticker goes through the orchestrator, and this machine holds "
            "no orchestrator login for this tenant",
            remedy=("serve",),
        )
    from stella_core.agents.local import LOCAL_AGENT, local_agent_beside

    orchestrator = stella.orchestrator
    (dest,) = orchestrator.destinations(None, name)
    local = beside and stella.environments.target(name).agent == LOCAL_AGENT
    with local_agent_beside(stella, wanted=local):
        return orchestrator.deploy.read_sticker(dest, seconds=seconds)


def create_token(stella: Stella, name: str, labels: dict[str, str], ttl: timedelta) -> IssuedToken:
    return agents_of(stella).create_token(name, labels, ttl)


def revoke(stella: Stella, agent_id: str, reason: str) -> Agent:
    return agents_of(stella).revoke(agent_id, reason)


def sticker_words(reading: Any) -> str:
    """A sticker reading in a cell: verified or not, said plainly, and the release it names."""
    sticker = reading.sticker or {}
    release = (sticker.get("release") or {}).get("name")
    named = f" · {release}" if release else ""
    if reading.signature_ok:
        return f"verified{named}"
    return f"NOT verified: {reading.reason or 'no reason given'}{named}"
