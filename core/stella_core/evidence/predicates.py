"""Predicate types of evidence packets, their builders and their JSON Schema validation.

Decisions use SLSA Verification Summary v1: the subject is what was decided about (release
component digests), `policy` the policy or gate configuration by digest, `inputAttestations`
every input by digest, and a URI-named extension field points by digest to the full decision
record (which replay re-evaluates). Everything else uses predicate types of our own under
`https://stella-desk.dev/evidence/<type>/v1`; the major version is in the URI, so a breaking
change is a new type, never an edited one.

Times are explicit inputs (RFC 3339 UTC strings, or aware datetimes converted to one): builders
never read a clock, so replay reproduces a predicate exactly.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from stella_core.errors import DefinitionError
from stella_core.evidence import schema
from stella_core.evidence.packets import check_json_value, digest_set, is_uri, sha256_hex

SLSA_VSA_V1 = "https://slsa.dev/verification_summary/v1"
PREDICATE_BASE = "https://stella-desk.dev/evidence"
LOCKFILE_NAME = "compose.stella.lock.yml"
LOCKFILE_MEDIA_TYPE = "application/yaml"
APPROVAL_V1 = f"{PREDICATE_BASE}/approval/v1"
DEPLOYMENT_V1 = f"{PREDICATE_BASE}/deployment/v1"
ROLLBACK_V1 = f"{PREDICATE_BASE}/rollback/v1"
DRIFT_V1 = f"{PREDICATE_BASE}/drift/v1"
RUN_V1 = f"{PREDICATE_BASE}/run/v1"
EXCEPTION_V1 = f"{PREDICATE_BASE}/exception/v1"
KEY_V1 = f"{PREDICATE_BASE}/key/v1"
POLICY_V1 = f"{PREDICATE_BASE}/policy/v1"
# VSA extension field (in-toto: extension names are URIs) holding the decision record's
# ResourceDescriptor.
DECISION_RECORD_FIELD = f"{PREDICATE_BASE}/decision-record/v1"

# Short names, as `stella evidence list --type` shows them.
PREDICATE_NAMES: dict[str, str] = {
    SLSA_VSA_V1: "vsa",
    APPROVAL_V1: "approval",
    DEPLOYMENT_V1: "deployment",
    ROLLBACK_V1: "rollback",
    DRIFT_V1: "drift",
    RUN_V1: "run",
    EXCEPTION_V1: "exception",
    KEY_V1: "key",
    POLICY_V1: "policy",
}
PREDICATE_TYPES: dict[str, str] = {name: uri for uri, name in PREDICATE_NAMES.items()}

_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z")


def rfc3339(value: str | datetime) -> str:
    """An RFC 3339 UTC time string (`…Z`). Strings must already be in that form and a real
    time; datetimes must be timezone-aware and are converted to UTC."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise DefinitionError("a time must be timezone-aware (got a naive datetime)")
        utc = value.astimezone(UTC)
        text = utc.strftime("%Y-%m-%dT%H:%M:%S")
        return f"{text}.{utc.microsecond:06d}Z" if utc.microsecond else f"{text}Z"
    if not isinstance(value, str) or not _TIME.fullmatch(value):
        raise DefinitionError(
            f"time {value!r} is not an RFC 3339 UTC time such as 2026-03-01T12:00:00Z"
        )
    try:
        # fromisoformat takes at most 6 fractional digits; the calendar check is what matters.
        datetime.fromisoformat(value[:19] + "+00:00")
    except ValueError as exc:
        raise DefinitionError(f"time {value!r} is not a real date and time") from exc
    return value


def _uri(value: object, what: str) -> str:
    if not is_uri(value):
        raise DefinitionError(f"{what} {value!r} is not a URI")
    return str(value)


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise DefinitionError(f"{what} must be a non-empty string")
    return str(value)


def resource(uri: str, digest: str) -> dict[str, Any]:
    """An in-toto ResourceDescriptor naming something by URI and SHA-256 digest."""
    return {"uri": _uri(uri, "resource URI"), "digest": digest_set(digest)}


def components(items: Mapping[str, str]) -> list[dict[str, Any]]:
    """A release's `component -> digest` map as a list sorted by component name."""
    return [
        {"name": _text(name, "component name"), "digest": digest_set(d)}
        for name, d in sorted(items.items())
    ]


