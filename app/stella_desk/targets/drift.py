"""The desk's one door to drift findings (`stella_core.drift`, shared design of issue 12).

The core's drift module may be absent from this build: it is imported lazily, here only, and
every caller gets `None` ("drift checks unavailable") rather than an ImportError. What the desk
shows of a finding is a `DriftView`: plain values read off the core's `TargetDrift`, so pages
never depend on the core's class being importable.

Readers: `DriftService.latest_in(conn, environment)` (each target's newest recorded finding, on
any connection); the check itself: `Orchestrator.drift.check(environment)` (reads stickers and
inspects every target, so it runs where the orchestrator runs, with this machine's agent beside
it on the embedded default, as `stella target sticker` does).
"""

from __future__ import annotations

import importlib
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from stella_core.errors import OrchestratorUnavailableError

if TYPE_CHECKING:
    from stella_core.bootstrap import Stella

UNAVAILABLE = "drift checks unavailable"
IN_SYNC = "in_sync"
DRIFTED = "drifted"
UNKNOWN = "unknown"
NOT_CHECKED = "not checked yet"

# Status -> (text colour, pill background): the promotion pills' green, red and amber.
DRIFT_COLOURS: dict[str, tuple[str, str]] = {
    IN_SYNC: ("#15803d", "#e2f6e8"),
    DRIFTED: ("#b91c1c", "#fde6e6"),
    UNKNOWN: ("#a15c04", "#fdf1dc"),
}
DRIFT_WORDS = {IN_SYNC: "in sync", DRIFTED: "drifted", UNKNOWN: "unknown"}


@dataclass(frozen=True)
class DriftView:
    target: str
    environment: str
    status: str  # in_sync | drifted | unknown
    reason: str | None
    differences: tuple[str, ...]  # one line each: "web: changed sha256:… -> sha256:…"
    checked_at: datetime | None

    @property
    def words(self) -> str:
        return DRIFT_WORDS.get(self.status, self.status)

    def detail(self) -> str:
        """The whole finding in a few lines (a tooltip)."""
        lines = [self.words]
        if self.reason:
            lines.append(self.reason)
        lines.extend(self.differences)
        return "\n".join(lines)


@dataclass(frozen=True)
class DriftSummary:
    """An environment's findings counted, for a badge."""

    in_sync: int = 0
    drifted: int = 0
    unknown: int = 0

    @property
    def total(self) -> int:
        return self.in_sync + self.drifted + self.unknown

    @property
    def status(self) -> str:
        """The worst of its targets: drifted, else unknown, else in sync."""
        if self.drifted:
            return DRIFTED
        if self.unknown:
            return UNKNOWN
        return IN_SYNC

    def words(self) -> str:
        if self.drifted:
            return f"{self.drifted} drifted"
        if self.unknown:
            return f"{self.unknown} unknown"
        return "in sync"

    def detail(self) -> str:
        return (
            f"{self.in_sync} in sync, {self.drifted} drifted, {self.unknown} unknown "
            f"(of {self.total} target{'s' if self.total != 1 else ''} checked)"
        )


def summary_pill(summary: DriftSummary | None, available: bool) -> tuple[str, str, str, str]:
    """(text, tooltip, text colour, background) of an environment's drift badge; colours are
    empty for a muted note (nothing checked yet, or checks unavailable)."""
    if not available:
        return "drift: unavailable", f"{UNAVAILABLE[0].upper()}{UNAVAILABLE[1:]}", "", ""
    if summary is None or summary.total == 0:
        return "drift: not checked", "No drift check has reached a target here yet", "", ""
    fg, bg = DRIFT_COLOURS[summary.status]
    return f"drift: {summary.words()}", summary.detail(), fg, bg


def pill_style(fg: str, bg: str) -> str:
    # Inline: the colour depends on the value, which a static sheet cannot express.
    return (
        f"color: {fg}; background: {bg}; border-radius: 8px; padding: 1px 8px;"
        "font-size: 11px; font-weight: 600;"
    )


def _module(name: str) -> Any | None:
    try:
        return importlib.import_module(f"stella_core.drift.{name}")
    except ImportError:
        return None


def available() -> bool:
    return _module("service") is not None


def _difference_line(diff: Any) -> str:
    component = getattr(diff, "component", "?")
    kind = getattr(diff, "kind", "changed")
    expected = getattr(diff, "expected", None) or "nothing"
    observed = getattr(diff, "observed", None) or "nothing"
    return f"{component}: {kind} (expected {expected}, found {observed})"


def view_of(finding: Any) -> DriftView:
    """A core `TargetDrift` as the desk shows it."""
    status = getattr(finding, "status", UNKNOWN)
    return DriftView(
        target=str(finding.target),
        environment=str(getattr(finding, "environment", "") or ""),
        status=str(getattr(status, "value", status)),
        reason=getattr(finding, "reason", None),
        differences=tuple(_difference_line(d) for d in getattr(finding, "differences", ()) or ()),
        checked_at=getattr(finding, "checked_at", None),
    )


# --- worker-thread functions (called inside `ops.run`) ---------------------------------------
def latest(stella: Stella, environment: str | None = None) -> list[DriftView] | None:
    """Each target's newest recorded finding; None when this build has no drift checks."""
    service = _module("service")
    if service is None:
        return None
    with stella.db.transaction() as conn:
        found = service.DriftService.latest_in(conn, environment)
    return [view_of(f) for f in found]


def by_target(findings: list[DriftView] | None) -> dict[str, DriftView] | None:
    return None if findings is None else {f.target: f for f in findings}


def summaries(findings: list[DriftView] | None) -> dict[str, DriftSummary] | None:
    """Findings counted per environment (None stays None: unavailable)."""
    if findings is None:
        return None
    counts: dict[str, Counter[str]] = {}
    for finding in findings:
        counts.setdefault(finding.environment, Counter())[finding.status] += 1
    return {env: DriftSummary(c[IN_SYNC], c[DRIFTED], c[UNKNOWN]) for env, c in counts.items()}


def check(
    stella: Stella, environment: str | None = None, *, local: bool = False
) -> list[DriftView] | None:
    """Check now (reads every target: minutes at worst); None when this build has none.
    `local`: a target checked is this machine's agent (the embedded default runs it beside
    the check when nothing else does)."""
    if _module("service") is None:
        return None
    orchestrator = stella.orchestrator
    if orchestrator is None:
        raise OrchestratorUnavailableError(
            "checking drift reads every target through the orchestrator, and this machine "
            "holds no orchestrator login for this tenant; stella serve checks on its schedule",
            remedy=("serve",),
        )
    from stella_core.agents.local import local_agent_beside

    # Not on every build's Orchestrator yet (the drift module wires it): looked up by name.
    drift_service: Any = getattr(orchestrator, "drift")  # noqa: B009
    with local_agent_beside(stella, wanted=local):
        found = drift_service.check(environment)
    return [view_of(f) for f in found]
