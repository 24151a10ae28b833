"""Targets against real PostgreSQL: added, listed and removed through the command line; their
connection material checked when added (a key that loads, a known_hosts that pins the host, an
https WinRM URL); their secrets sealed, never shown, opened by the orchestrator alone; and raw
SQL as a release manager, an approver or an auditor cannot add, change or remove one, nor read
another tenant's."""

from __future__ import annotations

import subprocess
from pathlib import Path
from uuid import UUID

import psycopg
import pytest

from stella_core.deploy.transports import host_for
from stella_core.environments.model import TargetType
from stella_core.errors import AuthorizationError, IntegrityError
from stella_core.tenancy.model import ProductRole
from tests.integration.test_bad_input_cli import _stored as stored_state
from tests.integration.test_cli import ok_json, stella
from tests.integration.test_promotions import role_conn
from tests.support.sshd import start_sshd

FIELDS = {
    "name",
    "environment",
    "type",
    "labels",
    "group",
    "runtime",
    "directory",
    "agent",
    "host",
    "port",
    "user",
    "url",
    "has_secret",
}
PASSWORD = "Winrm-pa55word-7f3c9e-never-shown"


class Site:
    """A tenant with an admin (the world's first profile), alice (release manager), bob
    (approver), dave (auditor) and environments dev and prod; an SSH key and known_hosts."""

    def __init__(self, world, tmp: Path) -> None:
        self.world = world
        self.env = world.env()
        self.admin = world.open()
        for name, role in (
            ("alice", ProductRole.RELEASE_MANAGER),
            ("bob", ProductRole.APPROVER),
            ("dave", ProductRole.AUDITOR),
        ):
            self.admin.add_person(name, role)
        self.admin.environments.add("dev", order=0)
        self.admin.environments.add("prod", order=1)
        self.tmp = tmp
        self.key_file = tmp / "deploy_key"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key_file)], check=True
        )
        self.key_text = self.key_file.read_text()
        # The key's distinctive body: a line of it must never be shown anywhere.
        self.key_body = self.key_text.splitlines()[2]
        host_key = tmp / "host_key"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True
        )
        kind, body = (tmp / "host_key.pub").read_text().split()[:2]
        self.known_hosts = tmp / "known_hosts"
        self.known_hosts.write_text(f"# pinned\n[10.0.0.5]:2222 {kind} {body}\n")
        self.known_hosts_22 = tmp / "known_hosts_22"
        self.known_hosts_22.write_text(f"10.0.0.5 {kind} {body}\n")

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return stella(self.env, *args, stdin=stdin)

    def add_ssh(self, name: str = "web-1", *extra: str) -> subprocess.CompletedProcess[str]:
        return self.cli(
            "target",
            "add",
            name,
            "--env",
            "dev",
            "--type",
            "ssh",
            "--host",
            "10.0.0.5",
            "--port",
            "2222",
            "--user",
            "deploy",
            "--key-file",
            str(self.key_file),
            "--known-hosts",
            str(self.known_hosts),
            "--output",
            "json",
            *extra,
        )


@pytest.fixture
def site(world, tmp_path: Path) -> Site:
    return Site(world, tmp_path)


def no_secret_in(site: Site, *texts: str) -> None:
    for text in texts:
        assert site.key_body not in text
        assert PASSWORD not in text


