"""Change notices: what another process writes is heard on the tenant's channels, and only there."""

from __future__ import annotations

import subprocess
import sys
import time

from psycopg import sql

from stella_core.db.changes import Topic, channel
from stella_core.profiles import Profile
from stella_core.releases.layout import OciLayoutWriter
from stella_core.releases.model import ComponentPin
from stella_core.tenancy.service import Provisioner, person_role_name


def heard_within(listener, wanted: Topic, seconds: float = 15.0) -> set[Topic]:
    """Every topic heard until `wanted` is (or the time is up)."""
    heard: set[Topic] = set()
    deadline = time.monotonic() + seconds
    while wanted not in heard and time.monotonic() < deadline:
        heard |= listener.wait(deadline - time.monotonic())
    return heard


def test_a_change_made_by_the_cli_is_heard_by_topic(world) -> None:
    stella = world.open()
    listener = stella.listen_changes()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "stella_core.cli.main", "env", "add", "qa", "--order", "4"],
            env=world.env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert Topic.ENVIRONMENTS in heard_within(listener, Topic.ENVIRONMENTS)
        assert Topic.RELEASES not in listener.wait(0.3)

        layout = stella.home / "layout"
        OciLayoutWriter(layout).write_image("team/web", "1.0", files={"a.txt": b"hi"})
        stella.releases.add_registry("local", str(layout))
        stella.releases.add_component("web", "local/team/web")
        stella.releases.create_release("r1", [ComponentPin(component="web", tag="1.0")])
        assert Topic.RELEASES in heard_within(listener, Topic.RELEASES)
    finally:
        listener.close()


def test_another_tenant_hears_nothing_and_a_notice_carries_nothing(world, superuser) -> None:
    stella = world.open()
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
    other = world.open("zed")
    theirs = other.listen_changes()
    # Anyone may LISTEN on any channel: what would an eavesdropper on ours learn?
    superuser.execute(
        sql.SQL("LISTEN {}").format(
            sql.Identifier(channel(Topic.ENVIRONMENTS, stella.profile.tenant))
        )
    )
    try:
        stella.environments.add("dev", order=0)
        notices = list(superuser.notifies(timeout=10, stop_after=1))
        assert [n.payload for n in notices] == [""]  # no name, no id
        assert theirs.wait(0.5) == set()
        other.environments.add("dev", order=0)  # their own change they do hear
        assert Topic.ENVIRONMENTS in heard_within(theirs, Topic.ENVIRONMENTS)
    finally:
        theirs.close()
