"""The stored workflows: a list of names with their versions, the calls that read, save, rename
and delete them (always through `Ops`, on a worker thread), and the rename dialog.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QPoint, Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QLineEdit,
    QMenu,
    QTreeWidget,
    QTreeWidgetItem,
    QWidget,
)

from stella_core.workflows import template as wf_template
from stella_core.workflows.model import TEMPLATE_NAME_PATTERN, Template
from stella_desk import humane, theme
from stella_desk.chrome import InlineError, dialog_buttons, dialog_layout
from stella_desk.ops import OpFailed, Ops

if TYPE_CHECKING:
    from stella_core.bootstrap import Stella

SAMPLE = "promote-web.json"
VERSION_ROLE = Qt.ItemDataRole.UserRole + 1


def sample_document(name: str = SAMPLE) -> dict[str, Any]:
    """A bundled example template (the demo's promotion workflow)."""
    text = resources.files("stella_core.demo").joinpath("templates", name).read_text("utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def sample_template(name: str = SAMPLE) -> Template:
    return wf_template.load_document(sample_document(name))


@dataclass(frozen=True)
class StoredVersion:
    name: str
    version: int
    created_by: str = ""
    created_at: str = ""


@dataclass(frozen=True)
class StoredTemplate:
    name: str
    versions: tuple[StoredVersion, ...]  # newest first

    @property
    def latest(self) -> int:
        return max((v.version for v in self.versions), default=0)


# --- worker-thread functions (called inside `ops.run`) ---------------------------------------
def service_available(stella: Stella | None) -> bool:
    return stella is not None and getattr(stella, "workflows", None) is not None


def read_library(stella: Stella) -> list[StoredTemplate]:
    service = stella.workflows
    out = []
    for summary in service.list_templates():
        name = _field(summary, "name")
        versions = []
        for info in service.template_versions(name):
            when = _field(info, "created_at", "")
            versions.append(
                StoredVersion(
                    name=name,
                    version=int(_field(info, "version")),
                    created_by=str(_field(info, "created_by", "")),
                    created_at=humane.when(when) if hasattr(when, "strftime") else "",
                )
            )
        versions.sort(key=lambda v: v.version, reverse=True)
        out.append(StoredTemplate(name=name, versions=tuple(versions)))
    out.sort(key=lambda t: t.name)
    return out


def read_template(stella: Stella, name: str, version: int | None = None) -> Template:
    document = stella.workflows.export_template(name, version)
    return wf_template.load_document(document)


def save_template(stella: Stella, template: Template) -> tuple[str, int]:
    result = stella.workflows.import_template(template.to_document())
    name, version = _field(result, "name", None), _field(result, "version", None)
    if name is None and isinstance(result, tuple | list):
        name, version = result[0], result[1]
    return str(name), int(version)


def rename_workflow(stella: Stella, name: str, new_name: str) -> str:
    return str(stella.workflows.rename_template(name, new_name).name)


def delete_workflow(stella: Stella, name: str) -> int:
    """Retire it (the core keeps its versions for the runs that used it); how many runs did."""
    return int(stella.workflows.retire_template(name))


def _field(record: Any, key: str, default: Any = ...) -> Any:
    """Records may be models, dicts or tuples: read a field the same way from all of them."""
    value = record.get(key, default) if isinstance(record, dict) else getattr(record, key, default)
    if value is ...:
        raise KeyError(key)
    return value


# --- the list --------------------------------------------------------------------------------
class TemplateLibrary(QTreeWidget):
    """Workflows and their versions; activating a version asks for it to be opened, the context
    menu offers Rename… and Delete… for the workflow under the pointer."""

    open_requested = Signal(str, int)  # name, version
    rename_requested = Signal(str)
    delete_requested = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("templateLibrary")
        self.setHeaderHidden(True)
        self.setUniformRowHeights(True)
        self.setIndentation(14)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.templates: list[StoredTemplate] = []
        self.itemActivated.connect(self._activate)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.customContextMenuRequested.connect(self._menu)
        self.show_notice("Loading…")

    def selected_name(self) -> str | None:
        """The workflow the selected row belongs to (its own row or one of its versions)."""
        item = self.currentItem()
        data = item.data(0, VERSION_ROLE) if item is not None else None
        return str(data[0]) if data is not None else None

    def select_name(self, name: str) -> bool:
        for i in range(self.topLevelItemCount()):
            top = self.topLevelItem(i)
            data = top.data(0, VERSION_ROLE) if top is not None else None
            if top is not None and data is not None and data[0] == name:
                self.setCurrentItem(top)
                return True
        return False

    def _menu(self, pos: QPoint) -> None:
        item = self.itemAt(pos)
        data = item.data(0, VERSION_ROLE) if item is not None else None
        if data is None:
            return
        name = str(data[0])
        latest = max(self.versions_of(name), default=0)
        menu = QMenu(self)
        menu.addAction("Open latest version", lambda: self.open_requested.emit(name, latest))
        menu.addSeparator()
        menu.addAction("Rename…", lambda: self.rename_requested.emit(name))
        menu.addAction("Delete…", lambda: self.delete_requested.emit(name))
        menu.popup(self.viewport().mapToGlobal(pos))

    def show_notice(self, text: str) -> None:
        self.clear()
        item = QTreeWidgetItem([text])
        item.setFlags(Qt.ItemFlag.NoItemFlags)
        item.setForeground(0, QBrush(QColor(theme.MUTED)))
        self.addTopLevelItem(item)

    def set_templates(
        self, templates: list[StoredTemplate], current: tuple[str, int] | None
    ) -> None:
        self.templates = list(templates)
        self.clear()
        if not templates:
            self.show_notice("No workflow saved yet")
            return
        for stored in templates:
            top = QTreeWidgetItem([f"{stored.name}  ·  v{stored.latest}"])
            top.setData(0, VERSION_ROLE, (stored.name, stored.latest))
            top.setToolTip(
                0,
                f"{stored.name}: {len(stored.versions)} version(s); open the latest "
                "(right-click to rename or delete)",
            )
            self.addTopLevelItem(top)
            for version in stored.versions:
                text = f"version {version.version}"
                if version.created_by:
                    text += f"  ·  {version.created_by}"
                child = QTreeWidgetItem([text])
                child.setData(0, VERSION_ROLE, (stored.name, version.version))
                child.setToolTip(0, f"{version.created_at} by {version.created_by}".strip())
                top.addChild(child)
            if current is not None and current[0] == stored.name:
                top.setExpanded(True)
        self.mark_current(current)

    def mark_current(self, current: tuple[str, int] | None) -> None:
        for item in self._items():
            data = item.data(0, VERSION_ROLE)
            font = item.font(0)
            font.setBold(
                data is not None
                and current is not None
                and tuple(data) == tuple(current)
                and item.parent() is not None
            )
            item.setFont(0, font)

    def versions_of(self, name: str) -> list[int]:
        for stored in self.templates:
            if stored.name == name:
                return [v.version for v in stored.versions]
        return []

    def item_for(self, name: str, version: int) -> QTreeWidgetItem | None:
        for item in self._items():
            if item.parent() is not None and tuple(item.data(0, VERSION_ROLE)) == (name, version):
                return item
        return None

    def _items(self) -> list[QTreeWidgetItem]:
        out = []
        for i in range(self.topLevelItemCount()):
            top = self.topLevelItem(i)
            if top is None:
                continue
            out.append(top)
            for j in range(top.childCount()):
                child = top.child(j)
                if child is not None:
                    out.append(child)
        return out

    def _activate(self, item: QTreeWidgetItem, _column: int) -> None:
        data = item.data(0, VERSION_ROLE)
        if data is not None:
            name, version = data
            self.open_requested.emit(name, int(version))


class RenameDialog(QDialog):
    """Rename a stored workflow: the new name is checked as it is typed, the core has the last
    word (a name taken, an environment deploying with it) and its refusal shows here."""

    renamed = Signal(str, str)  # old name, new name

    def __init__(self, ops: Ops, stella: Stella, name: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.ops = ops
        self.stella = stella
        self.old = name
        self.setWindowTitle("Rename workflow")
        self.setMinimumWidth(460)
        outer = dialog_layout(
            self,
            f"Rename {name}",
            "Runs keep the name they ran under; environments refer to a workflow by name, so "
            "one an environment deploys with cannot be renamed.",
        )
        self.name = QLineEdit(name)
        self.name.selectAll()
        outer.addWidget(self.name)
        self.error_box = InlineError()
        outer.addWidget(self.error_box)
        buttons, self.cancel_button, self.rename_button = dialog_buttons("Rename")
        outer.addLayout(buttons)
        self.cancel_button.clicked.connect(self.reject)
        self.rename_button.clicked.connect(lambda: self.ops.spawn(self.submit()))
        self.name.textChanged.connect(self._check)
        self._check(name)

    def _check(self, text: str) -> None:
        import re

        new = text.strip()
        valid = bool(re.fullmatch(TEMPLATE_NAME_PATTERN, new))
        self.name.setProperty("invalid", bool(new) and not valid)
        theme.repolish(self.name)
        self.rename_button.setEnabled(valid and new != self.old)
        if new and not valid:
            self._error("A name has a-z, 0-9, '.', '_' and '-' (at most 63), starting a-z/0-9.")
        else:
            self.error_box.hide()

    def _error(self, text: str) -> None:
        self.error_box.text.setText(text)
        self.error_box.show()

    async def submit(self) -> str | None:
        new = self.name.text().strip()
        if not self.rename_button.isEnabled():
            return None
        self.rename_button.setEnabled(False)
        stella, old = self.stella, self.old
        try:
            done = await self.ops.run(
                lambda _r: rename_workflow(stella, old, new),
                label=f"Renaming {old}",
                present_errors=False,
            )
        except OpFailed as exc:
            self._error(exc.message)
            self.rename_button.setEnabled(True)
            return None
        self.renamed.emit(old, done)
        self.accept()
        return done
