"""Promotions on the desk over a real database: the pipeline board, the wizard's gate preview and
request, separation of duties in the approval inbox, a decision counted, refusals explained where
the person acted, the why-blocked panel for a freeze, and a deployment watched to its end.

State other people create (alice's requests, bob's approvals elsewhere) is made through the core
as those people; what the person at the desk does goes through the window."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication

from stella_core.evidence.model import Filter
from stella_core.promotions.model import PromotionStatus
from stella_desk.approvals.page import ApprovalsPage
from stella_desk.promotions import board as board_module
from stella_desk.promotions.board import PromotionsPage
from stella_desk.promotions.decide import NEEDS_REASON
from stella_desk.promotions.status import status_text
from stella_desk.window import MainWindow

R1 = "shop-2026.11.1"
R2 = "shop-2026.11.2"


async def until(predicate: Callable[[], Any], timeout: float = 30.0) -> None:
    """Let the window run (its polls included) until `predicate()` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("the window never got there")
        await asyncio.sleep(0.05)


class People:
    """The seeded people, each with their own connection (as on their own machines)."""

    def __init__(self, world) -> None:
        self.alice = world.open("alice")
        self.bob = world.open("bob")
        self.carol = world.open("carol")

    def deploy(self, release: str, environment: str, *approvers) -> Any:
        promotion = self.alice.promotions.request(release, environment, f"to {environment}")
        for person in approvers:
            promotion = person.promotions.approve(promotion.id, "fine")
        assert promotion.run_id is not None, promotion.to_json()
        self.alice.workflows.wait_run(promotion.run_id, timeout=60)
        done = self.alice.promotions.get(promotion.id)
        assert done.status is PromotionStatus.DEPLOYED, done.to_json()
        return done

    def to_stage(self, release: str = R1) -> None:
        self.deploy(release, "dev")
        self.deploy(release, "stage", self.bob)


@pytest.fixture
def people(world, seeded) -> People:
    return People(world)


def board(desk: MainWindow, run) -> PromotionsPage:
    page = desk.show_page("promotions")
    assert isinstance(page, PromotionsPage)
    run(page.refresh())
    return page


def inbox(desk: MainWindow, run) -> ApprovalsPage:
    page = desk.show_page("approvals")
    assert isinstance(page, ApprovalsPage)
    run(page.refresh())
    return page


def shown_case(page: ApprovalsPage, promotion_id) -> bool:
    case = page.case_view.case
    return case is not None and case.promotion.id == promotion_id


def test_the_board_shows_environments_in_order_with_what_runs_there(desk, run, people) -> None:
    people.deploy(R1, "dev")
    page = board(desk, run)

    assert list(page.columns) == ["dev", "stage", "prod"]
    dev, stage, prod = (page.columns[n] for n in ("dev", "stage", "prod"))
    assert dev.x() < stage.x() < prod.x()  # left to right, in promotion order
    assert dev.current.text() == R1
    assert dev.since.text().startswith("since ")
    assert stage.current.text() == "Nothing yet"
    assert [line.release.text() for line in dev.history] == [R1]
    assert dev.history[0].pill.text() == "deployed"
    # Each environment's rules, as an approver reads them.
    assert dev.approvals.text() == "no approval"
    assert prod.approvals.text() == "2 approvals"
    assert prod.sod.isVisibleTo(page)
    assert not stage.sod.isVisibleTo(page)
    assert dev.workflow.text() == "deploys with deliver"


