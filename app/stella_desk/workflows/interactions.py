"""Mouse and drop handling as small interaction objects (orangecanvas/document/interactions.py).

The controller filters the scene's events. A press picks an interaction by what is under the
pointer: an output (or input) port starts a new edge, a card starts a move, empty canvas starts
a rubber band; drags from the palette go to the drop interaction. Each interaction turns what
the person did into at most one document edit, when it finishes (a drag is pushed on release).
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QMimeData, QObject, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QPainterPath, QPen, QTransform
from PySide6.QtWidgets import (
    QGraphicsRectItem,
    QGraphicsSceneDragDropEvent,
    QGraphicsSceneMouseEvent,
)

from stella_core.errors import StellaError
from stella_core.workflows import edit as wf_edit
from stella_core.workflows.model import Template
from stella_desk import theme
from stella_desk.workflows.document import WorkflowDocument
from stella_desk.workflows.items import (
    CARD_HEIGHT,
    CARD_WIDTH,
    EdgeItem,
    EdgePreview,
    Mark,
    NodeItem,
    PortItem,
    RollbackLane,
    snap,
)
from stella_desk.workflows.scene import WorkflowScene
from stella_desk.workflows.steps import Registry

STEP_MIME = "application/x-stella-step-type"


def step_mime(type_name: str) -> QMimeData:
    data = QMimeData()
    data.setData(STEP_MIME, type_name.encode())
    data.setText(type_name)
    return data


PORT_REACH = 12.0  # a press this close to a port (inside the card) counts as on the port


def port_near(card: NodeItem, scene_pos: QPointF) -> PortItem | None:
    """The port a press on the card's edge means: the circles are small targets."""
    local = card.mapFromScene(scene_pos)
    if abs(local.y() - CARD_HEIGHT / 2) > PORT_REACH:
        return None
    if local.x() >= CARD_WIDTH - PORT_REACH:
        return card.output_port
    if local.x() <= PORT_REACH:
        return card.input_port
    return None


class Interaction:
    """One gesture in progress. Handlers return True when they consumed the event."""

    def __init__(self, controller: CanvasController) -> None:
        self.controller = controller
        self.document = controller.document
        self.scene = controller.scene

    def mouse_press(self, event: QGraphicsSceneMouseEvent) -> bool:
        return False

    def mouse_move(self, event: QGraphicsSceneMouseEvent) -> bool:
        return False

    def mouse_release(self, event: QGraphicsSceneMouseEvent) -> bool:
        return False

    def cancel(self) -> None:
        self.end()

    def end(self) -> None:
        self.cleanup()
        self.controller.finished(self)

    def cleanup(self) -> None:
        """Remove what the gesture drew; called once, however it ends."""


