"""The run log pane: the selected step's entries (or every entry), appended as they arrive.

Above the entries, a short summary of the selected step: its status, attempts, error and the
tail of what its command printed. Entries are appended, never re-rendered, while the filter
stays the same; choosing another step rebuilds the text once from the entries in memory.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import QPlainTextEdit, QSizePolicy, QVBoxLayout, QWidget

from stella_core.workflows.model import RunEvent, StepRunInfo
from stella_desk import theme
from stella_desk.chrome import label
from stella_desk.runs.status import clock_text, status_text, step_colour

MAX_LINES = 20_000
OUTPUT_TAIL = 6  # lines of stdout / stderr in the summary

# Runs recorded before the core spelled it `step.rejected` still read by their meaning.
KIND_ALIASES = {"step.rejectd": "step.rejected"}

# The status an entry reports (for its colour); entries not listed are muted.
KIND_STATUS = {
    "step.started": "running",
    "step.succeeded": "succeeded",
    "step.failed": "failed",
    "step.timed_out": "timed_out",
    "step.retrying": "waiting",
    "step.waiting": "waiting",
    "step.approved": "succeeded",
    "step.rejected": "failed",
    "step.continued": "continued",
    "step.skipped": "skipped",
    "step.cancelled": "cancelled",
    "run.succeeded": "succeeded",
    "run.failed": "failed",
    "run.timed_out": "timed_out",
    "run.cancelled": "cancelled",
    "run.rolling_back": "continued",
    "run.rolled_back": "continued",
    "run.started": "running",
}


def describe(event: RunEvent) -> str:
    """What an entry says, in words (its kind is shown beside it)."""
    d: dict[str, Any] = dict(event.details or {})
    kind = kind_of(event)
    parts: list[str] = []
    if kind == "step.started":
        parts.append(f"attempt {d.pop('attempt', '?')}")
        worker = d.pop("worker", None)
        if worker:
            parts.append(f"on {worker}")
    elif kind == "step.retrying":
        parts.append(f"attempt {d.pop('attempt', '?')} failed: {d.pop('error', '')}")
        delay = d.pop("delay_ms", None)
        if isinstance(delay, int | float):
            parts.append(f"next try in {delay / 1000:g} s")
    elif kind in ("step.approved", "step.rejected"):
        who = str(d.pop("person", "") or event.actor)
        role = d.pop("role", None)
        parts.append(f"by {who}" + (f" ({role})" if role else ""))
        comment = d.pop("comment", "")
        if comment:
            parts.append(f"“{comment}”")
    elif kind == "step.waiting":
        parts.append(_wake_text(d.pop("wake_at", None)))
    elif kind == "step.notify":
        parts.append(str(d.pop("message", "")))
    else:
        attempt = d.pop("attempt", None)
        if attempt is not None:
            parts.append(f"attempt {attempt}")
        for key in ("error", "reason", "failed_step", "step", "message"):
            value = d.pop(key, None)
            if value:
                parts.append(
                    str(value) if key in ("error", "reason", "message") else f"{key} {value}"
                )
    d.pop("late", None)
    parts.extend(f"{k}={v}" for k, v in sorted(d.items()))
    return " · ".join(p for p in parts if p)


def kind_of(event: RunEvent) -> str:
    return KIND_ALIASES.get(event.kind, event.kind)


def _wake_text(wake: object) -> str:
    """When a waiting step wakes (its timer, or its timeout for an approval)."""
    if not isinstance(wake, str) or not wake:
        return "for a decision (no timeout)"
    try:
        when = datetime.fromisoformat(wake).astimezone()
    except ValueError:
        return f"wakes at {wake}"
    today = datetime.now().astimezone().date()
    shown = f"{when:%H:%M:%S}" if when.date() == today else f"{when:%Y-%m-%d %H:%M}"
    return f"wakes at {shown} (its timer, or its timeout)"


def plain_line(event: RunEvent) -> str:
    node = event.node_id or "run"
    return f"{clock_text(event.at)}  {node}  {kind_of(event)}  {describe(event)}".rstrip()


def html_line(event: RunEvent) -> str:
    kind = kind_of(event)
    status = KIND_STATUS.get(kind)
    colour = step_colour(status).name() if status else theme.MUTED
    node = html.escape(event.node_id or "run")
    return (
        f'<span style="color:{theme.MUTED}">{clock_text(event.at)}</span>&nbsp;&nbsp;'
        f"<b>{node}</b>&nbsp;&nbsp;"
        f'<span style="color:{colour}">{html.escape(kind)}</span>&nbsp;&nbsp;'
        f"{html.escape(describe(event))}"
    )


def _tail(text: object, lines: int = OUTPUT_TAIL) -> str:
    if not isinstance(text, str) or not text.strip():
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


class RunLog(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.step_id: str | None = None
        self.shown = 0  # entries in the text (tests read it)
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(6)
        self.heading = label("", "section")
        column.addWidget(self.heading)
        self.summary = label()
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(self.summary.textInteractionFlags())
        # A deploy step's outputs hold long unbroken words (digests, ids): they are cut at the
        # pane's edge rather than widening the window past the screen.
        self.summary.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        column.addWidget(self.summary)
        self.text = QPlainTextEdit()
        self.text.setObjectName("runLog")
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(MAX_LINES)
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.text.setFont(theme.mono_font(8.5))
        column.addWidget(self.text, 1)
        self.show_step(None, None)

    # --- what is shown ---------------------------------------------------------------------
    def reset(self, events: Iterable[RunEvent]) -> None:
        """Show these entries (of the current filter) from scratch."""
        self.text.clear()
        self.shown = 0
        self.append(events)

    def append(self, events: Iterable[RunEvent]) -> None:
        """Add the entries the current filter lets through; keep the view at the bottom if it
        was there."""
        chosen = [e for e in events if self.step_id is None or e.node_id == self.step_id]
        if not chosen:
            return
        bar = self.text.verticalScrollBar()
        at_end = bar.value() >= bar.maximum() - 4
        for event in chosen:
            self.text.appendHtml(html_line(event))
        self.shown += len(chosen)
        if at_end:
            self.text.moveCursor(QTextCursor.MoveOperation.End)
            bar.setValue(bar.maximum())

    def plain_text(self) -> str:
        return self.text.toPlainText()

    def show_step(self, step_id: str | None, step: StepRunInfo | None, title: str = "") -> None:
        """The heading and summary for a step (None: the whole run)."""
        self.step_id = step_id
        if step_id is None:
            self.heading.setText("EVENTS · WHOLE RUN")
            self.summary.setText(
                "Select a step on the graph or the timeline to see only its entries."
            )
            self.summary.setProperty("kind", "muted")
            theme.repolish(self.summary)
            return
        self.heading.setText(f"EVENTS · {(title or step_id).upper()}")
        self.summary.setProperty("kind", None)
        theme.repolish(self.summary)
        self.summary.setText(self._summary_html(step_id, step))

    @staticmethod
    def _summary_html(step_id: str, step: StepRunInfo | None) -> str:
        if step is None:
            return f"<b>{html.escape(step_id)}</b> has no state in this run."
        colour = step_colour(step.status).name()
        lines = [
            f'<span style="color:{colour}; font-weight:600">{status_text(step.status)}</span>'
            f" · {step.type} · attempt {step.attempts}"
        ]
        if step.error:
            lines.append(f'<span style="color:{theme.DANGER}">{html.escape(step.error)}</span>')
        outputs = step.outputs or {}
        for stream in ("stderr", "stdout"):
            tail = _tail(outputs.get(stream))
            if tail:
                body = html.escape(tail).replace("\n", "<br>")
                lines.append(
                    f'<span style="color:{theme.MUTED}">{stream}:</span> '
                    f'<span style="font-family:monospace">{body}</span>'
                )
        others = {k: v for k, v in outputs.items() if k not in ("stdout", "stderr")}
        if others:
            shown = ", ".join(f"{k}={v}" for k, v in sorted(others.items()))
            lines.append(f'<span style="color:{theme.MUTED}">outputs:</span> {html.escape(shown)}')
        return "<br>".join(lines)
