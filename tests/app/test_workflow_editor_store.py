"""The editor against the real workflow service (PostgreSQL): save as a new version, the list
of stored templates, opening a version, comparing two versions, and the rendered page.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QPoint, QRect
from PySide6.QtGui import QImage

from stella_desk.screenshots import render_screens
from stella_desk.window import MainWindow
from stella_desk.workflows.items import Mark

from .conftest import next_emission
from .test_screens import distinct_colours


def test_save_creates_a_new_version_after_an_edit(desk: MainWindow, run) -> None:
    editor = desk.workflows
    stella = desk.session.stella
    desk.show_page("workflows")
    editor.open_sample()
    assert editor.version_chip.text() == "not saved yet"

    assert run(editor.save()) == ("promote-web", 1)
    assert not editor.document.modified
    assert editor.modified_marker.isHidden()
    assert editor.version_chip.text() == "version 1"

    editor.controller.move({"announce": (1100.0, 110.0)})
    editor.scene.select_nodes(["check_web"])
    row = editor.inspector.rows["inputs.url"]
    row.editor.setText("https://web.shop.example/ready")
    row.editor.editingFinished.emit()
    assert editor.modified_marker.isVisible()

    assert run(editor.save()) == ("promote-web", 2)
    assert editor.document.template.version == 2  # the store's number
    assert editor.version_chip.text() == "version 2"
    assert editor.modified_marker.isHidden()
    assert editor.document.undo_stack.isClean()
    assert "version 2" in editor.notice.text()
    versions = [v.version for v in stella.workflows.template_versions("promote-web")]
    assert sorted(versions) == [1, 2]
    stored = stella.workflows.export_template("promote-web", 2)
    assert stored == editor.document.template.to_document()

    # The list on the left shows the template with both versions.
    assert editor.library.versions_of("promote-web") == [2, 1]
    assert editor.library.item_for("promote-web", 1) is not None

    # Saving again without a change makes no new version.
    assert run(editor.save()) == ("promote-web", 2)

    # An invalid template is not saved; the reason is shown and the canvas keeps the edit.
    editor.controller.add_node("wait", (1300.0, 110.0))
    assert run(editor.save()) is None
    assert "seconds" in editor.notice.text()
    assert editor.document.modified
    assert sorted(v.version for v in stella.workflows.template_versions("promote-web")) == [1, 2]


def test_open_a_version_from_the_list_and_compare_two_versions(desk: MainWindow, run) -> None:
    editor = desk.workflows
    desk.show_page("workflows")
    editor.open_sample()
    run(editor.save())
    editor.scene.select_nodes(["announce"])
    editor.controller.delete_selection()
    editor.controller.add_node("wait", (900.0, 200.0))
    editor.controller.connect_steps("check_web", "wait")
    seconds = editor.inspector.rows["inputs.seconds"].editor  # the new step is selected
    seconds.setText("30")
    seconds.editingFinished.emit()
    editor.scene.select_nodes(["deploy"])
    name = editor.inspector.rows["name"].editor
    name.setText("Deploy everything")
    name.editingFinished.emit()
    assert run(editor.save()) == ("promote-web", 2)

    # An unsaved change asks before another version replaces it (inline, not a modal dialog).
    editor.controller.move({"wait": (950.0, 250.0)})
    item = editor.library.item_for("promote-web", 1)
    editor.library.itemActivated.emit(item, 0)
    run(desk.ops.idle())
    assert editor.confirm.isVisible()
    assert editor.document.origin == ("promote-web", 2)
    editor.confirm.go.click()
    run(desk.ops.idle())
    assert editor.document.origin == ("promote-web", 1)
    assert editor.document.template.node("announce") is not None
    assert not editor.document.modified
    assert editor.document.undo_stack.count() == 0

    # Compare v1 (on the canvas) with v2.
    editor.compare.select(1, 2)
    run(editor.compare_versions(1, 2))
    result = editor.compare.result
    assert result is not None
    assert result.nodes_added == ("wait",)
    assert result.nodes_removed == ("announce",)
    assert [c.id for c in result.nodes_changed] == ["deploy"]
    assert ("check_web", "wait") in result.edges_added
    assert ("check_web", "announce") in result.edges_removed
    # Marked on the canvas (v1 is shown, so the removed step and its edge are there).
    assert editor.scene.item_for_node["announce"].mark is Mark.REMOVED
    assert editor.scene.item_for_node["deploy"].mark is Mark.CHANGED
    assert editor.scene.item_for_edge[("check_web", "announce")].mark is Mark.REMOVED
    top = [editor.compare.tree.topLevelItem(i).text(0) for i in range(3)]
    assert top == ["Steps added (1)", "Steps removed (1)", "Steps changed (1)"]
    editor.compare.clear_button.click()
    assert editor.scene.item_for_node["announce"].mark is None


def test_the_editor_screenshot_is_not_blank(desk: MainWindow, run, tmp_path: Path) -> None:
    paths = run(render_screens(desk, tmp_path))
    shot = next(p for p in paths if p.stem == "workflows")
    image = QImage(str(shot))
    assert not image.isNull()
    assert distinct_colours(image) > 200
    # The canvas itself: cards, category colours, edges and the rollback lane.
    view = desk.workflows.view.viewport()
    area = QRect(view.mapTo(desk, QPoint(0, 0)), view.size())
    assert distinct_colours(image, area) > 150
    editor = desk.workflows
    assert len(editor.scene.item_for_node) == 5  # the demo template is loaded
    assert len(editor.scene.item_for_edge) == 4


def test_save_is_refused_while_the_name_field_is_invalid(desk: MainWindow, run) -> None:
    editor = desk.workflows
    stella = desk.session.stella
    desk.show_page("workflows")
    editor.open_sample()
    assert run(editor.save()) == ("promote-web", 1)
    editor.scene.select_nodes([])  # the inspector shows the workflow's own fields
    name = editor.inspector.rows["template.name"].editor
    name.setText("Promote Web!")  # typed, not yet left: Ctrl+S comes straight after
    name.textEdited.emit(name.text())

    assert run(editor.save()) is None
    assert "Not saved" in editor.notice.text()
    assert "name" in editor.notice.text()
    assert name.property("invalid") is True
    assert name.hasFocus() or editor.inspector.rows["template.name"].error.text()
    assert "promote-web-2" not in [t.name for t in stella.workflows.list_templates()]
    assert len(stella.workflows.template_versions("promote-web")) == 1

    # Corrected, the save goes under the new name.
    name.setText("promote-web-2")
    name.textEdited.emit(name.text())
    assert run(editor.save()) == ("promote-web-2", 1)
    assert editor.inspector.rows["template.name"].error.text() == ""


def test_rename_and_delete_a_workflow_from_the_library(desk: MainWindow, run, qtbot) -> None:
    from PySide6.QtCore import Qt

    editor = desk.workflows
    stella = desk.session.stella
    desk.show_page("workflows")
    editor.open_sample()
    assert run(editor.save()) == ("promote-web", 1)
    assert not editor.rename_button.isEnabled() or editor.library.selected_name() is not None

    assert editor.library.select_name("promote-web")
    assert editor.rename_button.isEnabled()
    editor.rename_button.click()
    dialog = editor.rename_dialog
    assert dialog is not None
    assert dialog.isVisible()
    dialog.name.setText("Web Promote!")  # not a name: refused before anything is asked
    assert not dialog.rename_button.isEnabled()
    assert dialog.error_box.isVisible()
    dialog.name.setText("deliver")  # the seed's workflow has this name
    assert dialog.rename_button.isEnabled()
    run(dialog.submit())
    assert dialog.isVisible()
    assert "exists already" in dialog.error_box.text.text()
    dialog.name.setText("web-promote")
    qtbot.mouseClick(dialog.rename_button, Qt.MouseButton.LeftButton)
    run(next_emission(dialog.renamed))
    run(desk.ops.idle())
    names = [t.name for t in stella.workflows.list_templates()]
    assert "web-promote" in names
    assert "promote-web" not in names
    assert editor.library.versions_of("web-promote") == [1]
    assert editor.name_label.text() == "web-promote"  # the canvas shows it under its new name
    assert "Renamed promote-web to web-promote" in editor.notice.text()

    # Delete asks first, in place; "Keep it" changes nothing.
    editor.library.select_name("web-promote")
    editor.delete_button.click()
    assert editor.confirm.isVisible()
    assert "web-promote" in editor.confirm.text.text()
    editor.confirm.keep.click()
    assert "web-promote" in [t.name for t in stella.workflows.list_templates()]
    editor.delete_button.click()
    editor.confirm.go.click()
    run(desk.ops.idle())
    assert "web-promote" not in [t.name for t in stella.workflows.list_templates()]
    assert editor.library.versions_of("web-promote") == []
    assert "Deleted web-promote" in editor.notice.text()


def test_deleting_the_workflow_an_environment_deploys_with_is_refused(
    desk: MainWindow, run
) -> None:
    editor = desk.workflows
    stella = desk.session.stella
    desk.show_page("workflows")
    run(editor.refresh())
    used = next(e.workflow for e in stella.environments.list() if e.workflow)
    assert editor.library.select_name(used)
    editor.delete_button.click()
    editor.confirm.go.click()
    run(desk.ops.idle())
    assert "Not deleted" in editor.notice.text()
    assert "deploy with it" in editor.notice.text()
    assert used in [t.name for t in stella.workflows.list_templates()]
