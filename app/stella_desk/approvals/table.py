"""The inbox list: a table model over immutable `Promotion` records, newest first."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import Any
from uuid import UUID

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor

from stella_core.promotions.model import Promotion
from stella_desk import humane
from stella_desk.promotions.status import STATUS_COLOURS, status_label, status_text

PromotionRole = Qt.ItemDataRole.UserRole + 1
AnyIndex = QModelIndex | QPersistentModelIndex


class Column(IntEnum):
    RELEASE = 0
    ENVIRONMENT = 1
    STATUS = 2
    PROGRESS = 3
    BY = 4
    REQUESTED = 5


HEADERS = {
    Column.RELEASE: "Release",
    Column.ENVIRONMENT: "Into",
    Column.STATUS: "Status",
    Column.PROGRESS: "Approvals",
    Column.BY: "By",
    Column.REQUESTED: "Requested",
}

SORT_KEYS: dict[Column, Callable[[Promotion], Any]] = {
    Column.RELEASE: lambda p: (p.release.lower(), p.requested_at),
    Column.ENVIRONMENT: lambda p: (p.environment.lower(), p.requested_at),
    Column.STATUS: lambda p: (status_label(p.status.value), p.requested_at),
    Column.PROGRESS: lambda p: (len(p.counted_approvals()), p.requested_at),
    Column.BY: lambda p: (p.requested_by.lower(), p.requested_at),
    Column.REQUESTED: lambda p: p.requested_at,
}


def search_text(p: Promotion) -> str:
    return "\n".join(
        [
            p.release,
            p.environment,
            p.requested_by,
            p.reason,
            p.status.value,
            status_label(p.status.value),
            str(p.id),
        ]
    ).lower()


class InboxModel(QAbstractTableModel):
    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[Promotion] = []
        self._row: dict[UUID, int] = {}
        self._sort = (Column.REQUESTED, Qt.SortOrder.DescendingOrder)

    def set_promotions(self, promotions: Sequence[Promotion]) -> None:
        column, order = self._sort
        self.beginResetModel()
        self._rows = sorted(
            promotions, key=SORT_KEYS[column], reverse=order == Qt.SortOrder.DescendingOrder
        )
        self._row = {p.id: i for i, p in enumerate(self._rows)}
        self.endResetModel()

    def promotions(self) -> Sequence[Promotion]:
        return self._rows

    def promotion_at(self, row: int) -> Promotion:
        return self._rows[row]

    def row_of(self, promotion_id: UUID) -> int | None:
        return self._row.get(promotion_id)

    def matches(self, row: int, terms: tuple[str, ...]) -> bool:
        text = search_text(self._rows[row])
        return all(term in text for term in terms)

    # --- Qt model --------------------------------------------------------------------------
    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(Column)

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        p = self._rows[index.row()]
        column = Column(index.column())
        if role == Qt.ItemDataRole.DisplayRole:
            if column is Column.RELEASE:
                return p.release
            if column is Column.ENVIRONMENT:
                return p.environment
            if column is Column.STATUS:
                # The approvals so far ride along: "Awaiting approval · 1 of 2".
                words = status_label(p.status.value)
                return f"{words} · {p.progress()}" if p.required_approvals else words
            if column is Column.PROGRESS:
                return p.progress()
            if column is Column.BY:
                return p.requested_by
            return humane.when_recent(p.requested_at)
        if role == PromotionRole:
            return p
        if role == Qt.ItemDataRole.ForegroundRole and column in (Column.PROGRESS, Column.STATUS):
            return QColor(STATUS_COLOURS.get(p.status.value, ("#374151", ""))[0])
        if role == Qt.ItemDataRole.ToolTipRole:
            text = f"{p.release} into {p.environment}: {status_text(p.status.value)}"
            text += f"\nrequested by {p.requested_by}, {humane.when(p.requested_at)}"
            return text + (f"\n“{p.reason}”" if p.reason else "")
        return None

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return HEADERS[Column(section)]
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        self._sort = (Column(column), order)
        self.layoutAboutToBeChanged.emit()
        before = self.persistentIndexList()
        ids = [self._rows[i.row()].id for i in before]
        descending = order == Qt.SortOrder.DescendingOrder
        self._rows.sort(key=SORT_KEYS[Column(column)], reverse=descending)
        self._row = {p.id: i for i, p in enumerate(self._rows)}
        after = [self.index(self._row[pid], i.column()) for pid, i in zip(ids, before, strict=True)]
        self.changePersistentIndexList(before, after)
        self.layoutChanged.emit()
