"""The one way the desktop runs core work (Anki's `CollectionOp` is the model).

`Ops.run` takes a blocking function, runs it on a worker thread and, on the UI thread: sets the
busy state, relays the core's progress callback, presents errors in one place, and broadcasts
what changed so views refresh only that. Worker threads never touch widgets: progress crosses
back through `loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from PySide6.QtCore import QObject, Signal

from stella_core.crypto.keys import WrongPassphraseError
from stella_core.errors import (
    AuthorizationError,
    ConnectorError,
    DatabaseError,
    IntegrityError,
    ManifestNotFoundError,
    QuotaError,
    RegistryAuthError,
    RegistryUnreachableError,
    StellaError,
)
from stella_core.promotions.model import ApprovalRefusedError
from stella_core.tenancy.keys import PassphraseRequiredError

log = logging.getLogger(__name__)

T = TypeVar("T")

# (done, total, message): the core's progress callback shape, called on a worker thread.
Report = Callable[[int, int, str], None]


class Change(StrEnum):
    """Topics an operation can change; views subscribe to the ones they show."""

    RELEASES = "releases"
    ENVIRONMENTS = "environments"
    PROMOTIONS = "promotions"  # requested, decided, cancelled or re-evaluated
    PEOPLE = "people"
    RUNS = "runs"  # started, moved on, ended, approved
    WORKFLOWS = "workflows"  # templates saved
    EVIDENCE = "evidence"  # packets recorded or sealed
    PERSON = "person"  # the acting person switched: everything shown may differ


@dataclass(frozen=True)
class OpChanges:
    topics: frozenset[Change]
    # Who asked for the change: it has usually applied it already and can skip a reload.
    # The change feed (`stella_desk.feed`) is the initiator of what other processes changed.
    initiator: object | None = None

    def touches(self, *topics: Change) -> bool:
        return bool(self.topics.intersection(topics))


@dataclass(frozen=True)
class OpProgress:
    label: str
    done: int
    total: int
    message: str


class Reads:
    """A view's reads of one thing, newest wins: a read started later supersedes one still in
    flight. The superseded caller then waits for the newer read to land (`settle`), so whoever
    awaits a view's `refresh()` finds it at least as fresh as when they asked, even when a
    change heard meanwhile started another read."""

    def __init__(self) -> None:
        self.generation = 0  # of the newest read started
        self.landed = 0  # of the newest read shown
        self.in_flight = 0

    def begin(self) -> int:
        self.generation += 1
        self.in_flight += 1
        return self.generation

    def end(self) -> None:
        """The read came back (or failed): call in `finally`."""
        self.in_flight -= 1

    def current(self, generation: int) -> bool:
        return generation == self.generation

    def land(self, generation: int) -> None:
        self.landed = max(self.landed, generation)

    async def settle(self, generation: int) -> None:
        """Wait until a read at least as new as `generation` is shown, or none is in flight."""
        while self.landed < generation and self.in_flight:
            await asyncio.sleep(0.02)


class OperationCancelled(Exception):
    """The person stopped the operation at a point where nothing had been stored."""


class OpFailed(Exception):
    """An operation failed; `message` is what the person is shown (already presented if asked)."""

    def __init__(self, label: str, message: str, error: BaseException) -> None:
        super().__init__(message)
        self.label = label
        self.message = message
        self.error = error


class CancelToken:
    """Set from the UI thread, checked by the worker at the core's progress points."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise OperationCancelled("stopped")


def describe_error(exc: BaseException) -> str:
    """Every error class the desktop shows, mapped to words, in one place."""
    if not isinstance(exc, StellaError):
        return f"Unexpected error ({type(exc).__name__}): {exc}"
    text: str = exc.message
    if isinstance(exc, QuotaError):
        resets = f"; it resets {exc.resets_at}" if exc.resets_at else ""
        return f"{text} (limit {exc.limit}, used {exc.usage}{resets})"
    if isinstance(exc, IntegrityError):  # digest mismatches included
        return f"Integrity check failed: {text}"
    if isinstance(exc, ManifestNotFoundError):
        return f"Not in the registry: {text}"
    if isinstance(exc, RegistryAuthError):
        return f"The registry refused access: {text}"
    if isinstance(exc, RegistryUnreachableError):
        return f"The registry could not be reached (trying again may help): {text}"
    if isinstance(exc, ConnectorError):
        return f"{text} (trying again may help)" if exc.retryable else text
    if isinstance(exc, ApprovalRefusedError):
        return f"Refused: {text}"  # says who may not decide and why, in the core's words
    if isinstance(exc, AuthorizationError):
        return f"Not allowed: {text}"
    if isinstance(exc, DatabaseError):
        return f"Database problem: {text}"
    if isinstance(exc, WrongPassphraseError):
        return f"Refused: {text}"
    if isinstance(exc, PassphraseRequiredError):
        return f"{text}. Choose yourself under Person (top right) to enter it."
    # Definition errors (bad names, references, unknown or duplicate things) say it already.
    return text


