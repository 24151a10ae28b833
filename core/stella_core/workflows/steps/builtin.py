"""The contract a step type implements, and the built-in step types.

A handler gets a `StepContext` (resolved inputs, the attempt, an idempotency key when the step
type has side effects, a cancel event, its deadline) and returns what happened: `Succeeded`,
`Failed` or `Waiting`. The engine owns every state change; handlers never touch the database.

`instant` handlers do no I/O and finish in microseconds, so the engine runs them inside the
transaction that claims the step (no lease, no second transaction). The others run outside any
transaction while the worker heartbeats the lease.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

import httpx

from stella_core.errors import ConnectorError, StellaError
from stella_core.workflows.executors import CommandRequest, Executors

HTTP_TIMEOUT_S = 30.0
LOCAL_EXECUTOR_OFF = (
    "the local executor is turned off for this tenant, so script steps cannot run on the "
    "orchestrator's host; an admin can turn it on in the tenant's workflow settings "
    "('local executor')"
)


@dataclass(frozen=True)
class Succeeded:
    outputs: dict[str, Any]
    # Extra run-log entries (kind, details), e.g. what `notify` writes.
    events: tuple[tuple[str, dict[str, Any]], ...] = ()


@dataclass(frozen=True)
class Failed:
    error: str
    outputs: dict[str, Any] | None = None
    retryable: bool = True
    timed_out: bool = False
    cancelled: bool = False


@dataclass(frozen=True)
class Waiting:
    """Park the step without holding a worker; `seconds` None waits for an outside event (an
    approval) or the step's timeout."""

    seconds: float | None = None


StepResult = Succeeded | Failed | Waiting


@dataclass
class StepContext:
    run_id: UUID
    node_id: str
    step_type: str
    attempt: int
    inputs: dict[str, Any]
    idempotency_key: str | None
    timeout_seconds: int | None
    executors: Executors
    local_executor_enabled: Callable[[], bool]
    # Asked only where no sandbox is usable (the tenant's `allow_unsandboxed`).
    unsandboxed_allowed: Callable[[], bool] = lambda: False
    # Set for the run of an approved promotion: who approved it.
    approved_by: tuple[str, ...] | None = None
    # The attempt's fencing token (see fencing.py); commands carry it in their environment.
    attempt_token: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    started_monotonic: float = field(default_factory=time.monotonic)

    def remaining(self) -> float | None:
        """Seconds left before the step's timeout (None: no timeout)."""
        if self.timeout_seconds is None:
            return None
        return max(0.0, self.timeout_seconds - (time.monotonic() - self.started_monotonic))


class StepHandler(Protocol):
    instant: bool

    def start(self, ctx: StepContext) -> StepResult: ...

    def resume(self, ctx: StepContext) -> StepResult:
        """Called when a `Waiting` step's timer fires (before its timeout)."""
        ...


class _NoResume:
    def resume(self, ctx: StepContext) -> StepResult:
        return Failed(f"step type {ctx.step_type!r} cannot be resumed", retryable=False)


class ApprovalStep(_NoResume):
    """Waits until enough eligible people approve (the service records and counts them)."""

    instant = True

    def start(self, ctx: StepContext) -> StepResult:
        approvers = ctx.inputs.get("approvers")
        required = ctx.inputs.get("required")
        if not isinstance(approvers, list) or not approvers:
            return Failed("input 'approvers' must be a non-empty list", retryable=False)
        if not isinstance(required, int) or isinstance(required, bool) or required < 1:
            return Failed("input 'required' must be a whole number of at least 1", retryable=False)
        if ctx.approved_by is not None:
            # A promotion's approval steps are its approvals, already given and counted under
            # the environment's policy before this run could start.
            return Succeeded({"approved_by": list(ctx.approved_by), "via": "promotion"})
        return Waiting(None)

    def resume(self, ctx: StepContext) -> StepResult:
        # Only the timeout wakes an approval.
        return Failed("no decision before the step's timeout", timed_out=True, retryable=False)


class WaitStep:
    instant = True

    def start(self, ctx: StepContext) -> StepResult:
        seconds = ctx.inputs.get("seconds")
        if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds < 0:
            return Failed("input 'seconds' must be a whole number of at least 0", retryable=False)
        if seconds == 0:
            return Succeeded({"waited_seconds": 0})
        return Waiting(float(seconds))

    def resume(self, ctx: StepContext) -> StepResult:
        return Succeeded({"waited_seconds": int(ctx.inputs.get("seconds", 0))})


