"""What an approver and a release manager check around a decision: tags beside the digests, the
inbox's status column, the badge that counts what waits (following a request someone else
made), the wizard's diff of the target environment, and the promotion history page."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage

from stella_core.promotions.model import PromotionStatus
from stella_desk.approvals.table import Column as InboxColumn
from stella_desk.nav import badge
from stella_desk.promotions.diff import CHANGED, UNCHANGED
from stella_desk.promotions.history import Column, HistoryPage
from stella_desk.screenshots import save
from stella_desk.window import PAGES, MainWindow

from .test_promotions_pages import R1, R2, People, board, inbox, shown_case, until
from .test_screens import distinct_colours

TAGS = {
    R1: {"web": "1.0.0", "api": "2.3.0", "worker": "0.9.0"},
    R2: {"web": "1.1.0", "api": "2.4.0", "worker": "0.9.0"},
}


@pytest.fixture
def people(world, seeded) -> People:
    return People(world)


def approvals_row(desk: MainWindow) -> int:
    return [k for k, _ in PAGES].index("approvals")


def test_the_approver_reads_tags_beside_digests_and_a_status_column(
    desk: MainWindow, run, people, tmp_path
) -> None:
    people.to_stage(R1)
    people.deploy(R2, "dev")
    stage = people.alice.promotions.request(R2, "stage", "next one")
    run(desk.switch_person("bob"))
    page = inbox(desk, run)
    row = page.model.row_of(stage.id)
    assert row is not None
    header = page.model.headerData(InboxColumn.STATUS, Qt.Orientation.Horizontal)
    assert header == "Status"
    assert page.model.index(row, InboxColumn.STATUS).data() == "Awaiting approval · 0 of 1"
    assert not page.view.isColumnHidden(InboxColumn.STATUS)

    page.select_promotion(stage.id)
    run(until(lambda: shown_case(page, stage.id)))
    case = page.case_view
    # The release's digests, each with the tag it was resolved from.
    tags = {s.name: s.tag.text() for s in case.subjects if s.tag is not None}
    assert tags == {name: f":{tag}" for name, tag in TAGS[R2].items()}
    # What changes in stage: the tag running there now, then the one this release brings.
    changes = case.change_list
    assert changes is not None
    assert ("web", "1.0.0", "1.1.0") in changes.tag_lines
    assert ("api", "2.3.0", "2.4.0") in changes.tag_lines
    assert "worker" in changes.unchanged.text()
    assert ":0.9.0" in changes.unchanged.toolTip()
    path = save(desk, tmp_path / "approvals.png")
    assert distinct_colours(QImage(str(path))) > 60


def test_the_badge_follows_a_request_from_another_person_and_a_decision(
    desk: MainWindow, run, people, qtbot
) -> None:
    people.to_stage(R1)
    run(desk.switch_person("bob"))
    inbox(desk, run)
    row = approvals_row(desk)
    assert badge(desk.nav, row) == 0
    desk.show_page("dashboard")  # bob is elsewhere when alice asks
    desk.approvals._badge_timer.setInterval(100)  # the test does not wait for the 10 s tick

    prod = people.alice.promotions.request(R1, "prod", "weekly release")
    run(until(lambda: badge(desk.nav, row) == 1))
    item = desk.nav.item(row)
    assert item.toolTip() == "1 waiting for your decision"
    assert "1 waiting" in item.data(Qt.ItemDataRole.AccessibleTextRole)

    # bob decides it on the Approvals page: it leaves his inbox and the badge goes.
    page = inbox(desk, run)
    page.select_promotion(prod.id)
    run(until(lambda: shown_case(page, prod.id)))
    page.decision.comment.setText("fine")
    qtbot.mouseClick(page.decision.approve_button, Qt.MouseButton.LeftButton)
    run(until(lambda: page.model.row_of(prod.id) is None))
    run(until(lambda: badge(desk.nav, row) == 0))


def test_the_wizard_shows_what_changes_in_the_target_environment(
    desk: MainWindow, run, people
) -> None:
    people.to_stage(R1)  # stage runs R1 now
    run(desk.switch_person("alice"))
    page = board(desk, run)
    dialog = page.open_wizard(R2, "stage")
    run(until(lambda: dialog.preview is not None and dialog.change_table.changes))
    kinds = {c.name: c.kind for c in dialog.change_table.changes}
    assert kinds == {"api": CHANGED, "web": CHANGED, "worker": UNCHANGED}
    assert dialog.change_title.text() == "WHAT CHANGES IN STAGE"
    assert dialog.change_table.summary.text() == (
        "stage runs shop-2026.11.1 now. Components: 2 changed, 1 unchanged."
    )
    lines = dialog.change_table.line_texts()
    assert lines[0].startswith("~ api changed :2.3.0 → :2.4.0 sha256:")
    assert any(line.startswith("= worker unchanged :0.9.0") for line in lines)

    # Another environment: nothing runs in prod yet, every component arrives new.
    dialog.choose(environment="prod")
    assert "Nothing runs in prod yet" in dialog.change_table.summary.text()
    assert {c.kind for c in dialog.change_table.changes} == {"added"}
    dialog.reject()


def test_the_history_lists_every_promotion_and_opens_one(desk: MainWindow, run, people) -> None:
    people.to_stage(R1)
    rejected = people.alice.promotions.request(R1, "prod", "too early")
    people.bob.promotions.reject(rejected.id, "wait for monday")
    page = desk.show_page("history")
    assert isinstance(page, HistoryPage)
    run(page.refresh())
    shown = {p.id: p for p in page.shown()}
    assert rejected.id in shown
    total = page.model.rowCount()
    assert total >= 3

    def cells(promotion_id) -> dict[Column, str]:
        row = next(r for r in range(page.proxy.rowCount()) if page.shown()[r].id == promotion_id)
        return {c: page.proxy.index(row, c).data() for c in Column}

    line = cells(rejected.id)
    assert line[Column.RELEASE] == R1
    assert line[Column.ROUTE] == "stage → prod"
    assert line[Column.BY] == "alice"
    assert line[Column.STATUS] == "Rejected"
    assert line[Column.APPROVERS] == "bob (rejected)"
    assert line[Column.DECIDED] not in ("", "pending")
    assert ":" in line[Column.DECIDED] or " " in line[Column.DECIDED]  # 14:05 or 2 Dec
    to_stage = next(
        p for p in page.shown() if p.environment == "stage" and p.status is PromotionStatus.DEPLOYED
    )
    assert cells(to_stage.id)[Column.APPROVERS] == "bob"
    assert cells(to_stage.id)[Column.ROUTE] == "dev → stage"

    # Filters: status, environment, words.
    page.choose(status="Rejected")
    assert [p.id for p in page.shown()] == [rejected.id]
    assert page.count.text() == f"1 of {total} promotions shown"
    page.choose(status="Every status", environment="stage")
    assert {p.environment for p in page.shown()} == {"stage"}
    page.environment_filter.setCurrentIndex(0)  # every environment
    page.search.setText("no-such-release")
    assert page.shown() == []
    page.search.setText("too early")  # the requester's reason
    assert [p.id for p in page.shown()] == [rejected.id]

    # Enter on a row opens the promotion.
    page.view.setCurrentIndex(page.proxy.index(0, 0))
    page.view.activated.emit(page.proxy.index(0, 0))
    dialog = page.dialog
    assert dialog is not None
    assert dialog.promotion_id == rejected.id
    run(until(lambda: dialog.view is not None))
    # The digests the decision named, each with the tag it came from.
    assert {s.name: s.tag.text() for s in dialog.subjects if s.tag is not None} == {
        name: f":{tag}" for name, tag in TAGS[R1].items()
    }
    dialog.reject()
