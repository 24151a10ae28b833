"""The Workflows page: the visual DAG editor.

Left: stored templates and the step palette. Middle: the canvas (or the JSON text), with the
problems and the version comparison below. Right: the inspector. The document owns the
template; the scene, the inspector, the text view and the problems panel all follow it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from stella_core.workflows import template as wf_template
from stella_core.workflows.model import Template
from stella_desk import theme
from stella_desk.chrome import Card, label
from stella_desk.ops import Change, OpChanges, OpFailed, Ops
from stella_desk.session import Session
from stella_desk.workflows import library
from stella_desk.workflows.compare import CANVAS, VersionCompare, diff_marks
from stella_desk.workflows.document import WorkflowDocument
from stella_desk.workflows.inspector import NodeInspector
from stella_desk.workflows.interactions import CanvasController
from stella_desk.workflows.items import CARD_HEIGHT, CARD_WIDTH, snap
from stella_desk.workflows.library import TemplateLibrary
from stella_desk.workflows.palette import StepPalette
from stella_desk.workflows.problems import ProblemsPanel
from stella_desk.workflows.scene import WorkflowScene
from stella_desk.workflows.steps import Registry
from stella_desk.workflows.textview import TemplateText
from stella_desk.workflows.validation import Validator
from stella_desk.workflows.view import CanvasView

NOTICE_MS = 8000


def editor_style(c: dict[str, str]) -> str:
    return f"""
QLabel[kind="heading"] {{ font-size: 15px; font-weight: 600; }}
QLabel[kind="docname"] {{ font-size: 19px; font-weight: 600; }}
QLabel[kind="modified"] {{ color: {c["accent"]}; font-size: 22px; font-weight: 700; }}
QLabel[kind="notice"] {{ color: {c["muted"]}; }}
QLabel[kind="notice-bad"] {{ color: {c["danger"]}; font-weight: 600; }}
QLabel#fieldCaption {{ color: {c["caption"]}; font-size: 12px; }}
QWidget#inspectorBody {{ background: {c["surface"]}; }}
QToolButton[kind="tool"] {{
    background: transparent; border: 1px solid transparent; border-radius: 6px;
    padding: 4px 8px; color: {c["text"]};
}}
QToolButton[kind="tool"]:hover {{
    background: {c["tool_hover"]}; border-color: {c["tool_hover_border"]};
}}
QToolButton[kind="tool"]:disabled {{ color: {c["disabled_text"]}; }}
QFrame[kind="toolsep"] {{ background: {c["border"]}; }}
QTreeWidget, QPlainTextEdit {{
    background: {c["surface"]}; border: 1px solid {c["border"]}; border-radius: 8px;
    selection-background-color: {c["selection"]}; selection-color: {c["text"]}; outline: 0;
}}
QTreeWidget::item {{ padding: 3px 2px; }}
QTreeWidget#stepPalette, QTreeWidget#templateLibrary {{ border: none; }}
QTabWidget::pane {{ border: none; }}
QTabBar::tab {{
    background: transparent; color: {c["muted"]}; padding: 5px 12px; border: none;
    border-bottom: 2px solid transparent; font-weight: 600;
}}
QTabBar::tab:selected {{ color: {c["accent"]}; border-bottom: 2px solid {c["accent"]}; }}
QFrame[kind="confirm"] {{
    background: {c["confirm_bg"]}; border: 1px solid {c["confirm_border"]}; border-radius: 8px;
}}
QScrollBar:vertical {{ background: transparent; width: 8px; margin: 0; }}
QScrollBar::handle:vertical {{
    background: {c["input_border"]}; border-radius: 4px; min-height: 24px;
}}
QScrollBar::add-line, QScrollBar::sub-line {{ height: 0; width: 0; }}
QScrollBar::add-page, QScrollBar::sub-page {{ background: transparent; }}
QFrame[kind="canvas"] {{
    background: {c["background"]}; border: 1px solid {c["border"]}; border-radius: 10px;
}}
"""


EDITOR_STYLE = editor_style(theme.LIGHT)


def field_words(key: str) -> str:
    """An inspector row's key as a person names the field."""
    if key == "template.name":
        return "the workflow's name"
    if key.startswith("inputs."):
        return f"input {key.removeprefix('inputs.')}"
    return f"the field {key.replace('template.', '').replace('_', ' ')}"


