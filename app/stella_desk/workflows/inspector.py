"""The inspector: the selected step's fields, each edit one undoable command.

Inputs get one row per input the step type declares (required ones marked), with the declared
type as a hint. A value is a literal (JSON for lists, maps and numbers; plain text for strings)
or a `${{ expression }}`. While the person types, the candidate value is checked ~200 ms after
the last key (the literal against the declared schema here, the whole template by the core's
`validate()` on a worker thread) and the error shows under the field; the value is committed
when editing finishes (Enter or leaving the field).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonschema
from PySide6.QtCore import QCoreApplication, QEvent, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from stella_core.errors import StellaError
from stella_core.workflows import edit as wf_edit
from stella_core.workflows.expressions import is_expression
from stella_core.workflows.model import NODE_ID_PATTERN, Node, OnFailure, Retry, Template
from stella_desk import theme
from stella_desk.chrome import label
from stella_desk.ops import Ops
from stella_desk.workflows.document import WorkflowDocument
from stella_desk.workflows.listedit import ListEditor
from stella_desk.workflows.steps import (
    Registry,
    input_properties,
    schema_hint,
    spec_for,
    type_icon,
)
from stella_desk.workflows.validation import DEBOUNCE_MS, Validator, field_matches

REMOVE = object()  # an emptied input row: the input is removed from the step
TEMPLATE_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"

ON_FAILURE_TEXT = {
    OnFailure.FAIL: "fail: the run fails",
    OnFailure.CONTINUE: "continue: dependants run anyway",
    OnFailure.ROLLBACK: "rollback: run the rollback path",
}


def value_text(value: Any) -> str:
    """How an input value reads in its field: strings as they are, the rest as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def parse_value(text: str, schema: dict[str, Any]) -> tuple[Any, str | None]:
    """The value a field's text stands for, or an error to show under the field."""
    if not text.strip():
        return REMOVE, None
    kind = schema.get("type")
    if is_expression(text) or kind == "string":
        return text, None  # expressions are checked by the core against declared types
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        if kind is None:
            return text, None
        example = {
            "array": '["a", "b"]',
            "object": '{"KEY": "value"}',
            "integer": "3",
            "number": "1.5",
            "boolean": "true",
        }.get(str(kind), "a JSON value")
        return None, f"Expected {schema_hint(schema)} as JSON (e.g. {example}) or ${{{{ … }}}}"
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(value)
    )
    if error is not None:
        return None, f"Expected {schema_hint(schema)}: {error.message}"
    return value, None


@dataclass
class Row:
    """One field block: caption, editor, the error under it, and its debounce timer."""

    key: str  # "name", "inputs.url", "retry.max_attempts", …
    box: QWidget
    editor: QWidget
    error: QLabel
    timer: QTimer | None = None
    dirty: bool = False  # typed into and not yet committed: refreshes leave it alone

    def show_error(self, message: str | None) -> None:
        self.error.setText(message or "")
        self.error.setVisible(bool(message))
        if isinstance(self.editor, QLineEdit):
            self.editor.setProperty("invalid", bool(message))
            theme.repolish(self.editor)


