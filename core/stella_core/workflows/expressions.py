"""Workflow expressions: CEL (cel-expr-python, the cel-cpp binding), wrapped as
shared/reference/expressions.md section 5 recommends.

- Run time: each source compiles once against `map(string, dyn)` variables (`inputs`, `release`,
  `environment`, `steps`) and is evaluated against the plain JSON context, so a missing output is
  an error rather than a protobuf default.
- Save time: `typed_check` compiles against an environment typed from JSON Schemas (step output
  schemas, template inputs, release, environment), which catches `steps.build.outputs.digets`,
  `int == string` and wrong result types.
- Every failure is a typed `ExpressionError`. Cost is bounded in layers: a static precheck
  (source size, comprehension nesting), the library's iteration budget, `MemoryError` mapped, no
  unsafe extensions, capped results and interpolations, and a context that is checked to be
  acyclic and shallow (the library crashes the process on cyclic or very deep values).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import rfc8785
from cel_expr_python import cel
from google.protobuf import descriptor_pb2, descriptor_pool, struct_pb2

from stella_core.errors import DefinitionError

__all__ = [
    "ENVIRONMENT_SCHEMA",
    "EXPR_RE",
    "MAX_COLLECTION_ITEMS",
    "MAX_COMPREHENSION_NESTING",
    "MAX_CONTEXT_DEPTH",
    "MAX_INTERPOLATED_BYTES",
    "MAX_RESULT_BYTES",
    "MAX_SOURCE_BYTES",
    "RELEASE_SCHEMA",
    "RESERVED_WORDS",
    "ROOTS",
    "Expr",
    "ExpressionCompileError",
    "ExpressionError",
    "ExpressionEvalError",
    "ExpressionLimitError",
    "References",
    "TypedEnv",
    "coerce_numbers",
    "condition_source",
    "evaluate",
    "evaluate_condition",
    "is_expression",
    "precheck",
    "references",
    "rename_step",
    "rename_steps",
    "resolve_inputs",
    "resolve_value",
    "split_template_string",
    "typed_check",
    "typed_env",
]

ROOTS: Final = ("inputs", "release", "environment", "steps")
MAX_SOURCE_BYTES: Final = 2048
MAX_COMPREHENSION_NESTING: Final = 2
MAX_INTERPOLATED_BYTES: Final = 64 * 1024
MAX_RESULT_BYTES: Final = 1024 * 1024
# cel-cpp's map and filter copy their accumulated list on every iteration (measured: 10,000
# items take 4 s, 2,000 take 0.15 s), so they may not run while the context holds a bigger list or
# map; exists/all/exists_one stay linear and are not limited.
MAX_COLLECTION_ITEMS: Final = 2_000
# cel-cpp converts whole root values recursively and crashes the process (SIGSEGV) on cyclic or
# very deep data (measured: depth 10,000), so contexts deeper than this are refused up front.
MAX_CONTEXT_DEPTH: Final = 64

# CEL keywords and reserved words: they cannot follow a dot (`steps.in` does not parse).
RESERVED_WORDS: Final = frozenset(
    {
        *("as", "break", "const", "continue", "else", "false", "for", "function", "if"),
        *("import", "in", "let", "loop", "namespace", "null", "package", "return", "true"),
        *("var", "void", "while"),
    }
)
_MACROS: Final = frozenset({"all", "exists", "exists_one", "map", "filter"})

RELEASE_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "title": "release",
    "properties": {
        "name": {"type": "string"},
        "components": {
            "type": "array",
            "items": {
                "type": "object",
                "title": "release component",
                "properties": {
                    "name": {"type": "string"},
                    "repository": {"type": "string"},
                    "tag": {"type": ["string", "null"]},
                    "digest": {"type": "string"},
                },
            },
        },
    },
}

ENVIRONMENT_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "title": "environment",
    "properties": {
        "name": {"type": "string"},
        "order": {"type": "integer"},
        "required_approvals": {"type": "integer"},
        "separation_of_duties": {"type": "boolean"},
    },
}


# --- errors ---------------------------------------------------------------------------------


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


# --- lexical layer: template strings, tokens, references -------------------------------------

EXPR_RE: Final = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
"""`${{ EXPR }}` for simple matching; `split_template_string` is the authority (it also handles
`}}` inside string literals and map literals)."""


@dataclass(frozen=True, slots=True)
class Expr:
    """One `${{ ... }}` part of a template string; `src` is the expression inside."""

    src: str


def is_expression(value: object) -> bool:
    """True when `value` is a string containing `${{` (a well-formed expression or not)."""
    return isinstance(value, str) and "${{" in value


_STRING_START = re.compile(r"(?:[rR][bB]?|[bB][rR]?)?('''|\"\"\"|'|\")")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+[uU]?|\d*\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+[uU]?")


def _string_end(s: str, i: int) -> tuple[int, bool, int, int] | None:
    """If a string literal starts at `i`: (end index, raw, content start, quote length); None
    otherwise. The end is len(s) + 1 for an unterminated literal."""
    m = _STRING_START.match(s, i)
    if m is None:
        return None
    quote = m.group(1)
    raw = "r" in s[i : m.start(1)].lower()
    j = m.end()
    content = j
    n = len(s)
    while j < n:
        c = s[j]
        if not raw and c == "\\":
            j += 2
            continue
        if len(quote) == 1 and c == "\n":
            return n + 1, raw, content, len(quote)
        if s.startswith(quote, j):
            return j + len(quote), raw, content, len(quote)
        j += 1
    return n + 1, raw, content, len(quote)


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "ident" | "string" | "number" | "punct"
    text: str
    start: int
    end: int
    value: str | None = None  # a string literal's value when it has no escapes
    value_start: int = 0  # where that value starts in the source


def _tokens(src: str) -> list[_Token]:
    """A lexical scan good enough for prechecks and references (the CEL parser has the final
    word). Skips whitespace, comments and string literals; stops at an unterminated literal."""
    out: list[_Token] = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c in " \t\n\r\f":
            i += 1
            continue
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
            continue
        lit = _string_end(src, i)
        if lit is not None:
            end, raw, content, quote_len = lit
            if end > n:
                break
            body = src[content : end - quote_len]
            value = body if (raw or "\\" not in body) else None
            out.append(_Token("string", src[i:end], i, end, value, content))
            i = end
            continue
        m = _IDENT.match(src, i)
        if m is not None:
            out.append(_Token("ident", m.group(), i, m.end()))
            i = m.end()
            continue
        m = _NUMBER.match(src, i)
        if m is not None:
            out.append(_Token("number", m.group(), i, m.end()))
            i = m.end()
            continue
        out.append(_Token("punct", c, i, i + 1))
        i += 1
    return out


def _split_spans(s: str) -> list[tuple[int, int, bool]]:
    """(start, end, is_expression) spans of a template string; an expression span is the text
    between `${{` and `}}`. Braces and string literals inside an expression are skipped."""
    spans: list[tuple[int, int, bool]] = []
    i, n = 0, len(s)
    while i < n:
        j = s.find("${{", i)
        if j < 0:
            spans.append((i, n, False))
            break
        if j > i:
            spans.append((i, j, False))
        start = k = j + 3
        depth = 0
        while True:
            if k >= n:
                raise ExpressionCompileError(
                    f"unterminated '${{{{' at character {j + 1}: expected '}}}}' "
                    "(or a quote or brace inside is not closed)",
                    source=s,
                )
            if depth == 0 and s.startswith("}}", k):
                break
            lit = _string_end(s, k)
            if lit is not None:
                k = lit[0]
                continue
            if s[k] == "{":
                depth += 1
            elif s[k] == "}":
                depth -= 1
            k += 1
        spans.append((start, k, True))
        i = k + 2
    return spans


def split_template_string(s: str) -> list[str | Expr]:
    """Split `"a ${{ x }} b"` into `["a ", Expr("x"), " b"]` (expression text stripped)."""
    return [Expr(s[a:b].strip()) if is_expr else s[a:b] for a, b, is_expr in _split_spans(s)]


def condition_source(src: str) -> str:
    """A condition is a bare expression or exactly one `${{ EXPR }}`; returns the expression."""
    if not isinstance(src, str):
        raise ExpressionCompileError(f"a condition must be a string, not {type(src).__name__}")
    text = src.strip()
    if "${{" not in text:
        return text
    parts = split_template_string(text)
    if len(parts) != 1 or not isinstance(parts[0], Expr):
        raise ExpressionCompileError(
            "a condition must be a single expression, not text with ${{ }} parts", source=src
        )
    return parts[0].src


@dataclass(frozen=True, slots=True)
class References:
    """What an expression reads, found lexically: `steps.X` / `steps["X"]` and `inputs.N`.

    `any_step` / `any_input` mean the root is used in a way that cannot be resolved statically
    (`steps[name]`, `steps` as a whole).
    """

    steps: frozenset[str]
    inputs: frozenset[str]
    any_step: bool
    any_input: bool


def _root_member(toks: list[_Token], k: int) -> tuple[str | None, _Token | None]:
    """After a root identifier at toks[k]: the member name and its token; (None, None) when the
    access is dynamic (`steps[x]`, `steps` as a whole)."""
    rest = toks[k + 1 : k + 4]
    if len(rest) >= 2 and rest[0].text == "." and rest[1].kind == "ident":
        return rest[1].text, rest[1]
    if (
        len(rest) == 3
        and rest[0].text == "["
        and rest[1].kind == "string"
        and rest[1].value is not None
        and rest[2].text == "]"
    ):
        return rest[1].value, rest[1]
    return None, None


def _root_positions(toks: list[_Token], root: str) -> list[int]:
    return [
        k
        for k, t in enumerate(toks)
        if t.kind == "ident" and t.text == root and (k == 0 or toks[k - 1].text != ".")
    ]


def references(src: str) -> References:
    """The step ids and template inputs an expression refers to (lexically)."""
    toks = _tokens(src)
    found: dict[str, set[str]] = {"steps": set(), "inputs": set()}
    dynamic = {"steps": False, "inputs": False}
    for root in ("steps", "inputs"):
        for k in _root_positions(toks, root):
            name, _ = _root_member(toks, k)
            if name is None:
                dynamic[root] = True
            else:
                found[root].add(name)
    return References(
        steps=frozenset(found["steps"]),
        inputs=frozenset(found["inputs"]),
        any_step=dynamic["steps"],
        any_input=dynamic["inputs"],
    )


def _rename_in_source(src: str, mapping: Mapping[str, str]) -> str:
    toks = _tokens(src)
    edits: list[tuple[int, int, str]] = []
    for k in _root_positions(toks, "steps"):
        name, tok = _root_member(toks, k)
        if name is None or tok is None or name not in mapping:
            continue
        if tok.kind == "ident":
            edits.append((tok.start, tok.end, mapping[name]))
        else:  # a string literal: keep its prefix and quotes
            edits.append((tok.value_start, tok.value_start + len(name), mapping[name]))
    for start, end, text in reversed(edits):
        src = src[:start] + text + src[end:]
    return src


def rename_steps(value: str, mapping: Mapping[str, str], *, bare: bool = False) -> str:
    """Rewrite `steps.old` (and `steps["old"]`) to `steps.new` for every old -> new in `mapping`
    at once, in the `${{ }}` parts of a template string, or in the whole string when `bare` (a
    condition written without `${{ }}`). Formatting and string literals are kept."""
    if "${{" not in value:
        return _rename_in_source(value, mapping) if bare else value
    try:
        spans = _split_spans(value)
    except ExpressionCompileError:
        return value  # malformed: validation reports it; nothing safe to rewrite
    out = []
    for a, b, is_expr in spans:
        text = value[a:b]
        out.append("${{" + _rename_in_source(text, mapping) + "}}" if is_expr else text)
    return "".join(out)


def rename_step(value: str, old: str, new: str, *, bare: bool = False) -> str:
    """`rename_steps` for a single id."""
    return rename_steps(value, {old: new}, bare=bare)


# --- bounds ---------------------------------------------------------------------------------


def precheck(src: str) -> None:
    """Static bounds checked before compiling: size and comprehension nesting."""
    if not isinstance(src, str):
        raise ExpressionCompileError(f"an expression must be a string, not {type(src).__name__}")
    try:
        size = len(src.encode("utf-8"))
    except UnicodeEncodeError:
        raise ExpressionCompileError(
            "the expression is not valid Unicode (lone surrogate)", source=src
        ) from None
    if size > MAX_SOURCE_BYTES:
        raise ExpressionLimitError(
            f"the expression is {size} bytes long; at most {MAX_SOURCE_BYTES} are allowed",
            source=src[:200],
        )
    if not src.strip():
        raise ExpressionCompileError("the expression is empty", source=src)
    toks = _tokens(src)
    stack: list[bool] = []
    depth = 0
    for k, t in enumerate(toks):
        if t.text == "(":
            is_macro = (
                k >= 2
                and toks[k - 1].kind == "ident"
                and toks[k - 1].text in _MACROS
                and toks[k - 2].text == "."
            )
            stack.append(is_macro)
            if is_macro:
                depth += 1
                if depth > MAX_COMPREHENSION_NESTING:
                    raise ExpressionLimitError(
                        f"comprehensions (map, filter, exists, all, exists_one) are nested "
                        f"{depth} deep; at most {MAX_COMPREHENSION_NESTING} levels are allowed",
                        source=src,
                    )
        elif t.text == ")" and stack and stack.pop():
            depth -= 1


def _context_shape(data: Mapping[str, Any]) -> int:
    """Check the context is acyclic and shallow; return the size of its largest list or map."""
    largest = 0
    stack: list[tuple[object, int]] = [(v, 1) for v in data.values()]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list | tuple):
            children = value
        else:
            continue
        if depth > MAX_CONTEXT_DEPTH:
            raise ExpressionLimitError(
                f"the expression context is nested more than {MAX_CONTEXT_DEPTH} levels deep "
                "(or contains a cycle)"
            )
        largest = max(largest, len(value))
        stack.extend((c, depth + 1) for c in children)
    return largest


@functools.lru_cache(maxsize=4096)
def _builds_collections(src: str) -> bool:
    """Whether `src` uses `.map(` or `.filter(` (quadratic in cel-cpp, see MAX_COLLECTION_ITEMS)."""
    toks = _tokens(src)
    return any(
        t.text == "("
        and k >= 2
        and toks[k - 1].text in ("map", "filter")
        and toks[k - 2].text == "."
        for k, t in enumerate(toks)
    )


# --- error messages -------------------------------------------------------------------------

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


def _clean(message: str, labels: Mapping[str, str] | None = None) -> str:
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
        text = _MESSAGE_NAME.sub(lambda m: labels.get(m[0], m[0]), text)
    return text


def _compile_failure(
    message: str, src: str, labels: Mapping[str, str] | None = None
) -> ExpressionError:
    lowered = message.lower()
    limit = "recursion" in lowered or "codepoint limit" in lowered or "nesting" in lowered
    cls = ExpressionLimitError if limit else ExpressionCompileError
    return cls(_clean(message, labels), source=src)


# --- run time -------------------------------------------------------------------------------

_DYN_MAP = cel.Type.Map(cel.Type.STRING, cel.Type.DYN)
# cel-cpp Env thread safety is untested (expressions.md), so compiles are serialised; compiled
# programs are cached, so the lock is rarely contended.
_COMPILE_LOCK = threading.Lock()


@functools.cache
def _runtime_env() -> cel.Env:
    # No extensions: ext_bindings and ext_strings grow strings exponentially from short text.
    return cel.NewEnv(variables=dict.fromkeys(ROOTS, _DYN_MAP))


@functools.lru_cache(maxsize=4096)
def _program(src: str) -> cel.Expression:
    precheck(src)
    with _COMPILE_LOCK:
        try:
            return _runtime_env().compile(src)
        except MemoryError:
            raise ExpressionLimitError("out of memory while compiling", source=src) from None
        except (RuntimeError, ValueError, TypeError) as exc:
            raise _compile_failure(str(exc), src) from None


class _Scope:
    """One activation over a context, shared by the expressions of one step."""

    def __init__(self, context: Mapping[str, Any]) -> None:
        if not isinstance(context, Mapping):
            raise ExpressionEvalError("the expression context must be a mapping")
        self._data = {root: context.get(root) or {} for root in ROOTS}
        self._act: cel.Activation | None = None
        self._largest = 0

    def _activation(self) -> cel.Activation:
        if self._act is None:
            self._largest = _context_shape(self._data)
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
        if self._largest > MAX_COLLECTION_ITEMS and _builds_collections(src):
            raise ExpressionLimitError(
                f"map/filter may not run while the context holds a list or map of "
                f"{self._largest} items (at most {MAX_COLLECTION_ITEMS}: their cost is quadratic)",
                source=src,
            )
        try:
            value = program.eval(act)
        except MemoryError:
            raise ExpressionLimitError("the expression ran out of memory", source=src) from None
        except RuntimeError as exc:
            text = str(exc)
            cls = ExpressionLimitError if "budget" in text.lower() else ExpressionEvalError
            if cls is ExpressionLimitError:
                text = "the expression exceeded its iteration budget (10,000 comprehension steps)"
            raise cls(_clean(text), source=src) from None
        except (ValueError, TypeError) as exc:
            raise ExpressionEvalError(_clean(str(exc)), source=src) from None
        if value.type() == cel.Type.ERROR:
            raise ExpressionEvalError(_clean(str(value.value())), source=src)
        try:
            plain = value.plain_value()
        except MemoryError:
            raise ExpressionLimitError("the expression ran out of memory", source=src) from None
        except (RuntimeError, ValueError, TypeError) as exc:
            raise ExpressionEvalError(_clean(str(exc)), source=src) from None
        return _to_json(plain, src, [MAX_RESULT_BYTES])


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


# --- save time: environments typed from JSON Schemas -----------------------------------------

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS: Final = {
    "string": _F.TYPE_STRING,
    "integer": _F.TYPE_INT64,
    "number": _F.TYPE_DOUBLE,
    "boolean": _F.TYPE_BOOL,
}
_PACKAGE: Final = "stella.expr"
_STRUCT: Final = ".google.protobuf.Struct"
_VALUE: Final = ".google.protobuf.Value"
_LIST_VALUE: Final = ".google.protobuf.ListValue"
_MESSAGE_NAME = re.compile(r"stella\.expr\.M\d+")
_PROTO_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MAX_SCHEMA_DEPTH: Final = 24


def _camel(name: str, *, lower_first: bool) -> str:
    """protobuf's ToCamelCase (json names and map-entry type names are derived with it)."""
    out: list[str] = []
    upper = not lower_first
    for ch in name:
        if ch == "_":
            upper = True
        elif upper:
            out.append(ch.upper())
            upper = False
        else:
            out.append(ch)
    text = "".join(out)
    return text[:1].lower() + text[1:] if lower_first else text


