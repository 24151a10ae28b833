"""PostgreSQL as the application role: RLS, append-only tables, actor stamping, the audit chain."""

from __future__ import annotations

import getpass
from uuid import uuid4

import psycopg
import pytest
from sqlalchemy import text

from stella_core.errors import AuthorizationError, NotFoundError
from stella_core.profiles import Profile
from stella_core.tenancy.model import ProductRole
from stella_core.tenancy.service import Provisioner, person_name_from_os, person_role_name


def _second_tenant(world, stella):
    """Tenant 'other' with its own admin 'zed', as a second profile on this machine."""
    provisioner = Provisioner(stella.backend.admin_engine)
    tenant_id, password = provisioner.initialise("other", "zed")
    stella.profiles.save(
        Profile(
            "zed",
            stella.backend.target,
            person_role_name(tenant_id, "zed"),
            password,
            str(tenant_id),
            person="zed",
        )
    )
    return world.open("zed")


def _populate(stella) -> None:
    layout = stella.home / "layout"
    from stella_core.releases.layout import OciLayoutWriter

    OciLayoutWriter(layout).write_image("team/web", "1.0", files={"a.txt": b"hello"})
    stella.releases.add_registry("local", str(layout))
    stella.releases.add_component("web", "local/team/web")
    from stella_core.releases.model import ComponentPin

    stella.releases.create_release("r1", [ComponentPin(component="web", tag="1.0")])
    stella.environments.add("dev", order=0)


def test_first_use_makes_the_os_user_the_admin_and_default_profile(world) -> None:
    stella = world.open()
    me = stella.tenancy.whoami()
    assert me.user == person_name_from_os(getpass.getuser())
    assert me.role is ProductRole.ADMIN
    assert stella.profiles.default_name(stella.backend.target) == me.user


def test_application_role_is_not_superuser_nor_owner(world) -> None:
    stella = world.open()
    with stella.db.transaction() as conn:
        row = conn.execute(
            text(
                "SELECT r.rolsuper, r.rolbypassrls, session_user AS who FROM pg_roles r "
                "WHERE r.rolname = session_user"
            )
        ).one()
        owners = (
            conn.execute(
                text(
                    "SELECT DISTINCT tableowner FROM pg_tables "
                    "WHERE schemaname IN ('tenancy', 'release', 'env')"
                )
            )
            .scalars()
            .all()
        )
    assert row.rolsuper is False
    assert row.rolbypassrls is False
    assert owners == ["stella_owner"]
    assert row.who == stella.profile.user


def test_rls_hides_other_tenants_rows_in_every_repository_method(world) -> None:
    a = world.open()
    _populate(a)
    b = _second_tenant(world, a)
    assert b.releases.list_releases() == []
    assert b.releases.list_registries() == []
    assert b.releases.list_components() == []
    assert b.environments.list() == []
    assert [u.name for u in b.tenancy.list_users()] == ["zed"]
    with pytest.raises(NotFoundError):
        b.releases.get_release("r1")
    # b can reuse a's names: uniqueness is per tenant
    b.environments.add("dev", order=0)
    assert [e.name for e in b.environments.list()] == ["dev"]
    assert len(a.releases.list_releases()) == 1
    # every audit entry b sees is its own
    own_keys = {k.key_id for k in b.evidence.signing_keys()}  # zed's orchestrator key
    assert {e.entity_id for e in b.tenancy.audit_entries()} <= {"zed", "dev"} | own_keys
    assert own_keys.isdisjoint(k.key_id for k in a.evidence.signing_keys())


def test_rls_fails_closed_without_or_with_a_foreign_tenant(world) -> None:
    a = world.open()
    _populate(a)
    b = _second_tenant(world, a)
    raw_a = a.db.engine.connect()
    try:
        # No tenant set: nothing.
        assert raw_a.execute(text("SELECT count(*) FROM release.releases")).scalar() == 0
        raw_a.rollback()
        # A tenant the person does not belong to: nothing, even though the id is real.
        raw_a.execute(
            text("SELECT set_config('app.tenant_id', :t, true)"), {"t": str(b.profile.tenant)}
        )
        assert raw_a.execute(text("SELECT count(*) FROM env.environments")).scalar() == 0
        raw_a.rollback()
        # After a tenant transaction ends, a fresh checkout sees nothing (no pool leak).
        with a.db.transaction() as conn:
            assert conn.execute(text("SELECT count(*) FROM release.releases")).scalar() == 1
        assert raw_a.execute(text("SELECT count(*) FROM release.releases")).scalar() == 0
        raw_a.rollback()
    finally:
        raw_a.close()
    # Writing into another tenant is refused.
    with pytest.raises(AuthorizationError), a.db.transaction() as conn:
        conn.execute(
            text(
                "INSERT INTO env.environments (tenant_id, name, promotion_order) "
                "VALUES (:t, 'sneaky', 9)"
            ),
            {"t": str(b.profile.tenant)},
        )


