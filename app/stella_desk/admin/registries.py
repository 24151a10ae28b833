"""OCI registries the releases resolve tags against. A password goes straight to the core,
which seals it with this machine's secret box; the desk never shows one, only whether one is
held."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtWidgets import QCheckBox, QLineEdit, QWidget

from stella_core.errors import DefinitionError
from stella_core.limits import check_name
from stella_desk import humane
from stella_desk.admin.common import WRITERS, AdminTab, Col, FormDialog, field_note
from stella_desk.ops import Change, Ops
from stella_desk.session import Session

if TYPE_CHECKING:
    from stella_core.bootstrap import Stella

COLUMNS = [
    Col("Registry", lambda r: r.name, 130),
    Col("Address", lambda r: r.url, 260),
    Col("Kind", lambda r: r.kind.value, 110),
    Col("User", lambda r: r.username or "anonymous", 110),
    Col("Password", lambda r: "held (sealed)" if r.has_password else "none", 110),
    Col("Plain HTTP", lambda r: "allowed" if r.insecure else "no", 90),
    Col("Added", lambda r: humane.when(r.created_at), 140),
]


class RegistriesTab(AdminTab):
    noun = "registries"
    one = "registry"
    writers = WRITERS
    topics = (Change.RELEASES,)

    def __init__(self, ops: Ops, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(ops, session, COLUMNS, parent)
        self.add = self.add_button("Add registry…", self.open_add, primary=True)
        self.remove = self.add_button("Remove…", self.open_remove)

    def load(self, stella: Stella) -> list[Any]:
        return stella.releases.list_registries()

    def _selection_changed(self) -> None:
        self.remove.setEnabled(self.selected() is not None)

    def open_remove(self) -> RemoveRegistryDialog | None:
        registry = self.selected()
        if registry is None:
            return None
        dialog = RemoveRegistryDialog(self.ops, self.session, registry.name, parent=self)
        dialog.done_with.connect(lambda r: self.status_message.emit(f"Removed registry {r.name}"))
        self.open_dialog(dialog)
        return dialog

    def open_add(self) -> RegistryDialog:
        dialog = RegistryDialog(self.ops, self.session, parent=self)
        dialog.done_with.connect(lambda r: self.status_message.emit(f"Added registry {r.name}"))
        self.open_dialog(dialog)
        return dialog


class RegistryDialog(FormDialog):
    def __init__(self, ops: Ops, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(
            ops,
            session,
            title="Add registry",
            intro=(
                "A registry serving the OCI Distribution API, or a directory of OCI image "
                "layouts (file:///path). Its password is sealed on this machine and never shown."
            ),
            primary="Add registry",
            changes=[Change.RELEASES],
            parent=parent,
        )
        self.name = QLineEdit()
        self.name.setPlaceholderText("e.g. main")
        self.url = QLineEdit()
        self.url.setPlaceholderText("https://registry.example.com")
        self.username = QLineEdit()
        self.username.setPlaceholderText("optional")
        self.password = QLineEdit()
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.password.setPlaceholderText("with a user")
        self.insecure = QCheckBox("Allow plain HTTP and skip TLS certificate checks")
        self.form.addRow("Name", self.name)
        self.form.addRow("Address", self.url)
        self.form.addRow("User", self.username)
        self.form.addRow("Password", self.password)
        self.form.addRow("", self.insecure)
        self.form.addRow(
            "", field_note("Plain HTTP sends the password in clear to this registry's host.")
        )

    def work(self) -> Callable[[Stella], Any]:
        name = self.name.text().strip()
        url = self.url.text().strip()
        username = self.username.text().strip() or None
        password = self.password.text() or None
        insecure = self.insecure.isChecked()
        if not name or not url:
            raise DefinitionError("A registry needs a name and an address.")
        check_name("registry", name)
        if password and not username:
            raise DefinitionError("A password goes with a user: give the user too.")
        if username and not password:
            raise DefinitionError("Give the user's password (it is sealed, never shown).")
        return lambda stella: stella.releases.add_registry(
            name, url, username=username, password=password, insecure=insecure
        )


class RemoveRegistryDialog(FormDialog):
    """Remove a registry (refused by the core while a component names it)."""

    def __init__(self, ops: Ops, session: Session, name: str, parent: QWidget | None = None):
        super().__init__(
            ops,
            session,
            title=f"Remove registry {name}",
            intro=(
                "Its address and sealed password are removed. Releases keep their digests; "
                "a registry that components use stays."
            ),
            primary="Remove registry",
            changes=[Change.RELEASES],
            parent=parent,
        )
        self.name = name

    def work(self) -> Callable[[Stella], Any]:
        name = self.name
        return lambda stella: stella.releases.remove_registry(name)
