"""A deploy step deploys only what a promotion decided, and only where it was decided.

The insider this guards against is a release manager who writes workflows: a workflow whose
deploy step names another environment, or a run started by hand, must not reach an environment
whose approvals never covered the release. Nothing is written for any target when it is refused.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from stella_core.promotions.model import PromotionStatus
from stella_core.releases.model import ComponentPin
from stella_core.tenancy.model import ProductRole
from stella_core.workflows.model import RunStatus
from tests.support.images import push_busybox_image
from tests.support.registry import RunningRegistry


def workflow(name: str, deploy_inputs: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "name": name,
        "version": 1,
        "description": "deploys",
        "inputs": {},
        "nodes": [{"id": "deploy", "type": "deploy", "name": "Deploy", "inputs": deploy_inputs}],
        "edges": [],
    }


@pytest.fixture
def shop(world, registry: RunningRegistry) -> Any:
    admin = world.open()
    admin.add_person("alice", ProductRole.RELEASE_MANAGER)
    alice = world.open("alice")
    image = push_busybox_image(registry.url, "authority/web", "1.0", variant="authority")
    admin.releases.add_registry("local", registry.url, insecure=True)
    alice.releases.add_component("web", "local/authority/web")
    alice.releases.create_release("r-1", [ComponentPin(component="web", tag="1.0", digest=None)])
    # dev deploys with a workflow whose deploy step names prod; prod needs two approvals.
    alice.workflows.import_template(workflow("sneaky", {"environment": "prod"}))
    alice.workflows.import_template(workflow("plain", {}))
    admin.environments.add("dev", order=0, workflow="sneaky")
    admin.environments.add("prod", order=1, required_approvals=2, workflow="plain")
    admin.environments.add_target(
        "prod-box", environment="prod", type="agent", agent="nobody", directory="/nonexistent"
    )
    assert image.digest
    return alice


def tasks_written(alice: Any) -> int:
    with alice.db.transaction() as conn:
        return int(conn.execute(text("SELECT count(*) FROM deploy.tasks")).scalar_one())


def test_a_workflow_cannot_deploy_beyond_the_promotions_environment(shop: Any) -> None:
    promotion = shop.promotions.request("r-1", "dev", "try prod through dev")
    assert promotion.run_id is not None
    run = shop.workflows.wait_run(promotion.run_id, timeout=60)
    assert run.status is RunStatus.FAILED
    step = next(s for s in shop.workflows.get_run(run.id).steps if s.id == "deploy")
    assert "promotion of r-1 to dev; its deploy step cannot deploy to prod" in (step.error or "")
    assert shop.promotions.get(promotion.id).status is PromotionStatus.FAILED
    assert tasks_written(shop) == 0


def test_a_run_started_by_hand_deploys_nothing(shop: Any) -> None:
    run = shop.workflows.start_run("plain", release="r-1")
    run = shop.workflows.wait_run(run.id, timeout=60)
    assert run.status is RunStatus.FAILED
    step = next(s for s in shop.workflows.get_run(run.id).steps if s.id == "deploy")
    assert "deploys only what a promotion decided" in (step.error or "")
    assert tasks_written(shop) == 0
