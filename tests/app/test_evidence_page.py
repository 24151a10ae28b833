"""The Evidence page over a real ledger: the packets runs and decisions left, filters, a packet's
detail (verified, signer, chain, full subject digests), replay, sealing, exporting a capsule and
verifying it offline, and a tampered archive caught with the packet named."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, QRect, Qt
from PySide6.QtGui import QFontMetrics, QGuiApplication, QImage

from stella_core.evidence import capsule
from stella_core.evidence.capsule import read_tar
from stella_core.evidence.model import Filter
from stella_core.evidence.verify import verify_capsule
from stella_desk.evidence import export as export_module
from stella_desk.evidence.detail import GOOD
from stella_desk.evidence.export import RANGE, RELEASE, RUN
from stella_desk.evidence.page import EvidencePage
from stella_desk.screenshots import save, show_evidence
from stella_desk.session import Session
from stella_desk.window import MainWindow
from tests.support.evidence_helpers import emit_decision, emit_other_types, flip_base64_field
from tests.support.evidence_helpers import run_once as run_to_end

from .conftest import next_emission
from .test_screens import distinct_colours

RELEASE_NAME = "shop-2026.11.1"
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# The seed's people (alice, bob, carol) get their signing keys with their profiles, and the
# admin gets one to sign the three environments' policies: the orchestrator's endorsements of
# those keys and the signed policies are the ledger's first packets, oldest first.
SEEDED = ["key"] * 4 + ["policy"] * 3
KEYS = len(SEEDED)
TOTAL = KEYS + 7  # and the `ledger` fixture's seven (the admin's key is endorsed already)
ALL_PASSED = [("Signatures", True), ("Digests", True), ("Chain", True), ("Checkpoints", True)]


@pytest.fixture
def admin(seeded):
    seeded.workflows.set_local_executor(True)
    return seeded


@pytest.fixture
def ledger(admin):
    """Two runs that ended (a run packet each, the first on a release), then a decision and one
    packet of every other type."""
    first = run_to_end(admin, "ev-first", release=RELEASE_NAME)
    second = run_to_end(admin, "ev-second")
    assert first.status == second.status == "succeeded"
    emit_decision(admin)
    emit_other_types(admin)
    return {"runs": [first, second]}


def open_page(desk: MainWindow, run) -> EvidencePage:
    page = desk.show_page("evidence")
    assert isinstance(page, EvidencePage)
    run(page.refresh())
    return page


def shown(page: EvidencePage) -> list[tuple[int, str]]:
    proxy = page.proxy
    return [(proxy.packet_at(r).seq, proxy.packet_at(r).type) for r in range(proxy.rowCount())]


def cells(page: EvidencePage, row: int) -> list[str]:
    return [page.proxy.index(row, c).data() for c in range(page.proxy.columnCount())]


def click_row(qtbot, page: EvidencePage, row: int) -> None:
    index = page.proxy.index(row, 0)
    page.view.scrollTo(index)
    rect = page.view.visualRect(index)
    qtbot.mouseClick(page.view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


def select_run_packet(qtbot, run, page: EvidencePage, run_id) -> dict:
    row = next(r for r in range(page.proxy.rowCount()) if page.proxy.packet_at(r).run_id == run_id)
    click_row(qtbot, page, row)
    run(page.ops.idle())
    detail = page.detail.detail
    assert detail is not None
    return detail


# --- the list --------------------------------------------------------------------------------
def test_an_empty_ledger_says_how_evidence_gets_there(qtbot, run, ops, world) -> None:
    # No people yet, no run: nothing has been signed.
    desk = MainWindow(ops, Session())
    qtbot.addWidget(desk)
    desk.show()
    run(desk.attach(world.open()))
    page = open_page(desk, run)
    assert page.model.rowCount() == 0
    assert page.list_stack.currentWidget() is page.empty
    assert page.empty.title.text() == "No evidence yet"
    assert "Every workflow run that ends adds a signed run packet" in page.empty.text.text()
    assert page.empty.action.isHidden()


def test_the_table_lists_the_packets_runs_left_newest_first(desk: MainWindow, run, ledger, admin):
    first, second = ledger["runs"]
    page = open_page(desk, run)
    rows = shown(page)
    assert [seq for seq, _ in rows] == list(range(TOTAL, 0, -1))
    assert [kind for _, kind in rows][-KEYS - 2 :] == ["run", "run", *reversed(SEEDED)]
    assert {page.proxy.packet_at(r).run_id for r in (5, 6)} == {first.id, second.id}
    assert page.count.text().startswith(f"{TOTAL} packets · Not sealed yet")

    oldest = cells(page, 6)  # the oldest run
    assert oldest[0] == str(KEYS + 1)  # seq
    assert oldest[1] == "run"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", oldest[2])  # local time
    assert oldest[3] == RELEASE_NAME
    assert oldest[4] == "—"  # runs are about no environment
    assert oldest[5] == first.created_by
    assert re.fullmatch(r"[0-9a-f]{12}… orchestrator", oldest[6])  # key id prefix and owner
    assert oldest[7] == "3"  # the release's three components
    approval = next(r for r, (_, kind) in enumerate(rows) if kind == "approval")
    assert cells(page, approval)[6].endswith(f"… {admin.profile.name}")  # a personal key


def test_filters_ask_the_ledger_and_the_search_narrows(desk: MainWindow, run, ledger) -> None:
    page = open_page(desk, run)
    page.filters.choose_type("run")
    run(next_emission(page.loaded))
    assert shown(page) == [(KEYS + 2, "run"), (KEYS + 1, "run")]
    assert page.count.text().startswith("2 packets match the filters")

    page.filters.choose_type(None)
    page.filters.environment.setText("prod")  # asked after a pause in typing
    run(next_emission(page.loaded))
    kinds = [kind for _, kind in shown(page)]
    assert kinds == ["drift", "rollback", "deployment", "approval", "vsa", "policy"]

    page.filters.release.setText("no-such-release")
    run(next_emission(page.loaded))
    assert shown(page) == []
    assert page.list_stack.currentWidget() is page.empty
    assert page.empty.title.text() == "No packets match these filters"
    assert page.empty.action.text() == "Clear filters"
    page.empty.action.click()
    run(next_emission(page.loaded))
    assert len(shown(page)) == TOTAL  # with the orchestrator's endorsement of the approver's key

    page.filters.choose_time("Last 24 hours")
    run(next_emission(page.loaded))
    assert len(shown(page)) == TOTAL
    page.filters.choose_time("Between dates")
    run(next_emission(page.loaded))
    assert len(shown(page)) == TOTAL  # the default range ends today
    assert page.filters.since.isVisible()

    # The search box narrows what was fetched, by any word of a row.
    page.search.setText("approval")
    assert [kind for _, kind in shown(page)] == ["approval"]
    assert page.count.text().startswith(f"1 of {TOTAL} packets match")
    page.search.setText("nothing-like-this")
    assert page.empty.title.text() == "No packet matches the search"
    page.empty.action.click()
    assert page.search.text() == ""
    assert len(shown(page)) == TOTAL


# --- one packet ------------------------------------------------------------------------------
def test_selecting_a_packet_shows_it_verified_with_signer_chain_and_subjects(
    qtbot, desk: MainWindow, run, admin, ledger
) -> None:
    first = ledger["runs"][0]
    page = open_page(desk, run)
    detail = select_run_packet(qtbot, run, page, first.id)
    view = page.detail
    assert view.badge.text() == "verified"
    assert view.problem.isHidden()
    assert view.signer_owner.text() == "orchestrator"
    assert view.signer_key.text() == detail["signer_key_id"]
    assert len(view.signer_key.text()) == 64
    assert view.chain_text(detail) == f"#{KEYS + 1} · link ok · not yet sealed"

    # Subjects: the release's components, every digest whole and on screen.
    release = admin.releases.get_release(RELEASE_NAME)
    expected = sorted((c.name, c.digest) for c in release.components)
    assert sorted((s.name, s.digest.text()) for s in view.subjects) == expected
    for line in view.subjects:
        assert DIGEST.match(line.digest.text())
        assert line.digest.isVisible()
        needed = QFontMetrics(line.digest.font()).horizontalAdvance(line.digest.text())
        assert line.digest.width() >= needed
    clipboard = QGuiApplication.clipboard()
    view.subjects[0].copy_button.click()
    assert clipboard.text() == view.subjects[0].digest.text()
    assert desk.statusBar().currentMessage().startswith("Copied sha256:")

    # The predicate pretty-printed, read-only; the bundle as stored behind its tab.
    predicate = json.loads(view.predicate.toPlainText())
    assert predicate["runId"] == str(first.id)
    assert predicate["status"] == "succeeded"
    assert view.predicate.isReadOnly()
    assert "\n  " in view.predicate.toPlainText()
    assert "dsseEnvelope" in json.loads(view.bundle.toPlainText())
    view.copy_bundle.click()
    assert clipboard.text() == detail["bundle"]


def test_replay_says_same_and_seal_now_covers_the_packet(
    qtbot, desk: MainWindow, run, ledger
) -> None:
    page = open_page(desk, run)
    detail = select_run_packet(qtbot, run, page, ledger["runs"][0].id)
    page.detail.replay_button.click()
    run(page.ops.idle())
    assert "Replay: same outcome." in page.detail.replay_summary()

    page.seal_button.click()
    run(page.ops.idle())
    assert page.checkpoint is not None
    assert page.checkpoint.tree_size == TOTAL
    assert (
        desk.statusBar().currentMessage()
        == f"Sealed: checkpoint {TOTAL} covers packets #1 to #{TOTAL}"
    )
    assert f"Sealed up to #{TOTAL}" in page.count.text()
    shown_now = page.detail.detail
    assert shown_now is not None
    assert shown_now["id"] == detail["id"]
    assert (
        page.detail.chain_text(shown_now) == f"#{KEYS + 1} · link ok · sealed by checkpoint {TOTAL}"
    )


# --- export and verify -----------------------------------------------------------------------
def test_export_writes_an_archive_that_verifies_with_four_passing_checks(
    qtbot, desk: MainWindow, run, admin, ledger, tmp_path: Path
) -> None:
    first = ledger["runs"][0]
    page = open_page(desk, run)
    select_run_packet(qtbot, run, page, first.id)
    dialog = page.open_export_dialog()
    # Prefilled from the selected packet: its release, and its run one click away.
    assert dialog.kind() == RELEASE
    assert dialog.release.text() == RELEASE_NAME
    assert dialog.run_id.text() == str(first.id)
    out = tmp_path / "shop.tar"
    dialog.path.setText(str(out))
    assert dialog.export_button.isEnabled()
    progress: list[int] = []
    dialog.progress.valueChanged.connect(progress.append)

    qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
    run(next_emission(dialog.exported))
    result = dialog.result_
    assert result is not None
    assert out.is_file()
    assert result["digest"] == "sha256:" + hashlib.sha256(out.read_bytes()).hexdigest()
    assert result["packets"] == 1  # the one run on that release
    assert dialog.digest.text() == result["digest"]
    assert "1 packet and" in dialog.summary.text()
    assert progress  # the bar followed the core's progress
    assert dialog.cancel_button.text() == "Close"
    report = verify_capsule(read_tar(out))
    assert report.ok, report.problems

    # "Verify it…" opens the archive in the verify dialog, as an auditor would.
    dialog.verify_button.click()
    verify = page.verify_dialog
    assert verify is not None
    assert verify.path.text() == str(out)
    assert run(verify.verify()) is not None
    assert [(name, ok) for name, _, ok in verify.check_results()] == ALL_PASSED
    counts = {name: count for name, count, _ in verify.check_results()}
    assert counts["Signatures"] == 2  # the run packet and the signed manifest
    assert all(count > 0 for count in counts.values())
    # Only the archive's own keys vouch for it: consistent, but not green "passed".
    assert verify.verdict.text() == "signatures valid, signers not trusted"
    assert not verify.trusted()
    assert GOOD[0] not in verify.verdict.styleSheet()
    assert "keys the archive carries" in verify.trust.text()
    assert verify.problem_rows() == []
    assert verify.problems.isHidden()

    # With the auditor's own copy of the orchestrator key.
    key = next(k for k in admin.evidence.signing_keys() if k.owner == "orchestrator")
    pem = tmp_path / "orchestrator.pem"
    pem.write_bytes(key.public_key.pem())
    verify.add_keys([pem])
    assert verify.results.isHidden()  # other keys, another question: the old answer went
    run(verify.verify())
    assert [(name, ok) for name, _, ok in verify.check_results()] == ALL_PASSED
    assert verify.verdict.text() == "passed"
    assert GOOD[0] in verify.verdict.styleSheet()
    assert verify.trusted()
    assert verify.trust.text() == "Trust: the signers are trusted by the keys you added."

    result = run(verify.replay())
    assert result is not None
    assert result["same"] is True
    assert verify.replay_text.text() == "Replay: same outcome for 1 packet."


def test_a_tampered_archive_fails_its_checks_and_names_the_packet(
    desk: MainWindow, run, ledger, tmp_path: Path
) -> None:
    page = open_page(desk, run)
    page.filters.choose_type("run")
    run(next_emission(page.loaded))
    dialog = page.open_export_dialog()
    dialog.by_range.setChecked(True)
    assert dialog.kind() == RANGE
    out = tmp_path / "range.tar"
    dialog.path.setText(str(out))
    result = run(dialog.submit())
    assert result is not None
    assert result["packets"] == TOTAL
    dialog.reject()

    files = read_tar(out)
    name = capsule.packet_file(1)
    files[name] = flip_base64_field(files[name], "sig")
    tampered = tmp_path / "tampered.tar"
    capsule.write_tar(files, tampered)
    packet_id = json.loads(files["manifest.json"])["packets"][0]["id"]

    verify = page.open_verify_dialog(tampered)
    run(verify.verify())
    results = {name: (count, ok) for name, count, ok in verify.check_results()}
    assert results["Signatures"][1] is False
    assert results["Digests"][1] is False
    assert results["Chain"][1] is False  # the bundle is not the one the chain recorded
    assert results["Checkpoints"][1] is True
    assert verify.verdict.text() == "failed"
    problems = verify.problem_rows()
    # Named by its short id (the full one in the row's tooltip and data), as everywhere.
    short = f"packet {packet_id.replace('-', '')[:8]}"
    assert any(packet == short and check == "Signatures" for packet, check, _ in problems)
    assert packet_id in verify.problem_packets()
    assert any(packet == "seq 1" and "SHA256SUMS" in message for packet, _, message in problems)
    assert verify.problems.isVisible()

    result = run(verify.replay())
    assert result is not None
    assert result["same"] is False
    assert "did not verify" in verify.replay_text.text()


def test_export_checks_its_form_and_shows_failures_in_place(
    desk: MainWindow, run, ledger, tmp_path: Path
) -> None:
    page = open_page(desk, run)
    dialog = page.open_export_dialog()
    assert dialog.kind() == RANGE  # nothing selected or filtered: a time range
    dialog.by_run.setChecked(True)
    dialog.run_id.setText("not-a-uuid")
    assert not dialog.export_button.isEnabled()
    assert dialog.run_id.property("invalid") is True
    assert "UUID" in dialog.status.text()
    dialog.run_id.setText(str(ledger["runs"][1].id))
    assert dialog.kind() == RUN
    assert dialog.export_button.isEnabled()

    dialog.path.setText(str(tmp_path / "missing" / "run.tar"))
    assert run(dialog.submit()) is None
    assert "does not exist" in dialog.error.text()

    dialog.by_release.setChecked(True)
    dialog.release.setText("shop-2026.11.3")  # no packet is about it
    dialog.path.setText(str(tmp_path / "none.tar"))
    assert run(dialog.submit()) is None
    assert "no evidence packets match" in dialog.error.text()
    assert not (tmp_path / "none.tar").exists()
    assert desk.banner.isHidden()  # shown in the dialog, not the window's banner

    # "Choose…" opens a file dialog without blocking the loop; what is picked lands in the form.
    dialog.choose_button.click()
    chooser = dialog.file_dialog
    assert chooser is not None
    assert chooser.isVisible()
    chooser.fileSelected.emit(str(tmp_path / "picked.tar"))
    chooser.reject()
    assert dialog.path.text() == str(tmp_path / "picked.tar")


def test_stop_ends_an_export_at_its_next_progress_point(
    desk: MainWindow, run, ledger, tmp_path: Path, monkeypatch
) -> None:
    reached = threading.Event()
    resume = threading.Event()

    def slow_export(stella, selection, out, report):
        report(1, 10, "Collecting")
        reached.set()
        resume.wait(30)
        report(2, 10, "Collecting")  # the stopped token raises here
        out.write_bytes(b"never")

    monkeypatch.setattr(export_module, "export_capsule", slow_export)
    page = open_page(desk, run)
    dialog = page.open_export_dialog()
    out = tmp_path / "stopped.tar"
    dialog.path.setText(str(out))
    task = page.ops.spawn(dialog.submit())

    async def stop_when_running() -> None:
        while not reached.is_set() or dialog.progress.value() != 1:
            await asyncio.sleep(0.01)
        assert dialog.cancel_button.text() == "Stop"
        assert not dialog.export_button.isEnabled()
        dialog.cancel_button.click()
        resume.set()

    run(stop_when_running())
    assert run(task) is None
    assert dialog.status.text() == "Stopped: no archive was written."
    assert not out.exists()
    assert dialog.isVisible()  # stopping is not closing
    assert dialog.cancel_button.text() == "Cancel"
    assert desk.banner.isHidden()


def test_screenshot_shows_a_packet_and_its_detail(
    desk: MainWindow, run, ledger, tmp_path: Path
) -> None:
    desk.show_page("evidence")
    run(show_evidence(desk))
    page = desk.evidence
    selected = page.selected_packet()
    assert selected is not None
    assert selected.seq == TOTAL  # the newest packet about a release (the drift check's)
    assert page.detail.badge.text() == "verified"
    path = save(desk, tmp_path / "evidence.png")
    image = QImage(str(path))
    detail = page.detail
    origin = detail.mapTo(desk, QPoint(0, 0))
    # Badge, digests, JSON: the panel below the table is not blank.
    assert distinct_colours(image, QRect(origin, detail.size())) > 30


def test_the_core_filter_is_what_the_bar_describes(desk: MainWindow, run, admin) -> None:
    page = open_page(desk, run)
    page.filters.choose_type("vsa")
    page.filters.release.setText("shop-1")
    page.filters.person.setText("root")
    where = page.filters.where()
    assert where == Filter(type="vsa", release="shop-1", person="root")
    run(next_emission(page.loaded))


def test_switching_to_a_tampered_archive_clears_passed(
    qtbot, desk: MainWindow, run, admin, ledger, tmp_path: Path
) -> None:
    page = open_page(desk, run)
    good = tmp_path / "good.tar"
    result = run(page.ops.run(lambda _r: export_range(admin, good), label="export"))
    assert result["packets"] == TOTAL
    files = read_tar(good)
    name = capsule.packet_file(1)
    files[name] = flip_base64_field(files[name], "sig")
    tampered = tmp_path / "tampered.tar"
    capsule.write_tar(files, tampered)
    key = next(k for k in admin.evidence.signing_keys() if k.owner == "orchestrator")
    pem = tmp_path / "orchestrator.pem"
    pem.write_bytes(key.public_key.pem())

    verify = page.open_verify_dialog(good)
    verify.add_keys([pem])
    run(verify.verify())
    assert verify.verdict.text() == "passed"
    assert verify.results.isVisible()

    # The auditor picks another archive: the green result of the first one must not stay up.
    verify.path.setText(str(tampered))
    assert verify.results.isHidden()
    assert verify.verdict.text() == ""
    assert verify.report is None
    assert not verify.replay_button.isEnabled()
    run(verify.verify())
    assert verify.verdict.text() == "failed"
    assert not verify.trusted()

    # Back to the good one: nothing of the tampered result remains until it is verified again.
    verify.path.setText(str(good))
    assert verify.results.isHidden()
    run(verify.verify())
    assert verify.verdict.text() == "passed"
    assert verify.problem_rows() == []
    save(verify, tmp_path / "verify.png")


def export_range(stella, out: Path) -> dict:
    from datetime import UTC, datetime, timedelta

    from stella_core.evidence.service import Selection

    now = datetime.now(UTC)
    return stella.evidence.export(
        Selection(since=now - timedelta(days=1), until=now + timedelta(days=1)), out
    )
