"""An insider with their own database login and raw SQL (what a modified client can do) cannot
get a release anywhere the policy does not allow, nor make the record say otherwise.

Each test connects as a person's own PostgreSQL login role, exactly as the product does, and
tries what an adversarial review found to get through before the orchestrator became a
principal of its own (issue 9): forged promotion columns, status jumps, policy edits, forged or
copied approval packets, runs carrying approvers, rewritten history.
"""

from __future__ import annotations

import shutil
from uuid import UUID, uuid4

import psycopg
import pytest
from sqlalchemy import text

from stella_core.promotions.model import PromotionStatus
from tests.integration.test_cli import ok_json, stella
from tests.integration.test_promotions import R1, Demo, role_conn


@pytest.fixture
def demo(world) -> Demo:
    return Demo(world)


_TENANTS: dict[int, str] = {}


def refused(conn: psycopg.Connection, sql: str, params: tuple = ()) -> str:
    """Run one statement that must be refused; roll back; return the database's words."""
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(sql, params)
    conn.rollback()
    # The tenant was set in the transaction just rolled back.
    conn.execute("SELECT set_config('app.tenant_id', %s, false)", (_TENANTS[id(conn)],))
    return str(caught.value)


def person(world, name: str) -> psycopg.Connection:
    conn = role_conn(world, name)
    _TENANTS[id(conn)] = conn.execute("SELECT current_setting('app.tenant_id')").fetchone()[0]
    return conn


def orchestrator_conn(world) -> psycopg.Connection:
    """A raw connection as the tenant's orchestrator login (to show the database holds even
    the orchestrator to the rules)."""
    from sqlalchemy.engine import make_url

    stella = world.open("alice")
    login = stella.orchestrator.login
    url = world.admin_url.replace("postgresql+psycopg://", "postgresql://")
    parsed = make_url(url).set(username=login.user, password=login.password)
    conn = psycopg.connect(parsed.render_as_string(hide_password=False), autocommit=False)
    conn.execute("SELECT set_config('app.tenant_id', %s, false)", (login.tenant_id,))
    _TENANTS[id(conn)] = login.tenant_id
    return conn


def recorded_inputs(demo: Demo, *needles: str) -> bool:
    """Whether a decision recorded an input document (canonical JSON) holding every needle."""
    with demo.alice.db.transaction() as conn:
        bodies = conn.execute(text("SELECT body FROM evidence.inputs")).scalars().all()
    return any(all(n in bytes(b).decode() for n in needles) for b in bodies)


def release_id(conn: psycopg.Connection, name: str) -> UUID:
    return conn.execute("SELECT id FROM release.releases WHERE name = %s", (name,)).fetchone()[0]


def prod_ready(demo: Demo, release: str = R1) -> None:
    demo.deploy(release, "dev")
    demo.deploy(release, "stage", demo.bob)


# ------------------------------------------------------------------ 1. forged promotion columns
def test_a_forged_insert_gets_the_environments_policy_and_cannot_jump_to_deployed(
    demo: Demo, world
) -> None:
    prod_ready(demo)
    alice = person(world, "alice")
    rid = release_id(alice, R1)
    row = alice.execute(
        "INSERT INTO promotion.promotions (tenant_id, release_id, release_name, components,"
        " environment, status, reason, required_approvals, separation_of_duties, policy,"
        " last_decision, status_reason, run_id, requested_by)"
        " VALUES (%s, %s, 'forged', '{\"web\": \"sha256:" + "0" * 64 + "\"}', 'prod', 'approved',"
        " 'x', 0, false, '{\"environment\": \"prod\", \"gates\": []}', '{}', 'ok', NULL, 'bob')"
        " RETURNING id, status, required_approvals, separation_of_duties, release_name,"
        " components, requested_by, policy, last_decision",
        (_TENANTS[id(alice)], rid),
    ).fetchone()
    alice.commit()
    promotion_id, status, required, sod, name, components, requester, policy, last = row
    # Everything the client sent that the database can derive was replaced by what it derives.
    assert (status, required, sod, name, requester, last) == (
        "requested",
        2,
        True,
        R1,
        "alice",
        None,
    )
    real = demo.alice.releases.get_release(R1)
    assert components == {c.name: c.digest for c in real.components}
    assert policy == demo.alice.environments.policy_document("prod")
    for target in ("approved", "deploying", "deployed"):
        words = refused(
            alice,
            "UPDATE promotion.promotions SET status = %s WHERE id = %s",
            (target, promotion_id),
        )
        assert "only the orchestrator" in words
    # No evidence claims anything about it, and "why" explains it instead of crashing.
    why = demo.alice.promotions.why(promotion_id)
    assert why["status"] == "requested"
    assert {g["gate"] for g in why["gates"]} >= {"approval", "predecessor", "freeze-window"}
    assert demo.alice.promotions.get(promotion_id).status is PromotionStatus.REQUESTED


