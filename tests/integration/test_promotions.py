"""Promotions against real PostgreSQL: the demo's path to prod, separation of duties in the
service, the CLI and raw SQL, double counting, role quorums, freeze windows, rejection, every
state transition, signed approvals, and decisions replayed from their capsule."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from itertools import product
from pathlib import Path
from uuid import UUID

import psycopg
import pytest
from sqlalchemy import text

from stella_core.demo.seed import seed
from stella_core.errors import AuthorizationError, StellaError
from stella_core.evidence.capsule import read_tar
from stella_core.evidence.model import Filter
from stella_core.evidence.service import Selection, replay_capsule
from stella_core.evidence.verify import verify_capsule
from stella_core.promotions.decision import replay as replay_decision
from stella_core.promotions.model import (
    TRANSITIONS,
    ApprovalRefusedError,
    IllegalTransitionError,
    PromotionStatus,
    check_transition,
)
from stella_core.tenancy.model import ProductRole
from tests.integration.test_cli import ok_json, stella

R1 = "shop-2026.11.1"


class Demo:
    def __init__(self, world) -> None:
        self.world = world
        self.admin = world.open()
        seed(self.admin)
        self.alice = world.open("alice")
        self.bob = world.open("bob")
        self.carol = world.open("carol")
        self.dave = world.open("dave")

    def deploy(self, release: str, env: str, *approvers) -> object:
        promotion = self.alice.promotions.request(release, env)
        for person in approvers:
            promotion = person.promotions.approve(promotion.id)
        if promotion.run_id is not None:
            self.alice.workflows.wait_run(promotion.run_id, timeout=30)
        found = self.alice.promotions.get(promotion.id)
        assert found.status is PromotionStatus.DEPLOYED, found.to_json()
        return found


@pytest.fixture
def demo(world) -> Demo:
    return Demo(world)


def gate(promotion, name: str) -> dict:
    return next(g for g in promotion.to_json()["gates"] if g["gate"] == name)


def role_conn(world, name: str) -> psycopg.Connection:
    """A raw connection as a person's own login role (what a modified client could do)."""
    from stella_core.profiles import ProfileStore

    profile = ProfileStore(world.home).get(world.open(name).backend.target, name)
    url = world.admin_url.replace("postgresql+psycopg://", "postgresql://")
    from sqlalchemy.engine import make_url

    parsed = make_url(url).set(username=profile.user, password=profile.password)
    conn = psycopg.connect(parsed.render_as_string(hide_password=False), autocommit=False)
    conn.execute("SELECT set_config('app.tenant_id', %s, false)", (profile.tenant_id,))
    return conn


# ------------------------------------------------------------------------------- the path
def test_the_demo_path_to_prod_with_separation_of_duties(demo: Demo) -> None:
    demo.deploy(R1, "dev")
    demo.deploy(R1, "stage", demo.bob)
    prod = demo.alice.promotions.request(R1, "prod", "weekly release")
    assert prod.status is PromotionStatus.AWAITING_APPROVAL
    assert prod.progress() == "0 of 2"
    with pytest.raises(ApprovalRefusedError, match="separation of duties") as refused:
        demo.alice.promotions.approve(prod.id)
    assert refused.value.exit_code == 3
    prod = demo.bob.promotions.approve(prod.id, "looks good")
    assert prod.progress() == "1 of 2"
    with pytest.raises(ApprovalRefusedError, match="already decided"):
        demo.bob.promotions.approve(prod.id)
    prod = demo.carol.promotions.approve(prod.id)
    assert prod.status is PromotionStatus.DEPLOYING
    demo.alice.workflows.wait_run(prod.run_id, timeout=30)
    prod = demo.alice.promotions.get(prod.id)
    assert prod.status is PromotionStatus.DEPLOYED
    assert [(a.by, a.decision, a.signature_ok) for a in prod.approvals] == [
        ("bob", "approve", True),
        ("carol", "approve", True),
    ]
    # The workflow's approval step was satisfied by the promotion's approvals.
    run = demo.alice.workflows.get_run(prod.run_id)
    approve_step = next(s for s in run.steps if s.id == "approve")
    assert approve_step.outputs == {"approved_by": ["bob", "carol"], "via": "promotion"}
    # Evidence: each approval signed by its approver's own key, every decision a VSA.
    packets = demo.alice.evidence.find(Filter(promotion_id=prod.id))
    kinds = [p.type for p in packets]
    assert kinds.count("approval") == 2
    assert kinds.count("vsa") == 3  # at the request and after each approval
    assert "run" in kinds
    keys = {k.key_id: k.owner for k in demo.alice.evidence.signing_keys()}
    assert sorted(keys[p.signer_key_id] for p in packets if p.type == "approval") == [
        "bob",
        "carol",
    ]


