"""Evidence use cases: keys, emitting packets, the ledger's checkpoints, export, verify, replay.

Emitters call `emit` inside the transaction of the state change the packet proves, so both
commit or neither does: no decision without its evidence, no evidence without its decision.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import rfc8785
from sqlalchemy import Connection

from stella_core.crypto.keys import PublicKey, SigningKey
from stella_core.db.engine import Database
from stella_core.errors import (
    AuthorizationError,
    DefinitionError,
    IntegrityError,
    NotFoundError,
)
from stella_core.evidence import capsule
from stella_core.evidence.chain import GENESIS, chain_hash
from stella_core.evidence.merkle import Checkpoint, MerkleTree, sign_checkpoint
from stella_core.evidence.model import (
    CheckpointRow,
    Decided,
    Filter,
    Input,
    PacketRow,
    Refs,
    RunRecords,
)
from stella_core.evidence.packets import (
    PacketError,
    bundle_bytes,
    canonical_json,
    sign_statement,
    statement,
    verify_bundle,
)
from stella_core.evidence.predicates import (
    DECISION_RECORD_FIELD,
    KEY_V1,
    PREDICATE_NAMES,
    PREDICATE_TYPES,
    RUN_V1,
    SLSA_VSA_V1,
    StepOutcome,
    referenced_inputs,
    rfc3339,
    run_predicate,
    vsa_predicate,
)
from stella_core.evidence.replay import DecisionReplay, replay_packet
from stella_core.evidence.store import LedgerStore
from stella_core.evidence.verify import Report, verify_capsule
from stella_core.tenancy.keys import (
    ORCHESTRATOR,
    LocalKeys,
    NoSigningKeyError,
    RegisteredKey,
    person_key_name,
)
from stella_core.tenancy.model import ProductRole
from stella_core.tenancy.service import TenancyService
from stella_core.workflows.template import canonical_json as template_json
from stella_core.workflows.template import load_document

TEMPLATE_MEDIA_TYPE = "application/vnd.stella.workflow-template+json"
DECISION_RECORD_MEDIA_TYPE = "application/vnd.stella.decision-record+json"
JSON_MEDIA_TYPE = "application/json"
ORCHESTRATOR_VERIFIER = "https://stella-desk.dev/verifier/orchestrator"


def origin_of(tenant_id: UUID) -> str:
    """The checkpoint origin: one log per tenant."""
    return f"stella-desk.dev/evidence/{tenant_id}"


@dataclass(frozen=True, slots=True)
class Selection:
    """What to export: exactly one of these (since and until go together)."""

    promotion_id: UUID | None = None
    release: str | None = None
    run_id: UUID | None = None
    since: datetime | None = None
    until: datetime | None = None

    def check(self) -> None:
        given = [
            self.promotion_id is not None,
            self.release is not None,
            self.run_id is not None,
            self.since is not None or self.until is not None,
        ]
        if sum(given) != 1:
            raise DefinitionError(
                "choose one selection: a promotion, a release, a run, or a time range"
            )
        if (self.since is None) != (self.until is None):
            raise DefinitionError("a time range needs both since and until")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise DefinitionError("since must be before until", field="since")

    def filter(self) -> Filter:
        return Filter(
            promotion_id=self.promotion_id,
            release=self.release,
            run_id=self.run_id,
            since=self.since,
            until=self.until,
        )

    def to_json(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.promotion_id is not None:
            out["promotion"] = str(self.promotion_id)
        if self.release is not None:
            out["release"] = self.release
        if self.run_id is not None:
            out["run"] = str(self.run_id)
        if self.since is not None and self.until is not None:
            out["since"] = self.since.isoformat()
            out["until"] = self.until.isoformat()
        return out


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def json_digest(value: Any) -> str:
    """`sha256:` of a value's canonical JSON, floats allowed (outputs are hashed, not signed)."""
    return "sha256:" + hashlib.sha256(rfc8785.dumps(value)).hexdigest()