class Ops(QObject):
    """Runs operations; owns the worker threads and the tasks slots start."""

    busy_changed = Signal(bool)
    progressed = Signal(object)  # OpProgress
    failed = Signal(str, str)  # label, message: the window shows it
    changed = Signal(object)  # OpChanges

    def __init__(self, parent: QObject | None = None, *, workers: int = 4) -> None:
        super().__init__(parent)
        # Our own pool (not the loop's default) so shutdown can stop waiting after a bound.
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stella-op")
        self._running = 0
        self._tokens: set[CancelToken] = set()
        self._threads: set[asyncio.Future[Any]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closers: list[Callable[[], None]] = []
        self._closed = False

    @property
    def busy(self) -> bool:
        return self._running > 0

    async def run(
        self,
        work: Callable[[Report], T],
        *,
        label: str,
        changes: Iterable[Change] = (),
        initiator: object | None = None,
        on_progress: Callable[[OpProgress], None] | None = None,
        cancel: CancelToken | None = None,
        present_errors: bool = True,
    ) -> T:
        """Run `work(report)` on a worker thread.

        Returns its result and broadcasts `changes`; raises `OpFailed` (after presenting it,
        unless `present_errors` is false so the caller can show it in place) or
        `OperationCancelled`.
        """
        if self._closed:
            raise OpFailed(label, "the application is shutting down", RuntimeError("closed"))
        loop = asyncio.get_running_loop()
        token = cancel or CancelToken()

        def relay(progress: OpProgress) -> None:  # UI thread
            if on_progress is not None:
                on_progress(progress)
            self.progressed.emit(progress)

        def report(done: int, total: int, message: str) -> None:  # worker thread
            # The core reports between steps, before storing: a safe place to stop.
            token.check()
            loop.call_soon_threadsafe(relay, OpProgress(label, done, total, message))

        self._tokens.add(token)
        self._enter()
        thread = loop.run_in_executor(self._executor, work, report)
        self._threads.add(thread)
        thread.add_done_callback(self._thread_done)
        try:
            # Shielded: cancelling the awaiting task (at shutdown) must not cancel the thread's
            # future, which shutdown still waits on.
            result = await asyncio.shield(thread)
        except asyncio.CancelledError:
            token.cancel()
            raise
        except OperationCancelled:
            raise
        except Exception as exc:
            message = describe_error(exc)
            if not isinstance(exc, StellaError):
                log.error("%s failed", label, exc_info=exc)
            if present_errors:
                self.failed.emit(label, message)
            raise OpFailed(label, message, exc) from exc
        finally:
            self._tokens.discard(token)
            self._leave()
        if changes:
            self.announce(changes, initiator)
        return result

    def announce(self, changes: Iterable[Change], initiator: object | None = None) -> None:
        """Tell every view what changed (also for changes made outside `run`)."""
        self.changed.emit(OpChanges(frozenset(changes), initiator))

    def on_shutdown(self, close: Callable[[], None]) -> None:
        """Call `close` first thing at shutdown (threads of our own that are not operations)."""
        self._closers.append(close)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Start a coroutine from a slot; keep it alive and log what nobody else handles."""
        task = asyncio.get_event_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _thread_done(self, thread: asyncio.Future[Any]) -> None:
        self._threads.discard(thread)
        if not thread.cancelled():
            thread.exception()  # retrieved: an abandoned op's error is not logged as lost

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        # OpFailed was presented by `run`; a cancel is the person's own choice.
        if exc is None or isinstance(exc, OpFailed | OperationCancelled):
            return
        log.error("unhandled error in the desktop", exc_info=exc)
        self.failed.emit("Unexpected error", describe_error(exc))

    async def idle(self) -> None:
        """Wait until every spawned task has finished (tests and screenshots wait on this)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def shutdown(self, timeout: float = 5.0) -> bool:
        """Stop: cancel what runs, wait at most `timeout` for worker threads; True if all ended.

        Threads cannot be killed; a straggler is bounded by the core's own network and
        database timeouts and is left to finish on its own.
        """
        self._closed = True
        for close in self._closers:
            close()
        for token in list(self._tokens):
            token.cancel()
        for task in list(self._tasks):
            task.cancel()
        pending: set[asyncio.Future[Any]] = set(self._tasks) | set(self._threads)
        if pending:
            _, still = await asyncio.wait(pending, timeout=timeout)
            if still:
                log.warning("%d operation(s) still running at shutdown", len(still))
        self._executor.shutdown(wait=False, cancel_futures=True)
        return not self._threads

    def _enter(self) -> None:
        self._running += 1
        if self._running == 1:
            self.busy_changed.emit(True)

    def _leave(self) -> None:
        self._running -= 1
        if self._running == 0:
            self.busy_changed.emit(False)
