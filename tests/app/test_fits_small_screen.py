"""The desk fits a 1280 x 720 screen with eight environments with long names: the window's minimum
size fits, nothing on any page lies outside the window, long names end in an ellipsis and say
themselves in full in a tooltip. Every page is rendered to PNG (under the test's tmp dir)."""

from __future__ import annotations

import asyncio

from PySide6.QtCore import QPoint, QRect, QSize
from PySide6.QtWidgets import QAbstractScrollArea, QApplication, QLabel, QWidget

from stella_desk.screenshots import save
from stella_desk.window import PAGES, MainWindow

SCREEN = QSize(1280, 720)
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


def in_scroll_area(widget: QWidget, window: QWidget) -> bool:
    """Scrolled content may lie outside the window: its scroll area's viewport clips it."""
    parent = widget.parentWidget()
    while parent is not None and parent is not window:
        if isinstance(parent, QAbstractScrollArea):
            return True
        parent = parent.parentWidget()
    return False


def outside(window: MainWindow) -> list[str]:
    """Visible widgets (not scrolled content) that reach past the window's edges."""
    bounds = window.rect()
    found = []
    for widget in window.findChildren(QWidget):
        if not widget.isVisible() or in_scroll_area(widget, window):
            continue
        top_left = widget.mapTo(window, QPoint(0, 0))
        rect = QRect(top_left, widget.size())
        if not bounds.contains(rect):
            found.append(f"{type(widget).__name__} {widget.objectName()!r} at {rect}")
    return found


def test_the_desk_fits_1280_by_720_with_eight_long_environment_names(
    desk: MainWindow, seeded, run, qtbot, tmp_path
) -> None:
    for order, name in enumerate(LONG_NAMES, start=10):
        seeded.environments.add(name, order=order, required_approvals=1)
    # Heard through the change feed: no refresh asked for.
    qtbot.waitUntil(lambda: LONG_NAMES[-1] in desk.dashboard.path_names(), timeout=15_000)

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
        run(desk.ops.idle())
        run(asyncio.sleep(0))
        QApplication.processEvents()
        assert desk.size() == SCREEN, key  # showing a page did not grow the window
        assert outside(desk) == [], key
        save(desk, shots / f"{key}.png")
        assert page.isVisible()

    # Long names: cut with an ellipsis, said in full by the tooltip.
    for name in LONG_NAMES:
        column = desk.promotions.columns[name]
        title: QLabel = column.title
        assert title.toolTip() == name or name in title.toolTip()
    desk.show_page("dashboard")
    QApplication.processEvents()
    stages = desk.dashboard.path_labels()
    cut = [lbl for lbl in stages if lbl.full_text in LONG_NAMES and lbl.elided]
    assert cut, "no long name was shortened on the dashboard"
    for lbl in cut:
        assert lbl.shown_text().endswith("…")
        assert lbl.toolTip() == lbl.full_text
