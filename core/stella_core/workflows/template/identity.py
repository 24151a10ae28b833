"""A template's identity (canonical JSON, digest) and the difference between two versions."""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

from stella_core.workflows.model import (
    Node,
    Strict,
    Template,
)
from stella_core.workflows.template.problems import TemplateError

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
