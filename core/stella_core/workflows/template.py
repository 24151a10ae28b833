"""Loading, validating, comparing and walking workflow templates. Pure: no I/O beyond reading the
shipped JSON Schema.

Loading is parse -> migrate older schema versions -> validate against the JSON Schema -> build the
pydantic `Template`. `validate` then checks what a schema cannot: the graph (cycles, unknown
nodes, the rollback path), step types and their inputs, and expressions (typed against the step
output schemas). Every problem names the node and field, and all of them are reported at once.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import cache
from typing import Any, Final

import rfc8785
from jsonschema import Draft202012Validator
from jsonschema import ValidationError as SchemaValidationError
from pydantic import ValidationError

from stella_core.errors import DefinitionError, NotFoundError
from stella_core.limits import MAX_SAFE_INTEGER, json_integer, text_problem
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
    SCHEMA_VERSION,
    Node,
    OnFailure,
    Problem,
    Strict,
    Template,
)
from stella_core.workflows.schema import template_schema
from stella_core.workflows.steps.registry import StepRegistry, default_registry
from stella_core.workflows.steps.spec import StepTypeSpec

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

MAX_TEMPLATE_BYTES: Final = 2 * 1024 * 1024
MAX_DOCUMENT_DEPTH: Final = 64
_MAX_MESSAGE = 240


class TemplateError(DefinitionError):
    """A template document cannot be loaded; `problems` says where and why."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems: list[Problem] = list(problems) or [
            Problem(node=None, field=None, message=message)
        ]