def test_a_promotion_of_another_tenants_release_is_refused(demo: Demo, world, superuser) -> None:
    other = superuser.execute("INSERT INTO tenancy.tenants (name) VALUES ('other') RETURNING id")
    other_tenant = other.fetchone()[0]
    foreign = superuser.execute(
        "INSERT INTO release.releases (tenant_id, name) VALUES (%s, 'theirs') RETURNING id",
        (other_tenant,),
    ).fetchone()[0]
    alice = person(world, "alice")
    words = refused(
        alice,
        "INSERT INTO promotion.promotions (tenant_id, release_id, environment)"
        " VALUES (%s, %s, 'dev')",
        (_TENANTS[id(alice)], foreign),
    )
    assert "no release" in words
    words = refused(
        alice,
        "INSERT INTO promotion.promotions (tenant_id, release_id, environment)"
        " VALUES (%s, %s, 'dev')",
        (str(other_tenant), foreign),
    )
    assert "row-level security" in words or "no environment" in words


# ------------------------------------------------------------------ 2. policy edits
def test_a_release_manager_cannot_change_a_policy_and_an_admin_only_signed(
    demo: Demo, world
) -> None:
    alice = person(world, "alice")
    for sql in (
        "UPDATE env.environments SET separation_of_duties = false WHERE name = 'prod'",
        "UPDATE env.environments SET required_approvals = 0 WHERE name = 'prod'",
    ):
        assert "only an admin sets a policy" in refused(alice, sql)
    assert demo.admin.environments.get("prod").separation_of_duties is True
    assert demo.admin.environments.get("prod").required_approvals == 2
    # Even an admin's raw UPDATE needs a policy packet the admin signed for that change.
    admin = person(world, demo.admin.profile.name)
    words = refused(
        admin, "UPDATE env.environments SET separation_of_duties = false WHERE name = 'prod'"
    )
    assert "signed policy packet" in words
    # A packet of an earlier version cannot be used again.
    old_packet = admin.execute(
        "SELECT packet_id FROM env.policy_versions WHERE environment = 'dev' AND version = 1"
    ).fetchone()[0]
    words = refused(
        admin,
        "UPDATE env.environments SET separation_of_duties = false, policy_packet_id = %s"
        " WHERE name = 'prod'",
        (old_packet,),
    )
    assert "policy packet" in words


def test_env_set_is_an_audited_signed_policy_version_that_decisions_name(demo: Demo, world) -> None:
    env = world.env()
    ok_json(
        env, "env", "set", "dev", "--required-approvals", "1", "--reason", "tighten", "-o", "json"
    )
    versions = ok_json(env, "env", "policies", "dev", "-o", "json")
    assert [v["version"] for v in versions] == [1, 2]
    assert all(v["packet"] for v in versions)
    assert versions[-1]["policy"]["gates"][2]["config"]["required"] == 1
    # Only admins.
    refusal = stella(
        env, "--profile", "alice", "env", "set", "dev", "--required-approvals", "0", "--reason", "x"
    )
    assert refusal.returncode == 1
    assert "admin" in refusal.stderr
    assert refusal.stderr.count("\n") == 1
    # Audited by the database itself, with who and the version.
    entries = [e for e in demo.admin.tenancy.audit_entries() if e.action == "environment.policy"]
    assert entries[-1].entity_id == "dev"
    assert entries[-1].details["version"] == 2
    # The next decision names this policy version and the packet that signs it.
    promotion = demo.alice.promotions.request(R1, "dev")
    assert promotion.status is PromotionStatus.AWAITING_APPROVAL  # now 1 approval is needed
    assert recorded_inputs(demo, '"policyVersion"', versions[-1]["packet"], '"version":2')