def _person_psycopg(stella) -> psycopg.Connection:
    url = stella.db.engine.url
    return psycopg.connect(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        dbname=url.database,
        autocommit=False,
    )


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE release.releases SET name = 'renamed'",
        "DELETE FROM release.releases",
        "UPDATE release.release_components SET digest = 'sha256:' || repeat('0', 64)",
        "DELETE FROM release.release_components",
        "TRUNCATE release.release_components",
        "UPDATE tenancy.audit_log SET action = 'nothing happened'",
        "DELETE FROM tenancy.audit_log",
        "TRUNCATE tenancy.audit_log",
    ],
)
def test_releases_and_audit_log_refuse_changes_through_raw_sql(world, statement) -> None:
    stella = world.open()
    _populate(stella)
    with _person_psycopg(stella) as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(stella.profile.tenant),))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
    rel = stella.releases.get_release("r1")
    assert rel.name == "r1"
    assert len(rel.components) == 1


def test_even_a_superuser_cannot_update_or_delete_releases_or_audit(world, superuser) -> None:
    stella = world.open()
    _populate(stella)
    for statement in (
        "UPDATE release.releases SET name = 'x'",
        "DELETE FROM release.release_components",
        "UPDATE tenancy.audit_log SET actor = 'mallory'",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            superuser.execute(statement)
    assert stella.releases.get_release("r1").components[0].name == "web"


def test_component_set_is_fixed_when_the_release_is_created(world) -> None:
    stella = world.open()
    _populate(stella)
    rel = stella.releases.get_release("r1")
    with _person_psycopg(stella) as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(stella.profile.tenant),))
        comp_id = conn.execute("SELECT id FROM release.components").fetchone()[0]
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="immutable"):
            conn.execute(
                "INSERT INTO release.release_components (release_id, tenant_id, position, "
                "component_id, component_name, registry_name, repository, tag, digest) "
                "VALUES (%s, %s, 7, %s, 'extra', 'local', 'team/extra', 'x', %s)",
                (rel.id, stella.profile.tenant, comp_id, "sha256:" + "1" * 64),
            )
    assert len(stella.releases.get_release("r1").components) == 1


def test_actor_is_the_session_user_whatever_the_client_claims(world) -> None:
    stella = world.open()
    _populate(stella)
    with _person_psycopg(stella) as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(stella.profile.tenant),))
        conn.execute(
            "INSERT INTO env.freezes (tenant_id, environment, starts_at, ends_at, reason,"
            " created_by) VALUES (%s, 'dev', now(), now() + interval '1 hour', 'x',"
            " 'someone-else')",
            (stella.profile.tenant,),
        )
        conn.commit()
    (freeze,) = stella.environments.freezes("dev")
    assert freeze.created_by == stella.profile.person_name


def test_product_roles_are_enforced_by_service_and_database(world) -> None:
    admin = world.open()
    user, password = admin.tenancy.add_user("bob", ProductRole.APPROVER)
    admin.save_profile_for(user.name, password)
    bob = world.open("bob")
    assert bob.tenancy.whoami().role is ProductRole.APPROVER
    with pytest.raises(AuthorizationError):
        bob.environments.add("prod", order=3)
    # The database refuses too, if a modified client skips the service check.
    with pytest.raises(AuthorizationError), bob.db.transaction() as conn:
        conn.execute(
            text(
                "INSERT INTO env.environments (tenant_id, name, promotion_order) "
                "VALUES (:t, 'prod', 3)"
            ),
            {"t": str(bob.profile.tenant)},
        )
    with pytest.raises(AuthorizationError):
        bob.tenancy.add_user("eve", ProductRole.ADMIN)


def test_audit_chain_verifies_and_tampering_is_caught(world, superuser) -> None:
    stella = world.open()
    _populate(stella)
    count, problems = stella.tenancy.verify_audit()
    assert count >= 5
    assert problems == []
    # Behind the application's back: disable the trigger as superuser and rewrite history.
    superuser.execute("ALTER TABLE tenancy.audit_log DISABLE TRIGGER audit_log_append_only")
    superuser.execute(
        "UPDATE tenancy.audit_log SET details = '{\"forged\": true}' WHERE chain_index = 3"
    )
    superuser.execute("ALTER TABLE tenancy.audit_log ENABLE TRIGGER audit_log_append_only")
    count, problems = stella.tenancy.verify_audit()
    assert any("entry 3" in p and "hash" in p for p in problems)


def test_unknown_profile_is_a_clear_error(world) -> None:
    world.open()
    with pytest.raises(NotFoundError, match="no profile named 'nobody'"):
        world.open("nobody")


def test_tenant_setting_is_validated(world) -> None:
    stella = world.open()
    stella.db.tenant_id = uuid4()  # not a tenant this person belongs to
    with pytest.raises(AuthorizationError):
        stella.tenancy.whoami()
