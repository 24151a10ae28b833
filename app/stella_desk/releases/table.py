"""The release list: a table model over immutable `Release` records and its filter proxy.

Built for 100,000 rows: the records sit in one Python list fetched once, `data()` formats only
the rows the view paints, the filter matches lower-cased text built on first use, and sorting is
a key sort in Python (the proxy's own sort would call back into Python per comparison).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
)

from stella_core.releases.model import Release
from stella_desk.humane import when, when_exact
from stella_desk.tables import TextFilterProxy, follow_permutation, sort_permutation
from stella_desk.theme import mono_font

ReleaseRole = Qt.ItemDataRole.UserRole + 1
DIGEST_SHORT = 8  # hex characters per component in the summary column
SUMMARY_COMPONENTS = 3

AnyIndex = QModelIndex | QPersistentModelIndex


class Column(IntEnum):
    NAME = 0
    CREATED = 1
    CREATED_BY = 2
    COMPONENTS = 3
    DIGESTS = 4


COLUMN_COUNT = len(Column)

HEADERS = {
    Column.NAME: "Name",
    Column.CREATED: "Created",
    Column.CREATED_BY: "Created by",
    Column.COMPONENTS: "Components",
    Column.DIGESTS: "Digests",
}

SORT_KEYS: dict[Column, Callable[[Release], Any]] = {
    Column.NAME: lambda r: r.name.lower(),
    Column.CREATED: lambda r: r.created_at,
    Column.CREATED_BY: lambda r: r.created_by.lower(),
    Column.COMPONENTS: lambda r: len(r.components),
    Column.DIGESTS: lambda r: r.components[0].digest if r.components else "",
}


def created_text(release: Release) -> str:
    return when(release.created_at)


def digest_summary(release: Release) -> str:
    shown = [c.digest.removeprefix("sha256:")[:DIGEST_SHORT] for c in release.components]
    text = " · ".join(shown[:SUMMARY_COMPONENTS])
    if len(shown) > SUMMARY_COMPONENTS:
        text += f"  +{len(shown) - SUMMARY_COMPONENTS}"
    return text


def search_text(release: Release) -> str:
    parts = [release.name, release.created_by]
    for c in release.components:
        parts += [c.name, c.repository, c.tag or "", c.digest, c.registry or ""]
    return "\n".join(parts).lower()


class ReleaseTableModel(QAbstractTableModel):
    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._releases: list[Release] = []
        # Built on the first filter (most sessions never filter), then kept row-aligned.
        self._search: list[str] | None = None
        # The last filter's answer per row: the proxy asks row by row, we answer from a list.
        self._match_terms: tuple[str, ...] = ()
        self._matches: list[bool] | None = None
        self._sort = (Column.CREATED, Qt.SortOrder.DescendingOrder)
        self._mono = mono_font()

    # --- records ---------------------------------------------------------------------------
    def set_releases(self, releases: Sequence[Release]) -> None:
        column, order = self._sort
        ordered = sorted(
            releases,
            key=SORT_KEYS[column],
            reverse=order == Qt.SortOrder.DescendingOrder,
        )
        self.beginResetModel()
        self._releases = ordered
        self._search = None
        self._matches = None
        self.endResetModel()

    def add_release(self, release: Release) -> int:
        """Show a release made here without reloading; newest first. Returns its row."""
        existing = self.row_of(release.name)
        if existing is not None:
            return existing
        self.beginInsertRows(QModelIndex(), 0, 0)
        self._releases.insert(0, release)
        if self._search is not None:
            self._search.insert(0, search_text(release))
        if self._matches is not None:
            self._matches.insert(0, self._match(search_text(release), self._match_terms))
        self.endInsertRows()
        return 0

    def releases(self) -> Sequence[Release]:
        return self._releases

    def release_at(self, row: int) -> Release:
        return self._releases[row]

    def row_of(self, name: str) -> int | None:
        for row, release in enumerate(self._releases):
            if release.name == name:
                return row
        return None

    def matches(self, row: int, terms: tuple[str, ...]) -> bool:
        """Every term is a substring of the name, creator, a component, tag or digest."""
        if self._matches is None or terms != self._match_terms:
            # One pass over all rows per new filter, in a comprehension rather than per call.
            if self._search is None:
                self._search = [search_text(r) for r in self._releases]
            texts = self._search
            matches = [terms[0] in text for text in texts] if terms else [True] * len(texts)
            for term in terms[1:]:
                matches = [ok and term in text for ok, text in zip(matches, texts, strict=True)]
            self._matches = matches
            self._match_terms = terms
        return self._matches[row]

    @staticmethod
    def _match(text: str, terms: tuple[str, ...]) -> bool:
        return all(term in text for term in terms)

    # --- Qt model --------------------------------------------------------------------------
    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._releases)

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else COLUMN_COUNT

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        release = self._releases[index.row()]
        column = Column(index.column())
        if role == Qt.ItemDataRole.DisplayRole:
            if column is Column.NAME:
                return release.name
            if column is Column.CREATED:
                return created_text(release)
            if column is Column.CREATED_BY:
                return release.created_by
            if column is Column.COMPONENTS:
                return str(len(release.components))
            return digest_summary(release)
        if role == ReleaseRole:
            return release
        if role == Qt.ItemDataRole.FontRole and column is Column.DIGESTS:
            return self._mono
        if role == Qt.ItemDataRole.TextAlignmentRole and column is Column.COMPONENTS:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole and column is Column.DIGESTS:
            return "\n".join(f"{c.name}  {c.digest}" for c in release.components)
        if role == Qt.ItemDataRole.ToolTipRole and column is Column.NAME:
            return release.name  # the column may cut a long one short
        if role == Qt.ItemDataRole.ToolTipRole and column is Column.CREATED:
            return when_exact(release.created_at)
        return None

    def headerData(
        self,
        section: int,
        orientation: Qt.Orientation,
        role: int = Qt.ItemDataRole.DisplayRole,
    ) -> Any:
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return HEADERS[Column(section)]
        if role == Qt.ItemDataRole.TextAlignmentRole and section == Column.COMPONENTS:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        self._sort = (Column(column), order)
        self.layoutAboutToBeChanged.emit()
        key = SORT_KEYS[Column(column)]
        releases = self._releases
        permutation = sort_permutation(releases, key, order)
        self._releases = [releases[i] for i in permutation]
        if self._search is not None:
            self._search = [self._search[i] for i in permutation]
        if self._matches is not None:
            self._matches = [self._matches[i] for i in permutation]
        follow_permutation(self, permutation)
        self.layoutChanged.emit()


class ReleaseFilterProxy(TextFilterProxy):
    """Filters by free text (all words must match); sorting is delegated to the source."""

    def __init__(self, source: ReleaseTableModel, parent: QObject | None = None) -> None:
        super().__init__(source, parent)
        self._source = source

    def release_at(self, row: int) -> Release:
        return self._source.release_at(self.source_row(row))