class CycleError(DefinitionError):
    """An edge (or a document) would make the graph cyclic; `cycle` lists the nodes in order."""

    def __init__(self, message: str, cycle: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.cycle: list[str] = list(cycle)


def _short(text: str, limit: int = _MAX_MESSAGE) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _summary(problems: Sequence[Problem]) -> str:
    first = problems[0]
    where = ".".join(p for p in (first.node, first.field) if p)
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"invalid template: {where + ': ' if where else ''}{first.message}{more}"


def _dotted(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


# --- parsing --------------------------------------------------------------------------------


class _JsonProblem(Exception):
    """Raised from json hooks; turned into a TemplateError."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _JsonProblem(f"duplicate key '{_short(key, 60)}' in an object")
        out[key] = value
    return out


def _constant(name: str) -> Any:
    raise _JsonProblem(f"{name} is not a JSON number")


def json_value_problems(value: Any, path: Sequence[str | int] = ()) -> list[str]:
    """Why `value` is not a plain, portable JSON value (empty when it is): only dict (str keys),
    list, str, int within 2**53, finite float, bool and None; at most MAX_DOCUMENT_DEPTH deep."""
    problems: list[str] = []
    stack: list[tuple[Any, tuple[str | int, ...], int]] = [(value, tuple(path), 0)]
    while stack and len(problems) < 20:
        item, where, depth = stack.pop()
        at = f" at {_short(_dotted(where), 80)}" if where else ""
        if isinstance(item, dict):
            if depth >= MAX_DOCUMENT_DEPTH:
                problems.append(f"nested more than {MAX_DOCUMENT_DEPTH} levels deep{at}")
                continue
            for key, sub in item.items():
                if not isinstance(key, str):
                    problems.append(f"object key {key!r} is not a string{at}")
                elif (problem := text_problem(key)) is not None:
                    problems.append(f"an object key{at} {problem}")
                else:
                    stack.append((sub, (*where, key), depth + 1))
        elif isinstance(item, list):
            if depth >= MAX_DOCUMENT_DEPTH:
                problems.append(f"nested more than {MAX_DOCUMENT_DEPTH} levels deep{at}")
                continue
            stack.extend((sub, (*where, i), depth + 1) for i, sub in enumerate(item))
        elif isinstance(item, str):
            # What PostgreSQL stores: validate must refuse what import would fail to store.
            if (problem := text_problem(item)) is not None:
                problems.append(f"the text{at} {problem}")
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if abs(item) > MAX_SAFE_INTEGER:
                problems.append(f"the integer {item} is beyond 2**53 - 1{at}")
        elif isinstance(item, float):
            if not math.isfinite(item):
                problems.append(f"{item} is not a JSON number{at}")
        else:
            problems.append(f"a {type(item).__name__} is not a JSON value{at}")
    return problems


def _parse(raw: str | bytes | bytearray | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(raw, Mapping):
        doc: Any = raw
    else:
        if isinstance(raw, bytes | bytearray):
            if len(raw) > MAX_TEMPLATE_BYTES:
                raise TemplateError(
                    f"the document is {len(raw)} bytes; at most {MAX_TEMPLATE_BYTES} are allowed"
                )
            try:
                text = bytes(raw).decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise TemplateError(
                    f"the document is not UTF-8 (bad byte at offset {exc.start})"
                ) from None
        elif isinstance(raw, str):
            text = raw.removeprefix("\ufeff")
        else:
            raise TemplateError(f"a template is JSON text or an object, not {type(raw).__name__}")
        if len(text) > MAX_TEMPLATE_BYTES // 4:
            size = len(text.encode("utf-8", "surrogatepass"))
            if size > MAX_TEMPLATE_BYTES:
                raise TemplateError(
                    f"the document is {size} bytes; at most {MAX_TEMPLATE_BYTES} are allowed"
                )
        try:
            doc = json.loads(
                text, object_pairs_hook=_pairs, parse_constant=_constant, parse_int=json_integer
            )
        except json.JSONDecodeError as exc:
            raise TemplateError(
                f"not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from None
        except (_JsonProblem, ValueError) as exc:  # ValueError: json_integer's refusal
            raise TemplateError(f"not valid JSON: {exc}") from None
        except RecursionError:
            raise TemplateError(f"nested more than {MAX_DOCUMENT_DEPTH} levels deep") from None
    if not isinstance(doc, Mapping):
        raise TemplateError(f"a template is a JSON object, not {_json_kind(doc)}")
    problems = json_value_problems(dict(doc))
    if problems:
        raise TemplateError(
            "the document is not plain JSON: " + problems[0],
            [Problem(node=None, field=None, message=p) for p in problems],
        )
    # A deep copy through JSON: migrations may edit it, and the caller's dict stays untouched.
    copied = json.loads(json.dumps(doc, ensure_ascii=False))
    if isinstance(raw, Mapping):
        size = len(json.dumps(copied, ensure_ascii=False).encode("utf-8"))
        if size > MAX_TEMPLATE_BYTES:
            raise TemplateError(
                f"the document is {size} bytes; at most {MAX_TEMPLATE_BYTES} are allowed"
            )
    result: dict[str, Any] = copied
    return result


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, Mapping) else type(value).__name__


# --- migrations -----------------------------------------------------------------------------


def _node_id(node: Any, index: int) -> str | None:
    nid = node.get("id") if isinstance(node, dict) else None
    return nid if isinstance(nid, str) else None


def _v0_to_v1(doc: dict[str, Any]) -> dict[str, Any]:
    """schema_version 0 declared dependencies on the node (`depends_on: [ids]`) and retries as a
    count (`retries: 2` = three attempts); version 1 has top-level `edges` and a `retry` block."""
    problems: list[Problem] = []
    if "edges" in doc:
        problems.append(
            Problem(
                node=None,
                field="edges",
                message="schema_version 0 declares dependencies with nodes[].depends_on, not edges",
            )
        )
    edges: list[dict[str, str]] = []
    nodes = doc.get("nodes")
    if isinstance(nodes, list):
        migrated = []
        for index, raw_node in enumerate(nodes):
            if not isinstance(raw_node, dict):
                migrated.append(raw_node)
                continue
            node = dict(raw_node)
            nid = _node_id(node, index)
            where = nid or f"nodes[{index}]"
            deps = node.pop("depends_on", None)
            if deps is not None:
                if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
                    problems.append(
                        Problem(node=nid, field="depends_on", message="must be a list of node ids")
                    )
                elif nid is None:
                    problems.append(
                        Problem(
                            node=None,
                            field=f"{where}.id",
                            message="a node with depends_on needs an id",
                        )
                    )
                else:
                    edges.extend({"from": dep, "to": nid} for dep in deps)
            retries = node.pop("retries", None)
            if retries is not None:
                if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
                    problems.append(
                        Problem(
                            node=nid,
                            field="retries",
                            message="must be a whole number of retries (0 or more)",
                        )
                    )
                elif "retry" in node:
                    problems.append(
                        Problem(
                            node=nid, field="retries", message="give retries or retry, not both"
                        )
                    )
                else:
                    node["retry"] = {"max_attempts": retries + 1}
            migrated.append(node)
        doc["nodes"] = migrated
    if problems:
        raise TemplateError(_summary(problems), problems)
    doc["edges"] = edges
    doc["schema_version"] = 1
    return doc


MIGRATIONS: Final[Mapping[int, Callable[[dict[str, Any]], dict[str, Any]]]] = {0: _v0_to_v1}
"""schema_version N -> a function that returns the document at version N + 1."""


def migrate(doc: dict[str, Any]) -> dict[str, Any]:
    """Bring a parsed document to the current schema_version (a missing version means current)."""
    version = doc.get("schema_version", SCHEMA_VERSION)
    if isinstance(version, bool) or not isinstance(version, int):
        raise TemplateError(
            "schema_version must be an integer",
            [Problem(node=None, field="schema_version", message="must be an integer")],
        )
    if version > SCHEMA_VERSION:
        message = (
            f"schema_version {version} is newer than this Stella understands "
            f"({SCHEMA_VERSION}); upgrade Stella to load it"
        )
        raise TemplateError(message, [Problem(node=None, field="schema_version", message=message)])
    while version < SCHEMA_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            message = f"schema_version {version} is not a known template version"
            raise TemplateError(
                message, [Problem(node=None, field="schema_version", message=message)]
            )
        doc = step(doc)
        version = doc["schema_version"]
    return doc


# --- JSON Schema ----------------------------------------------------------------------------


@cache
def _template_validator() -> Draft202012Validator:
    schema = template_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


_FRIENDLY = {
    ("id", "pattern"): "node ids are 1-63 lowercase letters, digits and _, starting with a letter",
    ("name", "pattern"): "template names are 1-63 lowercase letters, digits, '.', '_' and '-', "
    "starting with a letter or digit",
}


def _locate(path: Sequence[str | int], doc: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(node id, field) for a JSON path: inside nodes[i] the field is relative to the node."""
    if len(path) >= 2 and path[0] == "nodes" and isinstance(path[1], int):
        nodes = doc.get("nodes")
        node = nodes[path[1]] if isinstance(nodes, list) and path[1] < len(nodes) else None
        nid = _node_id(node, path[1])
        if nid is not None:
            return nid, _dotted(path[2:]) or None
    return None, _dotted(path) or None


def _schema_error_problems(err: SchemaValidationError, doc: Mapping[str, Any]) -> list[Problem]:
    path = list(err.absolute_path)
    instance = err.instance
    if err.validator == "required" and isinstance(instance, dict):
        missing = [p for p in err.validator_value if p not in instance]
        out = []
        for name in missing:
            node, field = _locate([*path, name], doc)
            out.append(Problem(node=node, field=field, message=f"'{name}' is required"))
        return out
    if err.validator == "additionalProperties" and isinstance(instance, dict):
        known = err.schema.get("properties", {}) if isinstance(err.schema, dict) else {}
        out = []
        for key in instance:
            if key not in known:
                node, field = _locate([*path, key], doc)
                out.append(Problem(node=node, field=field, message="unknown field"))
        return out
    node, field = _locate(path, doc)
    last = path[-1] if path else None
    message = _FRIENDLY.get((str(last), str(err.validator))) or err.message
    return [Problem(node=node, field=field, message=_short(message))]


def schema_problems(doc: Mapping[str, Any]) -> list[Problem]:
    """Problems of a (migrated) document against template-v1.schema.json."""
    errors = sorted(
        _template_validator().iter_errors(doc),
        key=lambda e: [str(p) for p in e.absolute_path],
    )
    problems: list[Problem] = []
    for err in errors:
        problems.extend(_schema_error_problems(err, doc))
    return list(dict.fromkeys(problems))


def _pydantic_problems(exc: ValidationError, doc: Mapping[str, Any]) -> list[Problem]:
    problems = []
    for error in exc.errors():
        node, field = _locate([p for p in error["loc"] if isinstance(p, str | int)], doc)
        problems.append(Problem(node=node, field=field, message=_short(error["msg"])))
    return problems


def load_document(raw: str | bytes | bytearray | Mapping[str, Any]) -> Template:
    """Parse (JSON text, bytes or an already-parsed object), migrate, check the JSON Schema and
    build the Template. Anything wrong raises TemplateError with every problem found."""
    doc = migrate(_parse(raw))
    problems = schema_problems(doc)
    if problems:
        raise TemplateError(_summary(problems), problems)
    try:
        return Template.model_validate(doc)
    except ValidationError as exc:  # the schema should have caught it; stay typed regardless
        problems = _pydantic_problems(exc, doc)
        raise TemplateError(_summary(problems), problems) from None


# --- graph ----------------------------------------------------------------------------------


class Graph:
    """Adjacency of a template over its known nodes (edges to unknown nodes are left out)."""

    def __init__(self, template: Template) -> None:
        self.index: dict[str, int] = {}
        self.nodes: dict[str, Node] = {}
        for node in template.nodes:
            if node.id not in self.index:
                self.index[node.id] = len(self.index)
                self.nodes[node.id] = node
        self.preds: dict[str, list[str]] = {nid: [] for nid in self.index}
        self.succs: dict[str, list[str]] = {nid: [] for nid in self.index}
        seen: set[tuple[str, str]] = set()
        for edge in template.edges:
            key = (edge.source, edge.target)
            if key in seen or edge.source not in self.index or edge.target not in self.index:
                continue
            seen.add(key)
            self.succs[edge.source].append(edge.target)
            self.preds[edge.target].append(edge.source)

    def _require(self, node_id: str) -> None:
        if node_id not in self.index:
            raise NotFoundError(f"the template has no node '{node_id}'")

    def _walk(self, start: str, links: Mapping[str, list[str]]) -> set[str]:
        self._require(start)
        found: set[str] = set()
        queue = deque(links[start])
        while queue:
            nid = queue.popleft()
            if nid not in found:
                found.add(nid)
                queue.extend(links[nid])
        return found

    def ancestors(self, node_id: str) -> set[str]:
        return self._walk(node_id, self.preds)

    def descendants(self, node_id: str) -> set[str]:
        return self._walk(node_id, self.succs)

    def topological(self) -> tuple[list[str], list[str]]:
        """(order, left over): Kahn's algorithm, main path first, ties in document order. Nodes
        on or after a cycle are left over."""
        indegree = {nid: len(p) for nid, p in self.preds.items()}

        def key(nid: str) -> tuple[bool, int]:
            return (self.nodes[nid].rollback, self.index[nid])

        ready = [key(n) for n, d in indegree.items() if d == 0]
        heapq.heapify(ready)
        ids = list(self.index)
        order: list[str] = []
        while ready:
            _, idx = heapq.heappop(ready)
            nid = ids[idx]
            order.append(nid)
            for succ in self.succs[nid]:
                indegree[succ] -= 1
                if indegree[succ] == 0:
                    heapq.heappush(ready, key(succ))
        done = set(order)
        return order, [n for n in ids if n not in done]

    def find_cycle(self, within: Iterable[str]) -> list[str]:
        """One cycle among `within` (nodes left over by `topological`), as [a, b, ..., a]."""
        pool = set(within)
        # Every left-over node has a left-over predecessor; walking predecessors must repeat.
        start = next(iter(sorted(pool, key=self.index.__getitem__)))
        path: list[str] = []
        position: dict[str, int] = {}
        nid = start
        while nid not in position:
            position[nid] = len(path)
            path.append(nid)
            nid = next(p for p in self.preds[nid] if p in pool)
        cycle = path[position[nid] :]
        cycle.reverse()  # predecessors were walked; show the edges' direction
        first = cycle.index(min(cycle, key=self.index.__getitem__))
        cycle = cycle[first:] + cycle[:first]  # start at the node that comes first in the document
        return [*cycle, cycle[0]]

    def components(self, within: Iterable[str]) -> list[list[str]]:
        """Strongly connected components among `within` (Tarjan's algorithm, iterative so a long
        chain cannot exhaust the recursion limit)."""
        pool = set(within)
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        on_stack: set[str] = set()
        stack: list[str] = []
        out: list[list[str]] = []
        for root in sorted(pool, key=self.index.__getitem__):
            if root in index:
                continue
            index[root] = low[root] = len(index)
            stack.append(root)
            on_stack.add(root)
            work: list[tuple[str, Iterator[str]]] = [(root, iter(self.succs[root]))]
            while work:
                v, successors = work[-1]
                descended = False
                for w in successors:
                    if w not in pool:
                        continue
                    if w not in index:
                        index[w] = low[w] = len(index)
                        stack.append(w)
                        on_stack.add(w)
                        work.append((w, iter(self.succs[w])))
                        descended = True
                        break
                    if w in on_stack:
                        low[v] = min(low[v], index[w])
                if descended:
                    continue
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[v])
                if low[v] == index[v]:
                    component: list[str] = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    out.append(component)
        return out

    def ancestor_bits(self) -> dict[str, int]:
        """Ancestor sets as bitsets over `index` (fast for large graphs; cycles tolerated)."""
        order, rest = self.topological()
        bits: dict[str, int] = {}
        for nid in [*order, *rest]:
            acc = 0
            for pred in self.preds[nid]:
                acc |= bits.get(pred, 0) | (1 << self.index[pred])
            bits[nid] = acc
        return bits


def _cycle_message(cycle: Sequence[str]) -> str:
    return "cycle: " + " → ".join(cycle)


def topological_order(template: Template) -> list[str]:
    """Node ids so that every edge goes forward; main nodes first, then the rollback path, ties in
    document order. Raises CycleError naming the nodes of a cycle."""
    graph = Graph(template)
    for edge in template.edges:
        if edge.source == edge.target and edge.source in graph.index:
            raise CycleError(_cycle_message([edge.source, edge.source]), [edge.source])
    order, rest = graph.topological()
    if rest:
        cycle = graph.find_cycle(rest)
        raise CycleError("the template has a " + _cycle_message(cycle), cycle[:-1])
    return order


def ancestors(template: Template, node_id: str) -> set[str]:
    """Every node `node_id` depends on, directly or not."""
    return Graph(template).ancestors(node_id)


def descendants(template: Template, node_id: str) -> set[str]:
    """Every node that depends on `node_id`, directly or not."""
    return Graph(template).descendants(node_id)


def dependencies(template: Template, node_id: str) -> set[str]:
    """The nodes `node_id` has an edge from (it runs after them)."""
    graph = Graph(template)
    graph._require(node_id)
    return set(graph.preds[node_id])


def dependants(template: Template, node_id: str) -> set[str]:
    """The nodes with an edge from `node_id` (they run after it)."""
    graph = Graph(template)
    graph._require(node_id)
    return set(graph.succs[node_id])


def main_nodes(template: Template) -> list[Node]:
    """The nodes of the normal path, in document order."""
    return [n for n in template.nodes if not n.rollback]


def rollback_nodes(template: Template) -> list[Node]:
    """The nodes of the rollback path (`rollback: true`), in document order."""
    return [n for n in template.nodes if n.rollback]


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


# --- identity and diff ----------------------------------------------------------------------


def canonical_json(template: Template, *, layout: bool = True, version: bool = True) -> bytes:
    """RFC 8785 canonical JSON of the document, optionally without `layout` / `version`."""
    doc = template.to_document()
    if not layout:
        doc.pop("layout", None)
    if not version:
        doc.pop("version", None)
    try:
        return rfc8785.dumps(doc)
    except rfc8785.CanonicalizationError as exc:
        raise TemplateError(f"the template cannot be canonicalised: {exc}") from None


def digest(template: Template, *, layout: bool = True) -> str:
    """`sha256:<hex>` of the canonical document without `version` (which the store assigns), so an
    unchanged template has the same digest as the version it was loaded from."""
    data = canonical_json(template, layout=layout, version=False)
    return "sha256:" + hashlib.sha256(data).hexdigest()


class FieldChange(Strict):
    field: str
    old: Any = None
    new: Any = None


class NodeChange(Strict):
    id: str
    changes: tuple[FieldChange, ...]


class TemplateDiff(Strict):
    """What changed from `a` to `b` (the `version` number is not compared)."""

    changes: tuple[FieldChange, ...] = ()  # name, description, schema_version
    inputs_added: tuple[str, ...] = ()
    inputs_removed: tuple[str, ...] = ()
    inputs_changed: tuple[FieldChange, ...] = ()
    nodes_added: tuple[str, ...] = ()
    nodes_removed: tuple[str, ...] = ()
    nodes_changed: tuple[NodeChange, ...] = ()
    edges_added: tuple[tuple[str, str], ...] = ()
    edges_removed: tuple[tuple[str, str], ...] = ()
    nodes_moved: tuple[str, ...] = ()

    @property
    def layout_changed(self) -> bool:
        return bool(self.nodes_moved)

    @property
    def is_empty(self) -> bool:
        return not any(
            (
                self.changes,
                self.inputs_added,
                self.inputs_removed,
                self.inputs_changed,
                self.nodes_added,
                self.nodes_removed,
                self.nodes_changed,
                self.edges_added,
                self.edges_removed,
                self.nodes_moved,
            )
        )


def _node_changes(old: Node, new: Node) -> list[FieldChange]:
    a, b = old.model_dump(mode="json"), new.model_dump(mode="json")
    out: list[FieldChange] = []
    for name in a:
        if name in ("id", "inputs", "retry"):
            continue
        if a[name] != b[name]:
            out.append(FieldChange(field=name, old=a[name], new=b[name]))
    for sub in a["retry"]:
        if a["retry"][sub] != b["retry"][sub]:
            out.append(FieldChange(field=f"retry.{sub}", old=a["retry"][sub], new=b["retry"][sub]))
    keys = list(dict.fromkeys([*a["inputs"], *b["inputs"]]))
    for key in keys:
        if key not in b["inputs"] or key not in a["inputs"] or a["inputs"][key] != b["inputs"][key]:
            out.append(
                FieldChange(
                    field=f"inputs.{key}", old=a["inputs"].get(key), new=b["inputs"].get(key)
                )
            )
    return out


def diff(a: Template, b: Template) -> TemplateDiff:
    """Compare two templates (typically two versions of one)."""
    changes = [
        FieldChange(field=name, old=getattr(a, name), new=getattr(b, name))
        for name in ("name", "description", "schema_version")
        if getattr(a, name) != getattr(b, name)
    ]
    in_a, in_b = a.inputs, b.inputs
    inputs_changed = [
        FieldChange(
            field=name,
            old=in_a[name].model_dump(mode="json"),
            new=in_b[name].model_dump(mode="json"),
        )
        for name in in_a
        if name in in_b and in_a[name] != in_b[name]
    ]
    nodes_a = {n.id: n for n in reversed(a.nodes)}  # the first of duplicate ids wins
    nodes_b = {n.id: n for n in reversed(b.nodes)}
    order_a = list(dict.fromkeys(n.id for n in a.nodes))
    order_b = list(dict.fromkeys(n.id for n in b.nodes))
    changed = []
    for nid in order_a:
        if nid in nodes_b:
            fields = _node_changes(nodes_a[nid], nodes_b[nid])
            if fields:
                changed.append(NodeChange(id=nid, changes=tuple(fields)))
    edges_a = list(dict.fromkeys((e.source, e.target) for e in a.edges))
    edges_b = list(dict.fromkeys((e.source, e.target) for e in b.edges))
    set_a, set_b = set(edges_a), set(edges_b)
    pos_a, pos_b = a.layout.positions, b.layout.positions
    moved = [nid for nid in dict.fromkeys([*pos_a, *pos_b]) if pos_a.get(nid) != pos_b.get(nid)]
    return TemplateDiff(
        changes=tuple(changes),
        inputs_added=tuple(n for n in in_b if n not in in_a),
        inputs_removed=tuple(n for n in in_a if n not in in_b),
        inputs_changed=tuple(inputs_changed),
        nodes_added=tuple(n for n in order_b if n not in nodes_a),
        nodes_removed=tuple(n for n in order_a if n not in nodes_b),
        nodes_changed=tuple(changed),
        edges_added=tuple(e for e in edges_b if e not in set_a),
        edges_removed=tuple(e for e in edges_a if e not in set_b),
        nodes_moved=tuple(moved),
    )
