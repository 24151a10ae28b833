"""Agents' use cases.

- `AgentService` (a person's session): admins create one-time enrollment tokens and revoke
  agents; everyone in the tenant lists them.
- `Enrollment` (the orchestrator's session, where the gateway runs): the tenant's agent CA,
  enrolling with a token, renewing with the bound key, recovering an expired certificate within
  the window, and deciding whether a presented certificate may open a link (revoked, unknown,
  older generation: a clone is locked out and the event recorded).
"""

from __future__ import annotations

import builtins
import hashlib
import secrets as token_secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Connection

from stella_core.agents import store
from stella_core.agents.authority import (
    AgentIdentity,
    Authority,
    cert_fingerprint,
    key_fingerprint,
    load_csr,
    serial_hex,
    verify_with,
)
from stella_core.agents.model import Agent, IssuedToken, known_runtimes
from stella_core.clock import Clock, SystemClock
from stella_core.crypto.secretbox import SecretBox
from stella_core.db.engine import Database
from stella_core.errors import (
    AlreadyExistsError,
    AuthorizationError,
    DefinitionError,
    NotFoundError,
)
from stella_core.limits import check_name
from stella_core.tenancy.model import ProductRole
from stella_core.tenancy.service import TenancyService

TOKEN_PREFIX = "stella_enroll_"  # noqa: S105 (a prefix, not a secret)
DEFAULT_TOKEN_TTL = timedelta(hours=24)
MAX_TOKEN_TTL = timedelta(days=30)
CERT_LIFETIME = timedelta(hours=24)
RECOVERY_WINDOW = timedelta(days=7)
# A recovery proof is accepted this long after it was made (and this far in the future).
PROOF_FRESHNESS = timedelta(minutes=5)
MAX_LABELS = 32


def token_hash(token: str) -> str:
    # Tokens are 256 random bits: a plain SHA-256 is enough to make the stored hash useless.
    return hashlib.sha256(token.encode()).hexdigest()


def recover_proof_bytes(agent_id: UUID, generation: int, timestamp: int, csr_der: bytes) -> bytes:
    """What an agent signs with its bound key to recover an expired certificate."""
    return b"stella-agent-recover/v1\n%b\n%d\n%d\n%b" % (
        str(agent_id).encode(),
        generation,
        timestamp,
        hashlib.sha256(csr_der).hexdigest().encode(),
    )


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise DefinitionError(f"at most {MAX_LABELS} labels", field="label")
    for key, value in labels.items():
        check_name("label", key)
        if len(value) > 200 or any(ord(c) < 32 for c in value):
            raise DefinitionError(f"label {key}: its value is too long or not plain text")
    return dict(labels)


