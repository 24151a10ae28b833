"""`--screenshot DIR`: every main screen rendered to `DIR/<screen>.png` after its data loaded."""

from __future__ import annotations

import asyncio
from pathlib import Path

from PySide6.QtWidgets import QWidget

from stella_desk.window import PAGES, WINDOW_SIZE, MainWindow


def save(widget: QWidget, path: Path) -> Path:
    if not widget.grab().save(str(path)):
        raise OSError(f"could not write {path}")
    return path


async def render_screens(window: MainWindow, out_dir: Path) -> list[Path]:
    """Call after `window.attach(...)` returned: by then every page has its data."""
    out_dir.mkdir(parents=True, exist_ok=True)
    window.resize(WINDOW_SIZE)
    window.show()
    browser = window.releases
    if browser.model.rowCount():
        # A selected release, so the picture shows digests rather than a hint.
        browser.select_release(browser.model.release_at(0).name)
    saved = []
    for key, _title in PAGES:
        window.show_page(key)
        # One turn of the loop: Qt handles the pending layout and paint events of the page.
        await asyncio.sleep(0)
        saved.append(save(window, out_dir / f"{key}.png"))

    # The release dialog, filled in as a person would, to review its layout too.
    window.show_page("releases")
    dialog = browser.open_create_dialog()
    await window.ops.idle()
    dialog.name.setText("shop-2026.12.1")
    if dialog.rows:
        dialog.rows[0].reference.setText("1.2.0")
    await asyncio.sleep(0)
    saved.append(save(dialog, out_dir / "new-release.png"))
    dialog.reject()
    return saved
