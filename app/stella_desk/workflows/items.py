"""Canvas items: step cards with their ports, the edges between them, and the rollback lane.

Items show what the document says and own no truth: the scene creates, updates and removes
them from document signals. An edge follows its two cards: a card tells only its own edges when
it moves, so a drag costs work proportional to the edges of the moved cards, not to the graph.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QFontMetricsF,
    QPainter,
    QPainterPath,
    QPainterPathStroker,
    QPen,
    QPolygonF,
)
from PySide6.QtWidgets import (
    QGraphicsEllipseItem,
    QGraphicsItem,
    QGraphicsPathItem,
    QGraphicsPolygonItem,
    QStyleOptionGraphicsItem,
    QWidget,
)

from stella_core.workflows.model import Node, OnFailure
from stella_core.workflows.steps.spec import StepTypeSpec
from stella_desk import theme
from stella_desk.workflows.steps import category_colour, glyph_for, paint_badge

if TYPE_CHECKING:
    from stella_desk.workflows.scene import WorkflowScene

CARD_WIDTH = 184.0
CARD_HEIGHT = 58.0
CARD_RADIUS = 9.0
PORT_RADIUS = 6.0
GRID = 10.0  # a drag snaps card positions to this grid

BORDER = QColor("#cfd5e2")
CARD_FILL = QColor("#ffffff")
ROLLBACK = QColor("#dc2626")
ROLLBACK_FILL = QColor("#fff6f6")
GOOD = QColor("#16a34a")
BAD = QColor("#dc2626")
CHANGED = QColor("#d97706")
EDGE = QColor("#8f97ab")
TITLE = QColor(theme.TEXT)
MUTED = QColor(theme.MUTED)
ACCENT = QColor(theme.ACCENT)

_fonts: dict[str, QFont] = {}


def _font(kind: str) -> QFont:
    """Fonts are made once (after the application exists) and shared by every card."""
    if kind not in _fonts:
        font = QFont()
        if kind == "title":
            font.setPixelSize(14)
            font.setWeight(QFont.Weight.DemiBold)
        elif kind == "badge":
            font.setPixelSize(10)
            font.setBold(True)
        else:
            font.setPixelSize(11)
        _fonts[kind] = font
    return _fonts[kind]


def snap(value: float) -> float:
    return round(value / GRID) * GRID


class Mark(StrEnum):
    """Transient emphasis painted on a card or an edge (never stored in the template)."""

    CANDIDATE_OK = "candidate-ok"  # a new edge may end here
    CANDIDATE_BAD = "candidate-bad"  # it may not (cycle, itself, already connected)
    ADDED = "added"  # version comparison
    CHANGED = "changed"
    REMOVED = "removed"


MARK_COLOURS = {
    Mark.CANDIDATE_OK: GOOD,
    Mark.CANDIDATE_BAD: BAD,
    Mark.ADDED: GOOD,
    Mark.CHANGED: CHANGED,
    Mark.REMOVED: BAD,
}

# A run's step status -> (colour, card fill): painted by the run monitor, from engine events,
# never stored in the template. `pending` has none: the card looks as it does in the editor.
STATUS_STYLES: dict[str, tuple[QColor, QColor]] = {
    "ready": (QColor("#60a5fa"), QColor("#f5f9ff")),
    "running": (QColor("#2563eb"), QColor("#eef4ff")),
    "waiting": (QColor("#d97706"), QColor("#fff8eb")),
    "succeeded": (QColor("#16a34a"), QColor("#f0fbf3")),
    "failed": (QColor("#dc2626"), QColor("#fff1f1")),
    "timed_out": (QColor("#b91c1c"), QColor("#fff1f1")),
    "continued": (QColor("#ea580c"), QColor("#fff5ed")),
    "skipped": (QColor("#9ca3af"), QColor("#f6f7f9")),
    "cancelled": (QColor("#4b5563"), QColor("#f1f2f4")),
}


class PortItem(QGraphicsEllipseItem):
    """A card's input (left) or output (right) anchor; a child of its card.

    Painted by Qt itself (no Python per frame); a press near it counts as on it (see the
    controller), so the small circle is still easy to hit.
    """

    def __init__(self, card: NodeItem, output: bool) -> None:
        super().__init__(-PORT_RADIUS, -PORT_RADIUS, 2 * PORT_RADIUS, 2 * PORT_RADIUS, card)
        self.card = card
        self.output = output
        self.mark: Mark | None = None
        self._hover = False
        self.setPos(CARD_WIDTH if output else 0.0, CARD_HEIGHT / 2)
        self.setAcceptHoverEvents(True)
        self.setCursor(Qt.CursorShape.CrossCursor if output else Qt.CursorShape.ArrowCursor)
        self.setToolTip("Drag to another step to connect" if output else "Input")
        self.restyle()

    def set_mark(self, mark: Mark | None) -> None:
        if mark != self.mark:
            self.mark = mark
            self.restyle()

    def restyle(self) -> None:
        colour = MARK_COLOURS.get(self.mark) if self.mark else None
        ring = colour or (ACCENT if self._hover else self.card.colour)
        self.setPen(QPen(ring, 2.0))
        self.setBrush(colour or (ring if self._hover else CARD_FILL))
        grow = 1.5 if (self._hover or colour) else 0.0
        r = PORT_RADIUS + grow
        self.setRect(-r, -r, 2 * r, 2 * r)

    def hoverEnterEvent(self, event: Any) -> None:
        self._hover = True
        self.restyle()

    def hoverLeaveEvent(self, event: Any) -> None:
        self._hover = False
        self.restyle()


class NodeItem(QGraphicsItem):
    """A step as a rounded card: category colour, type glyph, name, id and type."""

    def __init__(self, node: Node, spec: StepTypeSpec | None) -> None:
        super().__init__()
        self.edges: set[EdgeItem] = set()
        self.problem_count = 0
        self.mark: Mark | None = None
        # Run status (monitor only): the step's state, a short detail and the pulse of a
        # running step (0..1). None in the editor.
        self.status: str | None = None
        self.status_detail = ""
        self.pulse = 0.0
        self.node = node
        self.spec = spec
        self.colour = category_colour(spec.category if spec else None)
        self._title = ""
        self._subtitle = ""
        self.setFlags(
            QGraphicsItem.GraphicsItemFlag.ItemIsSelectable
            | QGraphicsItem.GraphicsItemFlag.ItemIsMovable
            | QGraphicsItem.GraphicsItemFlag.ItemSendsGeometryChanges
        )
        # Painted once per zoom level, then blitted: 500 cards cost no Python per frame.
        self.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.input_port = PortItem(self, output=False)
        self.output_port = PortItem(self, output=True)
        self.set_node(node, spec)

    @property
    def node_id(self) -> str:
        return self.node.id

    def set_node(self, node: Node, spec: StepTypeSpec | None) -> None:
        self.node = node
        self.spec = spec
        self.colour = category_colour(spec.category if spec else None)
        text_width = CARD_WIDTH - 48
        title_metrics = QFontMetricsF(_font("title"))
        small_metrics = QFontMetricsF(_font("small"))
        elide = Qt.TextElideMode.ElideRight
        self._title = title_metrics.elidedText(node.name or node.id, elide, text_width)
        kind = node.type if spec else f"{node.type} (unknown)"
        self._subtitle = small_metrics.elidedText(f"{node.id} · {kind}", elide, text_width)
        tips = [f"<b>{node.name or node.id}</b>", f"id: {node.id}", f"type: {node.type}"]
        if node.rollback:
            tips.append("part of the rollback path")
        if node.on_failure is not OnFailure.FAIL:
            tips.append(f"on failure: {node.on_failure.value}")
        self.setToolTip("<br>".join(tips))
        self.update()
        for port in self.childItems():
            if isinstance(port, PortItem):
                port.restyle()  # the ring takes the category colour
        for edge in self.edges:
            edge.restyle()  # rollback styling follows the card

    def set_problem_count(self, count: int) -> None:
        if count != self.problem_count:
            self.problem_count = count
            self.update()

    def set_mark(self, mark: Mark | None) -> None:
        if mark != self.mark:
            self.mark = mark
            self.update()

    def set_status(self, status: str | None, detail: str = "") -> None:
        """Paint a run's step status on the card (the run monitor calls this)."""
        if (status, detail) != (self.status, self.status_detail):
            self.status = status
            self.status_detail = detail
            self.update()

    def set_pulse(self, pulse: float) -> None:
        if pulse != self.pulse:
            self.pulse = pulse
            self.update()

    def out_anchor(self) -> QPointF:
        pos = self.pos()
        return QPointF(pos.x() + CARD_WIDTH, pos.y() + CARD_HEIGHT / 2)

    def in_anchor(self) -> QPointF:
        pos = self.pos()
        return QPointF(pos.x(), pos.y() + CARD_HEIGHT / 2)

    def boundingRect(self) -> QRectF:
        # Room for the selection halo, the shadow and the problem badge on the corner.
        return QRectF(-5, -10, CARD_WIDTH + 15, CARD_HEIGHT + 16)

    def shape(self) -> QPainterPath:
        path = QPainterPath()
        path.addRoundedRect(QRectF(0, 0, CARD_WIDTH, CARD_HEIGHT), CARD_RADIUS, CARD_RADIUS)
        return path

    def itemChange(self, change: QGraphicsItem.GraphicsItemChange, value: Any) -> Any:
        if change == QGraphicsItem.GraphicsItemChange.ItemPositionChange:
            scene = self.scene()
            if scene is not None and getattr(scene, "snapping", False):
                return QPointF(snap(value.x()), snap(value.y()))
        elif change == QGraphicsItem.GraphicsItemChange.ItemPositionHasChanged:
            for edge in self.edges:
                edge.adjust()
            scene = self.scene()
            if scene is not None and self.node.rollback:
                scene_: WorkflowScene = scene  # type: ignore[assignment]
                scene_.rollback_moved()
        return super().itemChange(change, value)

    def paint(
        self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None
    ) -> None:
        rect = QRectF(0, 0, CARD_WIDTH, CARD_HEIGHT)
        selected = self.isSelected()
        rollback = self.node.rollback
        mark_colour = MARK_COLOURS.get(self.mark) if self.mark else None
        status_colour, status_fill = STATUS_STYLES.get(self.status or "", (None, None))
        painter.setPen(Qt.PenStyle.NoPen)
        # Soft shadow, then a halo when selected or marked (or pulsing while running).
        painter.setBrush(QColor(22, 30, 60, 26))
        painter.drawRoundedRect(rect.translated(0, 2.5), CARD_RADIUS, CARD_RADIUS)
        halo = mark_colour or (ACCENT if selected else None)
        alpha = 60
        if halo is None and self.status == "running" and status_colour is not None:
            halo, alpha = status_colour, int(40 + 90 * self.pulse)
        if halo is not None:
            glow = QColor(halo)
            glow.setAlpha(alpha)
            painter.setBrush(glow)
            painter.drawRoundedRect(rect.adjusted(-4, -4, 4, 4), CARD_RADIUS + 3, CARD_RADIUS + 3)

        if mark_colour is not None:
            pen = QPen(mark_colour, 2.0)
        elif selected:
            pen = QPen(ACCENT, 2.0)
        elif status_colour is not None:
            pen = QPen(status_colour, 2.0)
        elif rollback:
            pen = QPen(ROLLBACK, 1.6, Qt.PenStyle.DashLine)
        else:
            pen = QPen(BORDER, 1.2)
        painter.setPen(pen)
        painter.setBrush(status_fill or (ROLLBACK_FILL if rollback else CARD_FILL))
        painter.drawRoundedRect(rect, CARD_RADIUS, CARD_RADIUS)

        # Category stripe along the left edge, clipped to the card's rounded shape.
        painter.save()
        painter.setClipRect(QRectF(0, 0, 5, CARD_HEIGHT))
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(ROLLBACK if rollback else self.colour)
        painter.drawRoundedRect(rect, CARD_RADIUS, CARD_RADIUS)
        painter.restore()

        badge = QRectF(11, (CARD_HEIGHT - 26) / 2, 26, 26)
        paint_badge(painter, badge, self.colour, glyph_for(self.node.type))

        painter.setPen(TITLE)
        painter.setFont(_font("title"))
        painter.drawText(
            QRectF(44, 9, CARD_WIDTH - 48, 20), Qt.AlignmentFlag.AlignLeft, self._title
        )
        painter.setPen(ROLLBACK if rollback else MUTED)
        painter.setFont(_font("small"))
        painter.drawText(
            QRectF(44, 31, CARD_WIDTH - 48, 18), Qt.AlignmentFlag.AlignLeft, self._subtitle
        )

        if self.problem_count:
            dot = QRectF(CARD_WIDTH - 11, -8, 18, 18)
            painter.setPen(QPen(QColor("#ffffff"), 1.5))
            painter.setBrush(BAD)
            painter.drawEllipse(dot)
            painter.setPen(QColor("#ffffff"))
            painter.setFont(_font("badge"))
            text = str(self.problem_count) if self.problem_count < 10 else "9+"
            painter.drawText(dot, Qt.AlignmentFlag.AlignCenter, text)

        if status_colour is not None:
            self._paint_status_pill(painter, status_colour)

    def _paint_status_pill(self, painter: QPainter, colour: QColor) -> None:
        """The status as a small pill sitting on the card's top edge, right-aligned."""
        text = (self.status or "").replace("_", " ")
        if self.status_detail:
            text = f"{text} · {self.status_detail}"
        font = _font("badge")
        width = QFontMetricsF(font).horizontalAdvance(text) + 14
        pill = QRectF(CARD_WIDTH - 10 - width, -8, width, 16)
        painter.setPen(QPen(QColor("#ffffff"), 1.5))
        painter.setBrush(colour)
        painter.drawRoundedRect(pill, 8, 8)
        painter.setPen(QColor("#ffffff"))
        painter.setFont(font)
        painter.drawText(pill, Qt.AlignmentFlag.AlignCenter, text)


