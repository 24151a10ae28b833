"""The navigation list's items: a page name and, where something waits, a count in a pill
(the pending approvals). Painted by a delegate so the sheet's selection colours still apply."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QRect, QSize, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter
from PySide6.QtWidgets import QListWidget, QStyledItemDelegate, QStyleOptionViewItem

BadgeRole = Qt.ItemDataRole.UserRole + 7
BADGE_BG = "#f59e0b"  # amber: something waits for you, not something wrong
BADGE_FG = "#1c1405"


class NavDelegate(QStyledItemDelegate):
    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionViewItem,
        index: QModelIndex | QPersistentModelIndex,
    ) -> None:
        super().paint(painter, option, index)
        count = index.data(BadgeRole)
        if not count:
            return
        text = str(count) if int(count) < 100 else "99+"
        font = QFont(option.font)
        font.setPointSizeF(max(font.pointSizeF() - 1.5, 7.0))
        font.setBold(True)
        metrics = QFontMetrics(font)
        height = metrics.height() + 2
        width = max(height, metrics.horizontalAdvance(text) + 12)
        rect: QRect = option.rect
        pill = QRect(rect.right() - width - 18, rect.center().y() - height // 2, width, height)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(BADGE_BG))
        painter.drawRoundedRect(pill, height / 2, height / 2)
        painter.setPen(QColor(BADGE_FG))
        painter.setFont(font)
        painter.drawText(pill, Qt.AlignmentFlag.AlignCenter, text)
        painter.restore()

    def sizeHint(
        self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> QSize:
        return super().sizeHint(option, index)


def set_badge(nav: QListWidget, row: int, count: int, what: str) -> None:
    """Show `count` on the row's pill (none at 0); the tooltip and accessible name say it."""
    item = nav.item(row)
    if item is None:
        return
    item.setData(BadgeRole, count)
    title = item.text()
    item.setToolTip(f"{count} {what}" if count else title)
    item.setData(Qt.ItemDataRole.AccessibleTextRole, f"{title}, {count} {what}" if count else title)
    nav.viewport().update()


def badge(nav: QListWidget, row: int) -> int:
    item = nav.item(row)
    return int(item.data(BadgeRole) or 0) if item is not None else 0
