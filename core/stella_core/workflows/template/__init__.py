"""Loading, validating, comparing and walking workflow templates. Pure: no I/O beyond reading the
shipped JSON Schema.

Loading is parse -> migrate older schema versions -> validate against the JSON Schema -> build the
pydantic `Template` (`load`). `validate` then checks what a schema cannot: the graph (cycles,
unknown nodes, the rollback path: `graph`), step types and their inputs, and expressions (typed
against the step output schemas: `validation`). Every problem names the node and field, and all of
them are reported at once. `identity` gives a template's digest and the diff of two versions.
"""

from __future__ import annotations

from stella_core.workflows.template.graph import (
    Graph,
    ancestors,
    dependants,
    dependencies,
    descendants,
    main_nodes,
    rollback_nodes,
    topological_order,
)
from stella_core.workflows.template.identity import (
    FieldChange,
    NodeChange,
    TemplateDiff,
    canonical_json,
    diff,
    digest,
)
from stella_core.workflows.template.load import (
    MAX_DOCUMENT_DEPTH,
    MAX_TEMPLATE_BYTES,
    MIGRATIONS,
    json_value_problems,
    load_document,
    migrate,
    schema_problems,
)
from stella_core.workflows.template.problems import CycleError, TemplateError
from stella_core.workflows.template.validation import check, validate, validation_report

__all__ = [
    "MAX_DOCUMENT_DEPTH",
    "MAX_TEMPLATE_BYTES",
    "MIGRATIONS",
    "CycleError",
    "FieldChange",
    "Graph",
    "NodeChange",
    "TemplateDiff",
    "TemplateError",
    "ancestors",
    "canonical_json",
    "check",
    "dependants",
    "dependencies",
    "descendants",
    "diff",
    "digest",
    "json_value_problems",
    "load_document",
    "main_nodes",
    "migrate",
    "rollback_nodes",
    "schema_problems",
    "topological_order",
    "validate",
    "validation_report",
]