@dataclass(frozen=True, slots=True)
class _FieldType:
    type: int
    type_name: str = ""
    repeated: bool = False
    map_value: _FieldType | None = None


_DYN_FIELD = _FieldType(_F.TYPE_MESSAGE, _VALUE)
_STRUCT_FIELD = _FieldType(_F.TYPE_MESSAGE, _STRUCT)
_LIST_FIELD = _FieldType(_F.TYPE_MESSAGE, _LIST_VALUE)


class _ProtoBuilder:
    """JSON Schema objects -> proto3 messages (CEL checks field names and types against them).

    Objects whose property names are not usable as CEL field names (`image-digest`, `in`) or
    that have no `properties` become `google.protobuf.Struct` (dynamic, read as
    `outputs["image-digest"]`); unions, nullables and untyped values become `Value` (dyn).
    """

    def __init__(self) -> None:
        self.fdp = descriptor_pb2.FileDescriptorProto(
            name="stella_expr.proto",
            package=_PACKAGE,
            syntax="proto3",
            dependency=["google/protobuf/struct.proto"],
        )
        self.labels: dict[str, str] = {}
        self._by_key: dict[str, str] = {}

    @staticmethod
    def _usable(names: list[str]) -> bool:
        if not all(_PROTO_IDENT.match(n) and n not in RESERVED_WORDS for n in names):
            return False
        json_names = {_camel(n, lower_first=True) for n in names}
        entry_names = {_camel(n, lower_first=False) for n in names}
        return len(json_names) == len(names) == len(entry_names)

    def message(self, schema: Mapping[str, Any], label: str, depth: int = 0) -> str | None:
        """The full name (".stella.expr.M3") of a message for `schema`, or None (use Struct)."""
        props = schema.get("properties")
        if not isinstance(props, Mapping) or depth > _MAX_SCHEMA_DEPTH:
            return None
        names = [str(n) for n in props]
        if not self._usable(names):
            return None
        key = json.dumps(schema, sort_keys=True, default=str)
        if key in self._by_key:
            return self._by_key[key]
        title = schema.get("title")
        label = title if isinstance(title, str) and title else label
        fields = [
            (name, self._field(props[name], f"{label}.{name}", depth + 1)) for name in sorted(names)
        ]
        msg_name = f"M{len(self.fdp.message_type) + 1}"
        full = f".{_PACKAGE}.{msg_name}"
        self._by_key[key] = full
        self.labels[full[1:]] = label
        msg = self.fdp.message_type.add(name=msg_name)
        for index, (name, ftype) in enumerate(fields):
            number = index + 1 if index + 1 < 19000 else index + 1001  # 19000-19999 are reserved
            field = msg.field.add(name=name, number=number, label=_F.LABEL_OPTIONAL)
            if ftype.map_value is not None:
                entry_name = _camel(name, lower_first=False) + "Entry"
                entry = msg.nested_type.add(name=entry_name)
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, label=_F.LABEL_OPTIONAL, type=_F.TYPE_STRING)
                value = entry.field.add(name="value", number=2, label=_F.LABEL_OPTIONAL)
                value.type = ftype.map_value.type
                if ftype.map_value.type_name:
                    value.type_name = ftype.map_value.type_name
                field.label = _F.LABEL_REPEATED
                field.type = _F.TYPE_MESSAGE
                field.type_name = f"{full}.{entry_name}"
                continue
            if ftype.repeated:
                field.label = _F.LABEL_REPEATED
            field.type = ftype.type
            if ftype.type_name:
                field.type_name = ftype.type_name
        return full

    def _field(self, schema: Any, label: str, depth: int) -> _FieldType:
        if not isinstance(schema, Mapping) or depth > _MAX_SCHEMA_DEPTH:
            return _DYN_FIELD
        declared = schema.get("type")
        if isinstance(declared, str):
            types = [declared]
        elif isinstance(declared, list):
            types = [t for t in declared if isinstance(t, str)]
        elif "properties" in schema or "additionalProperties" in schema:
            types = ["object"]
        elif "items" in schema:
            types = ["array"]
        else:
            types = []
        if len(types) != 1:  # unions and nullables are dynamic (so `x != null` still checks)
            return _DYN_FIELD
        kind = types[0]
        if kind in _SCALARS:
            return _FieldType(_SCALARS[kind])
        if kind == "array":
            items = self._field(schema.get("items", {}), f"{label}[]", depth + 1)
            if items.repeated:
                items = _LIST_FIELD
            elif items.map_value is not None:
                items = _STRUCT_FIELD
            return _FieldType(items.type, items.type_name, repeated=True)
        if kind == "object":
            full = self.message(schema, label, depth)
            if full is not None:
                return _FieldType(_F.TYPE_MESSAGE, full)
            extra = schema.get("additionalProperties")
            if "properties" not in schema and isinstance(extra, Mapping):
                value = self._field(extra, f"{label}[]", depth + 1)
                if value.repeated:
                    value = _LIST_FIELD
                elif value.map_value is not None:
                    value = _STRUCT_FIELD
                return _FieldType(_F.TYPE_MESSAGE, _STRUCT, map_value=value)
            return _STRUCT_FIELD
        return _DYN_FIELD


