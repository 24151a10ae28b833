"""`stella-desk`: the desktop's composition root.

One qasync loop, started here and only here. The core is opened on a worker thread while the
window says so; on exit, operations get a bounded time to stop and then the core is closed
(the embedded PostgreSQL then lingers for a while, STELLA_EMBEDDED_LINGER, so a command or the
next start finds it running, and stops by itself).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import qasync
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from stella_desk import theme
from stella_desk.local_agent import DeskAgent
from stella_desk.ops import OpFailed, Ops
from stella_desk.qtcompat import GuiThreadCollector, protect_bool_refcount, protect_none_refcount
from stella_desk.runs.worker import DeskWorker
from stella_desk.session import Session
from stella_desk.window import MainWindow

if TYPE_CHECKING:
    from stella_core.bootstrap import Stella

log = logging.getLogger("stella_desk")

SHUTDOWN_GRACE = 5.0  # seconds running operations get to stop at exit


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="stella-desk", description="Stella Release Desk")
    parser.add_argument("--profile", metavar="NAME", help="act as this profile's person")
    parser.add_argument(
        "--screenshot",
        metavar="DIR",
        type=Path,
        help="render every main screen to DIR/<screen>.png, then exit",
    )
    return parser.parse_args(argv)


def _open_core(profile: str | None) -> Stella:
    from stella_core.bootstrap import Stella

    return Stella.open(profile)


def _seed_if_empty(stella: Stella) -> bool:
    """A newcomer's first start shows a populated product; an existing database is left alone."""
    from stella_core.demo.seed import seed
    from stella_core.tenancy.model import ProductRole

    if stella.releases.list_releases():
        return False
    if stella.tenancy.whoami().role is not ProductRole.ADMIN:
        return False  # only an admin can add the demo people
    seed(stella, history=True)
    return True


async def run_desk(
    args: argparse.Namespace, window: MainWindow, ops: Ops, local_agent: DeskAgent | None = None
) -> int:
    closed = asyncio.Event()
    local_agent = local_agent or DeskAgent()
    window.targets.local_agent = local_agent  # a sticker read then never starts a second one
    window.closed.connect(closed.set)
    session = window.session
    try:
        window.show_starting("Starting the database…")
        try:
            stella = await ops.run(
                lambda _report: _open_core(args.profile),
                label="Starting the database",
                present_errors=False,
            )
        except OpFailed as exc:
            return await _startup_failed(args, window, closed, exc.message)
        session.stella = stella
        if closed.is_set():
            return 0  # closed while the database started: go straight to shutting it down
        window.show_starting("Preparing the demo data…")
        try:
            await ops.run(
                lambda _report: _seed_if_empty(stella),
                label="Preparing the demo data",
                present_errors=False,
            )
        except OpFailed as exc:
            # Not fatal: the desk works on an empty database too.
            log.warning("demo data not created: %s", exc.message)
        if closed.is_set():
            return 0
        # This machine's agent, beside the in-process orchestrator (embedded default only): on
        # a thread of its own, so the window never waits for it.
        local_agent.start(stella)
        try:
            await window.attach(stella)
        except OpFailed as exc:
            return await _startup_failed(args, window, closed, exc.message)
        if args.screenshot is not None:
            from stella_desk.screenshots import render_all

            for path in await render_all(window, args.screenshot):
                print(path)
            return 0
        await closed.wait()
        return 0
    finally:
        window.hide()
        # The in-process worker hands its steps back before the core closes.
        await window.runs.shutdown(SHUTDOWN_GRACE)
        await local_agent.stop()
        await ops.shutdown(SHUTDOWN_GRACE)
        if session.stella is not None:
            # Lets go of the embedded server (it lingers, then stops by itself).
            await asyncio.to_thread(session.stella.close)
            session.stella = None


async def _startup_failed(
    args: argparse.Namespace, window: MainWindow, closed: asyncio.Event, message: str
) -> int:
    print(f"stella-desk: {message}", file=sys.stderr)
    if args.screenshot is not None:
        return 1
    window.show_start_failure(message)
    await closed.wait()
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    protect_bool_refcount()  # before the first signal is emitted: see qtcompat
    protect_none_refcount()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("stella_core", "stella_desk"):
        logging.getLogger(name).setLevel(logging.INFO)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setApplicationName("Stella Release Desk")
    # The loop ends when run_desk returns (after the core is closed), not when the window does.
    app.setQuitOnLastWindowClosed(False)
    theme.apply(app)

    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    ops = Ops()
    window = MainWindow(ops, Session(), worker=DeskWorker())
    # Ctrl-C in the terminal closes the window like the close button; the timer gives Python a
    # chance to run signal handlers while Qt's loop sleeps.
    signal.signal(signal.SIGINT, lambda *_: loop.call_soon_threadsafe(window.close))
    ticker = QTimer()
    ticker.start(250)
    ticker.timeout.connect(lambda: None)
    collector = GuiThreadCollector()  # Qt objects die on the GUI thread, never a worker's
    if args.screenshot is None:
        window.show()
    try:
        with loop:
            code: int = loop.run_until_complete(run_desk(args, window, ops))
            return code
    finally:
        collector.stop()
        asyncio.set_event_loop(None)


if __name__ == "__main__":
    sys.exit(main())
