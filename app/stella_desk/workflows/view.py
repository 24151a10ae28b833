"""The canvas view: zoom (wheel, Ctrl +/-), pan (middle button, or Space + drag) and fit (F).

Nothing else: selecting, moving and connecting are the controller's interactions.
"""

from __future__ import annotations

import math

from PySide6.QtCore import QLineF, QPoint, QRect, QRectF, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPen,
    QWheelEvent,
)
from PySide6.QtWidgets import QFrame, QGraphicsScene, QGraphicsView, QWidget

from stella_desk import theme

MIN_ZOOM = 0.03
MAX_ZOOM = 3.0
STEP = 1.15
FIT_MARGIN = 30.0


GRID_MINOR = 20.0
GRID_MAJOR = 100.0
MINOR_COLOUR = QColor("#edeff4")
MAJOR_COLOUR = QColor("#e3e6ee")


class CanvasView(QGraphicsView):
    zoom_changed = Signal(float)

    def __init__(self, scene: QGraphicsScene, parent: QWidget | None = None) -> None:
        super().__init__(scene, parent)
        self.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.TextAntialiasing)
        # Repaint only what changed; cards are cached per device pixel (see items.py).
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.SmartViewportUpdate)
        self.setOptimizationFlag(QGraphicsView.OptimizationFlag.DontSavePainterState, True)
        self.setCacheMode(QGraphicsView.CacheModeFlag.CacheBackground)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setDragMode(QGraphicsView.DragMode.NoDrag)
        self.setFrameShape(QFrame.Shape.NoFrame)
        # No scroll bars: the wheel zooms, the middle button (or Space) pans, F fits.
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setBackgroundBrush(QColor(theme.BACKGROUND))
        self.setAcceptDrops(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self._space = False
        self._pan_from: QPoint | None = None

    def drawBackground(self, painter: QPainter, rect: QRectF | QRect) -> None:
        """A faint grid: a few dozen lines for the visible area, whatever the graph's size."""
        rect = QRectF(rect)
        painter.fillRect(rect, self.backgroundBrush())
        device = self.zoom
        for step, colour in ((GRID_MINOR, MINOR_COLOUR), (GRID_MAJOR, MAJOR_COLOUR)):
            if step * device < 12:
                continue  # too dense to be useful at this zoom
            pen = QPen(colour, 0)  # cosmetic: one device pixel at any zoom
            painter.setPen(pen)
            left = math.floor(rect.left() / step) * step
            top = math.floor(rect.top() / step) * step
            lines = []
            x = left
            while x <= rect.right():
                lines.append(QLineF(x, rect.top(), x, rect.bottom()))
                x += step
            y = top
            while y <= rect.bottom():
                lines.append(QLineF(rect.left(), y, rect.right(), y))
                y += step
            painter.drawLines(lines)

    # --- zoom --------------------------------------------------------------------------------
    @property
    def zoom(self) -> float:
        return self.transform().m11()

    def set_zoom(self, zoom: float) -> None:
        zoom = max(MIN_ZOOM, min(MAX_ZOOM, zoom))
        factor = zoom / self.zoom
        if abs(factor - 1.0) > 1e-6:
            self.scale(factor, factor)
            self.zoom_changed.emit(self.zoom)

    def zoom_in(self) -> None:
        self._zoom_centred(self.zoom * STEP)

    def zoom_out(self) -> None:
        self._zoom_centred(self.zoom / STEP)

    def _zoom_centred(self, zoom: float) -> None:
        anchor = self.transformationAnchor()
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.set_zoom(zoom)
        self.setTransformationAnchor(anchor)

    def fit(self, rect: QRectF | None = None) -> None:
        """Show everything (or `rect`), never magnified beyond 100 %."""
        if rect is None:
            content = getattr(self.scene(), "content_rect", None)
            rect = content() if content is not None else self.scene().itemsBoundingRect()
        if rect.isNull() or rect.isEmpty():
            return
        rect = rect.adjusted(-FIT_MARGIN, -FIT_MARGIN, FIT_MARGIN, FIT_MARGIN)
        view = self.viewport().rect()
        zoom = min(view.width() / rect.width(), view.height() / rect.height(), 1.0)
        self.set_zoom(zoom)
        self.centerOn(rect.center())

    def centre(self) -> tuple[float, float]:
        point = self.mapToScene(self.viewport().rect().center())
        return (point.x(), point.y())

    def wheelEvent(self, event: QWheelEvent) -> None:
        delta = event.angleDelta().y()
        if delta:
            self.set_zoom(self.zoom * STEP ** (delta / 120))
        event.accept()

    # --- pan ---------------------------------------------------------------------------------
    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        plain = event.modifiers() == Qt.KeyboardModifier.NoModifier
        if key == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = True
            self.viewport().setCursor(Qt.CursorShape.OpenHandCursor)
            event.accept()
            return
        if key == Qt.Key.Key_F and plain:
            self.fit()
            event.accept()
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = False
            if self._pan_from is None:
                self.viewport().unsetCursor()
            event.accept()
            return
        super().keyReleaseEvent(event)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        button = event.button()
        if button == Qt.MouseButton.MiddleButton or (
            button == Qt.MouseButton.LeftButton and self._space
        ):
            self._pan_from = event.position().toPoint()
            self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._pan_from is not None:
            point = event.position().toPoint()
            delta = point - self._pan_from
            self._pan_from = point
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - delta.x())
            self.verticalScrollBar().setValue(self.verticalScrollBar().value() - delta.y())
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._pan_from is not None:
            self._pan_from = None
            if self._space:
                self.viewport().setCursor(Qt.CursorShape.OpenHandCursor)
            else:
                self.viewport().unsetCursor()
            event.accept()
            return
        super().mouseReleaseEvent(event)
