"""The canvas scene: follows the document (orangecanvas/canvas/scene.py is the model).

Document signals create, update and remove items; `item_for_node` and `item_for_edge` map the
document's ids to them. One edit touches only the items it names. Mouse and key handling is not
here: the controller installs itself as an event filter and runs small interaction objects.
"""

from __future__ import annotations

from collections.abc import Iterable

from PySide6.QtCore import QObject, QPointF, QRectF, QTimer, Signal
from PySide6.QtWidgets import QGraphicsScene

from stella_core.workflows.model import Problem
from stella_desk.workflows.document import EdgeKey, WorkflowDocument
from stella_desk.workflows.items import (
    CARD_HEIGHT,
    CARD_WIDTH,
    EdgeItem,
    Mark,
    NodeItem,
    PortItem,
    RollbackLane,
)
from stella_desk.workflows.steps import Registry, spec_for

SCENE_MARGIN = 600.0


class WorkflowScene(QGraphicsScene):
    selected_nodes_changed = Signal(list)  # ids of the selected cards, in document order
    selected_edges_changed = Signal(list)  # keys of the selected edges

    def __init__(
        self, document: WorkflowDocument, registry: Registry, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.document = document
        self.registry = registry
        self.item_for_node: dict[str, NodeItem] = {}
        self.item_for_edge: dict[EdgeKey, EdgeItem] = {}
        self.snapping = False  # set by the move interaction while a person drags cards
        self.lane = RollbackLane()
        self.addItem(self.lane)
        self._selected_edges: set[EdgeKey] = set()
        self._marks: dict[str, Mark] = {}
        self._edge_marks: dict[EdgeKey, Mark] = {}
        self._problem_counts: dict[str, int] = {}
        # Coalesced: a drag of rollback cards moves the lane once per event-loop turn.
        self._lane_timer = QTimer(self)
        self._lane_timer.setSingleShot(True)
        self._lane_timer.setInterval(0)
        self._lane_timer.timeout.connect(self._fit_lane)

        document.reset.connect(self.rebuild)
        document.node_added.connect(self._on_node_added)
        document.node_removed.connect(self._on_node_removed)
        document.node_changed.connect(self._on_node_changed)
        document.edge_added.connect(self._on_edge_added)
        document.edge_removed.connect(self._on_edge_removed)
        document.layout_changed.connect(self._on_layout_changed)
        document.problems_changed.connect(self._on_problems)
        document.selection_hint.connect(self.select_nodes)
        self.selectionChanged.connect(self._on_selection)
        self.rebuild()

    # --- following the document ----------------------------------------------------------
    def rebuild(self) -> None:
        """Start over from the document (a template was opened, not edited)."""
        self.blockSignals(True)  # no selection signal per removed item
        try:
            for edge in self.item_for_edge.values():
                self.removeItem(edge)
            for card in self.item_for_node.values():
                self.removeItem(card)
        finally:
            self.blockSignals(False)
        self.item_for_edge.clear()
        self.item_for_node.clear()
        self._selected_edges.clear()
        self._marks.clear()
        self._edge_marks.clear()
        self._problem_counts.clear()
        template = self.document.template
        for index, node in enumerate(template.nodes):
            self._add_card(node.id, index)
        for link in template.edges:
            self._on_edge_added(link.source, link.target)
        self._fit_lane()
        self._update_rect()
        self._on_selection()

    def _position(self, node_id: str, index: int | None = None) -> QPointF:
        pos = self.document.template.layout.positions.get(node_id)
        if pos is not None:
            return QPointF(pos.x, pos.y)
        # No stored position (a hand-written template): a column, until someone moves it.
        if index is None:
            index = len(self.item_for_node)
        return QPointF(0.0, index * (CARD_HEIGHT + 30))

    def _add_card(self, node_id: str, index: int | None = None) -> NodeItem | None:
        node = self.document.node(node_id)
        if node is None:
            return None
        card = NodeItem(node, spec_for(self.registry, node.type))
        card.setPos(self._position(node_id, index))
        self.addItem(card)
        self.item_for_node[node_id] = card
        return card

    def _on_node_added(self, node_id: str) -> None:
        card = self._add_card(node_id)
        if card is not None:
            self._grow_rect(card)
            if card.node.rollback:
                self.rollback_moved()

    def _on_node_removed(self, node_id: str) -> None:
        card = self.item_for_node.pop(node_id, None)
        if card is None:
            return
        for edge in list(card.edges):  # normally already gone: edges are removed first
            self._drop_edge(edge)
        self._marks.pop(node_id, None)
        self._problem_counts.pop(node_id, None)
        self.removeItem(card)
        if card.node.rollback:
            self.rollback_moved()

    def _on_node_changed(self, node_id: str) -> None:
        card = self.item_for_node.get(node_id)
        node = self.document.node(node_id)
        if card is None or node is None:
            return
        was_rollback = card.node.rollback
        card.set_node(node, spec_for(self.registry, node.type))
        if was_rollback or node.rollback:
            self.rollback_moved()

    def _on_edge_added(self, source: str, target: str) -> None:
        a, b = self.item_for_node.get(source), self.item_for_node.get(target)
        if a is None or b is None or (source, target) in self.item_for_edge:
            return  # an edge to an unknown node: the problems panel names it
        edge = EdgeItem(a, b)
        self.addItem(edge)
        self.item_for_edge[(source, target)] = edge

    def _on_edge_removed(self, source: str, target: str) -> None:
        edge = self.item_for_edge.get((source, target))
        if edge is not None:
            self._drop_edge(edge)

    def _drop_edge(self, edge: EdgeItem) -> None:
        edge.detach()
        self.item_for_edge.pop(edge.key, None)
        self._edge_marks.pop(edge.key, None)
        if edge.key in self._selected_edges:
            self._selected_edges.discard(edge.key)
            self.selected_edges_changed.emit(self.selected_edge_keys())
        self.removeItem(edge)

    def _on_layout_changed(self, node_ids: list[str]) -> None:
        for node_id in node_ids:
            card = self.item_for_node.get(node_id)
            if card is not None:
                card.setPos(self._position(node_id))  # its edges follow in itemChange
                self._grow_rect(card)

    def _on_problems(self, problems: list[Problem]) -> None:
        counts: dict[str, int] = {}
        for problem in problems:
            if problem.node is not None:
                counts[problem.node] = counts.get(problem.node, 0) + 1
        for node_id in set(counts) | set(self._problem_counts):
            card = self.item_for_node.get(node_id)
            if card is not None:
                card.set_problem_count(counts.get(node_id, 0))
        self._problem_counts = counts

    # --- the rollback lane and the scene rectangle ------------------------------------------
    def rollback_moved(self) -> None:
        self._lane_timer.start()

    def _fit_lane(self) -> None:
        self.lane.fit([c for c in self.item_for_node.values() if c.node.rollback])

    def _update_rect(self) -> None:
        bounds = QRectF()
        for card in self.item_for_node.values():
            bounds = bounds.united(card.sceneBoundingRect())
        if bounds.isNull():
            bounds = QRectF(0, 0, CARD_WIDTH, CARD_HEIGHT)
        self.setSceneRect(bounds.adjusted(-SCENE_MARGIN, -SCENE_MARGIN, SCENE_MARGIN, SCENE_MARGIN))

    def _grow_rect(self, card: NodeItem) -> None:
        # Only grows: shrinking on every move would make the view jump under the pointer.
        wanted = card.sceneBoundingRect().adjusted(
            -SCENE_MARGIN, -SCENE_MARGIN, SCENE_MARGIN, SCENE_MARGIN
        )
        rect = self.sceneRect()
        if not rect.contains(wanted):
            self.setSceneRect(rect.united(wanted))

    def content_rect(self) -> QRectF:
        """Where the cards are (for fit), without the scrolling margin."""
        bounds = QRectF()
        for card in self.item_for_node.values():
            bounds = bounds.united(card.sceneBoundingRect())
        if self.lane.isVisible():
            bounds = bounds.united(self.lane.sceneBoundingRect())
        return bounds

    # --- selection and marks ---------------------------------------------------------------
    def selected_node_ids(self) -> list[str]:
        chosen = {i.node_id for i in self.selectedItems() if isinstance(i, NodeItem)}
        return [n.id for n in self.document.template.nodes if n.id in chosen]

    def selected_edge_keys(self) -> list[EdgeKey]:
        return sorted(self._selected_edges)

    def select_edge(self, key: EdgeKey, *, add: bool = False) -> None:
        """Edges have their own selection (see EdgeItem); cards keep Qt's."""
        wanted = (set(self._selected_edges) if add else set()) | {key}
        self._set_edge_selection(wanted)

    def clear_edge_selection(self) -> None:
        self._set_edge_selection(set())

    def _set_edge_selection(self, keys: set[EdgeKey]) -> None:
        if keys == self._selected_edges:
            return
        for key in self._selected_edges ^ keys:
            edge = self.item_for_edge.get(key)
            if edge is not None:
                edge.set_selected(key in keys)
        self._selected_edges = {k for k in keys if k in self.item_for_edge}
        self.selected_edges_changed.emit(self.selected_edge_keys())

    def select_nodes(self, node_ids: Iterable[str]) -> None:
        wanted = set(node_ids)
        self.clear_edge_selection()
        self.blockSignals(True)
        try:
            self.clearSelection()
            for node_id in wanted:
                card = self.item_for_node.get(node_id)
                if card is not None:
                    card.setSelected(True)
        finally:
            self.blockSignals(False)
        self._on_selection()

    def select_all(self) -> None:
        self.blockSignals(True)
        try:
            for card in self.item_for_node.values():
                card.setSelected(True)
        finally:
            self.blockSignals(False)
        self._on_selection()

    def _on_selection(self) -> None:
        self.selected_nodes_changed.emit(self.selected_node_ids())

    def set_marks(self, nodes: dict[str, Mark], edges: dict[EdgeKey, Mark] | None = None) -> None:
        """Emphasise cards and edges (version comparison); replaces the previous marks."""
        edges = edges or {}
        for node_id in set(self._marks) | set(nodes):
            card = self.item_for_node.get(node_id)
            if card is not None:
                card.set_mark(nodes.get(node_id))
        for key in set(self._edge_marks) | set(edges):
            edge = self.item_for_edge.get(key)
            if edge is not None:
                edge.set_mark(edges.get(key))
        self._marks = dict(nodes)
        self._edge_marks = dict(edges)

    def set_candidate(self, card: NodeItem, mark: Mark | None, port: PortItem | None) -> None:
        """Feedback while an edge is drawn; clearing it restores the comparison mark."""
        card.set_mark(mark or self._marks.get(card.node_id))
        if port is not None:
            port.set_mark(mark)

    def card_at(self, pos: QPointF, exclude: NodeItem | None = None) -> NodeItem | None:
        """The card (or a card's port) under a scene position."""
        for item in self.items(pos):
            card = item if isinstance(item, NodeItem) else getattr(item, "card", None)
            if isinstance(card, NodeItem) and card is not exclude:
                return card
        return None