# ------------------------------------------------------------------------------ the contract
def test_targets_are_added_listed_and_removed_without_ever_showing_a_secret(site: Site) -> None:
    shown: list[str] = []
    ssh = site.add_ssh("web-1", "--label", "zone=a", "--label", "tier=web", "--group", "blue")
    assert ssh.returncode == 0, ssh.stderr
    shown += [ssh.stdout, ssh.stderr]
    agent = site.cli(
        "target",
        "add",
        "edge",
        "--env",
        "prod",
        "--type",
        "agent",
        "--agent",
        "edge-1",
        "--runtime",
        "docker compose",
        "--dir",
        "/srv/shop",
        "--output",
        "json",
    )
    assert agent.returncode == 0, agent.stderr
    win = site.cli(
        "target",
        "add",
        "win-1",
        "--env",
        "prod",
        "--type",
        "winrm",
        "--url",
        "https://win.example.test:5986/wsman",
        "--user",
        "Administrator",
        "--password-stdin",
        "--output",
        "json",
        stdin=PASSWORD + "\n",
    )
    assert win.returncode == 0, win.stderr
    shown += [agent.stdout, agent.stderr, win.stdout, win.stderr]

    listed = ok_json(site.env, "target", "list", "--output", "json")
    # Ordered by environment, then name.
    assert [t["name"] for t in listed] == ["web-1", "edge", "win-1"]
    # Agent targets also say whether their agent's machine lacks the runtime (not known yet).
    assert all(set(t) == FIELDS | ({"runtime_problem"} if t["agent"] else set()) for t in listed)
    by_name = {t["name"]: t for t in listed}
    assert by_name["web-1"] == {
        "name": "web-1",
        "environment": "dev",
        "type": "ssh",
        "labels": {"zone": "a", "tier": "web"},
        "group": "blue",
        "runtime": "podman-compose",
        "directory": "stella/web-1",
        "agent": None,
        "host": "10.0.0.5",
        "port": 2222,
        "user": "deploy",
        "url": None,
        "has_secret": True,
    }
    assert by_name["edge"] == {
        "name": "edge",
        "environment": "prod",
        "type": "agent",
        "labels": {},
        "group": None,
        "runtime": "docker compose",
        "directory": "/srv/shop",
        "agent": "edge-1",
        "host": None,
        "port": None,
        "user": None,
        "url": None,
        "has_secret": False,
        "runtime_problem": None,  # edge-1 has not linked: nothing known to be missing
    }
    assert by_name["win-1"]["url"] == "https://win.example.test:5986/wsman"
    assert by_name["win-1"]["has_secret"] is True
    assert [
        t["name"] for t in ok_json(site.env, "target", "list", "--env", "dev", "-o", "json")
    ] == ["web-1"]
    text = site.cli("target", "list")
    assert text.returncode == 0
    assert "ssh deploy@10.0.0.5:2222" in text.stdout
    audit = site.cli("audit", "list", "--output", "json")
    assert audit.returncode == 0, audit.stderr
    assert '"target.add"' in audit.stdout
    shown += [text.stdout, audit.stdout, audit.stderr]
    no_secret_in(site, *shown)

    # Sealed at rest: the database holds neither the key nor the password.
    with psycopg.connect(
        site.world.admin_url.replace("postgresql+psycopg://", "postgresql://")
    ) as su:
        rows = su.execute("SELECT secret_ciphertext FROM env.targets").fetchall()
        stored = b"".join(bytes(r[0]) for r in rows if r[0] is not None)
    assert site.key_body.encode() not in stored
    assert PASSWORD.encode() not in stored

    duplicate = site.add_ssh("web-1")
    assert duplicate.returncode == 2
    assert "exists already" in duplicate.stderr
    removed = ok_json(site.env, "target", "remove", "web-1", "--output", "json")
    assert removed["name"] == "web-1"
    assert {t["name"] for t in ok_json(site.env, "target", "list", "-o", "json")} == {
        "edge",
        "win-1",
    }
    gone = site.cli("target", "remove", "web-1")
    assert gone.returncode == 2
    assert "no target named 'web-1'" in gone.stderr


def test_the_orchestrator_alone_opens_a_targets_secret(site: Site) -> None:
    site.admin.environments.add_target(
        "web-1",
        environment="dev",
        type=TargetType.SSH,
        host="10.0.0.5",
        port=2222,
        user="deploy",
        private_key=site.key_text,
        known_hosts=site.known_hosts.read_text(),
    )
    site.admin.environments.add_target(
        "win-1",
        environment="prod",
        type="winrm",
        url="https://win.example.test/wsman",
        user="Administrator",
        password=PASSWORD,
    )
    orchestrator = site.admin.orchestrator.environments
    target, secret = orchestrator.target_connection("web-1")
    assert secret == site.key_text
    assert target.known_hosts == site.known_hosts.read_text()
    assert orchestrator.target_connection("win-1")[1] == PASSWORD
    no_secret_in(site, repr(target), str(target.to_json()))
    # People's services refuse, and their logins cannot read even the sealed bytes.
    with pytest.raises(AuthorizationError):
        site.admin.environments.target_connection("web-1")
    for person in ("admin", "alice"):
        conn = person_conn(site, person)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT secret_ciphertext FROM env.targets").fetchall()
        conn.close()


