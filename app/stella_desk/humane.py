"""How the desk writes times, identifiers and its own terms for people: one place, one format.

Every page formats through here so a person sees one date format, no microseconds, no raw UUIDs,
and the same word for the same thing ("workflow", "person") on every screen.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

# The words the desk uses. The core's names differ in places (a workflow is stored as a
# "template", a person has a "profile" on this machine and a "user" row in the database).
WORKFLOW = "workflow"
PERSON = "person"


def _local(value: datetime | str) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.astimezone()


def when(value: datetime | str | None) -> str:
    """A moment as a person reads it in a list or a detail pane: '2 Dec 2026, 14:05'."""
    if value is None or value == "":
        return ""
    local = _local(value)
    return f"{local.day} {local:%b %Y, %H:%M}"


def when_exact(value: datetime | str | None) -> str:
    """A moment to the second, for logs and evidence: '2 Dec 2026, 14:05:09'."""
    if value is None or value == "":
        return ""
    local = _local(value)
    return f"{local.day} {local:%b %Y, %H:%M:%S}"


def when_recent(value: datetime | str | None, now: datetime | None = None) -> str:
    """Today's moments as a time of day, older ones as a day: '14:05' or '2 Dec'."""
    if value is None or value == "":
        return ""
    local = _local(value)
    today = (now or datetime.now().astimezone()).astimezone().date()
    if local.date() == today:
        return f"{local:%H:%M}"
    if local.year == today.year:
        return f"{local.day} {local:%b}"
    return f"{local.day} {local:%b %Y}"


def clock(value: datetime | str | None) -> str:
    """A time of day to the second, for a run's timeline: '14:05:09'."""
    if value is None or value == "":
        return ""
    return f"{_local(value):%H:%M:%S}"


def duration(seconds: float | timedelta | None) -> str:
    """A length of time as a person says it: '4 s', '3 min 20 s', '2 h 5 min'."""
    if seconds is None:
        return ""
    total = int(seconds.total_seconds() if isinstance(seconds, timedelta) else seconds)
    if total < 60:
        return f"{max(total, 0)} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def short_id(value: UUID | str | None) -> str:
    """An identifier shortened the way git shortens commits; the full one goes in a tooltip."""
    if value is None:
        return ""
    return str(value).replace("-", "")[:8]
