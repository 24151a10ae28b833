"""Shared fixtures: one real PostgreSQL 16 cluster per test session, a fresh database per test.

The cluster is the product's own embedded default (started as an unprivileged user when the
tests run as root). Each test's `world` is a new database reached the way an external server
is (`STELLA_DATABASE_URL`); people are real login roles, dropped again afterwards.

Script steps run in the real sandbox. It shows them the test helper script (read-only) and one
session directory (read-write) where each test's `effects` directory lives, as the person who
runs `stella serve` would list a tool directory and a drop folder; never a test's STELLA_HOME.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Embedded servers the tests start stop with their last client, as before lingering existed:
# runs must not leave servers behind. Tests of lingering set their own value.
os.environ.setdefault("STELLA_EMBEDDED_LINGER", "0")

_counter = itertools.count()


@pytest.fixture(scope="session", autouse=True)
def script_paths(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The directory scripts may write to; the helper script's directory is readable."""
    from stella_core.workflows.sandbox import READ_PATHS_ENV, WRITE_PATHS_ENV
    from tests.support.workflow_helpers import SCRIPT

    writable = tmp_path_factory.mktemp("script-io")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(READ_PATHS_ENV, str(Path(SCRIPT).parent.resolve()))
        patch.setenv(WRITE_PATHS_ENV, str(writable.resolve()))
        yield writable


@pytest.fixture
def effects(script_paths: Path) -> Path:
    """A directory of this test's own that its script steps can write to (not yet created)."""
    return script_paths / f"fx-{next(_counter)}"


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from stella_core.db.embedded import SYSTEM_DIR, EmbeddedPostgres

    home = tmp_path_factory.mktemp("pg-home")
    server = EmbeddedPostgres(home, durable=False)
    info = server.start()
    yield info
    server.release()
    # As root the cluster lives outside the temp home; remove it so runs do not pile up.
    cluster = server.data_dir.parent
    if cluster.is_relative_to(SYSTEM_DIR / "clusters"):
        shutil.rmtree(cluster, ignore_errors=True)


def _superuser_conn(info: object, dbname: str) -> psycopg.Connection:
    return psycopg.connect(
        host=info.host,
        port=info.port,
        user=info.user,
        password=info.password,  # type: ignore[attr-defined]
        dbname=dbname,
        autocommit=True,
    )


@dataclass
class World:
    """A fresh database on the shared cluster and a STELLA_HOME of its own."""

    home: Path
    admin_url: str
    dbname: str
    opened: list[object] = field(default_factory=list)

    def open(self, profile: str | None = None):
        from stella_core.bootstrap import Stella

        stella = Stella.open(profile, home=self.home, database_url=self.admin_url)
        self.opened.append(stella)
        return stella

    def env(self) -> dict[str, str]:
        """Environment for running the `stella` CLI against this world in a subprocess."""
        env = dict(os.environ)
        env["STELLA_HOME"] = str(self.home)
        env["STELLA_DATABASE_URL"] = self.admin_url
        return env


@pytest.fixture
def world(pg_cluster: object, tmp_path: Path) -> Iterator[World]:
    dbname = f"t_{os.getpid()}_{next(_counter)}"
    with _superuser_conn(pg_cluster, "postgres") as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    home = tmp_path / "home"
    home.mkdir()
    w = World(home=home, admin_url=pg_cluster.url(database=dbname), dbname=dbname)  # type: ignore[attr-defined]
    yield w
    for stella in w.opened:
        stella.close()  # type: ignore[attr-defined]
    with _superuser_conn(pg_cluster, "postgres") as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(dbname)))
        people = conn.execute(
            "SELECT r.rolname FROM pg_roles r JOIN pg_auth_members m ON m.member = r.oid "
            "JOIN pg_roles g ON g.oid = m.roleid WHERE g.rolname = 'stella_app' AND r.rolcanlogin"
        ).fetchall()
        for (name,) in people:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture
def superuser(pg_cluster: object, world: World) -> Iterator[psycopg.Connection]:
    """A superuser connection to the test database: the 'attacker behind the app's back'."""
    with _superuser_conn(pg_cluster, world.dbname) as conn:
        yield conn
