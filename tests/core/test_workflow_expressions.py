"""Workflow expressions: the template contract (one `${{ }}` keeps its type, several interpolate),
conditions, save-time typing, and the escape attempts and limits of expressions.md sections 3-4:
every failure is a typed ExpressionError, and nothing hangs or crashes the process."""

from __future__ import annotations

import contextlib
import math
import subprocess
import sys
import textwrap
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stella_core.errors import DefinitionError
from stella_core.workflows.expressions import (
    ENVIRONMENT_SCHEMA,
    MAX_COLLECTION_ITEMS,
    MAX_INTERPOLATED_BYTES,
    RELEASE_SCHEMA,
    Expr,
    ExpressionCompileError,
    ExpressionError,
    ExpressionEvalError,
    ExpressionLimitError,
    coerce_numbers,
    condition_source,
    evaluate,
    evaluate_condition,
    is_expression,
    references,
    rename_step,
    rename_steps,
    resolve_inputs,
    resolve_value,
    split_template_string,
    typed_check,
)

DIGEST = "sha256:" + "ab" * 32
CTX = {
    "inputs": {"replicas": 3, "ratio": 0.5, "flags": ["a", "b"], "meta": {"team": "core"}},
    "release": {
        "name": "2026.11",
        "components": [
            {"name": "api", "repository": "acme/api", "tag": "1.4", "digest": DIGEST},
            {"name": "web", "repository": "acme/web", "tag": None, "digest": DIGEST},
        ],
    },
    "environment": {
        "name": "prod",
        "order": 3,
        "required_approvals": 2,
        "separation_of_duties": True,
    },
    "steps": {"build": {"outputs": {"digest": DIGEST, "exit_code": 0, "stdout": "ok\n"}}},
}