def test_a_release_cannot_skip_an_environment(demo: Demo) -> None:
    prod = demo.alice.promotions.request(R1, "prod")
    assert prod.status is PromotionStatus.BLOCKED
    assert gate(prod, "predecessor")["reason_codes"] == ["PREDECESSOR_NOT_REACHED"]
    # Approvals never make a failing gate pass.
    demo.bob.promotions.approve(prod.id)
    prod = demo.carol.promotions.approve(prod.id)
    assert prod.status is PromotionStatus.BLOCKED
    assert prod.progress() == "2 of 2"


def test_a_rejection_ends_the_promotion(demo: Demo) -> None:
    demo.deploy(R1, "dev")
    stage = demo.alice.promotions.request(R1, "stage")
    rejected = demo.carol.promotions.reject(stage.id, "api 2.3.0 has a known bug")
    assert rejected.status is PromotionStatus.REJECTED
    assert gate(rejected, "approval")["reason_codes"][0] == "REJECTED"
    with pytest.raises(ApprovalRefusedError, match="takes no more decisions"):
        demo.bob.promotions.approve(stage.id)


def test_people_who_are_not_eligible_are_refused(demo: Demo) -> None:
    demo.deploy(R1, "dev")
    stage = demo.alice.promotions.request(R1, "stage")
    with pytest.raises(ApprovalRefusedError, match="not eligible"):
        demo.dave.promotions.approve(stage.id)
    assert [p.id for p in demo.bob.promotions.inbox()] == [stage.id]
    assert demo.dave.promotions.inbox() == []
    assert demo.alice.promotions.inbox() == []  # stage has no SoD, but alice is not eligible


def test_quorum_by_role(demo: Demo) -> None:
    _, password = demo.admin.tenancy.add_user("erin", ProductRole.ADMIN)
    demo.admin.save_profile_for("erin", password)
    erin = demo.world.open("erin")
    demo.admin.environments.add(
        "dr",
        order=5,
        required_approvals=2,
        separation_of_duties=True,
        approver_roles=["approver", "admin"],
        quorum={"admin": 1},
    )
    demo.deploy(R1, "dev")
    demo.deploy(R1, "stage", demo.bob)
    demo.deploy(R1, "prod", demo.bob, demo.carol)
    dr = demo.alice.promotions.request(R1, "dr")
    demo.bob.promotions.approve(dr.id)
    dr = demo.carol.promotions.approve(dr.id)
    # Two approvals, but no admin among them: the role quorum is not met.
    assert dr.status is PromotionStatus.AWAITING_APPROVAL
    assert "QUORUM_PENDING" in gate(dr, "approval")["reason_codes"]
    dr = erin.promotions.approve(dr.id)
    assert dr.status is PromotionStatus.DEPLOYED


def test_freeze_windows_block_and_allowed_people_override(demo: Demo) -> None:
    demo.deploy(R1, "dev")
    now = datetime.now(UTC)
    demo.alice.environments.freeze(
        "stage", start=now - timedelta(minutes=1), end=now + timedelta(hours=2), reason="year-end"
    )
    stage = demo.alice.promotions.request(R1, "stage")
    assert stage.status is PromotionStatus.BLOCKED
    why = demo.alice.promotions.why(stage.id)
    freeze = next(g for g in why["gates"] if g["gate"] == "freeze-window")
    assert freeze["status"] == "fail"
    assert freeze["reason_codes"] == ["FREEZE_ACTIVE"]
    assert "year-end" in freeze["reasons"][0]
    assert freeze["unblock"]
    assert why["blocked"] is True
    assert "bob" in why["eligible_approvers"]
    # The same window with alice allowed: her promotion passes the freeze gate.
    demo.alice.promotions.cancel(stage.id)
    demo.alice.environments.freeze(
        "dev",
        start=now - timedelta(minutes=1),
        end=now + timedelta(hours=2),
        reason="audit",
        allow=["alice"],
    )
    again = demo.alice.promotions.request("shop-2026.11.2", "dev")
    assert gate(again, "freeze-window")["reason_codes"] == ["FREEZE_OVERRIDDEN"]