def test_a_sealed_secret_moved_to_another_target_does_not_open(site: Site, superuser) -> None:
    for name in ("web-1", "web-2"):
        site.admin.environments.add_target(
            name,
            environment="dev",
            type="ssh",
            host="10.0.0.5",
            port=2222,
            user="deploy",
            private_key=site.key_text,
            known_hosts=site.known_hosts.read_text(),
        )
    superuser.execute(
        "UPDATE env.targets SET secret_ciphertext ="
        " (SELECT secret_ciphertext FROM env.targets WHERE name = 'web-1') WHERE name = 'web-2'"
    )
    with pytest.raises(IntegrityError):
        site.admin.orchestrator.environments.target_connection("web-2")


# -------------------------------------------------------------------------------- bad input
def test_bad_connection_material_is_refused_and_nothing_is_stored(site: Site, superuser) -> None:
    public = site.tmp / "deploy_key.pub"
    locked = site.tmp / "locked_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "a passphrase", "-f", str(locked)], check=True
    )
    garbage = site.tmp / "garbage"
    garbage.write_text("this is not a known_hosts line\n")

    def ssh(*swap: tuple[str, str]) -> subprocess.CompletedProcess[str]:
        flags = {
            "--host": "10.0.0.5",
            "--port": "2222",
            "--user": "deploy",
            "--key-file": str(site.key_file),
            "--known-hosts": str(site.known_hosts),
        }
        flags.update(dict(swap))
        words = [w for pair in flags.items() for w in pair if pair[1] != ""]
        return site.cli("target", "add", "t", "--env", "dev", "--type", "ssh", *words)

    before = stored_state(superuser, site.world.home)
    cases = {
        "public key": (ssh(("--key-file", str(public))), "holds no private key"),
        "passphrase": (ssh(("--key-file", str(locked))), "protected by a passphrase"),
        "missing key file": (ssh(("--key-file", str(site.tmp / "nope"))), "cannot read"),
        "garbage known_hosts": (
            ssh(("--known-hosts", str(garbage))),
            "known_hosts line 1 is not a host key line",
        ),
        "port 22 entry for port 2222": (
            ssh(("--known-hosts", str(site.known_hosts_22))),
            "has no key for [10.0.0.5]:2222",
        ),
        "port 22 fine with port 22 entry but wrong host": (
            ssh(
                ("--known-hosts", str(site.known_hosts_22)),
                ("--host", "10.0.0.6"),
                ("--port", "22"),
            ),
            "has no key for 10.0.0.6",
        ),
        "bad host": (ssh(("--host", "a host; rm -rf /")), "not a host name"),
        "bad port": (ssh(("--port", "70000")), "--port"),
        "no user": (ssh(("--user", "")), "needs --user"),
        "ssh with url": (ssh(("--url", "https://x/wsman")), "takes no --url"),
        "unknown environment": (
            site.cli("target", "add", "t", "--env", "qa", "--type", "agent", "--agent", "edge-1"),
            "no environment named 'qa'",
        ),
        "agent with host": (
            site.cli(
                "target",
                "add",
                "t",
                "--env",
                "dev",
                "--type",
                "agent",
                "--agent",
                "a",
                "--host",
                "10.0.0.5",
            ),
            "takes no --host",
        ),
        "agent with password": (
            site.cli(
                "target",
                "add",
                "t",
                "--env",
                "dev",
                "--type",
                "agent",
                "--agent",
                "a",
                "--password-stdin",
            ),
            "takes no --password-stdin",
        ),
        "agent without agent": (
            site.cli("target", "add", "t", "--env", "dev", "--type", "agent"),
            "needs --agent",
        ),
        "winrm with key file": (
            site.cli(
                "target",
                "add",
                "t",
                "--env",
                "dev",
                "--type",
                "winrm",
                "--url",
                "https://w/wsman",
                "--user",
                "u",
                "--password-stdin",
                "--key-file",
                str(site.key_file),
            ),
            "takes no --key-file",
        ),
        "winrm over http": (
            site.cli(
                "target",
                "add",
                "t",
                "--env",
                "dev",
                "--type",
                "winrm",
                "--url",
                "http://w:5985/wsman",
                "--user",
                "u",
                "--password-stdin",
                stdin=PASSWORD + "\n",
            ),
            "plain http",
        ),
        "basic over http": (
            site.cli(
                "target",
                "add",
                "t",
                "--env",
                "dev",
                "--type",
                "winrm",
                "--url",
                "http://w:5985/wsman",
                "--user",
                "u",
                "--password-stdin",
                "--insecure-http",
                "--auth",
                "basic",
                stdin=PASSWORD + "\n",
            ),
            "over https only",
        ),
        "bad label": (site.add_ssh("t", "--label", "novalue"), "--label needs NAME=VALUE"),
        "bad name": (site.add_ssh("Bad Name"), "invalid target name"),
        "bad runtime": (site.add_ssh("t", "--runtime", "podman 'compose"), "--runtime"),
    }
    for case, (result, words) in cases.items():
        assert result.returncode == 2, (case, result.stderr)
        assert words in result.stderr, (case, result.stderr)
        assert result.stderr.count("\n") == 1, (case, result.stderr)
        no_secret_in(site, result.stdout, result.stderr)
    # Not a row in any table, not a file in the home: as before.
    assert stored_state(superuser, site.world.home) == before
    assert ok_json(site.env, "target", "list", "--output", "json") == []


