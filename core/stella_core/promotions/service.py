"""Promotion use cases: request, approve, reject, cancel, evaluate, why, the inbox, the pipeline.

Every decision the engine takes is recorded as a VSA evidence packet in the transaction that
changes the promotion's status, and every approval or rejection as an `approval` packet signed
with the approver's personal key over the promotion id, the environment and the exact digests.
Separation of duties is checked here first (for a clear refusal) and again by the database.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import Connection

from stella_core.clock import Clock, SystemClock
from stella_core.db.engine import Database
from stella_core.environments.service import EnvironmentService
from stella_core.errors import (
    AlreadyExistsError,
    DefinitionError,
    NotFoundError,
    OrchestratorUnavailableError,
    StellaError,
)
from stella_core.evidence.model import Refs
from stella_core.evidence.packets import PacketError, verify_bundle
from stella_core.evidence.predicates import APPROVAL_V1, EXCEPTION_V1, rfc3339
from stella_core.evidence.service import EvidenceService
from stella_core.promotions.decision import Decision, decide, why
from stella_core.promotions.model import (
    EXCEPTION_GATES,
    OPEN,
    RUN_OUTCOME,
    Approval,
    ApprovalRefusedError,
    Promotion,
    PromotionStatus,
    approvers_of,
    check_transition,
    eligible,
    status_for,
)
from stella_core.promotions.store import PromotionStore
from stella_core.releases.service import ReleaseService
from stella_core.tenancy.model import Identity, ProductRole
from stella_core.tenancy.service import TenancyService
from stella_core.workflows.model import RunStatus
from stella_core.workflows.service import WorkflowService

REQUESTERS = (ProductRole.RELEASE_MANAGER, ProductRole.ADMIN)
# A canary rung approval is an approval packet with this extension member (in-toto's
# URI-named extension convention; the approval schema admits them): the rung it lets pass.
RUNG_FIELD = "https://stella-desk.dev/evidence/approval/v1#canaryRung"
MAX_RUNG = 10
MAX_COMMENT = 4000
log = logging.getLogger(__name__)


def _uuid(value: UUID | str) -> UUID:
    try:
        return value if isinstance(value, UUID) else UUID(str(value))
    except ValueError as exc:
        raise DefinitionError(f"promotion id {value!r} is not a UUID") from exc


def _release_json(name: str, components: Mapping[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "components": [
            {"name": c, "digest": {"sha256": d.removeprefix("sha256:")}}
            for c, d in sorted(components.items())
        ],
    }


class PromotionService:
    """Promotions as one principal sees them. A person's service requests, approves, rejects
    and cancels in the person's own session; the decisions (counting verified approvals,
    approving, starting and ending deployments) are the orchestrator's, taken by `system`, the
    orchestrator's own service, where this machine runs it, else by stella serve."""

    def __init__(
        self,
        db: Database,
        tenancy: TenancyService,
        evidence: EvidenceService,
        workflows: WorkflowService,
        clock: Clock | None = None,
        *,
        system: PromotionService | None = None,
        orchestrator: bool = False,
    ) -> None:
        self.db = db
        self.tenancy = tenancy
        self.evidence = evidence
        self.workflows = workflows
        self.clock = clock or SystemClock()
        self.system = system
        self.is_orchestrator = orchestrator

    def _orchestrator(self) -> PromotionService:
        if self.is_orchestrator:
            return self
        if self.system is None:
            raise OrchestratorUnavailableError(
                "this machine does not run the orchestrator: stella serve decides promotions"
            )
        return self.system

    def _decide_now(self, promotion_id: UUID) -> None:
        """Have the orchestrator decide at once where it runs here; elsewhere stella serve
        picks the promotion up."""
        if self.system is not None:
            self.system.decide(promotion_id)

    # requesting -------------------------------------------------------------------------
    def request(self, release: str, environment: str, reason: str = "") -> Promotion:
        identity = self.tenancy.require(*REQUESTERS)
        with self.db.transaction() as conn:
            promotion_id = self._request_in(conn, identity.tenant_id, release, environment, reason)
        self._decide_now(promotion_id)
        return self.get(promotion_id)

    def _request_in(
        self,
        conn: Connection,
        tenant_id: UUID,
        release: str,
        environment: str,
        reason: str,
        kind: str = "promotion",
    ) -> UUID:
        if EnvironmentService.get_in(conn, environment) is None:
            raise NotFoundError(f"no environment named {environment!r}")
        found = ReleaseService.releases_in(conn, release)
        if not found:
            raise NotFoundError(f"no release named {release!r}")
        store = PromotionStore(conn)
        for open_one in store.rows(
            statuses=[s.value for s in OPEN], environment=environment, release=release
        ):
            raise AlreadyExistsError(
                f"release {release} already has an open promotion to {environment}: "
                f"{open_one.id} ({open_one.status})"
            )
        promotion_id = store.insert(tenant_id, found[0].id, environment, reason, kind)
        TenancyService.audit(
            conn,
            tenant_id,
            "promotion.request",
            "promotion",
            str(promotion_id),
            {"release": release, "environment": environment, "reason": reason, "kind": kind},
        )
        return promotion_id

    def decide(self, promotion_id: UUID | str) -> Promotion:
        """The orchestrator decides an open promotion now (nothing for one already decided)."""
        key = _uuid(promotion_id)
        engine = self._orchestrator()
        with engine.db.transaction() as conn:
            row = PromotionStore(conn).row(key, lock=True)
            if row is None:
                raise NotFoundError(f"no promotion {promotion_id}")
            if PromotionStatus(row.status) in OPEN:
                engine._decide(conn, key)
        return self.get(key)

    def preview(self, release: str, environment: str, reason: str = "") -> dict[str, Any]:
        """The decision a request would get now, without recording anything (the wizard's gate
        preview)."""
        me = self.tenancy.whoami()
        with self.db.transaction() as conn:
            # The policy the database will copy into the request.
            policy = EnvironmentService.policy_document_in(conn, environment)
            if policy is None:
                raise NotFoundError(f"no environment named {environment!r}")
            found = ReleaseService.releases_in(conn, release)
            if not found:
                raise NotFoundError(f"no release named {release!r}")
            components = {c.name: c.digest for c in found[0].components}
            inputs = self._inputs_for(
                conn,
                promotion_id=UUID(int=0),
                release=release,
                components=components,
                environment=environment,
                requested_by=me.user,
                reason=reason,
                approvals=[],
            )
        decision = decide(policy, inputs, self._now())
        return {
            "release": release,
            "environment": environment,
            **decision.to_json(),
            "blocking": why(decision),
        }

    # deciding ---------------------------------------------------------------------------
    def approve(self, promotion_id: UUID | str, comment: str = "") -> Promotion:
        return self._record(_uuid(promotion_id), "approve", comment)

    def reject(self, promotion_id: UUID | str, reason: str) -> Promotion:
        if not reason.strip():
            raise DefinitionError("a rejection needs a reason", field="reason")
        return self._record(_uuid(promotion_id), "reject", reason)

    def _record(self, promotion_id: UUID, decision: str, comment: str) -> Promotion:
        me = self.tenancy.whoami()
        with self.db.transaction() as conn:
            self._refusal(conn, promotion_id, me)  # before a key is made for nothing
        self.evidence.ensure_personal_key()
        with self.db.transaction() as conn:
            row = self._refusal(conn, promotion_id, me)
            components = dict(row.components)
            packet = self.evidence.emit(
                conn,
                predicate_type=APPROVAL_V1,
                subjects=list(components.items()),
                predicate={
                    "promotionId": str(promotion_id),
                    "decision": "approved" if decision == "approve" else "rejected",
                    "approver": {
                        "name": me.user,
                        "keyId": self.evidence.personal_signer(conn).key_id,
                    },
                    "environment": row.environment,
                    "release": _release_json(row.release_name, components),
                    "comment": comment,
                    "decidedAt": self._now(),
                },
                signer=self.evidence.personal_signer(conn),
                refs=Refs(
                    release=row.release_name,
                    environment=row.environment,
                    promotion_id=promotion_id,
                ),
            )
            PromotionStore(conn).insert_approval(
                me.tenant_id, promotion_id, decision, comment, packet.id
            )
            TenancyService.audit(
                conn,
                me.tenant_id,
                f"promotion.{decision}",
                "promotion",
                str(promotion_id),
                {"comment": comment, "packet": str(packet.id)},
            )
        self._decide_now(promotion_id)
        return self.get(promotion_id)

    # canary rungs ------------------------------------------------------------------------
    def approve_rung(
        self, promotion_id: UUID | str, rung: int, comment: str = ""
    ) -> dict[str, Any]:
        """Let a canary deployment of the promotion go on past rung `rung` (1 = the first):
        an approval of the same kind as the promotion's own (signed over the promotion, its
        environment and its exact digests, by someone eligible under its policy), never by its
        requester. The database checks the same again."""
        key = _uuid(promotion_id)
        if isinstance(rung, bool) or not isinstance(rung, int) or not 1 <= rung <= MAX_RUNG:
            raise DefinitionError(f"a rung is a whole number from 1 to {MAX_RUNG}", field="rung")
        if len(comment) > MAX_COMMENT:
            raise DefinitionError(f"a comment is at most {MAX_COMMENT} characters", field="comment")
        me = self.tenancy.whoami()
        with self.db.transaction() as conn:
            self._rung_refusal(conn, key, rung, me)  # before a key is made for nothing
        self.evidence.ensure_personal_key()
        with self.db.transaction() as conn:
            row = self._rung_refusal(conn, key, rung, me)
            components = dict(row.components)
            signer = self.evidence.personal_signer(conn)
            predicate: dict[str, Any] = {
                "promotionId": str(key),
                "decision": "approved",
                "approver": {"name": me.user, "keyId": signer.key_id},
                "environment": row.environment,
                "release": _release_json(row.release_name, components),
                "comment": comment,
                "decidedAt": self._now(),
                RUNG_FIELD: rung,
            }
            if row.run_id is not None:
                predicate["runId"] = str(row.run_id)
            packet = self.evidence.emit(
                conn,
                predicate_type=APPROVAL_V1,
                subjects=list(components.items()),
                predicate=predicate,
                signer=signer,
                refs=Refs(
                    release=row.release_name,
                    environment=row.environment,
                    promotion_id=key,
                    run_id=row.run_id,
                ),
            )
            PromotionStore(conn).insert_rung_approval(me.tenant_id, key, rung, comment, packet.id)
            TenancyService.audit(
                conn,
                me.tenant_id,
                "promotion.approve_rung",
                "promotion",
                str(key),
                {"rung": rung, "comment": comment, "packet": str(packet.id)},
            )
        return {
            "promotion_id": str(key),
            "rung": rung,
            "approver": me.user,
            "packet": str(packet.id),
        }

    def _rung_refusal(self, conn: Connection, promotion_id: UUID, rung: int, me: Identity) -> Any:
        """The promotion row, or ApprovalRefusedError saying why this person may not let its
        canary go on (the promotion's own eligibility, and never its requester)."""
        store = PromotionStore(conn)
        row = store.row(promotion_id, lock=True)
        if row is None:
            raise NotFoundError(f"no promotion {promotion_id}")
        if PromotionStatus(row.status) is not PromotionStatus.DEPLOYING:
            raise ApprovalRefusedError(
                f"promotion {promotion_id} is {row.status}: only a deploying promotion's canary "
                "takes approvals"
            )
        if row.requested_by == me.user:
            raise ApprovalRefusedError(
                f"separation of duties: {me.user} requested this promotion to "
                f"{row.environment} and cannot approve its canary"
            )
        if not eligible(row.policy, me.user, me.role.value):
            roles, persons = approvers_of(row.policy)
            who = ", ".join([*(f"role {r}" for r in roles), *persons])
            raise ApprovalRefusedError(
                f"{me.user} ({me.role.value}) is not eligible to approve promotions to "
                f"{row.environment}; eligible: {who}"
            )
        if any(a.approver == me.user for a in store.rung_approvals(promotion_id, rung)):
            raise ApprovalRefusedError(
                f"{me.user} has already approved rung {rung} of promotion {promotion_id}"
            )
        return row

    @staticmethod
    def rung_approvers_in(conn: Connection, run_id: UUID, rung: int) -> list[str]:
        """Who let the canary of the promotion `run_id` carries out go on past `rung`, counted
        as the orchestrator counts promotion approvals: a signature that verifies (over this
        promotion, environment, digests and rung) by a key of the approver, an active person
        eligible under the promotion's policy, never its requester. (Read in the deploy step's
        transaction, as the orchestrator.)"""
        store = PromotionStore(conn)
        row = store.row_of_run(run_id)
        if row is None or PromotionStatus(row.status) is not PromotionStatus.DEPLOYING:
            return []
        users = {u.name: u for u in TenancyService.users_in(conn) if not u.disabled}
        keys: dict[str, dict[str, Any]] = {}
        for k in TenancyService.keys_in(conn):
            if k.owner_kind == "person":
                keys.setdefault(k.owner, {})[k.key_id] = k.public_key
        found: list[str] = []
        for a in store.rung_approvals(row.id, rung):
            person = users.get(a.approver)
            if (
                person is None
                or a.approver == row.requested_by
                or a.approver in found
                or not eligible(row.policy, a.approver, person.role.value)
                or not _rung_signature_ok(a, row, rung, keys.get(a.approver, {}))
            ):
                continue
            found.append(a.approver)
        return found

    def rung_approvals(self, promotion_id: UUID | str) -> list[dict[str, Any]]:
        """The canary approvals given for a promotion, as people see them."""
        with self.db.transaction() as conn:
            rows = PromotionStore(conn).rung_approvals(_uuid(promotion_id))
        return [
            {
                "rung": a.rung,
                "approver": a.approver,
                "role": a.role,
                "comment": a.comment,
                "at": rfc3339(a.at),
                "packet": str(a.packet_id),
            }
            for a in rows
        ]

    def _refusal(self, conn: Connection, promotion_id: UUID, me: Identity) -> Any:
        """The locked promotion row, or ApprovalRefusedError saying why this person may not
        decide it."""
        store = PromotionStore(conn)
        row = store.row(promotion_id, lock=True)
        if row is None:
            raise NotFoundError(f"no promotion {promotion_id}")
        if PromotionStatus(row.status) not in OPEN:
            raise ApprovalRefusedError(
                f"promotion {promotion_id} is {row.status} and takes no more decisions"
            )
        if row.separation_of_duties and row.requested_by == me.user:
            raise ApprovalRefusedError(
                f"separation of duties: {me.user} requested this promotion to "
                f"{row.environment} and cannot approve or reject it"
            )
        if not eligible(row.policy, me.user, me.role.value):
            roles, persons = approvers_of(row.policy)
            who = ", ".join([*(f"role {r}" for r in roles), *persons])
            raise ApprovalRefusedError(
                f"{me.user} ({me.role.value}) is not eligible to decide promotions to "
                f"{row.environment}; eligible: {who}"
            )
        if any(a.approver == me.user for a in store.approvals([promotion_id])):
            raise ApprovalRefusedError(f"{me.user} has already decided promotion {promotion_id}")
        return row

    def grant_exception(
        self,
        release: str,
        environment: str,
        *,
        reason: str,
        expires_at: datetime,
        gate: str = "predecessor",
    ) -> dict[str, Any]:
        """An admin's signed, expiring exception: `release` may pass `gate` (predecessor or
        schedule) of `environment` until `expires_at`. Open promotions it concerns are decided
        again at once."""
        identity = self.tenancy.require(ProductRole.ADMIN)
        if gate not in EXCEPTION_GATES:
            raise DefinitionError(
                f"exceptions apply to the {' and '.join(EXCEPTION_GATES)} gates, not {gate!r}"
            )
        if not reason.strip():
            raise DefinitionError("an exception needs a reason")
        if expires_at.tzinfo is None:
            raise DefinitionError("the expiry needs a timezone (for example Z)")
        if expires_at <= self.clock.now():
            raise DefinitionError("the expiry must be in the future")
        self.evidence.ensure_personal_key()
        exception_id = uuid4()
        with self.db.transaction() as conn:
            if EnvironmentService.get_in(conn, environment) is None:
                raise NotFoundError(f"no environment named {environment!r}")
            found = ReleaseService.releases_in(conn, release)
            if not found:
                raise NotFoundError(f"no release named {release!r}")
            components = {c.name: c.digest for c in found[0].components}
            signer = self.evidence.personal_signer(conn)
            packet = self.evidence.emit(
                conn,
                predicate_type=EXCEPTION_V1,
                subjects=list(components.items()),
                predicate={
                    "exceptionId": str(exception_id),
                    "gate": gate,
                    "environment": environment,
                    "release": _release_json(release, components),
                    "reason": reason,
                    "grantedBy": {"name": identity.user, "keyId": signer.key_id},
                    "grantedAt": self._now(),
                    "expiresAt": rfc3339(expires_at),
                },
                signer=signer,
                refs=Refs(release=release, environment=environment),
            )
            store = PromotionStore(conn)
            store.insert_exception(
                identity.tenant_id,
                exception_id,
                environment,
                release,
                gate,
                reason,
                expires_at,
                packet.id,
            )
            TenancyService.audit(
                conn,
                identity.tenant_id,
                "promotion.exception",
                "release",
                release,
                {"environment": environment, "gate": gate, "expires": rfc3339(expires_at)},
            )
            concerned = [
                row.id
                for row in store.rows(
                    statuses=[s.value for s in OPEN], environment=environment, release=release
                )
            ]
        for promotion_id in concerned:
            self._decide_now(promotion_id)
        return {
            "exception_id": str(exception_id),
            "release": release,
            "environment": environment,
            "gate": gate,
            "reason": reason,
            "expires_at": rfc3339(expires_at),
            "granted_by": identity.user,
            "packet_id": str(packet.id),
        }

    def cancel(self, promotion_id: UUID | str, reason: str = "") -> Promotion:
        """A person cancels their own request (an admin any). An open one they cancel
        themselves; one already approved or deploying is stopped by the orchestrator, run
        first."""
        key = _uuid(promotion_id)
        identity = self.tenancy.require(*REQUESTERS)
        with self.db.transaction() as conn:
            store = PromotionStore(conn)
            row = store.row(key, lock=True)
            if row is None:
                raise NotFoundError(f"no promotion {promotion_id}")
            check_transition(PromotionStatus(row.status), PromotionStatus.CANCELLED)
            if row.requested_by != identity.user and identity.role is not ProductRole.ADMIN:
                raise ApprovalRefusedError(
                    f"{identity.user} did not request promotion {key}: only its requester "
                    f"({row.requested_by}) or an admin may cancel it"
                )
            open_now = PromotionStatus(row.status) in OPEN
            if open_now:
                store.cancel(key, reason)
            TenancyService.audit(
                conn,
                identity.tenant_id,
                "promotion.cancel",
                "promotion",
                str(key),
                {"reason": reason},
            )
        if not open_now:
            self._orchestrator().stop(key, reason or f"cancelled by {identity.user}")
        return self.get(key)

    def stop(self, promotion_id: UUID, why_text: str) -> None:
        """The orchestrator cancels an approved or deploying promotion (its run first: the
        engine's lock order is run, then promotion; the run's ending cancels the promotion in
        the same transaction)."""
        with self.db.transaction() as conn:
            store = PromotionStore(conn)
            row = store.row(promotion_id)
            if row is None:
                raise NotFoundError(f"no promotion {promotion_id}")
            if row.run_id is not None:
                self.workflows.cancel_in(conn, row.run_id, why_text)
            row = store.row(promotion_id, lock=True)
            assert row is not None
            if PromotionStatus(row.status) is not PromotionStatus.CANCELLED:
                check_transition(PromotionStatus(row.status), PromotionStatus.CANCELLED)
                store.update(promotion_id, PromotionStatus.CANCELLED, status_reason=why_text)

    def evaluate(self, promotion_id: UUID | str) -> Promotion:
        """Decide an open promotion again now (a freeze may have ended), recording the decision."""
        key = _uuid(promotion_id)
        if not self.is_orchestrator:
            self.tenancy.whoami()
        engine = self._orchestrator()
        with engine.db.transaction() as conn:
            row = PromotionStore(conn).row(key, lock=True)
            if row is None:
                raise NotFoundError(f"no promotion {promotion_id}")
            if PromotionStatus(row.status) not in OPEN:
                raise DefinitionError(f"promotion {promotion_id} is {row.status}, not open")
            engine._decide(conn, key)
        return self.get(key)

    def recheck_blocked(self) -> list[Promotion]:
        """Decide again the blocked promotions whose gates have cleared (a freeze ended, the
        release reached the previous environment). A dry run first, so a promotion that is
        still blocked adds nothing to the ledger. `stella serve` and the desk's board call this
        on a timer, so it never raises: what it could not do is logged and tried next time."""
        moved: list[Promotion] = []
        if not self.is_orchestrator:
            return self.system.recheck_blocked() if self.system is not None else moved
        try:
            undecided = self._undecided()
            blocked = self.find(statuses=[PromotionStatus.BLOCKED.value])
        except StellaError as exc:
            log.warning("could not recheck blocked promotions: %s", exc.message)
            return moved
        for promotion_id in undecided:
            # Requested or approved where no orchestrator ran: decided here, now.
            try:
                moved.append(self.decide(promotion_id))
            except StellaError as exc:
                log.warning("deciding promotion %s: %s", promotion_id, exc.message)
        for promotion in blocked:
            try:
                if self.why(promotion.id)["verdict"] == "deny":
                    continue
                moved.append(self.evaluate(promotion.id))
            except StellaError as exc:
                log.warning("re-deciding promotion %s: %s", promotion.id, exc.message)
                continue
            log.info("promotion %s is %s after its gates cleared", promotion.id, moved[-1].status)
        return moved

    def _undecided(self) -> list[UUID]:
        """Open promotions with a request or a decision of a person newer than the
        orchestrator's last decision on them."""
        with self.db.transaction() as conn:
            return PromotionStore(conn).undecided()

    def _decide(self, conn: Connection, promotion_id: UUID) -> Decision:
        """The orchestrator evaluates the gates, counts the approvals whose signature and
        eligibility it verified, records the decision (VSA packet) and moves the promotion; on
        approval, it starts the environment's workflow in the same transaction."""
        assert self.is_orchestrator, "only the orchestrator decides"
        store = PromotionStore(conn)
        row = store.row(promotion_id, lock=True)
        assert row is not None
        approvals = self._count(conn, row, self._approvals(conn, store, [row])[promotion_id])
        inputs = self._inputs_for(
            conn,
            promotion_id=promotion_id,
            release=row.release_name,
            components=dict(row.components),
            environment=row.environment,
            requested_by=row.requested_by,
            reason=row.reason,
            approvals=approvals,
        )
        inputs["policyVersion"] = {
            "environment": row.environment,
            "version": row.policy_version,
            "packet": EnvironmentService.policy_packet_in(conn, row.environment, row.policy_version)
            if row.policy_version is not None
            else None,
        }
        decision = decide(row.policy, inputs, self._now())
        record = decision.to_json()
        self.evidence.emit_decision(
            conn,
            policy=row.policy,
            inputs=inputs,
            decision=decision,
            subjects=list(dict(row.components).items()),
            resource_uri=f"stella://promotions/{promotion_id}",
            refs=Refs(
                release=row.release_name, environment=row.environment, promotion_id=promotion_id
            ),
        )
        new = status_for(str(decision.verdict), record["gates"])
        check_transition(PromotionStatus(row.status), new)
        blocking = why(decision)
        reason = "; ".join(
            r["message"] for g in blocking for r in g.get("reasons", []) if "message" in r
        )
        store.update(promotion_id, new, decision=record, status_reason=reason or None)
        if new is PromotionStatus.APPROVED:
            self._start(conn, row)
        return decision

    def _count(self, conn: Connection, row: Any, approvals: list[Approval]) -> list[Approval]:
        """Count, as the gate does, each approval whose signature verifies by an eligible,
        active person (never the requester under separation of duties, each person once), and
        write it down so the database can check the count; the decision records which."""
        active = {u.name for u in TenancyService.users_in(conn) if not u.disabled}
        store = PromotionStore(conn)
        seen: set[str] = set()
        out = []
        for a in sorted(approvals, key=lambda a: a.at):
            counts = (
                a.decision == "approve"
                and a.signature_ok
                and a.packet is not None
                and a.id is not None
                and a.by in active
                and a.by not in seen
                and not (row.separation_of_duties and a.by == row.requested_by)
                and eligible(row.policy, a.by, a.role or "")
            )
            if counts and a.id is not None and a.packet is not None:
                seen.add(a.by)
                if not a.counted:
                    store.count_approval(self.tenant_id, row.id, a.id, a.by, a.packet)
            out.append(replace(a, counted=counts))
        return out

    def _start(self, conn: Connection, row: Any) -> None:
        """The approved promotion runs its environment's workflow; without one, the release is
        in the environment at once."""
        env = EnvironmentService.get_in(conn, row.environment)
        assert env is not None
        store = PromotionStore(conn)
        if env.workflow is None:
            store.update(row.id, PromotionStatus.DEPLOYED, status_reason="no workflow to run")
            return
        declared = self.workflows.declared_inputs_in(conn, env.workflow)
        # `kind` (promotion | rollback): a workflow that declares it may treat a rollback
        # differently (its conditions read `inputs.kind`); the deploy step deploys either.
        offered = {"environment": row.environment, "promotion": str(row.id), "kind": row.kind}
        # The run's approvers are the ones counted above: the database copies them.
        run_id = self.workflows.start_in(
            conn,
            self.tenant_id,
            env.workflow,
            release=row.release_name,
            inputs={k: v for k, v in offered.items() if k in declared},
            promotion_id=row.id,
        )
        store.update(
            row.id,
            PromotionStatus.DEPLOYING,
            status_reason=f"running {env.workflow}",
            run_id=run_id,
        )

    @staticmethod
    def promotion_of_run_in(conn: Connection, run_id: UUID) -> tuple[UUID, str, str, str] | None:
        """(promotion id, environment, release, status) of the promotion a run carries out,
        read in another module's transaction (what a deploy step may deploy, and where)."""
        row = PromotionStore(conn).row_of_run(run_id)
        if row is None:
            return None
        return row.id, row.environment, row.release_name, str(row.status)

    @staticmethod
    def kind_in(conn: Connection, promotion_id: UUID) -> str | None:
        """`promotion` or `rollback` (None: no such promotion), in another module's
        transaction."""
        row = PromotionStore(conn).row(promotion_id)
        return None if row is None else str(row.kind)

    def run_ended(self, conn: Connection, run_id: UUID, status: str) -> None:
        """A promotion's run ended: so does its deployment (called in the run's last
        transaction)."""
        store = PromotionStore(conn)
        row = store.by_run(run_id)
        if row is None or PromotionStatus(row.status) is not PromotionStatus.DEPLOYING:
            return
        outcome = RUN_OUTCOME.get(status, PromotionStatus.FAILED)
        store.update(row.id, outcome, status_reason=f"workflow run {status}")

    def auto_promote(self, run_id: UUID, status: str) -> list[Promotion]:
        """After a promotion's run succeeded (and committed): the orchestrator requests the
        promotions into the environments that auto-promote from where the release just landed
        (the database lets it request nothing else)."""
        if status != RunStatus.SUCCEEDED or not self.is_orchestrator:
            return []
        with self.db.transaction() as conn:
            row = PromotionStore(conn).row_of_run(run_id)
            if row is None or PromotionStatus(row.status) is not PromotionStatus.DEPLOYED:
                return []
            if row.kind == "rollback":
                return []  # going back here is no reason to send that release further on
            targets = [
                e.name
                for e in EnvironmentService.list_in(conn)
                if e.auto_promote_from == row.environment
            ]
        requested = []
        for target in targets:
            try:
                with self.db.transaction() as conn:
                    promotion_id = self._request_in(
                        conn,
                        self.tenant_id,
                        row.release_name,
                        target,
                        f"auto-promoted from {row.environment}",
                    )
                requested.append(self.decide(promotion_id))
            except StellaError as exc:
                log.warning("auto-promotion of %s to %s: %s", row.release_name, target, exc)
        return requested

    # inputs -----------------------------------------------------------------------------
    def _inputs_for(
        self,
        conn: Connection,
        *,
        promotion_id: UUID,
        release: str,
        components: dict[str, str],
        environment: str,
        requested_by: str,
        reason: str,
        approvals: list[Approval],
    ) -> dict[str, Any]:
        now = self.clock.now()
        freezes = EnvironmentService.freezes_in(conn, environment, ending_after=now)
        people = TenancyService.users_in(conn)
        return {
            "request": {
                "promotionId": str(promotion_id),
                "release": release,
                "environment": environment,
                "requestedBy": requested_by,
                "reason": reason,
            },
            "release": {"name": release, "components": dict(sorted(components.items()))},
            "approvals": [
                {
                    "by": a.by,
                    "role": a.role or "",
                    "decision": a.decision,
                    "at": rfc3339(a.at),
                    "signatureOk": a.signature_ok,
                    "comment": a.comment,
                    "packet": a.packet,
                    "counted": a.counted,
                }
                for a in approvals
            ],
            "freezes": [
                {
                    "id": str(f.id),
                    "start": rfc3339(f.starts_at),
                    "end": rfc3339(f.ends_at),
                    "reason": f.reason,
                    "allow": list(f.allow),
                }
                for f in freezes
            ],
            "history": {"reached": PromotionStore(conn).reached(release)},
            "exceptions": self._exceptions(conn, release, environment, components),
            "people": [{"name": u.name, "role": u.role.value} for u in people if not u.disabled],
        }

    def _exceptions(
        self, conn: Connection, release: str, environment: str, components: dict[str, str]
    ) -> list[dict[str, Any]]:
        """Exceptions for this release and environment, with whether each is signed by an
        admin's registered key over exactly these digests (an unsigned one authorizes nothing)."""
        keys = TenancyService.keys_in(conn)
        admins = {u.name for u in TenancyService.users_in(conn) if u.role is ProductRole.ADMIN}
        found = []
        for e in PromotionStore(conn).exceptions(release, environment):
            trusted = {k.key_id: k.public_key for k in keys if k.owner == e.granted_by}
            ok = False
            if e.granted_by in admins and trusted:
                try:
                    packet = verify_bundle(json.loads(bytes(e.bundle)), trusted)
                    predicate = packet.predicate
                    ok = (
                        packet.predicate_type == EXCEPTION_V1
                        and predicate.get("exceptionId") == str(e.id)
                        and predicate.get("gate") == e.gate
                        and predicate.get("environment") == environment
                        and predicate.get("expiresAt") == rfc3339(e.expires_at)
                        and sorted(packet.subject_digests()) == sorted(components.values())
                    )
                except (PacketError, ValueError):
                    ok = False
            found.append(
                {
                    "id": str(e.id),
                    "gate": e.gate,
                    "environment": e.environment,
                    "expiresAt": rfc3339(e.expires_at),
                    "by": e.granted_by,
                    "signatureOk": ok,
                }
            )
        return found

    def _approvals(
        self, conn: Connection, store: PromotionStore, rows: list[Any]
    ) -> dict[UUID, list[Approval]]:
        """Each promotion's approvals, with whether its signature verifies: by a key registered
        to the approver, over this promotion, environment and exact digest set."""
        keys = TenancyService.keys_in(conn)
        by_owner: dict[str, dict[str, Any]] = {}
        for k in keys:
            by_owner.setdefault(k.owner, {})[k.key_id] = k.public_key
        rows_by_id = {r.id: r for r in rows}
        found: dict[UUID, list[Approval]] = {r.id: [] for r in rows}
        for a in store.approvals(list(rows_by_id)):
            row = rows_by_id[a.promotion_id]
            found[a.promotion_id].append(
                Approval(
                    by=a.approver,
                    role=a.role,
                    decision=a.decision,
                    comment=a.comment,
                    at=a.at,
                    packet_id=a.packet_id,
                    signature_ok=_signature_ok(a, row, by_owner.get(a.approver, {})),
                    id=a.id,
                    packet=a.bundle_digest,
                    counted=bool(a.counted),
                )
            )
        return found

    # reading ----------------------------------------------------------------------------
    def get(self, promotion_id: UUID | str) -> Promotion:
        key = _uuid(promotion_id)
        with self.db.transaction() as conn:
            store = PromotionStore(conn)
            row = store.row(key)
            if row is None:
                raise NotFoundError(f"no promotion {promotion_id}")
            approvals = self._approvals(conn, store, [row])
        return _promotion(row, approvals[key])

    def find(
        self,
        *,
        statuses: list[str] | None = None,
        environment: str | None = None,
        release: str | None = None,
        limit: int | None = None,
    ) -> list[Promotion]:
        with self.db.transaction() as conn:
            store = PromotionStore(conn)
            rows = store.rows(
                statuses=statuses, environment=environment, release=release, limit=limit
            )
            approvals = self._approvals(conn, store, rows) if rows else {}
        return [_promotion(r, approvals[r.id]) for r in rows]

    def why(self, promotion_id: UUID | str) -> dict[str, Any]:
        """Gate by gate, now: what passes, what blocks and what would unblock it, and who may
        still approve. Nothing is recorded."""
        promotion = self.get(promotion_id)
        with self.db.transaction() as conn:
            inputs = self._inputs_for(
                conn,
                promotion_id=promotion.id,
                release=promotion.release,
                components=promotion.components,
                environment=promotion.environment,
                requested_by=promotion.requested_by,
                reason=promotion.reason,
                approvals=list(promotion.approvals),
            )
        decision = decide(promotion.policy, inputs, self._now())
        gates = decision.to_json().get("gates") or []
        return {
            "promotion_id": str(promotion.id),
            "release": promotion.release,
            "environment": promotion.environment,
            "status": promotion.status.value,
            "verdict": str(decision.verdict),
            "evaluated_at": decision.evaluated_at,
            "blocked": decision.verdict != "allow" and promotion.open,
            "gates": [
                {
                    "gate": g["gate"],
                    "type": g["type"],
                    "status": g["status"],
                    "reasons": [f"{r['code']}: {r['message']}" for r in g["reasons"]],
                    "reason_codes": [r["code"] for r in g["reasons"]],
                    "unblock": g["unblock"],
                }
                for g in gates
            ],
            "blocking": why(decision),
            "eligible_approvers": self._eligible(promotion, inputs["people"]),
            "approval_progress": promotion.progress(),
        }

    @staticmethod
    def _eligible(promotion: Promotion, people: list[dict[str, str]]) -> list[str]:
        decided = {a.by for a in promotion.approvals}
        return [
            p["name"]
            for p in people
            if eligible(promotion.policy, p["name"], p["role"])
            and p["name"] not in decided
            and not (promotion.separation_of_duties and p["name"] == promotion.requested_by)
        ]

    def inbox(self) -> list[Promotion]:
        """Open promotions this person may decide, newest first."""
        me = self.tenancy.whoami()
        found = []
        for promotion in self.find(statuses=[s.value for s in OPEN]):
            if promotion.separation_of_duties and promotion.requested_by == me.user:
                continue
            if any(a.by == me.user for a in promotion.approvals):
                continue
            if eligible(promotion.policy, me.user, me.role.value):
                found.append(promotion)
        return found

    def changes(self, promotion_id: UUID | str) -> dict[str, Any]:
        """What the promotion changes against what runs in its environment now."""
        promotion = self.get(promotion_id)
        with self.db.transaction() as conn:
            current = PromotionStore(conn).current().get(promotion.environment)
        before: dict[str, str] = dict(current.components) if current is not None else {}
        after = promotion.components
        return {
            "environment": promotion.environment,
            "current_release": current.release_name if current is not None else None,
            "added": {c: after[c] for c in sorted(after.keys() - before.keys())},
            "removed": {c: before[c] for c in sorted(before.keys() - after.keys())},
            "changed": {
                c: {"from": before[c], "to": after[c]}
                for c in sorted(after.keys() & before.keys())
                if before[c] != after[c]
            },
            "unchanged": sorted(c for c in after.keys() & before.keys() if before[c] == after[c]),
        }

    def pipeline(self) -> list[dict[str, Any]]:
        """Environments in promotion order: what release is there since when, open promotions
        with their approval progress, and active freeze windows."""
        now = self.clock.now()
        with self.db.transaction() as conn:
            envs = EnvironmentService.list_in(conn)
            current = PromotionStore(conn).current()
            freezes = EnvironmentService.freezes_in(conn, ending_after=now)
        pending = self.find(statuses=[s.value for s in OPEN] + ["approved", "deploying"])
        columns = []
        for env in envs:
            here = current.get(env.name)
            columns.append(
                {
                    "environment": env.to_json(),
                    "current": {
                        "release": here.release_name,
                        "since": here.updated_at.isoformat(),
                        "promotion_id": str(here.id),
                    }
                    if here is not None
                    else None,
                    "pending": [p.to_json() for p in pending if p.environment == env.name],
                    "freezes": [
                        f.to_json() for f in freezes if f.environment == env.name and f.active(now)
                    ],
                    "upcoming_freezes": [
                        f.to_json()
                        for f in freezes
                        if f.environment == env.name and not f.active(now)
                    ],
                }
            )
        return columns

    def _now(self) -> str:
        return rfc3339(self.clock.now())

    @property
    def tenant_id(self) -> UUID:
        assert self.db.tenant_id is not None, "a person's session always has a tenant"
        return self.db.tenant_id