# ------------------------------------------------------------------ 3. approvals that do not count
def test_forged_or_copied_approval_packets_never_count(demo: Demo, world) -> None:
    prod_ready(demo)
    promotion = demo.alice.promotions.request(R1, "prod")
    carol_approved = demo.carol.promotions.approve(promotion.id)
    assert carol_approved.progress() == "1 of 2"
    bob = person(world, "bob")
    tenant = _TENANTS[id(bob)]
    carol_bundle = bob.execute(
        "SELECT bundle FROM evidence.packets WHERE type = 'approval' AND promotion_id = %s",
        (promotion.id,),
    ).fetchone()[0]
    for who, forged in (("bob", b"{}"), (demo.admin.profile.name, bytes(carol_bundle))):
        conn = bob if who == "bob" else person(world, who)
        key = conn.execute(
            "SELECT key_id FROM tenancy.signing_keys WHERE owner = %s"
            " ORDER BY registered_at DESC LIMIT 1",
            (who,),
        ).fetchone()[0]
        packet = conn.execute(
            "INSERT INTO evidence.packets (tenant_id, seq, type, predicate_type, subject_digests,"
            " promotion_id, environment, actor, signer_key_id, created_at, bundle, bundle_digest,"
            " prev_hash, hash) VALUES (%s, 0, 'approval', 'x', '{}', %s, 'prod', 'carol', %s,"
            " now(), %s, '', '', '') RETURNING id, actor",
            (tenant, promotion.id, key, forged),
        ).fetchone()
        assert packet[1] == who  # the actor is the session's person, whatever was sent
        conn.execute(
            "INSERT INTO promotion.approvals (tenant_id, promotion_id, approver, decision,"
            " packet_id) VALUES (%s, %s, 'carol', 'approve', %s)",
            (tenant, promotion.id, packet[0]),
        )
        conn.commit()
        decided = demo.alice.promotions.evaluate(promotion.id)
        assert decided.status is PromotionStatus.AWAITING_APPROVAL
        mine = next(a for a in decided.approvals if a.by == who)
        assert (mine.signature_ok, mine.counted) == (False, False)
        assert decided.progress() == "1 of 2"
        words = refused(
            conn,
            "UPDATE promotion.promotions SET status = 'approved' WHERE id = %s",
            (promotion.id,),
        )
        assert "only the orchestrator" in words
        words = refused(
            conn,
            "INSERT INTO promotion.counted_approvals (tenant_id, promotion_id, approval_id,"
            " approver, packet_digest) SELECT a.tenant_id, a.promotion_id, a.id, a.approver,"
            " p.bundle_digest FROM promotion.approvals a JOIN evidence.packets p"
            " ON p.id = a.packet_id WHERE a.approver = %s",
            (who,),
        )
        assert "permission denied" in words
    # The decision record names every approval by its packet, and which ones counted.
    assert recorded_inputs(demo, '"by":"bob"', '"counted":false', '"signatureOk":false')
    assert recorded_inputs(demo, '"by":"carol"', '"counted":true', '"packet":"sha256:')


def test_an_ineligible_person_or_a_packet_of_another_cannot_approve(demo: Demo, world) -> None:
    prod_ready(demo)
    promotion = demo.alice.promotions.request(R1, "prod")
    carol = demo.carol.promotions.approve(promotion.id)
    alice = person(world, "alice")
    tenant = _TENANTS[id(alice)]
    # A release manager is not among prod's approvers, whatever packet they name.
    words = refused(
        alice,
        "INSERT INTO promotion.approvals (tenant_id, promotion_id, decision, packet_id)"
        " VALUES (%s, %s, 'approve', %s)",
        (tenant, promotion.id, carol.approvals[0].packet_id),
    )
    assert "not eligible" in words or "separation of duties" in words
    bob = person(world, "bob")
    words = refused(
        bob,
        "INSERT INTO promotion.approvals (tenant_id, promotion_id, decision, packet_id)"
        " VALUES (%s, %s, 'approve', %s)",
        (tenant, promotion.id, carol.approvals[0].packet_id),
    )
    assert "signed with a key of bob" in words
    words = refused(
        bob,
        "INSERT INTO promotion.approvals (tenant_id, promotion_id, decision)"
        " VALUES (%s, %s, 'approve')",
        (tenant, promotion.id),
    )
    assert "needs an approval packet" in words
    assert demo.alice.promotions.get(promotion.id).progress() == "1 of 2"


