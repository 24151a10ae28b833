"""Creating a release from the dialog, against the seeded demo registry (an OCI layout)."""

from __future__ import annotations

from PySide6.QtCore import Qt

from stella_desk.ops import OpProgress
from stella_desk.releases.create import CreateReleaseDialog
from stella_desk.window import MainWindow


def open_dialog(qtbot, desk: MainWindow, run) -> CreateReleaseDialog:
    desk.show_page("releases")
    qtbot.mouseClick(desk.releases.new_button, Qt.MouseButton.LeftButton)
    dialog = desk.releases.dialog
    assert dialog is not None
    run(desk.ops.idle())  # the components load on a worker thread
    assert dialog.isVisible()
    assert [c.name for c in dialog.components] == ["api", "web", "worker"]
    return dialog


def release_names(stella) -> list[str]:
    return sorted(r.name for r in stella.releases.list_releases())


def test_dialog_creates_a_release_and_the_browser_selects_it(qtbot, desk, run, seeded) -> None:
    dialog = open_dialog(qtbot, desk, run)
    progress: list[OpProgress] = []
    desk.ops.progressed.connect(progress.append)

    qtbot.keyClicks(dialog.name, "shop-2026.12.1")
    dialog.rows[0].set_component("web")
    qtbot.keyClicks(dialog.rows[0].reference, "1.2.0")
    qtbot.mouseClick(dialog.add_button, Qt.MouseButton.LeftButton)
    second = dialog.rows[1]
    assert second.component_name == "api"  # the next component not yet pinned
    qtbot.keyClicks(second.reference, "2.4.0")
    assert dialog.error_texts() == []

    with qtbot.waitSignal(dialog.created, timeout=1000) as created:
        qtbot.mouseClick(dialog.create_button, Qt.MouseButton.LeftButton)
        run(desk.ops.idle())
    release = created.args[0]

    assert not dialog.isVisible()
    stored = seeded.releases.get_release("shop-2026.12.1")
    assert stored == release
    assert [(c.name, c.tag) for c in stored.components] == [("web", "1.2.0"), ("api", "2.4.0")]
    # Same tag, same image: the digest matches what the seeded release pinned for web 1.2.0.
    earlier = seeded.releases.get_release("shop-2026.11.3")
    assert stored.components[0].digest == earlier.components[0].digest

    # Progress crossed from the worker thread: "resolving digests", then each pin, to 2/2.
    assert progress[0].done == 0
    assert progress[0].total == 2
    assert (progress[-1].done, progress[-1].total) == (2, 2)

    browser = desk.releases
    assert browser.selected_release() == release
    assert browser.proxy.release_at(0).name == "shop-2026.12.1"
    assert browser.detail.digest_texts() == [c.digest for c in release.components]
    assert browser.count.text() == "4 releases"
    assert desk.dashboard.release_count.text() == "4"


def test_bad_name_and_tag_show_errors_in_place_and_store_nothing(qtbot, desk, run, seeded) -> None:
    before = release_names(seeded)
    dialog = open_dialog(qtbot, desk, run)

    qtbot.keyClicks(dialog.name, "-bad name")
    qtbot.keyClicks(dialog.rows[0].reference, "bad tag!")
    # Validation as you type: both fields red, each with the reason under it.
    assert dialog.name.property("invalid") is True
    assert dialog.rows[0].reference.property("invalid") is True
    assert "invalid release name '-bad name'" in dialog.name_error.text()
    assert "invalid tag 'bad tag!'" in dialog.rows[0].error.text()
    assert dialog.rows[0].error.isVisible()

    qtbot.mouseClick(dialog.create_button, Qt.MouseButton.LeftButton)
    run(desk.ops.idle())
    assert dialog.isVisible()
    assert release_names(seeded) == before

    # Fixing the name leaves only the tag error.
    dialog.name.setText("shop-2026.12.2")
    assert dialog.name.property("invalid") is False
    assert dialog.error_texts() == [dialog.rows[0].error.text()]


def test_unknown_tag_shows_the_registry_error_in_place(qtbot, desk, run, seeded) -> None:
    before = release_names(seeded)
    dialog = open_dialog(qtbot, desk, run)
    qtbot.keyClicks(dialog.name, "shop-2026.12.9")
    dialog.rows[0].set_component("web")
    qtbot.keyClicks(dialog.rows[0].reference, "9.9")

    qtbot.mouseClick(dialog.create_button, Qt.MouseButton.LeftButton)
    run(desk.ops.idle())

    assert dialog.isVisible()
    message = dialog.rows[0].error.text()
    assert message.startswith("Not in the registry: shop/web:9.9 not found")
    assert dialog.rows[0].reference.property("invalid") is True
    assert dialog.create_button.isEnabled()  # fix the tag and try again
    assert dialog.progress.isHidden()
    assert desk.banner.isHidden()  # shown in the dialog, not again in the window
    assert release_names(seeded) == before


def test_an_auditor_is_told_in_place_that_they_may_not_create(qtbot, desk, run, seeded) -> None:
    people = [desk.person.itemText(i) for i in range(desk.person.count())]
    assert {"alice", "bob", "carol", "dave"} <= set(people)
    run(desk.switch_person("dave"))
    assert desk.role_badge.text() == "auditor"
    assert desk.dashboard.person.text() == "dave"
    run(desk.ops.idle())  # views refresh for the new person
    assert desk.releases.model.rowCount() == 3

    before = release_names(seeded)
    dialog = open_dialog(qtbot, desk, run)
    qtbot.keyClicks(dialog.name, "shop-2026.12.3")
    qtbot.keyClicks(dialog.rows[0].reference, "2.4.0")
    qtbot.mouseClick(dialog.create_button, Qt.MouseButton.LeftButton)
    run(desk.ops.idle())
    assert dialog.error_texts() == [
        "Not allowed: dave is auditor; this needs release-manager or admin"
    ]
    assert release_names(seeded) == before
