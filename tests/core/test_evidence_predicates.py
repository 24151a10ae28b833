"""Predicate types: builders produce what the shipped JSON Schemas accept, floats never pass, and
the schemas follow the workflow engine's states."""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from stella_core.crypto.keys import SigningKey
from stella_core.errors import DefinitionError
from stella_core.evidence import schema
from stella_core.evidence.packets import sign_statement, statement, verify_bundle
from stella_core.evidence.predicates import (
    APPROVAL_V1,
    DECISION_RECORD_FIELD,
    DEPLOYMENT_V1,
    DRIFT_V1,
    PREDICATE_NAMES,
    PREDICATE_TYPES,
    ROLLBACK_V1,
    RUN_V1,
    SLSA_VSA_V1,
    StepOutcome,
    rfc3339,
    run_predicate,
    validate_predicate,
    vsa_predicate,
)
from stella_core.workflows.model import RunStatus, StepStatus


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def vsa(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "verifier_id": "https://stella-desk.dev/verifier/orchestrator",
        "time_verified": "2026-03-01T12:00:00Z",
        "resource_uri": "oci://registry.local/shop/api@sha256:" + sha("api"),
        "policy_uri": "stella://policies/prod-gate/v3",
        "policy_digest": "sha256:" + sha("policy"),
        "input_attestations": [
            ("stella://scans/grype/1", sha("scan")),
            ("stella://vex/openvex/2", "sha256:" + sha("vex")),
        ],
        "result": "PASSED",
        "levels": ["STELLA_GATE_PASSED", "STELLA_APPROVED"],
        "decision_record_digest": sha("record"),
    }
    args.update(overrides)
    return vsa_predicate(**args)


def run(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "run_id": "0d6f0b8e-8a53-4b8e-9a6d-8a7e9c2c1f00",
        "template_name": "promote-to-prod",
        "template_version": 3,
        "template_digest": sha("template"),
        "status": RunStatus.SUCCEEDED,
        "steps": [
            StepOutcome(
                "deploy",
                StepStatus.SUCCEEDED,
                2,
                "deploy",
                "2026-03-01T12:00:05Z",
                "2026-03-01T12:01:00Z",
                sha("out"),
            ),
            StepOutcome(
                "approve",
                "succeeded",
                1,
                "approval",
                datetime(2026, 3, 1, 12, 0, 1, tzinfo=UTC),
                datetime(2026, 3, 1, 12, 0, 4, 250000, tzinfo=UTC),
            ),
            StepOutcome("notify", "skipped", 0),
        ],
        "started_at": "2026-03-01T12:00:00Z",
        "finished_at": "2026-03-01T12:01:00Z",
        "actor": "alice",
        "release_name": "shop-2026.03.1",
        "release_components": {"web": sha("web"), "api": "sha256:" + sha("api")},
    }
    args.update(overrides)
    return run_predicate(**args)


def test_type_uris() -> None:
    assert SLSA_VSA_V1 == "https://slsa.dev/verification_summary/v1"
    assert {APPROVAL_V1, DEPLOYMENT_V1, ROLLBACK_V1, DRIFT_V1, RUN_V1} == {
        f"https://stella-desk.dev/evidence/{t}/v1"
        for t in ("approval", "deployment", "rollback", "drift", "run")
    }
    assert PREDICATE_TYPES["run"] == RUN_V1
    assert set(PREDICATE_NAMES.values()) == set(schema.SCHEMA_FILES)


@pytest.mark.parametrize("name", sorted(schema.SCHEMA_FILES))
def test_shipped_schemas_are_valid_2020_12(name: str) -> None:
    document = schema.load_schema(name)
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(document)
    # No schema admits a JSON number that is not an integer.
    assert '"number"' not in json.dumps(document)


def test_vsa_layout() -> None:
    predicate = vsa()
    assert predicate["verifier"] == {"id": "https://stella-desk.dev/verifier/orchestrator"}
    assert predicate["timeVerified"] == "2026-03-01T12:00:00Z"
    assert predicate["policy"] == {
        "uri": "stella://policies/prod-gate/v3",
        "digest": {"sha256": sha("policy")},
    }
    assert predicate["inputAttestations"] == [
        {"uri": "stella://scans/grype/1", "digest": {"sha256": sha("scan")}},
        {"uri": "stella://vex/openvex/2", "digest": {"sha256": sha("vex")}},
    ]
    assert predicate["verificationResult"] == "PASSED"
    assert predicate["verifiedLevels"] == ["STELLA_APPROVED", "STELLA_GATE_PASSED"]
    assert predicate[DECISION_RECORD_FIELD] == {
        "name": "decision-record.json",
        "digest": {"sha256": sha("record")},
    }
    assert DECISION_RECORD_FIELD.startswith("https://")