def _separator() -> QFrame:
    line = QFrame()
    line.setProperty("kind", "toolsep")
    line.setFixedSize(1, 20)
    return line


class ConfirmBar(QFrame):
    """An inline question (no modal dialog): discard unsaved changes before doing something."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setProperty("kind", "confirm")
        row = QHBoxLayout(self)
        row.setContentsMargins(12, 6, 8, 6)
        self.text = label()
        self.text.setWordWrap(True)
        row.addWidget(self.text, 1)
        self.go = QPushButton("Discard changes")
        self.keep = QPushButton("Keep editing")
        self._texts = ("Discard changes", "Keep editing")
        row.addWidget(self.go)
        row.addWidget(self.keep)
        self._then: Callable[[], None] | None = None
        self.go.clicked.connect(self._proceed)
        self.keep.clicked.connect(self.dismiss)
        self.hide()

    def ask(
        self, text: str, then: Callable[[], None], *, go: str | None = None, keep: str | None = None
    ) -> None:
        self.text.setText(text)
        self.go.setText(go or self._texts[0])
        self.keep.setText(keep or self._texts[1])
        self._then = then
        self.show()

    def _proceed(self) -> None:
        then, self._then = self._then, None
        self.hide()
        if then is not None:
            then()

    def dismiss(self) -> None:
        self._then = None
        self.hide()


class WorkflowEditor(QWidget):
    saved = Signal(str, int)  # name, version
    status_message = Signal(str)  # for the window's status bar

    def __init__(
        self,
        ops: Ops,
        session: Session,
        registry: Registry,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("page")
        self.setStyleSheet(editor_style(theme.colours(theme.saved_mode())))
        self.ops = ops
        self.session = session
        self.registry = registry
        self.document = WorkflowDocument(self)
        # Parented to the page: a scene without an owner is collected and the view paints blank.
        self.scene = WorkflowScene(self.document, registry, self)
        self.view = CanvasView(self.scene)
        self.controller = CanvasController(self.document, self.scene, registry, self)
        self.validator = Validator(self.document, registry, ops, self)
        self.step_palette = StepPalette(registry)
        self.inspector = NodeInspector(self.document, registry, self.validator, ops)
        self.problems = ProblemsPanel(self.document)
        self.text = TemplateText(self.document)
        self.compare = VersionCompare()
        self.library = TemplateLibrary()
        self.confirm = ConfirmBar()
        self.rename_dialog: library.RenameDialog | None = None
        self._library_loaded = False
        self._notice_timer = QTimer(self)
        self._notice_timer.setSingleShot(True)
        self._notice_timer.timeout.connect(lambda: self._notice(""))

        self._build_actions()
        self._build_layout()
        self._connect()
        self.new_template(confirm=False)

    def restyle(self, mode: str) -> None:
        """The window's theme changed (View > Theme)."""
        self.setStyleSheet(editor_style(theme.colours(mode)))
        self.scene.update()

    # --- building --------------------------------------------------------------------------
    def _action(
        self,
        text: str,
        slot: Callable[[], Any],
        shortcuts: list[QKeySequence] | QKeySequence.StandardKey | None = None,
        tip: str = "",
    ) -> QAction:
        action = QAction(text, self)
        action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        if isinstance(shortcuts, QKeySequence.StandardKey) or shortcuts:
            action.setShortcuts(shortcuts)
        keys = ", ".join(
            s.toString(QKeySequence.SequenceFormat.NativeText) for s in action.shortcuts()
        )
        action.setToolTip(f"{tip or text}{f' ({keys})' if keys else ''}")
        action.triggered.connect(lambda _checked=False: slot())
        self.addAction(action)
        return action

    def _build_actions(self) -> None:
        stack = self.document.undo_stack
        self.undo_action = self._action("Undo", stack.undo, QKeySequence.StandardKey.Undo)
        # Both conventions, whatever the platform's own: Ctrl+Y (Windows) and Ctrl+Shift+Z.
        redo_keys = [QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")]
        for key in QKeySequence.keyBindings(QKeySequence.StandardKey.Redo):
            if key not in redo_keys:  # a key bound twice would be ambiguous and do nothing
                redo_keys.append(key)
        self.redo_action = self._action("Redo", stack.redo, redo_keys)
        # Fixed button labels; what would be undone or redone is in the tooltip.
        self.undo_action.setEnabled(False)
        self.redo_action.setEnabled(False)
        stack.canUndoChanged.connect(self.undo_action.setEnabled)
        stack.canRedoChanged.connect(self.redo_action.setEnabled)
        stack.undoTextChanged.connect(
            lambda text: self.undo_action.setToolTip(f"Undo {text} (Ctrl+Z)" if text else "Undo")
        )
        stack.redoTextChanged.connect(
            lambda text: self.redo_action.setToolTip(
                f"Redo {text} (Ctrl+Y, Ctrl+Shift+Z)" if text else "Redo"
            )
        )
        self.copy_action = self._action("Copy", self.copy, QKeySequence.StandardKey.Copy)
        self.paste_action = self._action("Paste", self.paste, QKeySequence.StandardKey.Paste)
        self.delete_action = self._action(
            "Delete", self.delete, [QKeySequence(Qt.Key.Key_Delete)], "Delete the selection"
        )
        self.select_all_action = self._action(
            "Select all", self.scene.select_all, QKeySequence.StandardKey.SelectAll
        )
        self.layout_action = self._action(
            "Auto-layout",
            self.controller.auto_layout,
            [QKeySequence("Ctrl+L")],
            "Arrange the steps in layers",
        )
        self.zoom_in_action = self._action(
            "Zoom in", self.view.zoom_in, [QKeySequence("Ctrl++"), QKeySequence("Ctrl+=")]
        )
        self.zoom_out_action = self._action(
            "Zoom out", self.view.zoom_out, [QKeySequence("Ctrl+-")]
        )
        self.fit_action = self._action("Fit", self.view.fit, None, "Show the whole graph (F)")
        self.new_action = self._action(
            "New workflow", self.new_template, None, "Start an empty workflow"
        )
        self.save_action = self._action(
            "Save as new version",
            lambda: self.ops.spawn(self.save()),
            [QKeySequence(QKeySequence.StandardKey.Save)],
            "Store the workflow as its next version",
        )

    def _tool(self, action: QAction, text: str | None = None) -> QToolButton:
        button = QToolButton()
        button.setDefaultAction(action)
        button.setProperty("kind", "tool")
        button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        if text:
            button.setText(text)
        return button

    def _build_layout(self) -> None:
        page = QVBoxLayout(self)
        page.setContentsMargins(18, 12, 18, 10)
        page.setSpacing(8)

        # The document bar: which template, its version, the modified marker, the main actions.
        bar = QHBoxLayout()
        bar.setSpacing(8)
        self.name_label = label("", "docname")
        self.version_chip = label("", "chip")
        self.modified_marker = label("•", "modified")
        self.modified_marker.setToolTip("Unsaved changes")
        self.modified_marker.hide()
        bar.addWidget(self.name_label)
        bar.addWidget(self.version_chip)
        bar.addWidget(self.modified_marker)
        self.notice = label("", "notice")
        # A long message is cut rather than widening the window (the status bar has it all).
        self.notice.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.notice.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        bar.addWidget(self.notice, 1)
        self.new_button = QPushButton("New workflow")
        self.new_button.clicked.connect(self.new_template)
        self.save_button = QPushButton("Save as new version")
        self.save_button.setProperty("kind", "primary")
        self.save_button.clicked.connect(self.save_action.trigger)
        bar.addWidget(self.new_button)
        bar.addWidget(self.save_button)
        page.addLayout(bar)

        tools = QHBoxLayout()
        tools.setSpacing(2)
        groups = [
            [self.undo_action, self.redo_action],
            [self.copy_action, self.paste_action, self.delete_action],
            [self.select_all_action, self.layout_action],
            [self.zoom_out_action, self.zoom_in_action, self.fit_action],
        ]
        short: dict[QAction, str] = {}
        for index, group in enumerate(groups):
            if index:
                tools.addSpacing(4)
                tools.addWidget(_separator())
                tools.addSpacing(4)
            for action in group:
                tools.addWidget(self._tool(action, short.get(action)))
        tools.addStretch(1)
        self.zoom_label = label("100 %", "muted")
        tools.addWidget(self.zoom_label)
        page.addLayout(tools)
        page.addWidget(self.confirm)

        # Left: stored templates above the palette.
        templates = Card("Workflows")
        templates.body.setContentsMargins(10, 10, 6, 6)
        templates.body.addWidget(self.library, 1)
        manage = QHBoxLayout()
        manage.setSpacing(4)
        self.rename_button = QPushButton("Rename…")
        self.rename_button.setToolTip("Give the selected workflow another name")
        self.delete_button = QPushButton("Delete…")
        self.delete_button.setToolTip(
            "Take the selected workflow out of use (runs that used it keep their history)"
        )
        for button in (self.rename_button, self.delete_button):
            button.setProperty("kind", "small")
            button.setEnabled(False)
            manage.addWidget(button)
        manage.addStretch(1)
        templates.body.addLayout(manage)
        steps = Card("Steps")
        steps.body.setContentsMargins(10, 10, 6, 6)
        steps.body.addWidget(self.step_palette, 1)
        hint = label("Drag onto the canvas", "muted")
        hint.setStyleSheet("font-size: 11px;")
        steps.body.addWidget(hint)
        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(templates)
        left.addWidget(steps)
        left.setSizes([170, 330])
        left.setChildrenCollapsible(False)
        left.setMinimumWidth(175)

        # Middle: canvas or text above problems and comparison.
        canvas_frame = QFrame()
        canvas_frame.setProperty("kind", "canvas")
        frame_box = QVBoxLayout(canvas_frame)
        frame_box.setContentsMargins(1, 1, 1, 1)
        frame_box.addWidget(self.view)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(canvas_frame, "Canvas")
        self.tabs.addTab(self.text, "JSON")
        self.bottom = QTabWidget()
        self.bottom.setDocumentMode(True)
        self.bottom.addTab(self.problems, "Problems")
        self.bottom.addTab(self.compare, "Compare versions")
        middle = QSplitter(Qt.Orientation.Vertical)
        middle.addWidget(self.tabs)
        middle.addWidget(self.bottom)
        middle.setStretchFactor(0, 4)
        middle.setStretchFactor(1, 1)
        middle.setSizes([470, 140])
        middle.setChildrenCollapsible(False)

        inspector = Card("Inspector")
        inspector.body.setContentsMargins(4, 10, 4, 4)
        inspector.body.addWidget(self.inspector, 1)
        inspector.setMinimumWidth(255)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(middle)
        split.addWidget(inspector)
        split.setStretchFactor(1, 1)
        split.setSizes([175, 600, 255])
        split.setChildrenCollapsible(False)
        page.addWidget(split, 1)

    def _connect(self) -> None:
        doc = self.document
        doc.undo_stack.cleanChanged.connect(self._show_document)
        doc.meta_changed.connect(self._show_document)
        doc.reset.connect(self.compare.clear)
        self.scene.selected_nodes_changed.connect(self.inspector.show_selection)
        self.scene.selected_nodes_changed.connect(self._update_actions)
        self.scene.selected_edges_changed.connect(self._update_actions)
        self.controller.message.connect(lambda text: self._notice(text, bad=True))
        self.controller.hint.connect(self._hint)
        self.controller.node_activated.connect(lambda _id: self.inspector.focus_field("name"))
        self.step_palette.activated_type.connect(self.add_at_centre)
        self.problems.problem_activated.connect(self.go_to_problem)
        self.problems.count_changed.connect(self._show_problem_count)
        self.library.open_requested.connect(
            lambda name, version: self.ops.spawn(self.open_template(name, version))
        )
        self.library.rename_requested.connect(self.open_rename_dialog)
        self.library.delete_requested.connect(self.ask_delete)
        self.library.currentItemChanged.connect(lambda *_a: self._update_manage())
        self.rename_button.clicked.connect(
            lambda: self.open_rename_dialog(self.library.selected_name() or "")
        )
        self.delete_button.clicked.connect(
            lambda: self.ask_delete(self.library.selected_name() or "")
        )
        self.compare.compare_requested.connect(
            lambda older, newer: self.ops.spawn(self.compare_versions(older, newer))
        )
        self.compare.cleared.connect(lambda: self.scene.set_marks({}))
        self.compare.node_clicked.connect(self.focus_node)
        self.view.zoom_changed.connect(lambda z: self.zoom_label.setText(f"{round(z * 100)} %"))
        self.ops.changed.connect(self._on_changes)
        self._update_actions()

    # --- showing the document --------------------------------------------------------------
    def _show_document(self, *_args: object) -> None:
        template = self.document.template
        origin = self.document.origin
        self.name_label.setText(template.name)
        if origin is None:
            self.version_chip.setText("not saved yet")
        elif origin[0] != template.name:
            self.version_chip.setText(f"from {origin[0]} v{origin[1]}")
        else:
            self.version_chip.setText(f"version {origin[1]}")
        self.modified_marker.setVisible(self.document.modified)
        self.library.mark_current(origin)

    def _show_problem_count(self, count: int) -> None:
        self.bottom.setTabText(0, f"Problems ({count})" if count else "Problems")

    def _update_actions(self, *_args: object) -> None:
        selected = bool(self.scene.selectedItems() or self.scene.selected_edge_keys())
        self.copy_action.setEnabled(bool(self.scene.selected_node_ids()))
        self.delete_action.setEnabled(selected)
        self.paste_action.setEnabled(self.controller.clipboard is not None)
        self.save_action.setEnabled(library.service_available(self.session.stella))

    def _notice(self, text: str, *, bad: bool = False) -> None:
        self.notice.setText(text)
        self.notice.setToolTip(text)
        self.notice.setProperty("kind", "notice-bad" if bad else "notice")
        theme.repolish(self.notice)
        if text:
            self.status_message.emit(text)
            self._notice_timer.start(NOTICE_MS)

    def _hint(self, text: str) -> None:
        bad = text.startswith("Refused") or "already" in text
        self.notice.setText(text)
        self.notice.setProperty("kind", "notice-bad" if bad else "notice")
        theme.repolish(self.notice)

    # --- commands --------------------------------------------------------------------------
    def add_at_centre(self, type_name: str) -> str | None:
        x, y = self.view.centre()
        # Cascade so repeated adds do not stack exactly on top of each other.
        taken = {(p.x, p.y) for p in self.document.template.layout.positions.values()}
        pos = (snap(x - CARD_WIDTH / 2), snap(y - CARD_HEIGHT / 2))
        while pos in taken:
            pos = (pos[0] + 30, pos[1] + 30)
        return self.controller.add_node(type_name, pos)

    def copy(self) -> None:
        count = self.controller.copy_selection()
        if count:
            self._notice(f"Copied {count} step{'s' if count != 1 else ''}")
        self._update_actions()

    def paste(self) -> None:
        pasted = self.controller.paste()
        if pasted:
            self._notice(f"Pasted {len(pasted)} step{'s' if len(pasted) != 1 else ''}")

    def delete(self) -> None:
        self.controller.delete_selection()

    def focus_node(self, node_id: str) -> None:
        card = self.scene.item_for_node.get(node_id)
        if card is None:
            self._notice(f"{node_id} is not on the canvas")
            return
        self.tabs.setCurrentIndex(0)
        self.scene.select_nodes([node_id])
        self.view.ensureVisible(card, 60, 60)

    def go_to_problem(self, node_id: str | None, field: str | None) -> None:
        """Select the step a problem names and put the keyboard in the field it names."""
        if node_id is None:
            if field is not None and field.startswith(("edges", "layout")):
                return
            self.scene.select_nodes([])
            self.inspector.focus_field("template." + field if field else None)
            return
        self.focus_node(node_id)
        self.inspector.focus_field(field)

    def new_template(self, *, confirm: bool = True) -> None:
        def start() -> None:
            taken = {t.name for t in self.library.templates}
            name, n = "new-workflow", 1
            while name in taken:
                n += 1
                name = f"new-workflow-{n}"
            self.document.open(Template(name=name))
            self.view.set_zoom(1.0)
            self.view.centerOn(0, 0)

        self._unless_modified("Start a new workflow", start, confirm=confirm)

    def open_sample(self) -> None:
        """The bundled example, unsaved (screenshots and a first look)."""
        self.document.open(library.sample_template())
        self.validator.schedule()
        self.view.fit()

    def _unless_modified(
        self, what: str, then: Callable[[], None], *, confirm: bool = True
    ) -> None:
        if confirm and self.document.modified:
            self.confirm.ask(
                f"{what}? The changes to {self.document.template.name} are not saved.", then
            )
        else:
            self.confirm.dismiss()
            then()

    # --- the core, through Ops -------------------------------------------------------------
    async def refresh(self) -> None:
        """Reload the list of stored templates (and open the newest one the first time)."""
        stella = self.session.stella
        self._update_actions()
        if not library.service_available(stella):
            self.library.show_notice("Stored workflows are not available")
            return
        assert stella is not None
        try:
            stored = await self.ops.run(
                lambda _report: library.read_library(stella), label="Loading workflows"
            )
        except OpFailed:
            self.library.show_notice("Could not load the workflows")
            return
        selected = self.library.selected_name()
        self.library.set_templates(stored, self.document.origin)
        if selected is not None:
            self.library.select_name(selected)
        self._update_manage()
        self._update_compare_versions()
        first = not self._library_loaded
        self._library_loaded = True
        if first and stored and not self.document.modified and self.document.origin is None:
            # The bundled example when it is stored (the demo's richest graph), else the first.
            sample = library.sample_template().name
            chosen = next((t for t in stored if t.name == sample), stored[0])
            with contextlib.suppress(OpFailed):  # presented; the list is there to pick another
                await self.open_template(chosen.name, chosen.latest)

    def _on_changes(self, changes: OpChanges) -> None:
        if changes.touches(Change.PERSON) and self.session.ready:
            self.ops.spawn(self.refresh())

    def _update_compare_versions(self) -> None:
        origin = self.document.origin
        name = origin[0] if origin else self.document.template.name
        self.compare.set_versions(self.library.versions_of(name))

    async def open_template(self, name: str, version: int, *, confirm: bool = True) -> None:
        if self.document.origin == (name, version) and not self.document.modified:
            return
        if confirm and self.document.modified:

            def reopen() -> None:
                self.ops.spawn(self.open_template(name, version, confirm=False))

            self._unless_modified(f"Open {name} version {version}", reopen)
            return
        stella = self.session.require()
        template = await self.ops.run(
            lambda _report: library.read_template(stella, name, version),
            label=f"Opening {name} version {version}",
        )
        self.document.open(template, origin=(name, version))
        self._update_compare_versions()
        self.view.fit()
        self.validator.schedule()

    async def save(self) -> tuple[str, int] | None:
        """Store the canvas as the template's next version; marks the document saved."""
        stella = self.session.stella
        if not library.service_available(stella):
            self._notice("Saving needs the workflow service", bad=True)
            return None
        assert stella is not None
        # What is typed and not yet committed goes in first; a field flagged invalid stops the
        # save (the document still holds the old value, which is not what the person sees).
        invalid = self.inspector.flush()
        if invalid:
            key, message = invalid[0]
            self._notice(f"Not saved: {field_words(key)} is invalid: {message}", bad=True)
            self.inspector.focus_field(key)
            return None
        template = self.document.template
        before = self.document.origin
        try:
            name, version = await self.ops.run(
                lambda _report: library.save_template(stella, template),
                label=f"Saving {template.name}",
                present_errors=False,  # shown here, next to what it is about
            )
        except OpFailed as exc:
            self._notice(f"Not saved: {exc.message}", bad=True)
            self.bottom.setCurrentWidget(self.problems)
            return None
        if self.document.template is template:
            self.document.mark_saved(name, version)
        if before == (name, version):
            self._notice(f"No changes: {name} version {version} is what the canvas holds")
        else:
            self._notice(f"Saved {name} as version {version}")
        self.saved.emit(name, version)
        with contextlib.suppress(OpFailed):
            await self.refresh()
        return name, version

    # --- renaming and deleting stored workflows ---------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.ops.spawn(coro)

    def _update_manage(self) -> None:
        chosen = self.library.selected_name() is not None
        writable = library.service_available(self.session.stella)
        self.rename_button.setEnabled(chosen and writable)
        self.delete_button.setEnabled(chosen and writable)

    def open_rename_dialog(self, name: str) -> library.RenameDialog | None:
        stella = self.session.stella
        if not name or stella is None:
            return None
        if self.rename_dialog is not None:
            self.rename_dialog.reject()
        dialog = library.RenameDialog(self.ops, stella, name, parent=self)
        dialog.renamed.connect(lambda old, new: self.ops.spawn(self._renamed(old, new)))
        self.rename_dialog = dialog
        dialog.open()  # window-modal, asynchronous: the loop keeps running
        return dialog

    async def _renamed(self, old: str, new: str) -> None:
        self._notice(f"Renamed {old} to {new}")
        origin = self.document.origin
        shown = origin is not None and origin[0] == old
        await self.refresh()
        self.library.select_name(new)
        if shown and not self.document.modified:
            latest = max(self.library.versions_of(new), default=0)
            if latest:
                await self.open_template(new, latest, confirm=False)

    def ask_delete(self, name: str) -> None:
        if not name:
            return
        self.confirm.ask(
            f"Delete the workflow {name}? It leaves this list and can no longer be started; the "
            "runs that used it keep their history, and importing a workflow with this name "
            "brings it back.",
            lambda: self._spawn(self.delete_workflow(name)),
            go=f"Delete {name}",
            keep="Keep it",
        )

    async def delete_workflow(self, name: str) -> bool:
        stella = self.session.require()
        try:
            runs = await self.ops.run(
                lambda _report: library.delete_workflow(stella, name),
                label=f"Deleting {name}",
                present_errors=False,
            )
        except OpFailed as exc:
            self._notice(f"Not deleted: {exc.message}", bad=True)
            return False
        kept = f"; {runs} run{'s' if runs != 1 else ''} keep{'s' if runs == 1 else ''} its history"
        self._notice(f"Deleted {name}{kept if runs else ''}")
        origin = self.document.origin
        if origin is not None and origin[0] == name and not self.document.modified:
            self.new_template(confirm=False)
        await self.refresh()
        return True

    async def compare_versions(self, older: int, newer: int) -> None:
        origin = self.document.origin
        name = origin[0] if origin else self.document.template.name
        stella = self.session.require()
        canvas = self.document.template

        def work(_report: Any) -> Any:
            a = canvas if older == CANVAS else library.read_template(stella, name, older)
            b = canvas if newer == CANVAS else library.read_template(stella, name, newer)
            return wf_template.diff(a, b)

        result = await self.ops.run(work, label=f"Comparing versions of {name}")
        describe = {CANVAS: "the canvas"}
        self.compare.show_diff(
            result, describe.get(older, f"v{older}"), describe.get(newer, f"v{newer}")
        )
        nodes, edges = diff_marks(result)
        self.scene.set_marks(nodes, edges)
        self.bottom.setCurrentWidget(self.compare)
