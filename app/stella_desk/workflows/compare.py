"""Comparing two versions of a template (or a version with the canvas) through the core's
`diff()`: steps added, removed and changed (field by field), connections added and removed.
The result is listed here and marked on the canvas for the steps the canvas shows.
"""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from stella_core.workflows.template import TemplateDiff
from stella_desk.chrome import label
from stella_desk.workflows.items import MARK_COLOURS, Mark

CANVAS = -1  # the "version" that stands for what the canvas holds now
NODE_ROLE = Qt.ItemDataRole.UserRole + 1


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "…"


def diff_marks(result: TemplateDiff) -> tuple[dict[str, Mark], dict[tuple[str, str], Mark]]:
    nodes: dict[str, Mark] = {}
    for node_id in result.nodes_added:
        nodes[node_id] = Mark.ADDED
    for node_id in result.nodes_removed:
        nodes[node_id] = Mark.REMOVED
    for change in result.nodes_changed:
        nodes[change.id] = Mark.CHANGED
    edges: dict[tuple[str, str], Mark] = {}
    for key in result.edges_added:
        edges[(key[0], key[1])] = Mark.ADDED
    for key in result.edges_removed:
        edges[(key[0], key[1])] = Mark.REMOVED
    return nodes, edges


class VersionCompare(QWidget):
    compare_requested = Signal(int, int)  # older, newer (CANVAS for the canvas)
    cleared = Signal()
    node_clicked = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 6, 0, 0)
        column.setSpacing(6)
        row = QHBoxLayout()
        row.setSpacing(6)
        row.addWidget(label("Compare"))
        self.older = QComboBox()
        self.newer = QComboBox()
        self.older.setMinimumWidth(100)
        self.newer.setMinimumWidth(100)
        row.addWidget(self.older)
        row.addWidget(label("with"))
        row.addWidget(self.newer)
        self.compare_button = QPushButton("Compare")
        self.clear_button = QPushButton("Clear")
        self.clear_button.setToolTip("Clear the comparison and its marks on the canvas")
        row.addWidget(self.compare_button)
        row.addWidget(self.clear_button)
        row.addStretch(1)
        column.addLayout(row)
        self.summary = label("", "muted")
        self.summary.setWordWrap(True)
        column.addWidget(self.summary)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Change", "Details"])
        self.tree.setColumnWidth(0, 260)
        self.tree.setUniformRowHeights(True)
        column.addWidget(self.tree, 1)
        self.result: TemplateDiff | None = None
        self.compare_button.clicked.connect(self._request)
        self.clear_button.clicked.connect(self.clear)
        self.tree.itemClicked.connect(self._clicked)
        self.set_versions([])

    def set_versions(self, versions: list[int]) -> None:
        """The stored versions of the canvas's template (any order)."""
        ordered = sorted(versions)
        for combo, with_canvas in ((self.older, False), (self.newer, True)):
            current = combo.currentData()
            combo.blockSignals(True)
            combo.clear()
            for version in ordered:
                combo.addItem(f"version {version}", version)
            if with_canvas:
                combo.addItem("the canvas (unsaved)", CANVAS)
            index = combo.findData(current)
            if index < 0:
                index = max(0, combo.count() - 2) if not with_canvas else combo.count() - 1
            combo.setCurrentIndex(index)
            combo.blockSignals(False)
        if len(ordered) >= 2:
            self.older.setCurrentIndex(self.older.findData(ordered[-2]))
            self.newer.setCurrentIndex(self.newer.findData(ordered[-1]))
        self.compare_button.setEnabled(bool(ordered))
        if not ordered:
            self.summary.setText("Save the workflow to compare its versions.")

    def select(self, older: int, newer: int) -> None:
        self.older.setCurrentIndex(self.older.findData(older))
        self.newer.setCurrentIndex(self.newer.findData(newer))

    def _request(self) -> None:
        older, newer = self.older.currentData(), self.newer.currentData()
        if older is not None and newer is not None:
            self.compare_requested.emit(int(older), int(newer))

    def clear(self) -> None:
        self.result = None
        self.tree.clear()
        self.summary.setText("")
        self.cleared.emit()

    def show_diff(self, result: TemplateDiff, older: str, newer: str) -> None:
        self.result = result
        self.tree.clear()
        groups = [
            ("Steps added", result.nodes_added, Mark.ADDED),
            ("Steps removed", result.nodes_removed, Mark.REMOVED),
        ]
        for title, ids, mark in groups:
            if ids:
                top = self._group(f"{title} ({len(ids)})", mark)
                for node_id in ids:
                    self._leaf(top, node_id, "", node_id)
        if result.nodes_changed:
            top = self._group(f"Steps changed ({len(result.nodes_changed)})", Mark.CHANGED)
            for change in result.nodes_changed:
                fields = ", ".join(c.field for c in change.changes)
                leaf = self._leaf(top, change.id, fields, change.id)
                for field in change.changes:
                    detail = f"{_short(field.old)} → {_short(field.new)}"
                    self._leaf(leaf, field.field, detail, change.id)
        for title, edges, mark in (
            ("Connections added", result.edges_added, Mark.ADDED),
            ("Connections removed", result.edges_removed, Mark.REMOVED),
        ):
            if edges:
                top = self._group(f"{title} ({len(edges)})", mark)
                for source, target in edges:
                    self._leaf(top, f"{source} → {target}", "", None)
        other = [c.field for c in result.changes] + [
            f"input {n}" for n in (*result.inputs_added, *result.inputs_removed)
        ]
        if other or result.nodes_moved:
            top = self._group("Workflow", None)
            if other:
                self._leaf(top, "changed", ", ".join(other), None)
            if result.nodes_moved:
                self._leaf(top, f"{len(result.nodes_moved)} steps moved", "", None)
        self.tree.expandToDepth(0)
        if result.is_empty:
            self.summary.setText(f"{older} and {newer} are the same.")
        else:
            self.summary.setText(
                f"{older} → {newer}: steps {len(result.nodes_added)} added, "
                f"{len(result.nodes_removed)} removed, {len(result.nodes_changed)} changed; "
                f"connections {len(result.edges_added)} added, "
                f"{len(result.edges_removed)} removed"
            )

    def _group(self, title: str, mark: Mark | None) -> QTreeWidgetItem:
        item = QTreeWidgetItem([title, ""])
        font = item.font(0)
        font.setBold(True)
        item.setFont(0, font)
        if mark is not None:
            item.setForeground(0, QBrush(MARK_COLOURS[mark]))
        self.tree.addTopLevelItem(item)
        return item

    def _leaf(
        self, parent: QTreeWidgetItem, text: str, detail: str, node_id: str | None
    ) -> QTreeWidgetItem:
        item = QTreeWidgetItem([text, detail])
        item.setToolTip(1, detail)
        item.setData(0, NODE_ROLE, node_id)
        if not detail:
            item.setForeground(1, QBrush(QColor("#687086")))
        parent.addChild(item)
        return item

    def _clicked(self, item: QTreeWidgetItem, _column: int) -> None:
        node_id = item.data(0, NODE_ROLE)
        if node_id:
            self.node_clicked.emit(node_id)
