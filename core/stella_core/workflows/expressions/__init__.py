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

The package: `source` (text, limits, references; no CEL library), `runtime` (evaluation),
`guard` (a child process that bounds memory while evaluating), `typed` (save-time checks),
`messages` and `errors`. Import from here.
"""

from __future__ import annotations

from stella_core.workflows.expressions.errors import (
    ExpressionCompileError,
    ExpressionError,
    ExpressionEvalError,
    ExpressionLimitError,
)
from stella_core.workflows.expressions.runtime import (
    coerce_numbers,
    evaluate,
    evaluate_condition,
    resolve_inputs,
    resolve_value,
)
from stella_core.workflows.expressions.source import (
    EXPR_RE,
    MAX_COLLECTION_ITEMS,
    MAX_COMPREHENSION_NESTING,
    MAX_CONTEXT_DEPTH,
    MAX_INTERPOLATED_BYTES,
    MAX_RESULT_BYTES,
    MAX_SOURCE_BYTES,
    RESERVED_WORDS,
    ROOTS,
    Expr,
    References,
    condition_source,
    is_expression,
    precheck,
    references,
    rename_step,
    rename_steps,
    split_template_string,
)
from stella_core.workflows.expressions.typed import (
    ENVIRONMENT_SCHEMA,
    RELEASE_SCHEMA,
    TypedEnv,
    typed_check,
    typed_env,
)

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
