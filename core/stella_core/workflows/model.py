"""The workflow template document (schema_version 1), run states and the records of templates
and runs read from the database. Pure types, no I/O.

A template is authoritative JSON: `schema_version`, `name`, `version`, `inputs`, `nodes`, `edges`
and a `layout` block the engine ignores. Input values of nodes are literals or expressions: a
string containing `${{ EXPR }}` is an expression; exactly one `${{ EXPR }}` takes the
expression's type, otherwise the parts are interpolated into a string.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
NODE_ID_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"


# A workflow's name: what the CLI, environments and runs refer to it by.
TEMPLATE_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class OnFailure(StrEnum):
    FAIL = "fail"  # the run fails (after retries)
    CONTINUE = "continue"  # dependants run as if the step had succeeded
    ROLLBACK = "rollback"  # the run's rollback path runs, then the run ends rolled_back


class Retry(Strict):
    max_attempts: int = Field(default=1, ge=1, le=100)
    backoff_initial_ms: int = Field(default=1000, ge=0, le=3_600_000)
    backoff_factor: float = Field(default=2.0, ge=1.0, le=10.0)

    def delay_ms(self, attempt: int) -> int:
        """Delay before attempt number `attempt + 1` (attempt counts from 1)."""
        return int(self.backoff_initial_ms * self.backoff_factor ** (attempt - 1))


class InputSpec(Strict):
    """A template-level input (given with `stella run start --input k=v`)."""

    type: Literal["string", "integer", "number", "boolean", "object", "array"] = "string"
    required: bool = False
    default: Any = None
    description: str = ""


class Node(Strict):
    id: str = Field(pattern=NODE_ID_PATTERN)
    type: str
    name: str = ""
    inputs: dict[str, Any] = Field(default_factory=dict)
    retry: Retry = Field(default_factory=Retry)
    timeout_seconds: int | None = Field(default=None, ge=1, le=7 * 24 * 3600)
    on_failure: OnFailure = OnFailure.FAIL
    condition: str | None = None  # an expression; false skips the node and what only it leads to
    rollback: bool = False  # part of the rollback path: runs only when a rollback is triggered


class Edge(Strict):
    source: str = Field(alias="from")
    target: str = Field(alias="to")


class Position(Strict):
    x: float
    y: float


class Layout(Strict):
    positions: dict[str, Position] = Field(default_factory=dict)


class Template(Strict):
    schema_version: int = SCHEMA_VERSION
    name: str = Field(pattern=TEMPLATE_NAME_PATTERN)
    version: int = Field(default=1, ge=1)
    description: str = ""
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    nodes: tuple[Node, ...] = ()
    edges: tuple[Edge, ...] = ()
    layout: Layout = Field(default_factory=Layout)

    def node(self, node_id: str) -> Node | None:
        return next((n for n in self.nodes if n.id == node_id), None)

    def to_document(self) -> dict[str, Any]:
        """The JSON document (edges with `from`/`to`)."""
        return self.model_dump(mode="json", by_alias=True)


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"  # only approvals (or timers) are outstanding
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    TIMED_OUT = "timed_out"  # a step exceeded timeout_seconds and the run failed for it

    @property
    def terminal(self) -> bool:
        return self in (
            RunStatus.SUCCEEDED,
            RunStatus.FAILED,
            RunStatus.CANCELLED,
            RunStatus.ROLLED_BACK,
            RunStatus.TIMED_OUT,
        )


class StepStatus(StrEnum):
    PENDING = "pending"  # waiting for what it depends on
    READY = "ready"  # claimable (maybe not before `not_before`)
    RUNNING = "running"  # claimed by a worker holding a lease
    WAITING = "waiting"  # an approval or a timer; holds no worker
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CONTINUED = "continued"  # failed with on_failure=continue
    SKIPPED = "skipped"  # condition false, or only reachable through a skipped step
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def terminal(self) -> bool:
        return self in (
            StepStatus.SUCCEEDED,
            StepStatus.FAILED,
            StepStatus.CONTINUED,
            StepStatus.SKIPPED,
            StepStatus.CANCELLED,
            StepStatus.TIMED_OUT,
        )


class Problem(Strict):
    """One validation finding, naming the node and field (None for template-level problems)."""

    node: str | None
    field: str | None
    message: str


# ------------------------------------------------------------------------------- records
class _Record(BaseModel):
    """A record read from the database: frozen, nothing beyond its fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class TemplateSummary(_Record):
    id: UUID
    name: str
    latest_version: int
    latest_digest: str
    updated_at: datetime
    updated_by: str


class TemplateVersionInfo(_Record):
    id: UUID
    template_id: UUID
    name: str
    version: int
    digest: str
    created_at: datetime
    created_by: str


class StepRunInfo(_Record):
    id: str
    type: str
    rollback: bool
    status: StepStatus
    attempts: int
    inputs: dict[str, Any] | None
    outputs: dict[str, Any] | None
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None
    lease_owner: str | None
    not_before: datetime | None
    wake_at: datetime | None
    idempotency_key: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "rollback": self.rollback,
            "status": self.status.value,
            "attempts": self.attempts,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "error": self.error,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
        }


class RunInfo(_Record):
    id: UUID
    template: str
    template_version: int
    template_version_id: UUID
    release: dict[str, Any] | None
    inputs: dict[str, Any]
    status: RunStatus
    phase: str
    error: str | None
    rollback_from: str | None
    created_at: datetime
    created_by: str
    started_at: datetime | None
    finished_at: datetime | None
    steps: tuple[StepRunInfo, ...] = ()

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": str(self.id),
            "status": self.status.value,
            "template": self.template,
            "template_version": self.template_version,
            "release": self.release,
            "inputs": self.inputs,
            "phase": self.phase,
            "error": self.error,
            "rollback_from": self.rollback_from,
            "created_at": _iso(self.created_at),
            "created_by": self.created_by,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "steps": [s.to_json() for s in self.steps],
        }


class RunEvent(_Record):
    seq: int
    at: datetime
    node_id: str | None
    kind: str
    details: dict[str, Any]
    actor: str

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": _iso(self.at),
            "node": self.node_id,
            "kind": self.kind,
            "details": self.details,
            "actor": self.actor,
        }


class Approval(_Record):
    person: str
    product_role: str
    decision: str
    comment: str
    at: datetime


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
