"""Expressions as text: the limits on their source, `${{ }}` template strings, tokens, the
references an expression makes and renaming a step inside it. No CEL library here."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from stella_core.workflows.expressions.errors import ExpressionCompileError, ExpressionLimitError

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


@functools.lru_cache(maxsize=4096)
def builds_collections(src: str) -> bool:
    """Whether `src` uses `.map(` or `.filter(` (quadratic in cel-cpp, see MAX_COLLECTION_ITEMS)."""
    toks = _tokens(src)
    return any(
        t.text == "("
        and k >= 2
        and toks[k - 1].text in ("map", "filter")
        and toks[k - 2].text == "."
        for k, t in enumerate(toks)
    )


@functools.lru_cache(maxsize=4096)
def root_references(src: str) -> int | None:
    """How many times `src` names a root (`inputs`, `steps`, ...), which bounds how many copies
    of its context it can make; None when it has a comprehension, whose body runs up to the
    iteration budget (10,000 times) and so can build far more than its text suggests."""
    toks = _tokens(src)
    count = 0
    for k, t in enumerate(toks):
        if t.kind != "ident":
            continue
        after_dot = k >= 1 and toks[k - 1].text == "."
        if t.text in _MACROS and after_dot and k + 1 < len(toks) and toks[k + 1].text == "(":
            return None
        if t.text in ROOTS and not after_dot:
            count += 1
    return count