# ------------------------------------------------------------------ 4. runs carrying approvers
def test_people_cannot_start_runs_and_a_promotion_run_carries_only_counted_approvers(
    demo: Demo, world
) -> None:
    prod_ready(demo)
    promotion = demo.alice.promotions.request(R1, "prod")
    alice = person(world, "alice")
    tenant = _TENANTS[id(alice)]
    version = alice.execute(
        "SELECT v.id, t.name, v.version FROM workflow.template_versions v"
        " JOIN workflow.templates t ON t.id = v.template_id ORDER BY v.version DESC LIMIT 1"
    ).fetchone()
    words = refused(
        alice,
        "INSERT INTO workflow.runs (tenant_id, template_version_id, template_name,"
        " template_version, promotion_id, approved_by) VALUES (%s, %s, %s, %s, %s, %s)",
        (tenant, version[0], version[1], version[2], promotion.id, ["mallory", "bob"]),
    )
    assert "permission denied" in words
    demo.bob.promotions.approve(promotion.id)
    deployed = demo.carol.promotions.approve(promotion.id)
    run = demo.alice.workflows.get_run(deployed.run_id)
    with world.open("alice").db.transaction() as conn:
        approved_by = conn.execute(
            text("SELECT approved_by FROM workflow.runs WHERE id = :r"), {"r": run.id}
        ).scalar_one()
    assert approved_by == ["bob", "carol"]


# ------------------------------------------------------------------ 5. history
def test_members_cannot_rewrite_promotions_runs_or_steps(demo: Demo, world) -> None:
    prod_ready(demo)
    done = demo.alice.promotions.find(statuses=["deployed"])[0]
    for name in ("alice", "bob"):
        conn = person(world, name)
        for sql in (
            "UPDATE promotion.promotions SET last_decision = '{}' WHERE id = %s",
            "UPDATE promotion.promotions SET run_id = NULL WHERE id = %s",
            "UPDATE promotion.promotions SET status = 'rolled_back' WHERE id = %s",
        ):
            refused(conn, sql, (done.id,))
        refused(
            conn,
            "UPDATE promotion.promotions SET status_reason = 'fine' WHERE id = %s",
            (done.id,),
        )
        refused(conn, "UPDATE workflow.runs SET status = 'failed' WHERE id = %s", (done.run_id,))
        refused(
            conn,
            "UPDATE workflow.step_runs SET status = 'failed' WHERE run_id = %s",
            (done.run_id,),
        )
        refused(
            conn,
            "INSERT INTO workflow.run_events (run_id, tenant_id, seq, kind) VALUES (%s, %s, 999,"
            " 'run.succeeded')",
            (done.run_id, _TENANTS[id(conn)]),
        )
    after = demo.alice.promotions.get(done.id)
    assert (after.status, after.run_id, after.status_reason) == (
        done.status,
        done.run_id,
        done.status_reason,
    )


def test_even_the_orchestrator_cannot_call_a_pending_run_deployed(demo: Demo, world) -> None:
    demo.deploy(R1, "dev")
    promotion = demo.alice.promotions.request(R1, "stage")
    promotion = demo.bob.promotions.approve(promotion.id)
    assert promotion.status is PromotionStatus.DEPLOYING  # its run has not been driven yet
    orchestrator = orchestrator_conn(world)
    words = refused(
        orchestrator,
        "UPDATE promotion.promotions SET status = 'deployed' WHERE id = %s",
        (promotion.id,),
    )
    assert "while its run is pending" in words or "while its run is running" in words
    words = refused(
        orchestrator,
        "UPDATE promotion.promotions SET run_id = %s WHERE id = %s",
        (uuid4(), promotion.id),
    )
    assert "written once" in words or "foreign key" in words


def test_a_person_cancels_only_their_own_open_request(demo: Demo, world) -> None:
    prod_ready(demo)
    promotion = demo.alice.promotions.request(R1, "prod")
    bob = person(world, "bob")
    words = refused(
        bob, "UPDATE promotion.promotions SET status = 'cancelled' WHERE id = %s", (promotion.id,)
    )
    assert "only its requester or an admin" in words or "permission denied" in words
    alice = person(world, "alice")
    alice.execute(
        "UPDATE promotion.promotions SET status = 'cancelled', status_reason = 'wrong release'"
        " WHERE id = %s",
        (promotion.id,),
    )
    alice.commit()
    after = demo.alice.promotions.get(promotion.id)
    assert after.status is PromotionStatus.CANCELLED
    assert after.status_reason == "cancelled by alice: wrong release"


