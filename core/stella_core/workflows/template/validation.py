"""Validating a loaded template beyond its schema: the graph, step types and their inputs, and
expressions typed against the step output schemas. Every problem names the node and field."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

from jsonschema import Draft202012Validator

from stella_core.workflows.expressions import (
    ENVIRONMENT_SCHEMA,
    RELEASE_SCHEMA,
    RESERVED_WORDS,
    Expr,
    ExpressionError,
    TypedEnv,
    condition_source,
    is_expression,
    references,
    split_template_string,
    typed_env,
)
from stella_core.workflows.model import (
    Node,
    OnFailure,
    Problem,
    Template,
)
from stella_core.workflows.steps.registry import StepRegistry, default_registry
from stella_core.workflows.steps.spec import StepTypeSpec
from stella_core.workflows.template.graph import Graph, _cycle_message
from stella_core.workflows.template.load import load_document
from stella_core.workflows.template.problems import (
    TemplateError,
    _dotted,
    _short,
)

# --- validation -----------------------------------------------------------------------------

_STEP_TITLE = "a '{}' step"
_OUTPUTS_TITLE = "the outputs of step type '{}'"
_INPUT_TYPES: Final = {
    "string": {"type": "string"},
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "object": {"type": "object"},
    "array": {"type": "array"},
}


def _contains_expression(value: Any) -> bool:
    if isinstance(value, str):
        return is_expression(value)
    if isinstance(value, dict):
        return any(_contains_expression(v) for v in value.values())
    if isinstance(value, list):
        return any(_contains_expression(v) for v in value)
    return False


def _expression_leaves(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str, str]]:
    """(relative path, string) for every string with an expression inside a nested value."""
    if isinstance(value, str):
        if is_expression(value):
            yield _dotted(path), value
    elif isinstance(value, dict):
        for key, sub in value.items():
            yield from _expression_leaves(sub, (*path, key))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from _expression_leaves(sub, (*path, i))


def _types_of(schema: Mapping[str, Any] | None) -> set[str] | None:
    if not schema:
        return None
    declared = schema.get("type")
    if isinstance(declared, str):
        return {declared}
    if isinstance(declared, list):
        return {t for t in declared if isinstance(t, str)}
    return None


class _Validation:
    """One validation pass over a template; collects every problem."""

    def __init__(self, template: Template, registry: StepRegistry) -> None:
        self.t = template
        self.registry = registry
        self.problems: list[Problem] = []
        self.graph = Graph(template)
        self._bits: dict[str, int] | None = None
        self._env: TypedEnv | None = None
        self._validators: dict[str, Draft202012Validator] = {}
        self._main_ids = {n.id for n in template.nodes if not n.rollback}

    def add(self, node: str | None, field: str | None, message: str) -> None:
        self.problems.append(Problem(node=node, field=field, message=_short(message)))

    def run(self) -> list[Problem]:
        self.template_inputs()
        self.node_ids()
        self.edges()
        self.cycles()
        for node in self.t.nodes:
            self.node(node)
        self.connectivity()
        self.layout()
        return list(dict.fromkeys(self.problems))

    # template level

    def template_inputs(self) -> None:
        for name, spec in self.t.inputs.items():
            if spec.default is None:
                continue
            schema = _INPUT_TYPES[spec.type]
            for err in self._validator(schema).iter_errors(spec.default):
                self.add(
                    None, f"inputs.{name}.default", f"the default is not {spec.type}: {err.message}"
                )

    def node_ids(self) -> None:
        first: dict[str, int] = {}
        for i, node in enumerate(self.t.nodes):
            if node.id in first:
                self.add(
                    node.id,
                    "id",
                    f"duplicate node id '{node.id}' (nodes[{first[node.id]}] and nodes[{i}])",
                )
            else:
                first[node.id] = i
            if node.id in RESERVED_WORDS:
                self.add(
                    node.id,
                    "id",
                    f"'{node.id}' is a reserved word in expressions (steps.{node.id} would not "
                    "parse); choose another id",
                )
        if not self._main_ids:
            self.add(None, "nodes", "the template has no steps to run")

    def edges(self) -> None:
        seen: set[tuple[str, str]] = set()
        nodes = self.graph.nodes
        for i, edge in enumerate(self.t.edges):
            arrow = f"{edge.source} → {edge.target}"
            known = True
            for end, nid in (("from", edge.source), ("to", edge.target)):
                if nid not in nodes:
                    known = False
                    self.add(None, f"edges[{i}].{end}", f"edge {arrow}: there is no node '{nid}'")
            if not known:
                continue
            if edge.source == edge.target:
                self.add(
                    edge.source, f"edges[{i}]", f"edge from '{edge.source}' to itself (a cycle)"
                )
                continue
            if (edge.source, edge.target) in seen:
                self.add(None, f"edges[{i}]", f"duplicate edge {arrow}")
                continue
            seen.add((edge.source, edge.target))
            if nodes[edge.source].rollback != nodes[edge.target].rollback:
                main, rollback = (
                    (edge.target, edge.source)
                    if nodes[edge.source].rollback
                    else (edge.source, edge.target)
                )
                self.add(
                    None,
                    f"edges[{i}]",
                    f"edge {arrow} joins main node '{main}' and rollback node '{rollback}'; "
                    "the rollback path is separate",
                )

    def cycles(self) -> None:
        _, rest = self.graph.topological()
        for component in self.graph.components(rest):
            if len(component) > 1:
                cycle = self.graph.find_cycle(component)
                self.add(cycle[0], "edges", _cycle_message(cycle))

    def connectivity(self) -> None:
        for rollback in (False, True):
            ids = [n for n, node in self.graph.nodes.items() if node.rollback == rollback]
            if len(ids) < 2:
                continue
            path = "rollback path" if rollback else "template"
            for nid in ids:
                if not self.graph.preds[nid] and not self.graph.succs[nid]:
                    self.add(
                        nid,
                        None,
                        f"unreachable: no edge leads to or from this node, so it is not part of "
                        f"the {path}'s flow",
                    )

    def layout(self) -> None:
        for nid in self.t.layout.positions:
            if nid not in self.graph.nodes:
                self.add(
                    None, f"layout.positions.{nid}", f"a position for '{nid}', which is not a node"
                )

    # nodes

    def node(self, node: Node) -> None:
        spec = self.registry.get(node.type)
        if spec is None:
            known = ", ".join(sorted(self.registry.names()))
            self.add(node.id, "type", f"unknown step type '{node.type}' (known: {known})")
            for key, value in node.inputs.items():  # expressions can still be checked
                if _contains_expression(value):
                    self.input_expressions(node, f"inputs.{key}", key, value, None)
        else:
            self.inputs(node, spec)
        if node.on_failure is OnFailure.ROLLBACK:
            if node.rollback:
                self.add(node.id, "on_failure", "a rollback node cannot start a rollback")
            elif len(self._main_ids) == len(self.graph.nodes):
                self.add(
                    node.id,
                    "on_failure",
                    "on_failure is rollback, but the template has no rollback nodes",
                )
        if node.condition is not None:
            try:
                src = condition_source(node.condition)
            except ExpressionError as exc:
                self.add(node.id, "condition", exc.message)
            else:
                self.expression(node, "condition", src, {"type": "boolean"})

    def inputs(self, node: Node, spec: StepTypeSpec) -> None:
        schema = spec.input_schema
        props = schema.get("properties")
        props = props if isinstance(props, Mapping) else {}
        extra = schema.get("additionalProperties")
        for name in spec.required_inputs:
            if name not in node.inputs:
                self.add(
                    node.id,
                    f"inputs.{name}",
                    f"required input '{name}' of step type '{spec.name}' is missing",
                )
        for key, value in node.inputs.items():
            field = f"inputs.{key}"
            sub = props.get(key)
            if sub is None:
                if extra is False:
                    names = ", ".join(props) or "none"
                    self.add(
                        node.id,
                        field,
                        f"step type '{spec.name}' has no input '{key}' (inputs: {names})",
                    )
                    continue
                sub = extra if isinstance(extra, Mapping) else None
            if _contains_expression(value):
                self.input_expressions(node, field, key, value, sub)
            elif sub is not None:
                for err in self._validator(sub).iter_errors(value):
                    where = _dotted([key, *err.absolute_path])
                    self.add(node.id, f"inputs.{where}", err.message)

    def input_expressions(
        self, node: Node, field: str, key: str, value: Any, schema: Mapping[str, Any] | None
    ) -> None:
        if not isinstance(value, str):
            # Expressions nested in a literal structure: each is checked on its own; the
            # structure around them is checked at run time.
            for rel, text in _expression_leaves(value):
                self.template_string(
                    node, f"{field}{'' if rel.startswith('[') else '.'}{rel}", key, text, None
                )
            return
        self.template_string(node, field, key, value, schema)

    def template_string(
        self, node: Node, field: str, key: str, text: str, schema: Mapping[str, Any] | None
    ) -> None:
        try:
            parts = split_template_string(text)
        except ExpressionError as exc:
            self.add(node.id, field, exc.message)
            return
        if len(parts) == 1 and isinstance(parts[0], Expr):
            self.expression(node, field, parts[0].src, schema)
            return
        types = _types_of(schema)
        if types is not None and "string" not in types:
            self.add(
                node.id,
                field,
                f"text with ${{{{ }}}} parts makes a string, but input '{key}' must be "
                f"{' or '.join(sorted(types))}; use exactly one ${{{{ EXPR }}}}",
            )
        for part in parts:
            if isinstance(part, Expr):
                self.expression(node, field, part.src, None)

    def expression(
        self, node: Node, field: str, src: str, expected: Mapping[str, Any] | None
    ) -> None:
        shown = _short(" ".join(src.split()), 80)
        refs = references(src)
        before = len(self.problems)
        allowed: int | None = None
        for ref in sorted(refs.steps):
            if ref == node.id:
                self.add(node.id, field, f"steps.{ref}: a node cannot read its own outputs")
            elif ref not in self.graph.nodes:
                self.add(node.id, field, f"steps.{ref}: there is no node '{ref}'")
            else:
                if allowed is None:
                    allowed = self._allowed(node)
                if not allowed >> self.graph.index[ref] & 1:
                    self.add(
                        node.id,
                        field,
                        f"steps.{ref}: '{ref}' does not run before '{node.id}' (add a path of "
                        f"edges from '{ref}' to '{node.id}')",
                    )
        for name in sorted(refs.inputs):
            if name not in self.t.inputs:
                declared = ", ".join(self.t.inputs) or "none"
                self.add(
                    node.id,
                    field,
                    f"inputs.{name} is not an input of this template (inputs: {declared})",
                )
        if len(self.problems) > before:
            return  # fix the references first; typed errors about them would repeat them
        for message in self._typed().check(src, expected):
            self.add(node.id, field, f"`{shown}`: {message}")

    def _allowed(self, node: Node) -> int:
        """Bitset of the nodes whose outputs `node` may read: its ancestors, and for a rollback
        node also every main node (the rollback path runs with the failed run's outputs)."""
        if self._bits is None:
            self._bits = self.graph.ancestor_bits()
        bits = self._bits.get(node.id, 0)
        if node.rollback:
            for nid in self._main_ids:
                bits |= 1 << self.graph.index[nid]
        return bits

    def _typed(self) -> TypedEnv:
        if self._env is None:
            steps: dict[str, Any] = {}
            for nid, node in self.graph.nodes.items():
                if nid in RESERVED_WORDS:
                    continue  # reported on the node; keeping it would make `steps` untyped
                spec = self.registry.get(node.type)
                outputs = (
                    {**spec.output_schema, "title": _OUTPUTS_TITLE.format(spec.name)}
                    if spec is not None
                    else {"type": "object"}
                )
                steps[nid] = {
                    "type": "object",
                    "title": _STEP_TITLE.format(node.type),
                    "properties": {"outputs": outputs},
                }
            inputs = {
                "type": "object",
                "title": "the template inputs",
                "properties": {name: _INPUT_TYPES[s.type] for name, s in self.t.inputs.items()},
            }
            self._env = typed_env(
                {
                    "inputs": inputs,
                    "steps": {"type": "object", "title": "steps", "properties": steps},
                    "release": RELEASE_SCHEMA,
                    "environment": ENVIRONMENT_SCHEMA,
                }
            )
        return self._env

    def _validator(self, schema: Mapping[str, Any]) -> Draft202012Validator:
        key = json.dumps(schema, sort_keys=True, default=str)
        validator = self._validators.get(key)
        if validator is None:
            validator = self._validators[key] = Draft202012Validator(schema)
        return validator


def validate(template: Template, registry: StepRegistry) -> list[Problem]:
    """Every problem of a loaded template (empty when it can be saved and run)."""
    return _Validation(template, registry).run()


def check(
    raw: str | bytes | bytearray | Mapping[str, Any], registry: StepRegistry | None = None
) -> tuple[Template | None, list[Problem]]:
    """Load and validate: (template or None if it did not load, problems). What
    `stella workflow validate FILE` reports."""
    try:
        template = load_document(raw)
    except TemplateError as exc:
        return None, list(exc.problems)
    return template, validate(template, registry if registry is not None else default_registry())


def validation_report(problems: Sequence[Problem]) -> dict[str, Any]:
    """`{"valid": bool, "errors": [{"node", "field", "message"}]}` (the CLI's JSON output)."""
    return {"valid": not problems, "errors": [p.model_dump(mode="json") for p in problems]}