def test_the_wizard_previews_the_gates_then_requests(desk, run, people, qtbot) -> None:
    run(desk.switch_person("alice"))
    page = board(desk, run)
    dialog = page.open_wizard()
    run(until(lambda: dialog.preview is not None))
    # The release has not been to stage: the predecessor gate fails, and says what to do.
    dialog.choose(R1, "prod")
    run(
        until(
            lambda: (
                dialog.preview is not None
                and (dialog.preview["release"], dialog.preview["environment"]) == (R1, "prod")
            )
        )
    )
    assert dialog.gate_status("predecessor") == "fail"
    row = dialog.gates.row("predecessor")
    assert row is not None
    assert "has not reached stage" in row.text.text()
    assert "promote the release to stage first" in row.text.text()
    assert row.text.isVisibleTo(dialog)
    assert dialog.gate_status("approval") == "pending"
    assert dialog.verdict.text().startswith("Would be blocked")

    people.to_stage(R1)  # meanwhile, elsewhere: dev, then stage with bob's approval
    preview = run(dialog.check())
    assert preview["verdict"] == "pending"
    assert dialog.gate_status("predecessor") == "pass"
    assert dialog.verdict.text().startswith("Would wait for approvals")

    dialog.reason.setText("Weekly release")
    qtbot.mouseClick(dialog.submit_button, Qt.MouseButton.LeftButton)
    run(until(lambda: dialog.promotion is not None))
    promotion = dialog.promotion
    assert not dialog.isVisible()
    # The board hears of it and shows the card in prod (once decided: a change heard from the
    # database may show it "requested" for a moment first).
    run(until(lambda: (c := page.card(promotion.id)) is not None and c.status != "requested"))
    card = page.card(promotion.id)
    assert card is not None
    assert card.pill.text() == "awaiting approval"
    assert card.progress == "0 of 2"
    assert card in page.columns["prod"].cards
    assert "Requested shop-2026.11.1 into prod" in desk.statusBar().currentMessage()

    # Asking again: the core refuses, and the wizard says why where the person is.
    again = page.open_wizard(R1, "prod")
    run(until(lambda: again.preview is not None))
    run(again.submit())
    assert again.isVisible()
    assert "already has an open promotion" in again.error_text()
    again.reject()

    # Someone who may not request sees the gates, and the refusal when they try anyway.
    run(desk.switch_person("bob"))
    bobs = page.open_wizard(R2, "dev")
    run(until(lambda: bobs.preview is not None))
    assert "only a release manager or an admin can request" in bobs.role_note.text()
    run(bobs.submit())
    assert "bob is approver; this needs release-manager or admin" in bobs.error_text()
    bobs.reject()


def test_separation_of_duties_in_the_inbox_and_a_counted_approval(
    desk, run, people, seeded, qtbot
) -> None:
    people.to_stage(R1)
    people.deploy(R2, "dev")
    prod = people.alice.promotions.request(R1, "prod", "weekly release")
    stage = people.alice.promotions.request(R2, "stage", "next one")

    # alice requested both: prod has separation of duties, and she may not approve anyway.
    run(desk.switch_person("alice"))
    page = inbox(desk, run)
    assert page.model.rowCount() == 0
    assert page.stack.currentWidget() is page.empty
    assert "Requesters never see their own promotions where separation of duties applies" in (
        page.empty_message()
    )

    run(desk.switch_person("bob"))
    run(until(lambda: page.model.rowCount() == 2))
    assert [p.id for p in page.model.promotions()] == [stage.id, prod.id]  # newest first
    # The stage promotion: what changes against what runs there now, digest by digest.
    page.select_promotion(stage.id)
    run(until(lambda: shown_case(page, stage.id)))
    changes = page.case_view.change_list
    assert changes is not None
    assert f"stage runs {R1} now" in changes.summary.text().replace("<b>", "").replace("</b>", "")
    assert changes.lines == [("~", "api"), ("~", "web")]
    assert changes.unchanged.text() == "Unchanged: worker"
    r1 = {c.name: c.digest for c in people.alice.releases.get_release(R1).components}
    r2 = {c.name: c.digest for c in people.alice.releases.get_release(R2).components}
    # What runs there now (struck through), then what this release brings.
    texts = [w.text() for w in changes.findChildren(type(changes.summary))]
    assert texts.index(r1["web"]) + 1 == texts.index(r2["web"])
    assert r1["worker"] not in texts
    # The release's digests, full and copyable.
    subjects = {s.name: s for s in page.case_view.subjects}
    assert {n: s.digest.text() for n, s in subjects.items()} == r2
    subjects["api"].copy_button.click()
    assert QGuiApplication.clipboard().text() == r2["api"]

    # The prod promotion: nothing there yet; bob approves it, with a comment.
    page.select_promotion(prod.id)
    run(until(lambda: shown_case(page, prod.id)))
    assert "Nothing runs in prod yet" in page.case_view.change_list.summary.text()
    assert page.case_view.progress.text() == "0 of 2 approvals"
    assert page.case_view.gates.statuses() == {
        "freeze-window": "pass",
        "predecessor": "pass",
        "approval": "pending",
    }
    assert all(row.text.isVisibleTo(page) for row in page.case_view.gates.rows)
    page.decision.comment.setText("digests match the stage run")
    qtbot.mouseClick(page.decision.approve_button, Qt.MouseButton.LeftButton)
    # Decided: it leaves bob's inbox, the board shows "1 of 2".
    run(until(lambda: page.model.row_of(prod.id) is None))
    # (The row may leave first: the change is heard from the database as the approval returns.)
    approved = "Approved shop-2026.11.1 into prod: 1 of 2"
    run(until(lambda: approved in desk.statusBar().currentMessage()))
    decided = people.alice.promotions.get(prod.id)
    assert decided.progress() == "1 of 2"
    assert [(a.by, a.comment, a.signature_ok) for a in decided.approvals] == [
        ("bob", "digests match the stage run", True)
    ]
    pipeline = board(desk, run)
    card = pipeline.card(prod.id)
    assert card is not None
    assert card.progress == "1 of 2"
    assert card.facts.text().startswith("1 of 2 approvals")

    # carol still sees it, and reads it as herself (no leftovers of bob's view).
    run(desk.switch_person("carol"))
    page = inbox(desk, run)
    assert prod.id in [p.id for p in page.model.promotions()]
    page.select_promotion(prod.id)
    run(until(lambda: shown_case(page, prod.id)))
    assert page.case_view.progress.text() == "1 of 2 approvals"
    # The first admin is named after whoever runs the tests (root in CI, anyone elsewhere).
    admin = seeded.tenancy.whoami().user
    assert (
        page.case_view.approvers.text()
        == f"May still approve: {', '.join(sorted(['carol', admin]))}"
    )
    assert page.decision.approve_button.isEnabled()


