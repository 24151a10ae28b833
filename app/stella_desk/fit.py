"""A one-line label that gives up width gracefully: a name too long for its place ends in "…" and
says itself in full in a tooltip, and its minimum width is a few characters, not the whole name
(a layout of long names would otherwise push the window wider than the screen)."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QSize, Qt
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QFrame, QLabel, QScrollArea, QSizePolicy, QWidget

MIN_CHARS = 8  # the shortest a name gets before "…": enough to tell names apart

# A slim sideways bar that reads as one on a light or dark page (the application's sheet makes
# a scroll area's inner widgets transparent, which leaves the native bar a bare outline).
SCROLLBAR_STYLE = """
QScrollBar:horizontal { height: 10px; background: transparent; margin: 0; }
QScrollBar::handle:horizontal { background: #b9bfcc; border-radius: 4px; min-width: 40px;
    margin: 2px 0; }
QScrollBar::handle:horizontal:hover { background: #8f97a8; }
QScrollBar::add-line:horizontal, QScrollBar::sub-line:horizontal { width: 0; height: 0; }
QScrollBar::add-page:horizontal, QScrollBar::sub-page:horizontal { background: transparent; }
"""


def slim_scrollbar(area: QScrollArea) -> None:
    area.horizontalScrollBar().setStyleSheet(SCROLLBAR_STYLE)


class ElidedLabel(QLabel):
    def __init__(
        self,
        text: str = "",
        kind: str | None = None,
        parent: QWidget | None = None,
        *,
        tooltip: str = "",
    ) -> None:
        super().__init__(parent)
        if kind:
            self.setProperty("kind", kind)
        self._full = text
        self._tooltip = tooltip  # said after the full text, when there is more to say
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self._elide()

    # `text()` is the full text, as for any label; `shown_text()` is what fits.
    @property
    def full_text(self) -> str:
        return self._full

    def text(self) -> str:
        return self._full

    def setText(self, text: str) -> None:
        self.set_full_text(text)

    def set_full_text(self, text: str) -> None:
        self._full = text
        self.updateGeometry()
        self._elide()

    def shown_text(self) -> str:
        return super().text()

    @property
    def elided(self) -> bool:
        return self.shown_text() != self._full

    def sizeHint(self) -> QSize:
        hint = super().sizeHint()
        margins = self.contentsMargins()
        width = self.fontMetrics().horizontalAdvance(self._full) + margins.left() + margins.right()
        return QSize(width + 2, hint.height())

    def minimumSizeHint(self) -> QSize:
        hint = super().minimumSizeHint()
        short = self._full if len(self._full) <= MIN_CHARS else self._full[:MIN_CHARS] + "…"
        margins = self.contentsMargins()
        width = self.fontMetrics().horizontalAdvance(short) + margins.left() + margins.right()
        return QSize(min(width + 2, self.sizeHint().width()), hint.height())

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._elide()

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.FontChange:  # a style sheet's font arrives after creation
            self.updateGeometry()
            self._elide()

    def _elide(self) -> None:
        width = self.contentsRect().width()
        shown = self.fontMetrics().elidedText(self._full, Qt.TextElideMode.ElideRight, width)
        if shown != super().text():
            super().setText(shown)
        tip = self._full if shown != self._full else ""
        if self._tooltip:
            tip = f"{tip}\n{self._tooltip}" if tip else self._tooltip
        if tip != self.toolTip():
            self.setToolTip(tip)


class SidewaysScroll(QScrollArea):
    """A row that scrolls sideways when it is wider than its place, and is exactly as tall as
    its content (plus the scroll bar when one shows): the window never widens for it."""

    def __init__(self, content: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setWidget(content)
        slim_scrollbar(self)
        self.viewport().setAutoFillBackground(False)
        content.setAutoFillBackground(False)
        self.horizontalScrollBar().rangeChanged.connect(lambda _lo, _hi: self.updateGeometry())

    def _height(self) -> int:
        content = self.widget()
        height = content.sizeHint().height() if content is not None else 0
        bar = self.horizontalScrollBar()
        if bar.maximum() > 0:
            height += bar.sizeHint().height()
        return height

    def sizeHint(self) -> QSize:
        return QSize(super().sizeHint().width(), self._height())

    def minimumSizeHint(self) -> QSize:
        return QSize(super().minimumSizeHint().width(), self._height())


class Floating(QObject):
    """Keeps `widget` floating over the bottom of `host`, across its width: a message that
    appears there covers what is under it for a moment instead of pushing every button below
    it down (buttons that move under the pointer get the wrong click)."""

    def __init__(self, widget: QWidget, host: QWidget, margin: int = 16) -> None:
        super().__init__(host)
        self.widget = widget
        self.host = host
        self.margin = margin
        widget.setParent(host)
        host.installEventFilter(self)
        widget.installEventFilter(self)
        self.place()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        kind = event.type()
        if (watched is self.host and kind == QEvent.Type.Resize) or (
            watched is self.widget and kind in (QEvent.Type.Show, QEvent.Type.LayoutRequest)
        ):
            self.place()
        return False

    def place(self) -> None:
        width = max(0, self.host.width() - 2 * self.margin)
        layout = self.widget.layout()
        if layout is not None and layout.hasHeightForWidth():
            height = layout.totalHeightForWidth(width)
        else:
            height = self.widget.sizeHint().height()
        height = min(height, max(0, self.host.height() - 2 * self.margin))
        self.widget.setGeometry(
            self.margin, self.host.height() - height - self.margin, width, height
        )
        self.widget.raise_()
