"""The person switch proves who acts: outside a demo it asks for the person's key passphrase and
opens their key with it before acting (and signing) as them; a person with no passphrase of
their own cannot be switched to. On a database that says it is a demo the switch is one click,
and the window says so where every screenshot shows it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from PySide6.QtCore import QPoint, QRect, Qt
from PySide6.QtGui import QColor, QImage

from stella_core.evidence.model import Filter
from stella_core.tenancy.model import ProductRole
from stella_desk.person import DEMO_TEXT
from stella_desk.session import Session
from stella_desk.window import WINDOW_SIZE, MainWindow

from .test_promotions_pages import R1, People, inbox, shown_case, until

BOBS = "bob's own words"


def acting_as(desk: MainWindow) -> str:
    return desk.session.require().profile.name


@pytest.fixture
def real(world, seeded, superuser):
    """The demo's people and releases on a database that does not say it is a demo, with bob's
    key under his own passphrase (as 'stella --profile bob keys passphrase' puts it)."""
    superuser.execute("UPDATE tenancy.tenants SET demo = false")
    world.open("bob").evidence.protect_personal_key(BOBS)
    return seeded


def open_desk(qtbot, run, ops, stella) -> MainWindow:
    window = MainWindow(ops, Session())
    qtbot.addWidget(window)
    window.resize(WINDOW_SIZE)
    window.show()
    run(window.attach(stella))
    return window


@pytest.fixture
def real_desk(qtbot, run, ops, real) -> Iterator[MainWindow]:
    window = open_desk(qtbot, run, ops, real)
    yield window
    run(ops.idle())
    current = window.session.stella
    if current is not None and current is not real:
        current.close(keep_backend=True)


def test_outside_a_demo_the_switch_asks_for_the_persons_passphrase(
    real_desk, run, qtbot, real, world
) -> None:
    desk = real_desk
    admin = acting_as(desk)
    assert not desk.session.demo
    assert not desk.demo_badge.isVisible()

    # carol's key has no passphrase of her own: nothing would prove it is her, so no switch.
    assert run(desk.switch_person("carol")) is False
    refused = desk.passphrase_dialog
    assert refused is not None
    assert refused.isVisible()
    assert not refused.passphrase.isVisible()
    assert not refused.switch_button.isVisible()
    intro = " ".join(w.text() for w in refused.findChildren(type(desk.acting)))
    assert "stella --profile carol keys passphrase" in intro
    assert acting_as(desk) == admin
    assert desk.person.currentText() == admin
    refused.cancel_button.click()
    assert desk.passphrase_dialog is None

    # bob's is: the dialog asks for it, and a wrong one is refused there.
    assert run(desk.switch_person("bob")) is False
    dialog = desk.passphrase_dialog
    assert dialog is not None
    assert dialog.passphrase.isVisible()
    assert dialog.passphrase.echoMode() == dialog.passphrase.EchoMode.Password
    assert not dialog.switch_button.isEnabled()  # nothing typed yet
    dialog.passphrase.setText("a guess")
    assert run(dialog.prove()) is False
    assert "that passphrase does not open bob's signing key" in dialog.refusal()
    assert dialog.passphrase.text() == ""  # the guess does not linger
    assert dialog.isVisible()
    assert acting_as(desk) == admin
    assert desk.banner.isHidden()  # refused in the dialog, not again in the window

    # The right one: the desk acts as bob.
    qtbot.keyClicks(dialog.passphrase, BOBS)
    qtbot.mouseClick(dialog.switch_button, Qt.MouseButton.LeftButton)
    run(until(lambda: acting_as(desk) == "bob"))
    run(desk.ops.idle())
    assert not dialog.isVisible()
    assert dialog.passphrase.text() == ""
    assert desk.person.currentText() == "bob"
    assert desk.role_badge.text() == "approver"

    # ... and signs as bob: the approval counts and its signature verifies.
    people = People(world)
    people.deploy(R1, "dev")
    stage = people.alice.promotions.request(R1, "stage", "to stage")
    page = inbox(desk, run)
    page.select_promotion(stage.id)
    run(until(lambda: shown_case(page, stage.id)))
    qtbot.mouseClick(page.decision.approve_button, Qt.MouseButton.LeftButton)
    run(until(lambda: page.model.row_of(stage.id) is None))
    assert page.decision.refusal() == ""
    decided = people.alice.promotions.get(stage.id)
    assert [(a.by, a.signature_ok) for a in decided.approvals] == [("bob", True)]
    (packet,) = real.evidence.find(Filter(type="approval", promotion_id=stage.id))
    assert real.evidence.get(packet.id)["verified"] is True
    assert real.evidence.verify_ledger().ok

    # Back to the person the desk was opened as: at once. bob's passphrase left with him.
    assert run(desk.switch_person(admin)) is True
    assert acting_as(desk) == admin
    assert run(desk.switch_person("bob")) is False
    assert desk.passphrase_dialog is not None
    desk.passphrase_dialog.reject()


def test_a_desk_opened_as_a_person_with_a_passphrase_asks_before_they_sign(
    qtbot, run, ops, real, world
) -> None:
    people = People(world)
    people.deploy(R1, "dev")
    stage = people.alice.promotions.request(R1, "stage", "to stage")
    desk = open_desk(qtbot, run, ops, world.open("bob"))
    page = inbox(desk, run)
    page.select_promotion(stage.id)
    run(until(lambda: shown_case(page, stage.id)))
    qtbot.mouseClick(page.decision.approve_button, Qt.MouseButton.LeftButton)
    run(until(lambda: page.decision.refusal() != ""))
    assert "bob's signing key is protected by their own passphrase" in page.decision.refusal()
    assert "Choose yourself under Person" in page.decision.refusal()
    assert not people.alice.promotions.get(stage.id).approvals  # nothing recorded

    # Choosing himself in the switch asks for it; then his approval is signed.
    assert run(desk.switch_person("bob")) is False
    dialog = desk.passphrase_dialog
    assert dialog is not None
    dialog.passphrase.setText(BOBS)
    assert run(dialog.prove()) is True
    run(desk.ops.idle())
    page = inbox(desk, run)
    page.select_promotion(stage.id)
    run(until(lambda: shown_case(page, stage.id)))
    qtbot.mouseClick(page.decision.approve_button, Qt.MouseButton.LeftButton)
    run(until(lambda: page.model.row_of(stage.id) is None))
    decided = people.alice.promotions.get(stage.id)
    assert [(a.by, a.signature_ok) for a in decided.approvals] == [("bob", True)]
    assert run(desk.switch_person("bob")) is True  # unlocked now: nothing more to ask
    run(ops.idle())
    desk.session.require().close(keep_backend=True)


def test_a_demo_database_says_so_and_switches_in_one_click(desk, run, world, tmp_path) -> None:
    assert desk.session.demo
    badge = desk.demo_badge
    assert badge.isVisible()
    assert badge.text() == DEMO_TEXT
    # In the picture: the badge's amber is where the badge is.
    image = desk.grab().toImage()
    origin = badge.mapTo(desk, QPoint(0, 0))
    area = image.copy(QRect(origin, badge.size())).convertToFormat(QImage.Format.Format_RGB32)
    amber = QColor("#fff1d6").rgb()
    assert any(area.pixel(x, y) == amber for x in range(area.width()) for y in range(area.height()))

    assert run(desk.switch_person("carol")) is True
    assert desk.passphrase_dialog is None
    assert acting_as(desk) == "carol"
    assert desk.role_badge.text() == "approver"
    assert badge.isVisible()  # always, whoever acts

    # A demo person who did put their key under a passphrase is still asked for it.
    world.open("bob").evidence.protect_personal_key(BOBS)
    assert run(desk.switch_person("bob")) is False
    assert desk.passphrase_dialog is not None
    desk.passphrase_dialog.reject()
    assert acting_as(desk) == "carol"


def test_a_person_added_with_a_passphrase_is_asked_for_it(qtbot, run, ops, real, world) -> None:
    real.add_person("erin", ProductRole.APPROVER, passphrase="erin's own")
    desk = open_desk(qtbot, run, ops, real)
    assert "erin" in [desk.person.itemText(i) for i in range(desk.person.count())]
    assert run(desk.switch_person("erin")) is False
    dialog = desk.passphrase_dialog
    assert dialog is not None
    dialog.passphrase.setText("erin's own")
    assert run(dialog.prove()) is True
    assert acting_as(desk) == "erin"
    run(ops.idle())
    desk.session.require().close(keep_backend=True)
