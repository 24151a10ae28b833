"""A component's health check, from its compose service fragment. Pure: no I/O.

`x-stella-health: {url, expect_status, interval, timeout}`: an HTTP check run ON the target
(through its agent or its SSH/WinRM session, as the `health-check` task), asked every `interval`
seconds until it answers `expect_status` or `timeout` seconds have passed. `{target}` in the URL
is replaced by the target's name (a load balancer's per-backend address, say). Compose ignores
`x-` keys, so the fragment reaches the lockfile unchanged.

A deployment to a target counts only once every component with a check is healthy there.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stella_core.errors import DefinitionError

HEALTH_KEY = "x-stella-health"
DEFAULT_INTERVAL = 1.0
DEFAULT_TIMEOUT = 30.0
MAX_TIMEOUT = 600.0
MAX_POLLS = 600
_URL = re.compile(r"^https?://[^\s]{1,2040}$")
_KEYS = {"url", "expect_status", "interval", "timeout"}


@dataclass(frozen=True)
class HttpHealth:
    component: str
    url: str
    expect_status: int = 200
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT

    @property
    def polls(self) -> int:
        """How many times it is asked at most (counted, not timed, so that a step taken over
        by another worker replays the same polls from the task queue)."""
        return max(1, min(MAX_POLLS, math.floor(self.timeout / self.interval) + 1))

    @property
    def request_seconds(self) -> float:
        """How long one request may take."""
        return max(1.0, min(10.0, self.interval, self.timeout))

    def url_for(self, target: str) -> str:
        return self.url.replace("{target}", target)

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "expect_status": self.expect_status,
            "interval": self.interval,
            "timeout": self.timeout,
        }


def _seconds(value: Any, name: str, component: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise DefinitionError(
            f"component {component!r}: {HEALTH_KEY} {name} must be a number of seconds from "
            f"{low:g} to {high:g}",
            field=HEALTH_KEY,
        )
    return float(value)


def health_of(component: str, fragment: Mapping[str, Any] | None) -> HttpHealth | None:
    """The component's HTTP health check, or None; DefinitionError when it is malformed (a
    fragment is stored data and is checked again here before anything runs)."""
    raw = (fragment or {}).get(HEALTH_KEY)
    if raw is None or (
        isinstance(raw, Mapping) and "url" not in raw and "healthcheck" in (fragment or {})
    ):
        return None  # none, or the pace of the container's own check
    where = f"component {component!r}: {HEALTH_KEY}"
    if not isinstance(raw, Mapping):
        raise DefinitionError(f"{where} must be a mapping with a url", field=HEALTH_KEY)
    unknown = sorted(str(k) for k in raw if k not in _KEYS)
    if unknown:
        raise DefinitionError(
            f"{where} has unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})",
            field=HEALTH_KEY,
        )
    url = raw.get("url")
    if not isinstance(url, str) or not _URL.match(url):
        raise DefinitionError(
            f"{where} url must be an http:// or https:// address", field=HEALTH_KEY
        )
    expect = raw.get("expect_status", 200)
    if isinstance(expect, bool) or not isinstance(expect, int) or not 100 <= expect <= 599:
        raise DefinitionError(
            f"{where} expect_status must be a whole number from 100 to 599", field=HEALTH_KEY
        )
    interval = _seconds(raw.get("interval", DEFAULT_INTERVAL), "interval", component, 0.2, 60)
    timeout = _seconds(raw.get("timeout", DEFAULT_TIMEOUT), "timeout", component, 1, MAX_TIMEOUT)
    return HttpHealth(component, url, expect, interval, timeout)


@dataclass(frozen=True)
class ContainerHealth:
    """The container's own compose `healthcheck`, asked of its engine on the target every
    second for up to 30 s (an `x-stella-health` without a url sets `interval` and `timeout`)."""

    component: str
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT

    @property
    def polls(self) -> int:
        return max(1, min(MAX_POLLS, math.floor(self.timeout / self.interval) + 1))

    @property
    def request_seconds(self) -> float:
        return max(5.0, min(30.0, self.timeout))

    def to_json(self) -> dict[str, Any]:
        return {"container": True, "interval": self.interval, "timeout": self.timeout}


def container_health_of(
    component: str, fragment: Mapping[str, Any] | None
) -> ContainerHealth | None:
    """The component's container health check (its compose `healthcheck`, unless disabled),
    or None. Its pace comes from an `x-stella-health` that names no url."""
    healthcheck = (fragment or {}).get("healthcheck")
    if not isinstance(healthcheck, Mapping) or healthcheck.get("disable") is True:
        return None
    test = healthcheck.get("test")
    if test is None or test in (["NONE"], "NONE"):
        return None
    pace = (fragment or {}).get(HEALTH_KEY)
    if isinstance(pace, Mapping) and "url" not in pace:
        unknown = sorted(str(k) for k in pace if k not in {"interval", "timeout"})
        if unknown:
            raise DefinitionError(
                f"component {component!r}: {HEALTH_KEY} without a url takes interval and "
                f"timeout only, not {unknown[0]!r}",
                field=HEALTH_KEY,
            )
        interval = _seconds(pace.get("interval", DEFAULT_INTERVAL), "interval", component, 0.2, 60)
        timeout = _seconds(
            pace.get("timeout", DEFAULT_TIMEOUT), "timeout", component, 1, MAX_TIMEOUT
        )
        return ContainerHealth(component, interval, timeout)
    return ContainerHealth(component)


Check = HttpHealth | ContainerHealth


def checks_of(services: Mapping[str, Mapping[str, Any] | None]) -> list[Check]:
    """Every component's checks, in component order: its container's own, then its HTTP one."""
    found: list[Check] = []
    for name in sorted(services):
        own = container_health_of(name, services[name])
        if own is not None:
            found.append(own)
        check = health_of(name, services[name])
        if check is not None:
            found.append(check)
    return found