# ------------------------------------------------------------------------------- the database
def test_raw_sql_cannot_self_approve_or_count_twice(demo: Demo) -> None:
    demo.deploy(R1, "dev")
    demo.deploy(R1, "stage", demo.bob)
    prod = demo.alice.promotions.request(R1, "prod")
    with (
        role_conn(demo.world, "alice") as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="separation of duties"),
    ):
        conn.execute(
            "INSERT INTO promotion.approvals (tenant_id, promotion_id, decision)"
            " VALUES (%s, %s, 'approve')",
            (demo.alice.db.tenant_id, prod.id),
        )
    # A client claiming to be someone else is stamped as who it is.
    with (
        role_conn(demo.world, "alice") as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(
            "INSERT INTO promotion.approvals (tenant_id, promotion_id, approver, decision)"
            " VALUES (%s, %s, 'bob', 'approve')",
            (demo.alice.db.tenant_id, prod.id),
        )
    demo.bob.promotions.approve(prod.id)
    bob_packet = demo.bob.promotions.get(prod.id).approvals[0].packet_id
    with role_conn(demo.world, "bob") as conn, pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(
            "INSERT INTO promotion.approvals (tenant_id, promotion_id, decision, packet_id)"
            " VALUES (%s, %s, 'approve', %s)",
            (demo.alice.db.tenant_id, prod.id, bob_packet),
        )
    # Nor can anyone push the status: only the orchestrator decides.
    for status in ("approved", "deployed"):
        with (
            role_conn(demo.world, "bob") as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="only the orchestrator"),
        ):
            conn.execute(
                "UPDATE promotion.promotions SET status = %s WHERE id = %s", (status, prod.id)
            )


def test_an_unsigned_approval_does_not_count(demo: Demo) -> None:
    demo.deploy(R1, "dev")
    stage = demo.alice.promotions.request(R1, "stage")
    # Without a packet of bob's the database takes no decision of his at all.
    with (
        role_conn(demo.world, "bob") as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="needs an approval packet"),
    ):
        conn.execute(
            "INSERT INTO promotion.approvals (tenant_id, promotion_id, decision)"
            " VALUES (%s, %s, 'approve')",
            (demo.alice.db.tenant_id, stage.id),
        )
    # With a packet of his own whose signature does not verify, the orchestrator counts nothing.
    demo.bob.evidence.ensure_personal_key()
    with role_conn(demo.world, "bob") as conn:
        key = conn.execute(
            "SELECT key_id FROM tenancy.signing_keys WHERE owner = 'bob'"
        ).fetchone()[0]
        packet = conn.execute(
            "INSERT INTO evidence.packets (tenant_id, seq, type, predicate_type, subject_digests,"
            " promotion_id, actor, signer_key_id, created_at, bundle, bundle_digest, prev_hash,"
            " hash) VALUES (%s, 0, 'approval', 'x', '{}', %s, '', %s, now(), '{}', '', '', '')"
            " RETURNING id",
            (demo.alice.db.tenant_id, stage.id, key),
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO promotion.approvals (tenant_id, promotion_id, decision, packet_id)"
            " VALUES (%s, %s, 'approve', %s)",
            (demo.alice.db.tenant_id, stage.id, packet),
        )
        conn.commit()
    with (
        role_conn(demo.world, "bob") as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="only the orchestrator"),
    ):
        conn.execute(
            "UPDATE promotion.promotions SET status = 'approved' WHERE id = %s", (stage.id,)
        )
    stage = demo.alice.promotions.evaluate(stage.id)
    assert [(a.by, a.signature_ok, a.counted) for a in stage.approvals] == [("bob", False, False)]
    assert stage.status is PromotionStatus.AWAITING_APPROVAL
    assert "SIGNATURE_INVALID" in gate(stage, "approval")["reason_codes"]


