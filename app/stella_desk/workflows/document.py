"""The editor's document: the authoritative `Template`, its undo stack, and change signals.

orange-canvas-core's `Scheme` is the model: views never change what they show on their own;
they ask the document for an edit, and every edit is one `QUndoCommand` that keeps the template
before and after and gets the "after" from a pure core edit function. Applying a template
(redo, undo, open) compares it with the current one and emits only what differs, so the scene
updates the few items an edit touched and never rebuilds itself for one edit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack

from stella_core.workflows.model import Edge, Node, Problem, Template

EdgeKey = tuple[str, str]
# A pure change: the new template, or (the new template, ids of nodes to select after it).
Edit = Callable[[Template], "Template | tuple[Template, Sequence[str]]"]


def edge_key(edge: Edge) -> EdgeKey:
    return (edge.source, edge.target)


class TemplateCommand(QUndoCommand):
    """One edit: the template before and after. Redo and undo just apply one of them."""

    def __init__(
        self,
        document: WorkflowDocument,
        text: str,
        before: Template,
        after: Template,
        *,
        select: Sequence[str] = (),
    ) -> None:
        super().__init__(text)
        self.document = document
        self.before = before
        self.after = after
        # Nodes to select after redo (a pasted or added node), and after undo (what was deleted).
        self.select_after = tuple(select)
        self.select_before: tuple[str, ...] = ()

    def redo(self) -> None:
        self.document.apply(self.after)
        if self.select_after:
            self.document.selection_hint.emit(list(self.select_after))

    def undo(self) -> None:
        self.document.apply(self.before)
        if self.select_before:
            self.document.selection_hint.emit(list(self.select_before))


class WorkflowDocument(QObject):
    """Holds the current `Template`; every change goes through `edit` (undoable) or `open`."""

    # Fine-grained changes, in this order within one apply: edges removed, nodes removed,
    # nodes added, nodes changed, edges added, positions moved.
    node_added = Signal(str)
    node_removed = Signal(str)
    node_changed = Signal(str)
    edge_added = Signal(str, str)
    edge_removed = Signal(str, str)
    layout_changed = Signal(list)  # ids of nodes whose position changed
    meta_changed = Signal()  # name, description, version or template-level inputs
    template_changed = Signal()  # after any apply, once the fine-grained signals went out
    reset = Signal()  # another template was opened: views start over
    problems_changed = Signal(list)  # list[Problem]
    selection_hint = Signal(list)  # ids an edit wants selected (added, pasted, restored)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.undo_stack = QUndoStack(self)
        self._template = Template(name="untitled")
        self._problems: list[Problem] = []
        # Where the document came from in the store, if anywhere: (name, version).
        self.origin: tuple[str, int] | None = None
        # After a save the store's version number is the template's, whatever undo brings back.
        self._version: int | None = None

    # --- reading ---------------------------------------------------------------------------
    @property
    def template(self) -> Template:
        return self._template

    @property
    def problems(self) -> list[Problem]:
        return list(self._problems)

    @property
    def modified(self) -> bool:
        return not self.undo_stack.isClean()

    def node(self, node_id: str) -> Node | None:
        return self._template.node(node_id)

    # --- changing --------------------------------------------------------------------------
    def open(self, template: Template, origin: tuple[str, int] | None = None) -> None:
        """Show another template: not an edit, so the undo history starts over."""
        self.undo_stack.clear()
        self.origin = origin
        self._version = None
        self._template = template
        self.reset.emit()
        self.meta_changed.emit()
        self.template_changed.emit()
        self.undo_stack.setClean()
        self.set_problems([])

    def edit(
        self, text: str, change: Edit, *, select: Sequence[str] = (), reselect: Iterable[str] = ()
    ) -> bool:
        """Push one undoable command whose result is `change(template)`.

        `change` is a pure function (usually a core edit function); if it raises, nothing is
        pushed and the error reaches the caller. Returns False when the edit changed nothing.
        """
        before = self._template
        result = change(before)
        if isinstance(result, tuple):  # (template, ids to select)
            after, chosen = result
            select = [*select, *chosen]
        else:
            after = result
        if after is before or after == before:
            return False
        command = TemplateCommand(self, text, before, after, select=select)
        command.select_before = tuple(reselect)
        self.undo_stack.push(command)  # calls redo(), which applies `after`
        return True

    def mark_saved(self, name: str, version: int) -> None:
        """The store now holds this content as `name` version `version`."""
        self.origin = (name, version)
        self._version = version
        if self._template.version != version:
            self._template = self._template.model_copy(update={"version": version})
            self.meta_changed.emit()
            self.template_changed.emit()
        self.undo_stack.setClean()
        self.meta_changed.emit()

    def set_problems(self, problems: list[Problem]) -> None:
        if problems == self._problems:
            return
        self._problems = list(problems)
        self.problems_changed.emit(self.problems)

    def apply(self, template: Template) -> None:
        """Make `template` current and announce what differs (commands call this)."""
        if self._version is not None and template.version != self._version:
            template = template.model_copy(update={"version": self._version})
        old = self._template
        self._template = template
        old_nodes = {n.id: n for n in old.nodes}
        new_nodes = {n.id: n for n in template.nodes}
        old_edges = {edge_key(e) for e in old.edges}
        new_edges = {edge_key(e) for e in template.edges}
        for source, target in sorted(old_edges - new_edges):
            self.edge_removed.emit(source, target)
        for node_id in [i for i in old_nodes if i not in new_nodes]:
            self.node_removed.emit(node_id)
        for node_id in [i for i in new_nodes if i not in old_nodes]:
            self.node_added.emit(node_id)
        common = [i for i in new_nodes if i in old_nodes]
        for node_id in common:
            before, after = old_nodes[node_id], new_nodes[node_id]
            if before is not after and before != after:
                self.node_changed.emit(node_id)
        for source, target in sorted(new_edges - old_edges):
            self.edge_added.emit(source, target)
        old_pos, new_pos = old.layout.positions, template.layout.positions
        if old_pos is not new_pos:
            moved = [i for i in common if old_pos.get(i) != new_pos.get(i)]
            if moved:
                self.layout_changed.emit(moved)
        if (old.name, old.version, old.description, old.inputs) != (
            template.name,
            template.version,
            template.description,
            template.inputs,
        ):
            self.meta_changed.emit()
        self.template_changed.emit()
