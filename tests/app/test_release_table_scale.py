"""The release list at 100,000 rows: filtering, sorting and selecting, no widget per row.

No wall-clock assertions (DESIGN.md §8); the time is measured by tests/perf.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from uuid import UUID

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QWidget

from stella_core.releases.model import Release, ReleaseComponent
from stella_desk.releases.browser import ReleaseBrowser
from stella_desk.releases.table import Column
from stella_desk.session import Session

ROWS = 100_000
PEOPLE = ["alice", "erin", "frank", "grace", "heidi", "ivan", "judy"]


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def synthetic_releases() -> list[Release]:
    # Components are immutable, so releases share them (as a real estate mostly does).
    web = {
        i: ReleaseComponent(
            name="web", repository="shop/web", tag=f"1.{i}.0", digest=digest_of(f"web{i}")
        )
        for i in range(100)
    }
    api = {
        i: ReleaseComponent(
            name="api", repository="shop/api", tag=f"2.{i}.0", digest=digest_of(f"api{i}")
        )
        for i in range(37)
    }
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        Release(
            id=UUID(int=i + 1),
            name=f"rel-{i:06d}",
            created_at=start + timedelta(minutes=i),
            created_by=PEOPLE[i % len(PEOPLE)],
            components=(web[i % 100], api[i % 37]),
        )
        for i in range(ROWS)
    ]


def test_one_hundred_thousand_releases_filter_sort_and_select(qtbot, ops) -> None:
    releases = synthetic_releases()
    browser = ReleaseBrowser(ops, Session())
    qtbot.addWidget(browser)
    browser.resize(1100, 700)
    browser.show()
    widgets_before = len(browser.findChildren(QWidget))

    browser.model.set_releases(releases)
    assert browser.proxy.rowCount() == ROWS
    assert browser.count.text() == "100,000 releases"
    # Newest first by default.
    assert browser.proxy.release_at(0).name == "rel-099999"

    browser.filter.setText("1.42.0 erin")
    expected = [
        r
        for r in releases
        if any(c.tag == "1.42.0" for c in r.components) and r.created_by == "erin"
    ]
    assert 100 < len(expected) < ROWS
    assert browser.proxy.rowCount() == len(expected)
    assert browser.count.text() == f"{len(expected):,} of 100,000 releases match"

    # Sorting goes through the header like a click would, and keeps the filter.
    browser.view.sortByColumn(Column.NAME, Qt.SortOrder.AscendingOrder)
    shown = [browser.proxy.release_at(i).name for i in range(browser.proxy.rowCount())]
    assert shown == sorted(r.name for r in expected)

    # A digest fragment finds exactly the releases pinning that image.
    browser.filter.setText(digest_of("api5")[7:20])
    assert browser.proxy.rowCount() == len([r for r in releases if r.components[1].tag == "2.5.0"])

    index = browser.proxy.index(3, 0)
    browser.view.setCurrentIndex(index)
    chosen = browser.proxy.release_at(3)
    assert browser.detail.digest_texts() == [c.digest for c in chosen.components]

    browser.filter.clear()
    assert browser.proxy.rowCount() == ROWS
    assert browser.selected_release() == chosen  # the selection survived the filter change
    # The list paints rows from the model; the only new widgets are the detail's few.
    assert len(browser.findChildren(QWidget)) < widgets_before + 40