def test_every_transition_of_the_state_machine(demo: Demo) -> None:
    for old, new in product(PromotionStatus, PromotionStatus):
        if new in TRANSITIONS.get(old, frozenset()):
            check_transition(old, new)
        else:
            with pytest.raises(IllegalTransitionError):
                check_transition(old, new)
    # The database keeps the same machine: a deployed promotion cannot be reopened, not even
    # by the orchestrator.
    done = demo.deploy(R1, "dev")
    with (
        pytest.raises(StellaError, match="cannot go from deployed to awaiting_approval"),
        demo.alice.orchestrator.db.transaction() as conn,
    ):
        conn.execute(
            text("UPDATE promotion.promotions SET status = 'awaiting_approval' WHERE id = :i"),
            {"i": done.id},
        )
    with pytest.raises(IllegalTransitionError):
        demo.alice.promotions.cancel(done.id)


# ------------------------------------------------------------------------------- evidence
def test_the_decision_replays_from_its_capsule(demo: Demo, tmp_path: Path) -> None:
    demo.deploy(R1, "dev")
    demo.deploy(R1, "stage", demo.bob)
    prod = demo.deploy(R1, "prod", demo.bob, demo.carol)
    out = tmp_path / "prod.tar"
    demo.dave.evidence.export(Selection(promotion_id=prod.id), out)
    files = read_tar(out)
    report = verify_capsule(files)
    assert report.ok, report.to_json()
    result = replay_capsule(files, None, decisions=replay_decision)
    assert result["same"] is True
    types = sorted({p["type"] for p in result["packets"]})
    assert types == ["approval", "key", "run", "vsa"]
    # What if prod had needed three approvals: the last decision would not have allowed it.
    policy = json.loads(json.dumps(prod.policy))
    next(g for g in policy["gates"] if g["type"] == "approval")["config"]["required"] = 3
    what_if = replay_capsule(files, None, policy, decisions=replay_decision)
    assert what_if["same"] is False
    assert any(d["name"] == "approval" for d in what_if["differences"])


# ------------------------------------------------------------------------------- the CLI
def test_cli_contract(demo: Demo, world) -> None:
    env = world.env()
    ok_json(env, "--profile", "alice", "promote", R1, "--to", "dev", "-o", "json")
    stage = ok_json(env, "--profile", "alice", "promote", R1, "--to", "stage", "-o", "json")
    assert {"promotion_id", "status"} <= set(stage)
    assert stage["status"] == "awaiting_approval"
    approved = ok_json(env, "--profile", "bob", "approve", stage["promotion_id"], "-o", "json")
    assert approved["status"] == "deployed"
    prod = ok_json(
        env, "--profile", "alice", "promote", R1, "--to", "prod", "--reason", "weekly", "-o", "json"
    )
    pid = prod["promotion_id"]
    refused = stella(env, "--profile", "alice", "approve", pid)
    assert refused.returncode == 3
    assert "separation of duties" in refused.stderr
    ok_json(env, "--profile", "bob", "approve", pid, "--comment", "ok", "-o", "json")
    shown = ok_json(env, "--profile", "dave", "promotion", "show", pid, "-o", "json")
    assert {
        "promotion_id",
        "release",
        "environment",
        "status",
        "requested_by",
        "approvals",
        "gates",
    } <= set(shown)
    assert shown["requested_by"] == "alice"
    assert shown["approvals"][0]["by"] == "bob"
    assert shown["approvals"][0]["decision"] == "approve"
    assert shown["approvals"][0]["signature_ok"] is True
    assert {"gate", "status", "reasons"} <= set(shown["gates"][0])
    why = ok_json(env, "--profile", "alice", "promotion", "why", pid, "-o", "json")
    assert why["eligible_approvers"] == ["carol", "root"] or "carol" in why["eligible_approvers"]
    rejected = stella(
        env, "--profile", "carol", "reject", pid, "--reason", "not today", "-o", "json"
    )
    assert rejected.returncode == 0, rejected.stderr
    assert json.loads(rejected.stdout)["status"] == "rejected"
    frozen = stella(
        env,
        "--profile",
        "alice",
        "env",
        "freeze",
        "stage",
        "--start",
        "2026-01-01T00:00:00Z",
        "--end",
        "2099-01-01T00:00:00Z",
        "--reason",
        "change freeze",
        "--allow",
        "bob",
        "-o",
        "json",
    )
    assert frozen.returncode == 0, frozen.stderr
    assert json.loads(frozen.stdout)["allow"] == ["bob"]
    bad = stella(
        env,
        "--profile",
        "alice",
        "env",
        "freeze",
        "stage",
        "--start",
        "2026-01-02T00:00:00Z",
        "--end",
        "2026-01-01T00:00:00Z",
        "--reason",
        "x",
    )
    assert bad.returncode == 2
    added = ok_json(
        env,
        "env",
        "add",
        "qa",
        "--order",
        "7",
        "--required-approvals",
        "1",
        "--separation-of-duties",
        "--workflow",
        "deliver",
        "-o",
        "json",
    )
    assert added["workflow"] == "deliver"
    assert stella(env, "env", "add", "qa2", "--order", "8", "--workflow", "nope").returncode == 2


