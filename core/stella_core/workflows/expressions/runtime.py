"""Run time: evaluating expressions against a step's context (inputs, release, environment,
the outputs of earlier steps), resolving a node's inputs and conditions."""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import threading
from collections.abc import Mapping
from typing import Any

import rfc8785
from cel_expr_python import cel

from stella_core.workflows.expressions import guard
from stella_core.workflows.expressions.errors import (
    ExpressionCompileError,
    ExpressionError,
    ExpressionEvalError,
    ExpressionLimitError,
)
from stella_core.workflows.expressions.messages import clean, compile_failure
from stella_core.workflows.expressions.source import (
    MAX_COLLECTION_ITEMS,
    MAX_CONTEXT_DEPTH,
    MAX_INTERPOLATED_BYTES,
    MAX_RESULT_BYTES,
    ROOTS,
    Expr,
    builds_collections,
    condition_source,
    precheck,
    root_references,
    split_template_string,
)

# Evaluated in this process only when surely smaller than this; otherwise in the guard's child.
IN_PROCESS_BYTES = 64 * 1024 * 1024

DYN_MAP = cel.Type.Map(cel.Type.STRING, cel.Type.DYN)
# cel-cpp Env thread safety is untested (expressions.md), so compiles are serialised; compiled
# programs are cached, so the lock is rarely contended.
COMPILE_LOCK = threading.Lock()


@functools.cache
def _runtime_env() -> cel.Env:
    # No extensions: ext_bindings and ext_strings grow strings exponentially from short text.
    return cel.NewEnv(variables=dict.fromkeys(ROOTS, DYN_MAP))


@functools.lru_cache(maxsize=4096)
def _program(src: str) -> cel.Expression:
    precheck(src)
    with COMPILE_LOCK:
        try:
            return _runtime_env().compile(src)
        except MemoryError:
            raise ExpressionLimitError("out of memory while compiling", source=src) from None
        except (RuntimeError, ValueError, TypeError) as exc:
            raise compile_failure(str(exc), src) from None


class _Scope:
    """One activation over a context, shared by the expressions of one step."""

    def __init__(self, context: Mapping[str, Any], *, guarded: bool = True) -> None:
        if not isinstance(context, Mapping):
            raise ExpressionEvalError("the expression context must be a mapping")
        self._data = {root: context.get(root) or {} for root in ROOTS}
        self._act: cel.Activation | None = None
        self._largest = 0
        self._bytes = 0
        # False in the guard's own process, which evaluates everything itself.
        self._guarded = guarded

    def _activation(self) -> cel.Activation:
        if self._act is None:
            self._largest, self._bytes = _context_shape(self._data)
            try:
                self._act = _runtime_env().Activation(self._data)
            except (RuntimeError, ValueError, TypeError) as exc:
                raise ExpressionEvalError(f"bad expression context: {exc}") from None
        return self._act

    def evaluate(self, src: str) -> Any:
        if not isinstance(src, str):  # before the cache: it hashes its argument
            raise ExpressionCompileError(
                f"an expression must be a string, not {type(src).__name__}"
            )
        program = _program(src)
        act = self._activation()
        if self._largest > MAX_COLLECTION_ITEMS and builds_collections(src):
            raise ExpressionLimitError(
                f"map/filter may not run while the context holds a list or map of "
                f"{self._largest} items (at most {MAX_COLLECTION_ITEMS}: their cost is quadratic)",
                source=src,
            )
        if self._guarded and not _bounded_here(src, self._bytes):
            return guard.evaluate(src, self._data)
        try:
            value = program.eval(act)
        except MemoryError:
            raise ExpressionLimitError("the expression ran out of memory", source=src) from None
        except RuntimeError as exc:
            text = str(exc)
            cls = ExpressionLimitError if "budget" in text.lower() else ExpressionEvalError
            if cls is ExpressionLimitError:
                text = "the expression exceeded its iteration budget (10,000 comprehension steps)"
            raise cls(clean(text), source=src) from None
        except (ValueError, TypeError) as exc:
            raise ExpressionEvalError(clean(str(exc)), source=src) from None
        if value.type() == cel.Type.ERROR:
            raise ExpressionEvalError(clean(str(value.value())), source=src)
        try:
            plain = value.plain_value()
        except MemoryError:
            raise ExpressionLimitError("the expression ran out of memory", source=src) from None
        except (RuntimeError, ValueError, TypeError) as exc:
            raise ExpressionEvalError(clean(str(exc)), source=src) from None
        return _to_json(plain, src, [MAX_RESULT_BYTES])


def _bounded_here(src: str, context_bytes: int) -> bool:
    """Whether `src` surely stays within IN_PROCESS_BYTES: no comprehension, and its root
    references, each copying at most the whole context (squared: a chain of `+` keeps its
    intermediate results), cannot add up to more."""
    refs = root_references(src)
    if refs is None:
        return False
    return (refs + 1) ** 2 * (context_bytes + len(src)) <= IN_PROCESS_BYTES


def evaluate_unguarded(src: str, context: Mapping[str, Any]) -> Any:
    """Evaluate in this process whatever it costs (the guard's child process does this)."""
    return _Scope(context, guarded=False).evaluate(src)


def _duration_text(value: dt.timedelta) -> str:
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    sign, micros = ("-" if micros < 0 else ""), abs(micros)
    seconds, frac = divmod(micros, 1_000_000)
    return f"{sign}{seconds}{f'.{frac:06d}'.rstrip('0') if frac else ''}s"


