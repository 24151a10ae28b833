"""`--screenshot DIR`: every main screen rendered to `DIR/<screen>.png` after its data loaded."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from PySide6.QtWidgets import QWidget

from stella_desk.ops import OpFailed
from stella_desk.window import PAGES, WINDOW_SIZE, MainWindow

# Whose inbox the approvals picture shows: the first of these who is not the one at the desk.
INBOX_PEOPLE = ("carol", "bob")


def save(widget: QWidget, path: Path) -> Path:
    if not widget.grab().save(str(path)):
        raise OSError(f"could not write {path}")
    return path


async def show_workflow_editor(window: MainWindow) -> None:
    """The editor with a template on the canvas (the demo one when nothing is stored), checked,
    fitted, and one step selected so the inspector shows its fields."""
    editor = window.workflows
    await window.ops.idle()
    if not editor.document.template.nodes:
        editor.open_sample()
    await editor.validator.validate_now()
    await asyncio.sleep(0)  # lay the page out before fitting the view to it
    editor.view.fit()
    ids = list(editor.scene.item_for_node)
    if ids:
        editor.scene.select_nodes(["check_web" if "check_web" in ids else ids[0]])


async def show_runs_list(window: MainWindow) -> None:
    """The list of runs (not a monitor left open by an earlier picture)."""
    page = window.runs
    if page.stack.currentWidget() is not page.list_page:
        page.show_list()
    await window.ops.idle()


async def show_run_monitor(window: MainWindow) -> bool:
    """The monitor on the most telling run: one that failed (or rolled back), else the newest;
    its failed step selected so the log shows that step. False when there is no run."""
    page = window.runs
    runs = list(page.model.runs())
    if not runs:
        return False
    telling = [r for r in runs if r.status in ("failed", "rolled_back", "timed_out")]
    run = (telling or runs)[0]
    window.show_page("runs")
    if not await page.open_run(run.id):
        return False
    await asyncio.sleep(0)
    monitor = page.monitor
    failed = [s.id for s in monitor.watch.steps.values() if s.status in ("failed", "timed_out")]
    if failed:
        monitor.select_step(failed[0])
    await asyncio.sleep(0)  # lay out, then fit the graph to the canvas it got
    monitor.fit()
    await asyncio.sleep(0)
    return True


async def show_evidence(window: MainWindow) -> None:
    """The ledger with a packet selected and its detail loaded: the newest packet about a
    release (its subjects are the release's components), else the newest packet."""
    page = window.evidence
    await window.ops.idle()
    await page.refresh()
    packets = list(page.model.packets())  # newest first
    if not packets:
        return
    chosen = next((p for p in packets if p.release), packets[0])
    page.select_packet(chosen.id)
    page.view.setFocus()
    await window.ops.idle()


async def show_promotions(window: MainWindow) -> None:
    """The pipeline board as just read."""
    await window.ops.idle()
    await window.promotions.refresh()


async def show_approvals(window: MainWindow) -> str | None:
    """An approver's inbox (carol's in the demo: bob has decided already) with the promotion into
    the last environment selected and its case loaded. Returns the person to switch back to."""
    original = window.session.require().profile.name
    person = next(
        (n for n in INBOX_PEOPLE if n != original and window.person.findText(n) >= 0), None
    )
    if person is not None and not await window.switch_person(person):
        person = None  # not a demo: the switch asked for their passphrase (pictured after)
    page = window.approvals
    await window.ops.idle()
    await page.refresh()
    promotions = list(page.model.promotions())
    if promotions:
        last = promotions[0]
        for promotion in promotions:
            if promotion.environment == "prod":
                last = promotion
        page.select_promotion(last.id)
        page.view.setFocus()
    await window.ops.idle()
    return original if person is not None else None


async def show_dashboard(window: MainWindow) -> None:
    """The dashboard as just read, laid out: a path rebuilt while shown takes its new height
    a turn of the loop later (its scroll area hears of it after its content)."""
    await window.ops.idle()
    await window.dashboard.refresh()
    for _ in range(3):
        await asyncio.sleep(0)


async def show_targets(window: MainWindow) -> None:
    """Agents and targets as just read, the first target selected so its detail shows."""
    page = window.targets
    await window.ops.idle()
    await page.refresh()
    if page.targets.rowCount():
        page.select_target(page.targets.record(0).target.name)


async def prepare_demo_runs(window: MainWindow) -> None:
    """A first start's runs page is empty: run the sample workflow a few times for real."""
    from stella_desk.runs.demo import prepare_demo_runs as prepare

    stella = window.session.require()
    with contextlib.suppress(OpFailed):  # presented; the pictures are taken anyway
        started = await window.ops.run(
            lambda _report: prepare(stella), label="Running the demo workflow"
        )
        if started:
            # The demo stored its template: the editor's list and the runs list show it.
            await asyncio.gather(window.runs.refresh(), window.workflows.refresh())


async def prepare_demo_promotions(window: MainWindow) -> None:
    """A first start has no promotion: take the demo release to dev, stage and half-way to
    prod, for real (only on the demo's own database)."""
    from stella_desk.promotions.demo import prepare_demo_promotions as prepare

    stella = window.session.require()
    with contextlib.suppress(OpFailed):  # presented; the pictures are taken anyway
        made = await window.ops.run(
            lambda _report: prepare(stella), label="Promoting the demo release"
        )
        if made:
            await asyncio.gather(
                window.promotions.refresh(), window.approvals.refresh(), window.runs.refresh()
            )


async def render_screens(window: MainWindow, out_dir: Path) -> list[Path]:
    """Call after `window.attach(...)` returned: by then every page has its data."""
    out_dir.mkdir(parents=True, exist_ok=True)
    window.resize(WINDOW_SIZE)
    window.show()
    browser = window.releases
    if browser.model.rowCount():
        # A selected release, so the picture shows digests rather than a hint.
        browser.select_release(browser.model.release_at(0).name)
    saved = []
    for key, _title in PAGES:
        window.show_page(key)
        switch_back = None
        if key == "dashboard":
            await show_dashboard(window)
        elif key == "workflows":
            await show_workflow_editor(window)
        elif key == "runs":
            await show_runs_list(window)
        elif key == "promotions":
            await show_promotions(window)
        elif key == "approvals":
            switch_back = await show_approvals(window)
        elif key == "evidence":
            await show_evidence(window)
        elif key == "targets":
            await show_targets(window)
        # One turn of the loop: Qt handles the pending layout and paint events of the page.
        await asyncio.sleep(0)
        saved.append(save(window, out_dir / f"{key}.png"))
        asked = window.passphrase_dialog
        if asked is not None:  # the person switch of a real database: what it asks
            await asyncio.sleep(0)
            saved.append(save(asked, out_dir / "switch-person.png"))
            asked.reject()
        if switch_back is not None:
            await window.switch_person(switch_back)
            await window.ops.idle()

    # The release dialog, filled in as a person would, to review its layout too.
    window.show_page("releases")
    dialog = browser.open_create_dialog()
    await window.ops.idle()
    dialog.name.setText("shop-2026.12.1")
    if dialog.rows:
        dialog.rows[0].reference.setText("1.2.0")
    await asyncio.sleep(0)
    saved.append(save(dialog, out_dir / "new-release.png"))
    dialog.reject()

    # The enrollment dialog, filled in (no token is made for a picture: a token is a secret).
    window.show_page("targets")
    enroll = window.targets.open_enroll()
    enroll.name.setText("edge-1")
    enroll.labels.setText("site=lab os=linux")
    await asyncio.sleep(0)
    saved.append(save(enroll, out_dir / "enroll-agent.png"))
    enroll.reject()
    return saved


async def render_all(window: MainWindow, out_dir: Path) -> list[Path]:
    """`stella-desk --screenshot`: demo runs and promotions first (on a fresh database), every
    screen, then the run monitor on one of those runs."""
    await prepare_demo_runs(window)
    await prepare_demo_promotions(window)  # after the runs: their demo wants a run-free start
    saved = await render_screens(window, out_dir)
    if await show_run_monitor(window):
        saved.append(save(window, out_dir / "run-monitor.png"))
    return saved