def edge_path(start: QPointF, end: QPointF) -> QPainterPath:
    """A horizontal S-curve from an output port to an input port (also backwards)."""
    dx = max(40.0, abs(end.x() - start.x()) * 0.5)
    path = QPainterPath(start)
    path.cubicTo(QPointF(start.x() + dx, start.y()), QPointF(end.x() - dx, end.y()), end)
    return path


class EdgeItem(QGraphicsPathItem):
    """A dependency: source card's output port to target card's input port, with an arrow.

    The curve and the arrow head are plain Qt items with pens and brushes, so painting a frame
    runs no Python per edge. Edges are selected by the controller (Qt's own selection would
    paint a dashed box around the curve's bounding rectangle).
    """

    def __init__(self, source: NodeItem, target: NodeItem) -> None:
        super().__init__()
        self.source = source
        self.target = target
        self.mark: Mark | None = None
        self.selected = False
        self._shape: QPainterPath | None = None
        self.arrow = QGraphicsPolygonItem(self)
        self.arrow.setPen(QPen(Qt.PenStyle.NoPen))
        self.setZValue(-1)
        self.setToolTip(f"{source.node_id} → {target.node_id}")
        source.edges.add(self)
        target.edges.add(self)
        self.restyle()
        self.adjust()

    @property
    def key(self) -> tuple[str, str]:
        return (self.source.node_id, self.target.node_id)

    def detach(self) -> None:
        self.source.edges.discard(self)
        self.target.edges.discard(self)

    def adjust(self) -> None:
        start = self.source.out_anchor() + QPointF(PORT_RADIUS, 0)
        tip = self.target.in_anchor() - QPointF(PORT_RADIUS + 1, 0)
        self.setPath(edge_path(start, tip - QPointF(6, 0)))
        self._shape = None
        self.arrow.setPolygon(
            QPolygonF(
                [tip, QPointF(tip.x() - 9, tip.y() - 4.5), QPointF(tip.x() - 9, tip.y() + 4.5)]
            )
        )

    def set_mark(self, mark: Mark | None) -> None:
        if mark != self.mark:
            self.mark = mark
            self.restyle()

    def set_selected(self, selected: bool) -> None:
        if selected != self.selected:
            self.selected = selected
            self.restyle()

    def restyle(self) -> None:
        rollback = self.source.node.rollback and self.target.node.rollback
        colour = MARK_COLOURS.get(self.mark) if self.mark else None
        if colour is None:
            colour = ACCENT if self.selected else (ROLLBACK if rollback else EDGE)
        pen = QPen(colour, 2.6 if (self.selected or self.mark) else 1.8)
        pen.setCapStyle(Qt.PenCapStyle.RoundCap)
        if rollback and self.mark is None and not self.selected:
            pen.setStyle(Qt.PenStyle.DashLine)
        self.setPen(pen)
        self.arrow.setBrush(colour)

    def shape(self) -> QPainterPath:
        # The stroke only: Qt's default would also count the area under the curve as a hit.
        if self._shape is None:
            stroker = QPainterPathStroker()
            stroker.setWidth(12)
            self._shape = stroker.createStroke(self.path())
        return self._shape


