"""Loading a template document: parse (bounded, strict JSON) -> migrate older schema versions ->
validate against the JSON Schema -> build the pydantic `Template`."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any, Final

from jsonschema import Draft202012Validator
from jsonschema import ValidationError as SchemaValidationError
from pydantic import ValidationError

from stella_core.limits import MAX_SAFE_INTEGER, json_integer, text_problem
from stella_core.workflows.model import (
    SCHEMA_VERSION,
    Problem,
    Template,
)
from stella_core.workflows.schema import template_schema
from stella_core.workflows.template.problems import TemplateError, _dotted, _short, _summary

MAX_TEMPLATE_BYTES: Final = 2 * 1024 * 1024
MAX_DOCUMENT_DEPTH: Final = 64


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
