"""Inspection reports an agent signs with its own enrolled key, and their verification.

An agent answers an `inspect` task with what runs, and signs it: `report` (target, task id,
agent id, time, containers) as RFC 8785 canonical JSON, `report_signature` (ECDSA P-256 over
SHA-256, DER, base64) and `certificate` (its PEM). The orchestrator keeps a report only when
the certificate chains to the tenant's agent CA, names the agent the target belongs to, is one
the CA issued to it (not revoked, valid when the report was made), carries the agent's bound
key, and the signature holds over the report; the report must answer this very task. Anything
else is refused: a drift finding then says who saw what.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import Connection

from stella_core.errors import DefinitionError, IntegrityError
from stella_core.evidence.packets import canonical_json

REPORT_VERSION = 1
MAX_CERT_BYTES = 8192
MAX_CONTAINERS = 500
# Clocks differ a little between an agent and the orchestrator.
SKEW = timedelta(minutes=5)


class ReportRefusedError(IntegrityError):
    """An inspection report that does not prove who saw it."""


@dataclass(frozen=True)
class VerifiedReport:
    report: dict[str, Any]
    # sha256:<hex> of the canonical JSON of {report, signature, certificate}: what is kept,
    # and what an auditor checks offline (the certificate chains to the agent CA).
    digest: str
    signature: str  # base64 DER
    certificate: str  # PEM
    agent_id: UUID
    serial: str
    agent_name: str = ""

    @property
    def containers(self) -> list[dict[str, Any]]:
        return list(self.report.get("containers") or [])


def report_digest(report: Mapping[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(report)).hexdigest()


def sign_report(
    key_pem: bytes,
    cert_pem: bytes,
    *,
    agent_id: UUID,
    target: str,
    task_id: str,
    at: datetime,
    containers: Any,
) -> dict[str, Any]:
    """The members an agent adds to its `inspect` outputs (the agent's side)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = serialization.load_pem_private_key(key_pem, None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise IntegrityError("the agent's key is not an ECDSA key")
    report = {
        "version": REPORT_VERSION,
        "target": target,
        "taskId": task_id,
        "agentId": str(agent_id),
        "at": at.isoformat(),
        "containers": containers if isinstance(containers, list) else [],
    }
    signature = key.sign(canonical_json(report), ec.ECDSA(hashes.SHA256()))
    return {
        "report": report,
        "report_signature": base64.b64encode(signature).decode("ascii"),
        "certificate": cert_pem.decode("ascii"),
    }


def check_report(
    outputs: Mapping[str, Any],
    *,
    ca_pem: bytes,
    tenant_id: UUID,
    agent_id: UUID,
    key_fingerprint: str,
    task_id: UUID,
    target: str,
    issued_at: datetime,
    expires_at: datetime,
) -> VerifiedReport:
    """The report in an agent's `inspect` outputs, verified (pure: the caller looked up the CA
    and the agent); ReportRefusedError naming the first thing that does not hold."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from stella_core.agents.authority import agent_identity, serial_hex, verify_with

    report = outputs.get("report")
    signature_b64 = outputs.get("report_signature")
    cert_text = outputs.get("certificate")
    if report is None and signature_b64 is None:
        raise ReportRefusedError("the agent's inspection report is unsigned")
    if not isinstance(report, dict) or not isinstance(signature_b64, str):
        raise ReportRefusedError("the agent's inspection report is malformed")
    if not isinstance(cert_text, str) or len(cert_text) > MAX_CERT_BYTES:
        raise ReportRefusedError("the agent's inspection report carries no certificate")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        cert = x509.load_pem_x509_certificate(cert_text.encode("ascii"))
        ca = x509.load_pem_x509_certificate(ca_pem)
    except (ValueError, binascii.Error, UnicodeEncodeError) as exc:
        raise ReportRefusedError("the agent's inspection report is malformed") from exc
    # The chain: issued by the tenant's agent CA, signed by its key.
    ca_key = ca.public_key()
    if cert.issuer != ca.subject or not isinstance(ca_key, ec.EllipticCurvePublicKey):
        raise ReportRefusedError("the report's certificate was not issued by this tenant's CA")
    try:
        ca_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
    except Exception as exc:  # InvalidSignature, or an unexpected algorithm
        raise ReportRefusedError(
            "the report's certificate was not issued by this tenant's CA"
        ) from exc
    identity = agent_identity(cert_text.encode("ascii"))
    if identity.tenant_id != tenant_id or identity.agent_id != agent_id:
        raise ReportRefusedError("the report is signed by another agent than the target's")
    if identity.key_fingerprint != key_fingerprint:
        raise ReportRefusedError("the report is signed with a key this agent was never bound to")
    try:
        made = datetime.fromisoformat(str(report.get("at")))
    except ValueError as exc:
        raise ReportRefusedError("the report's time is not a time") from exc
    if made.tzinfo is None:
        raise ReportRefusedError("the report's time carries no time zone")
    if not (cert.not_valid_before_utc - SKEW <= made <= cert.not_valid_after_utc + SKEW):
        raise ReportRefusedError("the report was made outside its certificate's validity")
    if not (issued_at - SKEW <= made <= expires_at + SKEW):
        raise ReportRefusedError("the report was not made while its task was open")
    try:
        body = canonical_json(report)
    except DefinitionError as exc:
        raise ReportRefusedError("the report is not canonical JSON") from exc
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    if not verify_with(public, signature, body):
        raise ReportRefusedError("the report's signature does not hold")
    if report.get("taskId") != str(task_id) or report.get("target") != target:
        raise ReportRefusedError("the report answers another task")
    if report.get("agentId") != str(agent_id):
        raise ReportRefusedError("the report names another agent")
    containers = report.get("containers")
    if not isinstance(containers, list) or len(containers) > MAX_CONTAINERS:
        raise ReportRefusedError("the report's containers are malformed")
    for c in containers:
        if not isinstance(c, dict) or not all(
            isinstance(c.get(k), str) for k in ("component", "digest")
        ):
            raise ReportRefusedError("the report's containers are malformed")
    return VerifiedReport(
        report=dict(report),
        digest=report_digest(
            {"report": report, "signature": signature_b64, "certificate": cert_text}
        ),
        signature=signature_b64,
        certificate=cert_text,
        agent_id=agent_id,
        serial=serial_hex(cert),
    )


def verify_report_in(
    conn: Connection,
    outputs: Mapping[str, Any],
    *,
    tenant_id: UUID,
    agent_id: UUID,
    task_id: UUID,
    target: str,
    issued_at: datetime,
    expires_at: datetime,
) -> VerifiedReport:
    """`check_report` against this tenant's CA and the agent as the database knows it: the
    agent exists, is not revoked, and the certificate is one the CA issued to it."""
    from stella_core.agents import store

    ca_pem = store.authority_pem(conn)
    if ca_pem is None:
        raise ReportRefusedError("this tenant has no agent CA to check the report against")
    agent = store.agent(conn, agent_id)
    if agent is None:
        raise ReportRefusedError("the report's agent is not enrolled")
    if agent.revoked_at is not None:
        raise ReportRefusedError(f"the report's agent {agent.name} is revoked")
    verified = check_report(
        outputs,
        ca_pem=ca_pem,
        tenant_id=tenant_id,
        agent_id=agent_id,
        key_fingerprint=agent.key_fingerprint,
        task_id=task_id,
        target=target,
        issued_at=issued_at,
        expires_at=expires_at,
    )
    issued = store.certificate(conn, verified.serial)
    if issued is None or UUID(str(issued.agent_id)) != agent_id:
        raise ReportRefusedError("the report's certificate is not one issued to this agent")
    return replace(verified, agent_name=agent.name)
