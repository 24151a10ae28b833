"""The desk writes times and identifiers one way everywhere."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from stella_desk import humane


def test_when_has_no_microseconds_and_reads_as_a_date() -> None:
    moment = datetime(2026, 12, 2, 14, 5, 9, 123456, tzinfo=UTC)
    local = moment.astimezone()
    assert humane.when(moment) == f"{local.day} {local:%b %Y, %H:%M}"
    assert humane.when(moment.isoformat()) == humane.when(moment)
    assert humane.when_exact(moment).endswith(f"{local:%H:%M:%S}")
    assert "123456" not in humane.when_exact(moment)
    assert humane.when(None) == ""


def test_recent_moments_are_times_older_ones_days() -> None:
    now = datetime(2026, 12, 2, 18, 0, tzinfo=UTC).astimezone()
    assert (
        humane.when_recent(now - timedelta(minutes=5), now=now)
        == f"{now - timedelta(minutes=5):%H:%M}"
    )
    older = now - timedelta(days=40)
    assert humane.when_recent(older, now=now) == f"{older.day} {older:%b}"
    ancient = now - timedelta(days=800)
    assert humane.when_recent(ancient, now=now).endswith(str(ancient.year))


def test_durations_and_short_ids() -> None:
    assert humane.duration(4.7) == "4 s"
    assert humane.duration(200) == "3 min 20 s"
    assert humane.duration(timedelta(hours=2, minutes=5)) == "2 h 5 min"
    ident = UUID("0f9e8d7c-6b5a-4321-8765-0123456789ab")
    assert humane.short_id(ident) == "0f9e8d7c"
