"""Freeze windows lifted and edited: admins only (service, CLI and raw SQL), the change kept
and audited by the database, and a lifted freeze no longer blocks a promotion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from stella_core.errors import AuthorizationError, DefinitionError
from stella_core.promotions.model import PromotionStatus
from tests.integration.test_cli import ok_json, stella
from tests.integration.test_promotions import R1, Demo, gate, role_conn


@pytest.fixture
def demo(world) -> Demo:
    return Demo(world)


def _freeze(demo: Demo, env: str = "stage", *, hours: int = 2, allow=()):
    now = datetime.now(UTC)
    return demo.alice.environments.freeze(
        env,
        start=now - timedelta(minutes=5),
        end=now + timedelta(hours=hours),
        reason="year-end",
        allow=allow,
    )


def test_an_admin_lifts_a_freeze_and_the_blocked_promotion_moves_on(demo: Demo) -> None:
    demo.deploy(R1, "dev")
    freeze = _freeze(demo)
    blocked = demo.alice.promotions.request(R1, "stage")
    assert blocked.status is PromotionStatus.BLOCKED

    # The release manager who froze it may not lift it: only admins loosen a freeze.
    with pytest.raises(AuthorizationError):
        demo.alice.environments.lift_freeze(freeze.id, reason="done early")
    with pytest.raises(DefinitionError, match="reason"):
        demo.admin.environments.lift_freeze(freeze.id, reason="  ")

    lifted = demo.admin.environments.lift_freeze(str(freeze.id)[:8], reason="done early")
    assert lifted.lifted
    assert lifted.changed_by == demo.admin.profile.person_name
    assert lifted.change_reason == "done early"
    assert lifted.starts_at == freeze.starts_at
    assert lifted.ends_at <= datetime.now(UTC) < freeze.ends_at
    assert demo.alice.environments.freezes("stage", ending_after=datetime.now(UTC)) == []

    [moved] = demo.alice.promotions.recheck_blocked()
    assert moved.id == blocked.id
    assert moved.status is PromotionStatus.AWAITING_APPROVAL
    assert gate(moved, "freeze-window")["reason_codes"] == ["NO_ACTIVE_FREEZE"]

    # The trail: the audit log says who lifted which freeze and why; it cannot happen twice.
    entries = [e for e in demo.admin.tenancy.audit_entries() if e.action.startswith("environment.")]
    last = entries[-1]
    assert last.action == "environment.freeze.lift"
    assert last.entity_id == "stage"
    assert last.actor == demo.admin.profile.person_name
    assert last.details["why"] == "done early"
    assert last.details["freeze"] == str(freeze.id)
    assert demo.admin.tenancy.verify_audit()[1] == []
    with pytest.raises(DefinitionError, match="lifted already"):
        demo.admin.environments.lift_freeze(freeze.id, reason="again")


def test_an_admin_edits_a_freeze_and_past_or_lifted_ones_stay_history(demo: Demo) -> None:
    freeze = _freeze(demo, allow=["alice"])
    later = freeze.ends_at + timedelta(days=1)
    edited = demo.admin.environments.edit_freeze(
        freeze.id, reason="code freeze extended", end=later, allow=[]
    )
    assert edited.ends_at == later
    assert edited.allow == ()
    assert edited.changes == 1
    assert demo.bob.environments.find_freeze(freeze.id).ends_at == later  # everyone sees it

    with pytest.raises(DefinitionError, match="lift"):
        demo.admin.environments.edit_freeze(
            freeze.id, reason="x", end=datetime.now(UTC) - timedelta(minutes=1)
        )
    with pytest.raises(DefinitionError, match="start"):
        demo.admin.environments.edit_freeze(
            freeze.id, reason="x", start=freeze.starts_at + timedelta(minutes=1)
        )
    with pytest.raises(DefinitionError, match="changes nothing"):
        demo.admin.environments.edit_freeze(freeze.id, reason="x", end=later)


def test_the_database_lets_only_admins_change_a_freeze(demo: Demo, world) -> None:
    freeze = _freeze(demo)
    for person in ("alice", "bob", "dave"):
        with role_conn(world, person) as conn:
            # Not a change row (RLS: admins only)...
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(
                    "INSERT INTO env.freeze_changes (tenant_id, freeze_id, lift, starts_at,"
                    " ends_at, reason, why) SELECT tenant_id, id, true, starts_at, ends_at,"
                    " reason, 'gone' FROM env.freezes WHERE id = %s",
                    (freeze.id,),
                )
            conn.rollback()
            # ...and never the freeze itself (append-only).
            with pytest.raises(psycopg.Error):
                conn.execute("UPDATE env.freezes SET ends_at = now() WHERE id = %s", (freeze.id,))
            conn.rollback()
    # An admin's raw insert is stamped and judged by the database, not by the client.
    with role_conn(world, demo.admin.profile.name) as conn:
        conn.execute(
            "INSERT INTO env.freeze_changes (tenant_id, freeze_id, lift, starts_at, ends_at,"
            " reason, allow, why, changed_by, changed_at) SELECT tenant_id, id, true,"
            " starts_at, ends_at + interval '9 days', 'rewritten', '{bob}', 'raw', 'bob',"
            " now() - interval '1 day' FROM env.freezes WHERE id = %s",
            (freeze.id,),
        )
        conn.commit()
    lifted = demo.alice.environments.find_freeze(freeze.id)
    assert lifted.changed_by == demo.admin.profile.person_name
    assert lifted.reason == "year-end"
    assert lifted.allow == ()
    assert freeze.starts_at < lifted.ends_at <= datetime.now(UTC)


def test_cli_lifts_and_edits_by_the_short_id(demo: Demo, world) -> None:
    freeze = _freeze(demo, env="prod")
    short = str(freeze.id).replace("-", "")[:8]
    env = world.env()
    refused = stella(env, "--profile", "alice", "env", "freeze-lift", short, "--reason", "x")
    assert refused.returncode == 1, refused.stderr  # not allowed (AuthorizationError)
    assert "admin" in refused.stderr
    end = (freeze.ends_at + timedelta(hours=1)).isoformat()
    edited = ok_json(
        env, "env", "freeze-edit", short, "--end", end, "--reason", "longer", "--output", "json"
    )
    assert edited["changes"] == 1
    assert edited["change_reason"] == "longer"
    lifted = ok_json(env, "env", "freeze-lift", short, "--reason", "over", "--output", "json")
    assert lifted["lifted_at"] is not None
    listed = stella(env, "env", "freezes", "prod")
    assert f"[{short}]" in listed.stdout
    assert "lifted by" in listed.stdout
    bad = stella(env, "env", "freeze-lift", "zz", "--reason", "x")
    assert bad.returncode == 2
    assert "not a freeze id" in bad.stderr
