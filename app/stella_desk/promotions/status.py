"""How promotion and gate statuses look and read: one place for colours, words and symbols.

The core hands gates over in two shapes: a preview's reasons are `{"code", "message"}` objects,
a stored promotion's (and `why()`'s) are `"CODE: message"` strings. `gate_reasons` reads both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from PySide6.QtWidgets import QLabel

from stella_core.promotions.model import OPEN, TERMINAL, PromotionStatus
from stella_core.tenancy.model import ProductRole
from stella_desk import humane

REQUESTERS = (ProductRole.RELEASE_MANAGER, ProductRole.ADMIN)
OPEN_STATUSES = frozenset(s.value for s in OPEN)
ENDED_STATUSES = frozenset(s.value for s in TERMINAL)
# A promotion in these is on its way into the environment: worth watching closely.
MOVING_STATUSES = frozenset({PromotionStatus.APPROVED.value, PromotionStatus.DEPLOYING.value})

GREY = ("#4b5563", "#eceef3")
RED = ("#b91c1c", "#fde6e6")
AMBER = ("#a15c04", "#fdf1dc")
GREEN = ("#15803d", "#e2f6e8")
BLUE = ("#1d4ed8", "#e3ecfd")

# Promotion status -> (text colour, pill background).
STATUS_COLOURS: dict[str, tuple[str, str]] = {
    "requested": GREY,
    "blocked": RED,
    "awaiting_approval": AMBER,
    "approved": ("#0f766e", "#e2f5f2"),
    "deploying": BLUE,
    "deployed": GREEN,
    "rejected": RED,
    "cancelled": ("#374151", "#e5e7eb"),
    "failed": RED,
    "rolled_back": ("#9a3412", "#fdeadb"),
}

# Gate status -> (symbol, colour, word).
GATE_LOOKS: dict[str, tuple[str, str, str]] = {
    "pass": ("✓", GREEN[0], "passes"),
    "fail": ("✕", RED[0], "fails"),
    "pending": ("◷", AMBER[0], "pending"),
}

GATE_TITLES = {
    "freeze-window": "Freeze window",
    "predecessor": "Previous environment",
    "approval": "Approvals",
    "schedule": "Deployment schedule",
    "@policy": "Policy",
    "@inputs": "Inputs",
}

VERDICT_WORDS = {
    "allow": "Would go ahead now: nothing blocks it, the deployment starts at once.",
    "pending": "Would wait for approvals: every other gate passes.",
    "deny": "Would be blocked: it stays open and goes ahead once the failing gates clear.",
}


# A promotion's status as a sentence fragment a person reads in a list.
STATUS_LABELS: dict[str, str] = {
    "requested": "Requested",
    "blocked": "Blocked by a gate",
    "awaiting_approval": "Awaiting approval",
    "approved": "Approved",
    "deploying": "Deploying",
    "deployed": "Deployed",
    "rejected": "Rejected",
    "cancelled": "Cancelled",
    "failed": "Deployment failed",
    "rolled_back": "Rolled back",
}


def status_label(status: str) -> str:
    return STATUS_LABELS.get(status, status_text(status).capitalize())


def status_text(status: str) -> str:
    return status.replace("_", " ")


def set_status_pill(widget: QLabel, status: str) -> None:
    fg, bg = STATUS_COLOURS.get(status, GREY)
    widget.setText(status_text(status))
    # Inline: the colour depends on the value, which a static sheet cannot express.
    widget.setStyleSheet(
        f"color: {fg}; background: {bg}; border-radius: 8px; padding: 1px 9px;"
        "font-size: 11px; font-weight: 600;"
    )


def status_pill(status: str) -> QLabel:
    widget = QLabel()
    set_status_pill(widget, status)
    return widget


def gate_title(gate: Mapping[str, Any]) -> str:
    name = str(gate.get("gate") or "")
    kind = str(gate.get("type") or name)
    return GATE_TITLES.get(name) or GATE_TITLES.get(kind) or name


# A moment the core writes into a reason ("…active at 2026-12-02T06:57:25.186225Z").
ISO_MOMENT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})")


def humane_text(text: str) -> str:
    """The core's words with its timestamps as a person reads them."""
    return ISO_MOMENT.sub(lambda m: humane.when(m.group(0).replace("Z", "+00:00")), text)


def gate_reasons(gate: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(code, message) per reason, whichever shape the core used."""
    found = []
    for reason in gate.get("reasons") or []:
        if isinstance(reason, Mapping):
            code, message = str(reason.get("code", "")), str(reason.get("message", ""))
            found.append((code, humane_text(message)))
        else:
            code, _, message = str(reason).partition(": ")
            found.append((code, humane_text(message)) if message else ("", humane_text(code)))
    return found


def main_reason(promotion: Mapping[str, Any]) -> str:
    """The first thing holding a promotion back, in words (a failing gate before a pending one)."""
    gates = promotion.get("gates") or []
    for wanted in ("fail", "pending"):
        for gate in gates:
            if gate.get("status") == wanted:
                reasons = gate_reasons(gate)
                if reasons:
                    return reasons[0][1]
    return str(promotion.get("status_reason") or "")


def is_blocked(promotion: Mapping[str, Any]) -> bool:
    return promotion.get("status") == PromotionStatus.BLOCKED.value or any(
        g.get("status") == "fail" for g in promotion.get("gates") or []
    )


def when_text(value: str | datetime | None) -> str:
    """An ISO time from the core, as every page writes a moment (humane.when)."""
    return humane.when(value)


def short_when(value: str | datetime | None) -> str:
    """The time alone for today, the day alone before: for lines with little room."""
    return humane.when_recent(value)


def may_request(role: ProductRole | None) -> bool:
    return role in REQUESTERS


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
