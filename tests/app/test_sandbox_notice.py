"""The Runs page warns while script steps may run without a sandbox, and when this machine has
none for the steps its window runs."""

from __future__ import annotations

from PySide6.QtCore import QPoint
from PySide6.QtGui import QColor

from stella_desk.runs.page import RunsPage
from stella_desk.runs.sandbox import SandboxNotice, sandbox_notice
from stella_desk.window import MainWindow


def settings(*, allowed: bool = False, sandbox: str | None = "bubblewrap", local: bool = True):
    return {"local_executor": local, "allow_unsandboxed": allowed, "sandbox": sandbox}


def test_what_the_notice_says() -> None:
    assert sandbox_notice(settings(), runs_here=True) is None
    assert sandbox_notice(settings(sandbox=None), runs_here=False) is None  # steps run elsewhere
    assert sandbox_notice(settings(sandbox=None, local=False), runs_here=True) is None

    missing = sandbox_notice(settings(sandbox=None), runs_here=True)
    assert missing is not None
    assert missing.kind == "warning"
    assert missing.title == "Script steps cannot run on this machine"
    assert "apt-get install bubblewrap" in missing.text

    bare = sandbox_notice(settings(sandbox=None, allowed=True), runs_here=True)
    assert bare is not None
    assert bare.kind == "danger"
    assert bare.title == "Script steps run on this machine without a sandbox"
    assert "profiles, keys and database password" in bare.text
    assert "stella workflow settings --unsandboxed off" in bare.text

    allowed = sandbox_notice(settings(allowed=True), runs_here=True)
    assert allowed is not None
    assert (allowed.kind, allowed.title) == ("warning", "Unsandboxed script steps are allowed")
    assert "This machine sandboxes them (bubblewrap)." in allowed.text
    elsewhere = sandbox_notice(settings(allowed=True, sandbox=None), runs_here=False)
    assert elsewhere is not None
    assert elsewhere.title == "Unsandboxed script steps are allowed"


def test_danger_is_red_and_a_warning_amber(qtbot) -> None:
    notice = SandboxNotice()
    qtbot.addWidget(notice)
    notice.resize(900, 80)
    for case, colour in (
        (settings(sandbox=None, allowed=True), "#fdeeee"),
        (settings(sandbox=None), "#fff8e6"),
    ):
        notice.show_notice(sandbox_notice(case, runs_here=True))
        notice.show()
        qtbot.waitExposed(notice)
        image = notice.grab().toImage()
        inside = notice.frame.mapTo(notice, QPoint(4, notice.frame.height() // 2))
        assert QColor(image.pixel(inside)).name() == colour
    notice.show_notice(None)
    assert notice.isHidden()


def test_the_runs_page_shows_it_while_an_admin_allows_unsandboxed_scripts(
    desk: MainWindow, run, seeded
) -> None:
    page = desk.show_page("runs")
    assert isinstance(page, RunsPage)
    run(page.refresh())
    assert page.sandbox_notice.isHidden()

    seeded.workflows.set_unsandboxed(True)
    run(page.refresh())
    assert page.sandbox_notice.isVisible()
    assert "Unsandboxed script steps are allowed" in page.sandbox_notice.text.text()
    # Above the list and the monitor alike.
    assert page.sandbox_notice.geometry().bottom() <= page.stack.geometry().top()

    seeded.workflows.set_unsandboxed(False)
    run(page.refresh())
    assert page.sandbox_notice.isHidden()
