"""Pure edit functions for the visual editor: each takes a Template and returns a new one.

The desktop wraps each call in one undo command that keeps the document before and after
(orange-canvas-core's model: the document is authoritative, the scene follows it). Nothing here
mutates its argument, and every function stays linear (or n log n) in the size of the template,
so editing a 1,000-node graph stays interactive.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from pydantic import Field, ValidationError

from stella_core.errors import DefinitionError
from stella_core.workflows.expressions import RESERVED_WORDS, rename_steps
from stella_core.workflows.model import (
    NODE_ID_PATTERN,
    Edge,
    Layout,
    Node,
    Position,
    Strict,
    Template,
)
from stella_core.workflows.steps.registry import StepRegistry
from stella_core.workflows.template import CycleError, Graph, json_value_problems

__all__ = [
    "EDITABLE_FIELDS",
    "Clipboard",
    "CycleError",
    "EditError",
    "add_edge",
    "add_node",
    "auto_layout",
    "connectable_targets",
    "copy_nodes",
    "move_nodes",
    "paste",
    "remove_edge",
    "remove_input",
    "remove_nodes",
    "rename_node",
    "set_input",
    "set_node_field",
    "would_create_cycle",
]

EDITABLE_FIELDS: Final = frozenset(
    {"name", "retry", "timeout_seconds", "on_failure", "condition", "rollback"}
)
LAYER_SPACING: Final = 240.0
ROW_SPACING: Final = 110.0
_ID_RE: Final = re.compile(NODE_ID_PATTERN)


class EditError(DefinitionError):
    """The edit is not possible (unknown node, taken id, a value the document does not allow)."""


class Clipboard(Strict):
    """Copied nodes with the edges among them and their positions (JSON-serialisable)."""

    nodes: tuple[Node, ...] = ()
    edges: tuple[Edge, ...] = ()
    positions: dict[str, Position] = Field(default_factory=dict)


# --- helpers --------------------------------------------------------------------------------


def _edge(source: str, target: str) -> Edge:
    return Edge.model_validate({"from": source, "to": target})


def _nodes_by_id(t: Template) -> dict[str, Node]:
    return {n.id: n for n in reversed(t.nodes)}  # the first of duplicate ids wins


def _require(nodes: Mapping[str, Node], node_id: str) -> Node:
    node = nodes.get(node_id)
    if node is None:
        raise EditError(f"the template has no node '{node_id}'")
    return node


def _check_new_id(node_id: str, taken: Iterable[str]) -> None:
    if not isinstance(node_id, str) or not _ID_RE.match(node_id):
        raise EditError(
            f"'{node_id}' is not a node id: 1-63 lowercase letters, digits and _, "
            "starting with a letter"
        )
    if node_id in RESERVED_WORDS:
        raise EditError(f"'{node_id}' is a reserved word in expressions; choose another id")
    if node_id in set(taken):
        raise EditError(f"there is a node '{node_id}' already")


class _Ids:
    """Fresh node ids from a hint (`http-check` -> `http_check`, then `http_check_2`, ...)."""

    def __init__(self, taken: Iterable[str]) -> None:
        self.taken = set(taken)
        self._next: dict[str, int] = {}

    @staticmethod
    def base(hint: str) -> str:
        text = re.sub(r"[^a-z0-9_]+", "_", hint.lower()).strip("_")
        text = re.sub(r"_\d+$", "", text) or "node"
        if not text[0].isalpha():
            text = f"n_{text}"
        return text[:56].rstrip("_")

    def new(self, hint: str) -> str:
        base = self.base(hint)
        if base not in self.taken and base not in RESERVED_WORDS:
            self.taken.add(base)
            return base
        n = self._next.get(base, 2)
        while f"{base}_{n}" in self.taken:
            n += 1
        self._next[base] = n + 1
        new = f"{base}_{n}"
        self.taken.add(new)
        return new


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    return value


def _rename_refs(node: Node, mapping: Mapping[str, str]) -> Node:
    """`node` with `steps.old` references rewritten in its inputs and condition."""
    inputs = _map_strings(node.inputs, lambda s: rename_steps(s, mapping))
    condition = (
        rename_steps(node.condition, mapping, bare=True) if node.condition is not None else None
    )
    if inputs == node.inputs and condition == node.condition:
        return node
    return node.model_copy(update={"inputs": inputs, "condition": condition})


def _successors(t: Template) -> dict[str, list[str]]:
    succs: dict[str, list[str]] = {}
    for edge in t.edges:
        succs.setdefault(edge.source, []).append(edge.target)
    return succs


def _path(t: Template, start: str, goal: str) -> list[str] | None:
    """A path of edges start -> ... -> goal (breadth first), or None."""
    succs = _successors(t)
    parent: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        nid = queue.popleft()
        if nid == goal:
            path = [nid]
            while (prev := parent[path[-1]]) is not None:
                path.append(prev)
            return path[::-1]
        for nxt in succs.get(nid, ()):
            if nxt not in parent:
                parent[nxt] = nid
                queue.append(nxt)
    return None


# --- nodes ----------------------------------------------------------------------------------


def add_node(
    t: Template,
    type_: str,
    *,
    node_id: str | None = None,
    name: str | None = None,
    position: tuple[float, float] | None = None,
    registry: StepRegistry,
) -> tuple[Template, str]:
    """Add a node of a registered step type; returns the template and the node's id (generated
    from the type when not given). Inputs start with the defaults the step type declares."""
    spec = registry.get(type_)
    if spec is None:
        raise EditError(f"unknown step type '{type_}'")
    taken = [n.id for n in t.nodes]
    if node_id is None:
        node_id = _Ids(taken).new(type_)
    else:
        _check_new_id(node_id, taken)
    props = spec.input_schema.get("properties")
    defaults = {
        key: sub["default"]
        for key, sub in (props.items() if isinstance(props, Mapping) else ())
        if isinstance(sub, Mapping) and "default" in sub
    }
    try:
        node = Node(id=node_id, type=type_, name=name or "", inputs=defaults)
    except ValidationError as exc:
        raise EditError(f"cannot add node '{node_id}': {exc.errors()[0]['msg']}") from None
    positions = dict(t.layout.positions)
    if position is not None:
        positions[node_id] = _position(node_id, position)
    return (
        t.model_copy(update={"nodes": (*t.nodes, node), "layout": Layout(positions=positions)}),
        node_id,
    )


def remove_nodes(t: Template, ids: Iterable[str]) -> Template:
    """Remove nodes with their edges and positions."""
    doomed = set(ids)
    nodes = _nodes_by_id(t)
    for nid in sorted(doomed):
        _require(nodes, nid)
    return t.model_copy(
        update={
            "nodes": tuple(n for n in t.nodes if n.id not in doomed),
            "edges": tuple(e for e in t.edges if e.source not in doomed and e.target not in doomed),
            "layout": Layout(
                positions={k: v for k, v in t.layout.positions.items() if k not in doomed}
            ),
        }
    )


def set_node_field(t: Template, node_id: str, field: str, value: Any) -> Template:
    """Set one of EDITABLE_FIELDS (`name`, `retry`, `timeout_seconds`, `on_failure`, `condition`,
    `rollback`); an empty condition means none. Ids change with `rename_node`, inputs with
    `set_input`."""
    if field not in EDITABLE_FIELDS:
        raise EditError(
            f"'{field}' cannot be set here (editable: {', '.join(sorted(EDITABLE_FIELDS))})"
        )
    nodes = _nodes_by_id(t)
    node = _require(nodes, node_id)
    if field == "condition" and isinstance(value, str) and not value.strip():
        value = None
    if field == "rollback" and bool(value) != node.rollback:
        linked = [e for e in t.edges if node_id in (e.source, e.target)]
        if linked:
            raise EditError(
                f"'{node_id}' has edges; remove them before moving it "
                f"{'to' if value else 'out of'} the rollback path"
            )
    data = node.model_dump()
    data[field] = value
    try:
        updated = Node.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise EditError(f"{node_id}.{where}: {error['msg']}") from None
    return _replace_node(t, node_id, updated)


def _replace_node(t: Template, node_id: str, updated: Node) -> Template:
    return t.model_copy(update={"nodes": tuple(updated if n.id == node_id else n for n in t.nodes)})


def set_input(t: Template, node_id: str, key: str, value: Any) -> Template:
    """Set an input to a literal or an expression string (`${{ ... }}`)."""
    node = _require(_nodes_by_id(t), node_id)
    if not isinstance(key, str) or not key:
        raise EditError("an input name must be a non-empty string")
    problems = json_value_problems(value)
    if problems:
        raise EditError(f"input '{key}' of '{node_id}': {problems[0]}")
    inputs = {**node.inputs, key: value}
    return _replace_node(t, node_id, node.model_copy(update={"inputs": inputs}))


def remove_input(t: Template, node_id: str, key: str) -> Template:
    node = _require(_nodes_by_id(t), node_id)
    if key not in node.inputs:
        raise EditError(f"'{node_id}' has no input '{key}'")
    inputs = {k: v for k, v in node.inputs.items() if k != key}
    return _replace_node(t, node_id, node.model_copy(update={"inputs": inputs}))


def rename_node(t: Template, old: str, new: str) -> Template:
    """Change a node's id, rewriting edges, its position and `steps.old` references in every
    expression (string literals are left alone)."""
    nodes = _nodes_by_id(t)
    _require(nodes, old)
    if new == old:
        return t
    _check_new_id(new, nodes)
    mapping = {old: new}
    renamed = []
    for node in t.nodes:
        current = node.model_copy(update={"id": new}) if node.id == old else node
        renamed.append(_rename_refs(current, mapping))
    edges = tuple(
        _edge(mapping.get(e.source, e.source), mapping.get(e.target, e.target))
        if old in (e.source, e.target)
        else e
        for e in t.edges
    )
    positions = {mapping.get(k, k): v for k, v in t.layout.positions.items()}
    return t.model_copy(
        update={"nodes": tuple(renamed), "edges": edges, "layout": Layout(positions=positions)}
    )


def _position(node_id: str, xy: tuple[float, float]) -> Position:
    x, y = float(xy[0]), float(xy[1])
    if not (math.isfinite(x) and math.isfinite(y)):
        raise EditError(f"the position of '{node_id}' must be finite")
    return Position(x=x, y=y)


def move_nodes(t: Template, moves: Mapping[str, tuple[float, float]]) -> Template:
    """Set positions (one undo command per drag: call this on release)."""
    nodes = _nodes_by_id(t)
    positions = dict(t.layout.positions)
    for nid, xy in moves.items():
        _require(nodes, nid)
        positions[nid] = _position(nid, xy)
    return t.model_copy(update={"layout": Layout(positions=positions)})


# --- edges ----------------------------------------------------------------------------------


def would_create_cycle(t: Template, src: str, dst: str) -> bool:
    """Whether an edge src -> dst would close a cycle (dst already leads to src)."""
    if src == dst:
        return True
    succs = _successors(t)
    seen = {dst}
    queue = deque([dst])
    while queue:
        for nxt in succs.get(queue.popleft(), ()):
            if nxt == src:
                return True
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return False


def connectable_targets(t: Template, src: str) -> set[str]:
    """Every node an edge from `src` may go to (computed once when a drag starts, so the canvas
    can give feedback per hovered port without walking the graph again)."""
    graph = Graph(t)
    node = graph.nodes.get(src)
    if node is None:
        raise EditError(f"the template has no node '{src}'")
    refused = graph.ancestors(src) | set(graph.succs[src]) | {src}
    return {
        nid
        for nid, other in graph.nodes.items()
        if nid not in refused and other.rollback == node.rollback
    }


def add_edge(t: Template, src: str, dst: str) -> Template:
    """Add src -> dst (dst runs after src). Refuses unknown nodes, duplicates, edges between the
    main and the rollback path, and (with CycleError) self-loops and cycles."""
    nodes = _nodes_by_id(t)
    a, b = _require(nodes, src), _require(nodes, dst)
    if src == dst:
        raise CycleError(f"an edge from '{src}' to itself would be a cycle", [src])
    if any(e.source == src and e.target == dst for e in t.edges):
        raise EditError(f"there is an edge {src} → {dst} already")
    if a.rollback != b.rollback:
        raise EditError(
            f"'{src}' and '{dst}' are on different paths (main and rollback); "
            "the rollback path is separate"
        )
    back = _path(t, dst, src)
    if back is not None:
        cycle = [*back, dst]
        raise CycleError(f"an edge {src} → {dst} would make a cycle: {' → '.join(cycle)}", back)
    return t.model_copy(update={"edges": (*t.edges, _edge(src, dst))})


def remove_edge(t: Template, src: str, dst: str) -> Template:
    if not any(e.source == src and e.target == dst for e in t.edges):
        raise EditError(f"there is no edge {src} → {dst}")
    return t.model_copy(
        update={"edges": tuple(e for e in t.edges if not (e.source == src and e.target == dst))}
    )


# --- clipboard ------------------------------------------------------------------------------


def copy_nodes(t: Template, ids: Iterable[str]) -> Clipboard:
    """The nodes, the edges among them and their positions, in document order."""
    wanted = set(ids)
    nodes = _nodes_by_id(t)
    for nid in sorted(wanted):
        _require(nodes, nid)
    seen: set[str] = set()
    picked = []
    for node in t.nodes:
        if node.id in wanted and node.id not in seen:
            seen.add(node.id)
            picked.append(node)
    return Clipboard(
        nodes=tuple(picked),
        edges=tuple(e for e in t.edges if e.source in wanted and e.target in wanted),
        positions={k: v for k, v in t.layout.positions.items() if k in wanted},
    )


def paste(
    t: Template, clip: Clipboard, offset: tuple[float, float] = (40.0, 40.0)
) -> tuple[Template, dict[str, str]]:
    """Add the clipboard's nodes with fresh ids (edges among them kept, references among them
    rewritten, positions shifted by `offset`); returns the template and {old id: new id}."""
    ids = _Ids(n.id for n in t.nodes)
    id_map = {node.id: ids.new(node.id) for node in clip.nodes}
    nodes = [
        _rename_refs(node.model_copy(update={"id": id_map[node.id]}), id_map) for node in clip.nodes
    ]
    edges = [
        _edge(id_map[e.source], id_map[e.target])
        for e in clip.edges
        if e.source in id_map and e.target in id_map
    ]
    positions = dict(t.layout.positions)
    dx, dy = offset
    for old, pos in clip.positions.items():
        if old in id_map:
            positions[id_map[old]] = _position(id_map[old], (pos.x + dx, pos.y + dy))
    return (
        t.model_copy(
            update={
                "nodes": (*t.nodes, *nodes),
                "edges": (*t.edges, *edges),
                "layout": Layout(positions=positions),
            }
        ),
        id_map,
    )


# --- layout ---------------------------------------------------------------------------------


def _barycentre(graph: Graph, row: Mapping[str, float], nid: str) -> tuple[float, int]:
    rows = [row[p] for p in graph.preds[nid] if p in row]
    return (sum(rows) / len(rows) if rows else math.inf, graph.index[nid])


def auto_layout(t: Template) -> Template:
    """Layered layout, left to right: a node's column is its longest path from a root; rows are
    ordered by the mean row of their predecessors (ties in document order), and each column is
    centred. The rollback path is laid out the same way, below the main path. Tolerates invalid
    graphs (nodes on a cycle go after what precedes them)."""
    graph = Graph(t)
    order, rest = graph.topological()
    layer: dict[str, int] = {}
    for nid in [*order, *rest]:
        layer[nid] = max((layer[p] + 1 for p in graph.preds[nid] if p in layer), default=0)
    positions: dict[str, Position] = {}
    top = 0.0
    for rollback in (False, True):
        columns: dict[int, list[str]] = {}
        for nid, node in graph.nodes.items():  # document order
            if node.rollback == rollback:
                columns.setdefault(layer[nid], []).append(nid)
        if not columns:
            continue
        row: dict[str, float] = {}
        for col in sorted(columns):
            members = columns[col]
            if col > 0:
                members.sort(key=lambda nid: _barycentre(graph, row, nid))
            for i, nid in enumerate(members):
                row[nid] = float(i)
        height = max(len(m) for m in columns.values())
        for col, members in columns.items():
            shift = (height - len(members)) / 2
            for i, nid in enumerate(members):
                positions[nid] = Position(x=col * LAYER_SPACING, y=top + (i + shift) * ROW_SPACING)
        top += (height + 1) * ROW_SPACING
    ordered = {n.id: positions[n.id] for n in t.nodes if n.id in positions}
    return t.model_copy(update={"layout": Layout(positions=ordered)})
