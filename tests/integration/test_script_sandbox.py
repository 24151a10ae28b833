"""Script steps run sandboxed (real bubblewrap, real PostgreSQL): a script on the embedded default
reads none of STELLA_HOME (profiles, the secrets file, keys, the embedded superuser password) nor
the database's files, gets no STELLA_* variable, and keeps only capped output. Where there is no
sandbox a script fails with a clear error, until an admin (and only an admin) allows it to run
unsandboxed; even then its environment is cleared and its output capped."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from stella_core.db.embedded import SYSTEM_DIR, EmbeddedPostgres
from stella_core.tenancy.model import ProductRole
from tests.support.workflow_helpers import PYTHON, require_sandbox, script, template

from .test_workflow_cli import ok_json, stella, write

# Run by `python3 -c` in the sandbox: what can it see of each path, of its environment and of
# the host's processes?
PEEK = """\
import json, os, sys
seen = {}
for path in sys.argv[1:]:
    try:
        if os.path.isdir(path):
            seen[path] = "listed " + ",".join(sorted(os.listdir(path)))
        else:
            with open(path, "rb") as fh:
                seen[path] = f"read {len(fh.read())} bytes"
    except OSError as exc:
        seen[path] = type(exc).__name__
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
print(json.dumps({"paths": seen, "env": dict(os.environ), "pids": pids}))
"""


@pytest.fixture(autouse=True)
def _bwrap() -> None:
    require_sandbox()


@pytest.fixture
def admin(world):
    stella = world.open()
    stella.workflows.set_local_executor(True)
    return stella


@pytest.fixture
def embedded_home(tmp_path: Path) -> Iterator[Path]:
    """A STELLA_HOME for the embedded default; as root its cluster (stopped by then: the last
    CLI process stops it) is removed afterwards, so runs do not pile up in /var/lib."""
    home = tmp_path / "home"
    yield home
    cluster = EmbeddedPostgres(home).data_dir.parent
    if cluster.is_relative_to(SYSTEM_DIR / "clusters"):
        shutil.rmtree(cluster, ignore_errors=True)


def test_a_script_on_the_embedded_default_reads_no_secret(
    tmp_path: Path, embedded_home: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "STELLA_DATABASE_URL"}
    home = embedded_home
    env["STELLA_HOME"] = str(home)
    env["STELLA_KEY_PASSPHRASE"] = "passphrase-the-script-must-not-see"
    ok_json(env, "db", "upgrade", "-o", "json")  # the embedded default: scripts on by default
    password_file = home / "pg" / "superuser.password"
    secrets = [home / "profiles.json", home / "secrets", home / "keys", password_file]
    for path in secrets:
        assert path.exists(), f"the test expects {path}"
    # The cluster's files (as root under /var/lib/stella-desk, else in the home).
    data = EmbeddedPostgres(home).data_dir
    assert (data / "PG_VERSION").exists()
    hidden = [*secrets, data, home, tmp_path, SYSTEM_DIR, "/root", "/home"]
    paths = [*map(str, hidden), "/etc/shadow"]
    doc = template(
        "peek",
        [
            {
                "id": "peek",
                "type": "script",
                "inputs": {"command": [PYTHON, "-c", PEEK, *paths], "env": {"GREETING": "hi"}},
            },
            {"id": "harmless", "type": "script", "inputs": {"command": ["uname", "-s"]}},
        ],
        [("peek", "harmless")],
    )
    ok_json(env, "workflow", "import", write(tmp_path / "peek.json", doc), "-o", "json")
    run_id = ok_json(env, "run", "start", "peek", "-o", "json")["run_id"]
    waited = stella(env, "run", "wait", run_id, "--timeout", "60")
    assert waited.returncode == 0, waited.stderr
    shown = ok_json(env, "run", "show", run_id, "-o", "json")
    steps = {s["id"]: s for s in shown["steps"]}
    assert steps["harmless"]["outputs"]["stdout"] == "Linux\n"
    report = json.loads(steps["peek"]["outputs"]["stdout"])

    # None of it exists in the sandbox (the shadow file is an empty stand-in, even for root).
    for path in map(str, hidden):
        assert report["paths"][path] == "FileNotFoundError", path
    assert report["paths"]["/etc/shadow"] in ("read 0 bytes", "PermissionError")
    # What the tenant can read of the step holds no secret.
    stored = json.dumps(shown)
    assert password_file.read_text().strip() not in stored
    assert "passphrase-the-script-must-not-see" not in stored
    passwords = _values_named("password", json.loads((home / "profiles.json").read_text()))
    assert passwords
    assert not [p for p in passwords if p in stored]
    # A cleared environment: the allow-list, the step's own variable, the run's context.
    environment = report["env"]
    assert not [name for name in environment if name.startswith("STELLA_")]
    assert set(environment) == {
        "PATH",
        "LANG",
        "LC_ALL",
        "HOME",
        "PWD",  # bwrap's, for its --chdir
        "GREETING",
        "WORKFLOW_RUN_ID",
        "WORKFLOW_STEP_ID",
        "WORKFLOW_ATTEMPT",
        "WORKFLOW_IDEMPOTENCY_KEY",
        "WORKFLOW_ATTEMPT_TOKEN",  # which attempt: a worker taking over finds it by this
    }
    assert environment["HOME"] == environment["PWD"]
    assert Path(environment["HOME"]).name.startswith("stella-step-")
    assert not Path(environment["HOME"]).exists()  # the scratch directory went with the attempt
    # A PID namespace of its own: the orchestrator's process is not there to read.
    assert max(report["pids"]) < 10, report["pids"]


def _values_named(key: str, value: object) -> list[str]:
    if isinstance(value, dict):
        found = [v for k, v in value.items() if k == key and isinstance(v, str)]
        return found + [x for v in value.values() for x in _values_named(key, v)]
    if isinstance(value, list):
        return [x for v in value for x in _values_named(key, v)]
    return []


def test_output_over_the_cap_is_truncated_with_a_marker(admin) -> None:
    from stella_core.workflows.executors import OUTPUT_LIMIT

    admin.workflows.import_template(
        template("loud", [script("loud", "flood", "300000", "--stderr", "200000")])
    )
    run = admin.workflows.start_run("loud")
    run = admin.workflows.wait_run(run.id, timeout=60)
    assert run.status == "succeeded", run.error
    outputs = run.steps[0].outputs
    half = OUTPUT_LIMIT // 2
    assert outputs["stdout"].startswith("x" * half)
    assert outputs["stdout"].endswith(
        f"\n[output truncated: {300000 - half} more bytes not kept; a step keeps the first "
        f"{half} bytes of its stdout]"
    )
    assert outputs["stderr"].startswith("e" * half)
    assert outputs["stderr"].endswith(
        f"{200000 - half} more bytes not kept; a step keeps the first {half} bytes of its stderr]"
    )


def test_a_step_may_not_set_a_stella_variable(admin) -> None:
    doc = template("sneaky", [script("s", "echo", "hi", inputs={"env": {"STELLA_HOME": "/x"}})])
    with pytest.raises(Exception, match="STELLA_"):
        admin.workflows.import_template(doc)


def _person(world, admin, name: str, role: ProductRole):
    user, password = admin.tenancy.add_user(name, role)
    admin.save_profile_for(user.name, password)
    return world.open(name)


def test_without_a_sandbox_scripts_fail_until_an_admin_allows_them_unsandboxed(
    world, admin, monkeypatch, tmp_path: Path
) -> None:
    # This orchestrator's PATH has no bwrap; a passphrase in its environment must not leak.
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("STELLA_KEY_PASSPHRASE", "passphrase-the-script-must-not-see")
    assert admin.workflows.settings() == {
        "local_executor": True,
        "allow_unsandboxed": False,
        "sandbox": None,
    }
    peek = {"command": [PYTHON, "-c", PEEK, str(world.home / "profiles.json")]}
    admin.workflows.import_template(
        template(
            "bare",
            [
                {"id": "peek", "type": "script", "inputs": peek},
                script("loud", "flood", "200000"),
            ],
            [("peek", "loud")],
        )
    )
    refused = admin.workflows.wait_run(admin.workflows.start_run("bare").id, timeout=60)
    assert refused.status == "failed"
    step = refused.steps[0]
    assert step.outputs is None  # nothing ran
    assert "bubblewrap" in (step.error or "")
    assert "apt-get install bubblewrap" in (step.error or "")
    assert "workflow setting 'unsandboxed'" in (step.error or "")

    # Only an admin may allow it: a release manager is refused by the CLI, and by the database
    # when they try it with their own login role and raw SQL.
    rm = _person(world, admin, "rita", ProductRole.RELEASE_MANAGER)
    env = world.env()
    denied = stella(env, "--profile", "rita", "workflow", "settings", "--unsandboxed", "on")
    assert denied.returncode == 1
    assert "rita is release-manager; this needs admin" in denied.stderr
    url = rm.backend.person_url(rm.profile).replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (str(rm.profile.tenant),))
        assert conn.execute("SELECT allow_unsandboxed FROM workflow.settings").fetchone() == (
            False,
        )
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute("UPDATE workflow.settings SET allow_unsandboxed = true")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                "INSERT INTO workflow.settings (tenant_id, allow_unsandboxed) VALUES (%s, true) "
                "ON CONFLICT (tenant_id) DO UPDATE SET allow_unsandboxed = true",
                (str(rm.profile.tenant),),
            )
    assert admin.workflows.settings()["allow_unsandboxed"] is False

    # The admin allows it (audited as the local-executor setting is); scripts run again.
    allowed = stella(env, "workflow", "settings", "--unsandboxed", "on")
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout == "unsandboxed scripts: allowed where a host has no sandbox\n"
    shown = ok_json(env, "workflow", "settings", "-o", "json")
    assert shown == {"local_executor": True, "allow_unsandboxed": True, "sandbox": None}
    changes = [
        (e.actor, e.details)
        for e in admin.tenancy.audit_entries()
        if e.action == "workflow.settings"
    ]
    me = admin.profile.person_name
    assert changes == [(me, {"local_executor": True}), (me, {"allow_unsandboxed": True})]
    run = admin.workflows.wait_run(admin.workflows.start_run("bare").id, timeout=60)
    assert run.status == "succeeded", run.error
    steps = {s.id: s for s in run.steps}
    # Unsandboxed, the script could read the file; its environment is still the allow-list.
    report = json.loads(steps["peek"].outputs["stdout"])
    assert report["paths"][str(world.home / "profiles.json")].startswith("read ")
    assert not [name for name in report["env"] if name.startswith("STELLA_")]
    assert "passphrase-the-script-must-not-see" not in json.dumps(report)
    assert "more bytes not kept" in steps["loud"].outputs["stdout"]
    assert len(steps["loud"].outputs["stdout"]) < 70_000

    # Off again: refused again.
    assert ok_json(env, "workflow", "settings", "--unsandboxed", "off", "-o", "json") == {
        "allow_unsandboxed": False
    }
    again = admin.workflows.wait_run(admin.workflows.start_run("bare").id, timeout=60)
    assert again.status == "failed"
    assert "bubblewrap" in (again.steps[0].error or "")
