"""The packet list: a table model over immutable `PacketRow` records, its filter, the type pill.

Like the release and run lists: one Python list, `data()` formats only painted rows, the free-text
filter matches lower-cased text built on first use, sorting is a key sort in Python.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
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
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QPainter
from PySide6.QtWidgets import QStyle, QStyledItemDelegate, QStyleOptionViewItem, QWidget

from stella_core.evidence.model import PacketRow
from stella_desk.tables import TextFilterProxy, follow_permutation, sort_permutation
from stella_desk.theme import mono_font

PacketRole = Qt.ItemDataRole.UserRole + 1
AnyIndex = QModelIndex | QPersistentModelIndex
KEY_PREFIX = 12  # hex characters of a key id shown in the list

# Packet type -> (words, text colour, pill background).
TYPES: dict[str, tuple[str, str, str]] = {
    "vsa": ("decision", "#86198f", "#fae8fb"),
    "approval": ("approval", "#0f766e", "#e2f5f2"),
    "deployment": ("deployment", "#1d4ed8", "#e3ecfd"),
    "rollback": ("rollback", "#9a3412", "#fdeadb"),
    "drift": ("drift", "#a15c04", "#fdf1dc"),
    "run": ("run", "#374151", "#eceef3"),
    "exception": ("exception", "#b91c1c", "#fde4e4"),
    "key": ("key", "#4338ca", "#e6e7fd"),
}


class Column(IntEnum):
    SEQ = 0
    TYPE = 1
    CREATED = 2
    RELEASE = 3
    ENVIRONMENT = 4
    BY = 5
    SIGNER = 6
    SUBJECTS = 7


HEADERS = {
    Column.SEQ: "#",
    Column.TYPE: "Type",
    Column.CREATED: "Created",
    Column.RELEASE: "Release",
    Column.ENVIRONMENT: "Environment",
    Column.BY: "By",
    Column.SIGNER: "Signer",
    Column.SUBJECTS: "Subjects",
}

SORT_KEYS: dict[Column, Callable[[PacketRow], Any]] = {
    Column.SEQ: lambda p: p.seq,
    Column.TYPE: lambda p: (p.type, p.seq),
    Column.CREATED: lambda p: (p.created_at, p.seq),
    Column.RELEASE: lambda p: ((p.release or "").lower(), p.seq),
    Column.ENVIRONMENT: lambda p: ((p.environment or "").lower(), p.seq),
    Column.BY: lambda p: (p.actor.lower(), p.seq),
    Column.SIGNER: lambda p: (p.signer_key_id, p.seq),
    Column.SUBJECTS: lambda p: (len(p.subject_digests), p.seq),
}

RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)


def type_words(kind: str) -> str:
    return TYPES.get(kind, (kind,))[0]


def type_colours(kind: str) -> tuple[QColor, QColor]:
    _, fg, bg = TYPES.get(kind, (kind, "#374151", "#eceef3"))
    return QColor(fg), QColor(bg)


def local_time(value: datetime) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def signer_text(key_id: str, owner: str | None) -> str:
    short = f"{key_id[:KEY_PREFIX]}…"
    return f"{short} {owner}" if owner else short


def search_text(packet: PacketRow, owner: str | None) -> str:
    parts = [
        f"#{packet.seq}",
        packet.type,
        type_words(packet.type),
        packet.predicate_type,
        packet.release or "",
        packet.environment or "",
        packet.actor,
        packet.signer_key_id,
        owner or "",
        str(packet.id),
        str(packet.run_id or ""),
        str(packet.promotion_id or ""),
        *packet.subject_digests,
    ]
    return "\n".join(parts).lower()


class PacketTableModel(QAbstractTableModel):
    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._packets: list[PacketRow] = []
        self._row: dict[UUID, int] = {}
        self._owners: dict[str, str] = {}  # signer key id -> who owns it
        self._search: list[str] | None = None
        self._sort = (Column.SEQ, Qt.SortOrder.DescendingOrder)
        self._mono = mono_font()

    # --- records ---------------------------------------------------------------------------
    def set_packets(self, packets: Sequence[PacketRow], owners: Mapping[str, str]) -> None:
        column, order = self._sort
        ordered = sorted(
            packets, key=SORT_KEYS[column], reverse=order == Qt.SortOrder.DescendingOrder
        )
        self.beginResetModel()
        self._packets = ordered
        self._owners = dict(owners)
        self._reindex()
        self.endResetModel()

    def _reindex(self) -> None:
        self._row = {p.id: i for i, p in enumerate(self._packets)}
        self._search = None

    def packets(self) -> Sequence[PacketRow]:
        return self._packets

    def packet_at(self, row: int) -> PacketRow:
        return self._packets[row]

    def row_of(self, packet_id: UUID) -> int | None:
        return self._row.get(packet_id)

    def owner_of(self, key_id: str) -> str | None:
        return self._owners.get(key_id)

    def matches(self, row: int, terms: tuple[str, ...]) -> bool:
        if self._search is None:
            self._search = [
                search_text(p, self._owners.get(p.signer_key_id)) for p in self._packets
            ]
        text = self._search[row]
        return all(term in text for term in terms)

    # --- Qt model --------------------------------------------------------------------------
    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._packets)

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(Column)

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        packet = self._packets[index.row()]
        column = Column(index.column())
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(packet, column)
        if role == PacketRole:
            return packet
        if role == Qt.ItemDataRole.FontRole and column is Column.SIGNER:
            return self._mono
        if role == Qt.ItemDataRole.TextAlignmentRole and column in (Column.SEQ, Column.SUBJECTS):
            return RIGHT
        if role == Qt.ItemDataRole.ForegroundRole and (
            (column is Column.RELEASE and not packet.release)
            or (column is Column.ENVIRONMENT and not packet.environment)
        ):
            return QColor("#a3a9b8")
        if role == Qt.ItemDataRole.ToolTipRole:
            if column is Column.SIGNER:
                owner = self._owners.get(packet.signer_key_id, "an unregistered key")
                return f"signed by {owner}\nkey {packet.signer_key_id}"
            if column is Column.SUBJECTS:
                return "\n".join(packet.subject_digests)
            if column is Column.TYPE:
                return packet.predicate_type
            return f"packet {packet.id}"
        return None

    def _display(self, packet: PacketRow, column: Column) -> str:
        if column is Column.SEQ:
            return str(packet.seq)
        if column is Column.TYPE:
            return type_words(packet.type)
        if column is Column.CREATED:
            return local_time(packet.created_at)
        if column is Column.RELEASE:
            return packet.release or "—"
        if column is Column.ENVIRONMENT:
            return packet.environment or "—"
        if column is Column.BY:
            return packet.actor
        if column is Column.SIGNER:
            return signer_text(packet.signer_key_id, self._owners.get(packet.signer_key_id))
        return str(len(packet.subject_digests))

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
        if role == Qt.ItemDataRole.TextAlignmentRole and section in (Column.SEQ, Column.SUBJECTS):
            return RIGHT
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        self._sort = (Column(column), order)
        self.layoutAboutToBeChanged.emit()
        key = SORT_KEYS[Column(column)]
        packets = self._packets
        permutation = sort_permutation(packets, key, order)
        self._packets = [packets[i] for i in permutation]
        search = self._search
        self._reindex()
        if search is not None:
            self._search = [search[i] for i in permutation]
        follow_permutation(self, permutation)
        self.layoutChanged.emit()


class PacketFilterProxy(TextFilterProxy):
    """Free text: every word must match a type, release, person, signer, digest or id."""

    def __init__(self, source: PacketTableModel, parent: QObject | None = None) -> None:
        super().__init__(source, parent)
        self._source = source

    def packet_at(self, row: int) -> PacketRow:
        return self._source.packet_at(self.source_row(row))


def paint_pill(
    painter: QPainter, rect: QRectF, text: str, colours: tuple[QColor, QColor], font: QFont
) -> QRectF:
    """A rounded, coloured label at the left of `rect`, vertically centred; returns its box."""
    fg, bg = colours
    width = QFontMetricsF(font).horizontalAdvance(text) + 18
    pill = QRectF(rect.left(), rect.center().y() - 9, width, 18)
    painter.save()
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(bg)
    painter.drawRoundedRect(pill, 9, 9)
    painter.setPen(fg)
    painter.setFont(font)
    painter.drawText(pill, Qt.AlignmentFlag.AlignCenter, text)
    painter.restore()
    return pill


def pill_font() -> QFont:
    font = QFont()
    font.setPixelSize(11)
    font.setWeight(QFont.Weight.DemiBold)
    return font


class TypeBadgeDelegate(QStyledItemDelegate):
    """The type column as a coloured pill, one colour per kind of packet."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._font = pill_font()

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: AnyIndex) -> None:
        packet = index.data(PacketRole)
        if not isinstance(packet, PacketRow):
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
        rect = QRectF(opt.rect).adjusted(6, 0, 0, 0)
        paint_pill(painter, rect, type_words(packet.type), type_colours(packet.type), self._font)
