"""Templates and runs in PostgreSQL: versions, RLS between tenants, append-only tables, roles."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text

from stella_core.errors import AuthorizationError, NotFoundError
from stella_core.profiles import Profile
from stella_core.tenancy.model import ProductRole
from stella_core.tenancy.service import Provisioner, person_role_name
from stella_core.workflows.template import TemplateError
from tests.support.workflow_helpers import notify, template


def _other_tenant(world, stella):
    tenant_id, password = Provisioner(stella.backend.admin_engine).initialise("other", "zed")
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


def _person(world, admin, name: str, role: ProductRole):
    user, password = admin.tenancy.add_user(name, role)
    admin.save_profile_for(user.name, password)
    return world.open(name)


def _doc(message: str = "hello", x: float = 0) -> dict:
    doc = template("pipeline", [notify("a", message), notify("b")], [("a", "b")])
    doc["layout"] = {"positions": {"a": {"x": x, "y": 0}}}
    return doc


def test_versions_are_created_only_when_the_content_changes(world) -> None:
    stella = world.open()
    first = stella.workflows.import_template(_doc())
    assert (first.name, first.version) == ("pipeline", 1)
    assert stella.workflows.import_template(_doc()) == first
    exported = stella.workflows.export_template("pipeline")
    assert stella.workflows.import_template(exported) == first  # a round trip changes nothing
    second = stella.workflows.import_template(_doc("changed"))
    assert second.version == 2
    assert stella.workflows.export_template("pipeline", 1)["nodes"][0]["inputs"] == {
        "message": "hello"
    }
    assert stella.workflows.export_template("pipeline")["version"] == 2
    versions = stella.workflows.template_versions("pipeline")
    assert [v.version for v in versions] == [1, 2]
    assert versions[0].digest != versions[1].digest
    assert versions[0].created_by == stella.profile.person_name
    [summary] = stella.workflows.list_templates()
    assert (summary.name, summary.latest_version) == ("pipeline", 2)
    with pytest.raises(NotFoundError):
        stella.workflows.export_template("pipeline", 9)
    actions = [e.action for e in stella.tenancy.audit_entries()]
    assert actions.count("workflow.import") == 2


def test_an_invalid_template_is_refused_with_every_problem(world) -> None:
    stella = world.open()
    doc = template(
        "broken",
        [notify("a"), {"id": "b", "type": "teleport", "inputs": {}}],
        [("a", "b"), ("b", "zz")],
    )
    with pytest.raises(TemplateError) as caught:
        stella.workflows.import_template(doc)
    where = {(p.node, p.field) for p in caught.value.problems}
    assert ("b", "type") in where
    assert any("zz" in p.message for p in caught.value.problems)
    assert stella.workflows.list_templates() == []


def test_roles_decide_who_imports_starts_and_configures(world) -> None:
    admin = world.open()
    admin.workflows.import_template(_doc())
    bob = _person(world, admin, "bob", ProductRole.APPROVER)
    dave = _person(world, admin, "dave", ProductRole.AUDITOR)
    with pytest.raises(AuthorizationError):
        bob.workflows.import_template(_doc("mine"))
    with pytest.raises(AuthorizationError):
        bob.workflows.start_run("pipeline")
    with pytest.raises(AuthorizationError):
        bob.workflows.set_local_executor(True)
    # The database refuses too, whatever the client does: only writers start runs.
    version_id = admin.workflows.template_versions("pipeline")[0].id
    with pytest.raises(AuthorizationError), bob.db.transaction() as conn:
        conn.execute(
            text(
                "INSERT INTO workflow.runs (tenant_id, template_version_id, template_name, "
                "template_version) VALUES (:t, :v, 'pipeline', 1)"
            ),
            {"t": bob.profile.tenant, "v": version_id},
        )
    run = admin.workflows.start_run("pipeline")
    # An auditor reads runs but cannot move them along.
    assert dave.workflows.get_run(run.id).status == "pending"
    with pytest.raises(AuthorizationError), dave.db.transaction() as conn:
        conn.execute(
            text("UPDATE workflow.runs SET status = 'succeeded' WHERE id = :r"), {"r": run.id}
        )


def test_another_tenant_sees_no_templates_runs_or_work(world) -> None:
    a = world.open()
    a.workflows.import_template(_doc())
    run = a.workflows.start_run("pipeline")
    b = _other_tenant(world, a)
    assert b.workflows.list_templates() == []
    assert b.workflows.list_runs() == []
    with pytest.raises(NotFoundError):
        b.workflows.get_run(run.id)
    with pytest.raises(NotFoundError):
        b.workflows.export_template("pipeline")
    with pytest.raises(NotFoundError):
        b.workflows.cancel_run(run.id)
    assert b.workflows.worker().run_once() is False  # nothing of tenant A is claimable by B
    with b.db.transaction() as conn:
        for table in ("templates", "template_versions", "runs", "step_runs", "run_events"):
            assert conn.execute(text(f"SELECT count(*) FROM workflow.{table}")).scalar() == 0
    # The same name is free in tenant B.
    assert b.workflows.import_template(_doc()).version == 1
    assert a.workflows.wait_run(run.id, timeout=30).status == "succeeded"


def test_no_tenant_selected_sees_nothing(world) -> None:
    stella = world.open()
    stella.workflows.import_template(_doc())
    stella.workflows.start_run("pipeline")
    with stella.db.engine.connect() as conn:  # a fresh checkout, no tenant set
        for table in ("templates", "runs", "step_runs", "run_events", "settings"):
            assert conn.execute(text(f"SELECT count(*) FROM workflow.{table}")).scalar() == 0


def test_run_log_and_template_versions_refuse_update_and_delete(world, superuser) -> None:
    stella = world.open()
    stella.workflows.import_template(_doc())
    run = stella.workflows.wait_run(stella.workflows.start_run("pipeline").id, timeout=30)
    assert run.status == "succeeded"
    for statement in (
        "UPDATE workflow.run_events SET kind = 'forged'",
        "DELETE FROM workflow.run_events",
        "TRUNCATE workflow.run_events",
        "UPDATE workflow.template_versions SET digest = digest",
        "DELETE FROM workflow.template_versions",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            superuser.execute(statement)
    # The application's people do not even hold the privilege.
    with pytest.raises(AuthorizationError), stella.db.transaction() as conn:
        conn.execute(text("UPDATE workflow.run_events SET kind = 'forged'"))
    kinds = [e.kind for e in stella.workflows.run_events(run.id)]
    assert "forged" not in kinds
    assert kinds[-1] == "run.succeeded"


def test_another_tenant_listening_on_the_channel_learns_no_run_ids(world) -> None:
    from stella_core.workflows.store import channel

    a = world.open()
    a.workflows.import_template(_doc())
    b = _other_tenant(world, a)
    # PostgreSQL lets any login LISTEN on any channel: tenant B's person tries tenant A's.
    url = b.backend.person_url(b.profile).replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as spy:
        spy.execute(
            psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel(a.db.tenant_id)))
        )
        run = a.workflows.start_run("pipeline")
        assert a.workflows.wait_run(run.id, timeout=30).status == "succeeded"
        heard = [n.payload for n in spy.notifies(timeout=2.0)]
    assert heard, "the spy should hear that something happened (the wake-up itself)"
    assert all(str(run.id) not in p and p in ("", "stop") for p in heard)
