"""A list input edited as a list: one item per row, Add and Remove, no JSON to type.

Items are strings as typed when the schema says so; other item types are read as JSON per item
("3", "true"). A blank row is a row being filled in: it is not part of the value yet.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from stella_desk import theme


class ListEditor(QWidget):
    edited = Signal()  # an item was committed, added or removed

    def __init__(self, item_schema: dict[str, Any] | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.item_kind = (item_schema or {}).get("type", "string")
        self.rows: list[QLineEdit] = []
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(3)
        self._items = QVBoxLayout()
        self._items.setSpacing(3)
        outer.addLayout(self._items)
        self.add_button = QPushButton("+ Add item")
        self.add_button.setProperty("kind", "flat")
        self.add_button.setToolTip("Add a row; each row is one item of the list")
        self.add_button.clicked.connect(self.add_item)
        outer.addWidget(self.add_button, 0, Qt.AlignmentFlag.AlignLeft)

    # --- values ----------------------------------------------------------------------------
    def texts(self) -> list[str]:
        return [row.text().strip() for row in self.rows if row.text().strip()]

    def values(self) -> tuple[list[Any], str | None]:
        """The list the rows stand for, or why a row cannot be read."""
        found: list[Any] = []
        for text in self.texts():
            if self.item_kind == "string":
                found.append(text)
                continue
            try:
                found.append(json.loads(text))
            except json.JSONDecodeError:
                return [], f"Item {text!r} is not a {self.item_kind}"
        return found, None

    def set_values(self, values: Sequence[Any]) -> None:
        texts = [v if isinstance(v, str) else json.dumps(v) for v in values]
        if texts == self.texts():
            return  # rows being filled in (blank ones) stay where they are
        for row in list(self.rows):
            self._drop(row)
        for text in texts:
            self._new_row(text)

    # --- rows ------------------------------------------------------------------------------
    def add_item(self) -> QLineEdit:
        """A blank row to type the next item into (committed when it is left)."""
        row = self._new_row("")
        row.setFocus(Qt.FocusReason.OtherFocusReason)
        return row

    def remove_item(self, index: int) -> None:
        if 0 <= index < len(self.rows):
            had_text = bool(self.rows[index].text().strip())
            self._drop(self.rows[index])
            if had_text:
                self.edited.emit()

    def _new_row(self, text: str) -> QLineEdit:
        box = QWidget()
        line = QHBoxLayout(box)
        line.setContentsMargins(0, 0, 0, 0)
        line.setSpacing(4)
        editor = QLineEdit(text)
        editor.setFont(theme.mono_font(9.5))
        editor.setPlaceholderText("item")
        remove = QToolButton()
        remove.setText("✕")
        remove.setToolTip("Remove this item")
        remove.setAutoRaise(True)
        line.addWidget(editor, 1)
        line.addWidget(remove)
        self._items.addWidget(box)
        self.rows.append(editor)
        self.setFocusProxy(self.rows[0])
        editor.editingFinished.connect(self._committed)
        remove.clicked.connect(lambda: self.remove_item(self.rows.index(editor)))
        return editor

    def _drop(self, editor: QLineEdit) -> None:
        self.rows.remove(editor)
        box = editor.parentWidget()
        if box is not None:
            box.hide()
            box.deleteLater()
        self.setFocusProxy(self.rows[0] if self.rows else self.add_button)

    def _committed(self) -> None:
        self.edited.emit()
