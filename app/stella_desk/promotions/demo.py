"""Demo promotions for `--screenshot` (and a first look): a seeded release waiting for its second
prod approval, reached for real.

alice (the seeded release manager) takes the oldest seeded release that is not in prod yet
through the environments before it (dev needs no approval; bob approves stage), unless it has
been there already (the seed may have played some history), then asks for prod, where bob
approves: "1 of 2", waiting for carol. Each deployment runs the environment's workflow to its
end. Nothing happens unless this is the demo's own database: one the database says is a demo,
with the seeded environments, releases and people, every promotion so far requested by the
seeded release manager, none in flight.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from stella_core.errors import StellaError
from stella_core.promotions.model import PromotionStatus
from stella_desk.promotions.status import ENDED_STATUSES

if TYPE_CHECKING:
    from stella_core.bootstrap import Stella
    from stella_core.environments.model import Environment

REQUESTER = "alice"
APPROVER = "bob"
REASONS = {
    "dev": "First look in dev",
    "stage": "Passed in dev; ready for the stage checks",
    "prod": "Weekly release: stage checks green",
}


def is_demo_database(stella: Stella) -> bool:
    from stella_core.demo.seed import ENVIRONMENTS, PEOPLE, RELEASES

    if not stella.tenancy.is_demo():
        return False  # the database's own word first: it signs as the demo people below

    envs = sorted(stella.environments.list(), key=lambda e: e.order)
    shape = [(e.name, e.order, e.required_approvals, e.separation_of_duties) for e in envs]
    if shape != list(ENVIRONMENTS):
        return False
    releases = {r.name for r in stella.releases.list_releases()}
    if not {name for name, _pins in RELEASES} <= releases:
        return False
    people = {u.name for u in stella.tenancy.list_users()}
    if not {name for name, _role in PEOPLE} <= people:
        return False
    promotions = stella.promotions.find()
    return all(p.requested_by == REQUESTER and p.status.value in ENDED_STATUSES for p in promotions)


def _reached(stella: Stella, release: str, environment: str) -> bool:
    """Whether the release may go into `environment` as far as order goes (the core's own
    predecessor gate, asked without recording anything)."""
    preview = stella.promotions.preview(release, environment)
    return any(
        g["gate"] == "predecessor" and g["status"] == "pass" for g in preview.get("gates") or []
    )


def _deploy(requester: Stella, approver: Stella, release: str, env: Environment) -> bool:
    promotion = requester.promotions.request(release, env.name, REASONS.get(env.name, ""))
    if env.required_approvals:
        promotion = approver.promotions.approve(promotion.id, f"Checked for {env.name}")
    if promotion.run_id is not None:
        requester.workflows.wait_run(promotion.run_id, timeout=60)
    return requester.promotions.get(promotion.id).status is PromotionStatus.DEPLOYED


def prepare_demo_promotions(stella: Stella) -> list[UUID]:
    """Worker thread: see the module's docstring. Returns the prod promotion's id in a list
    ([] when this is not the demo's database or the seeded people have no profile here)."""
    from stella_core.demo.seed import RELEASES

    if not is_demo_database(stella):
        return []
    envs = sorted(stella.environments.list(), key=lambda e: e.order)
    last = envs[-1]
    current = {
        column["environment"]["name"]: column["current"]["release"]
        for column in stella.promotions.pipeline()
        if column["current"]
    }
    candidates = [name for name, _pins in RELEASES if current.get(last.name) != name]
    if not candidates:
        return []
    try:
        requester = stella.as_person(REQUESTER)
    except StellaError:
        return []
    try:
        approver = stella.as_person(APPROVER)
    except StellaError:
        requester.close(keep_backend=True)
        return []
    try:
        ready = [n for n in candidates if _reached(requester, n, last.name)]
        release = ready[-1] if ready else candidates[0]
        if not ready:
            for env in envs[:-1]:
                if current.get(env.name) != release and not _deploy(
                    requester, approver, release, env
                ):
                    return []  # the demo stops where the real thing stopped
        promotion = requester.promotions.request(release, last.name, REASONS[last.name])
        approver.promotions.approve(promotion.id, "Digests match what ran in stage")
        return [promotion.id]
    finally:
        requester.close(keep_backend=True)
        approver.close(keep_backend=True)
