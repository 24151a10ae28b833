"""Small building blocks every page shares: page header, card, role badge, error banner,
empty state."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QLayout,
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
    """An error shown in place inside a dialog (not dismissible: the next attempt clears it).

    Its line is kept free while hidden, so when it appears the buttons next to it stay where
    the pointer is (a button that moves gets the wrong click)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setProperty("kind", "banner")
        box = QVBoxLayout(self)
        box.setContentsMargins(12, 8, 12, 8)
        self.text = label(selectable=True)
        self.text.setWordWrap(True)
        self.text.setMinimumHeight(self.text.fontMetrics().lineSpacing())
        box.addWidget(self.text)
        policy = self.sizePolicy()
        policy.setRetainSizeWhenHidden(True)
        self.setSizePolicy(policy)
        self.hide()


class EmptyState(QWidget):
    """What shows instead of an empty table: why it is empty and what to do about it."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        column = QVBoxLayout(self)
        column.addStretch(1)
        card = Card()
        card.setFixedWidth(540)  # a fixed width lets the wrapped text get its height
        card.body.setContentsMargins(28, 22, 28, 22)
        card.body.setSpacing(8)
        self.title = label("")
        self.title.setStyleSheet("font-size: 16px; font-weight: 600;")
        self.title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.text = label("", "muted")
        self.text.setWordWrap(True)
        self.text.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.action = QPushButton()
        card.body.addWidget(self.title)
        card.body.addWidget(self.text)
        card.body.addWidget(self.action, 0, Qt.AlignmentFlag.AlignHCenter)
        # Centred by stretches: an aligned item loses height-for-width and would clip the text.
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(card)
        row.addStretch(1)
        column.addLayout(row)
        column.addStretch(2)

    def say(self, title: str, text: str, action: str | None = None) -> None:
        self.title.setText(title)
        self.text.setText(text)
        self.action.setText(action or "")
        self.action.setVisible(action is not None)


def dialog_layout(
    dialog: QWidget, title: str, intro: str, *, gap_after_intro: int = 4
) -> QVBoxLayout:
    """A dialog's outer layout with its title and the sentence saying what it does."""
    outer = QVBoxLayout(dialog)
    outer.setContentsMargins(24, 20, 24, 18)
    outer.setSpacing(10)
    outer.addWidget(label(title, "title"))
    sentence = label(intro, "subtitle")
    sentence.setWordWrap(True)
    outer.addWidget(sentence)
    outer.addSpacing(gap_after_intro)
    return outer


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


def fit_height(window: QWidget, layout: QLayout) -> None:
    """Grow a dialog to the height its content needs at its current width. Content that arrives
    after the dialog opened (gates, errors) would be squeezed otherwise: a window's size ignores
    the height that wrapped text takes at a given width."""
    layout.activate()
    width = window.width()
    if layout.hasHeightForWidth():
        wanted = layout.totalHeightForWidth(width)
    else:
        wanted = window.sizeHint().height()
    if window.height() < wanted:
        window.resize(width, wanted)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