def _to_json(value: Any, src: str, budget: list[int]) -> Any:
    """A CEL result as a JSON value; timestamps and durations become their CEL text forms.
    `budget` is the remaining result size in (roughly) bytes."""
    budget[0] -= 8
    if budget[0] < 0:
        raise ExpressionLimitError(
            f"the expression's result is larger than {MAX_RESULT_BYTES} bytes", source=src
        )
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ExpressionEvalError(f"the result {value} is not a JSON number", source=src)
        return value
    if isinstance(value, str):
        budget[0] -= len(value)
        if budget[0] < 0:
            raise ExpressionLimitError(
                f"the expression's result is larger than {MAX_RESULT_BYTES} bytes", source=src
            )
        return value
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.timedelta):
        return _duration_text(value)
    if isinstance(value, list):
        return [_to_json(v, src, budget) for v in value]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if isinstance(k, bool):
                key = "true" if k else "false"
            elif isinstance(k, int | str):
                key = str(k)
            else:
                raise ExpressionEvalError(
                    f"a map key of type {type(k).__name__} is not JSON", source=src
                )
            out[key] = _to_json(v, src, budget)
        return out
    if isinstance(value, bytes | bytearray):
        raise ExpressionEvalError(
            "the result is bytes, which is not a JSON value (use string(...))", source=src
        )
    kind = f"the type {value.name()}" if isinstance(value, cel.Type) else type(value).__name__
    raise ExpressionEvalError(f"the result ({kind}) is not a JSON value", source=src)


def _text(value: Any) -> str:
    """How one interpolated part reads: strings as they are, everything else as canonical JSON."""
    if isinstance(value, str):
        return value
    try:
        return rfc8785.dumps(value).decode("utf-8")
    except rfc8785.CanonicalizationError:  # integers beyond 2**53: plain JSON still works
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def evaluate(src: str, context: Mapping[str, Any]) -> Any:
    """Evaluate one expression against `{"inputs", "release", "environment", "steps"}` (steps is
    `{node_id: {"outputs": {...}}}`); returns a JSON value."""
    return _Scope(context).evaluate(src)


def _resolve(value: Any, scope: _Scope) -> Any:
    if isinstance(value, str):
        if "${{" not in value:
            return value
        parts = split_template_string(value)
        if len(parts) == 1 and isinstance(parts[0], Expr):
            return scope.evaluate(parts[0].src)
        out: list[str] = []
        size = 0
        for part in parts:
            text = part if isinstance(part, str) else _text(scope.evaluate(part.src))
            size += len(text.encode("utf-8", "surrogatepass"))
            if size > MAX_INTERPOLATED_BYTES:
                raise ExpressionLimitError(
                    f"the interpolated string is longer than {MAX_INTERPOLATED_BYTES} bytes",
                    source=value[:200],
                )
            out.append(text)
        return "".join(out)
    if isinstance(value, dict):
        return {k: _resolve(v, scope) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_resolve(v, scope) for v in value]
    return value


def resolve_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Resolve expressions inside `value` (recursively through dicts and lists)."""
    return _resolve(value, _Scope(context))


def resolve_inputs(inputs: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """Resolve a node's inputs; an error names the input it came from."""
    scope = _Scope(context)
    out: dict[str, Any] = {}
    for key, value in inputs.items():
        try:
            out[key] = _resolve(value, scope)
        except ExpressionError as exc:
            raise type(exc)(f"input '{key}': {exc.message}", source=exc.source) from None
    return out


def evaluate_condition(src: str, context: Mapping[str, Any]) -> bool:
    """Evaluate a condition (bare or `${{ }}`); anything but a bool is an error."""
    value = evaluate(condition_source(src), context)
    if not isinstance(value, bool):
        shown = _text(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise ExpressionEvalError(
            f"a condition must give true or false, this one gave {_json_type(value)} {shown}",
            source=src,
        )
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def coerce_numbers(value: Any, schema: Mapping[str, Any]) -> Any:
    """Turn integers into floats where `schema` says "number", so typed-checked arithmetic
    (`ratio + 1.0`) also works at run time (CEL has no int + double)."""
    types = schema.get("type")
    type_list = [types] if isinstance(types, str) else list(types or [])
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value) if "number" in type_list and "integer" not in type_list else value
    if isinstance(value, dict):
        props = schema.get("properties")
        props = props if isinstance(props, Mapping) else {}
        extra = schema.get("additionalProperties")
        out = {}
        for k, v in value.items():
            sub = props.get(k, extra)
            out[k] = coerce_numbers(v, sub) if isinstance(sub, Mapping) else v
        return out
    if isinstance(value, list):
        items = schema.get("items")
        return [coerce_numbers(v, items) for v in value] if isinstance(items, Mapping) else value
    return value


def _context_shape(data: Mapping[str, Any]) -> tuple[int, int]:
    """Check the context is acyclic and shallow; return the size of its largest list or map and
    (roughly) its size in bytes."""
    largest = 0
    size = 0
    stack: list[tuple[object, int]] = [(v, 1) for v in data.values()]
    while stack:
        value, depth = stack.pop()
        size += 16
        if isinstance(value, dict):
            children: Any = value.values()
            size += sum(len(k) for k in value if isinstance(k, str))
        elif isinstance(value, list | tuple):
            children = value
        else:
            if isinstance(value, str | bytes):
                size += len(value)
            continue
        if depth > MAX_CONTEXT_DEPTH:
            raise ExpressionLimitError(
                f"the expression context is nested more than {MAX_CONTEXT_DEPTH} levels deep "
                "(or contains a cycle)"
            )
        largest = max(largest, len(value))
        stack.extend((c, depth + 1) for c in children)
    return largest, size