BUILD_OUTPUTS = {
    "type": "object",
    "title": "the outputs of step type 'build'",
    "properties": {
        "digest": {"type": "string"},
        "size": {"type": "integer"},
        "ratio": {"type": "number"},
        "meta": {"type": "object"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
ROOTS = {
    "inputs": {
        "type": "object",
        "properties": {"replicas": {"type": "integer"}, "ratio": {"type": "number"}},
    },
    "steps": {
        "type": "object",
        "properties": {
            "build": {"type": "object", "properties": {"outputs": BUILD_OUTPUTS}},
            "scan": {
                "type": "object",
                "properties": {
                    "outputs": {
                        "type": "object",
                        "properties": {"image-digest": {"type": "string"}},
                    }
                },
            },
        },
    },
    "release": RELEASE_SCHEMA,
    "environment": ENVIRONMENT_SCHEMA,
}


# --- the template contract ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("${{ inputs.replicas }}", 3),
        ("${{inputs.replicas + 1}}", 4),
        ("${{ inputs.flags }}", ["a", "b"]),
        ("${{ inputs.meta }}", {"team": "core"}),
        ("${{ environment.separation_of_duties }}", True),
        ("${{ release.components[1].tag }}", None),
        ("${{ inputs.ratio * 2.0 }}", 1.0),
        ("${{ steps.build.outputs.digest }}", DIGEST),
        ("${{ {'a': {'b': 1}} }}", {"a": {"b": 1}}),
        ("${{ '}}' }}", "}}"),
        ("${{ duration('90m') }}", "5400s"),
        ("${{ timestamp('2026-01-02T03:04:05Z') }}", "2026-01-02T03:04:05Z"),
    ],
)
def test_a_single_expression_keeps_its_type(value, expected) -> None:
    assert resolve_value(value, CTX) == expected


def test_several_parts_interpolate_into_a_string() -> None:
    value = (
        "n=${{ inputs.replicas }} ok=${{ environment.separation_of_duties }} "
        "flags=${{ inputs.flags }} meta=${{ inputs.meta }} r=${{ inputs.ratio }} "
        "two=${{ 2.0 }} none=${{ release.components[1].tag }} s=${{ release.name }}"
    )
    assert resolve_value(value, CTX) == (
        'n=3 ok=true flags=["a","b"] meta={"team":"core"} r=0.5 two=2 none=null s=2026.11'
    )
    assert resolve_value(" ${{ inputs.replicas }}", CTX) == " 3"  # surrounding text: a string


def test_literals_pass_through_and_structures_resolve_recursively() -> None:
    value = {
        "command": ["deploy", "--digest", "${{ steps.build.outputs.digest }}"],
        "count": 5,
        "nested": {"n": "${{ inputs.replicas }}", "flag": False, "none": None},
        "plain": "no expression here: {{ x }} $ {",
    }
    assert resolve_value(value, CTX) == {
        "command": ["deploy", "--digest", DIGEST],
        "count": 5,
        "nested": {"n": 3, "flag": False, "none": None},
        "plain": "no expression here: {{ x }} $ {",
    }


def test_resolve_inputs_names_the_input_that_failed() -> None:
    assert resolve_inputs({"n": "${{ inputs.replicas }}", "m": "x"}, CTX) == {"n": 3, "m": "x"}
    with pytest.raises(ExpressionEvalError, match=r"input 'url'.*nope"):
        resolve_inputs({"n": 1, "url": "${{ steps.build.outputs.nope }}"}, CTX)


def test_split_and_detect() -> None:
    assert split_template_string("a ${{ x }} b${{y}}") == ["a ", Expr("x"), " b", Expr("y")]
    assert split_template_string("plain") == ["plain"]
    assert is_expression("x ${{ y }}")
    assert not is_expression("{{ y }}")
    assert not is_expression(3)
    with pytest.raises(ExpressionCompileError, match="unterminated"):
        split_template_string("a ${{ x ")


def test_conditions() -> None:
    assert evaluate_condition("steps.build.outputs.exit_code == 0", CTX) is True
    assert evaluate_condition("${{ inputs.replicas > 5 }}", CTX) is False
    assert evaluate_condition("release.components.exists(c, c.name == 'web' && c.tag == null)", CTX)
    with pytest.raises(ExpressionEvalError, match=r"true or false.*integer 3"):
        evaluate_condition("inputs.replicas", CTX)
    with pytest.raises(ExpressionCompileError, match="single expression"):
        evaluate_condition("x ${{ true }}", CTX)
    assert condition_source("${{ a }}") == "a"


@pytest.mark.parametrize(
    ("src", "error", "message"),
    [
        ("1 +", ExpressionCompileError, "column 4"),
        ("nope", ExpressionCompileError, "unknown name 'nope'"),
        ("inputs.missing", ExpressionEvalError, "no such key"),
        ("steps.deploy.outputs.x", ExpressionEvalError, "no such key"),
        ("1 / 0", ExpressionEvalError, "divide by zero"),
        ("9223372036854775807 + 1", ExpressionEvalError, "overflow"),
        ("b'abc'", ExpressionEvalError, "bytes"),
        ("type(1)", ExpressionEvalError, "not a JSON value"),
        ("1.0 / 0.0", ExpressionEvalError, "not a JSON number"),
        ("   ", ExpressionCompileError, "empty"),
    ],
)
def test_failures_are_typed(src, error, message) -> None:
    with pytest.raises(error, match=message):
        evaluate(src, CTX)


def test_errors_are_definition_errors() -> None:
    for cls in (ExpressionCompileError, ExpressionEvalError, ExpressionLimitError):
        assert issubclass(cls, ExpressionError)
        assert issubclass(cls, DefinitionError)
        assert cls("x").exit_code == 2


# --- escapes (expressions.md section 4) -----------------------------------------------------


class Evil:
    def __getattr__(self, name: str) -> object:
        return lambda *a, **k: "escaped"


@pytest.mark.parametrize(
    "src",
    [
        "__class__",
        "().__class__",
        "inputs.__class__",
        '"a".__class__',
        'import("os")',
        "inputs.__dict__",
        "inputs.replicas.__class__.__bases__[0].__subclasses__()",
        '"a".replace("a", "b")',  # ext_strings is off
        "cel.bind(x, 1, x)",  # ext_bindings is off
        "optional.of(1)",
        "now()",
    ],
)
def test_escape_attempts_fail_closed(src) -> None:
    with pytest.raises(ExpressionError):
        evaluate(src, CTX)


@pytest.mark.parametrize("foreign", [Evil(), math, print, object(), {1, 2}, (1, 2), len, type])
def test_non_cel_values_in_the_context_are_refused(foreign) -> None:
    ctx = {"inputs": {"obj": foreign, "n": 1}}
    with pytest.raises(ExpressionEvalError):
        evaluate("inputs.obj", ctx)
    with pytest.raises(ExpressionEvalError):
        evaluate("inputs.obj.anything", ctx)


# --- limits (expressions.md section 3) ------------------------------------------------------


def _ten() -> str:
    return "[0,1,2,3,4,5,6,7,8,9]"


def test_source_size_is_capped() -> None:
    with pytest.raises(ExpressionLimitError, match="2048"):
        evaluate("'" + "a" * 3000 + "'", CTX)
    assert "at most 2048" in typed_check("1 + " * 600 + "1", ROOTS)[0]  # reported, not raised


def test_comprehension_nesting_is_capped_before_compiling() -> None:
    two = f"{_ten()}.map(a, {_ten()}.filter(b, b > a))"
    assert len(evaluate(two, CTX)) == 10
    three = f"{_ten()}.map(a, {_ten()}.map(b, {_ten()}.exists(c, c == a)))"
    with pytest.raises(ExpressionLimitError, match="nested 3 deep"):
        evaluate(three, CTX)
    # string literals and comments do not count; odd spacing does
    assert evaluate("'.map(a, .map(b, .map(c, 1)))'.size() > 0 // .map(", CTX) is True
    with pytest.raises(ExpressionLimitError):
        evaluate(f"{_ten()} . map (a, {_ten()}.all(b, {_ten()}.exists_one(c, true)))", CTX)


def test_iteration_budget_raises_a_limit_error_quickly() -> None:
    hundred = "[" + ",".join(str(i) for i in range(101)) + "]"
    start = time.perf_counter()
    with pytest.raises(ExpressionLimitError, match="budget"):
        evaluate(f"{hundred}.map(a, {hundred}.map(b, a + b))", CTX)
    assert time.perf_counter() - start < 5


def test_the_library_budget_is_still_ten_thousand_iterations() -> None:
    # A regression guard: the budget is a cel-cpp default that Python cannot set (0.1.3).
    xs = list(range(9_999))
    assert evaluate("inputs.xs.all(x, x >= 0)", {"inputs": {"xs": xs}}) is True
    with pytest.raises(ExpressionLimitError, match="budget"):
        evaluate("inputs.xs.all(x, x >= 0)", {"inputs": {"xs": [*xs, 1]}})


def test_quadratic_map_and_filter_are_refused_over_big_collections() -> None:
    # cel-cpp's map/filter cost grows with the square of the list (10,000 items: about 4 s).
    ok = {"inputs": {"xs": list(range(MAX_COLLECTION_ITEMS))}}
    assert len(evaluate("inputs.xs.map(x, x * 2)", ok)) == MAX_COLLECTION_ITEMS
    big = {"inputs": {"xs": list(range(9_000)), "d": {"a": 1}}}
    start = time.perf_counter()
    for src in (
        "inputs.xs.map(x, x)",
        "inputs.d.filter(k, true)",
        "size(inputs.xs.filter(x, x > 1))",
    ):
        with pytest.raises(ExpressionLimitError, match="quadratic"):
            evaluate(src, big)
    assert time.perf_counter() - start < 1
    assert evaluate("inputs.xs.exists(x, x == 8999)", big) is True  # linear: allowed
    assert evaluate("size(inputs.xs)", big) == 9_000


@pytest.mark.parametrize(
    "context", [[], None, {"inputs": [1]}, {"inputs": "text"}, {"inputs": {1: 2}}]
)
def test_malformed_contexts_are_eval_errors(context) -> None:
    with pytest.raises(ExpressionEvalError):
        evaluate("inputs.x", context)


@pytest.mark.parametrize("src", [None, 3, ["inputs.x"], {"a": 1}])
def test_non_string_sources_are_compile_errors(src) -> None:
    with pytest.raises(ExpressionCompileError):
        evaluate(src, CTX)
    with pytest.raises(ExpressionCompileError):
        evaluate_condition(src, CTX)
    assert typed_check(src, ROOTS)


def test_library_nesting_limit_is_a_limit_error() -> None:
    with pytest.raises(ExpressionLimitError):
        evaluate("(" * 40 + "1" + ")" * 40, CTX)
    with pytest.raises(ExpressionLimitError):
        evaluate("+".join(["1"] * 40), CTX)


def test_interpolation_output_is_capped() -> None:
    ctx = {"inputs": {"s": "x" * 40_000}}
    assert len(resolve_value("${{ inputs.s }}!", ctx)) == 40_001
    with pytest.raises(ExpressionLimitError, match=str(MAX_INTERPOLATED_BYTES)):
        resolve_value("${{ inputs.s }}${{ inputs.s }}", ctx)


def test_result_size_is_capped() -> None:
    ctx = {"inputs": {"s": "x" * 60_000}}
    src = "[" + ",".join(["inputs.s"] * 30) + "]"
    with pytest.raises(ExpressionLimitError, match="larger than"):
        evaluate(src, ctx)


def test_cyclic_or_deep_context_is_refused_instead_of_crashing() -> None:
    # cel-cpp segfaults on these (measured); the wrapper refuses them first.
    cyclic: dict[str, object] = {"a": 1}
    cyclic["self"] = cyclic
    with pytest.raises(ExpressionLimitError, match="nested"):
        evaluate("inputs.a", {"inputs": cyclic})
    deep: object = 1
    for _ in range(10_000):
        deep = [deep]
    with pytest.raises(ExpressionLimitError):
        evaluate("inputs.b", {"inputs": {"a": deep, "b": 2}})


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is enforced on Linux")
def test_memory_exhaustion_is_a_limit_error() -> None:
    # A 600-character, nesting-2 expression that allocates about 1 GB (expressions.md): under an
    # address-space limit the process survives and the caller gets a typed error.
    code = textwrap.dedent(
        """
        import resource
        from stella_core.workflows.expressions import ExpressionLimitError, evaluate
        evaluate("1 + 1", {})
        xs = "[" + ",".join(str(i) for i in range(100)) + "]"
        src = xs + ".map(a, " + xs + ".map(b, inputs.s + inputs.s))"
        limit = 768 * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        try:
            evaluate(src, {"inputs": {"s": "x" * 50000}})
        except ExpressionLimitError as exc:
            print("limit:", exc)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "limit: the expression ran out of memory" in proc.stdout


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is enforced on Linux")
def test_an_expression_building_gigabytes_fails_fast_and_the_callers_memory_stays_flat() -> None:
    # Within every static limit (about 600 characters, nesting 2, 9,800 iterations), unbounded
    # this builds 9,800 strings of 200 KB: about 2 GB. It runs in a process of its own under the
    # guard's address-space limit, so the caller (a fresh process here, so its peak RSS means
    # something) stays small and gets a typed error at once.
    code = textwrap.dedent(
        """
        import time
        from stella_core.workflows.expressions import ExpressionLimitError, evaluate
        evaluate("1 + 1", {})
        xs = "[" + ",".join(str(i) for i in range(100)) + "]"
        src = xs + ".map(a, " + xs + ".map(b, inputs.s + inputs.s))"
        started = time.monotonic()
        try:
            evaluate(src, {"inputs": {"s": "x" * 100_000}})
        except ExpressionLimitError as exc:
            print("limit:", exc.message)
        print("seconds:", time.monotonic() - started)
        # VmHWM, not ru_maxrss: that one keeps the peak of whatever process forked this one.
        status = open("/proc/self/status").read()
        print("peak-kib:", status.split("VmHWM:")[1].split()[0])
        # The helper is started afresh after running out of memory and works as before.
        print("after:", evaluate("[1, 2].map(x, x * inputs.k)", {"inputs": {"k": 3}}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    out = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    assert out["limit"] == "the expression ran out of memory (at most 512 MiB)"
    assert float(out["seconds"]) < 10
    assert int(out["peak-kib"]) < 200 * 1024
    assert out["after"] == "[3, 6]"


def test_root_references_decide_what_needs_the_guard() -> None:
    from stella_core.workflows.expressions.source import root_references

    assert root_references("inputs.a + steps.b.outputs.c") == 2
    assert root_references('"x" + string(1)') == 0
    assert root_references("inputs.xs.exists(x, x == 1)") is None
    assert root_references("inputs.map + 1") == 1  # a field named map is no comprehension


# --- save-time typing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "expected", "problem"),
    [
        ("steps.build.outputs.digets", None, "no field 'digets' in the outputs of step type"),
        ('inputs.replicas == "2"', None, "'==' for (int, string)"),
        ('"sha:" + steps.build.outputs.size', None, "'+' for (string, int)"),
        ('release.components.exists(c, c.nmae == "api")', None, "no field 'nmae'"),
        ("inputs.ratio > 1", None, "(double, int)"),  # number -> double: write 1.0
        ("environment.order", {"type": "string"}, "expected string"),
        ("steps.build.outputs.digest", {"type": "boolean"}, "expected boolean"),
        ("steps.build.outputs.size", {"type": ["boolean", "null"]}, "expected boolean or null"),
        ("b'x'", None, "bytes"),
        ("steps.deploy.outputs.x", None, "no field 'deploy' in steps"),
        ("1 +", None, "Syntax error"),
    ],
)
def test_typed_check_reports_problems(src, expected, problem) -> None:
    problems = typed_check(src, ROOTS, expected=expected)
    assert problems
    assert problem in problems[0]


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ("steps.build.outputs.digest", {"type": "string"}),
        ("steps.build.outputs.meta.anything.deeper", None),  # free-form object: dyn
        ("steps.build.outputs.labels.team + '-x'", {"type": "string"}),  # map<string, string>
        ('steps.scan.outputs["image-digest"]', None),  # not an identifier: Struct
        ("inputs.ratio > 1.0", {"type": "boolean"}),
        ("inputs.replicas", {"type": "number"}),  # an int is a number
        ("release.components[0].tag != null", {"type": "boolean"}),  # nullable: dyn
        ("release.components.map(c, c.digest)", {"type": "array"}),
        ("steps.build.outputs", {"type": "object"}),
        ("environment.separation_of_duties && environment.required_approvals > 1", None),
    ],
)
def test_typed_check_accepts(src, expected) -> None:
    assert typed_check(src, ROOTS, expected=expected) == []


def test_references_and_renames_are_lexical() -> None:
    src = 'steps.build.outputs.x + steps["scan"].outputs.y + "steps.fake" + inputs.n'
    refs = references(src)
    assert refs.steps == {"build", "scan"}
    assert refs.inputs == {"n"}
    assert not refs.any_step
    assert references("steps[inputs.which].outputs").any_step
    renamed = rename_step(
        "pre ${{ steps.build.x + 'steps.build' + steps.builder.y }}", "build", "b2"
    )
    assert renamed == "pre ${{ steps.b2.x + 'steps.build' + steps.builder.y }}"
    assert rename_step('steps["build"].x', "build", "b2", bare=True) == 'steps["b2"].x'
    # simultaneous: a -> b and b -> c do not chain
    assert rename_steps("${{ steps.a.x + steps.b.x }}", {"a": "b", "b": "c"}) == (
        "${{ steps.b.x + steps.c.x }}"
    )


def test_coerce_numbers_follows_the_schema() -> None:
    schema = {
        "type": "object",
        "properties": {"ratio": {"type": "number"}, "n": {"type": "integer"}},
        "additionalProperties": {"type": "array", "items": {"type": "number"}},
    }
    out = coerce_numbers({"ratio": 1, "n": 2, "xs": [1, 2.5], "flag": True}, schema)
    assert out == {"ratio": 1.0, "n": 2, "xs": [1.0, 2.5], "flag": True}
    assert isinstance(out["ratio"], float)
    assert isinstance(out["n"], int)
    assert evaluate("inputs.ratio + 1.0", {"inputs": out}) == 2.0


# --- property tests -------------------------------------------------------------------------

TOKENS = [
    "steps",
    "inputs",
    "release",
    "environment",
    ".",
    "build",
    "outputs",
    "digest",
    "[",
    "]",
    "(",
    ")",
    "{",
    "}",
    "'",
    '"',
    "'''",
    "r'",
    "b'",
    "\\",
    "+",
    "-",
    "*",
    "/",
    "%",
    "==",
    "!=",
    "<",
    ">",
    "&&",
    "||",
    "!",
    "?",
    ":",
    ",",
    "map",
    "filter",
    "exists",
    "all",
    "x",
    "1",
    "0",
    "1.5",
    "9223372036854775807",
    "true",
    "null",
    "size",
    "has",
    "in",
    " ",
    "\n",
    "//",
    "$",
    "${{",
    "}}",
    "dyn",
    "int",
    "string",
    "type",
    "__class__",
    "\x00",
    "é",
    "\ud800",
]
expression_text = st.one_of(
    st.text(max_size=80),
    st.lists(st.sampled_from(TOKENS), max_size=30).map("".join),
)
PROPS = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(expression_text)
def test_random_expressions_only_raise_expression_errors(src: str) -> None:
    for fn in (
        lambda: evaluate(src, CTX),
        lambda: resolve_value(src, CTX),
        lambda: resolve_value("${{ " + src + " }}", CTX),
        lambda: evaluate_condition(src, CTX),
    ):
        with contextlib.suppress(ExpressionError):
            fn()
    problems = typed_check(src, ROOTS)
    assert all(isinstance(p, str) and p for p in problems)


@PROPS
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
        lambda kids: (
            st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=5), kids, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_random_context_values_only_raise_expression_errors(value: object) -> None:
    for src in ("inputs.v", "inputs.v == 1", "size(inputs.v) > 0", "'x' + inputs.v"):
        with contextlib.suppress(ExpressionError):
            evaluate(src, {"inputs": {"v": value}})
