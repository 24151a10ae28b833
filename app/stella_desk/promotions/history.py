"""Promotion history: every promotion, newest first, with the release, where it came from and
went, who asked, its status, when it was decided and by whom. Filtered by words, status and
environment; Enter or a double click opens the promotion (its approvals, gates and run).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from enum import IntEnum
from typing import Any
from uuid import UUID

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtGui import QColor, QShowEvent
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLineEdit,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from stella_core.promotions.model import OPEN, Promotion, PromotionStatus
from stella_desk import humane
from stella_desk.chrome import PAGE_MARGINS, EmptyState, PageHeader, label
from stella_desk.ops import Change, OpChanges, OpFailed, Ops
from stella_desk.promotions.detail import PromotionDialog
from stella_desk.promotions.status import STATUS_COLOURS, status_label
from stella_desk.session import Session
from stella_desk.tables import AnyIndex, TextFilterProxy, follow_permutation, record_view
from stella_desk.tables import sort_permutation as permutation

PromotionRole = Qt.ItemDataRole.UserRole + 1
LIMIT = 5000  # the newest; older ones are in the evidence ledger and the CLI

S = PromotionStatus
# The status filter's choices: (words, the statuses they cover; empty = all).
STATUS_GROUPS: list[tuple[str, frozenset[PromotionStatus]]] = [
    ("Every status", frozenset()),
    ("Open (waiting or blocked)", frozenset(OPEN)),
    ("Approved or deployed", frozenset({S.APPROVED, S.DEPLOYING, S.DEPLOYED})),
    ("Rejected", frozenset({S.REJECTED})),
    ("Cancelled, failed or rolled back", frozenset({S.CANCELLED, S.FAILED, S.ROLLED_BACK})),
]


class Column(IntEnum):
    RELEASE = 0
    ROUTE = 1
    BY = 2
    STATUS = 3
    REQUESTED = 4
    DECIDED = 5
    APPROVERS = 6


HEADERS = {
    Column.RELEASE: "Release",
    Column.ROUTE: "From → to",
    Column.BY: "Requested by",
    Column.STATUS: "Status",
    Column.REQUESTED: "Requested",
    Column.DECIDED: "Decided",
    Column.APPROVERS: "Approvers",
}
COLUMN_WIDTHS = {
    Column.RELEASE: 150,
    Column.ROUTE: 140,
    Column.BY: 112,
    Column.STATUS: 140,
    Column.REQUESTED: 110,
    Column.DECIDED: 110,
}


# --- what a row says (pure) ---------------------------------------------------------------
def came_from(p: Promotion) -> str | None:
    """The environment before this one in the policy the promotion was decided by."""
    for gate in p.policy.get("gates") or []:
        if gate.get("type") == "predecessor":
            previous = (gate.get("config") or {}).get("previous")
            return str(previous) if previous else None
    return None


def route(p: Promotion) -> str:
    return f"{came_from(p) or '—'} → {p.environment}"


def decided_at(p: Promotion) -> datetime | None:
    """When it stopped waiting for a decision: the rejection, the decision that approved it, or
    the cancellation. None while it is open."""
    if p.status in OPEN:
        return None
    if p.status is S.REJECTED:
        rejections = [a.at for a in p.approvals if a.decision == "reject"]
        return max(rejections) if rejections else p.updated_at
    if p.status is S.CANCELLED:
        return p.updated_at
    approved = [a.at for a in p.approvals if a.decision == "approve"]
    evaluated = (p.last_decision or {}).get("evaluatedAt")
    if approved:
        return max(approved)
    if evaluated:
        return datetime.fromisoformat(str(evaluated).replace("Z", "+00:00"))
    return p.updated_at


def approvers(p: Promotion) -> str:
    """Who decided: approvers by name, a rejecter marked."""
    names = []
    for a in p.approvals:
        names.append(a.by if a.decision == "approve" else f"{a.by} (rejected)")
    return ", ".join(names) if names else ("—" if p.required_approvals else "none needed")


SORT_KEYS: dict[Column, Callable[[Promotion], Any]] = {
    Column.RELEASE: lambda p: (p.release.lower(), p.requested_at),
    Column.ROUTE: lambda p: (p.environment.lower(), p.requested_at),
    Column.BY: lambda p: (p.requested_by.lower(), p.requested_at),
    Column.STATUS: lambda p: (status_label(p.status.value), p.requested_at),
    Column.REQUESTED: lambda p: p.requested_at,
    Column.DECIDED: lambda p: (decided_at(p) or p.requested_at, p.requested_at),
    Column.APPROVERS: lambda p: (approvers(p), p.requested_at),
}


def search_text(p: Promotion) -> str:
    return "\n".join(
        [
            p.release,
            route(p),
            p.requested_by,
            p.reason,
            status_label(p.status.value),
            approvers(p),
            str(p.id),
        ]
    ).lower()


class HistoryModel(QAbstractTableModel):
    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[Promotion] = []
        self._search: list[str] = []
        self._sort = (Column.REQUESTED, Qt.SortOrder.DescendingOrder)

    def set_promotions(self, promotions: Sequence[Promotion]) -> None:
        column, order = self._sort
        self.beginResetModel()
        self._rows = sorted(
            promotions, key=SORT_KEYS[column], reverse=order == Qt.SortOrder.DescendingOrder
        )
        self._search = [search_text(p) for p in self._rows]
        self.endResetModel()

    def promotions(self) -> Sequence[Promotion]:
        return self._rows

    def promotion_at(self, row: int) -> Promotion:
        return self._rows[row]

    def matches(self, row: int, terms: tuple[str, ...]) -> bool:
        return all(term in self._search[row] for term in terms)

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
            return self._text(p, column)
        if role == PromotionRole:
            return p
        if role == Qt.ItemDataRole.ForegroundRole and column is Column.STATUS:
            return QColor(STATUS_COLOURS.get(p.status.value, ("#374151", ""))[0])
        if role == Qt.ItemDataRole.ToolTipRole:
            text = f"{p.release} {route(p)}: {status_label(p.status.value)}"
            text += f"\nrequested by {p.requested_by}, {humane.when(p.requested_at)}"
            decided = decided_at(p)
            if decided is not None:
                text += f"\ndecided {humane.when(decided)}"
            if p.reason:
                text += f"\n“{p.reason}”"
            return text + f"\npromotion {humane.short_id(p.id)}"
        return None

    @staticmethod
    def _text(p: Promotion, column: Column) -> str:
        if column is Column.RELEASE:
            return p.release
        if column is Column.ROUTE:
            return route(p)
        if column is Column.BY:
            return p.requested_by
        if column is Column.STATUS:
            return status_label(p.status.value)
        if column is Column.REQUESTED:
            return humane.when_recent(p.requested_at)
        if column is Column.DECIDED:
            decided = decided_at(p)
            return humane.when_recent(decided) if decided is not None else "pending"
        return approvers(p)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return HEADERS[Column(section)]
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        self._sort = (Column(column), order)
        self.layoutAboutToBeChanged.emit()
        order_of = permutation(self._rows, SORT_KEYS[Column(column)], order)
        self._rows = [self._rows[i] for i in order_of]
        self._search = [self._search[i] for i in order_of]
        follow_permutation(self, order_of)
        self.layoutChanged.emit()


class HistoryProxy(TextFilterProxy):
    """Words, and the status group and environment chosen above the list."""

    def __init__(self, source: HistoryModel, parent: QObject | None = None) -> None:
        super().__init__(source, parent)
        self.history = source
        self.statuses: frozenset[PromotionStatus] = frozenset()
        self.environment: str | None = None

    def set_choice(self, statuses: frozenset[PromotionStatus], environment: str | None) -> None:
        self.beginFilterChange()
        self.statuses, self.environment = statuses, environment
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def filterAcceptsRow(self, source_row: int, source_parent: AnyIndex) -> bool:
        p = self.history.promotion_at(source_row)
        if self.statuses and p.status not in self.statuses:
            return False
        if self.environment and p.environment != self.environment:
            return False
        return super().filterAcceptsRow(source_row, source_parent)


class HistoryPage(QWidget):
    loaded = Signal()
    status_message = Signal(str)
    run_requested = Signal(object)  # a promotion's run: the window opens its monitor

    def __init__(self, ops: Ops, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("page")
        self.ops = ops
        self.session = session
        self.model = HistoryModel(self)
        self.proxy = HistoryProxy(self.model, self)
        self.dialog: PromotionDialog | None = None
        self._generation = 0
        self._loaded_once = False

        page = QVBoxLayout(self)
        page.setContentsMargins(*PAGE_MARGINS)
        page.setSpacing(10)
        header = PageHeader(
            "Promotion history",
            "Every promotion, newest first: where it went, who asked, who decided and when.",
        )
        self.search = QLineEdit()
        self.search.setPlaceholderText("Filter: release, person, reason…")
        self.search.setClearButtonEnabled(True)
        self.status_filter = QComboBox()
        for words, _statuses in STATUS_GROUPS:
            self.status_filter.addItem(words)
        self.environment_filter = QComboBox()
        self.environment_filter.addItem("Every environment", None)
        for combo in (self.status_filter, self.environment_filter):
            # Sized by a few characters, not the longest choice: long environment names must
            # not widen the window (the list shows them whole).
            combo.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
            )
            combo.setMinimumContentsLength(14)
        page.addWidget(header)
        filters = QHBoxLayout()
        filters.setSpacing(8)
        filters.addWidget(self.search, 2)
        filters.addWidget(self.status_filter, 1)
        filters.addWidget(self.environment_filter, 1)
        page.addLayout(filters)

        self.view = record_view(
            self.proxy, column_widths=COLUMN_WIDTHS, sort_column=Column.REQUESTED, row_height=30
        )
        self.count = label(kind="muted")
        self.empty = EmptyState()
        self.stack = QStackedWidget()
        table = QWidget()
        box = QVBoxLayout(table)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(6)
        box.addWidget(self.view, 1)
        box.addWidget(self.count)
        self.stack.addWidget(table)
        self.stack.addWidget(self.empty)
        page.addWidget(self.stack, 1)

        self.search.textChanged.connect(self._filter)
        self.status_filter.currentIndexChanged.connect(lambda _i: self._filter())
        self.environment_filter.currentIndexChanged.connect(lambda _i: self._filter())
        self.view.activated.connect(self._open_index)
        self.view.doubleClicked.connect(self._open_index)
        ops.changed.connect(self._on_changes)
        self._show_count()

    # --- loading ---------------------------------------------------------------------------
    async def refresh(self) -> list[Promotion] | None:
        self._generation += 1
        generation = self._generation
        stella = self.session.require()
        try:
            promotions = await self.ops.run(
                lambda _report: stella.promotions.find(limit=LIMIT),
                label="Reading the promotion history",
            )
        except OpFailed:
            return None
        if generation != self._generation:
            return None
        self._loaded_once = True
        if promotions != list(self.model.promotions()):
            self.model.set_promotions(promotions)
        self._fill_environments(sorted({p.environment for p in promotions}))
        self._show_count()
        self.loaded.emit()
        return promotions

    def _fill_environments(self, names: list[str]) -> None:
        chosen = self.environment_filter.currentData()
        known = [
            self.environment_filter.itemData(i) for i in range(1, self.environment_filter.count())
        ]
        if known == names:
            return
        self.environment_filter.blockSignals(True)
        self.environment_filter.clear()
        self.environment_filter.addItem("Every environment", None)
        for name in names:
            self.environment_filter.addItem(name, name)
        index = self.environment_filter.findData(chosen) if chosen else 0
        self.environment_filter.setCurrentIndex(max(index, 0))
        self.environment_filter.blockSignals(False)

    def _on_changes(self, changes: OpChanges) -> None:
        if (
            self.session.ready
            and self._loaded_once
            and changes.touches(Change.PROMOTIONS, Change.PERSON)
        ):
            self.ops.spawn(self.refresh())

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self._loaded_once and self.session.ready:
            self.ops.spawn(self.refresh())  # others requested and decided meanwhile

    # --- filtering -------------------------------------------------------------------------
    def choose(self, *, status: str | None = None, environment: str | None = None) -> None:
        """Pick filters as a person would (by the words shown)."""
        if status is not None:
            self.status_filter.setCurrentIndex(self.status_filter.findText(status))
        if environment is not None:
            self.environment_filter.setCurrentIndex(self.environment_filter.findData(environment))

    def _filter(self) -> None:
        statuses = STATUS_GROUPS[max(self.status_filter.currentIndex(), 0)][1]
        environment = self.environment_filter.currentData()
        self.proxy.set_filter_text(self.search.text())
        self.proxy.set_choice(statuses, environment)
        self._show_count()

    def _show_count(self) -> None:
        total, shown = self.model.rowCount(), self.proxy.rowCount()
        if not total:
            self.empty.say(
                "No promotion yet",
                "A promotion asks for a release to go into an environment: request one with "
                "Promote… on the Promotions page, and every one is listed here.",
            )
            self.stack.setCurrentWidget(self.empty)
            self.count.setText("")
            return
        self.stack.setCurrentIndex(0)
        noun = "promotion" if total == 1 else "promotions"
        self.count.setText(
            f"{total} {noun}" if shown == total else f"{shown} of {total} {noun} shown"
        )

    def shown(self) -> list[Promotion]:
        return [
            self.model.promotion_at(self.proxy.source_row(r)) for r in range(self.proxy.rowCount())
        ]

    # --- opening ---------------------------------------------------------------------------
    def _open_index(self, index: QModelIndex | QPersistentModelIndex) -> None:
        promotion = index.data(PromotionRole) if index.isValid() else None
        if promotion is not None:
            self.open_promotion(promotion.id)

    def open_promotion(self, promotion_id: UUID) -> PromotionDialog:
        if self.dialog is not None and self.dialog.isVisible():
            self.dialog.reject()
        dialog = PromotionDialog(self.ops, self.session, promotion_id, parent=self)
        dialog.run_requested.connect(self.run_requested)
        dialog.copied.connect(lambda text: self.status_message.emit(f"Copied {text}"))
        self.dialog = dialog
        dialog.open()  # window-modal, asynchronous: the loop keeps running
        self.ops.spawn(dialog.load())
        return dialog
