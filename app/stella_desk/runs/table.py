"""The run list: a table model over immutable `RunInfo` records, its filter, the status badge.

Like the release list: one Python list, `data()` formats only painted rows, filtering matches
lower-cased text built on first use, and a run the monitor saw change updates its row alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import Any
from uuid import UUID

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QRectF,
    Qt,
)
from PySide6.QtGui import QFont, QFontMetricsF, QPainter
from PySide6.QtWidgets import QStyle, QStyledItemDelegate, QStyleOptionViewItem, QWidget

from stella_core.workflows.model import RunInfo
from stella_desk.runs.status import run_badge, status_text, when_text
from stella_desk.tables import TextFilterProxy, follow_permutation, sort_permutation

RunRole = Qt.ItemDataRole.UserRole + 1
AnyIndex = QModelIndex | QPersistentModelIndex


class Column(IntEnum):
    TEMPLATE = 0
    VERSION = 1
    RELEASE = 2
    STATUS = 3
    STARTED = 4
    BY = 5


HEADERS = {
    Column.TEMPLATE: "Template",
    Column.VERSION: "Version",
    Column.RELEASE: "Release",
    Column.STATUS: "Status",
    Column.STARTED: "Started",
    Column.BY: "By",
}


def release_name(run: RunInfo) -> str:
    release = run.release or {}
    return str(release.get("name") or "")


def started(run: RunInfo) -> Any:
    return run.started_at or run.created_at


SORT_KEYS: dict[Column, Callable[[RunInfo], Any]] = {
    Column.TEMPLATE: lambda r: (r.template.lower(), r.template_version),
    Column.VERSION: lambda r: r.template_version,
    Column.RELEASE: lambda r: release_name(r).lower(),
    Column.STATUS: lambda r: r.status,
    Column.STARTED: started,
    Column.BY: lambda r: r.created_by.lower(),
}


def search_text(run: RunInfo) -> str:
    parts = [
        run.template,
        f"v{run.template_version}",
        release_name(run),
        run.status,
        status_text(run.status),
        run.created_by,
        str(run.id),
    ]
    return "\n".join(parts).lower()


class RunTableModel(QAbstractTableModel):
    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._runs: list[RunInfo] = []
        self._row: dict[UUID, int] = {}
        self._search: list[str] | None = None
        self._sort = (Column.STARTED, Qt.SortOrder.DescendingOrder)

    # --- records ---------------------------------------------------------------------------
    def set_runs(self, runs: Sequence[RunInfo]) -> None:
        column, order = self._sort
        ordered = sorted(runs, key=SORT_KEYS[column], reverse=order == Qt.SortOrder.DescendingOrder)
        self.beginResetModel()
        self._runs = ordered
        self._reindex()
        self.endResetModel()

    def upsert(self, run: RunInfo) -> int:
        """A run seen elsewhere (started here, or changed in the monitor): its row alone."""
        slim = run.model_copy(update={"steps": ()})  # the list never shows steps
        row = self._row.get(run.id)
        if row is None:
            self.beginInsertRows(QModelIndex(), 0, 0)
            self._runs.insert(0, slim)
            self._reindex()
            self.endInsertRows()
            return 0
        if self._runs[row] != slim:
            self._runs[row] = slim
            if self._search is not None:
                self._search[row] = search_text(slim)
            self.dataChanged.emit(self.index(row, 0), self.index(row, len(Column) - 1))
        return row

    def _reindex(self) -> None:
        self._row = {r.id: i for i, r in enumerate(self._runs)}
        self._search = None

    def runs(self) -> Sequence[RunInfo]:
        return self._runs

    def run_at(self, row: int) -> RunInfo:
        return self._runs[row]

    def row_of(self, run_id: UUID) -> int | None:
        return self._row.get(run_id)

    def matches(self, row: int, terms: tuple[str, ...]) -> bool:
        if self._search is None:
            self._search = [search_text(r) for r in self._runs]
        text = self._search[row]
        return all(term in text for term in terms)

    # --- Qt model --------------------------------------------------------------------------
    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._runs)

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(Column)

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        run = self._runs[index.row()]
        column = Column(index.column())
        if role == Qt.ItemDataRole.DisplayRole:
            if column is Column.TEMPLATE:
                return run.template
            if column is Column.VERSION:
                return f"v{run.template_version}"
            if column is Column.RELEASE:
                return release_name(run) or "—"
            if column is Column.STATUS:
                return status_text(run.status)
            if column is Column.STARTED:
                return when_text(started(run))
            return run.created_by
        if role == RunRole:
            return run
        if role == Qt.ItemDataRole.ToolTipRole:
            if column is Column.STATUS and run.error:
                return run.error
            if column is Column.TEMPLATE:
                return f"run {run.id}"
        return None

    def headerData(
        self,
        section: int,
        orientation: Qt.Orientation,
        role: int = Qt.ItemDataRole.DisplayRole,
    ) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return HEADERS[Column(section)]
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        self._sort = (Column(column), order)
        self.layoutAboutToBeChanged.emit()
        key = SORT_KEYS[Column(column)]
        runs = self._runs
        permutation = sort_permutation(runs, key, order)
        self._runs = [runs[i] for i in permutation]
        search = self._search
        self._reindex()
        if search is not None:
            self._search = [search[i] for i in permutation]
        follow_permutation(self, permutation)
        self.layoutChanged.emit()


class RunFilterProxy(TextFilterProxy):
    """Free-text filter (every word must match template, release, status, person or id)."""

    def __init__(self, source: RunTableModel, parent: QObject | None = None) -> None:
        super().__init__(source, parent)
        self._source = source

    def run_at(self, row: int) -> RunInfo:
        return self._source.run_at(self.source_row(row))


class StatusBadgeDelegate(QStyledItemDelegate):
    """The status column as a coloured pill."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._font = QFont()
        self._font.setPixelSize(11)
        self._font.setWeight(QFont.Weight.DemiBold)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: AnyIndex) -> None:
        run = index.data(RunRole)
        if not isinstance(run, RunInfo):
            super().paint(painter, option, index)
            return
        # The row's background (selection, alternate colour) as the style paints it.
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        opt.text = ""
        widget: QWidget | None = opt.widget
        style = widget.style() if widget is not None else None
        if style is not None:
            style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, widget)
        text = status_text(run.status)
        fg, bg = run_badge(run.status)
        rect = QRectF(opt.rect)
        width = QFontMetricsF(self._font).horizontalAdvance(text) + 18
        pill = QRectF(rect.left() + 6, rect.center().y() - 9, width, 18)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(bg)
        painter.drawRoundedRect(pill, 9, 9)
        painter.setPen(fg)
        painter.setFont(self._font)
        painter.drawText(pill, Qt.AlignmentFlag.AlignCenter, text)
        painter.restore()
