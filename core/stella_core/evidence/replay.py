"""Replay: re-evaluate what a packet claims from its recorded inputs, and say `same` or where it
differs.

- decisions (SLSA VSA): the decision record (an input, by digest) holds the policy, every input
  and the evaluation time; the decision engine's replay (`promotions.decision.replay`, given by
  the caller as `decisions`: promotions sits above evidence) runs the same `decide` as the live
  path.
  With a different policy ("what if we had had this policy") the differences are the gates and
  the verdict that would have changed.
- runs: the run's status is derived again from its template (an input, by digest) and the step
  outcomes it records.
- approvals: the approval counts only if it is signed by the approver's own key over exactly the
  release's digests.
- deployments, rollbacks and drift: their outcome is derived again from the per-target or
  per-component results they record.

Every replayer is pure: it sees the verified statement and the capsule's inputs, nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from stella_core.errors import StellaError
from stella_core.evidence.packets import VerifiedPacket
from stella_core.evidence.predicates import (
    APPROVAL_V1,
    DECISION_RECORD_FIELD,
    DEPLOYMENT_V1,
    DRIFT_V1,
    EXCEPTION_V1,
    KEY_V1,
    PREDICATE_NAMES,
    ROLLBACK_V1,
    RUN_V1,
    SLSA_VSA_V1,
)


@dataclass
class Outcome:
    packet: str
    type: str
    same: bool = True
    differences: list[dict[str, Any]] = field(default_factory=list)
    note: str | None = None

    def differ(self, kind: str, name: str, recorded: Any, replayed: Any) -> None:
        self.same = False
        self.differences.append(
            {
                "packet": self.packet,
                "kind": kind,
                "name": name,
                "recorded": recorded,
                "replayed": replayed,
            }
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "packet": self.packet,
            "type": self.type,
            "same": self.same,
            "differences": self.differences,
            "note": self.note,
        }


Inputs = Mapping[str, bytes]  # `sha256:<hex>` -> document bytes
Replayer = Callable[[Outcome, VerifiedPacket, Inputs, Any], None]


class ReplayedDecision(Protocol):
    """What the decision engine's replay reports: each difference, and both verdicts."""

    @property
    def differences(self) -> list[dict[str, Any]]: ...

    def to_json(self) -> dict[str, Any]: ...


# The decision engine's replay: (decision record, policy or None for the recorded one).
DecisionReplay = Callable[[Any, Any], ReplayedDecision]


def _document(inputs: Inputs, digest_set: Any, what: str) -> Any:
    hex_digest = digest_set.get("sha256") if isinstance(digest_set, Mapping) else None
    body = inputs.get(f"sha256:{hex_digest}") if isinstance(hex_digest, str) else None
    if body is None:
        raise LookupError(f"{what} (sha256:{hex_digest}) is not among the recorded inputs")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise LookupError(f"{what} is not JSON: {exc}") from exc


def _replay_decision(
    out: Outcome,
    packet: VerifiedPacket,
    inputs: Inputs,
    policy: Any,
    *,
    replay_decision: DecisionReplay,
) -> None:
    predicate = packet.predicate
    record = _document(
        inputs, (predicate.get(DECISION_RECORD_FIELD) or {}).get("digest"), "the decision record"
    )
    recorded_policy = (predicate.get("policy") or {}).get("digest", {}).get("sha256")
    if isinstance(record, Mapping) and record.get("policyDigest") != f"sha256:{recorded_policy}":
        out.differ("input", "policy", record.get("policyDigest"), f"sha256:{recorded_policy}")
    result = replay_decision(record, policy)
    for difference in result.differences:
        out.differ(
            str(difference.get("kind")),
            str(difference.get("name")),
            difference.get("recorded"),
            difference.get("replayed"),
        )
    passed = predicate.get("verificationResult") == "PASSED"
    replayed_verdict = result.to_json().get("verdict", {}).get("replayed")
    if policy is None and passed != (replayed_verdict == "allow"):
        out.differ(
            "verdict", "verificationResult", predicate.get("verificationResult"), replayed_verdict
        )
    if policy is not None:
        out.note = "evaluated with the given policy instead of the recorded one"


