"""The agent's redial waits: jittered, widening in tiers with the time the link is down, back
to the first tier once linked; renewal at two thirds of a certificate's life. (Pure: no
services.)"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from stella_core.agents.daemon import BACKOFF_TIERS, Backoff, renew_due

START = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.at = START

    def now(self) -> datetime:
        return self.at


def delays(backoff: Backoff, clock: Clock, until: timedelta, step: timedelta) -> list[float]:
    out = []
    while clock.at - START < until:
        out.append(backoff.next_delay())
        clock.at += step
    return out


def test_waits_widen_in_tiers_with_the_time_the_link_is_down() -> None:
    clock = Clock()
    backoff = Backoff(clock, random.Random(7))
    first = delays(backoff, clock, timedelta(seconds=60), timedelta(seconds=3))
    assert all(1 <= d <= 5 for d in first)
    second = delays(backoff, clock, timedelta(minutes=10), timedelta(seconds=10))
    assert all(5 <= d <= 15 for d in second)
    third = delays(backoff, clock, timedelta(minutes=30), timedelta(seconds=45))
    assert all(30 <= d <= 60 for d in third)
    assert BACKOFF_TIERS[0][0] == 60


def test_agents_that_lost_the_orchestrator_together_do_not_come_back_together() -> None:
    """A restart drops every link at once; the first redials spread over the first tier."""
    clock = Clock()
    firsts = [Backoff(clock, random.Random(seed)).next_delay() for seed in range(200)]
    assert min(firsts) >= 1
    assert max(firsts) <= 5
    # Spread out: no one-second window holds more than a third of them.
    for low in range(1, 5):
        assert sum(low <= d < low + 1 for d in firsts) < len(firsts) / 3
    assert len({round(d, 3) for d in firsts}) > 150


def test_a_link_that_came_up_starts_the_tiers_again() -> None:
    clock = Clock()
    backoff = Backoff(clock, random.Random(1))
    backoff.next_delay()
    clock.at += timedelta(minutes=20)
    assert backoff.next_delay() >= 30
    backoff.reset()
    assert backoff.next_delay() <= 5


def test_renewal_is_due_at_two_thirds_of_the_lifetime() -> None:
    not_after = START + timedelta(hours=24)
    assert not renew_due(START, not_after, START + timedelta(hours=15, minutes=59))
    assert renew_due(START, not_after, START + timedelta(hours=16))