def test_refused_decisions_are_explained_in_place(desk, run, people, qtbot) -> None:
    people.to_stage(R1)
    prod = people.alice.promotions.request(R1, "prod", "weekly release")

    # bob, twice: his inbox still lists it when he approved from another window meanwhile.
    run(desk.switch_person("bob"))
    page = inbox(desk, run)
    page.select_promotion(prod.id)
    run(until(lambda: shown_case(page, prod.id)))
    people.bob.promotions.approve(prod.id, "from my laptop")
    qtbot.mouseClick(page.decision.approve_button, Qt.MouseButton.LeftButton)
    run(until(lambda: page.decision.refusal() != ""))
    assert page.decision.refusal() == f"Refused: bob has already decided promotion {prod.id}"
    assert page.decision.error_box.isVisible()
    assert not desk.banner.isVisible()  # in place, not as a window-wide error

    # A rejection needs a reason: said at once, nothing is asked of the core.
    page.decision.comment.clear()
    run(page.decision.reject())
    assert page.decision.refusal() == NEEDS_REASON

    # alice, from the promotion's own page: separation of duties, in her words.
    run(desk.switch_person("alice"))
    pipeline = board(desk, run)
    card = pipeline.card(prod.id)
    assert card is not None
    qtbot.mouseClick(card, Qt.MouseButton.LeftButton)
    dialog = pipeline.dialog
    assert dialog is not None
    run(until(lambda: dialog.view is not None))
    assert dialog.decision.isVisible()
    assert dialog.cancel_button.isVisible()  # she is a release manager
    # She is not offered Approve on her own request; a rejection is asked, and refused.
    assert not dialog.decision.approve_button.isEnabled()
    assert "You requested this promotion" in dialog.decision.approve_button.toolTip()
    dialog.decision.comment.setText("wrong release")
    qtbot.mouseClick(dialog.decision.reject_button, Qt.MouseButton.LeftButton)
    run(until(lambda: dialog.decision.refusal() != ""))
    assert dialog.decision.refusal() == (
        "Refused: separation of duties: alice requested this promotion to prod and cannot "
        "approve or reject it"
    )
    assert people.alice.promotions.get(prod.id).progress() == "1 of 2"
    dialog.reject()


