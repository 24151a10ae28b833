"""Pages hear what other processes change (LISTEN/NOTIFY through the change feed), with no click
and no poll: a release made with the CLI by another person, an environment added by the admin's
CLI, a promotion requested from another machine."""

from __future__ import annotations

import subprocess
import sys

from stella_desk.ops import Change, OpChanges

NEW_RELEASE = "shop-2026.12.1"


def cli(world, *args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stella_core.cli.main", *args],
        env=world.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_releases_and_dashboard_show_what_the_cli_made_without_a_click(desk, world, qtbot) -> None:
    qtbot.waitUntil(lambda: desk.session.live, timeout=10_000)
    assert desk.dashboard.release_count.text() == "3"
    heard: list[OpChanges] = []
    desk.ops.changed.connect(heard.append)
    desk.show_page("dashboard")

    # Alice, in her own terminal, as her own person.
    cli(world, "--profile", "alice", "release", "create", NEW_RELEASE, "--component", "web=1.2.0")

    qtbot.waitUntil(lambda: desk.releases.model.row_of(NEW_RELEASE) is not None, timeout=10_000)
    qtbot.waitUntil(lambda: desk.dashboard.release_count.text() == "4", timeout=10_000)
    assert NEW_RELEASE in desk.dashboard.latest.text()
    assert desk.releases.count.text() == "4 releases"
    # Announced as a change to releases, by the feed (not by an operation of this desk).
    assert any(c.initiator is desk.feed and c.touches(Change.RELEASES) for c in heard)

    cli(world, "env", "add", "qa", "--order", "5")
    qtbot.waitUntil(lambda: "qa" in desk.dashboard.path_names(), timeout=10_000)


def test_the_board_and_the_inbox_follow_a_request_made_elsewhere(desk, world, qtbot) -> None:
    qtbot.waitUntil(lambda: desk.session.live, timeout=10_000)
    page = desk.show_page("promotions")
    qtbot.waitUntil(lambda: "stage" in page.columns, timeout=10_000)
    qtbot.waitUntil(lambda: not desk.ops.busy, timeout=10_000)
    assert not page._timer.isActive()  # nothing blocked: no poll, changes come by themselves

    alice = world.open("alice")
    promotion = alice.promotions.request("shop-2026.11.3", "stage", "from another machine")
    qtbot.waitUntil(lambda: page.card(promotion.id) is not None, timeout=10_000)

    desk.show_page("approvals")
    alice.promotions.cancel(promotion.id, "changed my mind")
    qtbot.waitUntil(lambda: page.card(promotion.id) is None or not page.isVisible(), timeout=10_000)
    desk.show_page("promotions")
    qtbot.waitUntil(lambda: page.card(promotion.id) is None, timeout=10_000)


def test_a_dropped_feed_comes_back_and_says_everything_may_have_changed(
    desk, seeded, superuser, qtbot
) -> None:
    qtbot.waitUntil(lambda: desk.session.live, timeout=10_000)
    heard: list[OpChanges] = []
    desk.ops.changed.connect(heard.append)
    states: list[bool] = []
    desk.feed.live_changed.connect(states.append)

    # The database ends the desk's listening connection (a restart, a network cut).
    ended = superuser.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'stella-listen'"
    ).fetchall()
    assert ended == [(True,)]
    qtbot.waitUntil(lambda: states[-2:] == [False, True], timeout=15_000)
    assert desk.session.live
    # What happened while it was deaf was not heard: every page reads again.
    qtbot.waitUntil(
        lambda: any(
            c.initiator is desk.feed and c.touches(Change.RELEASES) and c.touches(Change.RUNS)
            for c in heard
        ),
        timeout=10_000,
    )
    seeded.environments.add("qa", order=5)  # and it hears again
    qtbot.waitUntil(lambda: "qa" in desk.dashboard.path_names(), timeout=10_000)


def test_runs_and_evidence_follow_what_another_process_did(desk, world, seeded, qtbot) -> None:
    qtbot.waitUntil(lambda: desk.session.live, timeout=10_000)
    runs = desk.show_page("runs")
    qtbot.waitUntil(lambda: not desk.ops.busy, timeout=10_000)

    alice = world.open("alice")
    started = alice.workflows.start_run(
        "deliver", release="shop-2026.11.3", inputs={"environment": "dev"}
    )
    qtbot.waitUntil(lambda: runs.model.row_of(started.id) is not None, timeout=10_000)
    assert not runs._list_timer.isActive()  # heard, not polled

    evidence = desk.show_page("evidence")
    qtbot.waitUntil(lambda: not desk.ops.busy, timeout=10_000)
    assert not any(p.environment == "qa" for p in evidence.model.packets())
    seeded.environments.add("qa", order=5)  # signed as a policy packet in the ledger
    qtbot.waitUntil(
        lambda: any(p.environment == "qa" for p in evidence.model.packets()), timeout=10_000
    )
