"""Pure edit functions behind the visual editor: each returns a new document, leaves the old one
untouched, and refuses what would make the document invalid (cycles, main-rollback edges)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stella_core.workflows.edit import (
    Clipboard,
    CycleError,
    EditError,
    add_edge,
    add_node,
    auto_layout,
    connectable_targets,
    copy_nodes,
    move_nodes,
    paste,
    remove_edge,
    remove_input,
    remove_nodes,
    rename_node,
    set_input,
    set_node_field,
    would_create_cycle,
)
from stella_core.workflows.model import OnFailure, Position, Retry, Template
from stella_core.workflows.steps.registry import default_registry
from stella_core.workflows.template import load_document, topological_order, validate

REG = default_registry()


def chain(*types: str) -> tuple[Template, list[str]]:
    t = Template(name="t")
    ids = []
    for type_ in types:
        t, nid = add_node(t, type_, registry=REG)
        if ids:
            t = add_edge(t, ids[-1], nid)
        ids.append(nid)
    return t, ids


def edges(t: Template) -> list[tuple[str, str]]:
    return [(e.source, e.target) for e in t.edges]


def test_add_node_generates_ids_from_the_type() -> None:
    t = Template(name="t")
    t, a = add_node(t, "script", registry=REG)
    t, b = add_node(t, "script", registry=REG, name="Deploy", position=(10, 20))
    t, c = add_node(t, "http-check", registry=REG)
    t, d = add_node(t, "wait", registry=REG, node_id="pause")
    assert (a, b, c, d) == ("script", "script_2", "http_check", "pause")
    assert t.node("script_2").name == "Deploy"
    assert t.layout.positions == {"script_2": Position(x=10, y=20)}
    with pytest.raises(EditError, match="already"):
        add_node(t, "wait", registry=REG, node_id="pause")
    with pytest.raises(EditError, match="not a node id"):
        add_node(t, "wait", registry=REG, node_id="Pause!")
    with pytest.raises(EditError, match="reserved"):
        add_node(t, "wait", registry=REG, node_id="in")
    with pytest.raises(EditError, match="unknown step type"):
        add_node(t, "teleport", registry=REG)


def test_edits_never_mutate_their_input() -> None:
    t, ids = chain("script", "notify")
    before = t.to_document()
    t2 = set_input(t, ids[0], "command", ["make"])
    t2 = set_node_field(t2, ids[0], "timeout_seconds", 30)
    t2 = move_nodes(t2, {ids[0]: (1, 2)})
    t2 = rename_node(t2, ids[0], "build")
    t2 = remove_edge(t2, "build", ids[1])
    t2 = remove_nodes(t2, [ids[1]])
    assert t.to_document() == before
    assert t2 is not t


def test_remove_nodes_takes_edges_and_positions() -> None:
    t, ids = chain("script", "notify", "wait")
    t = move_nodes(t, dict.fromkeys(ids, (0, 0)))
    t = remove_nodes(t, [ids[1]])
    assert [n.id for n in t.nodes] == [ids[0], ids[2]]
    assert edges(t) == []
    assert set(t.layout.positions) == {ids[0], ids[2]}
    with pytest.raises(EditError, match="no node"):
        remove_nodes(t, ["ghost"])


def test_add_edge_refuses_cycles_duplicates_and_crossing_paths() -> None:
    t, (a, b, c) = chain("script", "notify", "wait")
    with pytest.raises(CycleError) as info:
        add_edge(t, c, a)
    assert info.value.cycle == [a, b, c]
    assert "would make a cycle: script → notify → wait → script" in info.value.message
    with pytest.raises(CycleError, match="itself"):
        add_edge(t, a, a)
    with pytest.raises(EditError, match="already"):
        add_edge(t, a, b)
    with pytest.raises(EditError, match="no node"):
        add_edge(t, a, "ghost")
    t, r = add_node(t, "notify", registry=REG, node_id="undo")
    t = set_node_field(t, r, "rollback", True)
    with pytest.raises(EditError, match="different paths"):
        add_edge(t, c, r)
    t = add_edge(t, a, c)  # a shortcut is fine
    assert edges(t)[-1] == (a, c)


def test_cycle_feedback_while_dragging() -> None:
    t, (a, b, c) = chain("script", "notify", "wait")
    t, d = add_node(t, "wait", registry=REG)
    assert would_create_cycle(t, c, a)
    assert would_create_cycle(t, b, b)
    assert not would_create_cycle(t, a, c)
    assert not would_create_cycle(t, d, a)
    assert connectable_targets(t, a) == {c, d}  # not itself, not upstream, not a duplicate
    assert connectable_targets(t, c) == {d}
    assert connectable_targets(remove_edge(t, b, c), b) == {c, d}


def test_remove_edge() -> None:
    t, (a, b) = chain("script", "notify")
    assert edges(remove_edge(t, a, b)) == []
    with pytest.raises(EditError, match="no edge"):
        remove_edge(t, b, a)


def test_move_nodes() -> None:
    t, (a, b) = chain("script", "notify")
    t = move_nodes(t, {a: (1.5, -2), b: (3, 4)})
    assert t.layout.positions[a] == Position(x=1.5, y=-2)
    with pytest.raises(EditError):
        move_nodes(t, {"ghost": (0, 0)})
    with pytest.raises(EditError, match="finite"):
        move_nodes(t, {a: (float("nan"), 0)})


def test_set_node_field() -> None:
    t, (a, b) = chain("script", "notify")
    t = set_node_field(t, a, "name", "Build")
    t = set_node_field(t, a, "retry", {"max_attempts": 4})
    t = set_node_field(t, a, "timeout_seconds", 90)
    t = set_node_field(t, a, "on_failure", "continue")
    t = set_node_field(t, b, "condition", "steps.script.outputs.exit_code == 0")
    node = t.node(a)
    assert node.name == "Build"
    assert node.retry == Retry(max_attempts=4)
    assert node.timeout_seconds == 90
    assert node.on_failure is OnFailure.CONTINUE
    assert set_node_field(t, b, "condition", "  ").node(b).condition is None
    with pytest.raises(EditError, match="max_attempts"):
        set_node_field(t, a, "retry", {"max_attempts": 0})
    with pytest.raises(EditError, match="cannot be set here"):
        set_node_field(t, a, "id", "x")
    with pytest.raises(EditError, match="remove them before"):
        set_node_field(t, a, "rollback", True)
    t, c = add_node(t, "notify", registry=REG)
    assert set_node_field(t, c, "rollback", True).node(c).rollback


def test_inputs() -> None:
    t, (a,) = chain("script")
    t = set_input(t, a, "command", ["make", "${{ inputs.target }}"])
    t = set_input(t, a, "env", {"A": "1"})
    assert t.node(a).inputs == {"command": ["make", "${{ inputs.target }}"], "env": {"A": "1"}}
    t = remove_input(t, a, "env")
    assert list(t.node(a).inputs) == ["command"]
    with pytest.raises(EditError, match="no input"):
        remove_input(t, a, "env")
    with pytest.raises(EditError, match="not a JSON value"):
        set_input(t, a, "bad", {1, 2})
    with pytest.raises(EditError, match="not a JSON number"):
        set_input(t, a, "bad", float("inf"))


def test_rename_rewrites_edges_positions_and_expressions() -> None:
    t, (a, b, c) = chain("script", "notify", "wait")
    t = move_nodes(t, {a: (5, 5)})
    t = set_input(t, b, "message", "digest ${{ steps.script.outputs.stdout }} 'steps.script'")
    t = set_input(
        t, c, "seconds", "${{ steps['script'].outputs.exit_code + size(steps.script_x) }}"
    )
    t = set_node_field(t, c, "condition", "steps.script.outputs.exit_code == 0")
    t = rename_node(t, a, "build")
    assert edges(t) == [("build", b), (b, c)]
    assert set(t.layout.positions) == {"build"}
    assert t.node(b).inputs["message"] == "digest ${{ steps.build.outputs.stdout }} 'steps.script'"
    assert t.node(c).inputs["seconds"] == (
        "${{ steps['build'].outputs.exit_code + size(steps.script_x) }}"
    )
    assert t.node(c).condition == "steps.build.outputs.exit_code == 0"
    with pytest.raises(EditError, match="already"):
        rename_node(t, "build", b)
    assert rename_node(t, "build", "build") is t


def test_copy_and_paste() -> None:
    t, (a, b, c) = chain("script", "notify", "wait")
    t = move_nodes(t, {a: (0, 0), b: (100, 0)})
    t = set_input(t, a, "command", ["make"])
    t = set_input(t, b, "message", "${{ steps.script.outputs.stdout }}")
    t = set_input(t, c, "seconds", 1)
    clip = copy_nodes(t, [a, b])
    assert [(e.source, e.target) for e in clip.edges] == [(a, b)]  # b -> c is external
    # the clipboard survives the system clipboard (JSON)
    clip = Clipboard.model_validate_json(clip.model_dump_json(by_alias=True))
    t2, id_map = paste(t, clip, offset=(10, 20))
    assert id_map == {a: "script_2", b: "notify_2"}
    assert edges(t2)[-1] == ("script_2", "notify_2")
    assert t2.node("notify_2").inputs["message"] == "${{ steps.script_2.outputs.stdout }}"
    assert t2.layout.positions["notify_2"] == Position(x=110, y=20)
    assert len(t2.nodes) == 5
    assert validate(t, REG) == []
    assert validate(t2, REG) == []  # the pasted pair is connected and reads its own copy
    with pytest.raises(EditError):
        copy_nodes(t, ["ghost"])


def test_auto_layout_left_to_right_with_rollback_below() -> None:
    t, ids = chain("script", "notify", "wait")
    t, side = add_node(t, "notify", registry=REG)
    t = add_edge(t, ids[0], side)
    t, r1 = add_node(t, "notify", registry=REG, node_id="undo")
    t, r2 = add_node(t, "notify", registry=REG, node_id="tell")
    t = set_node_field(t, r1, "rollback", True)
    t = set_node_field(t, r2, "rollback", True)
    t = add_edge(t, r1, r2)
    laid = auto_layout(t)
    pos = laid.layout.positions
    assert set(pos) == {n.id for n in t.nodes}
    assert all(pos[e.source].x < pos[e.target].x for e in t.edges)
    assert min(pos[r1].y, pos[r2].y) > max(pos[n].y for n in [*ids, side])
    assert auto_layout(laid) == laid  # stable
    assert load_document(laid.to_document()) == laid


def test_auto_layout_tolerates_invalid_graphs() -> None:
    doc = {
        "name": "bad",
        "nodes": [{"id": "a", "type": "wait"}, {"id": "b", "type": "wait"}],
        "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "a"}, {"from": "a", "to": "zz"}],
    }
    laid = auto_layout(load_document(json.dumps(doc)))
    assert set(laid.layout.positions) == {"a", "b"}


def test_a_thousand_nodes_edit_and_lay_out() -> None:
    t = Template(name="big")
    previous: list[str] = []
    for _layer in range(20):
        current = []
        for i in range(50):
            t, nid = add_node(t, "notify", registry=REG)
            if previous:
                t = add_edge(t, previous[i], nid)
            current.append(nid)
        previous = current
    laid = auto_layout(t)
    assert len(laid.layout.positions) == 1000
    assert not would_create_cycle(laid, previous[0], previous[1])
    assert would_create_cycle(laid, previous[0], "notify")


# --- property: graphs built by edits stay acyclic -------------------------------------------

ops = st.lists(
    st.tuples(
        st.sampled_from(["add", "edge", "edge", "edge", "remove", "rename", "paste"]),
        st.integers(0, 30),
        st.integers(0, 30),
    ),
    max_size=40,
)


@settings(deadline=None, max_examples=120, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_random_edits_keep_the_graph_acyclic(operations) -> None:
    t = Template(name="prop")
    for op, i, j in operations:
        ids = [n.id for n in t.nodes]
        if op == "add" or not ids:
            t, _ = add_node(t, ["script", "notify", "wait"][i % 3], registry=REG)
            continue
        src, dst = ids[i % len(ids)], ids[j % len(ids)]
        if op == "edge":
            expect_cycle = would_create_cycle(t, src, dst)
            try:
                t = add_edge(t, src, dst)
                assert not expect_cycle
            except CycleError:
                assert expect_cycle
            except EditError:
                pass  # duplicate
        elif op == "remove":
            t = remove_nodes(t, [src])
        elif op == "rename":
            t = rename_node(t, src, f"r{i}_{j}") if f"r{i}_{j}" not in ids else t
        else:
            t, _ = paste(t, copy_nodes(t, {src, dst}))
    order = topological_order(t)  # raises CycleError if the edits made a cycle
    rank = {nid: k for k, nid in enumerate(order)}
    assert sorted(rank) == sorted(n.id for n in t.nodes)
    assert all(rank[e.source] < rank[e.target] for e in t.edges)
    assert len({(e.source, e.target) for e in t.edges}) == len(t.edges)
    assert not [p for p in validate(t, REG) if "cycle" in p.message or p.field == "id"]