def vsa_predicate(
    verifier_id: str,
    time_verified: str | datetime,
    resource_uri: str,
    policy_uri: str,
    policy_digest: str,
    input_attestations: Sequence[tuple[str, str]],
    result: str,
    levels: Sequence[str],
    decision_record_digest: str,
    *,
    decision_record_name: str = "decision-record.json",
) -> dict[str, Any]:
    """A SLSA VSA v1 predicate for one decision.

    `input_attestations` must list every input the decision used, as (uri, digest); they are
    sorted (and exact duplicates dropped) since their order means nothing. `levels` are our own
    result labels: values starting with `SLSA_` are refused, as VSA reserves them."""
    if result not in ("PASSED", "FAILED"):
        raise DefinitionError(f"verification result {result!r} must be PASSED or FAILED")
    for level in levels:
        _text(level, "verified level")
        if level.startswith("SLSA_"):
            raise DefinitionError(
                f"verified level {level!r} starts with SLSA_, which VSA reserves for SLSA levels"
            )
    inputs = sorted({(_uri(u, "input URI"), sha256_hex(d)) for u, d in input_attestations})
    predicate = {
        "verifier": {"id": _uri(verifier_id, "verifier id")},
        "timeVerified": rfc3339(time_verified),
        "resourceUri": _uri(resource_uri, "resource URI"),
        "policy": resource(policy_uri, policy_digest),
        "inputAttestations": [{"uri": u, "digest": {"sha256": h}} for u, h in inputs],
        "verificationResult": result,
        "verifiedLevels": sorted(set(levels)),
        DECISION_RECORD_FIELD: {
            "name": _text(decision_record_name, "decision record name"),
            "digest": digest_set(decision_record_digest),
        },
    }
    validate_predicate(SLSA_VSA_V1, predicate)
    return predicate


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """How one step of a run ended. Times are None for steps that never started."""

    id: str
    status: str
    attempts: int
    type: str | None = None
    started_at: str | datetime | None = None
    finished_at: str | datetime | None = None
    outputs_digest: str | None = None  # SHA-256 of the JCS bytes of the step's outputs

    def to_json(self) -> dict[str, Any]:
        step: dict[str, Any] = {
            "id": self.id,
            "status": str(self.status),
            "attempts": self.attempts,
        }
        if self.type is not None:
            step["type"] = self.type
        if self.started_at is not None:
            step["startedAt"] = rfc3339(self.started_at)
        if self.finished_at is not None:
            step["finishedAt"] = rfc3339(self.finished_at)
        if self.outputs_digest is not None:
            step["outputsDigest"] = digest_set(self.outputs_digest)
        return step


