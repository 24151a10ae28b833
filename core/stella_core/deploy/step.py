"""The `deploy` step: the workflow engine's door to the deploy service.

The engine calls it outside any transaction, in a worker that heartbeats the step's lease; it
deploys with the step's strategy (see `deploy.strategy`) and succeeds only when each target it
deployed to runs the release's exact digests, is healthy and carries its sticker.

A canary with approvals between rungs parks (`Waiting`) without holding a worker and is
resumed every few seconds: the resumed step goes through the rollout again, and every task of
the rungs already done answers from the task queue (its id derives from the step attempt's
key), so nothing runs twice and the deployment's evidence is written once, at its end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from stella_core.deploy.service import (
    ROLLED_WITH_THE_ROLLOUT,
    DeploymentReport,
    DeployRequest,
    DeployService,
    Destination,
    GroupSwitch,
    Parked,
)
from stella_core.deploy.strategy import rollout_of
from stella_core.errors import ConnectorError, DefinitionError, StellaError
from stella_core.workflows.steps.builtin import (
    Failed,
    StepContext,
    StepResult,
    Succeeded,
    Waiting,
)

APPROVAL_POLL_SECONDS = 5.0
log = logging.getLogger(__name__)


class DeployStep:
    instant = False

    def __init__(
        self, service: DeployService, destinations: Callable[[str], Sequence[Destination]]
    ) -> None:
        self.service = service
        # The environment's targets, resolved (agents, secrets, hosts) by the composition root.
        self.destinations = destinations

    def start(self, ctx: StepContext) -> StepResult:
        return self._go(ctx)

    def resume(self, ctx: StepContext) -> StepResult:
        # Only a canary parked between rungs waits; the rollout picks up where it stopped.
        return self._go(ctx)

    def _go(self, ctx: StepContext) -> StepResult:
        environment = ctx.inputs.get("environment")
        if environment is not None and (not isinstance(environment, str) or not environment):
            return Failed("input 'environment' must be an environment's name", retryable=False)
        try:
            rollout = rollout_of(ctx.inputs)
        except DefinitionError as exc:
            return Failed(f"input {exc.field!r}: {exc.message}", retryable=False)
        key = f"{ctx.idempotency_key or ctx.run_id}:{ctx.node_id}:{ctx.attempt}"

        def say(line: str) -> None:
            log.info("run %s step %s: %s", ctx.run_id, ctx.node_id, line)

        try:
            request: DeployRequest = self.service.request_for_run(
                ctx.run_id, environment, key, timeout=ctx.remaining(), node_id=ctx.node_id
            )
            request = _with_strategy(request, rollout.strategy)
            report = self.service.roll_out(
                request,
                self.destinations(request.environment),
                rollout,
                cancel=ctx.cancel,
                on_progress=say,
            )
        except ConnectorError as exc:
            return Failed(exc.message, retryable=exc.retryable)
        except StellaError as exc:
            return Failed(exc.message, retryable=False)
        if isinstance(report, Parked):
            return Waiting(APPROVAL_POLL_SECONDS)
        outputs = report.outputs()
        if report.failures:
            failures = report.failures
            # The target that stopped the rollout first, then the ones rolled back with it.
            first = next((t for t in failures if t.error != ROLLED_WITH_THE_ROLLOUT), failures[0])
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            if isinstance(report, GroupSwitch):
                return Failed(f"target {first.target} of the old group: {first.error}{more}")
            if any(t.status == "rolled-back" for t in failures):
                # It ended as the template asked: another attempt would deploy it again.
                rolled = sum(t.status == "rolled-back" for t in failures)
                return Failed(
                    f"target {first.target}: {first.error}; the rollout stopped and {rolled} "
                    "target(s) went back to what they ran before",
                    outputs,
                    retryable=False,
                )
            return Failed(f"target {first.target}: {first.error}{more}", outputs)
        if isinstance(report, DeploymentReport) and report.status != "succeeded":
            return Failed(f"the rollout was {report.status}", outputs, cancelled=True)
        return Succeeded(outputs)


def _with_strategy(request: DeployRequest, strategy: str) -> DeployRequest:
    from dataclasses import replace

    return replace(request, strategy=strategy)