class NewEdgeInteraction(Interaction):
    """Drag from a port to another card. The candidate turns green (allowed) or red (a cycle,
    the same edge again); releasing on a red one refuses with a message and changes nothing."""

    def __init__(self, controller: CanvasController, port: PortItem) -> None:
        super().__init__(controller)
        self.port = port
        self.source = port.card
        self.from_output = port.output
        self.preview = EdgePreview()
        self.candidate: NodeItem | None = None
        self._verdicts: dict[str, tuple[bool, str]] = {}

    def _anchor(self) -> QPointF:
        return self.source.out_anchor() if self.from_output else self.source.in_anchor()

    def mouse_press(self, event: QGraphicsSceneMouseEvent) -> bool:
        event.accept()
        self.scene.addItem(self.preview)
        self.port.set_mark(Mark.CANDIDATE_OK)
        self.preview.follow(self._anchor(), event.scenePos(), reverse=not self.from_output)
        return True

    def pair(self, other: NodeItem) -> tuple[str, str]:
        if self.from_output:
            return (self.source.node_id, other.node_id)
        return (other.node_id, self.source.node_id)

    def verdict(self, other: NodeItem) -> tuple[bool, str]:
        """(allowed, why not) for an edge to `other`; computed once per candidate."""
        if other.node_id not in self._verdicts:
            src, dst = self.pair(other)
            template = self.document.template
            if wf_edit.would_create_cycle(template, src, dst):
                answer = (
                    False,
                    f"Refused: {src} → {dst} would make a cycle ({dst} already leads to {src}).",
                )
            else:
                try:  # the core's own rules: duplicates, main and rollback paths kept apart
                    wf_edit.add_edge(template, src, dst)
                    answer = (True, "")
                except StellaError as exc:
                    answer = (False, f"Refused: {exc.message}")
            self._verdicts[other.node_id] = answer
        return self._verdicts[other.node_id]

    def _set_candidate(self, card: NodeItem | None) -> None:
        if card is self.candidate:
            return
        if self.candidate is not None:
            self.scene.set_candidate(self.candidate, None, self._target_port(self.candidate))
        self.candidate = card
        if card is None:
            self.preview.set_state(None)
            self.controller.hint.emit("")
            return
        ok, why = self.verdict(card)
        mark = Mark.CANDIDATE_OK if ok else Mark.CANDIDATE_BAD
        self.scene.set_candidate(card, mark, self._target_port(card))
        self.preview.set_state(ok)
        src, dst = self.pair(card)
        self.controller.hint.emit(f"Connect {src} → {dst}" if ok else why)

    def _target_port(self, card: NodeItem) -> PortItem:
        return card.input_port if self.from_output else card.output_port

    def mouse_move(self, event: QGraphicsSceneMouseEvent) -> bool:
        card = self.scene.card_at(event.scenePos(), exclude=self.source)
        self._set_candidate(card)
        if card is not None:
            end = card.in_anchor() if self.from_output else card.out_anchor()
        else:
            end = event.scenePos()
        self.preview.follow(self._anchor(), end, reverse=not self.from_output)
        return True

    def mouse_release(self, event: QGraphicsSceneMouseEvent) -> bool:
        self.mouse_move(event)
        card = self.candidate
        self.end()
        if card is not None:
            ok, why = self.verdict(card)
            if ok:
                self.controller.connect_steps(*self.pair(card))
            else:
                self.controller.message.emit(why)
        return True

    def cleanup(self) -> None:
        self._set_candidate(None)
        self.port.set_mark(None)
        if self.preview.scene() is not None:
            self.scene.removeItem(self.preview)


class MoveInteraction(Interaction):
    """Qt moves the selected cards (snapped to the grid); the move is one command, on release."""

    def __init__(self, controller: CanvasController) -> None:
        super().__init__(controller)
        self.start: dict[str, QPointF] | None = None

    def mouse_move(self, event: QGraphicsSceneMouseEvent) -> bool:
        if self.start is None and event.buttons() & Qt.MouseButton.LeftButton:
            # After the press was handled, so the clicked card is in the selection.
            self.start = {
                item.node_id: item.pos()
                for item in self.scene.selectedItems()
                if isinstance(item, NodeItem)
            }
            self.scene.snapping = True
        return False

    def mouse_release(self, event: QGraphicsSceneMouseEvent) -> bool:
        moved: dict[str, tuple[float, float]] = {}
        for node_id, before in (self.start or {}).items():
            card = self.scene.item_for_node.get(node_id)
            if card is not None and card.pos() != before:
                moved[node_id] = (card.pos().x(), card.pos().y())
        self.end()
        if moved:
            self.controller.move(moved)
        return False

    def cleanup(self) -> None:
        self.scene.snapping = False


