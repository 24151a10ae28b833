"""What a step type declares: typed input and output JSON Schemas, and whether it touches the
outside world (then every attempt carries an idempotency key). Pure data, no I/O.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class StepTypeSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    title: str
    description: str
    category: str = "general"
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    output_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    side_effects: bool = False
    waits: bool = False  # holds no worker while waiting (approval)

    @property
    def required_inputs(self) -> tuple[str, ...]:
        return tuple(self.input_schema.get("required", ()))

    @property
    def outputs(self) -> dict[str, Any]:
        return dict(self.output_schema.get("properties", {}))


def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required or [],
        "additionalProperties": False,
    }


STRING_LIST = {"type": "array", "items": {"type": "string"}}
# A number of targets, or a share of them ("25%").
AMOUNT = {
    "oneOf": [
        {"type": "integer", "minimum": 1},
        {"type": "string", "pattern": "^(100|[1-9][0-9]?)%$"},
    ]
}

BUILTIN_SPECS: tuple[StepTypeSpec, ...] = (
    StepTypeSpec(
        name="approval",
        title="Approval",
        description="Waits, without holding a worker, until enough eligible people approve.",
        category="control",
        input_schema=_obj(
            {
                "approvers": {**STRING_LIST, "description": "people or product roles"},
                "required": {"type": "integer", "minimum": 1},
            },
            ["approvers", "required"],
        ),
        output_schema=_obj({"approved_by": STRING_LIST}),
        waits=True,
    ),
    StepTypeSpec(
        name="wait",
        title="Wait",
        description="Waits a number of seconds.",
        category="control",
        input_schema=_obj({"seconds": {"type": "integer", "minimum": 0}}, ["seconds"]),
        output_schema=_obj({"waited_seconds": {"type": "integer"}}),
    ),
    StepTypeSpec(
        name="script",
        title="Script",
        description="Runs a command (an argument list, never a shell) in a sandbox.",
        category="action",
        input_schema=_obj(
            {
                "command": {**STRING_LIST, "minItems": 1},
                "env": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    # Names starting with STELLA_ are the product's own; a script never gets one.
                    "propertyNames": {"not": {"pattern": "^STELLA_"}},
                },
            },
            ["command"],
        ),
        output_schema=_obj(
            {
                "exit_code": {"type": "integer"},
                "stdout": {"type": "string"},
                "stderr": {"type": "string"},
            }
        ),
        side_effects=True,
    ),
    StepTypeSpec(
        name="http-check",
        title="HTTP check",
        description="Requests a URL and expects a status code.",
        category="check",
        input_schema=_obj(
            {"url": {"type": "string"}, "expect_status": {"type": "integer"}}, ["url"]
        ),
        output_schema=_obj({"status": {"type": "integer"}}),
    ),
    StepTypeSpec(
        name="deploy",
        title="Deploy",
        description=(
            "Puts the release's exact digests on the targets of an environment (agent, SSH or "
            "WinRM): a compose lockfile pinned by digest, pulled, started, read back and "
            "health-checked (each component's x-stella-health), then a signed version sticker "
            "on each target and a deployment evidence packet. Strategies: all-at-once, rolling "
            "(batches), canary (rungs, optionally approved) and blue-green (two groups)."
        ),
        category="action",
        input_schema=_obj(
            {
                "environment": {
                    "type": "string",
                    "minLength": 1,
                    "description": "where to deploy (default: the promotion's environment)",
                },
                "strategy": {
                    "enum": ["all-at-once", "rolling", "canary", "blue-green"],
                    "default": "all-at-once",
                    "description": "how the release reaches the targets",
                },
                "batch_size": {
                    **AMOUNT,
                    "description": "rolling: targets per batch, a count or a percentage ('25%')",
                },
                "max_unavailable": {
                    **AMOUNT,
                    "description": "rolling: at most this many targets deploying at once",
                },
                "canary_percentages": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 1, "maximum": 100},
                    "minItems": 1,
                    "maxItems": 10,
                    "description": "canary: the share of targets after each rung, e.g. [10, 50]",
                },
                "groups": {
                    "type": "array",
                    "items": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"},
                    "minItems": 2,
                    "maxItems": 2,
                    "description": "blue-green: the two target groups (the targets' group field)",
                },
                "pause_seconds": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": 3600,
                    "description": "rolling and canary: a pause between batches or rungs",
                },
                "rollback_on_failure": {
                    "type": "boolean",
                    "default": True,
                    "description": (
                        "rolling and canary: a failed batch rolls every target reached back to "
                        "what it ran before"
                    ),
                },
                "canary_approval": {
                    "type": "boolean",
                    "default": False,
                    "description": (
                        "canary: each rung after the first waits for a promotion approval "
                        "(never the requester's)"
                    ),
                },
                "phase": {
                    "enum": ["deploy", "retire"],
                    "default": "deploy",
                    "description": (
                        "blue-green: deploy to the idle group, or (a second deploy step after "
                        "the workflow's switch step) record it as live and stop the old group"
                    ),
                },
            }
        ),
        output_schema=_obj(
            {
                "targets": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "target": {"type": "string"},
                            "status": {"type": "string"},
                            "digests": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                        },
                    },
                },
                "deployment_id": {"type": "string"},
                "lockfile_digest": {"type": "string"},
                "evidence_packet": {"type": "string"},
                "status": {"type": "string"},
                "group": {"type": "string"},
                "previous_group": {"type": "string"},
                "live_group": {"type": "string"},
                "stopped_group": {"type": "string"},
            }
        ),
        side_effects=True,
    ),
    StepTypeSpec(
        name="notify",
        title="Notify",
        description="Writes a message to the run log (channels come with plugins).",
        category="action",
        input_schema=_obj({"message": {"type": "string"}}, ["message"]),
        output_schema=_obj({"message": {"type": "string"}}),
    ),
    StepTypeSpec(
        name="fail",
        title="Fail",
        description="Always fails with a message (for testing templates).",
        category="control",
        input_schema=_obj({"message": {"type": "string"}}, ["message"]),
        output_schema=_obj({}),
    ),
)