def test_plain_http_winrm_is_allowed_only_when_asked_and_warned(site: Site) -> None:
    result = site.cli(
        "target",
        "add",
        "w",
        "--env",
        "dev",
        "--type",
        "winrm",
        "--url",
        "http://w.example.test:5985/wsman",
        "--user",
        "u",
        "--password-stdin",
        "--insecure-http",
        "--output",
        "json",
        stdin=PASSWORD + "\n",
    )
    assert result.returncode == 0, result.stderr
    assert "warning" in result.stderr
    assert "plain http" in result.stderr
    no_secret_in(site, result.stdout, result.stderr)


# ---------------------------------------------------------------------------------- insiders
def admin_conn(site: Site) -> psycopg.Connection:
    from sqlalchemy.engine import make_url

    from stella_core.profiles import ProfileStore

    profile = ProfileStore(site.world.home).get(site.admin.backend.target, None)
    url = site.world.admin_url.replace("postgresql+psycopg://", "postgresql://")
    parsed = make_url(url).set(username=profile.user, password=profile.password)
    conn = psycopg.connect(parsed.render_as_string(hide_password=False), autocommit=False)
    conn.execute("SELECT set_config('app.tenant_id', %s, false)", (profile.tenant_id,))
    conn.commit()
    return conn


def person_conn(site: Site, name: str) -> psycopg.Connection:
    """A raw connection as a person's own login, their tenant set for the whole session (a
    rollback of a refused statement keeps it)."""
    if name == "admin":
        return admin_conn(site)
    conn = role_conn(site.world, name)
    conn.commit()
    return conn