class AgentService:
    """Agents as a person sees them. `authority` (where this machine runs the orchestrator)
    makes the tenant's CA on first need, so a token can name its fingerprint."""

    def __init__(
        self,
        db: Database,
        tenancy: TenancyService,
        *,
        clock: Clock | None = None,
        authority: Callable[[], str] | None = None,
    ) -> None:
        self.db = db
        self.tenancy = tenancy
        self.clock = clock or SystemClock()
        self._authority = authority

    def ca_fingerprint(self) -> str:
        with self.db.transaction() as conn:
            pem = store.authority_pem(conn)
        if pem is not None:
            return cert_fingerprint(x509.load_pem_x509_certificate(pem))
        if self._authority is None:
            raise NotFoundError(
                "this tenant has no agent CA yet: it is made where the orchestrator runs",
                remedy=("serve",),
            )
        return self._authority()

    def create_token(
        self, name: str, labels: dict[str, str] | None = None, ttl: timedelta | None = None
    ) -> IssuedToken:
        """A one-time token that enrolls one agent called `name` (admins only)."""
        check_name("agent", name)
        labels = check_labels(labels or {})
        ttl = ttl or DEFAULT_TOKEN_TTL
        if not timedelta(minutes=1) <= ttl <= MAX_TOKEN_TTL:
            raise DefinitionError("a token lives from 1 minute to 30 days", field="ttl")
        identity = self.tenancy.require(ProductRole.ADMIN)
        fingerprint = self.ca_fingerprint()
        token = TOKEN_PREFIX + token_secrets.token_urlsafe(32)
        expires = self.clock.now() + ttl
        with self.db.transaction() as conn:
            if store.active_name_taken(conn, name):
                raise AlreadyExistsError(
                    f"an agent called {name} is enrolled already; revoke it first"
                )
            store.add_token(conn, token_hash(token), name, labels, expires)
            TenancyService.audit(
                conn,
                identity.tenant_id,
                "agent.token.create",
                "agent",
                name,
                {"expires_at": expires.isoformat(), "labels": labels},
            )
        return IssuedToken(token=token, name=name, expires_at=expires, ca_fingerprint=fingerprint)

    def list(self) -> builtins.list[Agent]:
        with self.db.transaction() as conn:
            return store.agents(conn)

    def get(self, ref: str) -> Agent:
        """An agent by id, or by name (the enrolled one; else the newest revoked)."""
        with self.db.transaction() as conn:
            try:
                found = store.agent(conn, UUID(ref))
            except ValueError:
                named = store.agents_named(conn, ref)
                found = named[0] if named else None
        if found is None:
            raise NotFoundError(f"no agent {ref}")
        return found

    def id_of(self, name: str) -> UUID:
        """The id of the enrolled (not revoked) agent called `name`."""
        agent = self.get(name)
        if agent.revoked_at is not None:
            raise NotFoundError(f"agent {name} is revoked")
        return agent.id

    def events(self, ref: str) -> builtins.list[dict[str, Any]]:
        agent = self.get(ref)
        with self.db.transaction() as conn:
            return store.events(conn, agent.id)

    def revoke(self, ref: str, reason: str = "revoked by an admin") -> Agent:
        """Revoke an agent (admins): its link is cut and every later call refused."""
        identity = self.tenancy.require(ProductRole.ADMIN)
        agent = self.get(ref)
        if agent.revoked_at is not None:
            return agent
        with self.db.transaction() as conn:
            store.revoke_as_person(conn, agent.id, reason)
            store.add_event(conn, agent.id, "revoked", {"reason": reason})
            TenancyService.audit(
                conn,
                identity.tenant_id,
                "agent.revoke",
                "agent",
                str(agent.id),
                {"name": agent.name, "reason": reason},
            )
        return self.get(str(agent.id))


class EnrollmentRefusedError(AuthorizationError):
    """An enrollment, recovery or renewal the orchestrator refuses (one sentence says why)."""


class LinkRefusedError(AuthorizationError):
    """A certificate that may not open a link (revoked, unknown, an older generation)."""


@dataclass(frozen=True)
class Issued:
    agent: Agent
    certificate: x509.Certificate
    generation: int


