"""How run and step statuses look and read: one place for colours, words and what has ended.

Step colours come from the canvas items (`STATUS_STYLES`), so a card, a timeline bar and a
badge in the list show a status the same way.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from PySide6.QtGui import QColor

from stella_desk import humane
from stella_desk.workflows.items import STATUS_STYLES

TERMINAL_RUN = frozenset({"succeeded", "failed", "cancelled", "timed_out", "rolled_back"})
ACTIVE_RUN = frozenset({"pending", "running", "waiting", "rolling_back"})
TERMINAL_STEP = frozenset({"succeeded", "failed", "continued", "skipped", "cancelled", "timed_out"})
FAILED_STEP = frozenset({"failed", "timed_out"})

PENDING = (QColor("#8a93a8"), QColor("#eef0f5"))

# Run status -> (text colour, badge background) for the list and the monitor's header.
RUN_BADGES: dict[str, tuple[str, str]] = {
    "pending": ("#4b5563", "#eceef3"),
    "running": ("#1d4ed8", "#e3ecfd"),
    "waiting": ("#a15c04", "#fdf1dc"),
    "rolling_back": ("#b45309", "#fdecd9"),
    "succeeded": ("#15803d", "#e2f6e8"),
    "failed": ("#b91c1c", "#fde6e6"),
    "timed_out": ("#b91c1c", "#fde6e6"),
    "rolled_back": ("#9a3412", "#fdeadb"),
    "cancelled": ("#374151", "#e5e7eb"),
}


def status_text(status: str) -> str:
    return status.replace("_", " ")


def run_badge(status: str) -> tuple[QColor, QColor]:
    fg, bg = RUN_BADGES.get(status, ("#374151", "#eceef3"))
    return QColor(fg), QColor(bg)


def step_colour(status: str) -> QColor:
    return STATUS_STYLES.get(status, PENDING)[0]


def run_terminal(status: str) -> bool:
    return status in TERMINAL_RUN


def when_text(value: datetime | None) -> str:
    return humane.when(value)


def clock_text(value: datetime | None) -> str:
    return humane.clock(value)


def duration_text(span: timedelta | float | None) -> str:
    if span is None:
        return ""
    seconds = span.total_seconds() if isinstance(span, timedelta) else float(span)
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 90:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
