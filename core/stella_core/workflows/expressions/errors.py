"""The typed errors every expression failure becomes."""

from __future__ import annotations

from stella_core.errors import DefinitionError


class ExpressionError(DefinitionError):
    """An expression is wrong or failed; `source` is the expression text when known."""

    def __init__(self, message: str, *, source: str | None = None) -> None:
        super().__init__(message)
        self.source = source


class ExpressionCompileError(ExpressionError):
    """The expression does not parse or does not type-check."""


class ExpressionEvalError(ExpressionError):
    """Evaluation failed: a missing key, a division by zero, a non-JSON result."""


class ExpressionLimitError(ExpressionError):
    """A bound was hit: source size, nesting, iteration budget, memory, result size."""
