"""An agent's signed inspection report: what makes the orchestrator keep it, and what not.

Real keys and a real agent CA (the same code that issues agents' certificates); each forgery a
modified agent could try is refused with the reason, and the comparison is checked on its own.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from stella_core.agents.authority import Authority, key_fingerprint, pem_chain, private_pem
from stella_core.agents.reports import ReportRefusedError, check_report, sign_report
from stella_core.drift.model import compare
from stella_core.errors import DefinitionError
from stella_core.evidence.predicates import drift_predicate

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
TENANT = UUID("11111111-1111-4111-8111-111111111111")
A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


class Enrolled:
    def __init__(self, ca: Authority, agent_id: UUID | None = None) -> None:
        self.agent_id = agent_id or uuid4()
        self.key = ec.generate_private_key(ec.SECP256R1())
        day = timedelta(hours=24)
        cert = ca.issue_agent(self.key.public_key(), TENANT, self.agent_id, NOW, day)
        self.cert_pem = pem_chain(cert)
        self.fingerprint = key_fingerprint(self.key.public_key())

    def sign(self, task_id: UUID, containers: list[dict[str, str]], **over: object) -> dict:
        return sign_report(
            private_pem(self.key),
            self.cert_pem,
            agent_id=self.agent_id,
            target=str(over.get("target", "edge")),
            task_id=str(task_id),
            at=NOW,
            containers=containers,
        )


@pytest.fixture
def ca() -> Authority:
    return Authority.create("t", NOW - timedelta(days=1))


def check(outputs: dict, agent: Enrolled, task_id: UUID, ca: Authority, **over: object):
    return check_report(
        outputs,
        ca_pem=ca.cert_pem,
        tenant_id=TENANT,
        agent_id=over.get("agent_id", agent.agent_id),  # type: ignore[arg-type]
        key_fingerprint=str(over.get("fingerprint", agent.fingerprint)),
        task_id=task_id,
        target="edge",
        issued_at=NOW - timedelta(seconds=5),
        expires_at=NOW + timedelta(seconds=5),
    )


CONTAINERS = [{"component": "web", "container": "web-1", "digest": A, "state": "running"}]


def test_a_report_signed_by_the_targets_agent_is_kept_by_digest(ca: Authority) -> None:
    agent = Enrolled(ca)
    task = uuid4()
    verified = check(agent.sign(task, CONTAINERS), agent, task, ca)
    assert verified.containers == CONTAINERS
    assert verified.digest.startswith("sha256:")
    assert len(verified.digest) == 71
    assert verified.report["taskId"] == str(task)


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        (lambda o: {k: v for k, v in o.items() if k == "containers"}, "unsigned"),
        (lambda o: o["report"]["containers"][0].update(digest=B), "signature does not hold"),
        (lambda o: o.update(report_signature=o["report_signature"][:-8] + "AAAAAAA="), "signature"),
        (lambda o: o["report"].update(taskId=str(uuid4())), "signature does not hold"),
        (lambda o: o.update(certificate="-----BEGIN CERTIFICATE-----\nxx\n"), "malformed"),
    ],
)
def test_a_tampered_or_unsigned_report_is_refused(ca: Authority, forge, reason: str) -> None:
    agent = Enrolled(ca)
    task = uuid4()
    outputs = agent.sign(task, CONTAINERS)
    changed = forge(outputs)
    outputs = changed if changed is not None else outputs
    with pytest.raises(ReportRefusedError, match=reason):
        check(outputs, agent, task, ca)


def test_a_report_from_another_ca_another_agent_or_another_task_is_refused(
    ca: Authority,
) -> None:
    agent = Enrolled(ca)
    task = uuid4()
    # Signed by a key certified by a CA of its own making.
    rogue = Enrolled(Authority.create("rogue", NOW - timedelta(days=1)), agent.agent_id)
    with pytest.raises(ReportRefusedError, match="not issued by this tenant's CA"):
        check(rogue.sign(task, CONTAINERS), agent, task, ca)
    # A genuine agent of the tenant answering for another agent's target.
    other = Enrolled(ca)
    with pytest.raises(ReportRefusedError, match="another agent"):
        check(other.sign(task, CONTAINERS), agent, task, ca)
    # The agent's identity, but not the key it was bound to at enrollment.
    with pytest.raises(ReportRefusedError, match="never bound"):
        check(agent.sign(task, CONTAINERS), agent, task, ca, fingerprint="0" * 64)
    # An old genuine report replayed for a new task.
    with pytest.raises(ReportRefusedError, match="another task"):
        check(agent.sign(uuid4(), CONTAINERS), agent, task, ca)
    with pytest.raises(ReportRefusedError, match="another task"):
        check(agent.sign(task, CONTAINERS, target="box"), agent, task, ca)


def test_compare_names_each_kind_of_difference() -> None:
    running = [
        {"component": "web", "digest": B},  # same tag, another digest
        {"component": "cron", "digest": A},  # not in the release
    ]
    found = compare({"web": A, "worker": A}, running, {"web": A, "worker": B}, {"web": "1.0"})
    assert [(d.component, d.kind, d.expected, d.observed, d.tag) for d in found] == [
        ("cron", "unexpected", None, A, None),
        ("web", "changed", A, B, "1.0"),
        ("worker", "missing", A, None, None),
        ("worker", "sticker_mismatch", A, B, None),
    ]
    assert compare({"web": A}, [{"component": "web", "digest": A}], {"web": A}) == []


def test_the_drift_predicate_follows_its_schema() -> None:
    predicate = drift_predicate(
        check_id=uuid4(),
        environment="dev",
        target_id=uuid4(),
        target_name="edge",
        checked_at=NOW,
        expected_release="r1",
        expected_components={"web": A},
        status="drifted",
        findings=[{"component": "web", "kind": "changed", "expected": A, "observed": B}],
        previous_status="in_sync",
        report={"digest": B, "observerKind": "agent", "observer": "agent x"},
        remediation={"deploymentId": uuid4(), "status": "succeeded"},
    )
    assert predicate["drifted"] is True
    assert predicate["findings"][0]["observed"] == {"sha256": "b" * 64}
    with pytest.raises(DefinitionError):
        drift_predicate(
            check_id=uuid4(),
            environment="dev",
            target_id=uuid4(),
            target_name="edge",
            checked_at=NOW,
            expected_release="r1",
            expected_components={"web": A},
            status="sideways",
            findings=[],
        )
