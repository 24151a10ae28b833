"""The selected release: every component with its repository, tag and full digest."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QFontMetrics, QGuiApplication
from PySide6.QtWidgets import (
    QGridLayout,
    QHBoxLayout,
    QMenu,
    QScrollArea,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from stella_core.releases.model import Release, ReleaseComponent
from stella_desk.chrome import Card, label
from stella_desk.fit import ElidedLabel
from stella_desk.humane import short_id
from stella_desk.releases.table import created_text
from stella_desk.theme import mono_font

DIGEST_LENGTH = len("sha256:") + 64
GRID_HEADERS = ("COMPONENT", "TAG", "REPOSITORY", "DIGEST", "")


class ComponentLine:
    """One pinned component's widgets in the detail grid; `copy` is what its button does."""

    def __init__(
        self,
        component: ReleaseComponent,
        grid: QGridLayout,
        row: int,
        on_copied: Callable[[str], None],
    ) -> None:
        self.component = component
        self._on_copied = on_copied
        name = label(component.name)
        name.setStyleSheet("font-weight: 600;")
        tag = label(component.tag or "by digest", "chip" if component.tag else "muted")
        where = component.repository
        if component.registry:
            where = f"{component.registry}/{component.repository}"
        repository = label(where, "muted", selectable=True)
        repository.setToolTip(f"registry {component.registry or '?'}, {component.repository}")
        self.digest = label(component.digest, "digest", selectable=True)
        self.digest.setObjectName("digest")
        self.digest.setFont(mono_font())
        # Never elided or clipped: the whole digest is the point of this screen.
        self.digest.setMinimumWidth(
            QFontMetrics(self.digest.font()).horizontalAdvance(component.digest) + 4
        )

        self.copy_button = QToolButton()
        self.copy_button.setProperty("kind", "copy")
        self.copy_button.setText("Copy digest")
        self.copy_button.setToolTip(f"Copy {component.pinned_reference}")
        self.copy_button.setPopupMode(QToolButton.ToolButtonPopupMode.MenuButtonPopup)
        menu = QMenu(self.copy_button)
        pinned = QAction("Copy pinned reference (repo@sha256:…)", menu)
        pinned.triggered.connect(lambda: self.copy(pinned=True))
        digest_only = QAction("Copy digest only (sha256:…)", menu)
        digest_only.triggered.connect(lambda: self.copy(pinned=False))
        menu.addActions([pinned, digest_only])
        self.copy_button.setMenu(menu)
        self.copy_button.clicked.connect(lambda: self.copy(pinned=True))

        align = Qt.AlignmentFlag.AlignVCenter
        grid.addWidget(name, row, 0, align)
        grid.addWidget(tag, row, 1, align | Qt.AlignmentFlag.AlignLeft)
        grid.addWidget(repository, row, 2, align)
        grid.addWidget(self.digest, row, 3, align)
        grid.addWidget(self.copy_button, row, 4, align)

    def copy(self, *, pinned: bool = True) -> str:
        text: str = self.component.pinned_reference if pinned else self.component.digest
        QGuiApplication.clipboard().setText(text)
        self._on_copied(text)
        return text


class ReleaseDetail(QWidget):
    copied = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.release: Release | None = None
        self.lines: list[ComponentLine] = []
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self._scroll = QScrollArea()
        self._scroll.setWidgetResizable(True)
        self._scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        outer.addWidget(self._scroll)
        self.show_release(None)

    def show_release(self, release: Release | None) -> None:
        self.release = release
        self.lines = []
        page = QWidget()
        column = QVBoxLayout(page)
        column.setContentsMargins(0, 0, 0, 4)
        column.setSpacing(8)
        if release is None:
            hint = label("Select a release to see its components and their pinned digests.")
            hint.setProperty("kind", "muted")
            hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
            column.addStretch(1)
            column.addWidget(hint)
            column.addStretch(1)
        else:
            column.addLayout(self._heading(release))
            card = Card()
            card.body.setContentsMargins(18, 12, 14, 12)
            grid = QGridLayout()
            grid.setHorizontalSpacing(18)
            grid.setVerticalSpacing(10)
            for col, text in enumerate(GRID_HEADERS):
                grid.addWidget(label(text, "section"), 0, col)
            for row, component in enumerate(release.components, start=1):
                self.lines.append(ComponentLine(component, grid, row, self.copied.emit))
            grid.setColumnStretch(3, 1)
            card.body.addLayout(grid)
            column.addWidget(card)
            column.addStretch(1)
        old = self._scroll.takeWidget()
        self._scroll.setWidget(page)
        if old is not None:
            old.deleteLater()

    @staticmethod
    def _heading(release: Release) -> QHBoxLayout:
        # The name gives way ("…", full in the tooltip) so the digests keep their width.
        row = QHBoxLayout()
        row.setSpacing(12)
        title = ElidedLabel(release.name)
        title.setObjectName("releaseName")
        title.setStyleSheet("font-size: 17px; font-weight: 600;")
        row.addWidget(title, 1)
        count = len(release.components)
        noun = "component" if count == 1 else "components"
        facts = label(
            f"created {created_text(release)} by {release.created_by} · {count} {noun} · "
            f"id {short_id(release.id)}",
            "muted",
        )
        facts.setToolTip(f"release id {release.id}")
        row.addWidget(facts, 0, Qt.AlignmentFlag.AlignBottom)
        return row

    def digest_texts(self) -> list[str]:
        return [line.digest.text() for line in self.lines]