def _signature_ok(approval: Any, row: Any, keys: Mapping[str, Any]) -> bool:
    if approval.bundle is None or not keys:
        return False
    try:
        packet = verify_bundle(json.loads(bytes(approval.bundle)), keys)
    except (PacketError, ValueError):
        return False
    predicate = packet.predicate
    expected = {"approve": "approved", "reject": "rejected"}[approval.decision]
    return (
        packet.predicate_type == APPROVAL_V1
        and predicate.get("promotionId") == str(row.id)
        and predicate.get("environment") == row.environment
        and predicate.get("decision") == expected
        and (predicate.get("approver") or {}).get("name") == approval.approver
        and (predicate.get("approver") or {}).get("keyId") == packet.signer_key_id
        and sorted(packet.subject_digests()) == sorted(dict(row.components).values())
    )


def _rung_signature_ok(approval: Any, row: Any, rung: int, keys: Mapping[str, Any]) -> bool:
    if approval.bundle is None or not keys:
        return False
    try:
        packet = verify_bundle(json.loads(bytes(approval.bundle)), keys)
    except (PacketError, ValueError):
        return False
    predicate = packet.predicate
    return (
        packet.predicate_type == APPROVAL_V1
        and predicate.get("promotionId") == str(row.id)
        and predicate.get("environment") == row.environment
        and predicate.get("decision") == "approved"
        and predicate.get(RUNG_FIELD) == rung
        and (predicate.get("approver") or {}).get("name") == approval.approver
        and (predicate.get("approver") or {}).get("keyId") == packet.signer_key_id
        and sorted(packet.subject_digests()) == sorted(dict(row.components).values())
    )


def _promotion(row: Any, approvals: list[Approval]) -> Promotion:
    return Promotion(
        id=row.id,
        release=row.release_name,
        release_id=row.release_id,
        components=dict(row.components),
        environment=row.environment,
        status=PromotionStatus(row.status),
        reason=row.reason,
        requested_by=row.requested_by,
        requested_at=row.requested_at,
        updated_at=row.updated_at,
        required_approvals=row.required_approvals,
        separation_of_duties=row.separation_of_duties,
        policy=dict(row.policy),
        last_decision=row.last_decision,
        status_reason=row.status_reason,
        run_id=row.run_id,
        approvals=tuple(approvals),
        kind=row.kind,
    )
