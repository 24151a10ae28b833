"""The desk at 2x scaling, in a process of its own (Qt reads QT_SCALE_FACTOR and the virtual
screen when the application starts): `python -m tests.app.scaled_desk OUT_DIR`, with
STELLA_HOME and STELLA_DATABASE_URL naming a prepared database. Shows every page, saves it to
OUT_DIR/<page>.png and prints one JSON line: the screen, the window, and per page the minimum
size and what lies outside the window."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from PySide6.QtCore import QPoint, QRect
from PySide6.QtWidgets import QAbstractScrollArea, QApplication, QWidget


def in_scroll_area(widget: QWidget, window: QWidget) -> bool:
    """Scrolled content may lie outside the window: its scroll area's viewport clips it."""
    parent = widget.parentWidget()
    while parent is not None and parent is not window:
        if isinstance(parent, QAbstractScrollArea):
            return True
        parent = parent.parentWidget()
    return False


def outside(window: QWidget) -> list[str]:
    """Visible widgets (not scrolled content) that reach past the window's edges."""
    bounds = window.rect()
    found = []
    for widget in window.findChildren(QWidget):
        if not widget.isVisible() or in_scroll_area(widget, window):
            continue
        rect = QRect(widget.mapTo(window, QPoint(0, 0)), widget.size())
        if not bounds.contains(rect):
            found.append(f"{type(widget).__name__} {widget.objectName()!r} at {rect}")
    return found


async def _visit(out: Path) -> dict[str, Any]:
    from stella_core.bootstrap import Stella
    from stella_desk.ops import Ops
    from stella_desk.screenshots import save
    from stella_desk.session import Session
    from stella_desk.window import PAGES, MainWindow

    ops = Ops()
    window = MainWindow(ops, Session())
    window.show()
    stella = await asyncio.to_thread(Stella.open)
    try:
        await window.attach(stella)
        screen = window.screen().availableGeometry()
        frame = window.frameGeometry()
        report: dict[str, Any] = {
            "screen": [screen.width(), screen.height()],
            "scale": window.devicePixelRatio(),
            "window": [frame.x(), frame.y(), frame.width(), frame.height()],
            "pages": {},
        }
        for key, _title in PAGES:
            window.show_page(key)
            await ops.idle()
            await asyncio.sleep(0.05)
            hint = window.minimumSizeHint().expandedTo(window.minimumSize())
            report["pages"][key] = {
                "minimum": [hint.width(), hint.height()],
                "size": [window.width(), window.height()],
                "outside": outside(window),
            }
            save(window, out / f"{key}.png")
        return report
    finally:
        window.feed.stop()
        await ops.shutdown()
        await asyncio.to_thread(stella.close)


def main(argv: list[str]) -> int:
    import qasync

    from stella_desk import theme
    from stella_desk.qtcompat import protect_bool_refcount, protect_none_refcount

    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    protect_bool_refcount()
    protect_none_refcount()
    app = QApplication(sys.argv[:1])
    theme.apply(app)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    with loop:
        report = loop.run_until_complete(_visit(out))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
