"""What goes wrong with a template: the errors and how their problems are summed up."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from stella_core.errors import DefinitionError
from stella_core.workflows.model import (
    Problem,
)

_MAX_MESSAGE = 240


class TemplateError(DefinitionError):
    """A template document cannot be loaded; `problems` says where and why."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems: list[Problem] = list(problems) or [
            Problem(node=None, field=None, message=message)
        ]


class CycleError(DefinitionError):
    """An edge (or a document) would make the graph cyclic; `cycle` lists the nodes in order."""

    def __init__(self, message: str, cycle: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.cycle: list[str] = list(cycle)


def _short(text: str, limit: int = _MAX_MESSAGE) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _summary(problems: Sequence[Problem]) -> str:
    first = problems[0]
    where = ".".join(p for p in (first.node, first.field) if p)
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"invalid template: {where + ': ' if where else ''}{first.message}{more}"


def _dotted(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
