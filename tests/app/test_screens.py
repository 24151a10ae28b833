"""Every screen renders to a PNG that is not blank, and the start-up path works end to end."""

from __future__ import annotations

import asyncio
from array import array
from pathlib import Path

from PySide6.QtCore import QPoint, QRect
from PySide6.QtGui import QImage

from stella_desk.chrome import PageHeader
from stella_desk.main import parse_args, run_desk
from stella_desk.placeholder import ComingLater
from stella_desk.screenshots import render_screens
from stella_desk.session import Session
from stella_desk.targets.page import TargetsPage
from stella_desk.window import PAGES, WINDOW_SIZE, MainWindow

from .conftest import next_emission


def distinct_colours(image: QImage, area: QRect | None = None) -> int:
    if area is not None:
        image = image.copy(area)
    image = image.convertToFormat(QImage.Format.Format_RGB32)
    pixels = array("I")
    pixels.frombytes(bytes(image.constBits()))
    return len(set(pixels))


def test_every_screen_renders_a_non_blank_png(desk: MainWindow, run, tmp_path: Path) -> None:
    paths = run(render_screens(desk, tmp_path))
    names = [p.stem for p in paths]
    assert names == [key for key, _ in PAGES] + ["new-release", "enroll-agent"]
    for path in paths:
        image = QImage(str(path))
        assert not image.isNull(), path
        if path.stem not in ("new-release", "enroll-agent"):
            assert image.size() == WINDOW_SIZE
        # Text, badges and borders give hundreds of colours; a blank grab gives a handful.
        assert distinct_colours(image) > 60, path

    # The part a person looks at on the releases screen: the digests below the list.
    releases = QImage(str(tmp_path / "releases.png"))
    detail = desk.releases.detail
    origin = detail.mapTo(desk, QPoint(0, 0))
    assert distinct_colours(releases, QRect(origin, detail.size())) > 30


def test_no_page_is_a_placeholder_any_more(desk: MainWindow) -> None:
    # Targets was the last "Coming in a later version" page (issue 12 built it).
    for key, title in PAGES:
        page = desk.pages[key]
        assert not isinstance(page, ComingLater), key
        header = page.findChild(PageHeader)
        if key == "targets":
            assert isinstance(page, TargetsPage)
            assert header.title.text() == title


def test_start_up_seeds_a_fresh_database_and_closes_the_core_on_exit(
    world,
    monkeypatch,
    request,
    qapp,
    qtbot,
    run,
    ops,
    aloop,
) -> None:
    # The desk's own start-up path (Stella.open in a thread, seed when empty), pointed at the
    # test database the way an external server is configured.
    monkeypatch.setenv("STELLA_HOME", str(world.home))
    monkeypatch.setenv("STELLA_DATABASE_URL", world.admin_url)
    # As main() sets it: closing the window must not quit the application under the loop.
    qapp.setQuitOnLastWindowClosed(False)
    request.addfinalizer(lambda: qapp.setQuitOnLastWindowClosed(True))
    window = MainWindow(ops, Session())
    qtbot.addWidget(window)
    window.show()
    args = parse_args([])

    async def start_use_and_close() -> int:
        # One run of the loop from start to exit, as main() has: qasync steps pending tasks when
        # a run_until_complete ends, and a step taken then would find no running loop.
        desk = asyncio.ensure_future(run_desk(args, window, ops))
        assert window.starting.isVisible()
        assert window.starting.message.text() in (
            "Starting the database…",
            "Preparing the demo data…",
        )
        await next_emission(window.releases.loaded)
        assert window.session.stella is not None
        assert window.releases.model.rowCount() == 3  # seeded on first start
        assert window.session.identity is not None
        assert window.session.identity.role.value == "admin"
        window.close()
        return await desk

    assert run(start_use_and_close()) == 0
    assert window.session.stella is None  # closed by the shutdown path
    assert not window.isVisible()