def _schema_types(schema: Mapping[str, Any] | None) -> set[str] | None:
    if not schema:
        return None
    declared = schema.get("type")
    if isinstance(declared, str):
        return {declared}
    if isinstance(declared, list):
        return {t for t in declared if isinstance(t, str)}
    return None


def _result_types(rtype: cel.Type, labels: Mapping[str, str]) -> tuple[set[str] | None, str]:
    """JSON types a CEL result type can produce (None = unknown/dyn) and a readable name."""
    name = rtype.name()
    simple = {
        "BOOL": ({"boolean"}, "a bool"),
        "INT": ({"integer"}, "an int"),
        "UINT": ({"integer"}, "a uint"),
        "DOUBLE": ({"number"}, "a double"),
        "STRING": ({"string"}, "a string"),
        "NULL": ({"null"}, "null"),
        "TIMESTAMP": ({"string"}, "a timestamp"),
        "DURATION": ({"string"}, "a duration"),
        "BYTES": (set(), "bytes (not a JSON value)"),
    }
    if name in simple:
        types, text = simple[name]
        return set(types), text
    if name.startswith("LIST"):
        return {"array"}, f"a list ({name.lower()})"
    if name.startswith("MAP"):
        return {"object"}, f"a map ({name.lower()})"
    if name.startswith("TYPE"):
        return set(), "a type (not a JSON value)"
    if rtype.is_message():
        return {"object"}, labels.get(name, name)
    return None, name.lower()


