"""The tenant's agent CA (ECDSA P-256, `cryptography`): agent and gateway certificates.

- The CA's private key is sealed in STELLA_HOME where the orchestrator runs (encrypted PKCS#8,
  mode 0600, under the machine's key-file passphrase, as the orchestrator key is); its
  certificate is in the database (`agent.authorities`) and its SHA-256 fingerprint is what an
  agent pins when it enrolls.
- Agent certificates carry the identity the server chose, as a URI SAN
  `urn:stella:agent:<tenant>:<agent id>` (standards §D.2: grpc takes it as the peer identity);
  the CSR's subject is ignored. Short-lived (24 h by default), client-auth only.
- The gateway's certificate (both ports) is issued at each start for the fixed name
  `stella-gateway` (agents dial any address and override the name they check), and carries the CA
  certificate in its chain so an enrolling agent can read the CA and compare it with the pin.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from uuid import UUID

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stella_core.crypto.secretbox import SecretBox
from stella_core.errors import DefinitionError, IntegrityError, NotFoundError

GATEWAY_NAME = "stella-gateway"
AGENT_URI = re.compile(r"^urn:stella:agent:(?P<tenant>[0-9a-f-]{36}):(?P<agent>[0-9a-f-]{36})$")
_PASSPHRASE_ENV = "STELLA_KEY_PASSPHRASE"  # noqa: S105 (a variable name, not a secret)
CA_LIFETIME = timedelta(days=3650)
GATEWAY_LIFETIME = timedelta(days=30)
# Clocks differ a little between machines: a certificate is valid from a minute before it was made.
BACKDATE = timedelta(minutes=1)
MAX_CSR_BYTES = 4096


def fingerprint(der: bytes) -> str:
    """Lowercase hex SHA-256 of DER bytes (a certificate's, or a public key's SPKI)."""
    return hashlib.sha256(der).hexdigest()


def cert_fingerprint(cert: x509.Certificate) -> str:
    return fingerprint(cert.public_bytes(serialization.Encoding.DER))


def key_fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    return fingerprint(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def normalize_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as people copy it: hex with or without colons, any case, an optional
    `sha256:` prefix. Returns 64 lowercase hex characters."""
    value = text.strip().lower().removeprefix("sha256:").replace(":", "")
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise DefinitionError(
            "the CA fingerprint is not a SHA-256 fingerprint (64 hex characters)",
            field="ca fingerprint",
        )
    return value


def agent_uri(tenant_id: UUID, agent_id: UUID) -> str:
    return f"urn:stella:agent:{tenant_id}:{agent_id}"


