"""A ledger and its capsule built in memory, with no database: the files an export writes, for
pure tests of verify and replay (tests/integration does the same through PostgreSQL)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stella_core.crypto.keys import SigningKey
from stella_core.evidence import capsule
from stella_core.evidence.chain import GENESIS, chain_hash
from stella_core.evidence.merkle import Checkpoint, MerkleTree, sign_checkpoint
from stella_core.evidence.packets import bundle_bytes, canonical_json, sign_statement, statement
from stella_core.evidence.predicates import (
    APPROVAL_V1,
    KEY_V1,
    PREDICATE_NAMES,
    SLSA_VSA_V1,
    vsa_predicate,
)
from stella_core.promotions.decision import decide, decision_record
from tests.support.evidence_helpers import API, NOW, POLICY, WEB, release_json

ORIGIN = "stella-desk.dev/evidence/00000000-0000-0000-0000-000000000001"
PROMOTION = str(uuid.UUID(int=7))
JSON = "application/json"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class MemoryLedger:
    orchestrator: SigningKey = field(default_factory=SigningKey.generate)
    people: dict[str, SigningKey] = field(default_factory=dict)
    packets: list[capsule.CapsulePacket] = field(default_factory=list)
    chain: list[tuple[int, str, str, str]] = field(default_factory=list)
    inputs: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    checkpoint: tuple[int, str] = (0, "")

    def append(
        self,
        predicate_type: str,
        subjects: Iterable[tuple[str, str]],
        predicate: dict[str, Any],
        signer: SigningKey,
        actor: str,
        *,
        inputs: Sequence[bytes] = (),
        promotion_id: str | None = None,
    ) -> capsule.CapsulePacket:
        """Sign and chain one packet, as `EvidenceService.emit` and the database trigger do."""
        bundle = bundle_bytes(
            sign_statement(statement(subjects, predicate_type, predicate), signer)
        )
        for body in inputs:
            self.inputs[sha(body)] = (JSON, body)
        return self.row(predicate_type, bundle, signer.key_id, actor, promotion_id=promotion_id)

    def row(
        self,
        predicate_type: str,
        bundle: bytes,
        signer_key_id: str,
        actor: str,
        *,
        promotion_id: str | None = None,
    ) -> capsule.CapsulePacket:
        """Chain a row holding `bundle` as is, whatever it says (what a forger appends)."""
        seq = len(self.chain) + 1
        digest = sha(bundle)
        prev = self.chain[-1][3] if self.chain else GENESIS
        self.chain.append((seq, digest, prev, chain_hash(prev, seq, digest)))
        packet = capsule.CapsulePacket(
            seq=seq,
            id=str(uuid.UUID(int=1000 + seq)),
            type=PREDICATE_NAMES[predicate_type],
            predicate_type=predicate_type,
            bundle=bundle,
            signer_key_id=signer_key_id,
            actor=actor,
            created_at="2026-11-20T10:00:00+00:00",
            promotion_id=promotion_id,
        )
        self.packets.append(packet)
        return packet

    def person(self, name: str) -> SigningKey:
        """A person's key, vouched for by the orchestrator's key packet."""
        key = SigningKey.generate()
        self.people[name] = key
        public = key.public_key()
        self.append(
            KEY_V1,
            [(f"key:{name}", public.key_id)],
            {
                "keyId": public.key_id,
                "owner": name,
                "ownerKind": "person",
                "publicKey": public.pem().decode("ascii"),
                "registeredAt": NOW,
                "registeredBy": name,
            },
            self.orchestrator,
            name,
        )
        return key

    def approve(
        self,
        name: str,
        *,
        decision: str = "approved",
        promotion_id: str = PROMOTION,
        signer: SigningKey | None = None,
        actor: str | None = None,
    ) -> capsule.CapsulePacket:
        """`name`'s approval packet, signed with their key (or `signer`, to forge one) and
        appended by them (or `actor`)."""
        key = signer or self.people.get(name) or self.person(name)
        return self.append(
            APPROVAL_V1,
            [("web", WEB), ("api", API)],
            {
                "promotionId": promotion_id,
                "decision": decision,
                "approver": {"name": name, "keyId": key.key_id},
                "environment": "prod",
                "release": release_json(),
                "decidedAt": NOW,
            },
            key,
            actor or name,
            promotion_id=promotion_id,
        )

    def decide(self, approvals: Sequence[dict[str, Any]]) -> capsule.CapsulePacket:
        """The orchestrator's decision (VSA) over these `approvals` input entries, stored as
        `EvidenceService.emit_decision` stores it."""
        inputs = {
            "request": {
                "promotionId": PROMOTION,
                "release": "shop-1",
                "environment": "prod",
                "requestedBy": "alice",
                "reason": "weekly",
            },
            "release": {"name": "shop-1", "components": {"web": WEB, "api": API}},
            "approvals": list(approvals),
            "freezes": [],
            "history": {"reached": ["dev", "stage"]},
        }
        decision = decide(POLICY, inputs, NOW)
        record = canonical_json(decision_record(POLICY, inputs, decision))
        policy = canonical_json(POLICY)
        parts = {name: canonical_json(part) for name, part in inputs.items()}
        verdict = str(decision.verdict)
        predicate = vsa_predicate(
            "https://stella-desk.dev/verifier/orchestrator",
            decision.evaluated_at,
            f"stella://promotions/{PROMOTION}",
            "stella://policies/prod",
            sha(policy),
            [(f"stella://inputs/{name}", sha(body)) for name, body in sorted(parts.items())],
            "PASSED" if verdict == "allow" else "FAILED",
            [f"STELLA_DECISION_{verdict.upper()}"],
            sha(record),
        )
        return self.append(
            SLSA_VSA_V1,
            [("web", WEB), ("api", API)],
            predicate,
            self.orchestrator,
            "alice",
            inputs=[record, policy, *parts.values()],
            promotion_id=PROMOTION,
        )

    def files(
        self,
        *,
        leave_out: Iterable[int] = (),
        signed: bool = True,
        signer: SigningKey | None = None,
    ) -> dict[str, bytes]:
        """The capsule of every packet but those `leave_out` names (by seq), sealed by a
        checkpoint over the whole chain; the manifest signed by the orchestrator key (or
        `signer`), or by nobody."""
        left_out = set(leave_out)
        if self.checkpoint[0] != len(self.chain):  # sealed once, as the ledger does
            tree = MerkleTree.from_leaves(bytes.fromhex(link[3]) for link in self.chain)
            head = Checkpoint(ORIGIN, len(self.chain), tree.root())
            self.checkpoint = (len(self.chain), sign_checkpoint(head, self.orchestrator))
        note = self.checkpoint[1]
        keys = [
            capsule.CapsuleKey(
                self.orchestrator.key_id,
                "orchestrator",
                "orchestrator",
                self.orchestrator.public_key().pem(),
                NOW,
            ),
            *(
                capsule.CapsuleKey(k.key_id, "person", name, k.public_key().pem(), NOW)
                for name, k in self.people.items()
            ),
        ]
        return capsule.build(
            origin=ORIGIN,
            selection={"promotion": PROMOTION},
            packets=[p for p in self.packets if p.seq not in left_out],
            chain=self.chain,
            inputs=self.inputs,
            keys=keys,
            checkpoint_note=note,
            checkpoint_size=len(self.chain),
            signer=(signer or self.orchestrator) if signed else None,
        )


def entry(
    by: str,
    packet: capsule.CapsulePacket | None,
    *,
    counted: bool = True,
    decision: str = "approve",
) -> dict[str, Any]:
    """One `approvals` entry of a decision's inputs, naming its packet as promotions does
    (`packet`: the ledger's bundle digest; `counted`: whether the gate counted it); without a
    packet, a legacy entry from before packets were named."""
    value: dict[str, Any] = {
        "by": by,
        "role": "approver",
        "decision": decision,
        "at": NOW,
        "signatureOk": True,
    }
    if packet is not None:
        value["packet"] = sha(packet.bundle)
        value["counted"] = counted
    return value
