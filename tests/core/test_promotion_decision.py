"""Promotion decisions: each built-in gate's pass/fail/pending outcomes, fail-closed handling of
broken policies and inputs, decision records that replay, and determinism."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stella_core.errors import AlreadyExistsError, DefinitionError
from stella_core.evidence.packets import canonical_json
from stella_core.promotions.decision import (
    GATES,
    Decision,
    GateResult,
    GateStatus,
    Reason,
    check_policy,
    decide,
    decision_record,
    policy_digest,
    register_gate,
    replay,
    why,
)

# Wednesday 10:00 UTC, inside office hours.
NOW = "2026-03-04T10:00:00Z"
DIGEST = "sha256:" + "ab" * 32
PROMOTION_ID = "0b6f4e8e-7d0c-4c59-9d3c-2f4a3c1f9a10"


def gate(gate_id: str, gate_type: str, **config: Any) -> dict[str, Any]:
    return {"id": gate_id, "type": gate_type, "config": config}


APPROVAL = {
    "required": 2,
    "separationOfDuties": True,
    "eligibleRoles": ["approver", "admin"],
    "eligiblePersons": [],
    "quorum": {"approver": 1},
}
OFFICE_HOURS = {
    "windows": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "18:00"}]
}


def prod_policy() -> dict[str, Any]:
    return {
        "environment": "prod",
        "gates": [
            gate("freeze", "freeze-window"),
            gate("order", "predecessor", previous="stage"),
            gate("approvals", "approval", **APPROVAL),
            gate("hours", "schedule", **OFFICE_HOURS),
        ],
    }


def approval(by: str, role: str = "approver", **extra: Any) -> dict[str, Any]:
    return {
        "by": by,
        "role": role,
        "decision": "approve",
        "at": "2026-03-04T09:00:00Z",
        "signatureOk": True,
        "comment": "",
    } | extra


def good_inputs() -> dict[str, Any]:
    return {
        "request": {
            "promotionId": PROMOTION_ID,
            "release": "shop-1",
            "environment": "prod",
            "requestedBy": "alice",
            "reason": "weekly release",
        },
        "release": {"name": "shop-1", "components": {"web": DIGEST}},
        "approvals": [approval("bob"), approval("carol", "admin")],
        "freezes": [],
        "history": {"reached": ["dev", "stage"]},
        "exceptions": [],
        "people": [
            {"name": "bob", "role": "approver"},
            {"name": "carol", "role": "admin"},
            {"name": "dave", "role": "approver"},
            {"name": "erin", "role": "developer"},
        ],
    }


def one_gate(
    gate_type: str, config: Mapping[str, Any], inputs: Mapping[str, Any], at: str = NOW
) -> GateResult:
    policy = {"environment": "prod", "gates": [gate("g", gate_type, **config)]}
    decision = decide(policy, inputs, at)
    (result,) = decision.gates
    return result


def codes(result: GateResult) -> list[str]:
    return [reason.code for reason in result.reasons]


# --- the whole decision ------------------------------------------------------------------------


def test_all_gates_pass_allows_in_policy_order() -> None:
    decision = decide(prod_policy(), good_inputs(), NOW)
    assert decision.verdict == "allow"
    assert [(g.gate, g.type, g.status) for g in decision.gates] == [
        ("freeze", "freeze-window", "pass"),
        ("order", "predecessor", "pass"),
        ("approvals", "approval", "pass"),
        ("hours", "schedule", "pass"),
    ]
    assert decision.to_json()["evaluatedAt"] == NOW
    assert why(decision, prod_policy(), good_inputs()) == []


def test_explicit_empty_gate_list_allows() -> None:
    decision = decide({"environment": "prod", "gates": []}, {}, NOW)
    assert decision.verdict == "allow"
    assert decision.gates == ()


def test_missing_gates_key_denies_and_check_policy_refuses() -> None:
    decision = decide({"environment": "prod"}, good_inputs(), NOW)
    assert decision.verdict == "deny"
    assert [g.gate for g in decision.gates] == ["@policy"]
    assert codes(decision.gates[0]) == ["POLICY_INVALID"]
    with pytest.raises(DefinitionError, match="gates"):
        check_policy({"environment": "prod"})


def test_pending_approval_makes_the_decision_pending_and_why_explains() -> None:
    inputs = good_inputs()
    inputs["approvals"] = [approval("bob")]
    decision = decide(prod_policy(), inputs, NOW)
    assert decision.verdict == "pending"
    assert why(decision, prod_policy(), inputs) == [
        {
            "gate": "approvals",
            "status": "pending",
            "reasons": [{"code": "APPROVALS_PENDING", "message": "1 of 2 approvals"}],
            "unblock": ["1 more approval from: carol, dave"],
        }
    ]


def test_a_failing_gate_beats_a_pending_one() -> None:
    inputs = good_inputs()
    inputs["approvals"] = [approval("bob")]
    inputs["history"] = {"reached": ["dev"]}
    decision = decide(prod_policy(), inputs, NOW)
    assert decision.verdict == "deny"
    assert [entry["gate"] for entry in why(decision, None, None)] == ["order", "approvals"]


# --- check_policy --------------------------------------------------------------------------------


def test_check_policy_normalises_missing_config() -> None:
    policy = {
        "environment": "dev",
        "gates": [
            {"id": "order", "type": "predecessor", "config": {"previous": None}},
            {"id": "f", "type": "freeze-window"},
        ],
    }
    assert check_policy(policy)["gates"][1] == {"id": "f", "type": "freeze-window", "config": {}}
    assert check_policy(prod_policy()) == prod_policy()


@pytest.mark.parametrize(
    ("policy", "problem"),
    [
        (
            {
                "environment": "prod",
                "gates": [gate("a", "freeze-window"), gate("a", "schedule", windows=[])],
            },
            "used twice",
        ),
        ({"environment": "prod", "gates": [gate("a", "teleport")]}, "unknown gate type 'teleport'"),
        ({"environment": "prod", "gates": [gate("a", "approval", required=-1)]}, "required"),
        (
            {
                "environment": "prod",
                "gates": [gate("a", "approval", required=1, quorum={"approver": 2})],
            },
            "quorum",
        ),
        (
            {
                "environment": "prod",
                "gates": [
                    gate(
                        "a", "approval", required=1, eligibleRoles=["admin"], quorum={"approver": 1}
                    )
                ],
            },
            "not eligible",
        ),
        ({"environment": "prod", "gates": [gate("a", "predecessor")]}, "previous"),
        (
            {
                "environment": "prod",
                "gates": [
                    gate(
                        "a",
                        "schedule",
                        windows=[{"days": ["mon"], "start": "25:00", "end": "26:00"}],
                    )
                ],
            },
            "HH:MM",
        ),
        (
            {
                "environment": "prod",
                "gates": [
                    gate(
                        "a",
                        "schedule",
                        windows=[{"days": ["mon"], "start": "08:00", "end": "08:00"}],
                    )
                ],
            },
            "same time",
        ),
        (
            {"environment": "prod", "gates": [gate("a", "freeze-window", strict=True)]},
            "unknown setting",
        ),
        ({"environment": "prod", "gates": [gate("@inputs", "freeze-window")]}, "id"),
        ({"environment": "prod", "gates": [], "gate": []}, "unknown key"),
        ({"gates": []}, "environment"),
        ({"environment": "prod", "gates": [gate("a", "approval", required=1.5)]}, "float"),
    ],
)
def test_check_policy_refuses_bad_policies(policy: dict[str, Any], problem: str) -> None:
    with pytest.raises(DefinitionError, match=problem):
        check_policy(policy)
    assert decide(policy, good_inputs(), NOW).verdict == "deny"


def test_duplicate_gate_ids_deny_as_invalid_policy() -> None:
    policy = {
        "environment": "prod",
        "gates": [gate("a", "freeze-window"), gate("a", "freeze-window")],
    }
    decision = decide(policy, good_inputs(), NOW)
    assert codes(decision.gates[0]) == ["POLICY_INVALID"]
    assert "used twice" in decision.gates[0].reasons[0].message


# --- fail closed ---------------------------------------------------------------------------------


def test_unknown_gate_type_fails_that_gate() -> None:
    policy = {
        "environment": "prod",
        "gates": [gate("scan", "teleport"), gate("f", "freeze-window")],
    }
    decision = decide(policy, good_inputs(), NOW)
    assert decision.verdict == "deny"
    assert [(g.gate, g.status, codes(g)) for g in decision.gates] == [
        ("scan", "fail", ["GATE_UNKNOWN"]),
        ("f", "pass", ["NO_ACTIVE_FREEZE"]),
    ]


def test_invalid_gate_config_fails_that_gate_with_the_problem() -> None:
    result = one_gate("approval", {"required": "two"}, good_inputs())
    assert (result.status, codes(result)) == ("fail", ["GATE_CONFIG_INVALID"])
    assert "required" in result.reasons[0].message


def test_missing_part_fails_naming_the_part() -> None:
    inputs = good_inputs()
    del inputs["freezes"]
    result = one_gate("freeze-window", {}, inputs)
    assert (result.status, codes(result)) == ("fail", ["INPUT_MISSING"])
    assert "'freezes'" in result.reasons[0].message
    assert result.unblock == ("supply the 'freezes' input",)


def test_malformed_time_in_a_part_denies() -> None:
    inputs = good_inputs()
    inputs["freezes"] = [
        {"id": "f1", "start": "yesterday", "end": "2026-03-05T00:00:00Z", "reason": "x"}
    ]
    decision = decide(prod_policy(), inputs, NOW)
    assert decision.verdict == "deny"
    inputs_check, freeze = decision.gates[0], decision.gates[1]
    assert inputs_check.gate == "@inputs"
    assert codes(inputs_check) == ["INPUT_INVALID"]
    assert "freezes[0].start" in inputs_check.reasons[0].message
    assert (freeze.gate, codes(freeze)) == ("freeze", ["INPUT_INVALID"])


def test_malformed_evaluated_at_denies() -> None:
    decision = decide(prod_policy(), good_inputs(), "2026-03-04 10:00")
    assert decision.verdict == "deny"
    assert decision.gates[0].gate == "@inputs"
    assert "evaluatedAt" in decision.gates[0].reasons[0].message


@pytest.mark.parametrize(
    ("part", "value", "problem"),
    [
        (
            "release",
            {"name": "shop-1", "components": {"web": "sha256:abc"}},
            "release.components.web",
        ),
        ("release", {"name": "shop-1", "components": {"web": "ab" * 32}}, "release.components.web"),
        ("approvals", [approval("bob", signatureOk="yes")], "signatureOk"),
        ("history", {"reached": "stage"}, "history.reached"),
        ("request", {"release": "shop-1", "environment": "prod"}, "requestedBy"),
        ("request", good_inputs()["request"] | {"environment": "stage"}, "policy is for prod"),
        ("release", {"name": "shop-2", "components": {}}, "request is for shop-1"),
        ("people", [{"name": "bob", "role": "approver", "weight": 0.5}], "float"),
    ],
)
def test_malformed_part_denies_with_input_invalid(part: str, value: Any, problem: str) -> None:
    inputs = good_inputs() | {part: value}
    decision = decide(prod_policy(), inputs, NOW)
    assert decision.verdict == "deny"
    first = decision.gates[0]
    assert (first.gate, codes(first)[0]) == ("@inputs", "INPUT_INVALID")
    assert problem in first.reasons[0].message


def test_inputs_that_are_not_an_object_deny() -> None:
    decision = decide(prod_policy(), ["not", "parts"], NOW)  # type: ignore[arg-type]
    assert decision.verdict == "deny"
    assert decision.gates[0].gate == "@inputs"


# --- freeze-window -------------------------------------------------------------------------------


def freeze(**extra: Any) -> dict[str, Any]:
    return {
        "id": "f1",
        "start": "2026-03-01T00:00:00Z",
        "end": "2026-03-05T00:00:00Z",
        "reason": "quarter close",
        "allow": [],
    } | extra


def test_active_freeze_fails_naming_reason_and_end() -> None:
    result = one_gate("freeze-window", {}, good_inputs() | {"freezes": [freeze(allow=["zed"])]})
    assert (result.status, codes(result)) == ("fail", ["FREEZE_ACTIVE"])
    assert "quarter close" in result.reasons[0].message
    assert "2026-03-05T00:00:00Z" in result.reasons[0].message
    assert result.unblock == (
        "wait until 2026-03-05T00:00:00Z or ask zed to request it (allowed to override)",
    )


def test_freeze_allow_list_overrides_for_the_requester() -> None:
    result = one_gate("freeze-window", {}, good_inputs() | {"freezes": [freeze(allow=["alice"])]})
    assert (result.status, codes(result)) == ("pass", ["FREEZE_OVERRIDDEN"])


def test_freeze_end_is_exclusive_and_start_inclusive() -> None:
    inputs = good_inputs() | {"freezes": [freeze()]}
    assert one_gate("freeze-window", {}, inputs, "2026-03-05T00:00:00Z").status == "pass"
    assert one_gate("freeze-window", {}, inputs, "2026-03-01T00:00:00Z").status == "fail"
    assert one_gate("freeze-window", {}, inputs, "2026-02-28T23:59:59.999999999Z").status == "pass"


def test_back_to_back_freezes_wait_until_the_last_ends() -> None:
    follow_up = freeze(id="f2", start="2026-03-05T00:00:00Z", end="2026-03-09T00:00:00Z")
    result = one_gate("freeze-window", {}, good_inputs() | {"freezes": [freeze(), follow_up]})
    assert result.unblock == ("wait until 2026-03-09T00:00:00Z",)


# --- predecessor ---------------------------------------------------------------------------------


def test_first_environment_passes_without_history() -> None:
    result = one_gate("predecessor", {"previous": None}, {})
    assert (result.status, codes(result)) == ("pass", ["FIRST_ENVIRONMENT"])


def test_predecessor_reached_and_not_reached() -> None:
    assert codes(one_gate("predecessor", {"previous": "stage"}, good_inputs())) == [
        "PREDECESSOR_REACHED"
    ]
    result = one_gate(
        "predecessor", {"previous": "stage"}, good_inputs() | {"history": {"reached": ["dev"]}}
    )
    assert (result.status, codes(result)) == ("fail", ["PREDECESSOR_NOT_REACHED"])
    assert "stage" in result.unblock[0]


def exception(**extra: Any) -> dict[str, Any]:
    return {
        "id": "x1",
        "gate": "predecessor",
        "environment": "prod",
        "expiresAt": "2026-03-04T12:00:00Z",
        "by": "root",
        "signatureOk": True,
    } | extra


def test_signed_unexpired_exception_applies() -> None:
    inputs = good_inputs() | {"history": {"reached": ["dev"]}, "exceptions": [exception()]}
    result = one_gate("predecessor", {"previous": "stage"}, inputs)
    assert (result.status, codes(result)) == ("pass", ["EXCEPTION_APPLIED"])
    assert "x1" in result.reasons[0].message


def test_expired_exception_fails() -> None:
    inputs = good_inputs() | {"history": {"reached": ["dev"]}, "exceptions": [exception()]}
    result = one_gate("predecessor", {"previous": "stage"}, inputs, "2026-03-04T12:00:00Z")
    assert result.status == "fail"
    assert "EXCEPTION_EXPIRED" in codes(result)


@pytest.mark.parametrize(
    "bad",
    [
        exception(signatureOk=False),
        exception(environment="stage"),
        exception(gate="approval"),
        exception(gate="schedule"),
    ],
)
def test_unsigned_or_foreign_exception_does_not_apply(bad: dict[str, Any]) -> None:
    inputs = good_inputs() | {"history": {"reached": ["dev"]}, "exceptions": [bad]}
    result = one_gate("predecessor", {"previous": "stage"}, inputs)
    assert result.status == "fail"
    assert codes(result)[0] == "PREDECESSOR_NOT_REACHED"


# --- approval ------------------------------------------------------------------------------------


def approvals_result(*items: dict[str, Any], config: Mapping[str, Any] = APPROVAL) -> GateResult:
    return one_gate("approval", config, good_inputs() | {"approvals": list(items)})


def test_enough_approvals_pass() -> None:
    result = approvals_result(approval("bob"), approval("carol", "admin"))
    assert (result.status, codes(result)) == ("pass", ["APPROVED"])
    assert result.reasons[0].message.startswith("2 of 2")


def test_self_approval_is_not_counted_under_separation_of_duties() -> None:
    result = approvals_result(approval("bob"), approval("alice", "admin"))
    assert result.status == "pending"
    assert codes(result) == ["APPROVALS_PENDING", "SELF_APPROVAL_REFUSED"]
    assert result.reasons[0].message == "1 of 2 approvals"
    # Without separation of duties alice's approval counts.
    relaxed = approvals_result(
        approval("bob"), approval("alice", "admin"), config=APPROVAL | {"separationOfDuties": False}
    )
    assert relaxed.status == "pass"


def test_duplicate_approval_is_counted_once() -> None:
    result = approvals_result(approval("bob"), approval("bob", at="2026-03-04T09:30:00Z"))
    assert result.status == "pending"
    assert "DUPLICATE_APPROVAL" in codes(result)
    assert result.reasons[0].message == "1 of 2 approvals"


def test_quorum_by_role() -> None:
    # Two counted approvals, but none from an approver.
    result = approvals_result(approval("carol", "admin"), approval("frank", "admin"))
    assert result.status == "pending"
    assert codes(result) == ["APPROVALS_PENDING", "QUORUM_PENDING"]
    assert result.reasons[1].message == "0 of 1 approvals from role approver"
    assert result.unblock == ("1 more approval by role approver from: bob, dave",)


def test_rejection_fails_naming_who() -> None:
    result = approvals_result(
        approval("bob"), approval("carol", "admin"), approval("dave", decision="reject")
    )
    assert (result.status, codes(result)[0]) == ("fail", "REJECTED")
    assert "dave" in result.reasons[0].message


def test_unsigned_and_ineligible_approvals_are_not_counted() -> None:
    result = approvals_result(
        approval("bob", signatureOk=False),
        approval("erin", "developer"),
        approval("dave", decision="reject", signatureOk=False),
    )
    assert result.status == "pending"
    assert codes(result) == [
        "APPROVALS_PENDING",
        "QUORUM_PENDING",
        "SIGNATURE_INVALID",
        "NOT_ELIGIBLE",
        "SIGNATURE_INVALID",
    ]
    assert result.unblock[0] == "2 more approvals from: bob, carol, dave"


def test_eligible_persons_and_open_eligibility() -> None:
    named = {"required": 1, "eligiblePersons": ["erin"]}
    assert approvals_result(approval("erin", "developer"), config=named).status == "pass"
    assert codes(approvals_result(approval("bob"), config=named))[-1] == "NOT_ELIGIBLE"
    anyone = {"required": 1}
    assert approvals_result(approval("erin", "developer"), config=anyone).status == "pass"
    pending = approvals_result(approval("alice"), config=anyone)
    assert pending.unblock == ("1 more approval from: bob, carol, dave, erin",)


def test_unblock_without_people_names_the_eligible_roles() -> None:
    inputs = good_inputs() | {"approvals": []}
    del inputs["people"]
    result = one_gate("approval", APPROVAL, inputs)
    assert result.unblock[0] == "2 more approvals from: anyone eligible (roles approver, admin)"


def test_no_approval_required_passes() -> None:
    result = approvals_result(config={"required": 0})
    assert (result.status, codes(result)) == ("pass", ["NO_APPROVAL_REQUIRED"])


# --- schedule ------------------------------------------------------------------------------------


def test_inside_and_outside_office_hours() -> None:
    inside = one_gate("schedule", OFFICE_HOURS, {})
    assert (inside.status, codes(inside)) == ("pass", ["IN_WINDOW"])
    # Friday 18:00 is the exclusive end: the next opening is Monday 08:00.
    outside = one_gate("schedule", OFFICE_HOURS, {}, "2026-03-06T18:00:00Z")
    assert (outside.status, codes(outside)) == ("fail", ["OUTSIDE_WINDOW"])
    assert "opens at 2026-03-09T08:00:00Z" in outside.reasons[0].message
    assert outside.unblock == (
        "wait until 2026-03-09T08:00:00Z, or get a signed exception to the schedule gate for "
        "this environment",
    )


FRIDAY_EVENING = "2026-03-06T18:30:00Z"


def test_a_signed_exception_allows_an_emergency_change_outside_the_windows() -> None:
    waiver = exception(gate="schedule", expiresAt="2026-03-06T20:00:00Z")
    inputs = good_inputs() | {"exceptions": [waiver]}
    result = one_gate("schedule", OFFICE_HOURS, inputs, FRIDAY_EVENING)
    assert (result.status, codes(result)) == ("pass", ["EXCEPTION_APPLIED"])
    assert "exception x1 by root applies until 2026-03-06T20:00:00Z" in result.reasons[0].message
    # Expired, unsigned, for another gate or another environment: still outside the windows.
    for bad, code in [
        (waiver | {"expiresAt": "2026-03-06T18:30:00Z"}, "EXCEPTION_EXPIRED"),
        (waiver | {"signatureOk": False}, "SIGNATURE_INVALID"),
        (waiver | {"gate": "predecessor"}, None),
        (waiver | {"environment": "stage"}, None),
    ]:
        refused = one_gate(
            "schedule", OFFICE_HOURS, good_inputs() | {"exceptions": [bad]}, FRIDAY_EVENING
        )
        assert refused.status == "fail"
        assert codes(refused) == ["OUTSIDE_WINDOW", *([code] if code else [])]
        assert "signed exception to the schedule gate for prod" in refused.unblock[0]


def test_window_wrapping_midnight() -> None:
    night = {"windows": [{"days": ["fri"], "start": "22:00", "end": "02:00"}]}
    assert one_gate("schedule", night, {}, "2026-03-06T23:30:00Z").status == "pass"
    assert one_gate("schedule", night, {}, "2026-03-07T01:59:59Z").status == "pass"
    after = one_gate("schedule", night, {}, "2026-03-07T02:00:00Z")
    assert after.status == "fail"
    assert "opens at 2026-03-13T22:00:00Z" in after.reasons[0].message
    # Thursday night is not a Friday window, even though it wraps into Friday.
    assert one_gate("schedule", night, {}, "2026-03-06T01:00:00Z").status == "fail"


def test_no_windows_means_no_deployments() -> None:
    result = one_gate("schedule", {"windows": []}, {})
    assert (result.status, codes(result)) == ("fail", ["OUTSIDE_WINDOW"])


@settings(max_examples=200, deadline=None)
@given(
    day=st.integers(0, 6),
    start=st.integers(0, 24 * 60 - 1),
    length=st.integers(1, 24 * 60),
    offset=st.integers(0, 7 * 24 * 3600 - 1),
)
def test_the_announced_next_opening_is_inside_the_window(
    day: int, start: int, length: int, offset: int
) -> None:
    end = (start + length) % (24 * 60)
    days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    window = {
        "days": [days[day]],
        "start": f"{start // 60:02d}:{start % 60:02d}",
        "end": "24:00" if end == 0 else f"{end // 60:02d}:{end % 60:02d}",
    }
    if window["start"] == window["end"]:
        return
    # 2026-03-02 is a Monday.
    minutes, seconds = divmod(offset, 60)
    day_of_month, hour, minute = 2 + minutes // 1440, minutes % 1440 // 60, minutes % 60
    at = f"2026-03-{day_of_month:02d}T{hour:02d}:{minute:02d}:{seconds:02d}Z"
    result = one_gate("schedule", {"windows": [window]}, {}, at)
    if result.status == "fail":
        opens = result.unblock[0].removeprefix("wait until ").split(",")[0]
        assert opens > at
        assert one_gate("schedule", {"windows": [window]}, {}, opens).status == "pass"


# --- records, replay, determinism ----------------------------------------------------------------


def recorded() -> dict[str, Any]:
    inputs = good_inputs()
    return decision_record(prod_policy(), inputs, decide(prod_policy(), inputs, NOW))


def test_decision_record_holds_everything_to_replay() -> None:
    record = recorded()
    assert record["_type"] == "https://stella-desk.dev/evidence/decision-record/v1"
    assert record["policyDigest"] == policy_digest(prod_policy())
    assert record["policyDigest"].startswith("sha256:")
    assert record["inputDigests"]["history"] == policy_digest({"reached": ["dev", "stage"]})
    assert set(record["inputDigests"]) == set(good_inputs())
    assert (record["verdict"], record["evaluatedAt"]) == ("allow", NOW)
    canonical_json(record)  # signable as it is


def test_replay_of_a_recorded_decision_is_the_same() -> None:
    result = replay(recorded())
    assert result.same
    assert result.to_json() == {
        "same": True,
        "differences": [],
        "verdict": {"recorded": "allow", "replayed": "allow"},
    }


def test_replay_with_a_stricter_policy_reports_gate_and_verdict() -> None:
    stricter = prod_policy()
    stricter["gates"][2]["config"] = APPROVAL | {"required": 3}
    stricter["gates"].append(gate("night", "schedule", windows=[]))
    result = replay(recorded(), stricter)
    assert not result.same
    assert [(d["kind"], d["name"]) for d in result.differences] == [
        ("gate", "approvals"),
        ("gate", "night"),
        ("verdict", "verdict"),
    ]
    approvals = result.differences[0]
    assert (approvals["recorded"]["status"], approvals["replayed"]["status"]) == ("pass", "pending")
    assert result.differences[1]["recorded"] is None
    assert result.to_json()["verdict"] == {"recorded": "allow", "replayed": "deny"}


def test_replay_lists_gates_only_in_the_record() -> None:
    looser = prod_policy()
    del looser["gates"][0]
    result = replay(recorded(), looser)
    assert [(d["kind"], d["name"], d["replayed"]) for d in result.differences] == [
        ("gate", "freeze", None)
    ]


def test_replay_detects_a_tampered_input_part() -> None:
    record = recorded()
    record["inputs"]["history"] = {"reached": ["dev"]}
    result = replay(record)
    assert not result.same
    assert result.differences[0] == {
        "kind": "input",
        "name": "history",
        "recorded": policy_digest({"reached": ["dev", "stage"]}),
        "replayed": policy_digest({"reached": ["dev"]}),
    }
    assert [d["name"] for d in result.differences[1:]] == ["order", "verdict"]


def test_replay_detects_a_tampered_policy() -> None:
    record = recorded()
    record["policy"]["gates"][3]["config"]["windows"][0]["end"] = "23:00"
    result = replay(record)
    assert [(d["kind"], d["name"]) for d in result.differences] == [("input", "policy")]


def test_replay_refuses_a_document_that_is_not_a_record() -> None:
    with pytest.raises(DefinitionError, match="not a decision record"):
        replay({"verdict": "allow"})


def test_same_inputs_give_identical_bytes() -> None:
    inputs = good_inputs()
    inputs["approvals"] = [approval("carol", "admin"), approval("bob", signatureOk=False)]
    first = canonical_json(decide(prod_policy(), inputs, NOW).to_json())
    again = canonical_json(
        decide(copy.deepcopy(prod_policy()), copy.deepcopy(inputs), NOW).to_json()
    )
    assert first == again
    assert canonical_json(
        decision_record(prod_policy(), inputs, decide(prod_policy(), inputs, NOW))
    ) == canonical_json(decision_record(prod_policy(), inputs, decide(prod_policy(), inputs, NOW)))


@settings(max_examples=50, deadline=None)
@given(order=st.permutations(["bob", "carol", "dave", "erin", "alice"]))
def test_approval_order_with_equal_times_does_not_change_the_outcome(order: list[str]) -> None:
    people = {
        "bob": "approver",
        "carol": "admin",
        "dave": "approver",
        "erin": "developer",
        "alice": "admin",
    }
    inputs = good_inputs() | {"approvals": [approval(name, people[name]) for name in order]}
    result = one_gate("approval", APPROVAL, inputs)
    assert result.status == "pass"
    assert result.reasons[0].message == "3 of 2 approvals (bob, carol, dave)"


# --- registry ------------------------------------------------------------------------------------


class AlwaysPending:
    type = "test-always-pending"

    def check_config(self, config: Any) -> None:
        if config:
            raise DefinitionError("takes no settings")

    def evaluate(self, config: Any, inputs: Mapping[str, Any], evaluated_at: str) -> GateResult:
        return GateResult("", self.type, GateStatus.PENDING, (Reason("WAITING", "waiting"),))


def test_registered_gate_runs_under_its_policy_id() -> None:
    assert set(GATES) >= {"freeze-window", "predecessor", "approval", "schedule"}
    registry = dict(GATES) | {AlwaysPending.type: AlwaysPending()}
    policy = {"environment": "prod", "gates": [gate("wait", AlwaysPending.type)]}
    decision = decide(policy, {}, NOW, gates=registry)
    assert (decision.verdict, decision.gates[0].gate) == ("pending", "wait")
    assert isinstance(decision, Decision)
    with pytest.raises(AlreadyExistsError):
        register_gate(GATES["approval"])