class Enrollment:
    """The orchestrator's side of agents: `db` acts as the orchestrator. The CA key is read
    from (or made in) `home`, sealed with the machine's secret box."""

    def __init__(
        self,
        db: Database,
        home: Path,
        target_slug: str,
        secrets: SecretBox,
        *,
        clock: Clock | None = None,
        cert_lifetime: timedelta = CERT_LIFETIME,
        recovery_window: timedelta = RECOVERY_WINDOW,
    ) -> None:
        self.db = db
        self.directory = home / "agents" / target_slug
        self.secrets = secrets
        self.clock = clock or SystemClock()
        self.cert_lifetime = cert_lifetime
        self.recovery_window = recovery_window
        self._authority: Authority | None = None
        self._lock = threading.Lock()

    @property
    def tenant_id(self) -> UUID:
        assert self.db.tenant_id is not None
        return self.db.tenant_id

    def authority(self) -> Authority:
        """The tenant's agent CA, made on first need (its key sealed here, its certificate in
        the database)."""
        with self._lock:
            if self._authority is not None:
                return self._authority
            with self.db.transaction() as conn:
                store.lock_tenant(conn, "ca")
                pem = store.authority_pem(conn)
                if pem is None:
                    made = Authority.create(str(self.tenant_id), self.clock.now())
                    made.seal(self.directory, self.secrets)
                    store.add_authority(conn, made.fingerprint, made.cert_pem)
                    self._authority = made
                else:
                    self._authority = Authority.unseal(self.directory, self.secrets, pem)
            return self._authority

    def ca_fingerprint(self) -> str:
        return self.authority().fingerprint

    # enrolling -------------------------------------------------------------------------
    def enroll(self, token: str, csr_der: bytes, hostname: str, version: str) -> Issued:
        csr = load_csr(csr_der)
        public = csr.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        now = self.clock.now()
        authority = self.authority()
        agent_id = uuid4()
        with self.db.transaction() as conn:
            row = store.token_for_use(conn, token_hash(token)) if token else None
            if row is None:
                raise EnrollmentRefusedError("the enrollment token is not valid")
            if row.used_at is not None:
                raise EnrollmentRefusedError("the enrollment token was used already")
            if row.expires_at <= now:
                raise EnrollmentRefusedError("the enrollment token has expired")
            if store.active_name_taken(conn, row.name):
                raise EnrollmentRefusedError(f"an agent called {row.name} is enrolled already")
            cert = authority.issue_agent(public, self.tenant_id, agent_id, now, self.cert_lifetime)
            store.add_agent(
                conn,
                agent_id,
                row.name,
                dict(row.labels or {}),
                hostname[:200],
                version[:50],
                key_fingerprint(public),
                cert.not_valid_after_utc,
                UUID(str(row.id)),
            )
            store.use_token(conn, UUID(str(row.id)), agent_id, now)
            self._record_certificate(conn, agent_id, cert, 1, "enroll")
            store.add_event(conn, agent_id, "enrolled", {"hostname": hostname[:200]})
            agent = store.agent(conn, agent_id)
        assert agent is not None
        return Issued(agent, cert, 1)

    def _record_certificate(
        self, conn: Connection, agent_id: UUID, cert: x509.Certificate, generation: int, why: str
    ) -> None:
        store.add_certificate(
            conn,
            serial_hex(cert),
            agent_id,
            generation,
            cert.not_valid_before_utc,
            cert.not_valid_after_utc,
            why,
        )

    def _reissue(self, conn: Connection, agent: Agent, csr_der: bytes, why: str) -> Issued:
        csr = load_csr(csr_der)
        public = csr.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        if key_fingerprint(public) != agent.key_fingerprint:
            raise EnrollmentRefusedError(
                f"agent {agent.name}: the request is not for its bound key"
            )
        now = self.clock.now()
        generation = agent.generation + 1
        cert = self.authority().issue_agent(
            public, self.tenant_id, agent.id, now, self.cert_lifetime
        )
        store.update_agent(
            conn, agent.id, generation=generation, cert_not_after=cert.not_valid_after_utc
        )
        self._record_certificate(conn, agent.id, cert, generation, why)
        store.add_event(
            conn,
            agent.id,
            "renewed" if why == "renew" else "recovered",
            {"generation": generation},
        )
        updated = store.agent(conn, agent.id)
        assert updated is not None
        return Issued(updated, cert, generation)

    def renew(self, identity: AgentIdentity, csr_der: bytes) -> Issued:
        """A new certificate for the agent on an authorized link (the CSR by its bound key)."""
        self.authorize(identity)
        with self.db.transaction() as conn:
            agent = store.agent(conn, identity.agent_id, lock=True)
            if agent is None or agent.revoked_at is not None:
                raise LinkRefusedError("the agent is not enrolled")
            return self._reissue(conn, agent, csr_der, "renew")

    def recover(
        self, agent_id: UUID, csr_der: bytes, generation: int, timestamp: int, proof: bytes
    ) -> Issued:
        """An agent offline past its certificate's expiry, within the window, proves it holds
        its bound key; else it needs a new token."""
        now = self.clock.now()
        refused = EnrollmentRefusedError(
            "this agent cannot recover: enroll it again with a new token"
        )
        with self.db.transaction() as conn:
            agent = store.agent(conn, agent_id, lock=True)
            if agent is None or agent.revoked_at is not None:
                raise refused
            if agent.cert_not_after > now:
                raise EnrollmentRefusedError(
                    f"agent {agent.name}'s certificate has not expired; it renews on its link"
                )
            if now - agent.cert_not_after > self.recovery_window:
                raise EnrollmentRefusedError(
                    f"agent {agent.name}'s certificate expired more than "
                    f"{self.recovery_window.days} days ago: enroll it again with a new token"
                )
            made = datetime.fromtimestamp(timestamp, tz=now.tzinfo)
            if abs(now - made) > PROOF_FRESHNESS:
                raise EnrollmentRefusedError("the recovery proof is not recent")
            if generation != agent.generation:
                raise refused
            public = load_csr(csr_der).public_key()
            assert isinstance(public, ec.EllipticCurvePublicKey)
            if key_fingerprint(public) != agent.key_fingerprint or not verify_with(
                public, proof, recover_proof_bytes(agent_id, generation, timestamp, csr_der)
            ):
                raise refused
            return self._reissue(conn, agent, csr_der, "recover")

    # links -----------------------------------------------------------------------------
    def authorize(self, identity: AgentIdentity) -> Agent:
        """May this certificate open a link? Records the generation seen in use; an older one
        than that is a copy of the agent: the agent is locked out and the event recorded."""
        if identity.tenant_id != self.tenant_id:
            raise LinkRefusedError("the certificate is for another tenant")
        if identity.not_after <= self.clock.now():  # TLS refuses it first; never rely on one
            raise LinkRefusedError("the certificate has expired")
        locked_out: str | None = None
        with self.db.transaction() as conn:
            agent = store.agent(conn, identity.agent_id, lock=True)
            cert = store.certificate(conn, identity.serial)
            if agent is None or cert is None or UUID(str(cert.agent_id)) != agent.id:
                raise LinkRefusedError("the agent is not enrolled")
            if agent.revoked_at is not None:
                raise LinkRefusedError(f"agent {agent.name} is revoked")
            if identity.key_fingerprint != agent.key_fingerprint:
                raise LinkRefusedError(f"agent {agent.name}: the certificate is not for its key")
            if cert.generation < agent.generation_in_use:
                locked_out = (
                    f"a certificate of generation {cert.generation} was presented after "
                    f"generation {agent.generation_in_use} was in use (a copy of the agent)"
                )
                # Committed with this transaction: the refusal is raised after it.
                store.revoke(conn, agent.id, "clone detected: " + locked_out)
                store.add_event(
                    conn,
                    agent.id,
                    "clone-detected",
                    {
                        "presented": cert.generation,
                        "in_use": agent.generation_in_use,
                        "serial": identity.serial,
                    },
                )
            elif cert.generation > agent.generation_in_use:
                store.update_agent(conn, agent.id, generation_in_use=cert.generation)
            current = store.agent(conn, agent.id) or agent
        if locked_out is not None:
            raise LinkRefusedError(f"agent {agent.name} is locked out: {locked_out}")
        return current

    def connected(
        self,
        agent_id: UUID,
        hostname: str,
        version: str,
        runtimes: builtins.list[str] | None = None,
    ) -> None:
        """The agent said hello: what it runs on and (when it says) the runtimes it has."""
        columns: dict[str, Any] = {
            "connected": True,
            "last_heartbeat": self.clock.now(),
            "hostname": hostname[:200],
            "version": version[:50],
        }
        if runtimes is not None:
            columns["runtimes"] = list(known_runtimes(runtimes))
        with self.db.transaction() as conn:
            store.update_agent(conn, agent_id, **columns)

    def heartbeat(self, agent_id: UUID) -> None:
        with self.db.transaction() as conn:
            store.update_agent(conn, agent_id, connected=True, last_heartbeat=self.clock.now())

    def disconnected(self, agent_id: UUID) -> None:
        with self.db.transaction() as conn:
            agent = store.agent(conn, agent_id)
            if agent is not None and agent.revoked_at is None:
                store.update_agent(conn, agent_id, connected=False)

    def revoked_among(self, ids: list[UUID]) -> set[UUID]:
        with self.db.transaction() as conn:
            return store.revoked_among(conn, ids)

    def agent(self, agent_id: UUID) -> Agent | None:
        with self.db.transaction() as conn:
            return store.agent(conn, agent_id)


def enrollment_for(orchestrator: Any, **options: Any) -> Enrollment:
    """The Enrollment of bootstrap's Orchestrator (`.db`, `.backend.home`, `.backend.target`):
    the CA key lives in that home, under that database target's folder."""
    from stella_core.profiles import EMBEDDED

    backend = orchestrator.backend
    target = backend.target
    slug = EMBEDDED if target == EMBEDDED else hashlib.sha256(target.encode()).hexdigest()[:16]
    return Enrollment(
        orchestrator.db, backend.home, slug, SecretBox.from_home(backend.home), **options
    )
