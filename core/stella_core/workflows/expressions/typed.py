"""Save time: environments typed from JSON Schemas (step output schemas, template inputs,
release, environment), which catch `steps.build.outputs.digets`, `int == string` and wrong result
types before a template is saved."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from cel_expr_python import cel
from google.protobuf import descriptor_pb2, descriptor_pool, struct_pb2

from stella_core.workflows.expressions.errors import ExpressionError
from stella_core.workflows.expressions.messages import compile_failure
from stella_core.workflows.expressions.runtime import COMPILE_LOCK, DYN_MAP
from stella_core.workflows.expressions.source import RESERVED_WORDS, precheck

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
                variables[root] = cel.Type(full[1:]) if full else DYN_MAP
            env = cel.NewEnv(pool, variables=variables)
        except (TypeError, ValueError, RuntimeError):
            # A schema the descriptor pool refuses: fall back to dynamic roots (checks degrade
            # to syntax and untyped operators; run time still catches the rest).
            env = cel.NewEnv(variables=dict.fromkeys(roots, DYN_MAP))
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
        with COMPILE_LOCK:
            try:
                program = self._env.compile(src)
            except MemoryError:
                return ["out of memory while compiling"]
            except (RuntimeError, ValueError, TypeError) as exc:
                return [compile_failure(str(exc), src, self.labels).message]
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