class EdgePreview(QGraphicsPathItem):
    """The edge being drawn: follows the pointer, green over a valid target, red otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self.setZValue(10)
        self.set_state(None)

    def set_state(self, ok: bool | None) -> None:
        colour = ACCENT if ok is None else (GOOD if ok else BAD)
        pen = QPen(colour, 2.2, Qt.PenStyle.DashLine)
        pen.setCapStyle(Qt.PenCapStyle.RoundCap)
        self.setPen(pen)

    def follow(self, start: QPointF, end: QPointF, *, reverse: bool = False) -> None:
        self.setPath(edge_path(end, start) if reverse else edge_path(start, end))


class RollbackLane(QGraphicsItem):
    """A tinted band behind the rollback path's cards, so it reads as its own lane."""

    PAD = 26.0

    def __init__(self) -> None:
        super().__init__()
        self._rect = QRectF()
        self.setZValue(-10)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        self.hide()

    def fit(self, cards: list[NodeItem]) -> None:
        if not cards:
            self.hide()
            return
        bounds = QRectF()
        for card in cards:
            bounds = bounds.united(QRectF(card.pos(), card.shape().boundingRect().size()))
        self.prepareGeometryChange()
        self._rect = bounds.adjusted(-self.PAD, -self.PAD - 18, self.PAD, self.PAD)
        self.show()

    def boundingRect(self) -> QRectF:
        return self._rect.adjusted(-1, -1, 1, 1)

    def paint(
        self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None
    ) -> None:
        fill = QColor(ROLLBACK)
        fill.setAlpha(14)
        line = QColor(ROLLBACK)
        line.setAlpha(110)
        painter.setPen(QPen(line, 1.2, Qt.PenStyle.DashLine))
        painter.setBrush(QBrush(fill))
        painter.drawRoundedRect(self._rect, 14, 14)
        painter.setPen(ROLLBACK)
        painter.setFont(_font("badge"))
        painter.drawText(
            self._rect.adjusted(14, 8, -14, 0),
            Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop,
            "ROLLBACK PATH · runs when a step with on_failure: rollback fails",
        )