@dataclass(frozen=True)
class AgentIdentity:
    """Who a presented agent certificate says it is (the chain was checked by TLS)."""

    tenant_id: UUID
    agent_id: UUID
    serial: str
    not_after: datetime
    key_fingerprint: str


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def agent_identity(pem: bytes) -> AgentIdentity:
    """The identity in an agent certificate (as `auth_context` gives it), or IntegrityError."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound) as exc:
        raise IntegrityError("the agent certificate carries no agent identity") from exc
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    matches = [m for m in (AGENT_URI.match(u) for u in uris) if m]
    if len(matches) != 1:
        raise IntegrityError("the agent certificate carries no agent identity")
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise IntegrityError("the agent certificate's key is not an ECDSA P-256 key")
    return AgentIdentity(
        tenant_id=UUID(matches[0]["tenant"]),
        agent_id=UUID(matches[0]["agent"]),
        serial=serial_hex(cert),
        not_after=cert.not_valid_after_utc,
        key_fingerprint=key_fingerprint(public),
    )


def load_csr(der: bytes) -> x509.CertificateSigningRequest:
    """A CSR from the wire: bounded, parseable, P-256 and signed by its own key."""
    if not der or len(der) > MAX_CSR_BYTES:
        raise DefinitionError("the certificate request is empty or too large")
    try:
        csr = x509.load_der_x509_csr(der)
        public = csr.public_key()
    except ValueError as exc:
        raise DefinitionError("the certificate request is not a DER PKCS#10 request") from exc
    if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(
        public.curve, ec.SECP256R1
    ):
        raise DefinitionError("the certificate request's key is not an ECDSA P-256 key")
    if not csr.is_signature_valid:
        raise IntegrityError("the certificate request is not signed by its own key")
    return csr


def make_csr(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A CSR for `key` (its subject is ignored by the server, which chooses the identity)."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stella-agent")]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)


def verify_with(key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    try:
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


class Authority:
    """One tenant's agent CA: its key (in memory) and its certificate."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self._key = key
        self.cert = cert
        self.fingerprint = cert_fingerprint(cert)

    def __repr__(self) -> str:
        return f"Authority(fingerprint={self.fingerprint!r})"

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def create(cls, tenant_name: str, now: datetime) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Stella Release Desk"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"stella agent CA ({tenant_name})"[:64]),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def _leaf(
        self,
        public: ec.EllipticCurvePublicKey,
        subject: str,
        sans: list[x509.GeneralName],
        usage: x509.ObjectIdentifier,
        not_before: datetime,
        not_after: datetime,
    ) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(self.cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), False
            )
            .sign(self._key, hashes.SHA256())
        )

    def issue_agent(
        self,
        public: ec.EllipticCurvePublicKey,
        tenant_id: UUID,
        agent_id: UUID,
        now: datetime,
        lifetime: timedelta,
    ) -> x509.Certificate:
        return self._leaf(
            public,
            f"agent {agent_id}",
            [x509.UniformResourceIdentifier(agent_uri(tenant_id, agent_id))],
            ExtendedKeyUsageOID.CLIENT_AUTH,
            now - BACKDATE,
            now + lifetime,
        )

    def issue_gateway(
        self, hosts: list[str], now: datetime
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A fresh key and certificate for the gateway's two ports."""
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName(GATEWAY_NAME)]
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                if host and host != GATEWAY_NAME:
                    sans.append(x509.DNSName(host))
        cert = self._leaf(
            key.public_key(),
            GATEWAY_NAME,
            sans,
            ExtendedKeyUsageOID.SERVER_AUTH,
            now - BACKDATE,
            now + GATEWAY_LIFETIME,
        )
        return key, cert

    # sealed in STELLA_HOME ----------------------------------------------------------------
    def seal(self, directory: Path, secrets: SecretBox) -> Path:
        """Write the CA key encrypted (mode 0600, never over an existing file)."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = directory / f"agent-ca-{self.fingerprint[:16]}.pem"
        pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(_passphrase(secrets)),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        return path

    @classmethod
    def unseal(cls, directory: Path, secrets: SecretBox, cert_pem: bytes) -> Authority:
        cert = x509.load_pem_x509_certificate(cert_pem)
        fp = cert_fingerprint(cert)
        path = directory / f"agent-ca-{fp[:16]}.pem"
        if not path.exists():
            raise NotFoundError(
                f"this machine does not hold the agent CA key {fp[:16]}…; agents are enrolled "
                "where the orchestrator that made it runs",
                remedy=("serve",),
            )
        if path.stat().st_mode & 0o077:
            raise DefinitionError(f"the agent CA key file {path} is accessible by others")
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), _passphrase(secrets))
        except ValueError as exc:
            raise IntegrityError(
                "cannot open the agent CA key with this machine's passphrase"
            ) from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key_fingerprint(
            key.public_key()
        ) != key_fingerprint(cert.public_key()):  # type: ignore[arg-type]
            raise IntegrityError(
                f"the agent CA key file {path.name} does not match its certificate"
            )
        return cls(key, cert)


def _passphrase(secrets: SecretBox) -> bytes:
    given = os.environ.get(_PASSPHRASE_ENV)
    if given:
        return given.encode()
    return secrets.derive("stella agent ca v1").hex().encode()


def pem_chain(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM, for grpc's credentials (kept in memory, or in an agent's 0600
    state file)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
