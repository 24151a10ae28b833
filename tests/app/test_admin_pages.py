"""Administration and Settings on the desk over a real database: an admin adds an environment and
changes its policy from the page (the core and the CLI see the signed versions), a freeze is
lifted, each role gets only the controls its role may use (an auditor none), the requester is
not offered Approve, and a shared server saved in Settings is used at the next start without
STELLA_DATABASE_URL. Every page is rendered to a PNG that is looked at."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QImage
from sqlalchemy.engine import make_url

from stella_core.profiles import DATABASE_URL_ENV, DatabaseSetting, target_of
from stella_desk.admin.page import AdminPage
from stella_desk.admin.settings import SettingsPage
from stella_desk.main import parse_args, run_desk
from stella_desk.session import Session
from stella_desk.window import MainWindow
from tests.integration.test_cli import ok_json

from .conftest import next_emission
from .test_screens import distinct_colours

R1 = "shop-2026.11.1"


async def until(predicate: Callable[[], Any], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("the window never got there")
        await asyncio.sleep(0.05)


def admin_page(desk: MainWindow, run) -> AdminPage:
    page = desk.show_page("admin")
    assert isinstance(page, AdminPage)
    run(page.refresh())
    return page


def shot(widget, path: Path) -> QImage:
    assert widget.grab().save(str(path))
    image = QImage(str(path))
    assert distinct_colours(image) > 60, path  # text and borders, not a blank grab
    return image


def test_an_admin_adds_an_environment_and_changes_its_policy(
    desk, run, world, seeded, tmp_path
) -> None:
    page = admin_page(desk, run)
    tab = page.show_tab(page.environments)
    assert [e.name for e in tab.model.records] == ["dev", "stage", "prod"]
    assert tab.add.isVisible()
    assert not tab.read_only.isVisible()

    dialog = tab.open_add()
    run(until(lambda: dialog.people.count() > 0))
    dialog.name.setText("qa")
    assert dialog.order.value() == 3  # after the last environment
    dialog.required.setValue(1)
    dialog.sod.setChecked(True)
    dialog.reason.setText("a place to test")
    added = run(dialog.submit())
    assert added is not None
    qa = seeded.environments.get("qa")
    assert (qa.required_approvals, qa.separation_of_duties, qa.policy_version) == (1, True, 1)
    run(until(lambda: "qa" in [e.name for e in tab.model.records]))

    # Change its policy: two approvals, at least one from an approver, carol named.
    assert tab.select_where(lambda e: e.name == "qa")
    dialog = tab.open_edit()
    assert dialog is not None
    run(until(lambda: dialog.people.count() > 0))
    dialog.required.setValue(2)
    dialog.quorum["approver"].setValue(1)
    for i in range(dialog.people.count()):
        item = dialog.people.item(i)
        if item.text() == "carol":
            item.setCheckState(Qt.CheckState.Checked)
    # No reason: refused in place, and the buttons stay where the pointer is.
    before = dialog.primary.mapTo(dialog, QPoint(0, 0))
    assert run(dialog.submit()) is None
    assert dialog.error.text() == "A policy change needs a reason: say why it changes."
    assert dialog.primary.mapTo(dialog, QPoint(0, 0)) == before
    assert seeded.environments.get("qa").policy_version == 1
    dialog.reason.setText("more eyes before release")
    shot(dialog, tmp_path / "environment-policy.png")
    assert run(dialog.submit()) is not None

    qa = seeded.environments.get("qa")
    assert qa.policy_version == 2
    assert qa.required_approvals == 2
    assert qa.quorum == {"approver": 1}
    assert qa.approver_persons == ("carol",)
    # The command line sees the same two signed versions, set by the admin at the desk.
    versions = ok_json(world.env(), "env", "policies", "qa", "--output", "json")
    admin = seeded.tenancy.whoami().user
    assert [(v["version"], v["changed_by"]) for v in versions] == [(1, admin), (2, admin)]
    assert all(v["packet"] for v in versions)
    # The page's history lists them, newest first.
    run(until(lambda: [v["version"] for v in tab.history.records] == [2, 1]))
    assert tab.history_title.text() == "POLICY HISTORY · QA"
    shot(desk, tmp_path / "admin-environments.png")


def test_an_admin_lifts_a_freeze_from_the_page(desk, run, world, seeded, tmp_path) -> None:
    now = datetime.now(UTC)
    alice = world.open("alice")
    freeze = alice.environments.freeze(
        "prod", start=now - timedelta(hours=1), end=now + timedelta(days=2), reason="year-end"
    )
    page = admin_page(desk, run)
    tab = page.show_tab(page.freezes)
    assert tab.select_where(lambda f: f.id == freeze.id)
    assert tab.model.columns[1].text(tab.selected()) == "in force"
    assert tab.lift.isEnabled()
    shot(desk, tmp_path / "admin-freezes.png")

    dialog = tab.open_lift()
    assert dialog is not None
    assert run(dialog.submit()) is None  # no reason
    assert "Say why the freeze is lifted" in dialog.error.text()
    dialog.why.setText("release approved by the board")
    shot(dialog, tmp_path / "lift-freeze.png")
    lifted = run(dialog.submit())
    assert lifted is not None
    assert lifted.lifted

    found = alice.environments.find_freeze(freeze.id)
    assert found.lifted_at is not None
    assert found.change_reason == "release approved by the board"
    assert alice.environments.freezes("prod", ending_after=datetime.now(UTC)) == []
    run(
        until(
            lambda: (
                tab.model.records and tab.model.columns[1].text(tab.model.records[0]) == "lifted"
            )
        )
    )
    assert tab.select_where(lambda f: f.id == freeze.id)
    assert not tab.lift.isEnabled()  # a lifted freeze is history


def test_each_role_gets_only_its_controls_and_an_auditor_none(desk, run, seeded, tmp_path) -> None:
    now = datetime.now(UTC)
    seeded.environments.freeze(
        "prod", start=now + timedelta(days=1), end=now + timedelta(days=3), reason="audit week"
    )
    page = admin_page(desk, run)
    run(desk.switch_person("dave"))  # the demo's auditor
    run(page.refresh())
    for tab, title in page.all_tabs():
        assert tab.model.rowCount() > 0, title  # they read everything...
        assert all(b.isHidden() for b in tab.edit_buttons), title  # ...and change nothing
        assert tab.read_only.text().startswith("Read only"), title
        assert not tab.read_only.isHidden(), title
    assert desk.releases.new_button.isHidden()
    assert desk.promotions.promote_button.isHidden()
    assert desk.workflows.save_button.isHidden()
    assert not desk.workflows.save_action.isVisible()  # Ctrl+S does nothing either
    page.show_tab(page.freezes)
    shot(desk, tmp_path / "admin-as-auditor.png")

    # A release manager adds freezes, registries and components; admins do the rest.
    run(desk.switch_person("alice"))
    run(page.refresh())
    assert not page.freezes.add.isHidden()
    assert page.freezes.lift.isHidden()
    assert page.freezes.edit.isHidden()
    assert page.freezes.read_only.text() == "Admins edit and lift freezes"
    assert not page.registries.add.isHidden()
    assert not page.registries.remove.isHidden()
    assert not page.components.add.isHidden()
    assert page.environments.add.isHidden()
    assert page.people.add.isHidden()
    assert not desk.releases.new_button.isHidden()
    assert desk.workflows.save_action.isVisible()


def test_the_requester_is_not_offered_approve(desk, run, world, seeded) -> None:
    # stage needs one approval and no separation of duties: the admin who requests it sees it.
    alice = world.open("alice")
    dev = alice.promotions.request(R1, "dev", "first")
    alice.workflows.wait_run(dev.run_id, timeout=60)
    stage = seeded.promotions.request(R1, "stage", "mine")
    page = desk.show_page("approvals")
    run(page.refresh())
    page.select_promotion(stage.id)
    run(until(lambda: page.case_view.case is not None))
    assert not page.decision.approve_button.isEnabled()
    assert "You requested this promotion" in page.decision.approve_button.toolTip()
    assert page.decision.reject_button.isEnabled()
    # bob did not request it: he may approve.
    run(desk.switch_person("bob"))
    run(until(lambda: page.model.row_of(stage.id) is not None))
    page.select_promotion(stage.id)
    run(until(lambda: page.decision.promotion_id == stage.id))
    assert page.decision.approve_button.isEnabled()


def test_settings_saves_a_server_and_the_next_start_uses_it_without_the_variable(
    desk,
    world,
    monkeypatch,
    request,
    qapp,
    qtbot,
    run,
    ops,
    tmp_path,
) -> None:
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    settings = desk.show_page("settings")
    assert isinstance(settings, SettingsPage)
    run(settings.refresh())
    assert settings.embedded.isChecked()
    url = make_url(world.admin_url)
    settings.shared.setChecked(True)
    settings.host.setText(url.host or "")
    settings.port.setValue(url.port or 5432)
    settings.database.setText(url.database or "")
    settings.user.setText(url.username or "")

    # A wrong password: said in place, nothing saved, the password never shown.
    settings.password.setText("wrong-password-z9")
    assert run(settings.save()) is False
    assert settings.result.text().startswith("Could not connect")
    assert "wrong-password-z9" not in settings.result.text()
    assert DatabaseSetting(world.home).shown() is None

    settings.password.setText(url.password or "")
    assert run(settings.test()) is not None
    assert settings.result.text().startswith("Connected: PostgreSQL 1")
    assert run(settings.save()) is True
    saved = (world.home / "database.json").read_text()
    assert (url.password or "?") not in saved
    assert settings.password.text() == ""
    assert settings.password.placeholderText() == "saved (leave empty to keep it)"
    shot(desk, tmp_path / "settings.png")

    # The next start: STELLA_HOME only, no STELLA_DATABASE_URL; it reaches the saved server.
    monkeypatch.setenv("STELLA_HOME", str(world.home))
    qapp.setQuitOnLastWindowClosed(False)
    request.addfinalizer(lambda: qapp.setQuitOnLastWindowClosed(True))
    window = MainWindow(ops, Session())
    qtbot.addWidget(window)
    window.show()

    async def start_and_close() -> int:
        running = asyncio.ensure_future(run_desk(parse_args([]), window, ops))
        await next_emission(window.releases.loaded)
        stella = window.session.stella
        assert stella is not None
        assert stella.backend.target == target_of(world.admin_url)
        assert window.releases.model.rowCount() == 3  # the seeded world's releases
        window.close()
        return await running

    assert run(start_and_close()) == 0


def test_registries_components_and_people_are_added_from_their_tabs(
    desk, run, seeded, tmp_path
) -> None:
    page = admin_page(desk, run)
    registries = page.show_tab(page.registries)
    dialog = registries.open_add()
    dialog.name.setText("mirror")
    dialog.url.setText("https://registry.example.test")
    dialog.username.setText("ci")
    assert run(dialog.submit()) is None  # a user without a password
    assert "password" in dialog.error.text()
    dialog.password.setText("s3cret-p4ss")
    shot(dialog, tmp_path / "add-registry.png")
    assert run(dialog.submit()) is not None
    [mirror] = [r for r in seeded.releases.list_registries() if r.name == "mirror"]
    assert mirror.username == "ci"
    assert mirror.has_password
    run(until(lambda: registries.select_where(lambda r: r.name == "mirror")))
    cells = [
        registries.model.data(registries.model.index(row, col))
        for row in range(registries.model.rowCount())
        for col in range(registries.model.columnCount())
    ]
    assert "held (sealed)" in cells
    assert not any("s3cret" in str(c) for c in cells)
    shot(desk, tmp_path / "admin-registries.png")

    components = page.show_tab(page.components)
    dialog = components.open_add()
    run(until(lambda: dialog.registry.count() > 0))
    dialog.name.setText("cart")
    dialog.registry.setCurrentText("mirror")
    dialog.repository.setText("shop/cart")
    assert run(dialog.submit()) is not None
    [cart] = [c for c in seeded.releases.list_components() if c.name == "cart"]
    assert (cart.registry, cart.repository) == ("mirror", "shop/cart")
    run(until(lambda: components.select_where(lambda c: c.name == "cart")))
    shot(desk, tmp_path / "admin-components.png")

    # A registry a component uses stays (said in place); one nobody uses goes.
    page.show_tab(registries)
    assert registries.select_where(lambda r: r.name == "mirror")
    remove = registries.open_remove()
    assert remove is not None
    assert run(remove.submit()) is None
    assert "used by component(s) cart" in remove.error.text()
    remove.reject()
    seeded.releases.add_registry("spare", "https://spare.example.test")
    run(registries.refresh())
    assert registries.select_where(lambda r: r.name == "spare")
    remove = registries.open_remove()
    assert remove is not None
    assert run(remove.submit()) is not None
    assert "spare" not in [r.name for r in seeded.releases.list_registries()]
    run(until(lambda: "spare" not in [r.name for r in registries.model.records]))

    people = page.show_tab(page.people)
    dialog = people.open_add()
    dialog.name.setText("erin")
    dialog.role.setCurrentText("approver")
    shot(dialog, tmp_path / "add-person.png")
    assert run(dialog.submit()) is not None
    assert seeded.tenancy.get_user("erin").role.value == "approver"
    assert "erin" in seeded.profiles.names(seeded.backend.target)  # she can be acted as here
    run(until(lambda: people.select_where(lambda u: u.name == "erin")))
    assert desk.person.findText("erin") >= 0  # and the person switch offers her at once
    shot(desk, tmp_path / "admin-people.png")

    # The freeze and environment dialogs as a person first sees them.
    freezes = page.show_tab(page.freezes)
    add_freeze = freezes.open_add()
    run(until(lambda: add_freeze.allow.count() > 0))
    shot(add_freeze, tmp_path / "add-freeze.png")
    add_freeze.reject()
    environments = page.show_tab(page.environments)
    add_env = environments.open_add()
    run(until(lambda: add_env.people.count() > 0))
    shot(add_env, tmp_path / "add-environment.png")
    # Everything fits a 1280x720 screen: the pages beside the 200 px navigation, under the
    # tool and status bars, and the tallest dialog.
    for widget in (page, desk.settings):
        needs = widget.minimumSizeHint()
        assert needs.width() <= 1080, needs
        assert needs.height() <= 620, needs
    assert add_env.sizeHint().height() <= 700
    add_env.reject()