def test_a_signed_expiring_exception_lets_a_release_skip_an_environment(demo: Demo) -> None:
    from stella_core.errors import AuthorizationError

    demo.deploy(R1, "dev")
    blocked = demo.alice.promotions.request(R1, "prod")
    assert blocked.status is PromotionStatus.BLOCKED
    expires = datetime.now(UTC) + timedelta(hours=1)
    with pytest.raises(AuthorizationError):
        demo.alice.promotions.grant_exception(R1, "prod", reason="hotfix", expires_at=expires)
    granted = demo.admin.promotions.grant_exception(
        R1, "prod", reason="hotfix for the payment outage", expires_at=expires
    )
    assert granted["granted_by"] == demo.admin.tenancy.whoami().user
    # Open promotions it concerns are decided again at once.
    now = demo.alice.promotions.get(blocked.id)
    assert now.status is PromotionStatus.AWAITING_APPROVAL
    assert gate(now, "predecessor")["reason_codes"] == ["EXCEPTION_APPLIED"]
    packets = demo.dave.evidence.find(Filter(type="exception"))
    assert [p.release for p in packets] == [R1]
    assert demo.dave.evidence.replay(packets[0].id)["same"] is True


def test_an_emergency_change_outside_the_windows_needs_a_schedule_exception(
    demo: Demo, world
) -> None:
    env = world.env()
    days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    other_day = days[(datetime.now(UTC).weekday() + 3) % 7]
    ok_json(
        env,
        "env",
        "add",
        "edge",
        "--order",
        "3",
        "--window",
        f"{other_day}@10:00-11:00",
        "-o",
        "json",
    )
    asked = ok_json(env, "--profile", "alice", "promote", R1, "--to", "edge", "-o", "json")
    assert asked["status"] == "blocked"
    pid = asked["promotion_id"]
    why = ok_json(env, "--profile", "alice", "promotion", "why", pid, "-o", "json")
    schedule = next(g for g in why["gates"] if g["gate"] == "schedule")
    assert schedule["status"] == "fail"
    assert any("exception to the schedule gate for edge" in u for u in schedule["unblock"])

    expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    grant = ["promotion", "exception", R1, "--env", "edge", "--expires", expires, "-o", "json"]
    # Only an admin may waive a gate.
    refused = stella(env, "--profile", "alice", *grant, "--gate", "schedule", "--reason", "p1")
    assert refused.returncode == 1
    assert "needs admin" in refused.stderr
    assert stella(env, *grant, "--gate", "approval", "--reason", "no").returncode == 2
    ok_json(env, *grant, "--gate", "schedule", "--reason", "payment outage, incident 4711")
    still = ok_json(env, "promotion", "show", pid, "-o", "json")
    assert still["status"] == "blocked"  # the predecessor gate still fails
    schedule = next(g for g in still["gates"] if g["gate"] == "schedule")
    assert schedule["status"] == "pass"
    assert schedule["reason_codes"] == ["EXCEPTION_APPLIED"]
    ok_json(env, *grant, "--reason", "prod is this release's twin")
    done = ok_json(env, "promotion", "show", pid, "-o", "json")
    assert done["status"] == "deployed"  # no approvals and no workflow in edge
    # Each waiver is signed evidence, and each decision replays.
    waivers = demo.dave.evidence.find(Filter(type="exception"))
    assert len(waivers) == 2
    for packet in demo.dave.evidence.find(Filter(type="vsa", promotion_id=UUID(pid))):
        assert demo.dave.evidence.replay(packet.id)["same"] is True


