"""The desk fits a 1280 x 720 screen with eight environments with long names: the window's minimum
size fits, nothing on any page lies outside the window, long names end in an ellipsis and say
themselves in full in a tooltip. Every page is rendered to PNG (under the test's tmp dir)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from PySide6.QtCore import QPoint, QRect, QSize
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QApplication, QVBoxLayout, QWidget

from stella_core.releases.model import ComponentPin
from stella_desk.promotions.decide import DecisionBar
from stella_desk.screenshots import save
from stella_desk.window import PAGES, MainWindow
from tests.app.scaled_desk import outside

SCREEN = QSize(1280, 720)
LONG_RELEASE = "payments-platform-quarterly-2026.12-hotfix-candidate-7"
LONG_NAMES = [
    f"{region}-customer-facing-production-cluster-{n}"
    for n, region in enumerate(
        [
            "europe-west",
            "europe-north",
            "us-east",
            "us-west",
            "asia-south",
            "asia-east",
            "south-america",
            "australia-southeast",
        ],
        start=1,
    )
]


def test_the_desk_fits_1280_by_720_with_eight_long_environment_names(
    desk: MainWindow, seeded, run, qtbot, tmp_path
) -> None:
    for order, name in enumerate(LONG_NAMES, start=10):
        seeded.environments.add(
            name, order=order, required_approvals=1, approver_roles=["admin", "approver"]
        )
    alice = seeded.as_person("alice")
    alice.releases.create_release(LONG_RELEASE, [ComponentPin(component="web", tag="1.2.0")])
    for name in LONG_NAMES[:2]:
        alice.promotions.request(LONG_RELEASE, name, "a long way from home")
    # Heard through the change feed: no refresh asked for.
    qtbot.waitUntil(lambda: LONG_NAMES[-1] in desk.dashboard.path_names(), timeout=15_000)
    qtbot.waitUntil(lambda: desk.releases.model.row_of(LONG_RELEASE) is not None, timeout=15_000)

    desk.resize(SCREEN)
    QApplication.processEvents()
    hint = desk.minimumSizeHint().expandedTo(desk.minimumSize())
    assert hint.width() <= SCREEN.width(), hint
    assert hint.height() <= SCREEN.height(), hint
    assert desk.size() == SCREEN

    shots = tmp_path / "screens"
    shots.mkdir()
    for key, _title in PAGES:
        page = desk.show_page(key)
        if key == "promotions":
            qtbot.waitUntil(lambda: LONG_NAMES[-1] in desk.promotions.columns, timeout=15_000)
        if key == "releases":
            desk.releases.select_release(LONG_RELEASE)
        run(desk.ops.idle())
        run(asyncio.sleep(0))
        QApplication.processEvents()
        assert desk.size() == SCREEN, key  # showing a page did not grow the window
        assert outside(desk) == [], key
        if key == "releases":
            # A long name gives way; the full digests never need a sideways scroll.
            assert not desk.releases.detail._scroll.horizontalScrollBar().isVisible()
            assert desk.releases.detail.digest_texts()[0].startswith("sha256:")
        save(desk, shots / f"{key}.png")
        assert page.isVisible()

    # Long names: cut with an ellipsis, said in full by the tooltip; the board scrolls to them.
    desk.show_page("promotions")
    bar = desk.promotions.board_scroll.horizontalScrollBar()
    assert bar.maximum() > 0
    bar.setValue(bar.maximum() // 3)
    QApplication.processEvents()
    save(desk, shots / "promotions-scrolled.png")
    for name in LONG_NAMES:
        title = desk.promotions.columns[name].title
        assert title.shown_text().endswith("…")
        assert title.toolTip() == name
    desk.show_page("dashboard")
    QApplication.processEvents()
    stages = desk.dashboard.path_labels()
    cut = [lbl for lbl in stages if lbl.full_text in LONG_NAMES and lbl.elided]
    assert cut, "no long name was shortened on the dashboard"
    for lbl in cut:
        assert lbl.shown_text().endswith("…")
        assert lbl.toolTip() == lbl.full_text


SCREEN_CONFIG = {
    "synchronousWindowSystem": True,
    "windowFrameMargins": False,
    "screens": [
        {
            "name": "virtual",
            "x": 0,
            "y": 0,
            "width": 2560,
            "height": 1440,
            "logicalDpi": 96,
            "logicalBaseDpi": 96,
            "dpr": 1,
        }
    ],
}


def test_at_twice_the_scale_a_2560_by_1440_screen_holds_every_page(seeded, world, tmp_path):
    for order, name in enumerate(LONG_NAMES, start=10):
        seeded.environments.add(name, order=order, required_approvals=1)
    config = tmp_path / "screen.json"
    config.write_text(json.dumps(SCREEN_CONFIG))
    env = world.env()
    env["QT_QPA_PLATFORM"] = f"offscreen:configfile={config}"
    env["QT_SCALE_FACTOR"] = "2"
    shots = tmp_path / "scaled"
    result = subprocess.run(
        [sys.executable, "-m", "tests.app.scaled_desk", str(shots)],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["scale"] == 2
    width, height = report["screen"]
    assert (width, height) == (1280, 720)  # 2560x1440 pixels, in the desk's own units
    x, y, w, h = report["window"]
    assert QRect(0, 0, width, height).contains(QRect(x, y, w, h)), report["window"]
    for key, page in report["pages"].items():
        min_w, min_h = page["minimum"]
        assert QSize(min_w, min_h).boundedTo(QSize(width, height)) == QSize(min_w, min_h), page
        assert page["outside"] == [], key
        picture = QImage(str(shots / f"{key}.png"))
        assert (picture.width(), picture.height()) == (2560, 1440), key


def window_position(widget: QWidget) -> QPoint:
    return widget.mapTo(widget.window(), QPoint(0, 0))


def test_an_error_never_moves_a_button_under_the_pointer(desk: MainWindow, ops, qtbot) -> None:
    # The window's banner floats over the page: the page's buttons stay put.
    desk.show_page("releases")
    QApplication.processEvents()
    button = desk.releases.new_button
    before = window_position(button)
    desk.banner.show_message(
        "Loading releases", "Database problem: " + "the server went away. " * 6
    )
    QApplication.processEvents()
    assert desk.banner.isVisible()
    assert window_position(button) == before
    assert desk.rect().contains(QRect(window_position(desk.banner), desk.banner.size()))

    # A refusal shown next to the Approve button (as on the Approvals page: the bar sits under
    # a stretching case view) takes a line kept free for it.
    host = QWidget()
    qtbot.addWidget(host)
    column = QVBoxLayout(host)
    column.addStretch(1)
    bar = DecisionBar(ops, desk.session)
    column.addWidget(bar)
    host.resize(900, 400)
    host.show()
    QApplication.processEvents()
    approve, reject = window_position(bar.approve_button), window_position(bar.reject_button)
    bar.show_refusal("Refused: you requested this promotion (separation of duties)")
    QApplication.processEvents()
    assert bar.refusal()
    assert window_position(bar.approve_button) == approve
    assert window_position(bar.reject_button) == reject