def test_only_admins_add_or_remove_targets_even_with_raw_sql(site: Site, superuser) -> None:
    site.admin.environments.add_target("edge", environment="prod", type="agent", agent="edge-1")
    alice = site.world.open("alice")
    with pytest.raises(AuthorizationError, match="this needs admin"):
        alice.environments.add_target("mine", environment="prod", type="agent", agent="edge-1")
    with pytest.raises(AuthorizationError):
        alice.environments.remove_target("edge")
    refused = site.cli(
        "--profile",
        "alice",
        "target",
        "add",
        "mine",
        "--env",
        "prod",
        "--type",
        "agent",
        "--agent",
        "edge-1",
    )
    assert refused.returncode == 1
    assert "this needs admin" in refused.stderr

    for person in ("alice", "bob", "dave"):
        conn = person_conn(site, person)
        tenant = conn.execute("SELECT current_setting('app.tenant_id')").fetchone()[0]
        # They see the tenant's targets (the desk lists them) ...
        assert conn.execute("SELECT name FROM env.targets").fetchall() == [("edge",)]
        # ... but cannot add one (row-level security: admins only) ...
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                "INSERT INTO env.targets (tenant_id, name, environment, type, agent, directory)"
                " VALUES (%s, 'sneaky', 'prod', 'agent', 'evil-agent', 'stella/sneaky')",
                (tenant,),
            )
        conn.rollback()
        # ... nor change one (no UPDATE privilege at all) ...
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE env.targets SET agent = 'evil-agent' WHERE name = 'edge'")
        conn.rollback()
        # ... nor remove one (the delete matches no row they may delete).
        gone = conn.execute("DELETE FROM env.targets WHERE name = 'edge'")
        assert gone.rowcount == 0
        conn.commit()
        conn.close()
    assert site.admin.environments.target("edge").agent == "edge-1"

    # The admin may (raw SQL included) only inside their own tenant, and only with a type's
    # own fields: an SSH target without a pinned host key is refused by the database too.
    admin = admin_conn(site)
    tenant = admin.execute("SELECT current_setting('app.tenant_id')").fetchone()[0]
    with pytest.raises(psycopg.errors.CheckViolation):
        admin.execute(
            "INSERT INTO env.targets (tenant_id, name, environment, type, host, port, username,"
            " directory, secret_ciphertext) VALUES (%s, 'nokeys', 'prod', 'ssh', 'h', 22, 'u',"
            " 'd', '\\x00')",
            (tenant,),
        )
    admin.rollback()
    with pytest.raises(psycopg.errors.CheckViolation):
        admin.execute(
            "INSERT INTO env.targets (tenant_id, name, environment, type, agent, directory,"
            " labels) VALUES (%s, 'odd', 'prod', 'agent', 'a', 'd', '{\"zone\": 1}')",
            (tenant,),
        )
    admin.rollback()

    # Another tenant's targets are invisible, and none can be added there.
    other = superuser.execute(
        "INSERT INTO tenancy.tenants (name) VALUES ('other') RETURNING id"
    ).fetchone()[0]
    # Planted behind the product's back: no triggers (the other tenant has no admin here).
    superuser.execute("SET session_replication_role = replica")
    superuser.execute(
        "INSERT INTO env.targets (tenant_id, name, environment, type, agent, directory)"
        " VALUES (%s, 'theirs', 'prod', 'agent', 'their-agent', 'stella/theirs')",
        (other,),
    )
    for conn in (admin, person_conn(site, "dave")):
        assert "theirs" not in {r[0] for r in conn.execute("SELECT name FROM env.targets")}
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO env.targets (tenant_id, name, environment, type, agent, directory)"
                " VALUES (%s, 'planted', 'prod', 'agent', 'a', 'd')",
                (UUID(str(other)),),
            )
        conn.rollback()
        conn.close()


# ------------------------------------------------------------------------- reaching a target
def test_an_ssh_target_added_by_an_admin_is_reached_by_the_orchestrator(
    site: Site, tmp_path: Path
) -> None:
    """The integrator's path: the orchestrator opens the target's secret and gets a ready host
    for it (`host_for`), here against the real sshd."""
    sshd = start_sshd(tmp_path / "sshd")
    try:
        known = tmp_path / "sshd_known_hosts"
        known.write_text(sshd.known_hosts)
        deploy_dir = tmp_path / "deploy"
        added = site.cli(
            "target", "add", "web-1", "--env", "dev", "--type", "ssh",
            "--host", sshd.host, "--port", str(sshd.port), "--user", sshd.user,
            "--key-file", str(sshd.directory / "client_key"), "--known-hosts", str(known),
            "--dir", str(deploy_dir), "--output", "json",
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        target, secret = site.admin.orchestrator.environments.target_connection("web-1")
        host = host_for(target, secret)
        try:
            assert host.description == f"ssh {sshd.user}@127.0.0.1:{sshd.port}"
            host.write_file(f"{target.directory}/stella.version.json", b'{"ok": true}')
            assert (deploy_dir / "stella.version.json").read_bytes() == b'{"ok": true}'
            assert host.run(["id", "-un"]).stdout.strip() == sshd.user
        finally:
            host.close()
    finally:
        sshd.stop()
