"""Components: a name for one repository in one registry, what releases pin by digest."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtWidgets import QComboBox, QLineEdit, QWidget

from stella_core.errors import DefinitionError
from stella_core.limits import check_name
from stella_desk import humane
from stella_desk.admin.common import WRITERS, AdminTab, Col, FormDialog
from stella_desk.ops import Change, OpFailed, Ops
from stella_desk.session import Session

if TYPE_CHECKING:
    from stella_core.bootstrap import Stella

COLUMNS = [
    Col("Component", lambda c: c.name, 160),
    Col("Registry", lambda c: c.registry, 130),
    Col("Repository", lambda c: c.repository, 260),
    Col("Added", lambda c: humane.when(c.created_at), 140),
]


class ComponentsTab(AdminTab):
    noun = "components"
    writers = WRITERS
    topics = (Change.RELEASES,)

    def __init__(self, ops: Ops, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(ops, session, COLUMNS, parent)
        self.add = self.add_button("Add component…", self.open_add, primary=True)

    def load(self, stella: Stella) -> list[Any]:
        return stella.releases.list_components()

    def open_add(self) -> ComponentDialog:
        dialog = ComponentDialog(self.ops, self.session, parent=self)
        dialog.done_with.connect(lambda c: self.status_message.emit(f"Added component {c.name}"))
        self.open_dialog(dialog)
        self.ops.spawn(dialog.load())
        return dialog


class ComponentDialog(FormDialog):
    def __init__(self, ops: Ops, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(
            ops,
            session,
            title="Add component",
            intro="A component names one repository of a registry; releases pin it by digest.",
            primary="Add component",
            changes=[Change.RELEASES],
            parent=parent,
        )
        self.name = QLineEdit()
        self.name.setPlaceholderText("e.g. web")
        self.registry = QComboBox()
        self.repository = QLineEdit()
        self.repository.setPlaceholderText("e.g. shop/web")
        self.form.addRow("Name", self.name)
        self.form.addRow("Registry", self.registry)
        self.form.addRow("Repository", self.repository)

    async def load(self) -> None:
        stella = self.session.require()
        try:
            names = await self.ops.run(
                lambda _report: [r.name for r in stella.releases.list_registries()],
                label="Reading registries",
                present_errors=False,
            )
        except OpFailed as exc:
            self.show_error(exc.message)
            return
        self.registry.addItems(names)
        if not names:
            self.show_error("Add a registry first (Registries tab).")

    def work(self) -> Callable[[Stella], Any]:
        name = self.name.text().strip()
        registry = self.registry.currentText()
        repository = self.repository.text().strip().strip("/")
        if not name or not repository:
            raise DefinitionError("A component needs a name and a repository.")
        if not registry:
            raise DefinitionError("Add a registry first (Registries tab).")
        check_name("component", name)
        image = f"{registry}/{repository}"
        return lambda stella: stella.releases.add_component(name, image)