def test_why_blocked_explains_an_active_freeze(desk, run, people, qtbot) -> None:
    people.deploy(R1, "dev")
    now = datetime.now(UTC)
    people.alice.environments.freeze(
        "stage",
        start=now - timedelta(minutes=1),
        end=now + timedelta(hours=2),
        reason="year-end change freeze",
    )
    blocked = people.alice.promotions.request(R1, "stage", "before the holidays")
    assert blocked.status is PromotionStatus.BLOCKED

    page = board(desk, run)
    stage = page.columns["stage"]
    assert len(stage.freezes) == 1
    assert stage.freezes[0].title.text().startswith("❄ Frozen until ")
    assert stage.freezes[0].reason.text() == "year-end change freeze"
    card = page.card(blocked.id)
    assert card is not None
    assert card.blocked
    assert card.pill.text() == "blocked"
    assert "year-end change freeze" in card.reason.text()
    assert card.why_button is not None
    qtbot.mouseClick(card.why_button, Qt.MouseButton.LeftButton)
    why = page.why_dialog
    assert why is not None
    run(until(lambda: why.why is not None))
    text = why.text()
    assert why.summary.text().startswith("Blocked: 1 gate fails.")
    assert why.gates.statuses()["freeze-window"] == "fail"
    assert "year-end change freeze" in text
    assert "To unblock: wait until" in text
    assert why.gates.statuses()["approval"] == "pending"
    assert "May still approve: bob, carol" in why.approvers.text()
    why.reject()


def test_the_board_moves_a_promotion_on_when_its_freeze_ends(
    desk, run, people, monkeypatch
) -> None:
    people.deploy(R1, "dev")
    now = datetime.now(UTC)
    people.alice.environments.freeze(
        "stage", start=now - timedelta(minutes=1), end=now + timedelta(seconds=3), reason="audit"
    )
    blocked = people.alice.promotions.request(R1, "stage", "after the audit")
    assert blocked.status is PromotionStatus.BLOCKED

    monkeypatch.setattr(board_module, "RECHECK_SECONDS", 0.0)
    page = board(desk, run)
    assert page.card(blocked.id).blocked
    # No click: the board's own polls decide it again once the freeze has ended.
    run(until(lambda: (c := page.card(blocked.id)) is not None and not c.blocked))
    moved = people.alice.promotions.get(blocked.id)
    assert moved.status is PromotionStatus.AWAITING_APPROVAL
    assert page.card(blocked.id).pill.text() == status_text(moved.status.value)
    decisions = people.alice.evidence.find(Filter(type="vsa", promotion_id=blocked.id))
    assert len(decisions) == 2  # blocked, then decided again: each decision is evidence


def test_a_deployment_is_followed_to_its_end(desk, run, people, qtbot) -> None:
    people.deploy(R1, "dev")
    stage = people.alice.promotions.request(R1, "stage", "ready")
    stage = people.bob.promotions.approve(stage.id, "ok")
    assert stage.status is PromotionStatus.DEPLOYING  # nobody runs its steps yet

    page = board(desk, run)
    card = page.card(stage.id)
    assert card is not None
    assert card.pill.text() == "deploying"
    dialog = page.open_promotion(stage.id)
    run(until(lambda: dialog.view is not None))
    assert dialog.approval_lines() == [("bob", "approve", True)]
    assert dialog.pill.text() == "deploying"
    assert dialog.run_pill.isVisible()
    assert not dialog.decision.isVisible()  # approved: it takes no more decisions
    assert len(dialog.subjects) == 3

    # A worker elsewhere runs the deployment; the board and the dialog follow on their own.
    assert stage.run_id is not None
    run(asyncio.to_thread(people.alice.workflows.wait_run, stage.run_id, 60))
    run(until(lambda: dialog.pill.text() == "deployed"))
    run(until(lambda: page.columns["stage"].current.text() == R1))
    assert page.card(stage.id) is None
    assert page.columns["stage"].history[0].pill.text() == "deployed"

    # "Open run" takes the person to the deployment's run.
    qtbot.mouseClick(dialog.open_run_button, Qt.MouseButton.LeftButton)
    run(until(lambda: desk.runs.monitor.run is not None))
    assert desk.runs.monitor.run.id == stage.run_id
    assert desk.stack.currentWidget() is desk.runs


