"""What every list of the desk shares: a free-text filter over a model that sorts itself."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from PySide6.QtCore import (
    QAbstractItemModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView

AnyIndex = QModelIndex | QPersistentModelIndex
ColumnT = TypeVar("ColumnT", bound=int)  # each list's IntEnum of columns


def sort_permutation(
    items: Sequence[Any], key: Callable[[Any], Any], order: Qt.SortOrder
) -> list[int]:
    """The new order of `items` sorted by `key`, as old row numbers (stable)."""
    return sorted(
        range(len(items)),
        key=lambda i: key(items[i]),
        reverse=order == Qt.SortOrder.DescendingOrder,
    )


def follow_permutation(model: QAbstractItemModel, permutation: Sequence[int]) -> None:
    """Selections and proxies hold persistent indexes: move them with their rows after a sort
    (call between layoutAboutToBeChanged and layoutChanged)."""
    before = model.persistentIndexList()
    if before:
        new_row = {old: new for new, old in enumerate(permutation)}
        after = [model.index(new_row[i.row()], i.column()) for i in before]
        model.changePersistentIndexList(before, after)


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


def record_view(
    proxy: QSortFilterProxyModel,
    *,
    column_widths: Mapping[ColumnT, int],
    sort_column: int,
    row_height: int = 30,
) -> QTableView:
    """A read-only, single-selection table over immutable records, newest first.

    A table view, not a tree view: a tree lays out every row (asking each whether it has
    children); a table with fixed row heights only touches the rows it paints.
    """
    view = QTableView()
    view.setModel(proxy)
    view.setShowGrid(False)
    view.setWordWrap(False)
    view.setCornerButtonEnabled(False)
    rows = view.verticalHeader()
    rows.hide()
    rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
    rows.setDefaultSectionSize(row_height)
    view.setAlternatingRowColors(True)
    view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    head = view.horizontalHeader()
    head.setHighlightSections(False)
    head.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    head.setStretchLastSection(True)
    head.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
    for column, width in column_widths.items():
        head.resizeSection(column, width)
    # Set the indicator before enabling sorting, or enabling it sorts by the first column.
    head.setSortIndicator(sort_column, Qt.SortOrder.DescendingOrder)
    view.setSortingEnabled(True)
    return view
