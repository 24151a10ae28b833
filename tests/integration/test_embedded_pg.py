"""The embedded default: a real PostgreSQL 16 per home, shared by processes, never run as root."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from stella_core.db.embedded import SYSTEM_DIR, SYSTEM_USER, EmbeddedPostgres, PgConnectionInfo
from stella_core.errors import DatabaseError

pytestmark = pytest.mark.integration

IS_ROOT = os.geteuid() == 0
CORE = Path(__file__).resolve().parents[2] / "core"
SITE_PACKAGES = str(Path(psycopg.__file__).resolve().parents[1])  # wherever ours came from
TEST_USER = "stella-test"

# Prepended to every child script so any Python 3.11 finds our code and the venv's packages.
CHILD_PRELUDE = f"""
import json, os, sys, time
sys.path[:0] = [{str(CORE)!r}, {SITE_PACKAGES!r}]
from pathlib import Path
import psycopg
from stella_core.db.embedded import EmbeddedPostgres
"""


def connect(info: PgConnectionInfo, **override: object) -> psycopg.Connection[tuple[object, ...]]:
    params: dict[str, object] = {
        "host": info.host,
        "port": info.port,
        "user": info.user,
        "password": info.password,
        "dbname": info.database,
        "passfile": os.devnull,  # a developer's ~/.pgpass must not supply a password
        "connect_timeout": 5,
    }
    params.update(override)
    return psycopg.connect(**params)  # type: ignore[arg-type]


def postmaster_pid(pg: EmbeddedPostgres) -> int:
    return int((pg.data_dir / "postmaster.pid").read_text().splitlines()[0])


def process_uids(pid: int) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(x) for x in line.split()[1:]]
    raise AssertionError(f"no Uid line for {pid}")


def run_child(
    script: str,
    *args: str,
    user: pwd.struct_passwd | None = None,
    python: str = sys.executable,
    home_dir: Path | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    code = CHILD_PRELUDE + textwrap.dedent(script)
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "STELLA_EMBEDDED_LINGER": "0"}
    if home_dir is not None:
        env["HOME"] = str(home_dir)
    return subprocess.run(
        [python, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd="/",
        user=user.pw_uid if user else None,
        group=user.pw_gid if user else None,
        extra_groups=[] if user else None,
        check=False,
    )


def child_output(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert result.returncode == 0, f"child failed:\n{result.stdout}\n{result.stderr}"
    data: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def cleanup_home(home: Path) -> None:
    pg = EmbeddedPostgres(home, durable=False)
    try:
        if pg.is_running():
            pg.stop()
    finally:
        cluster = pg.data_dir.parent
        if cluster.parent == SYSTEM_DIR / "clusters":
            shutil.rmtree(cluster, ignore_errors=True)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "stella-home"
    yield path
    cleanup_home(path)


def test_first_start_initialises_pg16_reachable_as_stella_super(home: Path) -> None:
    pg = EmbeddedPostgres(home, durable=False)
    info = pg.start()
    try:
        assert (info.host, info.user, info.database) == ("127.0.0.1", "stella_super", "stella")
        with connect(info) as conn:
            version, user, db = conn.execute(
                "select version(), current_user, current_database()"
            ).fetchone()  # type: ignore[misc]
            assert str(version).startswith("PostgreSQL 16.")
            assert (user, db) == ("stella_super", "stella")
            assert conn.execute("show listen_addresses").fetchone() == ("127.0.0.1",)
            assert conn.execute("show unix_socket_directories").fetchone() == ("",)
            assert conn.execute("show fsync").fetchone() == ("off",)  # durable=False
        pwfile = home / "pg" / "superuser.password"
        assert stat.S_IMODE(pwfile.stat().st_mode) == 0o600
        assert stat.S_IMODE((home / "pg").stat().st_mode) == 0o700
        assert info.password not in repr(info)
        assert info.url() == (
            f"postgresql+psycopg://stella_super:{quote(info.password, safe='')}"
            f"@127.0.0.1:{info.port}/stella"
        )
        assert info.url(user="a b", password="p@ss/:", database="x") == (
            f"postgresql+psycopg://a%20b:p%40ss%2F%3A@127.0.0.1:{info.port}/x"
        )

        pid = postmaster_pid(pg)
        assert pg.start() == info  # idempotent
        other = EmbeddedPostgres(home, durable=False)
        assert other.start() == info  # a second handle in this process joins
        other.release()
        assert pg.is_running()
        assert postmaster_pid(pg) == pid
    finally:
        pg.release()
    assert not pg.is_running()


@pytest.mark.skipif(not IS_ROOT, reason="only meaningful when the tests run as root")
def test_as_root_server_runs_as_stella_pg_outside_home(home: Path) -> None:
    pg = EmbeddedPostgres(home, durable=False)
    pg.start()
    try:
        pg_user = pwd.getpwnam(SYSTEM_USER)
        uids = process_uids(postmaster_pid(pg))
        assert 0 not in uids
        assert set(uids) == {pg_user.pw_uid}
        data = pg.data_dir.stat()
        assert (data.st_uid, stat.S_IMODE(data.st_mode)) == (pg_user.pw_uid, 0o700)
        assert pg.data_dir.parent.parent == SYSTEM_DIR / "clusters"
        assert (home / "pg" / "cluster").read_text().strip() == str(pg.data_dir.parent)
        assert not (home / "pg" / "data").exists()
        exe = Path(os.readlink(f"/proc/{postmaster_pid(pg)}/exe"))
        assert exe.is_relative_to(SYSTEM_DIR)
        assert exe.parts[len(SYSTEM_DIR.parts)].startswith("pg16-")
        # Nothing outside our own directories was opened up.
        if Path("/root").exists():
            assert stat.S_IMODE(Path("/root").stat().st_mode) & 0o007 == 0
    finally:
        pg.release()


@pytest.mark.skipif(not IS_ROOT, reason="data lives outside the home only as root")
def test_as_root_a_recreated_home_sets_the_old_cluster_aside(home: Path) -> None:
    with EmbeddedPostgres(home, durable=False) as old:
        cluster = EmbeddedPostgres(home).data_dir.parent
    shutil.rmtree(home)  # the password went with it; the cluster in /var/lib did not
    try:
        with EmbeddedPostgres(home, durable=False) as new, connect(new) as conn:
            assert new.password != old.password
            assert conn.execute("select 1").fetchone() == (1,)
        aside = list(cluster.parent.glob(f"{cluster.name}.orphaned-*"))
        assert len(aside) == 1
        assert (aside[0] / "data" / "PG_VERSION").exists()  # moved, never deleted
    finally:
        for path in cluster.parent.glob(f"{cluster.name}.orphaned-*"):
            shutil.rmtree(path)


def test_second_process_joins_and_only_the_last_release_stops(home: Path) -> None:
    pg = EmbeddedPostgres(home, durable=False)
    info = pg.start()
    try:
        pid = postmaster_pid(pg)
        child = child_output(
            run_child(
                """
                pg = EmbeddedPostgres(Path(sys.argv[1]), durable=False)
                info = pg.start()
                with psycopg.connect(info.url().replace("+psycopg", "")) as conn:
                    conn.execute("select 1")
                pg.release()
                print(json.dumps({"port": info.port, "running": pg.is_running()}))
                """,
                str(home),
            )
        )
        assert child == {"port": info.port, "running": True}
        assert pg.is_running()
        assert postmaster_pid(pg) == pid
        with connect(info) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        pg.release()
    assert not pg.is_running()
    with pytest.raises(psycopg.OperationalError):
        connect(info)


def test_client_killed_with_sigkill_does_not_keep_the_server_alive(home: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD_PRELUDE
            + "info = EmbeddedPostgres(Path(sys.argv[1]), durable=False).start()\n"
            + "print(info.port, flush=True)\ntime.sleep(600)\n",
            str(home),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        port = int(holder.stdout.readline())
    finally:
        holder.kill()
        holder.wait()
    pg = EmbeddedPostgres(home, durable=False)
    assert pg.start().port == port  # joins the server the killed client left running
    pg.release()
    assert not pg.is_running()  # the killed client's shared lock is gone


def test_a_process_exiting_without_release_still_stops_the_server(home: Path) -> None:
    child = child_output(
        run_child(
            """
            info = EmbeddedPostgres(Path(sys.argv[1]), durable=False).start()
            print(json.dumps({"port": info.port}))
            """,
            str(home),
        )
    )
    assert child["port"]
    assert not EmbeddedPostgres(home).is_running()  # released at interpreter exit


def test_release_never_recreates_a_home_deleted_under_it(home: Path) -> None:
    pg = EmbeddedPostgres(home, durable=False)
    pg.start()
    moved = home.with_name("moved-away")
    home.rename(moved)
    try:
        pg.release()
        assert not home.exists()
    finally:
        moved.rename(home)  # so the fixture can stop the server


def test_data_survives_a_restart(home: Path) -> None:
    with EmbeddedPostgres(home, durable=False) as info, connect(info) as conn:
        conn.execute("create table kept (v text)")
        conn.execute("insert into kept values ('still here')")
        conn.commit()
    pg = EmbeddedPostgres(home, durable=False)
    assert not pg.is_running()
    again = pg.start()
    try:
        assert again.port == info.port  # the recorded port is reused when free
        with connect(again) as conn:
            assert conn.execute("select v from kept").fetchall() == [("still here",)]
    finally:
        pg.release()


def test_taken_port_at_a_later_start_picks_another(home: Path) -> None:
    with EmbeddedPostgres(home, durable=False) as info:
        pass
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", info.port))
        squatter.listen()
        with EmbeddedPostgres(home, durable=False) as moved, connect(moved) as conn:
            assert moved.port != info.port
            assert conn.execute("select 1").fetchone() == (1,)


def test_four_parallel_first_starts_run_initdb_once(home: Path) -> None:
    barrier = home.parent / "barrier"
    barrier.mkdir()
    script = CHILD_PRELUDE + textwrap.dedent(
        """
        import logging
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        home, barrier, me = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
        pg = EmbeddedPostgres(home, durable=False)
        info = pg.start()
        with psycopg.connect(info.url().replace("+psycopg", "")) as conn:
            server_pid = conn.execute("select pg_postmaster_start_time()::text").fetchone()[0]
        (barrier / me).touch()
        deadline = time.monotonic() + 30
        while len(list(barrier.iterdir())) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)  # everyone holds the server until all have connected
        pg.release()
        print(json.dumps({"port": info.port, "started": server_pid}))
        """
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(home), str(barrier), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    results = [child.communicate(timeout=60) for child in children]
    for child, (_out, err) in zip(children, results, strict=True):
        assert child.returncode == 0, err
    outputs = [json.loads(out.strip().splitlines()[-1]) for out, _ in results]
    assert len({(o["port"], o["started"]) for o in outputs}) == 1  # one server, shared
    stderr = "".join(err for _, err in results)
    assert stderr.count("initialising a PostgreSQL cluster") == 1
    assert not EmbeddedPostgres(home).is_running()  # the last release stopped it


def test_stale_postmaster_pid_after_kill_9_is_recovered(home: Path) -> None:
    first = EmbeddedPostgres(home, durable=False)
    info = first.start()
    with connect(info) as conn:
        conn.execute("create table t (v int)")
        conn.commit()
        conn.execute("checkpoint")  # synchronous_commit=off: make the commit outlive kill -9
    os.kill(postmaster_pid(first), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while first.is_running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not first.is_running()
    assert (first.data_dir / "postmaster.pid").exists()  # left behind, stale
    second = EmbeddedPostgres(home, durable=False)
    try:
        recovered = second.start()
        with connect(recovered) as conn:
            assert conn.execute("select count(*) from t").fetchone() == (0,)
    finally:
        second.release()
        assert second.is_running()  # `first` still holds its client lock
        first.release()
    assert not first.is_running()


def test_only_password_authentication_over_loopback(home: Path) -> None:
    pg = EmbeddedPostgres(home, durable=False)
    info = pg.start()
    try:
        with pytest.raises(psycopg.OperationalError, match="no password supplied"):
            connect(info, password=None)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            connect(info, password="wrong")
        hba = [
            line.split()
            for line in (pg.data_dir / "pg_hba.conf").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        assert hba == [
            ["host", "all", "all", "127.0.0.1/32", "scram-sha-256"],
            ["host", "all", "all", "::1/128", "scram-sha-256"],
        ]
    finally:
        pg.release()


def test_start_failure_raises_database_error_with_log_tail_and_no_password(home: Path) -> None:
    with EmbeddedPostgres(home, durable=False) as info:
        pass
    with (EmbeddedPostgres(home).data_dir / "postgresql.conf").open("a") as conf:
        conf.write("\nnot_a_setting_at_all = 1\n")
    with pytest.raises(DatabaseError) as raised:
        EmbeddedPostgres(home, durable=False).start()
    assert "not_a_setting_at_all" in raised.value.message  # from the server log
    assert info.password not in raised.value.message


def _test_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER],
            check=True,
        )
        return pwd.getpwnam(TEST_USER)


def _python_usable_by(user: pwd.struct_passwd | None) -> str:
    """An interpreter of our minor version the user can run (a venv based under /root is not).

    The prelude imports psycopg and stella_core, so success means the child can do real work.
    """
    probe = f"print(sys.version_info[:2] == {tuple(sys.version_info[:2])})"
    for candidate in (
        sys.executable,
        f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}",
    ):
        if not Path(candidate).exists():
            continue
        try:
            result = run_child(probe, user=user, python=candidate)
        except PermissionError:
            continue
        if result.returncode == 0 and result.stdout.strip().endswith("True"):
            return candidate
    pytest.fail("no Python interpreter of our version is executable by the non-root user")


NON_ROOT_SCENARIO = """
home = Path(sys.argv[1])
report = {"euid": os.geteuid()}
pg = EmbeddedPostgres(home, durable=False)
info = pg.start()
report["data_dir"] = str(pg.data_dir)
report["data_mode"] = oct(pg.data_dir.stat().st_mode & 0o777)
pid = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
report["server_uid"] = [
    int(x) for x in open(f"/proc/{pid}/status").read().split("Uid:")[1].split()[:4]
]
url = info.url().replace("+psycopg", "")
with psycopg.connect(url) as conn:
    report["version"] = conn.execute("show server_version").fetchone()[0]
    conn.execute("create table kept (v text)")
    conn.execute("insert into kept values ('ok')")
