"""Drift findings as data, and the comparison itself (pure: no I/O).

A target is `in_sync` when every component the database says should run there (its newest
succeeded placement) runs from that digest, nothing else of the project runs, and its sticker
(signed by the orchestrator) names the same digests; `drifted` with the differing components;
`unknown` with the reason when it could not be told (unreachable, a sticker missing, corrupt or
badly signed, a report that proves nothing, a target never deployed to).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID


class DriftStatus(StrEnum):
    IN_SYNC = "in_sync"
    DRIFTED = "drifted"
    UNKNOWN = "unknown"


class DifferenceKind(StrEnum):
    CHANGED = "changed"  # runs, from another digest than expected (also behind the same tag)
    MISSING = "missing"  # expected, not running
    UNEXPECTED = "unexpected"  # running in the project, not part of the release
    STICKER_MISMATCH = "sticker_mismatch"  # the sticker says another digest than the database


@dataclass(frozen=True)
class Difference:
    component: str
    kind: str  # a DifferenceKind value
    expected: str | None
    observed: str | None
    tag: str | None = None

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "component": self.component,
            "kind": self.kind,
            "expected": self.expected,
            "observed": self.observed,
        }
        if self.tag is not None:
            found["tag"] = self.tag
        return found

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Difference:
        return cls(
            component=str(value.get("component")),
            kind=str(value.get("kind")),
            expected=value.get("expected"),
            observed=value.get("observed"),
            tag=value.get("tag"),
        )


@dataclass(frozen=True)
class TargetDrift:
    target: str
    target_id: UUID
    environment: str
    status: DriftStatus
    differences: tuple[Difference, ...]
    reason: str | None  # why unknown, or what drifted in one sentence
    expected_release: str | None
    checked_at: datetime
    report_digest: str | None
    # Who saw what runs: "agent <name>" (a report it signed) or "orchestrator" (SSH, WinRM).
    observer: str | None = None
    packet_id: UUID | None = None  # the `drift` packet, when this check changed the status
    remediation_id: UUID | None = None  # the deployment that put the expected release back

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "status": self.status.value,
            "differences": [d.to_json() for d in self.differences],
            "environment": self.environment,
            "reason": self.reason,
            "expected_release": self.expected_release,
            "checked_at": self.checked_at.isoformat(),
            "report_digest": self.report_digest,
            "observer": self.observer,
            "evidence_packet": str(self.packet_id) if self.packet_id else None,
            "remediation": str(self.remediation_id) if self.remediation_id else None,
        }


def compare(
    expected: Mapping[str, str],
    running: Sequence[Mapping[str, Any]],
    sticker: Mapping[str, str] | None,
    tags: Mapping[str, str | None] | None = None,
) -> list[Difference]:
    """Differences between what should run (`expected`: component -> digest), what runs
    (`running`: containers with `component` and `digest`) and what the sticker names
    (component -> digest), sorted by component then kind."""
    tags = tags or {}
    seen: dict[str, set[str]] = {}
    for c in running:
        seen.setdefault(str(c.get("component") or ""), set()).add(str(c.get("digest") or ""))
    found: list[Difference] = []
    for component, digest in expected.items():
        observed = seen.get(component)
        tag = tags.get(component)
        if not observed:
            found.append(Difference(component, DifferenceKind.MISSING, digest, None, tag))
            continue
        for other in sorted(observed - {digest}):
            found.append(Difference(component, DifferenceKind.CHANGED, digest, other, tag))
    for component in sorted(set(seen) - set(expected)):
        for other in sorted(seen[component]):
            found.append(Difference(component or "-", DifferenceKind.UNEXPECTED, None, other))
    if sticker is not None:
        for component in sorted(set(expected) | set(sticker)):
            if expected.get(component) != sticker.get(component):
                found.append(
                    Difference(
                        component,
                        DifferenceKind.STICKER_MISMATCH,
                        expected.get(component),
                        sticker.get(component),
                    )
                )
    return sorted(found, key=lambda d: (d.component, d.kind, d.observed or ""))


def summary(differences: Sequence[Difference]) -> str:
    """What drifted, in one sentence."""
    parts = []
    for d in differences:
        if d.kind == DifferenceKind.CHANGED:
            parts.append(f"{d.component} runs {d.observed}, not {d.expected}")
        elif d.kind == DifferenceKind.MISSING:
            parts.append(f"{d.component} is not running")
        elif d.kind == DifferenceKind.UNEXPECTED:
            parts.append(f"{d.component} runs but is not part of the release")
        else:
            parts.append(f"the sticker names {d.observed or 'nothing'} for {d.component}")
    return "; ".join(parts)[:2000]
