"""People of this tenant and their roles. Adding one (admins) makes their database login,
their profile on this machine and, unless they audit, their signing key. The core has no way
to deactivate a person yet: the list shows who is deactivated, nothing more."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtWidgets import QComboBox, QLineEdit, QWidget

from stella_core.errors import DefinitionError
from stella_core.tenancy.model import ProductRole
from stella_core.tenancy.service import check_person_name
from stella_desk import humane
from stella_desk.admin.common import ADMINS, ROLE_NAMES, AdminTab, Col, FormDialog, field_note
from stella_desk.ops import Change, Ops
from stella_desk.session import Session

if TYPE_CHECKING:
    from stella_core.bootstrap import Stella

COLUMNS = [
    Col("Person", lambda u: u.name, 160),
    Col("Role", lambda u: u.role.value, 130),
    Col("Status", lambda u: "deactivated" if u.disabled else "active", 100),
    Col("Added", lambda u: humane.when(u.created_at), 140),
    Col("Added by", lambda u: u.created_by, 120),
]


class PeopleTab(AdminTab):
    noun = "people"
    one = "person"
    writers = ADMINS
    topics = (Change.PEOPLE,)

    def __init__(self, ops: Ops, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(ops, session, COLUMNS, parent)
        self.add = self.add_button("Add person…", self.open_add, primary=True)

    def load(self, stella: Stella) -> list[Any]:
        return stella.tenancy.list_users()

    def open_add(self) -> PersonDialog:
        dialog = PersonDialog(self.ops, self.session, parent=self)
        dialog.done_with.connect(
            lambda added: self.status_message.emit(f"Added {added[0].name} ({added[0].role.value})")
        )
        self.open_dialog(dialog)
        return dialog


class PersonDialog(FormDialog):
    def __init__(self, ops: Ops, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(
            ops,
            session,
            title="Add person",
            intro=(
                "A person gets their own database login (every action is theirs), a profile on "
                "this machine and, unless they audit, a signing key."
            ),
            primary="Add person",
            changes=[Change.PEOPLE],
            parent=parent,
        )
        self.name = QLineEdit()
        self.name.setPlaceholderText("e.g. erin")
        self.role = QComboBox()
        self.role.addItems(ROLE_NAMES)
        self.role.setCurrentText(ProductRole.APPROVER.value)
        self.form.addRow("Name", self.name)
        self.form.addRow("Role", self.role)
        self.form.addRow(
            "",
            field_note("Their key is protected by this machine until they set a passphrase."),
        )

    def work(self) -> Callable[[Stella], Any]:
        name = self.name.text().strip()
        if not name:
            raise DefinitionError("A person needs a name.")
        check_person_name(name)
        role = ProductRole(self.role.currentText())
        return lambda stella: stella.add_person(name, role)
