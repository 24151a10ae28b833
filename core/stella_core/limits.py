"""Bounds on what comes in from outside, shared by the command line's flags and the services.

Whole numbers that fit their PostgreSQL column, finite seconds, text PostgreSQL can store, JSON
of bounded depth and number size, and files read under a size cap (a device such as /dev/zero is
never read to its end). Each refusal is a DefinitionError (exit 2) naming the flag or field, and
shows at most a short prefix of the value: a 5,000-digit number is not echoed back whole.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import sys
from typing import Any, Final

from stella_core.errors import DefinitionError, InvalidNameError

INT32_MAX: Final = 2**31 - 1  # PostgreSQL `integer`
INT64_MAX: Final = 2**63 - 1  # PostgreSQL `bigint`
# I-JSON: integers beyond 2**53 lose precision in other JSON readers and cannot be canonicalised
# (RFC 8785), so no document may carry them.
MAX_SAFE_INTEGER: Final = 2**53 - 1
MAX_JSON_DEPTH: Final = 64
MAX_LIST_ROWS: Final = 1_000_000  # --limit
MAX_WAIT_SECONDS: Final = 366 * 24 * 3600  # a timeout beyond a year is a typo, not a plan

_WHOLE = re.compile(r"[+-]?[0-9]+")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def check_name(kind: str, value: str) -> str:
    """A name of a person, environment, component or registry: one spelling everywhere."""
    if not NAME_RE.match(value):
        raise InvalidNameError(
            f"invalid {kind} name {value!r}: use 1-63 characters a-z, 0-9, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")
_SHOWN = 40


def shown(value: str) -> str:
    """`value` quoted, cut to a short prefix when long (with its length)."""
    if len(value) <= _SHOWN:
        return repr(value)
    return f"{value[:_SHOWN]!r}… ({len(value)} characters)"


def _number(digits: str) -> str:
    """A number as typed, cut to a short prefix when long (with its digit count)."""
    if len(digits) <= _SHOWN:
        return digits
    return f"{digits[:_SHOWN]}… ({len(digits.lstrip('+-'))} digits)"


def _named(what: str, rest: str) -> str:
    return f"{what} {rest}" if what else rest


def in_range(value: int, what: str, *, low: int, high: int, field: str | None = None) -> int:
    """`value` when low <= value <= high, else a DefinitionError saying the range (about
    `field`, the input as a service names it)."""
    if not low <= value <= high:
        raise DefinitionError(
            _named(
                what,
                f"{_number(str(value))} is out of range: give a whole number from {low} to {high}",
            ),
            field=field,
        )
    return value


def whole_number(text: str, what: str, *, low: int, high: int) -> int:
    """A whole number written in ASCII digits, from `low` to `high` (inclusive). Never converts
    more digits than the range can hold: Python refuses beyond 4,300 with its own error."""
    stripped = text.strip()
    if not _WHOLE.fullmatch(stripped):
        raise DefinitionError(_named(what, f"{shown(text)} is not a whole number"))
    digits = stripped.lstrip("+-").lstrip("0")
    if len(digits) > len(str(max(abs(low), abs(high)))):
        raise DefinitionError(
            _named(
                what,
                f"{_number(stripped)} is out of range: give a whole number from {low} to {high}",
            )
        )
    return in_range(int(stripped), what, low=low, high=high)


def seconds(text: str, what: str, *, low: float, high: float) -> float:
    """A finite number of seconds from `low` to `high`: never nan or inf (a wait that never
    ends, or one that ends at once, by accident)."""
    try:
        value = float(text)
    except ValueError:
        raise DefinitionError(_named(what, f"{shown(text)} is not a number of seconds")) from None
    if not math.isfinite(value):
        raise DefinitionError(_named(what, f"{shown(text)} is not a finite number of seconds"))
    if not low <= value <= high:
        raise DefinitionError(
            _named(
                what,
                f"{shown(text)} is out of range: give seconds from {low:.15g} to {high:.15g}",
            )
        )
    return value


def text_problem(value: str) -> str | None:
    """Why PostgreSQL cannot store `value` as text (None when it can): a NUL character, or a
    lone surrogate (bytes that were not UTF-8, as Python decodes them from a command line)."""
    if "\x00" in value:
        return "contains a NUL character, which text may not hold"
    if _SURROGATE.search(value):
        return "is not valid UTF-8 text"
    return None


def check_text(value: str, what: str, *, field: str | None = None) -> str:
    """`value` unchanged when PostgreSQL can store it as text, else a DefinitionError (about
    `field`, the input as a service names it)."""
    problem = text_problem(value)
    if problem is not None:
        raise DefinitionError(_named(what, problem), field=field)
    return value


def read_bounded(path: str, limit: int, what: str) -> bytes:
    """The bytes of the file at `path` (`-`: standard input), refused when over `limit` bytes.
    A regular file's size is checked before reading; anything else (a pipe, a device such as
    /dev/zero) is read to at most one byte past the limit."""
    label = _named(what, "from standard input" if path == "-" else path)
    if path == "-":
        data = sys.stdin.buffer.read(limit + 1)
    else:
        try:
            with open(path, "rb") as handle:
                info = os.fstat(handle.fileno())
                if stat.S_ISREG(info.st_mode) and info.st_size > limit:
                    raise DefinitionError(
                        f"{label} is {info.st_size} bytes, more than the {limit} Stella reads"
                    )
                data = handle.read(limit + 1)
        except OSError as exc:
            raise DefinitionError(f"cannot read {label}: {exc.strerror or exc}") from exc
    if len(data) > limit:
        raise DefinitionError(f"{label} is more than the {limit} bytes Stella reads")
    return data


def read_text(path: str, limit: int, what: str) -> str:
    """`read_bounded`, decoded as UTF-8 (a byte order mark is dropped)."""
    data = read_bounded(path, limit, what)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        where = _named(what, "from standard input" if path == "-" else path)
        raise DefinitionError(
            f"{where} is not UTF-8 text (bad byte at offset {exc.start})"
        ) from None


class _JsonLimit(ValueError):
    """Raised from json hooks; becomes a DefinitionError naming the document."""


def json_integer(digits: str) -> int:
    """A `parse_int` hook: integers within ±(2**53 - 1), checked before conversion (so a
    5,000-digit one is refused by us, not by Python's digit limit)."""
    if len(digits.lstrip("-")) > len(str(MAX_SAFE_INTEGER)) or abs(int(digits)) > MAX_SAFE_INTEGER:
        raise _JsonLimit(f"the integer {_number(digits)} is beyond 2**53 - 1")
    return int(digits)


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _JsonLimit(f"the number {_number(text)} is too large")
    return value


def _json_constant(name: str) -> Any:
    raise _JsonLimit(f"{name} is not a JSON number")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _JsonLimit(f"the key {shown(key)} appears twice in an object")
        out[key] = value
    return out


def json_depth(value: Any) -> int:
    """How deeply arrays and objects nest in `value` (a scalar is 0); iterative, so any depth
    is measured without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def load_json(text: str | bytes, what: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse a JSON document from outside: no duplicate keys, no NaN or Infinity, integers
    within ±(2**53 - 1), and at most `max_depth` levels of nesting."""
    try:
        value = json.loads(
            text,
            object_pairs_hook=_pairs,
            parse_int=json_integer,
            parse_float=_json_float,
            parse_constant=_json_constant,
        )
    except json.JSONDecodeError as exc:
        raise DefinitionError(
            f"{what} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except _JsonLimit as exc:
        raise DefinitionError(f"{what}: {exc}") from None
    except RecursionError:
        raise DefinitionError(f"{what} nests more than {max_depth} levels deep") from None
    except UnicodeDecodeError as exc:
        raise DefinitionError(
            f"{what} is not UTF-8 text (bad byte at offset {exc.start})"
        ) from None
    if json_depth(value) > max_depth:
        raise DefinitionError(f"{what} nests more than {max_depth} levels deep")
    return value
