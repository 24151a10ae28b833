"""The change feed: what other processes change (the CLI, another desk, `stella serve`) reaches
the views as the desk's own operations do, through `Ops.changed`.

A thread waits on the core's change listener (PostgreSQL LISTEN, one channel per tenant and
topic, see `stella_core.db.changes`) and hands the topics it hears to the UI thread, where a
burst is folded into one broadcast after `FOLD_MS`. The broadcast names the feed as its
initiator, so a view that skips its own echo still hears everyone else. While the listener is
down, `Session.live` is false and views fall back to polling; when it comes back, every topic
is announced once (what changed meanwhile was not heard).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QTimer, Signal

from stella_core.errors import StellaError
from stella_desk.ops import Change, Ops
from stella_desk.session import Session

if TYPE_CHECKING:
    from stella_core.bootstrap import Stella
    from stella_core.db.changes import ChangeListener

log = logging.getLogger(__name__)

FOLD_MS = 120  # a burst of notices (a release and its components, a seeding) is one broadcast
WAIT_S = 0.5  # how long one wait blocks: the thread notices a stop within this
RETRY_S = 5.0  # after the listener failed: connect again this often

# What another process can change (PERSON is this desk's own switch: never heard).
HEARD = frozenset(Change) - {Change.PERSON}


class ChangeFeed(QObject):
    live_changed = Signal(bool)

    def __init__(self, ops: Ops, session: Session, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.ops = ops
        self.session = session
        self.heard: set[Change] = set()  # waiting to be folded into the next broadcast
        self.broadcasts = 0  # how many the feed made (tests and the status line read it)
        self.problem = ""  # why the feed is not live ("" when it is, or was never started)
        self._generation = 0
        self._stop: threading.Event | None = None
        self._fold = QTimer(self)
        self._fold.setSingleShot(True)
        self._fold.setInterval(FOLD_MS)
        self._fold.timeout.connect(self._broadcast)
        # Plain Python, no Qt: at shutdown the window (and this object) may be gone already.
        stops: set[threading.Event] = set()
        self._stops = stops

        def halt() -> None:
            for stop in list(stops):
                stop.set()

        ops.on_shutdown(halt)

    @property
    def live(self) -> bool:
        return self.session.live

    def start(self, stella: Stella) -> None:
        """Listen as `stella`'s person (again, after a person switch). Call on the UI thread
        while the event loop runs."""
        self.stop()
        self._generation += 1
        stop = threading.Event()
        self._stop = stop
        self._stops.add(stop)
        loop = asyncio.get_running_loop()
        generation = self._generation

        def post(handler: Callable[..., None], *args: Any) -> bool:  # worker thread
            try:
                loop.call_soon_threadsafe(handler, generation, *args)
            except RuntimeError:  # the loop is closed: nobody is left to tell
                return False
            return True

        thread = threading.Thread(
            target=_listen,
            args=(stella, stop, post, self._on_state, self._on_heard),
            name="stella-changes",
            daemon=True,  # it holds no work: a desk that exits need not wait for it
        )
        thread.start()

    def stop(self) -> None:
        """Stop listening; the thread closes its connection within `WAIT_S`."""
        if self._stop is not None:
            self._stop.set()
            self._stops.discard(self._stop)
            self._stop = None
        self._generation += 1
        self._fold.stop()
        self.heard.clear()
        self._set_live(False, "")

    # --- UI thread -----------------------------------------------------------------------
    def _on_state(self, generation: int, live: bool, problem: str) -> None:
        if generation != self._generation:
            return
        # Back after being deaf: anything may have changed meanwhile. Gone deaf: views read
        # once more, and then poll until the feed is back.
        changed_state = (live and bool(self.problem)) or (not live and self.session.live)
        self._set_live(live, problem)
        if changed_state:
            self.heard |= HEARD
            self._fold.start()

    def _on_heard(self, generation: int, topics: frozenset[str]) -> None:
        if generation != self._generation:
            return
        self.heard |= {Change(t) for t in topics if t in Change._value2member_map_}
        if self.heard and not self._fold.isActive():
            self._fold.start()

    def _broadcast(self) -> None:
        heard, self.heard = self.heard, set()
        if heard and self.session.ready:
            self.broadcasts += 1
            self.ops.announce(heard, initiator=self)

    def _set_live(self, live: bool, problem: str) -> None:
        self.problem = problem
        if self.session.live != live:
            self.session.live = live
            self.live_changed.emit(live)


def _listen(
    stella: Stella,
    stop: threading.Event,
    post: Callable[..., bool],
    on_state: Callable[..., None],
    on_heard: Callable[..., None],
) -> None:
    """The feed's thread: LISTEN, hand over what is heard, reconnect when the line drops."""
    listener: ChangeListener | None = None
    try:
        while not stop.is_set():
            if listener is None:
                try:
                    listener = stella.listen_changes()
                except StellaError as exc:
                    log.warning("not hearing changes made elsewhere: %s", exc.message)
                    if not post(on_state, False, exc.message):
                        return
                    stop.wait(RETRY_S)
                    continue
                if not post(on_state, True, ""):
                    return
            try:
                topics = listener.wait(WAIT_S)
            except StellaError as exc:
                if stop.is_set():  # the desk is closing and the database went first
                    return
                log.warning("stopped hearing changes made elsewhere: %s", exc.message)
                listener.close()
                listener = None
                if not post(on_state, False, exc.message):
                    return
                continue
            if (
                topics
                and not stop.is_set()
                and not post(on_heard, frozenset(t.value for t in topics))
            ):
                return
    finally:
        if listener is not None:
            with contextlib.suppress(Exception):
                listener.close()
