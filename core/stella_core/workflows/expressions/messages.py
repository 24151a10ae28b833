"""One-line messages from cel-cpp's statuses."""

from __future__ import annotations

import re
from collections.abc import Mapping

from stella_core.workflows.expressions.errors import (
    ExpressionCompileError,
    ExpressionError,
    ExpressionLimitError,
)

# The typed environments' generated message names (see typed.py), shown by their labels.
MESSAGE_NAME = re.compile(r"stella\.expr\.M\d+")

_STATUS = re.compile(r"^[A-Z_]+: ")
_STATUS_SUFFIX = re.compile(r"\s*\[[A-Z_]+\]\s*$")
_POSITION = re.compile(r"^ERROR: <input>:(-?\d+):(-?\d+): (.*)$")
_OPERATORS = {
    "_==_": "==",
    "_!=_": "!=",
    "_<_": "<",
    "_<=_": "<=",
    "_>_": ">",
    "_>=_": ">=",
    "_+_": "+",
    "_-_": "-",
    "_*_": "*",
    "_/_": "/",
    "_%_": "%",
    "_&&_": "&&",
    "_||_": "||",
    "_?_:_": "?:",
    "_[_]": "[]",
    "!_": "!",
    "-_": "unary -",
    "@in": "in",
}
_OVERLOAD = re.compile(r"found no matching overload for '([^']*)' applied to '\(([^)]*)\)'")


def _tidy(text: str) -> str:
    text = _OVERLOAD.sub(
        lambda m: f"no operator or function '{_OPERATORS.get(m[1], m[1])}' for ({m[2]})", text
    )
    text = re.sub(
        r"undeclared reference to '([^']*)' \(in container '[^']*'\)", r"unknown name '\1'", text
    )
    text = re.sub(
        r"undefined field '([^']*)' not found in struct '([^']*)'", r"no field '\1' in \2", text
    )
    text = re.sub(r" expecting \{[^}]*\}", "", text)  # the parser's token list is noise to users
    return re.sub(r"Key not found in map : ", "no such key: ", text)


def clean(message: str, labels: Mapping[str, str] | None = None) -> str:
    """A one-line message from a cel-cpp status (drops status codes and caret snippets)."""
    message = _STATUS_SUFFIX.sub("", message.strip())
    found: list[str] = []
    plain: list[str] = []
    for raw_line in message.splitlines():
        line = _STATUS.sub("", raw_line.strip())
        m = _POSITION.match(line)
        if m:
            line_no, col, text = int(m[1]), int(m[2]), m[3]
            where = (
                ""
                if col < 0
                else (f"column {col}: " if line_no == 1 else f"line {line_no} column {col}: ")
            )
            found.append(where + _tidy(text))
        elif line and not line.startswith("|"):
            plain.append(_tidy(line))
    text = "; ".join(dict.fromkeys(found or plain)) or "unknown error"
    if labels:
        text = MESSAGE_NAME.sub(lambda m: labels.get(m[0], m[0]), text)
    return text


def compile_failure(
    message: str, src: str, labels: Mapping[str, str] | None = None
) -> ExpressionError:
    lowered = message.lower()
    limit = "recursion" in lowered or "codepoint limit" in lowered or "nesting" in lowered
    cls = ExpressionLimitError if limit else ExpressionCompileError
    return cls(clean(message, labels), source=src)
