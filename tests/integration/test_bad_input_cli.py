"""Bad input through the `stella` command line: exit 2, one clear line on stderr, nothing stored.

Each value here once reached PostgreSQL or Python raw (integer out of range, a timestamp past
year 9999, NUL in text, RecursionError, Python's 4,300-digit limit), waited forever, or read a
file without end. "Nothing stored" is checked on every table's content and every file of
STELLA_HOME, before and after each refusal.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.support.workflow_helpers import template

pytestmark = pytest.mark.integration

HUGE = "9" * 5000
RAW = ("Traceback", "Error:", "Exceeds the limit", "psycopg", "sqlalchemy")


def stella(env: dict[str, str], *args: str, stdin: str | bytes | None = None, timeout: float = 60):
    return subprocess.run(
        [sys.executable, "-m", "stella_core.cli.main", *args],
        env=env,
        input=stdin.encode() if isinstance(stdin, str) else stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def ok(env: dict[str, str], *args: str, stdin: str | None = None) -> object:
    result = stella(env, *args, "--output", "json", stdin=stdin)
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def refused(env: dict[str, str], *args: str, says: str, stdin: str | bytes | None = None) -> str:
    """Exit 2 and exactly one line on stderr that says `says`; no raw Python or driver error."""
    result = stella(env, *args, stdin=stdin)
    err = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 2, (args[:4], result.returncode, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("stella: error: "), err
    assert says in lines[0], err
    assert not any(raw in lines[0] for raw in RAW), err
    assert len(lines[0]) < 400, err  # a 5,000-digit value is not echoed back whole
    return lines[0]


def _stored(conn: psycopg.Connection, home: Path) -> dict[str, str]:
    """A digest of every table's rows (all schemas of the database) and of every file in
    STELLA_HOME: equal before and after means nothing was written."""
    tables = conn.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_type = 'BASE TABLE' "
        "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
    ).fetchall()
    state: dict[str, str] = {}
    for schema, table in tables:
        query = sql.SQL(
            "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {}.{} t"
        ).format(sql.Identifier(schema), sql.Identifier(table))
        state[f"{schema}.{table}"] = conn.execute(query).fetchone()[0]
    for path in sorted(home.rglob("*")):
        if path.is_file():
            state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


@pytest.fixture
def unchanged(superuser: psycopg.Connection, world) -> Callable[..., str]:
    """`unchanged(env, *args, says=...)`: refused, and the database and home are as before."""

    def check(env: dict[str, str], *args: str, says: str, stdin: str | bytes | None = None) -> str:
        before = _stored(superuser, world.home)
        line = refused(env, *args, says=says, stdin=stdin)
        after = _stored(superuser, world.home)
        assert [k for k in before if before[k] != after.get(k)] == []
        assert sorted(set(after) - set(before)) == []
        return line

    return check


@pytest.fixture
def desk(world) -> dict[str, str]:
    """A database with alice (release manager), an environment dev, and a run waiting for an
    approval; the admin (whoever runs the tests) has signed once already."""
    env = world.env()
    ok(env, "db", "upgrade")
    ok(env, "user", "add", "alice", "--role", "release-manager")
    ok(env, "env", "add", "dev", "--order", "1")
    document = template(
        "gated",
        [{"id": "gate", "type": "approval", "inputs": {"approvers": ["admin"], "required": 1}}],
        inputs={
            "n": {"type": "integer", "required": False},
            "doc": {"type": "object", "required": False},
        },
    )
    path = world.home / "gated.json"
    path.write_text(json.dumps(document))
    ok(env, "workflow", "import", str(path))
    env["RUN_ID"] = ok(env, "run", "start", "gated")["run_id"]  # type: ignore[index]
    return env


def test_out_of_range_whole_numbers(desk: dict[str, str], unchanged) -> None:
    run_id = desk["RUN_ID"]
    for flag, args, says in [
        ("--order", ("env", "add", "qa", "--order", "99999999999"), "from 0 to 2147483647"),
        ("--order", ("env", "add", "qa", "--order", HUGE), "(5000 digits) is out of range"),
        (
            "--required-approvals",
            ("env", "add", "qa", "--order", "1", "--required-approvals", "-1"),
            "from 0 to 1000",
        ),
        ("--quorum", ("env", "add", "qa", "--order", "2", "--quorum", f"admin={HUGE}"), "digits"),
        ("--order", ("env", "set", "dev", "--order", "-3", "--reason", "r"), "from 0 to"),
        (
            "--required-approvals",
            ("env", "set", "dev", "--required-approvals", HUGE, "--reason", "r"),
            "out of range",
        ),
        ("--limit", ("audit", "list", "--limit", "-5"), "from 1 to 1000000"),
        ("--limit", ("audit", "list", "--limit", str(10**12)), "from 1 to 1000000"),
        ("--limit", ("run", "list", "--limit", "-5"), "from 1 to 1000000"),
        ("--limit", ("promotion", "list", "--limit", str(10**12)), "from 1 to 1000000"),
        ("--limit", ("evidence", "list", "--limit", HUGE), "(5000 digits)"),
        ("--version", ("workflow", "export", "gated", "--version", "99999999999"), "from 1 to"),
        ("--after", ("run", "events", run_id, "--after", HUGE), "out of range"),
        ("--workers", ("serve", "--workers", "0"), "from 1 to 64"),
        ("input 'n'", ("run", "start", "gated", "--input", f"n={HUGE}"), "(5000 digits)"),
    ]:
        assert flag in unchanged(desk, *args, says=says)


def test_timestamps_past_year_9999(desk: dict[str, str], unchanged) -> None:
    start = "2026-01-01T00:00:00Z"
    freeze = ("env", "freeze", "dev", "--reason", "year end")
    exception = ("promotion", "exception", "r1", "--env", "dev", "--reason", "x")
    for args, says in [
        (
            (*freeze, "--start", start, "--end", "10000-01-01T00:00:00Z"),
            "--end '10000-01-01T00:00:00Z' is not an ISO 8601 time with a year from 1 to 9999",
        ),
        ((*freeze, "--start", "10000-01-01T00:00:00Z", "--end", start), "--start"),
        # Within 9999 as written, past it in UTC: PostgreSQL would store it, Python not read it.
        (
            (*freeze, "--start", start, "--end", "9999-12-31T23:59:59-01:00"),
            "outside years 1 to 9999 in UTC",
        ),
        (
            (*freeze, "--start", "0001-01-01T00:00:00+01:00", "--end", start),
            "outside years 1 to 9999 in UTC",
        ),
        (
            (*exception, "--expires", "10000-01-01T00:00:00Z"),
            "--expires",
        ),
        (("evidence", "list", "--since", "9999-12-31T23:00:00-05:00"), "outside years 1 to"),
    ]:
        unchanged(desk, *args, says=says)


def test_run_wait_timeout_must_be_finite_seconds(desk: dict[str, str], unchanged) -> None:
    for value in ["nan", "inf", "-inf", "-1", "1e999", HUGE]:
        line = unchanged(
            desk, "run", "wait", desk["RUN_ID"], f"--timeout={value}", says="--timeout"
        )
        assert "seconds" in line
    # Never driven (nan once meant waiting, and running it here, for ever).
    assert ok(desk, "run", "show", desk["RUN_ID"])["status"] == "pending"  # type: ignore[index]


def test_other_seconds_flags_must_be_finite(desk: dict[str, str], unchanged) -> None:
    for args in [
        ("run", "start", "gated", "--wait", "--timeout", "nan"),
        ("promote", "r1", "--to", "dev", "--timeout", "inf"),
        ("serve", "--lease-seconds", "nan"),
        ("serve", "--checkpoint-every", "-1"),
    ]:
        unchanged(desk, *args, says="seconds")


def test_files_that_never_end_are_not_read_to_their_end(
    desk: dict[str, str], unchanged, tmp_path: Path
) -> None:
    env = desk
    unchanged(env, "workflow", "validate", "/dev/zero", says="more than the 2097152 bytes")
    unchanged(env, "workflow", "import", "/dev/zero", says="more than the 2097152 bytes")
    unchanged(env, "workflow", "import", "-", stdin=b"\0" * 3_000_000, says="standard input")
    unchanged(env, "evidence", "verify", "/dev/zero", says="/dev/zero is not an archive")
    unchanged(env, "evidence", "replay", "/dev/zero", says="/dev/zero is not an archive")
    archive = tmp_path / "dev.tar"
    ok(
        env,
        "evidence",
        "export",
        "--since",
        "2000-01-01T00:00:00Z",
        "--until",
        "2100-01-01T00:00:00Z",
        "--out",
        str(archive),
    )
    unchanged(
        env,
        "evidence",
        "verify",
        str(archive),
        "--trusted-key",
        "/dev/zero",
        says="trusted key /dev/zero is more than",
    )
    unchanged(
        env,
        "evidence",
        "replay",
        str(archive),
        "--policy",
        "/dev/zero",
        says="policy /dev/zero is more than",
    )
    # A password on standard input that has no line end.
    unchanged(
        env,
        "registry",
        "add",
        "hub",
        "--url",
        "https://reg.example",
        "--username",
        "u",
        "--password-stdin",
        stdin=b"\0" * 100_000,
        says="the password on standard input",
    )


def test_deep_and_huge_json(desk: dict[str, str], unchanged, tmp_path: Path) -> None:
    env = desk
    deep = "[" * 5000 + "]" * 5000
    policy = tmp_path / "deep-policy.json"
    policy.write_text('{"environment": "dev", "gates": ' + deep + "}")
    unchanged(
        env,
        "evidence",
        "replay",
        str(uuid.uuid4()),
        "--policy",
        str(policy),
        says="nests more than 64 levels deep",
    )
    policy.write_text('{"environment": "dev", "gates": [], "n": ' + HUGE + "}")
    unchanged(
        env,
        "evidence",
        "replay",
        str(uuid.uuid4()),
        "--policy",
        str(policy),
        says="(5000 digits) is beyond 2**53 - 1",
    )

    good = template("deep", [{"id": "a", "type": "notify", "inputs": {"message": "hi"}}])
    for filler, says in [(deep, "levels deep"), (HUGE, "(5000 digits) is beyond 2**53 - 1")]:
        text = json.dumps(good)[:-1] + ', "description": ' + filler + "}"
        path = tmp_path / "doc.json"
        path.write_text(text)
        unchanged(env, "workflow", "validate", str(path), says=says)
        unchanged(env, "workflow", "import", str(path), says=says)
    # A run's input: stored as JSON, so bounded as a document's values are.
    unchanged(
        env,
        "run",
        "start",
        "gated",
        "--input",
        f'doc={{"a": {deep}}}',
        says="input 'doc' nests more than 64 levels deep",
    )


def test_nul_is_refused_by_validate_as_by_import(
    desk: dict[str, str], unchanged, tmp_path: Path
) -> None:
    env = desk
    for field, value in [("description", "half\0way"), ("name", "gated\0x")]:
        document = template("nul", [{"id": "a", "type": "notify", "inputs": {"message": "m"}}])
        document[field] = value
        path = tmp_path / f"{field}.json"
        path.write_text(json.dumps(document))
        checked = stella(env, "workflow", "validate", str(path), "--output", "json")
        assert checked.returncode == 2
        assert any("NUL" in e["message"] for e in json.loads(checked.stdout)["errors"])
        unchanged(env, "workflow", "validate", str(path), says="contains a NUL character")
        unchanged(env, "workflow", "import", str(path), says="contains a NUL character")
    # In a step's inputs too (what an approval step shows as its message).
    document = template("nul", [{"id": "a", "type": "notify", "inputs": {"message": "a\0b"}}])
    path = tmp_path / "inputs.json"
    path.write_text(json.dumps(document))
    unchanged(env, "workflow", "import", str(path), says="at nodes[0].inputs.message contains")
    # NUL in a password, and bytes that are not UTF-8 in a reason or a comment (a command line
    # cannot hold NUL; Python turns such bytes into lone surrogates no driver can send).
    unchanged(
        env,
        "registry",
        "add",
        "hub",
        "--url",
        "https://reg.example",
        "--username",
        "u",
        "--password-stdin",
        stdin=b"pass\0word\n",
        says="contains a NUL character",
    )
    bad = os.fsdecode(b"year \xff end")
    unchanged(
        env,
        "env",
        "set",
        "dev",
        "--required-approvals",
        "1",
        "--reason",
        bad,
        says="argument --reason: 'year \\udcff end' is not valid UTF-8 text",
    )
    unchanged(
        env,
        "env",
        "freeze",
        "dev",
        "--start",
        "2026-01-01T00:00:00Z",
        "--end",
        "2026-01-02T00:00:00Z",
        "--reason",
        bad,
        says="--reason",
    )
    unchanged(
        env, "run", "approve", env["RUN_ID"], "--step", "gate", "--comment", bad, says="--comment"
    )
    unchanged(env, "release", "show", bad, says="not valid UTF-8 text")


def test_registry_urls(desk: dict[str, str], unchanged, tmp_path: Path) -> None:
    env = desk
    for url, says in [
        ("http://[::1", "registry URL 'http://[::1' is not a URL"),
        ("http://[zz]", "is not a URL"),
        ("file:///nonexistent/layouts", "no directory at /nonexistent/layouts"),
        ("file://build-host/srv/oci", "names host 'build-host'"),
        (f"file://{tmp_path}/a%00b", "contains a NUL character"),
        ("file:", "must be absolute"),
        ("/dev/zero", "no directory at /dev/zero"),
        ("https://reg.example/a b", "must not hold spaces"),
        ("reg.example:", "empty port"),
    ]:
        unchanged(env, "registry", "add", "hub", "--url", url, says=says)
    # A layout directory that exists is a registry (%-escapes decoded).
    spaced = tmp_path / "oci layouts"
    spaced.mkdir()
    added = ok(env, "registry", "add", "air", "--url", spaced.as_uri())
    assert added["url"] == spaced.as_uri()  # type: ignore[index]


def test_export_to_a_directory_leaves_nothing(
    desk: dict[str, str], unchanged, tmp_path: Path
) -> None:
    target = tmp_path / "exports" / "out"
    target.mkdir(parents=True)
    unchanged(
        desk,
        "evidence",
        "export",
        "--since",
        "2000-01-01T00:00:00Z",
        "--until",
        "2100-01-01T00:00:00Z",
        "--out",
        str(target),
        says="is a directory",
    )
    unchanged(desk, "keys", "export", "--out", str(target), says="is a directory")
    assert list(target.parent.iterdir()) == [target]  # no .out.partial beside it
    assert list(target.iterdir()) == []


def test_approver_must_be_a_known_person(world, unchanged) -> None:
    """Refused before anything is made: not even the admin's first signing key."""
    env = world.env()
    ok(env, "db", "upgrade")
    unchanged(
        env,
        "env",
        "add",
        "prod",
        "--order",
        "1",
        "--approver",
        "nobody",
        says="--approver: no such person: nobody",
    )
    ok(env, "env", "add", "dev", "--order", "2")
    unchanged(
        env,
        "env",
        "set",
        "dev",
        "--approver",
        "nobody",
        "--reason",
        "r",
        says="--approver: no such person: nobody",
    )
    unchanged(
        env,
        "env",
        "set",
        "dev",
        "--approver",
        "",
        "--reason",
        "r",
        says="--approver needs a person's name",
    )