def test_the_inbox_follows_the_person_switch(desk, run, people) -> None:
    people.to_stage(R1)
    prod = people.alice.promotions.request(R1, "prod", "weekly release")
    people.bob.promotions.approve(prod.id, "ok")
    page = inbox(desk, run)  # the admin at the desk may decide it too
    run(until(lambda: shown_case(page, prod.id)))

    # carol's inbox holds the same promotion: it is read again, as her.
    run(desk.switch_person("carol"))
    assert page.case_view.case is None  # nothing of the admin's view stays up
    run(until(lambda: shown_case(page, prod.id)))
    assert [p.id for p in page.model.promotions()] == [prod.id]
    assert page.decision.promotion_id == prod.id

    # bob decided it already: his inbox is empty, and says why it may be.
    run(desk.switch_person("bob"))
    run(until(lambda: page.model.rowCount() == 0))
    assert "once you have decided, it leaves your inbox" in page.empty_message()


def test_an_admin_grants_exceptions_from_why_blocked(
    desk, run, people, qtbot, seeded, tmp_path
) -> None:
    days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    other_day = days[(datetime.now(UTC).weekday() + 3) % 7]
    window = {"days": [other_day], "start": "10:00", "end": "11:00"}
    seeded.environments.add("edge", order=3, schedule=[window])
    blocked = people.alice.promotions.request(R1, "edge", "incident 4711")
    assert blocked.status is PromotionStatus.BLOCKED

    page = board(desk, run)
    qtbot.mouseClick(page.card(blocked.id).why_button, Qt.MouseButton.LeftButton)
    why = page.why_dialog
    run(until(lambda: why.why is not None))
    assert why.exception_button.isVisible()  # the desk's person is an admin
    assert why.exception_hint.isHidden()
    assert why.approvers.isHidden()  # edge asks for no approval
    qtbot.mouseClick(why.exception_button, Qt.MouseButton.LeftButton)
    form = why.exception_form
    assert form.isVisible()
    assert [form.gate.itemText(i) for i in range(form.gate.count())] == ["predecessor", "schedule"]
    assert not form.grant_button.isEnabled()  # a reason is required
    assert form.expires_at() > datetime.now(UTC) + timedelta(hours=23)
    form.gate.setCurrentText("schedule")
    qtbot.keyClicks(form.reason, "payments are down, incident 4711")
    assert form.grant_button.isEnabled()
    path = tmp_path / "why-exception.png"
    assert why.grab().save(str(path))

    qtbot.mouseClick(form.grant_button, Qt.MouseButton.LeftButton)
    run(until(lambda: why.gates.statuses().get("schedule") == "pass"))
    assert form.isHidden()
    assert why.gates.statuses()["predecessor"] == "fail"  # the other gate still holds it
    assert why.exception_button.isVisible()

    # The predecessor too: nothing holds it any more, and edge needs no approval.
    qtbot.mouseClick(why.exception_button, Qt.MouseButton.LeftButton)
    assert [form.gate.itemText(i) for i in range(form.gate.count())] == ["predecessor"]
    qtbot.keyClicks(form.reason, "prod runs the same digests")
    qtbot.mouseClick(form.grant_button, Qt.MouseButton.LeftButton)
    run(
        until(lambda: people.alice.promotions.get(blocked.id).status is not PromotionStatus.BLOCKED)
    )
    run(until(lambda: why.why is not None and why.why["status"] == "deployed"))
    assert why.exception_button.isHidden()
    exceptions = people.alice.evidence.find(Filter(type="exception"))
    assert len(exceptions) == 2
    admin = seeded.tenancy.whoami().user
    assert {p.actor for p in exceptions} == {admin}


def test_people_who_are_not_admins_are_told_an_admin_may_grant_an_exception(
    desk, run, people, seeded
) -> None:
    blocked = people.alice.promotions.request(R1, "prod", "skipping ahead")
    assert blocked.status is PromotionStatus.BLOCKED  # not in stage yet
    run(desk.switch_person("alice"))
    page = board(desk, run)
    why = page.open_why(blocked.id)
    run(until(lambda: why.why is not None))
    assert why.exception_button.isHidden()
    assert why.exception_hint.isVisible()
    assert "An admin may grant a signed, expiring exception" in why.text()
    why.reject()