_DONE_OK = ("succeeded", "continued", "skipped")


def run_outcome(rollback_ids: set[str], statuses: Mapping[str, str]) -> str:
    """A run's status from its steps' statuses: what the engine's transitions lead to."""
    main = {n: s for n, s in statuses.items() if n not in rollback_ids}
    back = {n: s for n, s in statuses.items() if n in rollback_ids}
    if any(s not in ("skipped", "pending", "cancelled") for s in back.values()):
        return "rolled_back" if all(s in _DONE_OK for s in back.values()) else "failed"
    if any(s in ("failed", "timed_out") for s in main.values()):
        return "failed"
    if any(s == "cancelled" for s in main.values()):
        return "cancelled"
    if all(s in _DONE_OK for s in main.values()):
        return "succeeded"
    return "running"


def _replay_run(out: Outcome, packet: VerifiedPacket, inputs: Inputs, policy: Any) -> None:
    from stella_core.workflows.template import digest as template_digest
    from stella_core.workflows.template import load_document

    predicate = packet.predicate
    recorded_template = predicate.get("template") or {}
    document = _document(inputs, recorded_template.get("digest"), "the run's template")
    template = load_document(document)
    replayed_digest = template_digest(template)
    recorded_digest = "sha256:" + str(recorded_template.get("digest", {}).get("sha256"))
    if replayed_digest != recorded_digest:
        out.differ("input", "template", recorded_digest, replayed_digest)
    steps = {str(s.get("id")): str(s.get("status")) for s in predicate.get("steps") or []}
    nodes = {n.id for n in template.nodes}
    for missing in sorted(nodes - steps.keys()):
        out.differ("step", missing, None, "in the template")
    for extra in sorted(steps.keys() - nodes):
        out.differ("step", extra, steps[extra], "not in the template")
    status = run_outcome({n.id for n in template.nodes if n.rollback}, steps)
    if status != predicate.get("status"):
        out.differ("verdict", "status", predicate.get("status"), status)
    if policy is not None:
        out.note = "a run has no policy; a given policy applies to decisions"


def _replay_approval(out: Outcome, packet: VerifiedPacket, inputs: Inputs, policy: Any) -> None:
    predicate = packet.predicate
    approver = predicate.get("approver") or {}
    if approver.get("keyId") != packet.signer_key_id:
        out.differ("signer", "approver", approver.get("keyId"), packet.signer_key_id)
    components = (predicate.get("release") or {}).get("components") or []
    expected = sorted("sha256:" + c["digest"]["sha256"] for c in components)
    if sorted(packet.subject_digests()) != expected:
        out.differ("input", "digests", expected, sorted(packet.subject_digests()))


def deployment_status(targets: list[Mapping[str, Any]]) -> str:
    statuses = [str(t.get("status")) for t in targets]
    if "rolled_back" in statuses:
        return "rolled_back"
    if "failed" in statuses:
        return "failed"
    if "cancelled" in statuses:
        return "cancelled"
    return "succeeded"


def _replay_deployment(out: Outcome, packet: VerifiedPacket, inputs: Inputs, policy: Any) -> None:
    predicate = packet.predicate
    status = deployment_status(list(predicate.get("targets") or []))
    if status != predicate.get("status"):
        out.differ("verdict", "status", predicate.get("status"), status)


def _replay_rollback(out: Outcome, packet: VerifiedPacket, inputs: Inputs, policy: Any) -> None:
    predicate = packet.predicate
    to = predicate.get("to") or {}
    subjects = sorted(packet.subject_digests())
    expected = sorted("sha256:" + c["digest"]["sha256"] for c in to.get("components") or [])
    if expected and subjects != expected:
        out.differ("input", "to", expected, subjects)
    if predicate.get("trigger") == "automatic" and "deploymentId" not in predicate:
        out.differ("input", "trigger", "automatic", "no failed deployment recorded")


