"""The `deploy` step: the workflow engine's door to the deploy service.

The engine calls it outside any transaction, in a worker that heartbeats the step's lease; it
deploys to every target of the environment and succeeds only when each runs the release's exact
digests and carries its sticker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from stella_core.deploy.service import DeployRequest, DeployService, Destination
from stella_core.errors import ConnectorError, StellaError
from stella_core.workflows.steps.builtin import Failed, StepContext, StepResult, Succeeded


class DeployStep:
    instant = False

    def __init__(
        self, service: DeployService, destinations: Callable[[str], Sequence[Destination]]
    ) -> None:
        self.service = service
        # The environment's targets, resolved (agents, secrets, hosts) by the composition root.
        self.destinations = destinations

    def start(self, ctx: StepContext) -> StepResult:
        environment = ctx.inputs.get("environment")
        if environment is not None and (not isinstance(environment, str) or not environment):
            return Failed("input 'environment' must be an environment's name", retryable=False)
        key = f"{ctx.idempotency_key or ctx.run_id}:{ctx.node_id}:{ctx.attempt}"
        try:
            request: DeployRequest = self.service.request_for_run(
                ctx.run_id, environment, key, timeout=ctx.remaining(), node_id=ctx.node_id
            )
            report = self.service.deploy(
                request, self.destinations(request.environment), cancel=ctx.cancel
            )
        except ConnectorError as exc:
            return Failed(exc.message, retryable=exc.retryable)
        except StellaError as exc:
            return Failed(exc.message, retryable=False)
        outputs = report.outputs()
        if report.failures:
            first = report.failures[0]
            more = f" (and {len(report.failures) - 1} more)" if len(report.failures) > 1 else ""
            return Failed(f"target {first.target}: {first.error}{more}", outputs)
        return Succeeded(outputs)

    def resume(self, ctx: StepContext) -> StepResult:
        return Failed("a deploy step cannot be resumed", retryable=False)
