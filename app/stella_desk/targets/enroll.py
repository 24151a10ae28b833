"""Enrolling an agent (admins): a one-time token made here, shown once as the one-line
`stella-agent enroll ...` command to run on the target, with the agent CA's fingerprint pinned
in it. The token lives in this dialog only while it is open: never in a log, a status message
or an operation's label; closing the dialog forgets it."""

from __future__ import annotations

import shlex
import socket
from datetime import timedelta
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCloseEvent, QGuiApplication, QTextOption
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QWidget,
)

from stella_core.agents.service import check_labels
from stella_core.errors import DefinitionError, StellaError
from stella_core.limits import check_name
from stella_core.profiles import EMBEDDED
from stella_desk import theme
from stella_desk.admin.common import FormDialog, field_note
from stella_desk.chrome import dialog_buttons, dialog_layout, fit_height, label
from stella_desk.ops import OpFailed, Ops
from stella_desk.session import Session
from stella_desk.targets import read

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from stella_core.agents.model import Agent, IssuedToken
    from stella_core.bootstrap import Stella

# How long a token may wait for its agent (the core allows 1 minute to 30 days).
EXPIRIES: list[tuple[str, timedelta]] = [
    ("1 hour", timedelta(hours=1)),
    ("24 hours", timedelta(hours=24)),
    ("7 days", timedelta(days=7)),
    ("30 days", timedelta(days=30)),
]
DEFAULT_EXPIRY = 1  # 24 hours, as `stella agent token create`
STATE_DIR = "~/.stella-agent"  # as the README's example: the agent's own folder on the target
AGENT_PORT = 7443  # stella serve --agent-listen's port in the README
SERVER_KEY = "targets/enroll-server"


def default_server(stella: Stella | None) -> str:
    """Where agents reach stella serve's enrollment port: the last address used here, else the
    database server's host (where serve usually runs), else this machine's name."""
    saved = theme.settings().value(SERVER_KEY, "")
    if isinstance(saved, str) and saved:
        return saved
    host = socket.gethostname() or "orchestrator"
    if stella is not None and stella.backend.target != EMBEDDED:
        from sqlalchemy.engine import make_url

        host = make_url(stella.backend.admin_url).host or host
    return f"{host}:{AGENT_PORT}"


def parse_labels(text: str) -> dict[str, str]:
    """`site=lab, os=linux` (commas or spaces between them)."""
    labels: dict[str, str] = {}
    for part in text.replace(",", " ").split():
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise DefinitionError(f"{part!r} is not a label KEY=VALUE")
        if key in labels:
            raise DefinitionError(f"label {key} is given twice")
        labels[key] = value
    return check_labels(labels)


def enroll_command(server: str, token: str, ca_fingerprint: str) -> str:
    """The one line to run on the target (the state folder's ~ left for its shell)."""
    argv = ["stella-agent", "enroll", "--server", server, "--token", token]
    quoted = shlex.join([*argv, "--ca-fingerprint", ca_fingerprint])
    return f"{quoted} --state-dir {STATE_DIR}"


