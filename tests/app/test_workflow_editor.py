"""The workflow editor, driven as a person drives it (mouse, palette, inspector, text view) and
checked on the DOCUMENT: the template it holds and the undo stack's commands.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent, QMouseEvent
from PySide6.QtWidgets import QApplication, QLineEdit

from stella_core.workflows.steps.registry import default_registry
from stella_core.workflows.template import load_document
from stella_desk.ops import Ops
from stella_desk.session import Session
from stella_desk.workflows.editor import WorkflowEditor
from stella_desk.workflows.interactions import step_mime
from stella_desk.workflows.items import CARD_HEIGHT, CARD_WIDTH, GRID, Mark, NodeItem
from stella_desk.workflows.library import sample_template
from stella_desk.workflows.textview import template_text

from .conftest import next_emission

EDITOR_SIZE = (1180, 760)


@pytest.fixture
def editor(qtbot, ops: Ops, aloop) -> Iterator[WorkflowEditor]:
    """The editor page on its own (no database: the stored-template list is not needed)."""
    page = WorkflowEditor(ops, Session(), default_registry())
    qtbot.addWidget(page)
    page.resize(*EDITOR_SIZE)
    page.show()
    qtbot.waitExposed(page)
    yield page
    aloop.run_until_complete(ops.idle())


# A rich graph to edit (parallel branches, a rollback path, script commands): the demo's
# promotion workflow as it was before it deployed with one `deploy` step.
EXAMPLE = Path(__file__).with_name("editor_example.json")


@pytest.fixture
def demo(editor: WorkflowEditor) -> WorkflowEditor:
    editor.document.open(load_document(json.loads(EXAMPLE.read_text())))
    editor.validator.schedule()
    editor.view.fit()
    editor.view.set_zoom(1.0)
    editor.view.centerOn(editor.scene.item_for_node["pull"])
    QApplication.processEvents()
    return editor


# --- driving the canvas ------------------------------------------------------------------------
def _mouse(editor: WorkflowEditor, kind: QEvent.Type, scene_pos: QPointF, button, buttons) -> None:
    view = editor.view
    local = QPointF(view.mapFromScene(scene_pos))
    global_pos = QPointF(view.viewport().mapToGlobal(local.toPoint()))
    event = QMouseEvent(kind, local, global_pos, button, buttons, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(view.viewport(), event)


def press(editor: WorkflowEditor, pos: QPointF) -> None:
    left = Qt.MouseButton.LeftButton
    _mouse(editor, QEvent.Type.MouseButtonPress, pos, left, left)


def move(editor: WorkflowEditor, pos: QPointF) -> None:
    _mouse(
        editor,
        QEvent.Type.MouseMove,
        pos,
        Qt.MouseButton.NoButton,
        Qt.MouseButton.LeftButton,
    )


def release(editor: WorkflowEditor, pos: QPointF) -> None:
    _mouse(
        editor,
        QEvent.Type.MouseButtonRelease,
        pos,
        Qt.MouseButton.LeftButton,
        Qt.MouseButton.NoButton,
    )


def drag(editor: WorkflowEditor, start: QPointF, end: QPointF, steps: int = 6) -> None:
    press(editor, start)
    for i in range(1, steps + 1):
        move(editor, start + (end - start) * (i / steps))
    release(editor, end)


def card(editor: WorkflowEditor, node_id: str) -> NodeItem:
    return editor.scene.item_for_node[node_id]


def centre(editor: WorkflowEditor, node_id: str) -> QPointF:
    return card(editor, node_id).sceneBoundingRect().center()


def output_port(editor: WorkflowEditor, node_id: str) -> QPointF:
    return card(editor, node_id).output_port.scenePos()


def document(editor: WorkflowEditor) -> dict:
    return editor.document.template.to_document()


def edges(editor: WorkflowEditor) -> set[tuple[str, str]]:
    return {(e.source, e.target) for e in editor.document.template.edges}


# --- palette, connections, moves -------------------------------------------------------------
def test_dropping_a_step_type_from_the_palette_adds_one_node(editor: WorkflowEditor) -> None:
    view = editor.view
    target = view.viewport().rect().center()
    actions = Qt.DropAction.CopyAction
    buttons = Qt.MouseButton.LeftButton
    mods = Qt.KeyboardModifier.NoModifier
    mime = editor.step_palette.mimeData([editor.step_palette.item_for("http-check")])
    for event in (
        QDragEnterEvent(QPointF(target), actions, mime, buttons, mods),
        QDragMoveEvent(QPointF(target), actions, mime, buttons, mods),
    ):
        QApplication.sendEvent(view.viewport(), event)
        assert event.isAccepted()
    drop = QDropEvent(QPointF(target), actions, mime, buttons, mods)
    QApplication.sendEvent(view.viewport(), drop)

    nodes = editor.document.template.nodes
    assert [(n.id, n.type) for n in nodes] == [("http_check", "http-check")]
    pos = editor.document.template.layout.positions["http_check"]
    dropped_at = view.mapToScene(target)
    # Centred on the drop point, snapped to the grid.
    assert abs(pos.x + CARD_WIDTH / 2 - dropped_at.x()) <= GRID
    assert abs(pos.y + CARD_HEIGHT / 2 - dropped_at.y()) <= GRID
    assert pos.x % GRID == 0
    assert pos.y % GRID == 0
    assert editor.document.undo_stack.count() == 1
    assert editor.scene.selected_node_ids() == ["http_check"]  # ready for the inspector
    assert editor.inspector.node_id == "http_check"

    # Something that is not a step type (plain text from elsewhere) adds nothing.
    other = step_mime("x")
    other.removeFormat(other.formats()[0])
    QApplication.sendEvent(
        view.viewport(), QDropEvent(QPointF(target), actions, other, buttons, mods)
    )
    assert len(editor.document.template.nodes) == 1


def test_double_click_in_the_palette_adds_at_the_centre(editor: WorkflowEditor, qtbot) -> None:
    palette = editor.step_palette
    assert palette.type_names() == [
        "approval",
        "fail",
        "wait",
        "deploy",
        "notify",
        "script",
        "http-check",
    ]
    item = palette.item_for("script")
    assert "argument list" in item.toolTip(0)  # the description is the tooltip
    rect = palette.visualItemRect(item)
    # A double-click is a press and release, then a second press that Qt reports as a
    # double-click (QTest's mouseDClick alone skips the first press).
    qtbot.mouseClick(palette.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.mouseDClick(palette.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert [n.id for n in editor.document.template.nodes] == ["script"]
    assert palette.currentItem() is item
    qtbot.keyClick(palette, Qt.Key.Key_Return)  # the keyboard adds too
    ids = [n.id for n in editor.document.template.nodes]
    assert ids == ["script", "script_2"]
    first, second = (editor.document.template.layout.positions[i] for i in ids)
    middle = QPointF(*editor.view.centre())
    assert abs(first.x + CARD_WIDTH / 2 - middle.x()) <= GRID
    assert (second.x, second.y) != (first.x, first.y)  # cascaded, not stacked
    assert editor.document.undo_stack.count() == 2


def test_dragging_from_an_output_port_connects_two_steps(demo: WorkflowEditor) -> None:
    editor = demo
    before = editor.document.undo_stack.count()
    # announce and deploy_web are independent: announce -> ... would be fine, pick pull -> announce
    assert ("pull", "announce") not in edges(editor)
    start = output_port(editor, "pull")
    end = centre(editor, "announce")
    press(editor, start)
    move(editor, start + QPointF(30, 0))
    move(editor, end)
    # Live feedback: the candidate is green, and nothing is in the document yet.
    assert card(editor, "announce").mark is Mark.CANDIDATE_OK
    assert editor.document.undo_stack.count() == before
    release(editor, end)
    assert ("pull", "announce") in edges(editor)
    assert editor.document.undo_stack.count() == before + 1
    assert ("pull", "announce") in editor.scene.item_for_edge
    assert card(editor, "announce").mark is None  # feedback cleared
    assert editor.controller.current is None


def test_a_connection_that_would_make_a_cycle_is_refused(demo: WorkflowEditor) -> None:
    editor = demo
    snapshot = document(editor)
    count = editor.document.undo_stack.count()
    start = output_port(editor, "check_web")
    end = centre(editor, "pull")  # pull already leads to check_web
    press(editor, start)
    move(editor, start + QPointF(-20, 10))
    move(editor, end)
    assert card(editor, "pull").mark is Mark.CANDIDATE_BAD  # red while hovering
    assert card(editor, "pull").input_port.mark is Mark.CANDIDATE_BAD
    assert "cycle" in editor.notice.text()
    release(editor, end)
    assert document(editor) == snapshot
    assert editor.document.undo_stack.count() == count
    assert "cycle" in editor.notice.text()
    assert "Refused" in editor.notice.text()
    assert card(editor, "pull").mark is None

    # The core's other rules give red feedback too: main and rollback paths stay apart.
    start = output_port(editor, "announce")
    drag(editor, start, centre(editor, "rollback_web"))
    assert document(editor) == snapshot
    assert "rollback" in editor.notice.text()


def test_a_drag_moves_cards_and_pushes_one_command_on_release(demo: WorkflowEditor) -> None:
    editor = demo
    stack = editor.document.undo_stack
    count = stack.count()
    old = editor.document.template.layout.positions["announce"]
    start = centre(editor, "announce")
    end = start + QPointF(63, 47)
    press(editor, start)
    for i in range(1, 9):
        move(editor, start + (end - start) * (i / 8))
        assert stack.count() == count  # nothing pushed while dragging
    # The card (and its edge) follow the pointer, snapped to the grid.
    pos = card(editor, "announce").pos()
    assert pos.x() % GRID == 0
    assert pos.y() % GRID == 0
    edge = editor.scene.item_for_edge[("check_web", "announce")]
    gap = card(editor, "announce").in_anchor() - edge.path().currentPosition()
    assert 0 < gap.x() < 20
    assert gap.y() == 0
    release(editor, end)
    assert stack.count() == count + 1
    new = editor.document.template.layout.positions["announce"]
    assert (new.x, new.y) == (old.x + 60, old.y + 50)
    assert stack.text(stack.index() - 1) == "Move announce"
    stack.undo()
    back = editor.document.template.layout.positions["announce"]
    assert (back.x, back.y) == (old.x, old.y)
    assert card(editor, "announce").pos() == QPointF(old.x, old.y)


def test_rubber_band_selects_what_it_touches(demo: WorkflowEditor) -> None:
    editor = demo
    a = card(editor, "deploy_web").sceneBoundingRect()
    b = card(editor, "deploy_worker").sceneBoundingRect()
    start = QPointF(a.left() - 15, a.top() - 15)
    assert editor.scene.itemAt(start, editor.view.transform()) is None
    drag(editor, start, QPointF(b.left() + 20, b.bottom() - 10))
    assert editor.scene.selected_node_ids() == ["deploy_web", "deploy_worker"]
    assert editor.document.undo_stack.count() == 0  # selecting is not an edit
    assert editor.inspector.node_id is None  # two selected: no single step shown


def test_delete_removes_nodes_with_their_edges(demo: WorkflowEditor) -> None:
    editor = demo
    editor.scene.select_nodes(["check_web"])
    editor.delete_action.trigger()
    template = editor.document.template
    assert template.node("check_web") is None
    assert not [e for e in template.edges if "check_web" in (e.source, e.target)]
    assert "check_web" not in template.layout.positions
    assert "check_web" not in editor.scene.item_for_node
    assert not [k for k in editor.scene.item_for_edge if "check_web" in k]
    assert editor.document.undo_stack.count() == 1
    editor.document.undo_stack.undo()
    assert editor.scene.selected_node_ids() == ["check_web"]  # undo brings it back selected

    # A clicked edge is selected and deleted on its own.
    edge = editor.scene.item_for_edge[("pull", "deploy_web")]
    on_curve = edge.path().pointAtPercent(0.5)
    press(editor, on_curve)
    release(editor, on_curve)
    assert editor.scene.selected_edge_keys() == [("pull", "deploy_web")]
    assert edge.selected
    assert editor.scene.selected_node_ids() == []
    editor.delete_action.trigger()
    assert ("pull", "deploy_web") not in edges(editor)
    assert editor.document.template.node("pull") is not None


def test_undo_and_redo_restore_exactly_the_previous_template(demo: WorkflowEditor) -> None:
    editor = demo
    stack = editor.document.undo_stack
    history = [document(editor)]
    controller = editor.controller
    controller.add_node("wait", (1200.0, 100.0))
    history.append(document(editor))
    controller.connect_steps("announce", "wait")
    history.append(document(editor))
    controller.move({"wait": (1220.0, 160.0), "announce": (900.0, 120.0)})
    history.append(document(editor))
    editor.scene.select_nodes(["deploy_worker"])
    controller.delete_selection()
    history.append(document(editor))
    controller.auto_layout()
    history.append(document(editor))
    assert stack.count() == 5
    assert all(a != b for a, b in itertools.pairwise(history))

    for expected in reversed(history[:-1]):
        stack.undo()
        assert document(editor) == expected
    assert not editor.document.modified
    for expected in history[1:]:
        stack.redo()
        assert document(editor) == expected
    # The scene followed: one card per node, one path per edge, at the document's positions.
    template = editor.document.template
    assert set(editor.scene.item_for_node) == {n.id for n in template.nodes}
    assert set(editor.scene.item_for_edge) == edges(editor)
    for node_id, pos in template.layout.positions.items():
        assert card(editor, node_id).pos() == QPointF(pos.x, pos.y)


def test_the_modified_marker_follows_the_undo_stack(demo: WorkflowEditor) -> None:
    editor = demo
    assert editor.modified_marker.isHidden()
    editor.controller.auto_layout()
    assert editor.modified_marker.isVisible()
    assert editor.modified_marker.text() == "•"
    editor.document.undo_stack.undo()
    assert editor.modified_marker.isHidden()


def test_copy_and_paste_give_fresh_ids_and_keep_internal_edges(demo: WorkflowEditor) -> None:
    editor = demo
    editor.scene.select_nodes(["pull", "deploy_web", "check_web"])
    editor.copy_action.trigger()
    assert editor.paste_action.isEnabled()
    editor.paste_action.trigger()
    template = editor.document.template
    new_ids = [n.id for n in template.nodes[9:]]
    assert new_ids == ["pull_2", "deploy_web_2", "check_web_2"]
    new_edges = {(s, t) for s, t in edges(editor) if s in new_ids or t in new_ids}
    # Internal edges are kept, edges to steps outside the copy are not.
    assert new_edges == {("pull_2", "deploy_web_2"), ("deploy_web_2", "check_web_2")}
    moved = template.layout.positions
    assert moved["pull_2"].x == moved["pull"].x + 40
    assert editor.scene.selected_node_ids() == new_ids
    assert editor.document.undo_stack.count() == 1
    editor.paste_action.trigger()  # a second paste is offset further and gets new ids again
    assert [n.id for n in editor.document.template.nodes[12:]] == [
        "pull_3",
        "deploy_web_3",
        "check_web_3",
    ]
    assert editor.document.template.layout.positions["pull_3"].x == moved["pull"].x + 80


def test_renaming_in_the_inspector_rewrites_edges_and_references(demo: WorkflowEditor) -> None:
    editor = demo
    editor.scene.select_nodes(["check_web"])
    field = editor.inspector.rows["id"].editor
    assert isinstance(field, QLineEdit)
    field.setText("health")
    field.editingFinished.emit()
    template = editor.document.template
    assert template.node("check_web") is None
    assert template.node("health") is not None
    assert {("deploy_web", "health"), ("health", "announce")} <= edges(editor)
    message = template.node("announce").inputs["message"]
    assert "steps.health.outputs.status" in message
    assert editor.scene.selected_node_ids() == ["health"]
    assert editor.inspector.node_id == "health"
    assert editor.document.undo_stack.count() == 1
    editor.document.undo_stack.undo()
    assert (
        "steps.check_web.outputs.status"
        in editor.document.template.node("announce").inputs["message"]
    )

    # A taken or malformed id is refused in place.
    editor.scene.select_nodes(["pull"])
    field = editor.inspector.rows["id"].editor
    field.setText("announce")
    field.editingFinished.emit()
    assert editor.inspector.rows["id"].error.text() == "Another step is called announce."
    assert editor.document.template.node("pull") is not None
    assert editor.document.undo_stack.count() == 1


def test_the_text_view_round_trips_and_applies_as_one_command(demo: WorkflowEditor) -> None:
    editor = demo
    text = editor.text
    editor.tabs.setCurrentWidget(text)
    shown = text.text()
    assert shown == template_text(editor.document.template)
    assert load_document(json.loads(shown)) == editor.document.template  # exactly the canvas

    # An edit on the canvas shows up in the text.
    editor.controller.move({"announce": (1000.0, 300.0)})
    assert json.loads(text.text())["layout"]["positions"]["announce"] == {"x": 1000.0, "y": 300.0}

    # Bad JSON: the error is shown in place and nothing changes.
    before = document(editor)
    count = editor.document.undo_stack.count()
    text.editor.setPlainText(shown.replace('"nodes": [', '"nodes": [,'))
    assert not text.apply()
    assert "Not JSON" in text.error.text()
    assert "line" in text.error.text()
    # JSON that is not a valid template: the core's problems are listed, nothing changes.
    bad = json.loads(shown)
    bad["nodes"][0]["id"] = "Not An Id"
    text.editor.setPlainText(json.dumps(bad))
    assert not text.apply()
    assert "Not a valid workflow" in text.error.text()
    assert document(editor) == before
    assert editor.document.undo_stack.count() == count

    # A good edit: one command, and undo brings back the canvas as it was.
    good = json.loads(template_text(editor.document.template))
    good["nodes"][1]["name"] = "Pull every image"
    good["edges"].append({"from": "approve", "to": "announce"})
    text.editor.setPlainText(json.dumps(good, indent=2))
    assert text.apply()
    assert editor.document.template.node("pull").name == "Pull every image"
    assert ("approve", "announce") in edges(editor)
    assert ("approve", "announce") in editor.scene.item_for_edge
    assert editor.document.undo_stack.count() == count + 1
    assert text.text() == template_text(editor.document.template)
    editor.document.undo_stack.undo()
    assert document(editor) == before


def test_an_inspector_edit_updates_the_document_and_problems_show(
    demo: WorkflowEditor, run, qtbot
) -> None:
    editor = demo
    run(editor.validator.validate_now())
    assert editor.document.problems == []
    editor.scene.select_nodes(["announce"])
    row = editor.inspector.rows["inputs.message"]
    field = row.editor
    assert isinstance(field, QLineEdit)

    # As you type: the candidate is checked after a pause and the error shows under the field.
    field.setFocus()
    field.selectAll()
    checked = next_emission(editor.inspector.field_checked)
    qtbot.keyClicks(field, "${{ steps.nowhere.outputs.x }}")
    assert run(checked) == ("inputs.message",)  # ~200 ms after the last key
    assert row.error.isVisible()
    assert "nowhere" in row.error.text()
    assert editor.document.undo_stack.count() == 0  # typing is not yet an edit

    field.editingFinished.emit()  # Enter or leaving the field commits
    assert editor.document.template.node("announce").inputs["message"] == (
        "${{ steps.nowhere.outputs.x }}"
    )
    assert editor.document.undo_stack.count() == 1
    run(editor.validator.validate_now())
    problems = editor.document.problems
    assert [(p.node, p.field) for p in problems] == [("announce", "inputs.message")]
    panel = editor.problems
    item = panel.row_for("announce", "inputs.message")
    assert item is not None
    assert "nowhere" in item.text(2)
    assert editor.bottom.tabText(0) == "Problems (1)"
    assert card(editor, "announce").problem_count == 1

    # Clicking the problem selects the step and puts the keyboard in the field.
    editor.scene.select_nodes(["pull"])
    panel.itemClicked.emit(item, 2)
    assert editor.scene.selected_node_ids() == ["announce"]
    assert editor.inspector.rows["inputs.message"].editor.hasFocus()

    # A literal of the wrong type is refused in place, before the core is asked.
    editor.scene.select_nodes(["check_web"])
    status = editor.inspector.rows["inputs.expect_status"]
    status.editor.setText("two hundred")
    status.editor.editingFinished.emit()
    assert "integer" in status.error.text()
    assert editor.document.template.node("check_web").inputs["expect_status"] == 200

    # Undo fixes it, and the panel empties again.
    editor.document.undo_stack.undo()
    run(editor.validator.validate_now())
    assert editor.document.problems == []
    assert card(editor, "announce").problem_count == 0


def test_inspector_fields_beyond_inputs_are_edits(demo: WorkflowEditor) -> None:
    editor = demo
    editor.scene.select_nodes(["deploy_web"])
    rows = editor.inspector.rows
    rows["retry.max_attempts"].editor.setValue(4)
    rows["retry.max_attempts"].editor.editingFinished.emit()
    rows["timeout_seconds"].editor.setValue(0)
    rows["timeout_seconds"].editor.editingFinished.emit()
    combo = rows["on_failure"].editor
    combo.setCurrentIndex(combo.findData("continue"))
    combo.activated.emit(combo.currentIndex())
    rows["condition"].editor.setText("inputs.environment == 'prod'")
    rows["condition"].editor.editingFinished.emit()
    node = editor.document.template.node("deploy_web")
    assert node.retry.max_attempts == 4
    assert node.timeout_seconds is None
    assert node.on_failure.value == "continue"
    assert node.condition == "inputs.environment == 'prod'"
    assert editor.document.undo_stack.count() == 4
    # The core refuses moving a connected step to the rollback path; the box shows why.
    rows["rollback"].editor.setChecked(True)
    assert not editor.document.template.node("deploy_web").rollback
    assert editor.document.undo_stack.count() == 4


def test_auto_layout_is_one_undoable_command(demo: WorkflowEditor) -> None:
    editor = demo
    before = document(editor)
    editor.layout_action.trigger()
    after = editor.document.template
    assert editor.document.undo_stack.count() == 1
    assert editor.document.undo_stack.text(0) == "Auto-layout"
    assert after.layout != load_document(before).layout
    rollback_top = min(after.layout.positions[n.id].y for n in after.nodes if n.rollback)
    main_bottom = max(after.layout.positions[n.id].y for n in after.nodes if not n.rollback)
    assert rollback_top > main_bottom  # the rollback path gets its own lane below
    for node in after.nodes:
        pos = after.layout.positions[node.id]
        assert card(editor, node.id).pos() == QPointF(pos.x, pos.y)
    editor.document.undo_stack.undo()
    assert document(editor) == before


def test_view_zooms_and_fits_without_touching_the_document(demo: WorkflowEditor, qtbot) -> None:
    editor = demo
    view = editor.view
    before = document(editor)
    view.set_zoom(1.0)
    editor.zoom_in_action.trigger()
    assert view.zoom == pytest.approx(1.15)
    editor.zoom_out_action.trigger()
    editor.zoom_out_action.trigger()
    assert view.zoom == pytest.approx(1 / 1.15)
    view.setFocus()
    qtbot.keyClick(view, Qt.Key.Key_F)
    visible = view.mapToScene(view.viewport().rect()).boundingRect()
    assert visible.contains(editor.scene.content_rect())
    assert view.zoom <= 1.0
    # Middle-button drag pans.
    centre_before = view.mapToScene(view.viewport().rect().center())
    mid = Qt.MouseButton.MiddleButton
    start = QPoint(200, 200)
    for kind, pos, button, buttons in (
        (QEvent.Type.MouseButtonPress, start, mid, mid),
        (QEvent.Type.MouseMove, QPoint(260, 230), Qt.MouseButton.NoButton, mid),
        (QEvent.Type.MouseButtonRelease, QPoint(260, 230), mid, Qt.MouseButton.NoButton),
    ):
        event = QMouseEvent(
            kind, QPointF(pos), QPointF(pos), button, buttons, Qt.KeyboardModifier.NoModifier
        )
        QApplication.sendEvent(view.viewport(), event)
    assert view.mapToScene(view.viewport().rect().center()) != centre_before
    # Space + left drag pans as well, instead of starting a rubber band.
    centre_before = view.mapToScene(view.viewport().rect().center())
    qtbot.keyPress(view, Qt.Key.Key_Space)
    left = Qt.MouseButton.LeftButton
    for kind, pos, button, buttons in (
        (QEvent.Type.MouseButtonPress, start, left, left),
        (QEvent.Type.MouseMove, QPoint(150, 170), Qt.MouseButton.NoButton, left),
        (QEvent.Type.MouseButtonRelease, QPoint(150, 170), left, Qt.MouseButton.NoButton),
    ):
        event = QMouseEvent(
            kind, QPointF(pos), QPointF(pos), button, buttons, Qt.KeyboardModifier.NoModifier
        )
        QApplication.sendEvent(view.viewport(), event)
    qtbot.keyRelease(view, Qt.Key.Key_Space)
    assert view.mapToScene(view.viewport().rect().center()) != centre_before
    assert editor.controller.current is None
    assert document(editor) == before
    assert editor.document.undo_stack.count() == 0


def test_an_edit_updates_the_scene_incrementally(demo: WorkflowEditor) -> None:
    editor = demo
    items = dict(editor.scene.item_for_node)
    edge_items = dict(editor.scene.item_for_edge)
    editor.controller.add_node("notify", (1200.0, 110.0))
    editor.controller.connect_steps("announce", "notify")
    # Every existing item is the same object: nothing was rebuilt.
    assert all(editor.scene.item_for_node[k] is v for k, v in items.items())
    assert all(editor.scene.item_for_edge[k] is v for k, v in edge_items.items())
    assert set(editor.scene.item_for_node) - set(items) == {"notify"}


def test_sample_template_is_valid(demo: WorkflowEditor, run) -> None:
    assert run(demo.validator.validate_now()) == []
    assert sample_template().name == "promote-web"
    demo.open_sample()  # the demo's promotion workflow: it deploys with the deploy step
    assert run(demo.validator.validate_now()) == []
    assert demo.document.template.node("deploy").type == "deploy"


def test_keyboard_shortcuts_on_the_canvas(demo: WorkflowEditor, qtbot) -> None:
    editor = demo
    editor.activateWindow()
    qtbot.waitActive(editor)
    view = editor.view
    view.setFocus()
    ctrl = Qt.KeyboardModifier.ControlModifier
    editor.scene.select_nodes(["announce"])
    qtbot.keyClick(view, Qt.Key.Key_Delete)
    assert editor.document.template.node("announce") is None
    qtbot.keyClick(view, Qt.Key.Key_Z, ctrl)
    assert editor.document.template.node("announce") is not None
    qtbot.keyClick(view, Qt.Key.Key_Z, ctrl | Qt.KeyboardModifier.ShiftModifier)
    assert editor.document.template.node("announce") is None
    qtbot.keyClick(view, Qt.Key.Key_Z, ctrl)
    editor.scene.select_nodes(["pull"])
    qtbot.keyClick(view, Qt.Key.Key_C, ctrl)
    qtbot.keyClick(view, Qt.Key.Key_V, ctrl)
    assert editor.document.template.node("pull_2") is not None
    qtbot.keyClick(view, Qt.Key.Key_A, ctrl)
    assert len(editor.scene.selected_node_ids()) == 10
    # In a text field the same keys edit the text, not the canvas.
    editor.scene.select_nodes(["pull"])
    field = editor.inspector.rows["name"].editor
    field.setFocus()
    qtbot.keyClick(field, Qt.Key.Key_Delete)
    assert editor.document.template.node("pull") is not None


def test_ctrl_y_and_ctrl_shift_z_redo(demo: WorkflowEditor, qtbot) -> None:
    editor = demo
    editor.activateWindow()
    qtbot.waitActive(editor)
    view = editor.view
    view.setFocus()
    ctrl = Qt.KeyboardModifier.ControlModifier
    editor.scene.select_nodes(["announce"])
    qtbot.keyClick(view, Qt.Key.Key_Delete)
    assert editor.document.template.node("announce") is None
    qtbot.keyClick(view, Qt.Key.Key_Z, ctrl)
    assert editor.document.template.node("announce") is not None
    qtbot.keyClick(view, Qt.Key.Key_Y, ctrl)
    assert editor.document.template.node("announce") is None  # Ctrl+Y redid the delete
    qtbot.keyClick(view, Qt.Key.Key_Z, ctrl)
    qtbot.keyClick(view, Qt.Key.Key_Z, ctrl | Qt.KeyboardModifier.ShiftModifier)
    assert editor.document.template.node("announce") is None
    assert "Ctrl+Y" in editor.redo_action.toolTip() or not editor.redo_action.isEnabled()


def test_a_list_input_is_edited_one_item_per_row(demo: WorkflowEditor) -> None:
    from stella_desk.workflows.listedit import ListEditor

    editor = demo
    editor.scene.select_nodes(["pull"])
    row = editor.inspector.rows["inputs.command"]
    items = row.editor
    assert isinstance(items, ListEditor)
    # One row per item, as the person reads them: no brackets, no quotes.
    assert [r.text() for r in items.rows] == ["./deploy/pull.sh", "web", "worker"]

    added = items.add_item()
    added.setText("api")
    added.editingFinished.emit()
    assert editor.document.template.node("pull").inputs["command"] == [
        "./deploy/pull.sh",
        "web",
        "worker",
        "api",
    ]
    items.remove_item(1)  # "web"
    assert editor.document.template.node("pull").inputs["command"] == [
        "./deploy/pull.sh",
        "worker",
        "api",
    ]
    # Each change is one undoable command.
    editor.document.undo_stack.undo()
    assert editor.document.template.node("pull").inputs["command"][1] == "web"
    assert [r.text() for r in items.rows] == ["./deploy/pull.sh", "web", "worker", "api"]

    # A blank row is being filled in: it is not an item yet and the edit waits for it.
    items.add_item()
    assert editor.document.template.node("pull").inputs["command"][-1] == "api"
    assert len(items.rows) == 5

    # The approval step's people are a list of strings too.
    editor.scene.select_nodes(["approve"])
    approvers = editor.inspector.rows["inputs.approvers"].editor
    assert isinstance(approvers, ListEditor)
    first = approvers.rows[0]
    first.setText("carol")
    first.editingFinished.emit()
    assert editor.document.template.node("approve").inputs["approvers"] == ["carol"]
