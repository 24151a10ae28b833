"""A workflow renamed and deleted (retired) as a release manager expects: the runs keep the name
they ran under, versions are never lost, an environment that deploys with it is not broken."""

from __future__ import annotations

import pytest

from stella_core.errors import AlreadyExistsError, DefinitionError, NotFoundError
from tests.support.workflow_helpers import notify, template


def _doc(name: str, message: str = "hello") -> dict:
    return template(name, [notify("a", message), notify("b")], [("a", "b")])


def test_rename_keeps_versions_and_runs_keep_the_name_they_ran_under(world) -> None:
    stella = world.open()
    stella.workflows.set_local_executor(True)
    stella.workflows.import_template(_doc("pipeline"))
    stella.workflows.import_template(_doc("pipeline", "changed"))
    run = stella.workflows.wait_run(stella.workflows.start_run("pipeline").id, timeout=30)
    assert run.status == "succeeded"

    renamed = stella.workflows.rename_template("pipeline", "shop-deploy")
    assert (renamed.name, renamed.latest_version) == ("shop-deploy", 2)
    assert [t.name for t in stella.workflows.list_templates()] == ["shop-deploy"]
    assert [v.version for v in stella.workflows.template_versions("shop-deploy")] == [1, 2]
    assert stella.workflows.get_run(run.id).template == "pipeline"
    with pytest.raises(NotFoundError):
        stella.workflows.start_run("pipeline")
    started = stella.workflows.start_run("shop-deploy")
    assert stella.workflows.wait_run(started.id, timeout=30).status == "succeeded"

    stella.workflows.import_template(_doc("other"))
    with pytest.raises(AlreadyExistsError):
        stella.workflows.rename_template("shop-deploy", "other")
    with pytest.raises(DefinitionError, match="not a workflow name"):
        stella.workflows.rename_template("shop-deploy", "Shop Deploy!")
    actions = [e.action for e in stella.tenancy.audit_entries()]
    assert "workflow.rename" in actions


def test_delete_retires_a_workflow_that_runs_used_and_import_brings_it_back(world) -> None:
    stella = world.open()
    stella.workflows.set_local_executor(True)
    stella.workflows.import_template(_doc("pipeline"))
    run = stella.workflows.wait_run(stella.workflows.start_run("pipeline").id, timeout=30)

    assert stella.workflows.retire_template("pipeline") == 1  # one run used it
    assert stella.workflows.list_templates() == []
    with pytest.raises(NotFoundError):
        stella.workflows.start_run("pipeline")
    with pytest.raises(NotFoundError):
        stella.workflows.retire_template("pipeline")
    # The run's history and the version it ran stay readable.
    assert stella.workflows.get_run(run.id).template == "pipeline"
    assert stella.workflows.export_template("pipeline", 1)["name"] == "pipeline"

    back = stella.workflows.import_template(_doc("pipeline", "again"))
    assert (back.name, back.version) == ("pipeline", 2)
    assert [t.name for t in stella.workflows.list_templates()] == ["pipeline"]
    actions = [e.action for e in stella.tenancy.audit_entries()]
    assert "workflow.retire" in actions
    assert "workflow.restore" in actions


def test_a_workflow_an_environment_deploys_with_is_neither_renamed_nor_deleted(world) -> None:
    stella = world.open()
    stella.workflows.import_template(_doc("deliver"))
    stella.environments.add("prod", order=1, workflow="deliver")
    with pytest.raises(DefinitionError, match="prod deploys with it"):
        stella.workflows.retire_template("deliver")
    with pytest.raises(DefinitionError, match="prod deploys with it"):
        stella.workflows.rename_template("deliver", "deliver-2")
    assert [t.name for t in stella.workflows.list_templates()] == ["deliver"]


def test_a_renamed_workflows_versions_read_under_the_new_name_and_old_runs_still_find_theirs(
    world,
) -> None:
    stella = world.open()
    stella.workflows.set_local_executor(True)
    stella.workflows.import_template(_doc("pipeline"))
    run = stella.workflows.wait_run(stella.workflows.start_run("pipeline").id, timeout=30)
    stella.workflows.rename_template("pipeline", "shop-deploy")
    assert stella.workflows.export_template("shop-deploy", 1)["name"] == "shop-deploy"
    # The run monitor asks by the name the run recorded.
    assert stella.workflows.get_template(run.template, run.template_version).name == "shop-deploy"
    # Saving what was opened stores a version that carries the new name.
    again = stella.workflows.import_template(stella.workflows.export_template("shop-deploy"))
    assert (again.name, again.version) == ("shop-deploy", 2)


def test_rename_and_delete_through_the_cli(world, tmp_path) -> None:
    import json
    import subprocess
    import sys

    def stella(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "stella_core.cli.main", *args],
            env=world.env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    world.open().workflows.import_template(_doc("pipeline"))
    renamed = stella("workflow", "rename", "pipeline", "shop-deploy", "-o", "json")
    assert renamed.returncode == 0, renamed.stderr
    assert json.loads(renamed.stdout) == {
        "name": "shop-deploy",
        "renamed_from": "pipeline",
        "version": 1,
    }
    bad = stella("workflow", "rename", "shop-deploy", "Shop Deploy")
    assert bad.returncode == 2
    assert "not a workflow name" in bad.stderr
    deleted = stella("workflow", "delete", "shop-deploy", "-o", "json")
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout) == {"name": "shop-deploy", "retired": True, "runs": 0}
    listed = stella("workflow", "list", "-o", "json")
    assert json.loads(listed.stdout) == []
    missing = stella("workflow", "delete", "shop-deploy")
    assert missing.returncode != 0
    assert "no workflow named" in missing.stderr


def test_who_retired_a_workflow_is_the_databases_word_not_the_clients(world) -> None:
    from tests.integration.test_promotions import role_conn

    stella = world.open()
    stella.workflows.import_template(_doc("pipeline"))
    me = stella.tenancy.whoami().user
    conn = role_conn(world, me)
    # A modified client forges the time and the person; the database stamps its own.
    conn.execute(
        "UPDATE workflow.templates SET retired_at = '2001-01-01', retired_by = 'mallory' "
        "WHERE name = 'pipeline'"
    )
    conn.execute("UPDATE workflow.templates SET retired_by = 'mallory' WHERE name = 'pipeline'")
    at, by = conn.execute(
        "SELECT retired_at, retired_by FROM workflow.templates WHERE name = 'pipeline'"
    ).fetchone()
    conn.commit()
    assert by == me
    assert at.year > 2001