report["idempotent"] = pg.start() == info
joiner = EmbeddedPostgres(home, durable=False)
report["joined_port"] = joiner.start().port == info.port
joiner.release()
report["running_after_join_release"] = pg.is_running()
try:
    psycopg.connect(host=info.host, port=info.port, user=info.user, dbname=info.database,
                    passfile=os.devnull, connect_timeout=5).close()
    report["no_password_refused"] = False
except psycopg.OperationalError:
    report["no_password_refused"] = True
pg.release()
report["stopped_after_release"] = not pg.is_running()
with EmbeddedPostgres(home, durable=False) as again:
    with psycopg.connect(again.url().replace("+psycopg", "")) as conn:
        report["survived"] = conn.execute("select v from kept").fetchall() == [("ok",)]
report["stopped_at_end"] = not EmbeddedPostgres(home).is_running()
print(json.dumps(report))
"""


def test_non_root_user_runs_its_own_server_in_its_home() -> None:
    user = _test_user() if IS_ROOT else None
    home_root = Path(tempfile.mkdtemp(prefix="stella-nonroot-", dir="/tmp"))
    try:
        if user is not None:
            os.chown(home_root, user.pw_uid, user.pw_gid)
        home = home_root / "stella-home"
        python = _python_usable_by(user)
        report = child_output(
            run_child(NON_ROOT_SCENARIO, str(home), user=user, python=python, home_dir=home_root)
        )
        uid = user.pw_uid if user is not None else os.geteuid()
        assert report["euid"] == uid != 0
        assert report["server_uid"] == [uid] * 4
        assert report["data_dir"] == str(home / "pg" / "data")
        assert report["data_mode"] == "0o700"
        assert str(report["version"]).startswith("16.")
        for check in (
            "idempotent",
            "joined_port",
            "running_after_join_release",
            "no_password_refused",
            "stopped_after_release",
            "survived",
            "stopped_at_end",
        ):
            assert report[check] is True, check
    finally:
        pidfile = home_root / "stella-home" / "pg" / "data" / "postmaster.pid"
        if pidfile.exists():  # the scenario failed half-way: a fast shutdown of its server
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGINT)
            time.sleep(1)
        shutil.rmtree(home_root, ignore_errors=True)
