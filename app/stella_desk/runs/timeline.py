"""The run's timeline: a small Gantt chart, one bar per step that has started.

A bar runs from the step's `started_at` to its `finished_at` (to now while it runs or waits),
coloured by its status, with its duration and attempt count beside it; earlier attempts of the
step (from the run log) show as faint segments before it. Custom-painted: a run has
tens of steps, and one paint of a few rectangles is cheaper than a scene per update. Clicking a
row selects that step (the monitor keeps the graph and the log in step).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from PySide6.QtCore import QEvent, QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QHelpEvent, QMouseEvent, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QToolTip, QWidget

from stella_core.workflows.model import RunEvent, StepRunInfo
from stella_desk import theme
from stella_desk.runs.status import (
    TERMINAL_STEP,
    clock_text,
    duration_text,
    status_text,
    step_colour,
)

LABEL_WIDTH = 170.0
ROW_HEIGHT = 22.0
AXIS_HEIGHT = 22.0
BAR_HEIGHT = 12.0
RIGHT_ROOM = 120.0  # for the text after the longest bar
PAD = 8.0

GRID = QColor("#eceef3")
# Run-log entries that end an attempt of a step (its start is `step.started`).
ATTEMPT_ENDS = frozenset(
    {
        "step.retrying",
        "step.failed",
        "step.timed_out",
        "step.succeeded",
        "step.continued",
        "step.cancelled",
        "step.released",
        "step.waiting",
    }
)
SELECTED = QColor("#eceafd")


@dataclass(frozen=True)
class Bar:
    step_id: str
    title: str
    status: str
    attempts: int
    start: datetime
    end: datetime | None  # None: still going

    def span(self, now: datetime) -> timedelta:
        return (self.end or now) - self.start


def _now() -> datetime:
    return datetime.now(UTC)


def _ticks(total: float) -> float:
    """A tick step (seconds) giving about six labelled ticks."""
    for step in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600):
        if total / step <= 7:
            return float(step)
    return 86400.0


def _tick_text(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:g} s"
    if seconds < 3600:
        return f"{seconds / 60:g} min"
    return f"{seconds / 3600:g} h"


class Timeline(QWidget):
    step_clicked = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bars: dict[str, Bar] = {}
        # Attempts that ended (from the log): (start, end, how it ended), per step.
        self.attempts: dict[str, list[tuple[datetime, datetime, str]]] = {}
        self._attempt_open: dict[str, datetime] = {}
        self.selected: str | None = None
        self._titles: dict[str, str] = {}
        self._origin: datetime | None = None
        self._order: list[str] = []
        self._small = QFont()
        self._small.setPixelSize(11)
        self._bold = QFont(self._small)
        self._bold.setWeight(QFont.Weight.DemiBold)
        self.setMouseTracking(False)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self._fit_height()

    # --- data ------------------------------------------------------------------------------
    def set_run(
        self, origin: datetime | None, steps: list[StepRunInfo], titles: dict[str, str]
    ) -> None:
        """Start over (another run was opened)."""
        self._origin = origin
        self._titles = dict(titles)
        self.bars = {}
        self.attempts = {}
        self._attempt_open = {}
        self.update_steps(steps)

    def add_events(self, events: list[RunEvent]) -> None:
        """New log entries: they tell when earlier attempts of a step started and ended."""
        for event in events:
            node = event.node_id
            if node is None:
                continue
            if event.kind == "step.started":
                self._attempt_open[node] = event.at
            elif event.kind in ATTEMPT_ENDS and node in self._attempt_open:
                start = self._attempt_open.pop(node)
                self.attempts.setdefault(node, []).append((start, event.at, event.kind))
        self.update()

    def earlier(self, step_id: str) -> list[tuple[datetime, datetime, str]]:
        """Attempts of a step before the one its bar shows."""
        bar = self.bars.get(step_id)
        if bar is None:
            return []
        return [a for a in self.attempts.get(step_id, []) if a[0] < bar.start]

    def update_steps(self, steps: list[StepRunInfo]) -> None:
        """Steps that changed: their bars alone are replaced (or added, or dropped)."""
        for step in steps:
            if step.started_at is None:
                self.bars.pop(step.id, None)
                continue
            end = step.finished_at if step.status in TERMINAL_STEP else None
            self.bars[step.id] = Bar(
                step.id,
                self._titles.get(step.id) or step.id,
                step.status,
                step.attempts,
                step.started_at,
                end,
            )
        self._order = sorted(self.bars, key=lambda i: (self.bars[i].start, i))
        self._fit_height()
        self.update()

    def select(self, step_id: str | None) -> None:
        if step_id != self.selected:
            self.selected = step_id
            self.update()

    @property
    def running(self) -> bool:
        return any(b.end is None for b in self.bars.values())

    # --- geometry --------------------------------------------------------------------------
    def _fit_height(self) -> None:
        rows = max(1, len(self.bars))
        self.setFixedHeight(int(AXIS_HEIGHT + rows * ROW_HEIGHT + PAD))

    def sizeHint(self) -> QSize:
        return QSize(600, self.height())

    def _scale(self, now: datetime) -> tuple[datetime, float, float]:
        """(time zero, seconds shown, pixels per second)."""
        starts = [b.start for b in self.bars.values()]
        starts += [a[0] for i in self.bars for a in self.earlier(i)]
        zero = min([*starts, *([self._origin] if self._origin else [])], default=now)
        last = max((b.end or now for b in self.bars.values()), default=now)
        total = max(1.0, (last - zero).total_seconds())
        width = max(40.0, self.width() - LABEL_WIDTH - RIGHT_ROOM - PAD)
        return zero, total, width / total

    def bar_rect(self, step_id: str, now: datetime | None = None) -> QRectF:
        now = now or _now()
        bar = self.bars[step_id]
        zero, _total, pps = self._scale(now)
        row = self._order.index(step_id)
        x = LABEL_WIDTH + (bar.start - zero).total_seconds() * pps
        width = max(3.0, bar.span(now).total_seconds() * pps)
        y = AXIS_HEIGHT + row * ROW_HEIGHT + (ROW_HEIGHT - BAR_HEIGHT) / 2
        return QRectF(x, y, width, BAR_HEIGHT)

    def step_at(self, y: float) -> str | None:
        row = int((y - AXIS_HEIGHT) // ROW_HEIGHT)
        if y < AXIS_HEIGHT or not 0 <= row < len(self._order):
            return None
        return self._order[row]

    # --- painting --------------------------------------------------------------------------
    def paintEvent(self, _event: object) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QColor(theme.SURFACE))
        now = _now()
        if not self.bars:
            painter.setPen(QColor(theme.MUTED))
            painter.setFont(self._small)
            painter.drawText(
                QRectF(self.rect()).adjusted(PAD, 0, 0, 0),
                Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft,
                "No step has started yet.",
            )
            painter.end()
            return
        zero, total, pps = self._scale(now)
        self._paint_axis(painter, total, pps)
        metrics = QFontMetricsF(self._small)
        for row, step_id in enumerate(self._order):
            bar = self.bars[step_id]
            top = AXIS_HEIGHT + row * ROW_HEIGHT
            if step_id == self.selected:
                painter.fillRect(QRectF(0, top, self.width(), ROW_HEIGHT), SELECTED)
            colour = step_colour(bar.status)
            # The label: a status dot and the step's name.
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(colour)
            painter.drawEllipse(QPointF(PAD + 4, top + ROW_HEIGHT / 2), 4, 4)
            painter.setPen(QColor(theme.TEXT))
            painter.setFont(self._bold if step_id == self.selected else self._small)
            name = metrics.elidedText(bar.title, Qt.TextElideMode.ElideRight, LABEL_WIDTH - 30)
            painter.drawText(
                QRectF(PAD + 14, top, LABEL_WIDTH - 24, ROW_HEIGHT),
                Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft,
                name,
            )
            for start, end, _how in self.earlier(step_id):
                x0 = LABEL_WIDTH + (start - zero).total_seconds() * pps
                width = max(2.0, (end - start).total_seconds() * pps)
                faint = QColor(step_colour("failed"))
                faint.setAlpha(80)
                painter.setPen(Qt.PenStyle.NoPen)
                painter.setBrush(faint)
                y = top + (ROW_HEIGHT - BAR_HEIGHT) / 2 + 2
                painter.drawRoundedRect(QRectF(x0, y, width, BAR_HEIGHT - 4), 2, 2)
            rect = self.bar_rect(step_id, now)
            fill = QColor(colour)
            if bar.end is None:
                fill.setAlpha(170)  # still going: lighter, and it grows with each repaint
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(fill)
            painter.drawRoundedRect(rect, 3, 3)
            text = duration_text(bar.span(now))
            if bar.attempts > 1:
                text += f" · {bar.attempts} attempts"
            if bar.end is None:
                text = f"{status_text(bar.status)} · {text}"
            painter.setPen(QColor(theme.MUTED))
            painter.setFont(self._small)
            painter.drawText(
                QRectF(rect.right() + 6, top, RIGHT_ROOM + 200, ROW_HEIGHT),
                Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft,
                text,
            )
        painter.end()

    def _paint_axis(self, painter: QPainter, total: float, pps: float) -> None:
        step = _ticks(total)
        painter.setFont(self._small)
        bottom = self.height() - PAD / 2
        value = 0.0
        while value <= total + 1e-9:
            x = LABEL_WIDTH + value * pps
            painter.setPen(QPen(GRID, 1))
            painter.drawLine(QPointF(x, AXIS_HEIGHT - 4), QPointF(x, bottom))
            painter.setPen(QColor(theme.MUTED))
            painter.drawText(
                QRectF(x - 40, 0, 80, AXIS_HEIGHT - 6),
                Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignBottom,
                _tick_text(value),
            )
            value += step

    # --- interaction -----------------------------------------------------------------------
    def mousePressEvent(self, event: QMouseEvent) -> None:
        step_id = self.step_at(event.position().y())
        if step_id is not None and event.button() == Qt.MouseButton.LeftButton:
            self.step_clicked.emit(step_id)
            event.accept()
            return
        super().mousePressEvent(event)

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ToolTip and isinstance(event, QHelpEvent):
            step_id = self.step_at(event.pos().y())
            if step_id is None:
                QToolTip.hideText()
            else:
                bar = self.bars[step_id]
                lines = [
                    f"<b>{bar.title}</b> ({step_id})",
                    f"{status_text(bar.status)} · attempt {bar.attempts}",
                    f"started {clock_text(bar.start)}",
                ]
                if bar.end is not None:
                    lines.append(f"ended {clock_text(bar.end)} · {duration_text(bar.span(_now()))}")
                for start, end, how in self.earlier(step_id):
                    lines.append(
                        f"earlier attempt {clock_text(start)} to {clock_text(end)}: "
                        f"{how.removeprefix('step.')}"
                    )
                QToolTip.showText(event.globalPos(), "<br>".join(lines), self)
            return True
        return super().event(event)
