"""The embedded default between commands: the server outlives its last client for a while, so
the next command finds it running; `stella db stop` stops it; left alone it stops by itself,
but never while a client (the desk, stella serve) holds it. `stella --help` stays light."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stella_core.db.embedded import SYSTEM_DIR, EmbeddedPostgres
from tests.support.workflow_helpers import notify, template

pytestmark = pytest.mark.integration


def stella(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stella_core.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ok_json(env: dict[str, str], *args: str):
    result = stella(env, *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def postmaster_pid(home: Path) -> int | None:
    server = EmbeddedPostgres(home, linger=0)
    if not server.is_running():
        return None
    return int((server.data_dir / "postmaster.pid").read_text().splitlines()[0])


def wait_until(predicate, timeout: float) -> float:
    """Seconds it took for `predicate` to hold; fails after `timeout`."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, "timed out"
        time.sleep(0.1)
    return time.monotonic() - start


def reapers(home: Path) -> list[int]:
    """Live reaper processes watching this home."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if b"run_reaper" in b" ".join(cmdline) and str(home).encode() in cmdline and state != "Z":
            found.append(int(proc.name))
    return found


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "home"
    yield path
    server = EmbeddedPostgres(path, linger=0)
    if server.is_running():
        server.stop()
    cluster = server.data_dir.parent
    if cluster.is_relative_to(SYSTEM_DIR / "clusters"):
        shutil.rmtree(cluster, ignore_errors=True)


def cli_env(home: Path, linger: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "STELLA_DATABASE_URL"}
    env["STELLA_HOME"] = str(home)
    env["STELLA_EMBEDDED_LINGER"] = linger
    return env


def test_the_server_lingers_and_the_next_command_reuses_it_until_db_stop(home: Path) -> None:
    env = cli_env(home, "600")
    ok_json(env, "db", "upgrade", "-o", "json")
    first = postmaster_pid(home)
    assert first is not None, "the server stopped with its last client"
    assert len(reapers(home)) == 1
    assert ok_json(env, "release", "list", "-o", "json") == []
    assert postmaster_pid(home) == first  # the same server, not a new one
    assert len(reapers(home)) == 1  # and still one watcher

    stopped = ok_json(env, "db", "stop", "-o", "json")
    assert stopped == {"home": str(home.resolve()), "was_running": True, "running": False}
    assert postmaster_pid(home) is None
    wait_until(lambda: not reapers(home), timeout=15)  # the watcher leaves with its server
    log = EmbeddedPostgres(home, linger=0).log_path.read_text()
    assert log.rstrip().endswith("database system is shut down")  # a clean shutdown

    again = stella(env, "db", "stop")
    assert again.returncode == 0, again.stderr
    assert "no embedded database is running" in again.stdout
    assert ok_json(env, "db", "stop", "-o", "json")["was_running"] is False
    # The next command starts it again, data intact.
    assert ok_json(env, "whoami", "-o", "json")["tenant"] == "default"


def test_db_stop_on_a_home_that_never_ran_a_server(tmp_path: Path) -> None:
    home = tmp_path / "never"
    result = stella(cli_env(home, "600"), "db", "stop", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["was_running"] is False
    assert not home.exists()  # asking to stop creates nothing


def test_db_stop_refuses_while_a_client_holds_the_server_unless_forced(home: Path) -> None:
    env = cli_env(home, "600")
    ok_json(env, "db", "upgrade", "-o", "json")
    desk = EmbeddedPostgres(home, linger=600)  # stands for the desk or stella serve
    desk.start()
    try:
        refused = stella(env, "db", "stop")
        assert refused.returncode == 1
        assert "in use" in refused.stderr
        assert "--force" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        assert postmaster_pid(home) is not None
        assert ok_json(env, "db", "stop", "--force", "-o", "json")["was_running"] is True
        assert postmaster_pid(home) is None
    finally:
        desk.release()


def test_a_short_linger_stops_the_server_by_itself(home: Path) -> None:
    env = cli_env(home, "3")
    ok_json(env, "db", "upgrade", "-o", "json")
    assert postmaster_pid(home) is not None, "stopped before the linger period"
    wait_until(lambda: postmaster_pid(home) is None, timeout=30)
    stopped_at = time.time()
    # The last client recorded when it left; the server outlived it by the linger period.
    left_at = (home / "pg" / "idle").stat().st_mtime
    assert stopped_at - left_at >= 3
    wait_until(lambda: not reapers(home), timeout=15)
    log = EmbeddedPostgres(home, linger=0).log_path.read_text()
    assert log.rstrip().endswith("database system is shut down")


def test_the_server_is_never_stopped_while_a_client_holds_it(home: Path) -> None:
    env = cli_env(home, "1")
    ok_json(env, "db", "upgrade", "-o", "json")
    desk = EmbeddedPostgres(home, linger=1)
    desk.start()
    try:
        ok_json(env, "whoami", "-o", "json")  # a command comes and goes meanwhile
        time.sleep(4)  # well past the linger period
        assert postmaster_pid(home) is not None
    finally:
        desk.release()
    wait_until(lambda: postmaster_pid(home) is None, timeout=30)


def test_concurrent_commands_on_a_stopped_server_start_one_server(home: Path) -> None:
    env = cli_env(home, "600")
    ok_json(env, "db", "upgrade", "-o", "json")
    ok_json(env, "db", "stop", "-o", "json")
    calls = [
        subprocess.Popen(
            [sys.executable, "-m", "stella_core.cli.main", "whoami", "-o", "json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [(call.communicate(timeout=120), call.returncode) for call in calls]
    for (out, err), code in results:
        assert code == 0, err
        assert json.loads(out)["tenant"] == "default"
    assert postmaster_pid(home) is not None
    assert len(reapers(home)) == 1


def test_a_bad_linger_is_refused_in_one_line(home: Path) -> None:
    result = stella(cli_env(home, "soon"), "whoami")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "stella: error: STELLA_EMBEDDED_LINGER='soon' must be a number of seconds from 0 to 604800"
    ]


def test_help_imports_no_database_driver_orm_or_cryptography() -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "stella_core.cli.main", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert "release" in result.stdout
    imported = {
        line.split("|")[-1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "stella_core.cli.common" in imported  # the measurement saw our imports
    for heavy in ("sqlalchemy", "psycopg", "pydantic", "cryptography", "httpx", "alembic"):
        assert heavy not in imported, f"stella --help imported {heavy}"


def warm_processes(home: Path) -> list[int]:
    """Live warm command processes serving this home."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"cli.warm import serve" in b" ".join(cmdline) and str(home).encode() in b" ".join(
            cmdline
        ):
            found.append(int(proc.name))
    return found


