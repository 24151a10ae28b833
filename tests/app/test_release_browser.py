"""The release browser over a seeded database: listing, filtering, digests, copying."""

from __future__ import annotations

import re

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontMetrics, QGuiApplication

from stella_core.demo.seed import RELEASES
from stella_desk.window import MainWindow

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def shown_names(window: MainWindow) -> list[str]:
    proxy = window.releases.proxy
    return [proxy.release_at(row).name for row in range(proxy.rowCount())]


def click_row(qtbot, window: MainWindow, name: str) -> None:
    browser = window.releases
    row = shown_names(window).index(name)
    index = browser.proxy.index(row, 0)
    browser.view.scrollTo(index)
    rect = browser.view.visualRect(index)
    qtbot.mouseClick(browser.view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


def test_browser_lists_the_seeded_releases_newest_first(desk: MainWindow) -> None:
    assert shown_names(desk) == [name for name, _ in reversed(RELEASES)]
    assert desk.releases.count.text() == "3 releases"
    # The dashboard counts the same list (fetched once).
    assert desk.dashboard.release_count.text() == "3"


def test_filtering_by_component_tag_narrows_the_rows(qtbot, desk: MainWindow) -> None:
    browser = desk.releases
    qtbot.keyClicks(browser.filter, "0.9.0")  # worker 0.9.0 is in the first two releases
    assert shown_names(desk) == ["shop-2026.11.2", "shop-2026.11.1"]
    assert browser.count.text() == "2 of 3 releases match"

    browser.filter.setText("1.2.0")
    assert shown_names(desk) == ["shop-2026.11.3"]

    # Words narrow further; digest fragments and creators match too.
    digest = browser.model.release_at(browser.model.row_of("shop-2026.11.1")).components[0].digest
    browser.filter.setText(f"alice {digest[7:19].upper()}")
    assert shown_names(desk) == ["shop-2026.11.1"]

    browser.filter.setText("no-such-thing")
    assert shown_names(desk) == []
    browser.filter.clear()
    assert len(shown_names(desk)) == 3


def test_selecting_a_release_shows_every_full_digest(qtbot, desk: MainWindow) -> None:
    desk.show_page("releases")
    click_row(qtbot, desk, "shop-2026.11.2")
    detail = desk.releases.detail
    release = desk.releases.selected_release()
    assert release is not None
    assert release.name == "shop-2026.11.2"
    assert detail.release == release
    texts = detail.digest_texts()
    assert texts == [c.digest for c in release.components]
    for text, line in zip(texts, detail.lines, strict=True):
        assert len(text) == 71
        assert DIGEST.match(text)
        # What a person sees: the whole digest, not an elided or clipped one.
        needed = QFontMetrics(line.digest.font()).horizontalAdvance(text)
        assert line.digest.width() >= needed
        assert line.digest.isVisible()


def test_copy_digest_puts_the_pinned_reference_on_the_clipboard(qtbot, desk: MainWindow) -> None:
    desk.show_page("releases")
    click_row(qtbot, desk, "shop-2026.11.3")
    web = next(line for line in desk.releases.detail.lines if line.component.name == "web")
    clipboard = QGuiApplication.clipboard()
    clipboard.clear()

    qtbot.mouseClick(web.copy_button, Qt.MouseButton.LeftButton)
    assert clipboard.text() == f"shop/web@{web.component.digest}"
    assert desk.statusBar().currentMessage().startswith("Copied shop/web@sha256:")

    digest_only = web.copy_button.menu().actions()[1]
    digest_only.trigger()
    assert clipboard.text() == web.component.digest
    assert len(clipboard.text()) == 71