def _replay_drift(out: Outcome, packet: VerifiedPacket, inputs: Inputs, policy: Any) -> None:
    predicate = packet.predicate
    findings = list(predicate.get("findings") or [])
    for finding in findings:
        kind, exp, obs = finding.get("kind"), finding.get("expected"), finding.get("observed")
        consistent = {
            "changed": exp is not None and obs is not None and exp != obs,
            "missing": exp is not None and obs is None,
            "unexpected": exp is None and obs is not None,
            "sticker_mismatch": True,
        }.get(str(kind), False)
        if not consistent:
            out.differ("finding", str(finding.get("component")), kind, "not what the digests show")
    if bool(findings) != predicate.get("drifted"):
        out.differ("verdict", "drifted", predicate.get("drifted"), bool(findings))


def _replay_exception(out: Outcome, packet: VerifiedPacket, inputs: Inputs, policy: Any) -> None:
    """An exception authorizes only if its granter signed it over exactly the release's digests,
    and only until it expires (the gate compares `expiresAt` with each decision's time)."""
    predicate = packet.predicate
    granter = predicate.get("grantedBy") or {}
    if granter.get("keyId") != packet.signer_key_id:
        out.differ("signer", "grantedBy", granter.get("keyId"), packet.signer_key_id)
    components = (predicate.get("release") or {}).get("components") or []
    expected = sorted("sha256:" + c["digest"]["sha256"] for c in components)
    if sorted(packet.subject_digests()) != expected:
        out.differ("input", "digests", expected, sorted(packet.subject_digests()))
    if str(predicate.get("expiresAt")) <= str(predicate.get("grantedAt")):
        out.differ("input", "expiresAt", predicate.get("expiresAt"), "not after grantedAt")


def _replay_key(out: Outcome, packet: VerifiedPacket, inputs: Inputs, policy: Any) -> None:
    """A key endorsement holds if the key it carries is the key its subject names."""
    from stella_core.crypto.keys import PublicKey

    predicate = packet.predicate
    key = PublicKey.from_pem(str(predicate.get("publicKey", "")).encode("ascii"))
    if packet.subject_digests() != [f"sha256:{key.key_id}"] or predicate.get("keyId") != key.key_id:
        out.differ("input", "publicKey", predicate.get("keyId"), key.key_id)


REPLAYERS: dict[str, Replayer] = {
    KEY_V1: _replay_key,
    EXCEPTION_V1: _replay_exception,
    RUN_V1: _replay_run,
    APPROVAL_V1: _replay_approval,
    DEPLOYMENT_V1: _replay_deployment,
    ROLLBACK_V1: _replay_rollback,
    DRIFT_V1: _replay_drift,
}


def replay_packet(
    label: str,
    packet: VerifiedPacket,
    inputs: Inputs,
    policy: Any = None,
    *,
    decisions: DecisionReplay,
) -> Outcome:
    """Replay one verified packet. A missing or unreadable input is a difference, never a pass."""
    out = Outcome(
        packet=label, type=PREDICATE_NAMES.get(packet.predicate_type, packet.predicate_type)
    )
    replayer = (
        partial(_replay_decision, replay_decision=decisions)
        if packet.predicate_type == SLSA_VSA_V1
        else REPLAYERS.get(packet.predicate_type)
    )
    if replayer is None:
        out.differ("type", packet.predicate_type, "known", "no replayer for this type")
        return out
    try:
        replayer(out, packet, inputs, policy)
    except LookupError as exc:
        out.differ("input", "missing", "recorded", str(exc.args[0]))
    except StellaError as exc:
        out.differ("input", "invalid", "recorded", exc.message)
    return out