class EvidenceService:
    """A principal's evidence: a person's (signs with their own key) or the orchestrator's
    (signs system decisions, endorses personal keys, seals). A person's service hands what only
    the orchestrator may sign to `system`, the orchestrator's service, where this machine runs
    one."""

    def __init__(
        self,
        db: Database,
        tenancy: TenancyService,
        local: LocalKeys,
        *,
        decisions: DecisionReplay,
        runs: RunRecords,
        system: EvidenceService | None = None,
        orchestrator: bool = False,
    ) -> None:
        self.db = db
        self.tenancy = tenancy
        self.local = local
        self.decisions = decisions
        self.runs = runs
        self.system = system
        self.is_orchestrator = orchestrator
        self._templates: dict[UUID, tuple[bytes, str]] = {}

    def _orchestrator(self) -> EvidenceService:
        """The orchestrator's evidence service, or a clear refusal where none runs here."""
        if self.is_orchestrator:
            return self
        if self.system is None:
            raise NoSigningKeyError(
                "this machine does not run the orchestrator: system evidence is signed and "
                "sealed where the orchestrator runs",
                remedy=("serve",),
            )
        return self.system

    @property
    def tenant_id(self) -> UUID:
        if self.db.tenant_id is None:
            raise AuthorizationError("evidence needs a tenant (a person's profile)")
        return self.db.tenant_id

    # keys -------------------------------------------------------------------------------
    def signing_keys(self) -> list[RegisteredKey]:
        with self.db.transaction() as conn:
            return TenancyService.keys_in(conn)

    def ensure_orchestrator_key(self) -> RegisteredKey | None:
        """The tenant's orchestrator key, made and registered by the orchestrator on first
        need; None where this machine runs no orchestrator."""
        if not self.is_orchestrator:
            return self.system.ensure_orchestrator_key() if self.system else None
        with self.db.transaction() as conn:
            active = TenancyService.active_key_in(conn, ORCHESTRATOR)
            if active is not None:
                return active
            return self._register_key(conn, "orchestrator", ORCHESTRATOR, "key.register")

    def ensure_personal_key(self) -> RegisteredKey:
        """This person's active key, created on this machine and registered on first need."""
        with self.db.transaction() as conn:
            identity = TenancyService.identity_in(conn)
            if identity is None:
                raise AuthorizationError("this profile's person is not an active member")
            active = TenancyService.active_key_in(conn, identity.user)
            if active is not None and self.local.load(
                person_key_name(identity.user), active.key_id
            ):
                return active
            found = self._register_key(conn, "person", identity.user, "key.register")
        self._endorse()
        return found

    def protect_personal_key(self, passphrase: str) -> dict[str, Any]:
        """This person's key files on this machine (every generation) put under their own
        passphrase, first or new; a key is made under it if this machine holds none yet."""
        identity = self.tenancy.whoami()
        if identity.role is ProductRole.AUDITOR:
            raise DefinitionError(
                f"{identity.user} is an auditor: auditors sign nothing and have no signing key "
                "to protect"
            )
        self.local.protect(identity.user, passphrase)
        active = self.ensure_personal_key()
        files = self.local.held(person_key_name(identity.user))
        return {"person": identity.user, "key_files": len(files), "key_id": active.key_id}

    def rotate_key(self, *, orchestrator: bool = False) -> RegisteredKey:
        """A new active key; the old public key stays registered for old evidence."""
        with self.db.transaction() as conn:
            identity = TenancyService.identity_in(conn)
            if identity is None:
                raise AuthorizationError("this profile's person is not an active member")
            if orchestrator and identity.role is not ProductRole.ADMIN:
                raise AuthorizationError(
                    f"{identity.user} is {identity.role.value}; rotating the orchestrator key "
                    "needs admin"
                )
            if not orchestrator:
                found = self._register_key(conn, "person", identity.user, "key.rotate")
        if orchestrator:
            system = self._orchestrator()
            with system.db.transaction() as conn:
                return system._register_key(conn, "orchestrator", ORCHESTRATOR, "key.rotate")
        self._endorse()
        return found

    def _register_key(self, conn: Connection, kind: str, owner: str, action: str) -> RegisteredKey:
        """A new key pair on this machine; its public part registered (and audited)."""
        name = ORCHESTRATOR if kind == "orchestrator" else person_key_name(owner)
        key = self.local.create(name)
        TenancyService.register_key_in(conn, self.tenant_id, kind, owner, key.public_key())
        TenancyService.audit(conn, self.tenant_id, action, "key", key.key_id, {"owner": owner})
        found = TenancyService.active_key_in(conn, owner)
        assert found is not None
        if kind == "person" and self.is_orchestrator:
            self.endorse_keys(conn)
        return found

    def _endorse(self) -> None:
        """The orchestrator vouches for keys registered since (in its own transaction); nothing
        where no orchestrator runs here (exports try again)."""
        if self.system is None:
            return
        with self.system.db.transaction() as conn:
            self.system.endorse_keys(conn)

    def endorse_keys(self, conn: Connection) -> list[PacketRow]:
        """Key packets: the orchestrator vouches for each registered personal key that has none
        yet, so an auditor who trusts the orchestrator key alone can verify approvals. Nothing
        when this machine does not hold the orchestrator key (exports try again)."""
        keys = [k for k in TenancyService.keys_in(conn) if k.owner_kind == "person"]
        if not keys:
            return []
        endorsed = {
            d for r in LedgerStore(conn).select(Filter(type="key")) for d in r.subject_digests
        }
        missing = [k for k in keys if f"sha256:{k.key_id}" not in endorsed]
        if not missing:
            return []
        try:
            signer = self.orchestrator_signer(conn)
        except NoSigningKeyError:
            return []
        return self.emit_many(
            conn,
            [
                (
                    KEY_V1,
                    [(f"key:{k.owner}", k.key_id)],
                    {
                        "keyId": k.key_id,
                        "owner": k.owner,
                        "ownerKind": "person",
                        "publicKey": k.public_key.pem().decode("ascii"),
                        "registeredAt": rfc3339(k.registered_at),
                        "registeredBy": k.registered_by,
                    },
                    (),
                    Refs(),
                )
                for k in missing
            ],
            signer=signer,
        )

    def orchestrator_signer(self, conn: Connection) -> SigningKey:
        if not self.is_orchestrator:
            raise NoSigningKeyError(
                "only the orchestrator's own session signs with the orchestrator key"
            )
        active = TenancyService.active_key_in(conn, ORCHESTRATOR)
        if active is None:
            active = self._register_key(conn, "orchestrator", ORCHESTRATOR, "key.register")
        key = self.local.load(ORCHESTRATOR, active.key_id)
        if key is None:
            raise NoSigningKeyError(
                f"this machine does not hold the orchestrator key {active.key_id[:16]}…; "
                "system decisions are signed where the orchestrator runs with that key",
                remedy=("serve",),
            )
        return key

    def personal_signer(self, conn: Connection) -> SigningKey:
        identity = TenancyService.identity_in(conn)
        if identity is None:
            raise AuthorizationError("this profile's person is not an active member")
        active = TenancyService.active_key_in(conn, identity.user)
        key = self.local.load(person_key_name(identity.user), active.key_id) if active else None
        if key is None:
            raise NoSigningKeyError(
                f"{identity.user} has no personal signing key on this machine; rotating "
                "their key creates one",
                remedy=("keys-rotate", identity.user),
            )
        return key

    # emitting ---------------------------------------------------------------------------
    def emit(
        self,
        conn: Connection,
        *,
        predicate_type: str,
        subjects: Iterable[tuple[str, str]],
        predicate: Mapping[str, Any],
        signer: SigningKey,
        inputs: Sequence[Input] = (),
        refs: Refs | None = None,
    ) -> PacketRow:
        """Sign and append one packet inside the caller's transaction."""
        return self.emit_many(
            conn, [(predicate_type, subjects, predicate, inputs, refs or Refs())], signer=signer
        )[0]

    def emit_many(
        self,
        conn: Connection,
        items: Sequence[
            tuple[str, Iterable[tuple[str, str]], Mapping[str, Any], Sequence[Input], Refs]
        ],
        *,
        signer: SigningKey,
    ) -> list[PacketRow]:
        rows = []
        inputs: list[Input] = []
        for predicate_type, subjects, predicate, item_inputs, refs in items:
            kind = PREDICATE_NAMES.get(predicate_type)
            if kind is None:
                raise DefinitionError(f"unknown predicate type {predicate_type!r}")
            signed = statement(subjects, predicate_type, predicate)
            bundle = bundle_bytes(sign_statement(signed, signer))
            digests = ["sha256:" + s["digest"]["sha256"] for s in signed["subject"]]
            rows.append((kind, predicate_type, digests, signer.key_id, bundle, refs))
            inputs.extend(item_inputs)
        store = LedgerStore(conn)
        store.put_inputs(self.tenant_id, inputs)
        return store.append(self.tenant_id, rows)

    def emit_run(self, conn: Connection, run_id: UUID, status: str) -> PacketRow:
        """The `run` packet of a run that just ended (the engine calls this in that
        transaction)."""
        run = self.runs.run_in(conn, run_id)
        if run is None:
            raise NotFoundError(f"no run {run_id}")
        body, template_digest = self._template_input(conn, run.template_version_id)
        steps = [
            StepOutcome(
                id=s.id,
                status=s.status,
                attempts=s.attempts,
                type=s.type,
                started_at=s.started_at,
                finished_at=s.finished_at,
                outputs_digest=json_digest(s.outputs) if s.outputs else None,
            )
            for s in run.steps
        ]
        release = run.release or {}
        components = {str(c["name"]): str(c["digest"]) for c in release.get("components") or []}
        predicate = run_predicate(
            run_id=run.id,
            template_name=run.template,
            template_version=run.template_version,
            template_digest=template_digest,
            status=status,
            steps=steps,
            started_at=run.started_at or run.created_at,
            finished_at=run.finished_at or run.created_at,
            actor=run.created_by,
            release_name=release.get("name"),
            release_components=components or None,
        )
        subjects = list(components.items()) or [(f"template:{run.template}", template_digest)]
        return self.emit(
            conn,
            predicate_type=RUN_V1,
            subjects=subjects,
            predicate=predicate,
            signer=self.orchestrator_signer(conn),
            inputs=[Input(TEMPLATE_MEDIA_TYPE, body)],
            refs=Refs(
                release=release.get("name"),
                run_id=run.id,
                promotion_id=self.runs.promotion_of_in(conn, run.id),
            ),
        )

    def emit_decision(
        self,
        conn: Connection,
        *,
        policy: Mapping[str, Any],
        inputs: Mapping[str, Any],
        decision: Decided,
        subjects: Iterable[tuple[str, str]],
        resource_uri: str,
        refs: Refs | None = None,
    ) -> PacketRow:
        """A decision's VSA packet, signed by the orchestrator. The policy, each input part and
        the full decision record (everything replay needs) are stored as inputs by digest."""
        record = decision.record(policy, inputs)
        record_input = Input(DECISION_RECORD_MEDIA_TYPE, canonical_json(record))
        policy_input = Input(JSON_MEDIA_TYPE, canonical_json(policy))
        parts = {
            name: Input(JSON_MEDIA_TYPE, canonical_json(part)) for name, part in inputs.items()
        }
        verdict = str(decision.verdict)
        environment = str(policy.get("environment", "-"))
        predicate = vsa_predicate(
            ORCHESTRATOR_VERIFIER,
            decision.evaluated_at,
            resource_uri,
            f"stella://policies/{environment}",
            policy_input.digest,
            [(f"stella://inputs/{name}", i.digest) for name, i in sorted(parts.items())],
            "PASSED" if verdict == "allow" else "FAILED",
            [f"STELLA_DECISION_{verdict.upper()}"],
            record_input.digest,
        )
        return self.emit(
            conn,
            predicate_type=SLSA_VSA_V1,
            subjects=subjects,
            predicate=predicate,
            signer=self.orchestrator_signer(conn),
            inputs=[record_input, policy_input, *parts.values()],
            refs=refs,
        )

    def _template_input(self, conn: Connection, version_id: UUID) -> tuple[bytes, str]:
        """The template version's canonical bytes (its digest is the template digest)."""
        cached = self._templates.get(version_id)
        if cached is not None:
            return cached
        document = self.runs.template_document_in(conn, version_id)
        if document is None:
            raise NotFoundError(f"no template version {version_id}")
        body = template_json(load_document(document), version=False)
        found = (body, "sha256:" + hashlib.sha256(body).hexdigest())
        self._templates[version_id] = found
        return found

    # reading ----------------------------------------------------------------------------
    def find(self, where: Filter | None = None) -> list[PacketRow]:
        where = where or Filter()
        if where.type is not None and where.type not in PREDICATE_TYPES:
            known = ", ".join(sorted(PREDICATE_TYPES))
            raise DefinitionError(f"unknown packet type {where.type!r}; one of: {known}")
        with self.db.transaction() as conn:
            return LedgerStore(conn).select(where)

    def get(self, packet_id: UUID | str) -> dict[str, Any]:
        """One packet decoded: statement, signer, chain position, and whether it verifies."""
        with self.db.transaction() as conn:
            store = LedgerStore(conn)
            row = _stored_packet(store, packet_id)
            keys = TenancyService.keys_in(conn)
            checkpoints = store.checkpoints()
        assert row.bundle is not None
        detail = row.to_json()
        signer = next((k for k in keys if k.key_id == row.signer_key_id), None)
        detail["signer"] = signer.to_json() if signer else None
        try:
            verified = verify_bundle(json.loads(row.bundle), {k.key_id: k.public_key for k in keys})
            detail["verified"] = True
            detail["problem"] = None
            detail["statement"] = verified.statement
        except (PacketError, ValueError) as exc:
            detail["verified"] = False
            detail["problem"] = getattr(exc, "message", str(exc))
            detail["statement"] = None
        detail["chain_ok"] = chain_hash(row.prev_hash, row.seq, row.bundle_digest) == row.hash
        covering = next((c for c in checkpoints if c.tree_size >= row.seq), None)
        detail["checkpoint"] = covering.tree_size if covering else None
        detail["bundle"] = row.bundle.decode("utf-8")
        return detail

    def checkpoints(self) -> list[CheckpointRow]:
        with self.db.transaction() as conn:
            return LedgerStore(conn).checkpoints()

    # checkpoints ------------------------------------------------------------------------
    def checkpoint(self) -> CheckpointRow:
        """Seal the ledger as it is now: a signed checkpoint over every packet. Refuses to seal a
        ledger whose chain does not recompute or does not extend the last checkpoint."""
        if not self.is_orchestrator:
            return self._orchestrator().checkpoint()
        with self.db.transaction() as conn:
            return self._checkpoint(conn)

    def _checkpoint(self, conn: Connection) -> CheckpointRow:
        store = LedgerStore(conn)
        store.lock(self.tenant_id)
        chain = store.chain()
        if not chain:
            raise NotFoundError("the ledger is empty: there is nothing to seal yet")
        _check_chain_links(chain)
        altered = store.altered_bundles()
        if altered:
            raise IntegrityError(
                f"packet #{altered[0]} no longer matches the digest it was appended with: "
                "refusing to seal the ledger; verifying the ledger names every problem"
            )
        existing = store.checkpoints()
        if existing and existing[-1].tree_size == len(chain):
            return existing[-1]
        tree = MerkleTree.from_leaves(bytes.fromhex(c.hash) for c in chain)
        for previous in existing:
            if tree.root(previous.tree_size).hex() != previous.root_hash:
                raise IntegrityError(
                    f"the ledger no longer matches checkpoint {previous.tree_size}: "
                    "packets it sealed were changed or removed; verifying the ledger names them"
                )
        signer = self.orchestrator_signer(conn)
        head = Checkpoint(origin_of(self.tenant_id), len(chain), tree.root())
        note = sign_checkpoint(head, signer)
        store.add_checkpoint(self.tenant_id, len(chain), head.root.hex(), note, signer.key_id)
        return store.checkpoints()[-1]

    # export -----------------------------------------------------------------------------
    def capsule_files(
        self,
        selection: Selection | None,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[dict[str, bytes], int]:
        """The capsule's files for a selection (None: the whole ledger, as `verify --ledger`
        checks it), and the number of packets."""
        if selection is not None:
            selection.check()
        if not self.is_orchestrator:
            # The capsule is sealed by a checkpoint only the orchestrator signs.
            return self._orchestrator().capsule_files(selection, progress=progress)
        with self.db.transaction() as conn:
            self.endorse_keys(conn)
        with self.db.transaction() as conn:
            store = LedgerStore(conn)
            rows = store.select(selection.filter() if selection else Filter())
            if not rows:
                raise NotFoundError("no evidence packets match this selection")
            rows += self._named_approvals(conn, store, rows)
            # The orchestrator's endorsements of the personal keys that signed these packets
            # travel with them, so one trusted key verifies the whole capsule.
            signed_by = {f"sha256:{r.signer_key_id}" for r in rows}
            chosen = {r.seq for r in rows}
            rows += [
                r
                for r in store.select(Filter(type="key"))
                if r.seq not in chosen and signed_by & set(r.subject_digests)
            ]
            rows.sort(key=lambda r: r.seq)
            last = max(r.seq for r in rows)
            covering = next((c for c in store.checkpoints() if c.tree_size >= last), None)
        if covering is None:
            covering = self.checkpoint()
        with self.db.transaction() as conn:
            store = LedgerStore(conn)
            chain = store.chain(covering.tree_size)
            bundles = store.bundles([r.seq for r in rows])
            registered = TenancyService.keys_in(conn)
            trusted = {k.key_id: k.public_key for k in registered}
            references: set[str] = set()
            for done, row in enumerate(rows, 1):
                try:
                    verified = verify_bundle(json.loads(bundles[row.seq]), trusted)
                    references.update(
                        d for _, d in referenced_inputs(verified.predicate_type, verified.predicate)
                    )
                except (PacketError, ValueError):
                    pass  # exported as stored; the verifier reports it
                if progress is not None:
                    progress(done, len(rows) * 2)
            inputs = store.inputs(references)
            # The orchestrator signs the manifest: the list of every file, so a capsule with a
            # packet or a file removed or added no longer verifies.
            try:
                signer = self.orchestrator_signer(conn)
            except NoSigningKeyError as exc:
                raise NoSigningKeyError(
                    f"an export signs its manifest with the orchestrator key: {exc.message}"
                ) from exc
        signers = {r.signer_key_id for r in rows} | {covering.signer_key_id, signer.key_id}
        packets = [_capsule_packet(r, bundles[r.seq]) for r in rows]
        keys = [
            capsule.CapsuleKey(
                k.key_id, k.owner_kind, k.owner, k.public_key.pem(), k.registered_at.isoformat()
            )
            for k in registered
            if k.key_id in signers
        ]
        files = capsule.build(
            origin=origin_of(self.tenant_id),
            selection=selection.to_json() if selection else {"ledger": "all"},
            packets=packets,
            chain=[(c.seq, c.bundle_digest, c.prev_hash, c.hash) for c in chain],
            inputs=inputs,
            keys=keys,
            checkpoint_note=covering.note,
            checkpoint_size=covering.tree_size,
            signer=signer,
        )
        return files, len(rows)

    def _named_approvals(
        self, conn: Connection, store: LedgerStore, rows: list[PacketRow]
    ) -> list[PacketRow]:
        """The approval packets the selected decisions name in their inputs (by bundle digest)
        and the selection missed, say a time range that starts after an approval: a capsule
        holds every approval its decisions relied on, or it does not verify."""
        decisions = [r.seq for r in rows if r.predicate_type == SLSA_VSA_V1]
        if not decisions:
            return []
        trusted = TenancyService.public_keys_in(conn)
        records: set[str] = set()
        for bundle in store.bundles(decisions).values():
            try:
                verified = verify_bundle(json.loads(bundle), trusted)
            except (PacketError, ValueError):
                continue  # exported as stored; the verifier reports it
            record = verified.predicate.get(DECISION_RECORD_FIELD)
            digest = record.get("digest") if isinstance(record, dict) else None
            if isinstance(digest, dict) and isinstance(digest.get("sha256"), str):
                records.add("sha256:" + digest["sha256"])
        named: set[str] = set()
        for _, body in store.inputs(records).values():
            try:
                inputs = json.loads(body).get("inputs")
                approvals = inputs.get("approvals") if isinstance(inputs, dict) else None
            except (AttributeError, ValueError):
                continue
            for entry in approvals if isinstance(approvals, list) else []:
                packet = entry.get("packet") if isinstance(entry, dict) else None
                if isinstance(packet, str):  # none: a decision from before packets were named
                    named.add(packet)
        missing = named - {r.bundle_digest for r in rows}
        if not missing:
            return []
        return store.select(Filter(bundle_digests=tuple(sorted(missing))))

    def export(
        self,
        selection: Selection,
        out: Path,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, Any]:
        files, count = self.capsule_files(selection, progress=progress)
        half = len(files)

        def written(done: int, total: int) -> None:
            if progress is not None:
                progress(half + done, half + total)

        digest = capsule.write_tar(files, out, progress=written)
        return {
            "out": str(out),
            "digest": digest,
            "packets": count,
            "files": len(files),
            "selection": selection.to_json(),
        }

    def verify_ledger(self) -> Report:
        """The live ledger checked by the same code as an exported capsule: every packet, the
        whole chain, and the last checkpoint (packets after it have no proof yet)."""
        with self.db.transaction() as conn:
            store = LedgerStore(conn)
            chain = store.chain()
            registered = TenancyService.keys_in(conn)
            checkpoints = store.checkpoints()
            rows = store.select(Filter())
            bundles = store.bundles([r.seq for r in rows])
            inputs = store.all_inputs()
        last = checkpoints[-1] if checkpoints else None
        files = capsule.build(
            origin=origin_of(self.tenant_id),
            selection={"ledger": "all"},
            packets=[_capsule_packet(r, bundles.get(r.seq, b"")) for r in rows],
            chain=[(c.seq, c.bundle_digest, c.prev_hash, c.hash) for c in chain],
            inputs=inputs,
            keys=[],
            checkpoint_note=last.note if last else "",
            checkpoint_size=min(last.tree_size, len(chain)) if last else 0,
            allow_uncovered=True,
        )
        # Built here from the database and read back at once: no manifest signature to check.
        report = verify_capsule(
            files,
            [k.public_key for k in registered],
            allow_uncovered=True,
            require_signed_manifest=False,
            owners={k.key_id: (k.owner_kind, k.owner) for k in registered},
        )
        report.trust = "keys registered in the database"
        if last is not None and last.tree_size > len(chain):
            report.add(
                None,
                "checkpoints",
                f"checkpoint {last.tree_size} seals more packets than the ledger holds "
                f"({len(chain)}): packets were removed",
            )
        return report

    # replay -----------------------------------------------------------------------------
    def replay(self, packet_id: UUID | str, policy: Any = None) -> dict[str, Any]:
        with self.db.transaction() as conn:
            store = LedgerStore(conn)
            row = _stored_packet(store, packet_id)
            trusted = TenancyService.public_keys_in(conn)
            assert row.bundle is not None
            verified = verify_bundle(json.loads(row.bundle), trusted)
            digests = [d for _, d in referenced_inputs(verified.predicate_type, verified.predicate)]
            inputs = {d: body for d, (_, body) in store.inputs(digests).items()}
        outcome = replay_packet(str(row.id), verified, inputs, policy, decisions=self.decisions)
        return {
            "same": outcome.same,
            "differences": outcome.differences,
            "packets": [outcome.to_json()],
        }


def replay_capsule(
    files: Mapping[str, bytes],
    trusted: Sequence[PublicKey] | None,
    policy: Any = None,
    *,
    decisions: DecisionReplay,
) -> dict[str, Any]:
    """Replay every packet of a capsule that verifies (with no database). `decisions` is the
    decision engine's replay (`promotions.decision.replay`)."""
    report = verify_capsule(files, trusted)
    inputs = {
        "sha256:" + name.rsplit("/", 1)[-1]: body
        for name, body in files.items()
        if name.startswith("inputs/sha256/")
    }
    outcomes = [
        replay_packet(label, packet, inputs, policy, decisions=decisions)
        for label, packet in report.verified.items()
    ]
    # A decision replays the same from its record even when an approval it counted is not in
    # the capsule: that is a difference too, or a capsule could leave out what it relied on.
    by_label = {o.packet: o for o in outcomes}
    for gap in report.approval_gaps:
        decision = by_label.get(gap.decision)
        if decision is not None:
            decision.differ("approval", gap.by, gap.packet, gap.reason)
    differences = [d for o in outcomes for d in o.differences]
    unverified = [p.to_json() for p in report.problems if p.check == "signatures"]
    return {
        "same": bool(outcomes) and not differences and not unverified,
        "differences": differences,
        "packets": [o.to_json() for o in outcomes],
        "unverified": unverified,
    }


def _check_chain_links(chain: Sequence[Any]) -> None:
    prev = GENESIS
    for index, link in enumerate(chain, 1):
        if link.seq != index:
            raise IntegrityError(f"the ledger is missing packet #{index}: refusing to seal it")
        if (
            link.prev_hash != prev
            or chain_hash(link.prev_hash, link.seq, link.bundle_digest) != link.hash
        ):
            raise IntegrityError(
                f"the ledger's chain is broken at packet #{link.seq}: refusing to seal it; "
                "verifying the ledger names every problem"
            )
        prev = link.hash


def _stored_packet(store: LedgerStore, packet_id: UUID | str) -> PacketRow:
    row = store.get(_uuid(packet_id, "packet id"))
    if row is None:
        raise NotFoundError(f"no evidence packet {packet_id}")
    return row


def _capsule_packet(row: PacketRow, bundle: bytes) -> capsule.CapsulePacket:
    return capsule.CapsulePacket(
        seq=row.seq,
        id=str(row.id),
        type=row.type,
        predicate_type=row.predicate_type,
        bundle=bundle,
        signer_key_id=row.signer_key_id,
        actor=row.actor,
        created_at=row.created_at.isoformat(),
        release=row.release,
        environment=row.environment,
        promotion_id=str(row.promotion_id) if row.promotion_id else None,
        run_id=str(row.run_id) if row.run_id else None,
    )


def _uuid(value: UUID | str, what: str) -> UUID:
    try:
        return value if isinstance(value, UUID) else UUID(str(value))
    except ValueError as exc:
        raise DefinitionError(f"{what} {value!r} is not a UUID") from exc