def test_commands_on_a_lingering_server_run_warm_and_behave_the_same(
    home: Path, tmp_path: Path
) -> None:
    env = cli_env(home, "600")
    ok_json(env, "db", "upgrade", "-o", "json")
    cold = ok_json(env, "whoami", "-o", "json")  # starts the home's warm process
    socket_path = home / "pg" / "cli.sock"
    wait_until(socket_path.exists, timeout=60)
    assert len(warm_processes(home)) == 1
    assert oct(socket_path.stat().st_mode & 0o777) == "0o600"

    assert ok_json(env, "whoami", "-o", "json") == cold
    # Exit codes, one-line errors, standard input and the working directory come through.
    missing = stella(env, "release", "show", "nope")
    assert missing.returncode == 2
    assert missing.stderr == "stella: error: no release named 'nope'\n"
    doc = json.dumps(template("hello", [notify("a")]))
    imported = subprocess.run(
        [sys.executable, "-m", "stella_core.cli.main", "workflow", "import", "-", "-o", "json"],
        input=doc,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["name"] == "hello"
    (tmp_path / "hello.json").write_text(doc)
    relative = subprocess.run(
        [sys.executable, "-m", "stella_core.cli.main", "workflow", "validate", "hello.json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert relative.returncode == 0, relative.stderr  # found in the caller's directory
    assert relative.stdout == "valid\n"
    # The same answers with warm commands turned off.
    assert ok_json({**env, "STELLA_CLI_WARM": "0"}, "whoami", "-o", "json") == cold

    ok_json(env, "db", "stop", "-o", "json")
    wait_until(lambda: not warm_processes(home), timeout=30)  # it leaves with the server
    assert not socket_path.exists()