class NodeInspector(QScrollArea):
    """Shows one step (or, with none selected, the workflow's own name and description)."""

    renamed = Signal(str)  # the shown step's new id
    field_checked = Signal(str)  # a typed value was checked (row key); its error is shown

    def __init__(
        self,
        document: WorkflowDocument,
        registry: Registry,
        validator: Validator,
        ops: Ops,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.document = document
        self.registry = registry
        self.validator = validator
        self.ops = ops
        self.node_id: str | None = None
        self.rows: dict[str, Row] = {}
        self._selection: list[str] = []
        self._shown_type: str | None = None
        self._check_generation: dict[str, int] = {}
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self._body = QWidget()
        self._body.setObjectName("inspectorBody")
        self.setWidget(self._body)
        self._column = QVBoxLayout(self._body)
        self._column.setContentsMargins(14, 12, 14, 14)
        self._column.setSpacing(4)
        document.node_changed.connect(self._on_node_changed)
        document.node_removed.connect(self._on_node_removed)
        document.meta_changed.connect(self._on_meta_changed)
        document.reset.connect(lambda: self.show_selection([]))
        document.problems_changed.connect(self._on_problems)
        self.show_selection([])

    # --- what is shown -------------------------------------------------------------------------
    def show_selection(self, node_ids: list[str]) -> None:
        self._show_selection(node_ids)
        # Size the scrolled body for its new rows now, not on a later turn of the event loop:
        # until then the rows would be squeezed into the previous content's height.
        QCoreApplication.sendPostedEvents(self._body, QEvent.Type.LayoutRequest)

    def _show_selection(self, node_ids: list[str]) -> None:
        self._selection = list(node_ids)
        if len(node_ids) == 1 and self.document.node(node_ids[0]) is not None:
            node = self.document.node(node_ids[0])
            assert node is not None
            if node.id != self.node_id or node.type != self._shown_type:
                self._build_node(node)
            else:
                self._refresh(node)
            return
        self.node_id = None
        self._shown_type = None
        if node_ids:
            self._build_message(
                f"{len(node_ids)} steps selected",
                "Move them together, copy, delete or auto-layout. Select one step to edit it.",
            )
        else:
            self._build_template()

    def _clear(self) -> None:
        for row in self.rows.values():
            if row.timer is not None:
                row.timer.stop()
        self.rows.clear()
        while self._column.count():
            item = self._column.takeAt(0)
            if item is None:
                break
            widget = item.widget()
            if widget is not None:
                widget.hide()
                widget.deleteLater()
            elif item.layout() is not None:
                _drop_layout(item.layout())

    def _section(self, title: str) -> None:
        caption = label(title.upper(), "section")
        caption.setContentsMargins(0, 10, 0, 2)
        self._column.addWidget(caption)

    def _build_message(self, title: str, text: str) -> None:
        self._clear()
        self._column.addWidget(label(title, "heading"))
        body = label(text, "muted")
        body.setWordWrap(True)
        self._column.addWidget(body)
        self._column.addStretch(1)

    def _build_template(self) -> None:
        self._clear()
        template = self.document.template
        self._column.addWidget(label("Workflow", "heading"))
        hint = label("Select a step on the canvas to edit it.", "muted")
        hint.setWordWrap(True)
        self._column.addWidget(hint)
        self._section("Workflow")
        name = self._line("template.name", "Name", template.name, required=True)
        name_row = self.rows["template.name"]
        name.textEdited.connect(lambda _t: setattr(name_row, "dirty", True))
        name.editingFinished.connect(lambda: self._commit_template_name(name_row))
        description = self._line("template.description", "Description", template.description)
        description.editingFinished.connect(lambda: self._commit_template_description(description))
        count = f"{len(template.nodes)} steps, {len(template.edges)} connections"
        self._column.addWidget(label(count, "muted"))
        self._column.addStretch(1)

    def _build_node(self, node: Node) -> None:
        self._clear()
        self.node_id = node.id
        self._shown_type = node.type
        spec = spec_for(self.registry, node.type)

        head = QHBoxLayout()
        head.setSpacing(8)
        icon = QLabel()
        icon.setPixmap(type_icon(node.type, spec.category if spec else None, 22).pixmap(22, 22))
        head.addWidget(icon)
        title = label(spec.title if spec else node.type, "heading")
        head.addWidget(title, 1)
        self._column.addLayout(head)
        about = label(spec.description if spec else "This step type is not registered.", "muted")
        about.setWordWrap(True)
        self._column.addWidget(about)

        self._section("Step")
        # Every commit names its node and widgets: a field that loses focus because the
        # inspector moves to another step still commits to the step it belonged to.
        node_id = node.id
        ident = self._line("id", "Id", node.id, required=True)
        id_row = self.rows["id"]
        ident.editingFinished.connect(lambda: self._commit_id(node_id, id_row))
        name = self._line("name", "Name", node.name)
        name_row = self.rows["name"]
        name.editingFinished.connect(
            lambda: self._commit_field(node_id, "name", name.text(), name_row)
        )
        kind = self._line("type", "Type", node.type)
        kind.setReadOnly(True)
        kind.setEnabled(False)

        self._section("Inputs")
        declared = input_properties(spec)
        required = set(spec.required_inputs) if spec else set()
        if not declared and not node.inputs:
            self._column.addWidget(label("This step type takes no inputs.", "muted"))
        for key, schema in declared.items():
            self._input_row(node_id, key, schema, node.inputs.get(key), key in required)
        for key, value in node.inputs.items():
            if key not in declared:  # shown so nothing is hidden; validation names it
                self._input_row(node_id, key, {}, value, False, undeclared=True)

        self._section("When it fails")
        attempts = QSpinBox()
        attempts.setRange(1, 100)
        self._add_row("retry.max_attempts", "Max attempts", attempts)
        backoff = QSpinBox()
        backoff.setRange(0, 3_600_000)
        backoff.setSingleStep(500)
        backoff.setSuffix(" ms")
        self._add_row("retry.backoff_initial_ms", "Backoff, first delay", backoff)
        factor = QDoubleSpinBox()
        factor.setRange(1.0, 10.0)
        factor.setSingleStep(0.5)
        factor.setDecimals(2)
        self._add_row("retry.backoff_factor", "Backoff factor", factor, hint="multiplier")
        retry_row = self.rows["retry.backoff_factor"]
        for box in (attempts, backoff, factor):
            box.editingFinished.connect(
                lambda: self._commit_retry(node_id, attempts, backoff, factor, retry_row)
            )
        timeout = QSpinBox()
        timeout.setRange(0, 7 * 24 * 3600)
        timeout.setSpecialValueText("no timeout")
        timeout.setSuffix(" s")
        timeout_row = self._add_row("timeout_seconds", "Timeout", timeout)
        timeout.editingFinished.connect(
            lambda: self._commit_field(
                node_id, "timeout_seconds", timeout.value() or None, timeout_row
            )
        )
        on_failure = QComboBox()
        on_failure.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        on_failure.setMinimumContentsLength(12)
        for value in OnFailure:
            on_failure.addItem(ON_FAILURE_TEXT.get(value, value.value), value.value)
        failure_row = self._add_row("on_failure", "On failure", on_failure)
        on_failure.activated.connect(
            lambda _i: self._commit_field(
                node_id, "on_failure", OnFailure(on_failure.currentData()), failure_row
            )
        )

        self._section("When it runs")
        condition = self._line("condition", "Condition", node.condition or "")
        condition.setPlaceholderText("always (or an expression, e.g. inputs.canary)")
        condition_row = self.rows["condition"]
        condition.editingFinished.connect(
            lambda: self._commit_condition(node_id, condition, condition_row)
        )
        self._watch(condition, "condition", lambda text: self._condition_candidate(node_id, text))
        rollback = QCheckBox("Part of the rollback path")
        rollback.setToolTip("Runs only when a step with on_failure: rollback fails")
        rollback_row = self._add_row("rollback", "", rollback)
        rollback.toggled.connect(
            lambda on: self._commit_rollback(node_id, rollback, on, rollback_row)
        )
        self._column.addStretch(1)
        self._refresh(node)
        self._on_problems(self.document.problems)

    # --- rows ----------------------------------------------------------------------------------
    def _add_row(
        self, key: str, caption: str, editor: QWidget, *, required: bool = False, hint: str = ""
    ) -> Row:
        box = QWidget()
        column = QVBoxLayout(box)
        column.setContentsMargins(0, 2, 0, 4)
        column.setSpacing(3)
        if caption:
            star = f" <span style='color:{theme.DANGER}'>*</span>" if required else ""
            text = f"{caption}{star}"
            if hint:
                text += f" <span style='color:{theme.MUTED}'>· {hint}</span>"
            cap = QLabel(text)
            cap.setObjectName("fieldCaption")
            cap.setWordWrap(True)  # a long hint wraps instead of widening the inspector
            column.addWidget(cap)
        column.addWidget(editor)
        error = label(kind="error")
        error.setWordWrap(True)
        error.hide()
        column.addWidget(error)
        self._column.addWidget(box)
        editor.setObjectName(f"field:{key}")
        if isinstance(editor, QLineEdit):
            editor.setCursorPosition(0)  # show the start of a long value, not its end
        row = Row(key, box, editor, error)
        self.rows[key] = row
        return row

    def _line(self, key: str, caption: str, text: str, *, required: bool = False) -> QLineEdit:
        editor = QLineEdit(text)
        self._add_row(key, caption, editor, required=required)
        return editor

    def _input_row(
        self,
        node_id: str,
        key: str,
        schema: dict[str, Any],
        value: Any,
        required: bool,
        *,
        undeclared: bool = False,
    ) -> None:
        hint = "not declared by this step type" if undeclared else schema_hint(schema)
        if schema.get("type") == "array" and not isinstance(value, str):
            # A list gets a row per item; an expression (a string) keeps the text field.
            items = ListEditor(schema.get("items"))
            items.set_values(value or [])
            if schema.get("description"):
                items.setToolTip(str(schema["description"]))
            list_row = self._add_row(f"inputs.{key}", key, items, required=required, hint=hint)
            items.edited.connect(lambda: self._commit_list(node_id, key, schema, list_row))
            return
        editor = QLineEdit(value_text(value))
        editor.setFont(theme.mono_font(9.5))
        if schema.get("description"):
            editor.setToolTip(str(schema["description"]))
        editor.setPlaceholderText(
            "required" if required else "optional: a literal or ${{ expression }}"
        )
        row_key = f"inputs.{key}"
        row = self._add_row(row_key, key, editor, required=required, hint=hint)
        editor.editingFinished.connect(lambda: self._commit_input(node_id, key, schema, row))
        self._watch(editor, row_key, lambda text: self._input_candidate(node_id, key, schema, text))

    def _watch(
        self,
        editor: QLineEdit,
        key: str,
        candidate: Callable[[str], tuple[Template | None, str | None]],
    ) -> None:
        """Check the typed value ~200 ms after the last key stroke."""
        row = self.rows[key]
        timer = QTimer(editor)
        timer.setSingleShot(True)
        timer.setInterval(DEBOUNCE_MS)
        row.timer = timer

        def typed(_text: str) -> None:
            row.dirty = True
            timer.start()

        def fire() -> None:
            template, error = candidate(editor.text())
            if error is not None or template is None:
                row.show_error(error)
                self.field_checked.emit(key)
                return
            self.ops.spawn(self._check_candidate(row, template))

        editor.textEdited.connect(typed)
        timer.timeout.connect(fire)

    async def _check_candidate(self, row: Row, template: Template) -> None:
        generation = self._check_generation.get(row.key, 0) + 1
        self._check_generation[row.key] = generation
        problems = await self.validator.check(template)
        if self._check_generation.get(row.key) != generation or self.rows.get(row.key) is not row:
            return
        mine = [
            p.message
            for p in problems
            if p.node == self.node_id and field_matches(p.field, row.key)
        ]
        row.show_error("\n".join(mine) if mine else None)
        self.field_checked.emit(row.key)

    def _input_candidate(
        self, node_id: str, key: str, schema: dict[str, Any], text: str
    ) -> tuple[Template | None, str | None]:
        value, error = parse_value(text, schema)
        node = self.document.node(node_id)
        if error is not None or node is None:
            return None, error
        template = self.document.template
        try:
            if value is REMOVE:
                if key not in node.inputs:
                    return template, None
                return wf_edit.remove_input(template, node_id, key), None
            return wf_edit.set_input(template, node_id, key, value), None
        except StellaError as exc:
            return None, exc.message

    def _condition_candidate(self, node_id: str, text: str) -> tuple[Template | None, str | None]:
        if self.document.node(node_id) is None:
            return None, None
        value = text.strip() or None
        try:
            template = self.document.template
            return wf_edit.set_node_field(template, node_id, "condition", value), None
        except StellaError as exc:
            return None, exc.message

    # --- values in, edits out ------------------------------------------------------------------
    def _refresh(self, node: Node) -> None:
        """Put the document's values in every row the person is not typing into."""
        values: dict[str, Any] = {
            "id": node.id,
            "name": node.name,
            "type": node.type,
            "condition": node.condition or "",
            "retry.max_attempts": node.retry.max_attempts,
            "retry.backoff_initial_ms": node.retry.backoff_initial_ms,
            "retry.backoff_factor": node.retry.backoff_factor,
            "timeout_seconds": node.timeout_seconds or 0,
            "on_failure": node.on_failure.value,
            "rollback": node.rollback,
        }
        for key, row in self.rows.items():
            if row.dirty:
                continue
            if key.startswith("inputs.") and isinstance(row.editor, ListEditor):
                current = node.inputs.get(key.removeprefix("inputs."))
                value: Any = current if isinstance(current, list) else []
            elif key.startswith("inputs."):
                value = value_text(node.inputs.get(key.removeprefix("inputs.")))
            elif key in values:
                value = values[key]
            else:
                continue
            _set_editor(row.editor, value)

    def _on_node_changed(self, node_id: str) -> None:
        if node_id != self.node_id:
            return
        node = self.document.node(node_id)
        if node is not None:
            self._refresh(node)

    def _on_node_removed(self, node_id: str) -> None:
        if node_id == self.node_id:
            self.show_selection([i for i in self._selection if i != node_id])

    def _on_meta_changed(self) -> None:
        if self.node_id is None and "template.name" in self.rows:
            template = self.document.template
            for key, value in (
                ("template.name", template.name),
                ("template.description", template.description),
            ):
                row = self.rows[key]
                if not row.dirty:
                    _set_editor(row.editor, value)

    def _on_problems(self, problems: list[Any]) -> None:
        if self.node_id is None:
            return
        for key, row in self.rows.items():
            if row.dirty:
                continue  # the as-you-type check owns this row's error until it is committed
            mine = [
                p.message
                for p in problems
                if p.node == self.node_id and field_matches(p.field, key)
            ]
            row.show_error("\n".join(mine) if mine else None)

    def _edit(
        self, text: str, change: Callable[[Template], Template], row: Row | None, **kw: Any
    ) -> bool:
        try:
            done = self.document.edit(text, change, **kw)
        except (StellaError, ValueError, LookupError) as exc:  # EditError; pydantic's errors
            if row is not None:
                row.show_error(getattr(exc, "message", None) or str(exc))
            return False
        if row is not None and self.rows.get(row.key) is row:
            row.show_error(None)
        return done

    def _commit_field(self, node_id: str, field: str, value: Any, row: Row | None) -> None:
        node = self.document.node(node_id)
        if node is None or getattr(node, field) == value:
            return
        self._edit(
            f"Set {field} of {node_id}",
            lambda t: wf_edit.set_node_field(t, node_id, field, value),
            row,
        )

    def _commit_input(self, node_id: str, key: str, schema: dict[str, Any], row: Row) -> None:
        node = self.document.node(node_id)
        editor = row.editor
        assert isinstance(editor, QLineEdit)
        value, error = parse_value(editor.text(), schema)
        if node is None:
            return
        if error is not None:
            row.show_error(error)
            return  # the field keeps the text and its error; the document keeps its value
        row.dirty = False
        if value is REMOVE:
            if key in node.inputs:
                self._edit(
                    f"Remove input {key} of {node_id}",
                    lambda t: wf_edit.remove_input(t, node_id, key),
                    row,
                )
            return
        if node.inputs.get(key, REMOVE) == value:
            return
        self._edit(
            f"Set input {key} of {node_id}",
            lambda t: wf_edit.set_input(t, node_id, key, value),
            row,
        )

    def _commit_list(self, node_id: str, key: str, schema: dict[str, Any], row: Row) -> None:
        node = self.document.node(node_id)
        editor = row.editor
        assert isinstance(editor, ListEditor)
        items, error = editor.values()
        if error is None and items:
            found = jsonschema.exceptions.best_match(
                jsonschema.Draft202012Validator(schema).iter_errors(items)
            )
            error = f"Expected {schema_hint(schema)}: {found.message}" if found else None
        if node is None:
            return
        if error is not None:
            row.show_error(error)
            return
        if not items:
            if key in node.inputs:
                self._edit(
                    f"Remove input {key} of {node_id}",
                    lambda t: wf_edit.remove_input(t, node_id, key),
                    row,
                )
            return
        if node.inputs.get(key, REMOVE) == items:
            row.show_error(None)
            return
        self._edit(
            f"Set input {key} of {node_id}",
            lambda t: wf_edit.set_input(t, node_id, key, items),
            row,
        )

    def _commit_condition(self, node_id: str, editor: QLineEdit, row: Row) -> None:
        row.dirty = False
        self._commit_field(node_id, "condition", editor.text().strip() or None, row)

    def _commit_retry(
        self,
        node_id: str,
        attempts: QSpinBox,
        backoff: QSpinBox,
        factor: QDoubleSpinBox,
        row: Row,
    ) -> None:
        retry = Retry(
            max_attempts=attempts.value(),
            backoff_initial_ms=backoff.value(),
            backoff_factor=factor.value(),
        )
        self._commit_field(node_id, "retry", retry, row)

    def _commit_rollback(self, node_id: str, box: QCheckBox, on: bool, row: Row) -> None:
        node = self.document.node(node_id)
        if node is None or node.rollback == on:
            return
        if not self._edit(
            f"{'Move' if on else 'Take'} {node_id} {'to' if on else 'out of'} the rollback path",
            lambda t: wf_edit.set_node_field(t, node_id, "rollback", on),
            row,
        ):
            _set_editor(box, node.rollback)  # refused: the box shows what the document says

    def _commit_id(self, old: str, row: Row) -> None:
        editor = row.editor
        assert isinstance(editor, QLineEdit)
        new = editor.text().strip()
        if new == old or self.document.node(old) is None:
            row.show_error(None)
            return
        if not re.match(NODE_ID_PATTERN, new):
            row.show_error("An id starts with a-z and has only a-z, 0-9 and _ (at most 63).")
            return
        if self.document.node(new) is not None:
            row.show_error(f"Another step is called {new}.")
            return
        if self._edit(
            f"Rename {old} to {new}",
            lambda t: wf_edit.rename_node(t, old, new),
            row,
            select=[new],
            reselect=[old],
        ):
            self.renamed.emit(new)

    def _commit_template_name(self, row: Row) -> None:
        editor = row.editor
        assert isinstance(editor, QLineEdit)
        name = editor.text().strip()
        if name == self.document.template.name:
            row.dirty = False
            row.show_error(None)
            return
        if not re.match(TEMPLATE_NAME_PATTERN, name):
            row.show_error("A name has a-z, 0-9, '.', '_' and '-' (at most 63), starting a-z/0-9.")
            return
        if self._edit(
            f"Rename workflow to {name}", lambda t: t.model_copy(update={"name": name}), row
        ):
            row.dirty = False

    def flush(self) -> list[tuple[str, str]]:
        """Commit every field typed into and not yet committed (as leaving it would), then
        return the fields flagged invalid: (row key, the error shown under it)."""
        for row in list(self.rows.values()):
            if row.dirty and isinstance(row.editor, QLineEdit):
                row.editor.editingFinished.emit()
        return [(row.key, row.error.text()) for row in self.rows.values() if row.error.text()]

    def _commit_template_description(self, editor: QLineEdit) -> None:
        text = editor.text()
        if text != self.document.template.description:
            self._edit(
                "Set the workflow's description",
                lambda t: t.model_copy(update={"description": text}),
                None,
            )

    # --- focus from the problems panel ---------------------------------------------------------
    def focus_field(self, field: str | None) -> QWidget | None:
        """Put the keyboard in the row a problem names (best match); returns that editor."""
        if not self.rows:
            return None
        key = None
        if field:
            key = next((k for k in self.rows if field_matches(field, k)), None)
            if key is None:
                key = next((k for k in self.rows if k.split(".")[0] == field.split(".")[0]), None)
        row = self.rows.get(key or "id") or next(iter(self.rows.values()))
        self.ensureWidgetVisible(row.box)
        row.editor.setFocus(Qt.FocusReason.OtherFocusReason)
        if isinstance(row.editor, QLineEdit):
            row.editor.selectAll()
        return row.editor


def _set_editor(editor: QWidget, value: Any) -> None:
    editor.blockSignals(True)  # showing the document's value is not an edit
    try:
        if isinstance(editor, QLineEdit):
            if editor.text() != value:
                editor.setText(str(value))
                editor.setCursorPosition(0)
        elif isinstance(editor, QDoubleSpinBox | QSpinBox):
            editor.setValue(value)
        elif isinstance(editor, QComboBox):
            editor.setCurrentIndex(max(0, editor.findData(value)))
        elif isinstance(editor, QCheckBox):
            editor.setChecked(bool(value))
        elif isinstance(editor, ListEditor):
            editor.set_values(value)
    finally:
        editor.blockSignals(False)


def _drop_layout(layout: Any) -> None:
    while layout.count():
        item = layout.takeAt(0)
        if item is None:
            break
        if item.widget() is not None:
            item.widget().hide()
            item.widget().deleteLater()
        elif item.layout() is not None:
            _drop_layout(item.layout())
