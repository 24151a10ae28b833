"""The `workflow` schema's rows, private to the workflows module (its service and engine).

One class per idea (templates, settings and workers, runs); the engine works through
`WorkflowStore`, which is all of them over one transaction.
"""

from __future__ import annotations

from stella_core.workflows.store.runs import ClaimedStep, Event, RunRow, RunRows, channel
from stella_core.workflows.store.settings import SettingsRows
from stella_core.workflows.store.templates import TemplateRows

__all__ = [
    "ClaimedStep",
    "Event",
    "RunRow",
    "WorkflowStore",
    "channel",
]


class WorkflowStore(TemplateRows, SettingsRows, RunRows):
    """Every query of the `workflow` schema over one transaction."""