def _expected_text(types: set[str]) -> str:
    return " or ".join(sorted(types))


class TypedEnv:
    """A CEL environment typed from JSON Schemas, for checks when a template is saved."""

    def __init__(self, roots: Mapping[str, Mapping[str, Any]]) -> None:
        builder = _ProtoBuilder()
        names: dict[str, str | None] = {}
        for root, schema in roots.items():
            names[root] = builder.message(schema, root) if isinstance(schema, Mapping) else None
        self.labels = builder.labels
        pool = descriptor_pool.DescriptorPool()
        pool.AddSerializedFile(struct_pb2.DESCRIPTOR.serialized_pb)
        variables: dict[str, cel.Type] = {}
        try:
            pool.Add(builder.fdp)
            for root, full in names.items():
                variables[root] = cel.Type(full[1:]) if full else _DYN_MAP
            env = cel.NewEnv(pool, variables=variables)
        except (TypeError, ValueError, RuntimeError):
            # A schema the descriptor pool refuses: fall back to dynamic roots (checks degrade
            # to syntax and untyped operators; run time still catches the rest).
            env = cel.NewEnv(variables=dict.fromkeys(roots, _DYN_MAP))
        self._env = env
        self._cache: dict[tuple[str, str], list[str]] = {}

    def check(self, src: str, expected: Mapping[str, Any] | None = None) -> list[str]:
        """Problems with `src` (empty = fine); `expected` is a JSON Schema for the result."""
        if not isinstance(src, str):
            return [f"an expression must be a string, not {type(src).__name__}"]
        key = (src, json.dumps(expected, sort_keys=True, default=str) if expected else "")
        cached = self._cache.get(key)
        if cached is not None:
            return list(cached)
        problems = self._check(src, expected)
        if len(self._cache) > 20_000:
            self._cache.clear()
        self._cache[key] = problems
        return list(problems)

    def _check(self, src: str, expected: Mapping[str, Any] | None) -> list[str]:
        try:
            precheck(src)
        except ExpressionError as exc:
            return [exc.message]
        with _COMPILE_LOCK:
            try:
                program = self._env.compile(src)
            except MemoryError:
                return ["out of memory while compiling"]
            except (RuntimeError, ValueError, TypeError) as exc:
                return [_compile_failure(str(exc), src, self.labels).message]
            rtype = program.return_type()
        got, got_text = _result_types(rtype, self.labels)
        if got is not None and not got:
            return [f"the expression gives {got_text}"]
        want = _schema_types(expected)
        if want is None or got is None:
            return []
        if got & want or ("integer" in got and "number" in want):
            return []
        return [f"expected {_expected_text(want)}, but the expression gives {got_text}"]


@functools.lru_cache(maxsize=64)
def _typed_env_for(key: str) -> TypedEnv:
    return TypedEnv(json.loads(key))


def typed_env(roots: Mapping[str, Mapping[str, Any]]) -> TypedEnv:
    """A (cached) typed environment for `roots` ({"inputs": schema, "steps": schema, ...})."""
    return _typed_env_for(json.dumps(roots, sort_keys=True, default=str))


def typed_check(
    src: str,
    roots: Mapping[str, Mapping[str, Any]],
    *,
    expected: Mapping[str, Any] | None = None,
) -> list[str]:
    """Type-check `src` against JSON-Schema-typed roots; returns problems (empty = ok).

    `roots` is `{"inputs": schema, "steps": schema of {id: {"outputs": output_schema}},
    "release": RELEASE_SCHEMA, "environment": ENVIRONMENT_SCHEMA}`; `expected` is a JSON Schema
    the result must fit (`{"type": "boolean"}` for a condition).
    """
    return typed_env(roots).check(src, expected)
