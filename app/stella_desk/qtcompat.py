"""Work-arounds for defects in the Qt binding we ship, each detected before it is applied.

PySide6 6.12.0: `SignalInstance.emit()` returns `True` without taking a reference, so every
emit from Python drops one reference to `True`. That includes qasync's `call_soon_threadsafe`,
which every worker-thread result passes through. On Python 3.11, where `True` is an ordinary
object, the interpreter aborts once the references run out ("Fatal Python error: bool_dealloc:
deallocating True or False"), after a few thousand emits or at exit. Python 3.12+ makes `True`
immortal, which is exactly what we do here, on 3.11, when the defect is present.

The same release returns `None` from void methods without a reference too, so `None` gets the
same treatment (`protect_none_refcount`).
"""

from __future__ import annotations

import ctypes
import sys

from PySide6.QtCore import QObject, Signal

_PROBE_EMITS = 16
# Far more emits than any session makes; the count is a 64-bit integer.
_HEADROOM = 1 << 40


class _Probe(QObject):
    fired = Signal(int)


def emit_drops_true_references() -> bool:
    probe = _Probe()
    before = sys.getrefcount(True)
    for _ in range(_PROBE_EMITS):
        probe.fired.emit(1)
    return sys.getrefcount(True) <= before - _PROBE_EMITS


def protect_bool_refcount() -> bool:
    """Apply the work-around if this interpreter and binding need it; True if applied."""
    if sys.implementation.name != "cpython" or sys.version_info >= (3, 12):
        return False  # immortal booleans: a lost reference is harmless
    if not emit_drops_true_references():
        return False
    # ob_refcnt is the first field of a CPython object in a release build; check before writing.
    field = ctypes.c_ssize_t.from_address(id(True))
    if abs(field.value - sys.getrefcount(True)) > 2:
        return False
    field.value += _HEADROOM
    return True


def void_call_drops_none_references() -> bool:
    """The same defect for `None`: every call of a void Qt method from Python (`update()`,
    `setText()`, `QTimer.start()`, and qasync's own timers) drops one reference to `None`.
    A window that polls and animates (the run monitor) makes hundreds of such calls a second."""
    probe = _Probe()
    before = sys.getrefcount(None)
    for _ in range(_PROBE_EMITS):
        probe.setObjectName("probe")
    return sys.getrefcount(None) <= before - _PROBE_EMITS


def protect_none_refcount() -> bool:
    """Make `None` immortal, as `protect_bool_refcount` does for `True`; True if applied."""
    if sys.implementation.name != "cpython" or sys.version_info >= (3, 12):
        return False
    if not void_call_drops_none_references():
        return False
    field = ctypes.c_ssize_t.from_address(id(None))
    if abs(field.value - sys.getrefcount(None)) > 2:
        return False
    field.value += _HEADROOM
    return True


class GuiThreadCollector(QObject):
    """Python's cyclic garbage collector runs on whichever thread allocates when a threshold is
    crossed: often a worker thread of the desk (database reads, signing). A Qt object found
    there in a cycle is then destroyed on the wrong thread: its timers stay registered with the
    GUI thread's event loop and a later timer event reaches freed memory (seen as a segmentation
    fault in `QTimerInfoList::activateTimers`). So automatic collection is off and this collects
    on the GUI thread instead, as often as the interpreter's own first threshold would."""

    def __init__(self, interval_ms: int = 500) -> None:
        super().__init__()
        import gc

        self._gc = gc
        self._threshold = gc.get_threshold()
        self._timer_id = self.startTimer(interval_ms)
        gc.disable()

    def timerEvent(self, event: object) -> None:
        self.collect_if_due()

    def collect_if_due(self) -> None:
        first, second, third = self._gc.get_count()
        limit0, limit1, limit2 = self._threshold
        if third > limit2:
            self._gc.collect(2)
        elif second > limit1:
            self._gc.collect(1)
        elif first > limit0:
            self._gc.collect(0)

    def stop(self) -> None:
        """Automatic collection back on (and one full collection, here, on this thread)."""
        if self._timer_id:
            self.killTimer(self._timer_id)
            self._timer_id = 0
        self._gc.collect()
        self._gc.enable()