def run_predicate(
    *,
    run_id: str | UUID,
    template_name: str,
    template_version: int,
    template_digest: str,
    status: str,
    steps: Sequence[StepOutcome],
    started_at: str | datetime,
    finished_at: str | datetime,
    actor: str,
    release_name: str | None = None,
    release_components: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The predicate of a `run` packet: a workflow run's outcome. Steps are sorted by id."""
    ids = [s.id for s in steps]
    if len(set(ids)) != len(ids):
        raise DefinitionError("run steps must have unique ids")
    try:
        run_uuid = str(UUID(str(run_id)))
    except ValueError as exc:
        raise DefinitionError(f"run id {run_id!r} is not a UUID") from exc
    predicate: dict[str, Any] = {
        "runId": run_uuid,
        "template": {
            "name": _text(template_name, "template name"),
            "version": template_version,
            "digest": digest_set(template_digest),
        },
        "status": str(status),
        "actor": _text(actor, "actor"),
        "startedAt": rfc3339(started_at),
        "finishedAt": rfc3339(finished_at),
        "steps": [s.to_json() for s in sorted(steps, key=lambda s: s.id)],
    }
    if release_name is not None or release_components:
        predicate["release"] = {
            "name": _text(release_name, "release name"),
            "components": components(release_components or {}),
        }
    validate_predicate(RUN_V1, predicate)
    return predicate


@dataclass(frozen=True)
class TargetOutcome:
    """One target's part in a deployment, as its evidence records it."""

    id: str
    name: str
    status: str  # succeeded | failed | skipped | cancelled | rolled_back
    transport: str | None = None
    observed: Mapping[str, str] | None = None  # component -> digest found running
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {"id": self.id, "name": self.name, "status": self.status}
        if self.transport:
            found["transport"] = self.transport
        if self.observed is not None:
            found["observed"] = components(self.observed)
        if self.error:
            found["error"] = self.error[:2000]
        return found


def deployment_predicate(
    *,
    deployment_id: str | UUID,
    release_name: str,
    release_components: Mapping[str, str],
    environment: str,
    status: str,
    targets: Sequence[TargetOutcome],
    started_at: str | datetime,
    finished_at: str | datetime,
    actor: str,
    lockfile_digest: str,
    strategy: str = "all-at-once",
    promotion_id: str | UUID | None = None,
    run_id: str | UUID | None = None,
) -> dict[str, Any]:
    """The predicate of a `deployment` packet: which digests went to which targets, through
    which lockfile (named by digest), and what each target answered. Targets sorted by id."""
    predicate: dict[str, Any] = {
        "deploymentId": str(UUID(str(deployment_id))),
        "release": {
            "name": _text(release_name, "release name"),
            "components": components(release_components),
        },
        "environment": _text(environment, "environment"),
        "strategy": strategy,
        "status": status,
        "lockfile": {"name": LOCKFILE_NAME, "digest": digest_set(lockfile_digest)},
        "targets": [t.to_json() for t in sorted(targets, key=lambda t: t.id)],
        "startedAt": rfc3339(started_at),
        "finishedAt": rfc3339(finished_at),
        "actor": _text(actor, "actor"),
    }
    if promotion_id is not None:
        predicate["promotionId"] = str(UUID(str(promotion_id)))
    if run_id is not None:
        predicate["runId"] = str(UUID(str(run_id)))
    validate_predicate(DEPLOYMENT_V1, predicate)
    return predicate


@functools.cache
def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(schema.load_schema(name))


def validate_predicate(predicate_type: str, predicate: Any) -> None:
    """Check a predicate against the schema of its type; DefinitionError naming the JSON path of
    the first problem. Floats are refused first: JSON Schema's `integer` admits 1.0."""
    name = PREDICATE_NAMES.get(predicate_type)
    if name is None:
        raise DefinitionError(f"no schema for predicate type {predicate_type!r}")
    check_json_value(predicate)
    errors = sorted(_validator(name).iter_errors(predicate), key=_error_order)
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise DefinitionError(
            f"{name} predicate is invalid at {first.json_path}: {_short(first.message)}{more}"
        )


def _error_order(error: ValidationError) -> tuple[int, str]:
    return (len(error.absolute_path), error.json_path)


def _short(message: str, limit: int = 200) -> str:
    return message if len(message) <= limit else message[: limit - 1] + "…"


def referenced_inputs(predicate_type: str, predicate: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(name, `sha256:<hex>`) of every document a signed predicate names by digest and that a
    capsule must therefore carry: a decision's policy, inputs and decision record; a run's
    template. Read from the signed predicate, never from an unsigned manifest."""
    found: list[tuple[str, str]] = []

    def add(name: str, value: Any) -> None:
        digest = value.get("sha256") if isinstance(value, Mapping) else None
        if isinstance(digest, str):
            found.append((name, "sha256:" + digest))

    if predicate_type == SLSA_VSA_V1:
        policy = predicate.get("policy")
        if isinstance(policy, Mapping):
            add(str(policy.get("uri", "policy")), policy.get("digest"))
        for item in predicate.get("inputAttestations") or []:
            if isinstance(item, Mapping):
                add(str(item.get("uri", "input")), item.get("digest"))
        record = predicate.get(DECISION_RECORD_FIELD)
        if isinstance(record, Mapping):
            add(str(record.get("name", "decision record")), record.get("digest"))
    elif predicate_type == DEPLOYMENT_V1:
        lockfile = predicate.get("lockfile")
        if isinstance(lockfile, Mapping):
            add(str(lockfile.get("name", LOCKFILE_NAME)), lockfile.get("digest"))
    elif predicate_type == DRIFT_V1:
        report = predicate.get("report")
        if isinstance(report, Mapping):
            add(f"inspection report by {report.get('observer')}", report.get("digest"))
    elif predicate_type == RUN_V1:
        template = predicate.get("template")
        if isinstance(template, Mapping):
            add(
                f"template {template.get('name')} v{template.get('version')}",
                template.get("digest"),
            )
    return found


# --- drift (issue 12, H2) --------------------------------------------------------------------
_DIGEST_TEXT = re.compile(r"^sha256:[0-9a-f]{64}$")


def drift_predicate(
    *,
    check_id: str | UUID,
    environment: str,
    target_id: str | UUID,
    target_name: str,
    checked_at: str | datetime,
    expected_release: str,
    expected_components: Mapping[str, str],
    status: str,
    findings: Sequence[Mapping[str, Any]],
    reason: str | None = None,
    previous_status: str | None = None,
    sticker_digest: str | None = None,
    report: Mapping[str, Any] | None = None,
    remediation: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The predicate of a `drift` packet: a target's status changed. `findings` are
    `{component, kind, expected?, observed?, tag?}` with digests as `sha256:<hex>` text;
    `report` is `{digest, observerKind, observer, certificateSerial?}` (who saw what runs);
    `remediation` `{deploymentId, status, packetId?}`."""
    items = []
    for f in sorted(findings, key=lambda f: (str(f["component"]), str(f["kind"]))):
        item: dict[str, Any] = {"component": _text(f["component"], "component"), "kind": f["kind"]}
        for key in ("expected", "observed"):
            value = f.get(key)
            if isinstance(value, str) and _DIGEST_TEXT.fullmatch(value):
                item[key] = digest_set(value)
        if f.get("tag"):
            item["tag"] = str(f["tag"])
        items.append(item)
    predicate: dict[str, Any] = {
        "checkId": str(UUID(str(check_id))),
        "environment": _text(environment, "environment"),
        "target": {"id": str(target_id), "name": _text(target_name, "target name")},
        "checkedAt": rfc3339(checked_at),
        "expected": {
            "name": _text(expected_release, "release name"),
            "components": components(expected_components),
        },
        "drifted": bool(items),
        "findings": items,
        "status": status,
    }
    if sticker_digest is not None:
        predicate["stickerDigest"] = digest_set(sticker_digest)
    if reason:
        predicate["reason"] = reason[:2000]
    if previous_status is not None:
        predicate["previousStatus"] = previous_status
    if report is not None:
        found = {
            "digest": digest_set(str(report["digest"])),
            "observerKind": report["observerKind"],
            "observer": _text(report["observer"], "observer"),
        }
        if report.get("certificateSerial"):
            found["certificateSerial"] = str(report["certificateSerial"])
        predicate["report"] = found
    if remediation is not None:
        done: dict[str, Any] = {
            "deploymentId": str(UUID(str(remediation["deploymentId"]))),
            "status": str(remediation["status"]),
        }
        if remediation.get("packetId"):
            done["packetId"] = str(UUID(str(remediation["packetId"])))
        predicate["remediation"] = done
    validate_predicate(DRIFT_V1, predicate)
    return predicate


# --- rollback (issue 12, H3) ---------------------------------------------------------------------
@dataclass(frozen=True)
class TargetBefore:
    """What one target ran before a rollback, as its signed sticker said."""

    target: str
    release: str
    components: Mapping[str, str]
    target_id: str | None = None
    deployment_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "target": _text(self.target, "target"),
            "release": _text(self.release, "release name"),
            "components": components(self.components),
        }
        if self.target_id is not None:
            found["targetId"] = str(UUID(self.target_id))
        if self.deployment_id is not None:
            found["deploymentId"] = str(UUID(self.deployment_id))
        return found


def rollback_predicate(
    *,
    rollback_id: str | UUID,
    environment: str,
    from_release: str,
    from_components: Mapping[str, str],
    to_release: str,
    to_components: Mapping[str, str],
    trigger: str,
    reason: str,
    status: str,
    started_at: str | datetime,
    finished_at: str | datetime,
    actor: str,
    before: Sequence[TargetBefore] = (),
    promotion_id: str | UUID | None = None,
    run_id: str | UUID | None = None,
    run_status: str | None = None,
    deployment_id: str | UUID | None = None,
) -> dict[str, Any]:
    """The predicate of a `rollback` packet: the environment went from `from` (what its targets
    ran, each as `before` records it) back to `to`, by digest; why, who, and how it ended."""
    predicate: dict[str, Any] = {
        "rollbackId": str(UUID(str(rollback_id))),
        "environment": _text(environment, "environment"),
        "from": {
            "name": _text(from_release, "release name"),
            "components": components(from_components),
        },
        "to": {"name": _text(to_release, "release name"), "components": components(to_components)},
        "trigger": trigger,
        "reason": _text(reason, "reason")[:4000],
        "status": status,
        "startedAt": rfc3339(started_at),
        "finishedAt": rfc3339(finished_at),
        "actor": _text(actor, "actor"),
        "before": [b.to_json() for b in sorted(before, key=lambda b: b.target)],
    }
    if promotion_id is not None:
        predicate["promotionId"] = str(UUID(str(promotion_id)))
    if run_id is not None:
        predicate["runId"] = str(UUID(str(run_id)))
    if run_status is not None:
        predicate["runStatus"] = run_status
    if deployment_id is not None:
        predicate["deploymentId"] = str(UUID(str(deployment_id)))
    validate_predicate(ROLLBACK_V1, predicate)
    return predicate