class EnrollDialog(QDialog):
    """Name, labels and expiry -> a token, shown once as the command to copy."""

    issued = Signal(str)  # the agent name a token was made for (never the token)
    copied = Signal()

    def __init__(self, ops: Ops, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ops = ops
        self.session = session
        self._issued: IssuedToken | None = None
        self.setWindowTitle("Enroll an agent")
        self.setMinimumWidth(680)
        self.outer = dialog_layout(
            self,
            "Enroll an agent",
            "A one-time token lets one machine enroll as an agent. Run the command below on "
            "that machine: the agent checks the orchestrator's certificate authority against "
            "the fingerprint in it before it sends the token.",
        )
        form = QFormLayout()
        form.setHorizontalSpacing(14)
        form.setVerticalSpacing(8)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.name = QLineEdit()
        self.name.setPlaceholderText("e.g. edge-1 (the name targets use)")
        form.addRow("Agent name", self.name)
        self.labels = QLineEdit()
        self.labels.setPlaceholderText("e.g. site=lab os=linux")
        form.addRow("Labels", self.labels)
        self.expiry = QComboBox()
        for text, ttl in EXPIRIES:
            self.expiry.addItem(f"in {text}", ttl)
        self.expiry.setCurrentIndex(DEFAULT_EXPIRY)
        form.addRow("Token expires", self.expiry)
        self.server = QLineEdit(default_server(session.stella))
        self.server.setToolTip("Where stella serve's agent port (--agent-listen) answers")
        form.addRow("Orchestrator", self.server)
        form.addRow("", field_note("Where the agent reaches stella serve's enrollment port."))
        self.outer.addLayout(form)

        self.command_title = label("RUN THIS ON THE AGENT'S MACHINE", "section")
        self.outer.addWidget(self.command_title)
        row = QHBoxLayout()
        row.setSpacing(8)
        # Wrapped, not scrolled: the whole line is in view, to read before it is run.
        self.command = QPlainTextEdit()
        self.command.setReadOnly(True)
        self.command.setFont(theme.mono_font(9))
        self.command.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.command.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.command.setPlaceholderText("The command appears here once the token is made.")
        self.command.setAccessibleName("Enrollment command")
        self.command.setFixedHeight(4 * self.command.fontMetrics().lineSpacing() + 14)
        row.addWidget(self.command, 1)
        self.copy_button = QPushButton("Copy")
        self.copy_button.setEnabled(False)
        row.addWidget(self.copy_button, 0, Qt.AlignmentFlag.AlignTop)
        self.outer.addLayout(row)
        self.note = label("", "muted")
        self.note.setWordWrap(True)
        self.outer.addWidget(self.note)
        self.error = label(kind="error", selectable=True)
        self.error.setWordWrap(True)
        self.error.setMinimumHeight(2 * self.error.fontMetrics().lineSpacing() + 6)
        self.outer.addWidget(self.error)
        self.outer.addStretch(1)
        buttons, self.cancel_button, self.primary = dialog_buttons("Create token")
        self.primary.setEnabled(True)
        self.outer.addLayout(buttons)
        self.command_title.hide()

        self.cancel_button.clicked.connect(self.reject)
        self.primary.clicked.connect(lambda _checked=False: self._primary())
        self.copy_button.clicked.connect(lambda _checked=False: self.copy())
        self.server.textEdited.connect(lambda _text: self._show_command())
        for edit in (self.name, self.labels):
            edit.textEdited.connect(lambda _text: self.error.setText(""))
        self.finished.connect(lambda _result: self.forget())

    # --- state -----------------------------------------------------------------------------
    @property
    def token_made(self) -> bool:
        return self._issued is not None

    def command_text(self) -> str:
        issued = self._issued
        if issued is None:
            return ""
        return enroll_command(self.server.text().strip(), issued.token, issued.ca_fingerprint)

    def _show_command(self) -> None:
        self.command.setPlainText(self.command_text())

    def forget(self) -> None:
        """The token leaves with the dialog: nothing here holds it afterwards."""
        self._issued = None
        self.command.clear()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.forget()
        super().closeEvent(event)

    # --- acting ----------------------------------------------------------------------------
    def _primary(self) -> None:
        if self.token_made:
            self.accept()
        else:
            self.ops.spawn(self.make_token())

    def _request(self) -> tuple[str, dict[str, str], timedelta]:
        name = self.name.text().strip()
        if not name:
            raise DefinitionError("An agent needs a name.")
        check_name("agent", name)
        server = self.server.text().strip()
        if not server or ":" not in server or any(c.isspace() for c in server):
            raise DefinitionError("Say where the orchestrator's agent port is, as HOST:PORT.")
        ttl = self.expiry.currentData()
        assert isinstance(ttl, timedelta)
        return name, parse_labels(self.labels.text()), ttl

    async def make_token(self) -> bool:
        """Make the token (on a worker thread); True once the command shows."""
        if self.token_made:
            return True
        try:
            name, labels, ttl = self._request()
        except StellaError as exc:
            self.error.setText(exc.message)
            return False
        stella = self.session.require()
        self.error.setText("")
        self.primary.setEnabled(False)
        try:
            issued = await self.ops.run(
                lambda _report: read.create_token(stella, name, labels, ttl),
                label=f"Creating an enrollment token for {name}",
                present_errors=False,  # shown here, where the person is looking
            )
        except OpFailed as exc:
            self.error.setText(exc.message)
            return False
        finally:
            self.primary.setEnabled(True)
        self._issued = issued
        theme.settings().setValue(SERVER_KEY, self.server.text().strip())
        for widget in (self.name, self.labels, self.expiry):
            widget.setEnabled(False)
        self._show_command()
        self.command_title.show()
        self.copy_button.setEnabled(True)
        self.note.setText(
            f"Shown once: copy it now. The token enrolls one agent called {issued.name}, once, "
            f"until {issued.expires_at.astimezone():%Y-%m-%d %H:%M}. The agent CA's SHA-256 "
            f"fingerprint is {issued.ca_fingerprint}."
        )
        self.primary.setText("Done")
        self.cancel_button.hide()
        fit_height(self, self.outer)
        self.issued.emit(issued.name)
        return True

    def copy(self) -> str:
        text = self.command_text()
        if text:
            clipboard = QGuiApplication.clipboard()
            if clipboard is not None:
                clipboard.setText(text)
            self.copied.emit()
        return text


class RevokeDialog(FormDialog):
    """Revoke an agent (admins), with a reason: its link is cut at once and every later call
    refused; the reason is kept in the agent's history and the audit log."""

    def __init__(
        self, ops: Ops, session: Session, agent: Agent, parent: QWidget | None = None
    ) -> None:
        super().__init__(
            ops,
            session,
            title=f"Revoke agent {agent.name}?",
            intro=(
                f"{agent.name} on {agent.hostname or 'its machine'} loses its link at once and "
                "can never link again: enrolling that machine again needs a new token. Its "
                "targets fail until another agent takes the name."
            ),
            primary="Revoke agent",
            changes=[],
            parent=parent,
        )
        self.agent = agent
        self.reason = QLineEdit()
        self.reason.setPlaceholderText("why (kept in the agent's history and the audit log)")
        self.form.addRow("Reason", self.reason)

    def work(self) -> Callable[[Stella], Any]:
        reason = self.reason.text().strip()
        if not reason:
            raise DefinitionError("Say why the agent is revoked.")
        agent_id = str(self.agent.id)
        return lambda stella: read.revoke(stella, agent_id, reason)