class NotifyStep(_NoResume):
    """Writes its message to the run log (channels come with plugins)."""

    instant = True

    def start(self, ctx: StepContext) -> StepResult:
        message = str(ctx.inputs.get("message", ""))
        return Succeeded({"message": message}, events=(("step.notify", {"message": message}),))


class FailStep(_NoResume):
    instant = True

    def start(self, ctx: StepContext) -> StepResult:
        return Failed(str(ctx.inputs.get("message") or "failed on purpose"))


class ScriptStep(_NoResume):
    """Runs `command` (an argument list) on an executor; non-zero exit fails the step, and the
    outputs are recorded either way."""

    instant = False
    executor_name = "local"

    def start(self, ctx: StepContext) -> StepResult:
        command = ctx.inputs.get("command")
        env = ctx.inputs.get("env") or {}
        if not isinstance(command, list) or not command:
            return Failed("input 'command' must be a non-empty list of strings", retryable=False)
        if not all(isinstance(a, str) for a in command):
            return Failed("input 'command' must hold only strings", retryable=False)
        if not isinstance(env, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()
        ):
            return Failed("input 'env' must map names to strings", retryable=False)
        if self.executor_name == "local" and not ctx.local_executor_enabled():
            return Failed(LOCAL_EXECUTOR_OFF, retryable=False)
        try:
            executor = ctx.executors.get(self.executor_name)
            result = executor.run(
                CommandRequest(
                    argv=tuple(command),
                    env={
                        **dict(env),
                        "WORKFLOW_RUN_ID": str(ctx.run_id),
                        "WORKFLOW_STEP_ID": ctx.node_id,
                        "WORKFLOW_ATTEMPT": str(ctx.attempt),
                    },
                    idempotency_key=ctx.idempotency_key,
                    timeout=ctx.remaining(),
                    cancel=ctx.cancel,
                    unsandboxed_allowed=ctx.unsandboxed_allowed,
                    attempt_token=ctx.attempt_token,
                )
            )
        except ConnectorError as exc:
            return Failed(exc.message, retryable=exc.retryable)
        except StellaError as exc:
            return Failed(exc.message, retryable=False)
        outputs = {"exit_code": result.exit_code, "stdout": result.stdout, "stderr": result.stderr}
        if result.timed_out:
            return Failed(
                f"timed out after {ctx.timeout_seconds} s; the process was killed",
                outputs,
                timed_out=True,
            )
        if result.cancelled:
            return Failed("cancelled; the process was killed", outputs, cancelled=True)
        if result.exit_code != 0:
            return Failed(f"the command exited with code {result.exit_code}", outputs)
        return Succeeded(outputs)


class HttpCheckStep(_NoResume):
    instant = False

    def start(self, ctx: StepContext) -> StepResult:
        url = ctx.inputs.get("url")
        expect = ctx.inputs.get("expect_status", 200)
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return Failed("input 'url' must be an http:// or https:// URL", retryable=False)
        if not isinstance(expect, int) or isinstance(expect, bool):
            return Failed("input 'expect_status' must be a whole number", retryable=False)
        remaining = ctx.remaining()
        timeout = HTTP_TIMEOUT_S if remaining is None else max(0.1, min(HTTP_TIMEOUT_S, remaining))
        try:
            response = httpx.get(url, timeout=timeout, follow_redirects=False)
        except httpx.TimeoutException:
            if remaining is not None and timeout >= remaining:
                return Failed(f"timed out after {ctx.timeout_seconds} s", timed_out=True)
            return Failed(f"no answer from {url} within {timeout:.0f} s")
        except httpx.HTTPError as exc:
            return Failed(f"request to {url} failed: {exc}")
        outputs = {"status": response.status_code}
        if response.status_code != expect:
            return Failed(f"{url} answered {response.status_code}, expected {expect}", outputs)
        return Succeeded(outputs)


def builtin_handlers() -> dict[str, StepHandler]:
    """Fresh handlers for the built-in step types (the composition root may add more)."""
    return {
        "approval": ApprovalStep(),
        "wait": WaitStep(),
        "script": ScriptStep(),
        "http-check": HttpCheckStep(),
        "notify": NotifyStep(),
        "fail": FailStep(),
    }
