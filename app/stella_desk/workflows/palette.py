"""The palette: step types from the registry, grouped by category, dragged onto the canvas."""

from __future__ import annotations

import html
from collections.abc import Sequence

from PySide6.QtCore import QMimeData, Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QAbstractItemView, QTreeWidget, QTreeWidgetItem, QWidget

from stella_core.workflows.steps.spec import StepTypeSpec
from stella_desk.workflows.interactions import STEP_MIME, step_mime
from stella_desk.workflows.steps import (
    Registry,
    all_specs,
    category_title,
    input_properties,
    schema_hint,
    type_icon,
)

TYPE_ROLE = Qt.ItemDataRole.UserRole + 1


def describe(spec: StepTypeSpec) -> str:
    """The tooltip: what the step does, its inputs (required marked) and its outputs."""
    lines = [f"<b>{html.escape(spec.title)}</b> <code>{html.escape(spec.name)}</code>"]
    lines.append(html.escape(spec.description))
    required = set(spec.required_inputs)
    inputs = [
        f"{html.escape(k)}{'*' if k in required else ''} ({html.escape(schema_hint(v))})"
        for k, v in input_properties(spec).items()
    ]
    if inputs:
        lines.append("Inputs: " + ", ".join(inputs))
    if spec.outputs:
        lines.append("Outputs: " + ", ".join(html.escape(k) for k in spec.outputs))
    lines.append("<i>Drag onto the canvas, or double-click to add it in the middle.</i>")
    return "<br>".join(lines)


class StepPalette(QTreeWidget):
    activated_type = Signal(str)  # double-click (or Enter): add this type at the view's centre

    def __init__(self, registry: Registry, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("stepPalette")
        self.setHeaderHidden(True)
        self.setRootIsDecorated(False)
        self.setIndentation(8)
        self.setDragEnabled(True)
        self.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setUniformRowHeights(True)
        self.setMouseTracking(True)
        self.fill(all_specs(registry))
        self.itemActivated.connect(self._on_activated)

    def fill(self, specs: Sequence[StepTypeSpec]) -> None:
        self.clear()
        groups: dict[str, QTreeWidgetItem] = {}
        bold = QFont(self.font())
        bold.setBold(True)
        for spec in specs:
            group = groups.get(spec.category)
            if group is None:
                group = QTreeWidgetItem([category_title(spec.category).upper()])
                group.setFlags(Qt.ItemFlag.ItemIsEnabled)
                group.setFont(0, bold)
                group.setForeground(0, self.palette().placeholderText())
                self.addTopLevelItem(group)
                groups[spec.category] = group
            item = QTreeWidgetItem([spec.title])
            item.setIcon(0, type_icon(spec.name, spec.category))
            item.setToolTip(0, describe(spec))
            item.setData(0, TYPE_ROLE, spec.name)
            item.setFlags(
                Qt.ItemFlag.ItemIsEnabled
                | Qt.ItemFlag.ItemIsSelectable
                | Qt.ItemFlag.ItemIsDragEnabled
            )
            group.addChild(item)
        self.expandAll()

    def _type_items(self) -> list[QTreeWidgetItem]:
        items = []
        for i in range(self.topLevelItemCount()):
            group = self.topLevelItem(i)
            if group is None:
                continue
            for j in range(group.childCount()):
                child = group.child(j)
                if child is not None:
                    items.append(child)
        return items

    def type_names(self) -> list[str]:
        return [item.data(0, TYPE_ROLE) for item in self._type_items()]

    def item_for(self, type_name: str) -> QTreeWidgetItem | None:
        return next((i for i in self._type_items() if i.data(0, TYPE_ROLE) == type_name), None)

    # --- drag ----------------------------------------------------------------------------------
    def mimeTypes(self) -> list[str]:
        return [STEP_MIME]

    def mimeData(self, items: Sequence[QTreeWidgetItem]) -> QMimeData:
        names = [i.data(0, TYPE_ROLE) for i in items if i.data(0, TYPE_ROLE)]
        return step_mime(names[0] if names else "")

    def _on_activated(self, item: QTreeWidgetItem, _column: int) -> None:
        type_name = item.data(0, TYPE_ROLE)
        if type_name:
            self.activated_type.emit(type_name)