def test_a_key_that_could_not_be_made_with_the_profile_is_made_at_the_first_signature(
    demo: Demo, monkeypatch
) -> None:
    from stella_core.evidence.service import EvidenceService

    def disk_full(self) -> None:
        raise StellaError("no space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(EvidenceService, "ensure_personal_key", disk_full)
        user, key = demo.admin.add_person("erin", ProductRole.APPROVER)
    assert key is None
    assert user.name in {u.name for u in demo.admin.tenancy.list_users()}  # nothing lost
    assert "erin" not in {k.owner for k in demo.admin.evidence.signing_keys()}

    demo.deploy(R1, "dev")
    asked = demo.alice.promotions.request(R1, "stage")
    approved = demo.world.open("erin").promotions.approve(asked.id, "fine")
    assert [a.signature_ok for a in approved.approvals] == [True]
    assert "erin" in {k.owner for k in demo.admin.evidence.signing_keys()}


def test_only_the_administrative_connection_declares_a_demo(world, superuser) -> None:
    admin = world.open()
    admin.add_person("bob", ProductRole.APPROVER)
    bob = world.open("bob")
    assert not admin.tenancy.is_demo()
    # The application role may read its tenant but never change it, not even by raw SQL.
    with role_conn(world, "bob") as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("UPDATE tenancy.tenants SET demo = true")
    with pytest.raises(AuthorizationError):
        bob.tenancy.mark_demo()  # not an admin
    assert not bob.tenancy.is_demo()

    assert admin.tenancy.mark_demo() is True
    assert admin.tenancy.mark_demo() is False  # once
    assert bob.tenancy.is_demo()
    declared = [e for e in admin.tenancy.audit_entries() if e.action == "tenant.demo"]
    assert len(declared) == 1
    assert declared[0].details == {"by": admin.profile.person_name}
    # Made by the administrative connection, and the audit chain says so.
    assert declared[0].actor == superuser.info.user
    assert admin.tenancy.verify_audit()[1] == []


def _machine_keys(demo: Demo):
    """The key files of the demo's database as this machine's passphrase alone would open them."""
    from stella_core.crypto.secretbox import SecretBox
    from stella_core.tenancy.keys import LocalKeys

    return LocalKeys(
        demo.world.home, demo.admin.backend.target, SecretBox.from_home(demo.world.home)
    )


def _opens_with_machine_passphrase(demo: Demo, person: str) -> list[bool]:
    from stella_core.crypto.keys import KeyFile, WrongPassphraseError
    from stella_core.tenancy.keys import person_key_name

    local = _machine_keys(demo)
    found = []
    for path in local.held(person_key_name(person)):
        try:
            KeyFile.read(path, local._passphrase())
            found.append(True)
        except WrongPassphraseError:
            found.append(False)
    return found


def test_a_personal_passphrase_guards_approvals_from_the_cli(demo: Demo, world) -> None:
    env = {k: v for k, v in world.env().items() if k != "STELLA_PASSPHRASE"}
    secret = "correct horse battery staple"
    demo.deploy(R1, "dev")
    stage = demo.alice.promotions.request(R1, "stage")
    # Two generations of bob's key: both go under his passphrase.
    ok_json(env, "--profile", "bob", "keys", "rotate", "-o", "json")
    assert _opens_with_machine_passphrase(demo, "bob") == [True, True]

    for bad in ("\n", "half\0way\n"):  # empty, NUL: refused, nothing changes
        refused = stella(env, "--profile", "bob", "keys", "passphrase", stdin=bad)
        assert refused.returncode == 2, refused.stderr
        assert "Traceback" not in refused.stderr
    assert _opens_with_machine_passphrase(demo, "bob") == [True, True]

    done = ok_json(env, "--profile", "bob", "keys", "passphrase", "-o", "json", stdin=secret + "\n")
    assert done["person"] == "bob"
    assert done["key_files"] == 2
    # Neither generation opens with this machine's passphrase any more; others' keys still do.
    assert _opens_with_machine_passphrase(demo, "bob") == [False, False]
    assert _opens_with_machine_passphrase(demo, "carol") == [True]
    # The profile says so; the passphrase is nowhere on disk.
    profiles = json.loads((world.home / "profiles.json").read_text())
    bobs = next(s["profiles"]["bob"] for s in profiles.values())
    assert bobs["key_passphrase"] is True
    assert (world.home / "profiles.json").stat().st_mode & 0o777 == 0o600
    for path in world.home.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path

    # No passphrase and no terminal: a clear error, exit 2, nothing recorded.
    missing = stella(env, "--profile", "bob", "approve", str(stage.id), stdin="")
    assert missing.returncode == 2, missing.stderr
    assert "bob's signing key is protected by their own passphrase" in missing.stderr
    assert "STELLA_PASSPHRASE" in missing.stderr
    assert "Traceback" not in missing.stderr
    # A wrong one: refused in words, exit 2, nothing recorded, the guess not repeated.
    wrong = stella(
        {**env, "STELLA_PASSPHRASE": "tr0ub4dor&3"}, "--profile", "bob", "approve", str(stage.id)
    )
    assert wrong.returncode == 2, wrong.stderr
    assert "that passphrase does not open bob's signing key" in wrong.stderr
    assert "tr0ub4dor" not in wrong.stderr + wrong.stdout
    assert "Traceback" not in wrong.stderr
    assert not demo.alice.promotions.get(stage.id).approvals
    # The right one: the approval is signed with his key and counts.
    approved = ok_json(
        {**env, "STELLA_PASSPHRASE": secret},
        "--profile",
        "bob",
        "approve",
        str(stage.id),
        "-o",
        "json",
    )
    assert [(a["by"], a["signature_ok"]) for a in approved["approvals"]] == [("bob", True)]
    assert approved["status"] == "deployed"

    # Changing it needs the current one; afterwards only the new one opens the key.
    unchanged = stella(
        {**env, "STELLA_PASSPHRASE": "not it"},
        "--profile",
        "bob",
        "keys",
        "passphrase",
        stdin="next one\n",
    )
    assert unchanged.returncode == 2, unchanged.stderr
    ok_json(
        {**env, "STELLA_PASSPHRASE": secret},
        "--profile",
        "bob",
        "keys",
        "passphrase",
        "-o",
        "json",
        stdin="next one\n",
    )
    old = stella({**env, "STELLA_PASSPHRASE": secret}, "--profile", "bob", "keys", "rotate")
    assert old.returncode == 2, old.stderr  # a new generation only for whoever opens the current
    rotated = ok_json(
        {**env, "STELLA_PASSPHRASE": "next one"}, "--profile", "bob", "keys", "rotate", "-o", "json"
    )
    assert _opens_with_machine_passphrase(demo, "bob") == [False, False, False]
    assert rotated["owner"] == "bob"


def on_terminal(env: dict[str, str], *args: str, answers: list[str]) -> tuple[int, str]:
    """Run the CLI on a pseudo-terminal of its own, answering each prompt (a line ending in
    ': ') in turn. Returns the exit code and everything the terminal showed."""
    import os
    import pty
    import sys
    import time

    pid, fd = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the pty, as in a person's shell
        os.execve(sys.executable, [sys.executable, "-m", "stella_core.cli.main", *args], env)
    shown, pending = b"", list(answers)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
        if pending and shown.rstrip(b" ").endswith(b":"):
            os.write(fd, pending.pop(0).encode() + b"\n")
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")


def test_the_terminal_asks_for_passphrases_without_echoing_them(demo: Demo, world) -> None:
    env = {k: v for k, v in world.env().items() if k != "STELLA_PASSPHRASE"}
    code, shown = on_terminal(
        env, "--profile", "carol", "keys", "passphrase", answers=["one thing", "another"]
    )
    assert code == 2
    assert "the two passphrases differ; nothing was changed" in shown
    code, shown = on_terminal(
        env, "--profile", "carol", "keys", "passphrase", answers=["carol's own", "carol's own"]
    )
    assert code == 0, shown
    assert "New passphrase for carol's signing key:" in shown
    assert "carol's own" not in shown  # never echoed
    demo.deploy(R1, "dev")
    stage = demo.alice.promotions.request(R1, "stage")
    code, shown = on_terminal(
        env, "--profile", "carol", "approve", str(stage.id), answers=["carol's own"]
    )
    assert code == 0, shown
    assert "Passphrase of carol's signing key:" in shown
    assert [(a.by, a.signature_ok) for a in demo.alice.promotions.get(stage.id).approvals] == [
        ("carol", True)
    ]


def test_a_person_added_with_a_passphrase_never_has_a_machine_key(demo: Demo, world) -> None:
    env = {k: v for k, v in world.env().items() if k != "STELLA_PASSPHRASE"}
    added = ok_json(
        env,
        "user",
        "add",
        "erin",
        "--role",
        "approver",
        "--passphrase-stdin",
        "-o",
        "json",
        stdin="erin's own words\n",
    )
    assert added["key_passphrase"] is True
    assert added["signing_key_id"]
    assert _opens_with_machine_passphrase(demo, "erin") == [False]
    refused = stella(
        env, "user", "add", "fay", "--role", "approver", "--passphrase-stdin", stdin="\n"
    )
    assert refused.returncode == 2
    assert "fay" not in {u.name for u in demo.admin.tenancy.list_users()}  # nothing made
    # Without the flag, as before: no passphrase anywhere, and the person signs at once.
    ok_json(env, "user", "add", "gus", "--role", "approver", "-o", "json")
    demo.deploy(R1, "dev")
    stage = demo.alice.promotions.request(R1, "stage")
    approved = ok_json(env, "--profile", "gus", "approve", str(stage.id), "-o", "json")
    assert [(a["by"], a["signature_ok"]) for a in approved["approvals"]] == [("gus", True)]
    # erin signs with hers.
    erin = world.open("erin")
    with pytest.raises(StellaError, match="protected by their own passphrase"):
        erin.evidence.ensure_personal_key()
    assert (
        erin.as_person("erin", "erin's own words").evidence.ensure_personal_key().key_id
        == (added["signing_key_id"])
    )


def test_an_environment_can_auto_promote_from_its_predecessor(demo: Demo) -> None:
    demo.admin.environments.add("mirror", order=3, auto_promote_from="prod")
    demo.deploy(R1, "dev")
    demo.deploy(R1, "stage", demo.bob)
    demo.deploy(R1, "prod", demo.bob, demo.carol)
    [mirror] = demo.alice.promotions.find(environment="mirror")
    assert mirror.reason == "auto-promoted from prod"
    assert mirror.requested_by == "orchestrator"  # it requests auto-promotions, nothing else
    assert mirror.status is PromotionStatus.DEPLOYED  # no approvals, no workflow


def test_the_orchestrator_key_alone_verifies_a_promotion_capsule(demo: Demo, tmp_path) -> None:
    """Approvals are signed by personal keys; the orchestrator's key packets vouch for them, so
    an auditor handed one public key verifies everything."""
    demo.deploy(R1, "dev")
    demo.deploy(R1, "stage", demo.bob)
    prod = demo.deploy(R1, "prod", demo.bob, demo.carol)
    files, _ = demo.dave.evidence.capsule_files(Selection(promotion_id=prod.id))
    orchestrator = [
        k.public_key for k in demo.dave.evidence.signing_keys() if k.owner == "orchestrator"
    ]
    report = verify_capsule(files, orchestrator)
    assert report.ok, report.to_json()
    endorsed = [v for v in report.verified.values() if v.predicate_type.endswith("/key/v1")]
    assert sorted(v.predicate["owner"] for v in endorsed) == ["bob", "carol"]
    # Without the endorsements, the approvals are signed by keys nobody vouched for.
    manifest = json.loads(files["manifest.json"])
    endorsements = {p["file"] for p in manifest["packets"] if p["type"] == "key"}
    assert len(endorsements) == 2
    stripped = {name: body for name, body in files.items() if name not in endorsements}
    from stella_core.evidence import capsule

    stripped["SHA256SUMS"] = capsule.sha256sums(stripped)
    bad = verify_capsule(stripped, orchestrator)
    assert any(p.check == "signatures" and "unknown signer" in p.message for p in bad.problems)


def test_a_blocked_promotion_moves_on_once_its_freeze_ends(demo: Demo) -> None:
    import time

    demo.deploy(R1, "dev")
    now = datetime.now(UTC)
    demo.alice.environments.freeze(
        "stage", start=now - timedelta(minutes=1), end=now + timedelta(seconds=3), reason="short"
    )
    stage = demo.alice.promotions.request(R1, "stage")
    assert stage.status is PromotionStatus.BLOCKED
    packets = len(demo.alice.evidence.find())
    assert demo.alice.promotions.recheck_blocked() == []
    assert len(demo.alice.evidence.find()) == packets  # a dry run records nothing
    time.sleep(max(0.0, (now + timedelta(seconds=3.2) - datetime.now(UTC)).total_seconds()))
    [moved] = demo.alice.promotions.recheck_blocked()
    assert moved.id == stage.id
    assert moved.status is PromotionStatus.AWAITING_APPROVAL
    assert gate(moved, "freeze-window")["reason_codes"] == ["NO_ACTIVE_FREEZE"]
