"""Settings: which database this machine's desk and command line use. The embedded default (a
PostgreSQL of its own in this user's data directory) or a shared PostgreSQL server, saved in
STELLA_HOME (the password sealed by this machine's key), so no environment variable is needed.
A server is tested before it is saved; the password is never shown, logged or put in a message.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from stella_core.errors import DefinitionError
from stella_core.profiles import (
    DATABASE_URL_ENV,
    EMBEDDED,
    DatabaseSetting,
    stella_home,
    target_of,
)
from stella_desk.chrome import PAGE_MARGINS, Card, PageHeader, label
from stella_desk.ops import OpFailed, Ops
from stella_desk.session import Session


def server_url(host: str, port: int, database: str, user: str, password: str) -> str:
    """A postgresql:// URL from its parts (each quoted; an IPv6 address in brackets)."""
    if not host:
        raise DefinitionError("Name the server (its host name or address).")
    if not user:
        raise DefinitionError("Give the database user the desk connects as.")
    if not database:
        raise DefinitionError("Name the database on the server.")
    shown_host = f"[{host}]" if ":" in host else host
    secret = f":{quote(password, safe='')}" if password else ""
    return f"postgresql://{quote(user, safe='')}{secret}@{shown_host}:{port}/{quote(database)}"


class SettingsPage(QWidget):
    status_message = Signal(str)
    saved = Signal(str)  # the target saved ("embedded" or the server without credentials)

    def __init__(self, ops: Ops, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("page")
        self.ops = ops
        self.session = session
        page = QVBoxLayout(self)
        page.setContentsMargins(*PAGE_MARGINS)
        page.setSpacing(12)
        page.addWidget(PageHeader("Settings", "Which database this machine's desk uses."))

        card = Card("Database")
        card.setMaximumWidth(760)
        self.current = label("", "muted")
        self.current.setWordWrap(True)
        card.body.addWidget(self.current)
        self.embedded = QRadioButton("The embedded database on this machine (the default)")
        self.shared = QRadioButton("A shared PostgreSQL server (16 or newer)")
        group = QButtonGroup(self)
        group.addButton(self.embedded)
        group.addButton(self.shared)
        card.body.addWidget(self.embedded)
        card.body.addWidget(self.shared)

        self.fields = QWidget()
        form = QFormLayout(self.fields)
        form.setContentsMargins(24, 4, 0, 4)
        form.setHorizontalSpacing(14)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.host = QLineEdit()
        self.host.setPlaceholderText("db.example.com")
        self.port = QSpinBox()
        self.port.setRange(1, 65535)
        self.port.setValue(5432)
        self.port.setMaximumWidth(120)
        self.database = QLineEdit("stella")
        self.user = QLineEdit()
        self.user.setPlaceholderText("a role that may migrate the schema")
        self.password = QLineEdit()
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        form.addRow("Server", self.host)
        form.addRow("Port", self.port)
        form.addRow("Database", self.database)
        form.addRow("User", self.user)
        form.addRow("Password", self.password)
        card.body.addWidget(self.fields)

        # The outcome of a test or a save: a line kept in place, so nothing below it moves.
        self.result = label("", selectable=True)
        self.result.setWordWrap(True)
        self.result.setMinimumHeight(2 * self.result.fontMetrics().lineSpacing() + 6)
        card.body.addWidget(self.result)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.test_button = QPushButton("Test connection")
        self.save_button = QPushButton("Save")
        self.save_button.setProperty("kind", "primary")
        buttons.addWidget(self.test_button)
        buttons.addWidget(self.save_button)
        card.body.addLayout(buttons)
        self.override = label("", "muted")
        self.override.setWordWrap(True)
        card.body.addWidget(self.override)
        page.addWidget(card)
        page.addStretch(1)

        self.embedded.toggled.connect(lambda _on: self._sync())
        self.test_button.clicked.connect(lambda _checked=False: self.ops.spawn(self.test()))
        self.save_button.clicked.connect(lambda _checked=False: self.ops.spawn(self.save()))
        self._has_saved_password = False
        self.embedded.setChecked(True)
        self._sync()

    async def refresh(self) -> None:
        """Read the saved setting (a small private file: no need for a worker thread)."""
        self.load()

    # --- reading ---------------------------------------------------------------------------
    @property
    def home(self) -> Path:
        """The STELLA_HOME the desk runs with (the open core's, else the default one)."""
        stella = self.session.stella
        return stella.home if stella is not None else stella_home()

    def load(self) -> None:
        """Show the saved choice (a server without its password)."""
        import os

        setting = DatabaseSetting(self.home)
        try:
            shown = setting.shown()
            has_password = setting.has_password()
        except DefinitionError as exc:
            self._say(exc.message, bad=True)
            shown, has_password = None, False
        if shown:
            parts = urlsplit(shown)
            self.shared.setChecked(True)
            self.host.setText(parts.hostname or "")
            self.port.setValue(parts.port or 5432)
            self.database.setText(unquote(parts.path.lstrip("/")) or "postgres")
            self.user.setText(unquote(parts.username or ""))
        else:
            self.embedded.setChecked(True)
        self.password.clear()
        self.password.setPlaceholderText(
            "saved (leave empty to keep it)" if has_password else "the user's password"
        )
        self._has_saved_password = has_password
        stella = self.session.stella
        target = stella.backend.target if stella is not None else None
        where = (
            "the embedded database on this machine"
            if target == EMBEDDED
            else (target or "not connected yet")
        )
        self.current.setText(
            f"This desk is connected to {where}. A change applies at the next start."
        )
        self.override.setText(
            f"{DATABASE_URL_ENV} is set where the desk was started; it wins over this setting."
            if os.environ.get(DATABASE_URL_ENV)
            else ""
        )
        self.override.setVisible(bool(self.override.text()))
        self._sync()

    def _sync(self) -> None:
        self.fields.setEnabled(self.shared.isChecked())
        self.test_button.setEnabled(self.shared.isChecked())

    def url(self) -> str | None:
        """The server's URL from the fields (None: the embedded default); a password left empty
        keeps the saved one."""
        if self.embedded.isChecked():
            return None
        password = self.password.text()
        if not password and self._has_saved_password:
            saved = DatabaseSetting(self.home).url()
            password = unquote(urlsplit(saved).password or "") if saved else ""
        return server_url(
            self.host.text().strip(),
            self.port.value(),
            self.database.text().strip(),
            self.user.text().strip(),
            password,
        )

    def _say(self, text: str, *, bad: bool = False) -> None:
        self.result.setText(text)
        self.result.setProperty("kind", "error" if bad else "muted")
        self.result.style().unpolish(self.result)
        self.result.style().polish(self.result)

    # --- acting ----------------------------------------------------------------------------
    async def test(self) -> str | None:
        """Connect once to the server in the fields; say what it is or what went wrong."""
        try:
            url = self.url()
        except DefinitionError as exc:
            self._say(exc.message, bad=True)
            return None
        if url is None:
            return None
        from stella_core.bootstrap import probe_database

        self._say("Connecting…")
        try:
            found = await self.ops.run(
                lambda _report: probe_database(url),
                label="Testing the database connection",
                present_errors=False,
            )
        except OpFailed as exc:
            self._say(f"Could not connect: {exc.message}", bad=True)
            return None
        self._say(f"Connected: {found}.")
        return str(found)

    async def save(self) -> bool:
        """Save the choice; a server only once a connection to it works."""
        try:
            url = self.url()
        except DefinitionError as exc:
            self._say(exc.message, bad=True)
            return False
        self.save_button.setEnabled(False)
        try:
            if url is not None and await self.test() is None:
                return False
            home = self.home
            try:
                await self.ops.run(
                    lambda _report: DatabaseSetting(home).save(url),
                    label="Saving the database setting",
                    present_errors=False,
                )
            except OpFailed as exc:
                self._say(f"Not saved: {exc.message}", bad=True)
                return False
        finally:
            self.save_button.setEnabled(True)
        target = target_of(url)
        where = "the embedded database" if url is None else target
        self._say(f"Saved. The desk and the stella command use {where} from their next start.")
        self.status_message.emit(f"Database setting saved: {where}")
        self.saved.emit(target)
        self.load_keeping_result()
        return True

    def load_keeping_result(self) -> None:
        text, kind = self.result.text(), self.result.property("kind")
        self.load()
        self._say(text, bad=kind == "error")