# ------------------------------------------------------------------ signing as the orchestrator
def test_a_person_cannot_sign_or_seal_as_the_orchestrator(demo: Demo, world) -> None:
    bob = person(world, "bob")
    tenant = _TENANTS[id(bob)]
    orch_key = bob.execute(
        "SELECT key_id FROM tenancy.signing_keys WHERE owner_kind = 'orchestrator' LIMIT 1"
    ).fetchone()[0]
    words = refused(
        bob,
        "INSERT INTO evidence.packets (tenant_id, seq, type, predicate_type, subject_digests,"
        " actor, signer_key_id, created_at, bundle, bundle_digest, prev_hash, hash)"
        " VALUES (%s, 0, 'vsa', 'x', '{}', 'orchestrator', %s, now(), '{}', '', '', '')",
        (tenant, orch_key),
    )
    assert "row-level security" in words
    words = refused(
        bob,
        "INSERT INTO evidence.checkpoints (tenant_id, tree_size, root_hash, note, signer_key_id)"
        " VALUES (%s, 1, %s, 'x', %s)",
        (tenant, "0" * 64, orch_key),
    )
    assert "row-level security" in words
    pem = demo.bob.evidence.signing_keys()[0].public_key.pem().decode()
    words = refused(
        bob,
        "INSERT INTO tenancy.signing_keys (tenant_id, key_id, owner_kind, owner, public_key)"
        " VALUES (%s, tenancy.pem_key_id(%s), 'orchestrator', 'orchestrator', %s)",
        (tenant, pem, pem),
    )
    assert "row-level security" in words or "duplicate" in words


# ------------------------------------------------------------------ 8. no superuser in the app
def test_ordinary_commands_hold_no_superuser_connection(demo: Demo, world, superuser) -> None:
    from stella_core.bootstrap import Stella

    env = world.env()
    for args in (("release", "list"), ("promotion", "list"), ("whoami",)):
        ok_json(env, "--profile", "alice", *args, "-o", "json")
    # A process of its own (as the CLI is): a person's core and its orchestrator log in as
    # themselves; the administrative connection is never opened.
    alice = Stella.open("alice", home=world.home, database_url=world.admin_url)
    try:
        alice.promotions.pipeline()
        alice.releases.list_releases()
        alice.evidence.ensure_orchestrator_key()
        admin = alice.backend._admin_engine
        assert admin is None or (admin.pool.checkedin(), admin.pool.checkedout()) == (0, 0)
        assert alice.orchestrator is not None
        assert alice.orchestrator.login.user.startswith("stella_orchestrator_")
        rows = superuser.execute(
            "SELECT usename FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'stella'"
        ).fetchall()
        assert {alice.profile.user, alice.orchestrator.login.user} <= {r[0] for r in rows}
        roles = superuser.execute(
            "SELECT rolsuper, rolbypassrls, rolcreaterole FROM pg_roles WHERE rolname = %s",
            (alice.orchestrator.login.user,),
        ).fetchone()
        assert roles == (False, False, False)
    finally:
        alice.close()


# ------------------------------------------------------------------ a person's own machine
def test_on_a_machine_without_the_orchestrator_requests_wait_for_stella_serve(
    demo: Demo, world, tmp_path
) -> None:
    from stella_core.bootstrap import Stella
    from stella_core.errors import OrchestratorUnavailableError

    laptop = tmp_path / "alice-laptop"
    laptop.mkdir()
    (laptop / "profiles.json").write_bytes((world.home / "profiles.json").read_bytes())
    for folder in ("secrets", "keys"):  # what alice's own session reads and signs with
        shutil.copytree(world.home / folder, laptop / folder)
    alice = Stella.open("alice", home=laptop, database_url=world.admin_url)
    try:
        assert alice.orchestrator is None
        assert not (laptop / "orchestrator.json").exists()
        promotion = alice.promotions.request(R1, "dev", "from my laptop")
        assert promotion.status is PromotionStatus.REQUESTED  # nobody here may decide it
        assert promotion.last_decision is None
        with pytest.raises(OrchestratorUnavailableError):
            alice.workflows.start_run("promote-web", release=R1)
        # stella serve (here: the orchestrator of the machine that holds its login) decides it
        # at its next recheck.
        moved = demo.admin.promotions.recheck_blocked()
        assert [p.id for p in moved] == [promotion.id]
        assert alice.promotions.get(promotion.id).status in (
            PromotionStatus.DEPLOYING,
            PromotionStatus.DEPLOYED,
        )
    finally:
        alice.close()
