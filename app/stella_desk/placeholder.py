"""Screens not built yet: a clear notice of what each will do, and no made-up data."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QVBoxLayout, QWidget

from stella_desk.chrome import PAGE_MARGINS, Card, PageHeader, label


class ComingLater(QWidget):
    def __init__(
        self, title: str, subtitle: str, purpose: str, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName("page")
        self.purpose = purpose
        page = QVBoxLayout(self)
        page.setContentsMargins(*PAGE_MARGINS)
        page.setSpacing(14)
        page.addWidget(PageHeader(title, subtitle))
        page.addStretch(1)
        card = Card()
        card.setFixedWidth(560)  # a fixed width lets the wrapped text get its height
        card.body.setContentsMargins(32, 28, 32, 28)
        card.body.setSpacing(10)
        badge = label("Coming in a later version", "chip")
        card.body.addWidget(badge, 0, Qt.AlignmentFlag.AlignHCenter)
        text = label(purpose)
        text.setWordWrap(True)
        text.setAlignment(Qt.AlignmentFlag.AlignCenter)
        text.setStyleSheet("font-size: 14px;")
        card.body.addWidget(text)
        # Centred by stretches, not by an alignment flag: aligned items lose height-for-width
        # and the wrapped sentence would be clipped.
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(card)
        row.addStretch(1)
        page.addLayout(row)
        page.addStretch(2)
