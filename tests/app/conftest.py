"""Desktop fixtures: a qasync loop per test, the op runner, and a window over a seeded world.

Coroutines run with `run(coro)` (the loop runs Qt's event loop meanwhile, so clicks, signals
and worker-thread results are all delivered); nothing sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
import qasync
from PySide6.QtCore import QSettings, SignalInstance
from PySide6.QtWidgets import QApplication

from stella_core.demo.seed import seed
from stella_desk import theme
from stella_desk.ops import Ops
from stella_desk.qtcompat import GuiThreadCollector, protect_bool_refcount, protect_none_refcount
from stella_desk.session import Session
from stella_desk.window import WINDOW_SIZE, MainWindow

T = TypeVar("T")
Run = Callable[..., Any]


@pytest.fixture(scope="session", autouse=True)
def _bool_refcount_guard() -> None:
    # PySide6 6.12.0 drops a reference to True per Python-side emit (see stella_desk.qtcompat);
    # without this the interpreter aborts at exit after the suite passed.
    protect_bool_refcount()
    protect_none_refcount()


class _AlwaysRunningLoop(qasync.QEventLoop):  # type: ignore[misc]
    """The desk's loop as main() has it: running for the whole life of the window.

    A test runs the loop in several `run_until_complete` calls, and Qt events are processed
    between them too (qasync's last pass after each call, pytest-qt's clicks); a task stepped
    there would find no running loop, which never happens in the desk. So the loop stays the
    running one after each call (qasync 0.28's `_after_run_forever` hook)."""

    def _after_run_forever(self) -> None:
        super()._after_run_forever()
        asyncio.events._set_running_loop(self)


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path_factory: pytest.TempPathFactory) -> None:
    # The desk keeps view choices (the theme) in QSettings: each test starts from none.
    folder = tmp_path_factory.mktemp("settings")
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(folder))


@pytest.fixture(autouse=True)
def _collect_on_the_gui_thread(qapp: QApplication) -> Iterator[None]:
    # As the desk does (see GuiThreadCollector): a Qt object a test leaves in a cycle must be
    # destroyed here, not on a worker thread that happens to cross a GC threshold.
    collector = GuiThreadCollector()
    yield
    collector.stop()


@pytest.fixture
def aloop(qapp: QApplication) -> Iterator[qasync.QEventLoop]:
    theme.apply(qapp)
    loop = _AlwaysRunningLoop(qapp)
    asyncio.set_event_loop(loop)
    yield loop
    leftovers = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in leftovers:
        task.cancel()
    if leftovers:
        loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
    asyncio.events._set_running_loop(None)
    loop.close()
    asyncio.set_event_loop(None)


@pytest.fixture
def run(aloop: qasync.QEventLoop) -> Run:
    def run(coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        # The timeout only turns a hang into a failure; nothing waits for it to pass.
        return aloop.run_until_complete(asyncio.wait_for(coro, timeout))

    return run


@pytest.fixture
def ops(aloop: qasync.QEventLoop) -> Iterator[Ops]:
    runner = Ops()
    yield runner
    aloop.run_until_complete(runner.shutdown(timeout=30.0))


@pytest.fixture
def seeded(world):
    stella = world.open()
    seed(stella)
    return stella


@pytest.fixture
def desk(qtbot, run: Run, ops: Ops, seeded) -> Iterator[MainWindow]:
    window = MainWindow(ops, Session())
    qtbot.addWidget(window)
    window.resize(WINDOW_SIZE)
    window.show()
    run(window.attach(seeded))
    yield window
    run(ops.idle())
    current = window.session.stella
    if current is not None and current is not seeded:
        current.close(keep_backend=True)  # a person switched to; the world closes the rest


async def next_emission(signal: SignalInstance) -> tuple[Any, ...]:
    """Wait for the next emission of a Qt signal (use inside `run`, with its timeout)."""
    future: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()

    def fire(*args: Any) -> None:
        if not future.done():
            future.set_result(args)

    signal.connect(fire)
    try:
        return await future
    finally:
        signal.disconnect(fire)