def test_vsa_is_independent_of_input_order() -> None:
    inputs = [("stella://a", sha("a")), ("stella://b", sha("b")), ("stella://a", sha("a"))]
    assert vsa(input_attestations=inputs) == vsa(input_attestations=list(reversed(inputs)))
    assert len(vsa(input_attestations=inputs)["inputAttestations"]) == 2


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"levels": ["SLSA_BUILD_LEVEL_3"]}, "SLSA_"),
        ({"result": "passed"}, "PASSED or FAILED"),
        ({"time_verified": "2026-03-01 12:00:00"}, "RFC 3339"),
        ({"time_verified": "2026-03-01T12:00:00+01:00"}, "RFC 3339"),
        ({"time_verified": "2026-02-30T12:00:00Z"}, "real date"),
        ({"time_verified": datetime(2026, 3, 1)}, "timezone-aware"),
        ({"policy_uri": "no uri here"}, "not a URI"),
        ({"policy_digest": "md5:abc"}, "lowercase hex"),
        ({"input_attestations": [("stella://x", "abc")]}, "lowercase hex"),
        ({"decision_record_digest": sha("r").upper()}, "lowercase hex"),
    ],
)
def test_vsa_refuses_bad_input(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(DefinitionError, match=match):
        vsa(**overrides)


def test_rfc3339_from_aware_datetimes() -> None:
    cet = timezone(timedelta(hours=1))
    assert rfc3339(datetime(2026, 3, 1, 13, 0, tzinfo=cet)) == "2026-03-01T12:00:00Z"
    assert rfc3339(datetime(2026, 3, 1, 12, 0, 0, 5, tzinfo=UTC)) == "2026-03-01T12:00:00.000005Z"
    assert rfc3339("2026-03-01T12:00:00.123456789Z") == "2026-03-01T12:00:00.123456789Z"


def test_run_layout() -> None:
    predicate = run()
    assert predicate["runId"] == "0d6f0b8e-8a53-4b8e-9a6d-8a7e9c2c1f00"
    assert predicate["template"] == {
        "name": "promote-to-prod",
        "version": 3,
        "digest": {"sha256": sha("template")},
    }
    assert predicate["release"] == {
        "name": "shop-2026.03.1",
        "components": [
            {"name": "api", "digest": {"sha256": sha("api")}},
            {"name": "web", "digest": {"sha256": sha("web")}},
        ],
    }
    assert predicate["status"] == "succeeded"
    assert type(predicate["status"]) is str  # enums are stored as plain text
    assert [s["id"] for s in predicate["steps"]] == ["approve", "deploy", "notify"]
    approve, deploy, notify = predicate["steps"]
    assert approve == {
        "id": "approve",
        "status": "succeeded",
        "attempts": 1,
        "type": "approval",
        "startedAt": "2026-03-01T12:00:01Z",
        "finishedAt": "2026-03-01T12:00:04.250000Z",
    }
    assert deploy["outputsDigest"] == {"sha256": sha("out")}
    assert notify == {"id": "notify", "status": "skipped", "attempts": 0}


def test_run_without_release() -> None:
    predicate = run(release_name=None, release_components=None)
    assert "release" not in predicate


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"status": "running"}, r"\$\.status"),  # a run packet is emitted when the run ended
        ({"template_version": 0}, r"\$\.template\.version"),
        ({"run_id": "not-a-uuid"}, "not a UUID"),
        ({"steps": [StepOutcome("a", "succeeded", 1), StepOutcome("a", "failed", 1)]}, "unique"),
        ({"steps": [StepOutcome("Bad-Id", "succeeded", 1)]}, r"\$\.steps\[0\]\.id"),
        ({"steps": [StepOutcome("a", "exploded", 1)]}, r"\$\.steps\[0\]\.status"),
        ({"steps": [StepOutcome("a", "succeeded", 1.0)]}, "float"),  # type: ignore[arg-type]
        ({"actor": ""}, "actor"),
        ({"release_components": {"api": "latest"}}, "lowercase hex"),
    ],
)
def test_run_refuses_bad_input(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(DefinitionError, match=match):
        run(**overrides)


def test_run_schema_follows_the_engine_states() -> None:
    document = schema.load_schema("run")
    run_states = set(document["properties"]["status"]["enum"])
    assert run_states == {s.value for s in RunStatus if s.terminal}
    step_states = set(document["properties"]["steps"]["items"]["properties"]["status"]["enum"])
    assert step_states == {s.value for s in StepStatus}


def test_builder_output_signs_and_verifies() -> None:
    key = SigningKey.generate()
    predicate = vsa()
    stmt = statement([("api", sha("api")), ("web", sha("web"))], SLSA_VSA_V1, predicate)
    packet = verify_bundle(sign_statement(stmt, key), [key.public_key()])
    validate_predicate(packet.predicate_type, packet.predicate)
    assert packet.predicate == predicate


# --- schema checks on their own, for every type ------------------------------------------------

COMPONENTS = [{"name": "api", "digest": {"sha256": sha("api")}}]
RELEASE = {"name": "shop-1", "components": COMPONENTS}
EXAMPLES: dict[str, dict[str, Any]] = {
    APPROVAL_V1: {
        "promotionId": "0d6f0b8e-8a53-4b8e-9a6d-8a7e9c2c1f01",
        "decision": "approved",
        "approver": {"name": "bob", "keyId": sha("bob-key")},
        "environment": "prod",
        "release": RELEASE,
        "comment": "looks good",
        "decidedAt": "2026-03-01T12:00:00Z",
    },
    DEPLOYMENT_V1: {
        "deploymentId": "0d6f0b8e-8a53-4b8e-9a6d-8a7e9c2c1f02",
        "release": RELEASE,
        "environment": "prod",
        "strategy": "rolling",
        "status": "succeeded",
        "targets": [
            {
                "id": "host-1",
                "name": "web-01",
                "status": "succeeded",
                "stickerDigest": {"sha256": sha("sticker")},
                "observed": COMPONENTS,
            }
        ],
        "startedAt": "2026-03-01T12:00:00Z",
        "finishedAt": "2026-03-01T12:05:00Z",
        "actor": "stella-orchestrator",
    },
    ROLLBACK_V1: {
        "rollbackId": "0d6f0b8e-8a53-4b8e-9a6d-8a7e9c2c1f03",
        "environment": "prod",
        "from": RELEASE,
        "to": {"name": "shop-0", "components": COMPONENTS},
        "trigger": "automatic",
        "reason": "health check failed on web-01",
        "status": "succeeded",
        "startedAt": "2026-03-01T12:00:00Z",
        "finishedAt": "2026-03-01T12:02:00Z",
        "actor": "stella-orchestrator",
    },
    DRIFT_V1: {
        "checkId": "0d6f0b8e-8a53-4b8e-9a6d-8a7e9c2c1f04",
        "environment": "prod",
        "target": {"id": "host-1", "name": "web-01"},
        "checkedAt": "2026-03-01T12:00:00Z",
        "expected": RELEASE,
        "drifted": True,
        "findings": [
            {
                "component": "api",
                "kind": "changed",
                "expected": {"sha256": sha("api")},
                "observed": {"sha256": sha("api-hotfix")},
            }
        ],
    },
}


@pytest.mark.parametrize("ptype", sorted(EXAMPLES))
def test_own_schemas_accept_their_example(ptype: str) -> None:
    validate_predicate(ptype, EXAMPLES[ptype])


@pytest.mark.parametrize("ptype", sorted(EXAMPLES))
def test_own_schemas_refuse_missing_fields(ptype: str) -> None:
    required = schema.load_schema(PREDICATE_NAMES[ptype])["required"]
    for field in required:
        broken = copy.deepcopy(EXAMPLES[ptype])
        del broken[field]
        with pytest.raises(DefinitionError, match=field):
            validate_predicate(ptype, broken)


@pytest.mark.parametrize("ptype", [*sorted(EXAMPLES), RUN_V1, SLSA_VSA_V1])
def test_schemas_refuse_floats_even_where_integers_fit(ptype: str) -> None:
    # JSON Schema calls 1.0 an integer; a signed document must not hold it anyway.
    example = run() if ptype == RUN_V1 else vsa() if ptype == SLSA_VSA_V1 else EXAMPLES[ptype]
    broken = copy.deepcopy(example)
    broken["https://stella-desk.dev/ext/weight"] = 1.0
    with pytest.raises(DefinitionError, match="float"):
        validate_predicate(ptype, broken)


def test_float_in_a_nested_integer_field_is_named() -> None:
    broken = run()
    broken["steps"][0]["attempts"] = 1.0
    with pytest.raises(DefinitionError, match=r"\$\.steps\[0\]\.attempts"):
        validate_predicate(RUN_V1, broken)


def test_unknown_fields_refused_but_uri_extensions_allowed() -> None:
    extended = {**EXAMPLES[APPROVAL_V1], "https://example.com/ticket": {"id": "CHG-1"}}
    validate_predicate(APPROVAL_V1, extended)
    with pytest.raises(DefinitionError, match="ticket"):
        validate_predicate(APPROVAL_V1, {**EXAMPLES[APPROVAL_V1], "ticket": "CHG-1"})


def test_unknown_predicate_type() -> None:
    with pytest.raises(DefinitionError, match="no schema"):
        validate_predicate("https://example.com/other/v1", {})


def test_vsa_schema_refuses_slsa_levels_and_missing_record() -> None:
    broken = vsa()
    broken["verifiedLevels"] = ["SLSA_BUILD_LEVEL_2"]
    with pytest.raises(DefinitionError, match="verifiedLevels"):
        validate_predicate(SLSA_VSA_V1, broken)
    missing = vsa()
    del missing[DECISION_RECORD_FIELD]
    with pytest.raises(DefinitionError, match="decision-record"):
        validate_predicate(SLSA_VSA_V1, missing)
