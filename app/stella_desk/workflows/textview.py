"""The JSON text of the template: exactly what the canvas holds, editable as a whole.

Applying the text goes through the core's `load_document` (parse, migrate, validate the shape);
errors show in place and change nothing; a successful apply is one undoable command.
"""

from __future__ import annotations

import json

from PySide6.QtGui import QShowEvent, QTextCursor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from stella_core.workflows import template as wf_template
from stella_core.workflows.model import Template
from stella_desk import theme
from stella_desk.chrome import label
from stella_desk.workflows.document import WorkflowDocument


def template_text(template: Template) -> str:
    return json.dumps(template.to_document(), indent=2, ensure_ascii=False) + "\n"


class TemplateText(QWidget):
    def __init__(self, document: WorkflowDocument, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.document = document
        self._shown: Template | None = None  # the template the text was made from
        self._stale = True
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 8, 0, 0)
        column.setSpacing(6)
        self.editor = QPlainTextEdit()
        self.editor.setObjectName("templateText")
        self.editor.setFont(theme.mono_font(10))
        self.editor.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.editor.setTabStopDistance(16)
        column.addWidget(self.editor, 1)
        self.error = label(kind="error", selectable=True)
        self.error.setWordWrap(True)
        self.error.hide()
        column.addWidget(self.error)
        row = QHBoxLayout()
        self.status = label("", "muted")
        row.addWidget(self.status, 1)
        self.revert_button = QPushButton("Revert")
        self.revert_button.setToolTip("Show the canvas's workflow again, dropping text edits")
        self.apply_button = QPushButton("Apply to canvas")
        self.apply_button.setProperty("kind", "primary")
        row.addWidget(self.revert_button)
        row.addWidget(self.apply_button)
        column.addLayout(row)
        self.apply_button.clicked.connect(self.apply)
        self.revert_button.clicked.connect(self.revert)
        self.editor.textChanged.connect(self._on_text_changed)
        document.template_changed.connect(self._on_document_changed)
        self._set_dirty(False)

    @property
    def dirty(self) -> bool:
        return self.editor.document().isModified()

    def text(self) -> str:
        return self.editor.toPlainText()

    def revert(self) -> None:
        self._shown = self.document.template
        self.editor.blockSignals(True)
        try:
            self.editor.setPlainText(template_text(self._shown))
            self.editor.document().setModified(False)
        finally:
            self.editor.blockSignals(False)
        self._stale = False
        self._set_dirty(False)
        self.error.hide()

    def apply(self) -> bool:
        """Replace the document by the text (one undo command); False with an error shown."""
        try:
            raw = json.loads(self.text())
        except json.JSONDecodeError as exc:
            self._show_error(f"Not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})")
            self._move_to(exc.lineno, exc.colno)
            return False
        try:
            template = wf_template.load_document(raw)
        except wf_template.TemplateError as exc:
            problems = getattr(exc, "problems", None) or []
            lines = [
                f"{p.node or 'workflow'}{'.' + p.field if p.field else ''}: {p.message}"
                for p in problems
            ] or [str(exc)]
            self._show_error("Not a valid workflow:\n" + "\n".join(lines[:12]))
            return False
        self.error.hide()
        self.document.edit("Edit as JSON", lambda _t: template)
        self.revert()
        return True

    def _show_error(self, message: str) -> None:
        self.error.setText(message)
        self.error.show()

    def _move_to(self, line: int, column: int) -> None:
        block = self.editor.document().findBlockByLineNumber(max(0, line - 1))
        cursor = QTextCursor(block)
        cursor.movePosition(
            QTextCursor.MoveOperation.Right, QTextCursor.MoveMode.MoveAnchor, max(0, column - 1)
        )
        self.editor.setTextCursor(cursor)

    def _on_text_changed(self) -> None:
        self._set_dirty(self.dirty)

    def _set_dirty(self, dirty: bool) -> None:
        self.apply_button.setEnabled(dirty)
        self.revert_button.setEnabled(dirty)
        if dirty:
            self.status.setText("Edited: apply to update the canvas (one undo step).")
        elif self._stale and self._shown is not None:
            self.status.setText("The canvas changed since this text was shown.")
        else:
            self.status.setText("The workflow exactly as the canvas holds it.")

    def _on_document_changed(self) -> None:
        if self.document.template is self._shown:
            return
        self._stale = True
        if self.dirty:
            self._set_dirty(True)
            self.status.setText("The canvas changed while you edited: Revert to see it.")
        elif self.isVisible():
            self.revert()

    def showEvent(self, event: QShowEvent) -> None:
        if self._stale and not self.dirty:
            self.revert()
        super().showEvent(event)
