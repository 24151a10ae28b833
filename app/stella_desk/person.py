"""Who acts at this desk: the person switch's rule, the passphrase it asks for, the demo badge.

People sign approvals with their own keys, so switching to another person is proving to be them:
the switch asks for that person's key passphrase and opens their key with it (on a worker
thread: opening a key under a passphrase costs about half a second of scrypt) before acting as
them. A person whose key has no passphrase of their own cannot be switched to, except back to
the person the desk was opened as. Only where the database says it is a demo (`stella demo
seed`) is the switch one click for such people, and the window then says so, always.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QLineEdit, QPushButton, QWidget

from stella_desk.chrome import InlineError, dialog_buttons, dialog_layout, fit_height
from stella_desk.ops import Ops

if TYPE_CHECKING:
    from stella_core.bootstrap import Stella
    from stella_core.tenancy.model import Identity

DEMO_TEXT = "Demo mode — anyone at this desk can act as any demo person"
DEMO_TIP = (
    "The database says it is a demo (stella demo seed), so the person switch acts as the demo "
    "people with one click and signs with their keys. On a real database every switch asks for "
    "the person's key passphrase."
)


class Switch(StrEnum):
    """What choosing a person in the switch does."""

    AT_ONCE = "at once"  # the demo's people, or back to whoever opened the desk
    ASK = "ask"  # their key is under their own passphrase: prove it
    REFUSED = "refused"  # no passphrase of their own: nothing would prove who acts


@dataclass(frozen=True)
class Candidate:
    """What the switch needs to know about a person, read on a worker thread."""

    name: str
    demo: bool  # the database's word, read at the moment of the switch
    protected: bool  # their key is under their own passphrase
    unlocked: bool  # ... and the current session holds it (they are the one acting)


def read_candidate(current: Stella, name: str) -> Candidate:
    """Worker thread."""
    # The person, not their login role (named by tenant and person since 0012).
    user = current.profiles.get(current.backend.target, name).person_name
    return Candidate(
        name=name,
        demo=current.tenancy.is_demo(),
        protected=current.local_keys.protected(user),
        unlocked=name == current.profile.name and current.local_keys.unlocked(user),
    )


def switch_rule(candidate: Candidate, *, opened_as: bool) -> Switch:
    if candidate.protected:
        return Switch.AT_ONCE if candidate.unlocked else Switch.ASK
    if candidate.demo or opened_as:
        return Switch.AT_ONCE
    return Switch.REFUSED


def open_as(current: Stella, name: str, passphrase: str | None) -> tuple[Stella, Identity]:
    """Worker thread: the other person's handle (their key opened with `passphrase` when given),
    checked by asking the database who it is."""
    other = current.as_person(name, passphrase)
    try:
        return other, other.tenancy.whoami()
    except BaseException:
        other.close(keep_backend=True)
        raise


class DemoBadge(QLabel):
    """Always in the toolbar while the database says it is a demo: screenshots show it too."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(DEMO_TEXT, parent)
        self.setObjectName("demoBadge")
        self.setToolTip(DEMO_TIP)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setStyleSheet(
            "QLabel#demoBadge { color: #7a3e00; background: #fff1d6; border: 1px solid #f0b65a;"
            " border-radius: 11px; padding: 3px 12px; font-size: 12px; font-weight: 600; }"
        )
        self.hide()


class PassphraseDialog(QDialog):
    """Asks for one person's key passphrase and hands it to `attempt`, which proves it (opening
    their key) and switches, or returns why not; the refusal stays here. Opened with `open()`
    (never `exec()`). For a person with no passphrase of their own it only says why not."""

    switched = Signal(str)

    def __init__(
        self,
        name: str,
        *,
        protected: bool,
        attempt: Callable[[str, str], Awaitable[str | None]],
        ops: Ops,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.name = name
        self.protected = protected
        self._attempt = attempt
        self.ops = ops
        self._busy = False
        self.setWindowTitle(f"Act as {name}")
        self.setMinimumWidth(520)
        if protected:
            intro = (
                f"{name} signs approvals with their own key. Enter the passphrase of {name}'s "
                "key to act as them at this desk; it is kept in memory until the desk switches "
                "to someone else."
            )
        else:
            intro = (
                f"{name}'s signing key has no passphrase of their own, so nothing here could "
                f"prove that it is {name} who acts. {name} sets one with "
                f"“stella --profile {name} keys passphrase”, then may act here."
            )
        title = f"Act as {name}" if protected else f"{name} cannot act here yet"
        outer = self._outer = dialog_layout(self, title, intro, gap_after_intro=6)
        self.passphrase = QLineEdit()
        self.passphrase.setEchoMode(QLineEdit.EchoMode.Password)
        self.passphrase.setPlaceholderText(f"{name}'s key passphrase")
        self.passphrase.setVisible(protected)
        outer.addWidget(self.passphrase)
        self.error_box = InlineError()
        self.error = self.error_box.text
        outer.addWidget(self.error_box)
        outer.addStretch(1)
        if protected:
            buttons, self.cancel_button, self.switch_button = dialog_buttons(f"Act as {name}")
            self.switch_button.clicked.connect(self.submit)
            self.passphrase.returnPressed.connect(self.submit)
            self.passphrase.textChanged.connect(self._edited)
        else:
            buttons = QHBoxLayout()
            buttons.addStretch(1)
            self.cancel_button = QPushButton("Close")
            self.cancel_button.setDefault(True)
            self.switch_button = QPushButton(f"Act as {name}")
            self.switch_button.hide()
            buttons.addWidget(self.cancel_button)
        outer.addLayout(buttons)
        self.cancel_button.clicked.connect(self.reject)
        self.finished.connect(lambda _result: self.passphrase.clear())

    def _edited(self, text: str) -> None:
        self.switch_button.setEnabled(bool(text) and not self._busy)
        if text:
            self.error_box.hide()

    def refusal(self) -> str:
        return self.error.text() if not self.error_box.isHidden() else ""

    def submit(self) -> None:
        if self.protected and self.passphrase.text() and not self._busy:
            self.ops.spawn(self.prove())

    async def prove(self) -> bool:
        """Switch with what was typed; True once acting as the person."""
        text = self.passphrase.text()
        self._set_busy(True)
        problem = await self._attempt(self.name, text)
        self._set_busy(False)
        if problem is not None:
            self.passphrase.clear()
            self.passphrase.setFocus()
            self.error.setText(problem)
            self.error_box.show()
            fit_height(self, self._outer)
            return False
        self.switched.emit(self.name)
        self.accept()
        return True

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        self.passphrase.setEnabled(not busy)
        self.switch_button.setEnabled(not busy and bool(self.passphrase.text()))
        self.switch_button.setText("Checking…" if busy else f"Act as {self.name}")
