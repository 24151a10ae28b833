"""What every list of the desk shares: a free-text filter over a model that sorts itself."""

from __future__ import annotations

from typing import Protocol

from PySide6.QtCore import (
    QAbstractItemModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
)

AnyIndex = QModelIndex | QPersistentModelIndex


class SearchableModel(Protocol):
    def matches(self, row: int, terms: tuple[str, ...]) -> bool: ...

    def sort(self, column: int, order: Qt.SortOrder = ...) -> None: ...


class TextFilterProxy(QSortFilterProxyModel):
    """Every word typed must match the row; sorting is the source's own (a key sort over
    immutable records is far faster than the proxy's comparisons at 100,000 rows)."""

    def __init__(self, source: QAbstractItemModel, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._searchable: SearchableModel = source  # type: ignore[assignment]
        self._terms: tuple[str, ...] = ()
        self.setSourceModel(source)

    @property
    def terms(self) -> tuple[str, ...]:
        return self._terms

    def set_filter_text(self, text: str) -> None:
        terms = tuple(text.lower().split())
        if terms == self._terms:
            return
        self.beginFilterChange()
        self._terms = terms
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def filterAcceptsRow(self, source_row: int, source_parent: AnyIndex) -> bool:
        return not self._terms or self._searchable.matches(source_row, self._terms)

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        self._searchable.sort(column, order)

    def source_row(self, row: int) -> int:
        return self.mapToSource(self.index(row, 0)).row()