class RubberBandInteraction(Interaction):
    """Drag on empty canvas: select what the rectangle touches (Ctrl or Shift adds)."""

    def __init__(self, controller: CanvasController) -> None:
        super().__init__(controller)
        self.origin = QPointF()
        self.adding = False
        self.band = QGraphicsRectItem()
        fill = QColor(theme.ACCENT)
        fill.setAlpha(28)
        self.band.setBrush(QBrush(fill))
        self.band.setPen(QPen(QColor(theme.ACCENT), 1.0, Qt.PenStyle.DashLine))
        self.band.setZValue(20)

    def mouse_press(self, event: QGraphicsSceneMouseEvent) -> bool:
        self.origin = event.scenePos()
        modifiers = event.modifiers()
        self.adding = bool(
            modifiers & (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
        )
        if not self.adding:
            self.scene.clearSelection()
        self.band.setRect(QRectF(self.origin, self.origin))
        self.scene.addItem(self.band)
        event.accept()
        return True

    def mouse_move(self, event: QGraphicsSceneMouseEvent) -> bool:
        rect = QRectF(self.origin, event.scenePos()).normalized()
        self.band.setRect(rect)
        path = QPainterPath()
        path.addRect(rect)
        operation = (
            Qt.ItemSelectionOperation.AddToSelection
            if self.adding
            else Qt.ItemSelectionOperation.ReplaceSelection
        )
        self.scene.setSelectionArea(
            path, operation, Qt.ItemSelectionMode.IntersectsItemShape, QTransform()
        )
        return True

    def mouse_release(self, event: QGraphicsSceneMouseEvent) -> bool:
        self.end()
        return True

    def cleanup(self) -> None:
        if self.band.scene() is not None:
            self.scene.removeItem(self.band)


class DropInteraction:
    """A step type dragged from the palette: accepted over the canvas, added where dropped."""

    def __init__(self, controller: CanvasController) -> None:
        self.controller = controller

    @staticmethod
    def _type_of(event: QGraphicsSceneDragDropEvent) -> str | None:
        mime = event.mimeData()
        if mime is None or not mime.hasFormat(STEP_MIME):
            return None
        return bytes(mime.data(STEP_MIME).data()).decode()

    def drag_enter(self, event: QGraphicsSceneDragDropEvent) -> bool:
        if self._type_of(event) is None:
            return False
        event.setDropAction(Qt.DropAction.CopyAction)
        event.accept()
        return True

    drag_move = drag_enter

    def drop(self, event: QGraphicsSceneDragDropEvent) -> bool:
        type_name = self._type_of(event)
        if type_name is None:
            return False
        pos = event.scenePos()
        top_left = (snap(pos.x() - CARD_WIDTH / 2), snap(pos.y() - CARD_HEIGHT / 2))
        self.controller.add_node(type_name, top_left)
        event.setDropAction(Qt.DropAction.CopyAction)
        event.accept()
        return True


class CanvasController(QObject):
    """Runs interactions over the scene and turns gestures and commands into document edits."""

    message = Signal(str)  # something the person should read (a refused edge)
    hint = Signal(str)  # transient feedback while a gesture runs ("" clears it)
    node_activated = Signal(str)  # a card was double-clicked

    def __init__(
        self,
        document: WorkflowDocument,
        scene: WorkflowScene,
        registry: Registry,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.document = document
        self.scene = scene
        self.registry = registry
        self.current: Interaction | None = None
        self.dropper = DropInteraction(self)
        self.clipboard: object | None = None
        self._pastes = 0
        scene.installEventFilter(self)

    # --- event routing ---------------------------------------------------------------------
    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is not self.scene:
            return False
        kind = event.type()
        if kind == QEvent.Type.GraphicsSceneMousePress:
            return self._press(event)  # type: ignore[arg-type]
        if kind == QEvent.Type.GraphicsSceneMouseMove:
            return self.current.mouse_move(event) if self.current else False  # type: ignore[arg-type]
        if kind == QEvent.Type.GraphicsSceneMouseRelease:
            return self.current.mouse_release(event) if self.current else False  # type: ignore[arg-type]
        if kind == QEvent.Type.GraphicsSceneMouseDoubleClick:
            card = self.scene.card_at(event.scenePos())  # type: ignore[attr-defined]
            if card is not None:
                self.node_activated.emit(card.node_id)
            return False
        if kind in (QEvent.Type.GraphicsSceneDragEnter, QEvent.Type.GraphicsSceneDragMove):
            return self.dropper.drag_enter(event)  # type: ignore[arg-type]
        if kind == QEvent.Type.GraphicsSceneDrop:
            return self.dropper.drop(event)  # type: ignore[arg-type]
        return False

    def _press(self, event: QGraphicsSceneMouseEvent) -> bool:
        if self.current is not None:
            return self.current.mouse_press(event)
        if event.button() != Qt.MouseButton.LeftButton:
            return False
        pos = event.scenePos()
        item = self.scene.itemAt(pos, QTransform())
        if item is not None and isinstance(item.parentItem(), EdgeItem):
            item = item.parentItem()  # the arrow head
        adding = bool(
            event.modifiers()
            & (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
        )
        if isinstance(item, EdgeItem):
            if not adding:
                self.scene.clearSelection()
            self.scene.select_edge(item.key, add=adding)
            event.accept()
            return True
        if not adding:
            self.scene.clear_edge_selection()
        if isinstance(item, NodeItem):
            item = port_near(item, pos) or item
        interaction: Interaction
        if isinstance(item, PortItem):
            interaction = NewEdgeInteraction(self, item)
        elif isinstance(item, NodeItem):
            interaction = MoveInteraction(self)
        elif item is None or isinstance(item, RollbackLane):
            interaction = RubberBandInteraction(self)
        else:
            return False
        self.current = interaction
        return interaction.mouse_press(event)

    def finished(self, interaction: Interaction) -> None:
        if self.current is interaction:
            self.current = None

    def cancel(self) -> None:
        if self.current is not None:
            self.current.cancel()

    # --- edits -----------------------------------------------------------------------------
    def add_node(self, type_name: str, position: tuple[float, float]) -> str | None:
        def change(template: Template) -> tuple[Template, list[str]]:
            after, node_id = wf_edit.add_node(
                template,
                type_name,
                position=position,
                registry=self.registry,  # type: ignore[arg-type]
            )
            return after, [node_id]

        before = {n.id for n in self.document.template.nodes}
        try:
            self.document.edit(f"Add {type_name} step", change)
        except StellaError as exc:  # an unknown step type (from another program's drag)
            self.message.emit(f"Not added: {exc.message}")
            return None
        added = [n.id for n in self.document.template.nodes if n.id not in before]
        return added[0] if added else None

    def connect_steps(self, source: str, target: str) -> bool:
        try:
            return self.document.edit(
                f"Connect {source} → {target}",
                lambda t: wf_edit.add_edge(t, source, target),
            )
        except StellaError as exc:  # CycleError, EditError: the document is unchanged
            self.message.emit(f"Refused: {exc.message}")
            return False

    def move(self, positions: dict[str, tuple[float, float]]) -> bool:
        count = len(positions)
        text = f"Move {next(iter(positions))}" if count == 1 else f"Move {count} steps"
        return self.document.edit(text, lambda t: wf_edit.move_nodes(t, positions))

    def delete_selection(self) -> bool:
        nodes = self.scene.selected_node_ids()
        gone = set(nodes)
        edges = [k for k in self.scene.selected_edge_keys() if not gone.intersection(k)]
        if not nodes and not edges:
            return False

        def change(template: Template) -> Template:
            for source, target in edges:
                template = wf_edit.remove_edge(template, source, target)
            return wf_edit.remove_nodes(template, nodes) if nodes else template

        parts = []
        if nodes:
            parts.append(f"{len(nodes)} step" + ("s" if len(nodes) != 1 else ""))
        if edges:
            parts.append(f"{len(edges)} connection" + ("s" if len(edges) != 1 else ""))
        return self.document.edit(f"Delete {' and '.join(parts)}", change, reselect=nodes)

    def copy_selection(self) -> int:
        nodes = self.scene.selected_node_ids()
        if nodes:
            self.clipboard = wf_edit.copy_nodes(self.document.template, nodes)
            self._pastes = 0
        return len(nodes)

    def paste(self) -> list[str]:
        clip = self.clipboard
        if clip is None:
            return []
        self._pastes += 1
        offset = (40.0 * self._pastes, 40.0 * self._pastes)
        pasted: list[str] = []

        def change(template: Template) -> tuple[Template, list[str]]:
            after, id_map = wf_edit.paste(template, clip, offset)  # type: ignore[arg-type]
            pasted.extend(id_map.values())
            return after, list(id_map.values())

        count = len(clip.nodes)  # type: ignore[attr-defined]
        self.document.edit(f"Paste {count} step{'s' if count != 1 else ''}", change)
        return pasted

    def auto_layout(self) -> bool:
        return self.document.edit("Auto-layout", wf_edit.auto_layout)
