"""Small building blocks every page shares: page header, card, role badge, error banner."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from stella_desk.theme import ROLE_COLOURS

PAGE_MARGINS = (28, 22, 28, 22)


def label(text: str = "", kind: str | None = None, *, selectable: bool = False) -> QLabel:
    widget = QLabel(text)
    if kind:
        widget.setProperty("kind", kind)
    if selectable:
        widget.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return widget


class PageHeader(QWidget):
    """Title and one line of purpose; actions (buttons, filters) sit on the right."""

    def __init__(self, title: str, subtitle: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 8)
        text = QVBoxLayout()
        text.setSpacing(2)
        self.title = label(title, "title")
        self.subtitle = label(subtitle, "subtitle")
        text.addWidget(self.title)
        text.addWidget(self.subtitle)
        row.addLayout(text, 1)
        self.action_row = QHBoxLayout()
        self.action_row.setSpacing(8)
        row.addLayout(self.action_row)


class Card(QFrame):
    def __init__(self, title: str | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setProperty("kind", "card")
        self.body = QVBoxLayout(self)
        self.body.setContentsMargins(18, 14, 18, 16)
        self.body.setSpacing(8)
        if title:
            self.body.addWidget(label(title.upper(), "section"))


class RoleBadge(QLabel):
    """The acting person's role as a small coloured pill."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.set_role(None)

    def set_role(self, role: str | None) -> None:
        if not role:
            self.setText("")
            self.setVisible(False)
            return
        fg, bg = ROLE_COLOURS.get(role, ("#374151", "#eceef3"))
        self.setText(role)
        # Inline: the colour depends on the value, which a static sheet cannot express.
        self.setStyleSheet(
            f"color: {fg}; background: {bg}; border-radius: 9px; padding: 1px 9px;"
            "font-size: 11px; font-weight: 600;"
        )
        self.setVisible(True)


class Banner(QFrame):
    """A dismissible message above the content: where operation errors are presented."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setProperty("kind", "banner")
        row = QHBoxLayout(self)
        row.setContentsMargins(14, 8, 8, 8)
        self.text = label(selectable=True)
        self.text.setWordWrap(True)
        row.addWidget(self.text, 1)
        close = QPushButton("Dismiss")
        close.setProperty("kind", "flat")
        close.clicked.connect(self.hide)
        row.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    def show_message(self, title: str, message: str) -> None:
        self.text.setText(f"<b>{_escape(title)}</b> — {_escape(message)}")
        self.show()


class InlineError(QFrame):
    """An error shown in place inside a dialog (not dismissible: the next attempt clears it)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setProperty("kind", "banner")
        box = QVBoxLayout(self)
        box.setContentsMargins(12, 8, 12, 8)
        self.text = label(selectable=True)
        self.text.setWordWrap(True)
        box.addWidget(self.text)
        self.hide()


def dialog_buttons(primary_text: str) -> tuple[QHBoxLayout, QPushButton, QPushButton]:
    """Right-aligned Cancel + primary action (disabled until the form is valid)."""
    row = QHBoxLayout()
    row.addStretch(1)
    cancel = QPushButton("Cancel")
    primary = QPushButton(primary_text)
    primary.setProperty("kind", "primary")
    primary.setDefault(True)
    primary.setEnabled(False)
    row.addWidget(cancel)
    row.addWidget(primary)
    return row, cancel, primary


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
