"""The operation helper: threads, progress on the UI thread, busy state, errors, cancel, changes."""

from __future__ import annotations

import threading

import pytest

from stella_core.errors import (
    AuthorizationError,
    DigestMismatchError,
    ManifestNotFoundError,
    QuotaError,
    RegistryUnreachableError,
)
from stella_desk.ops import (
    CancelToken,
    Change,
    OpChanges,
    OperationCancelled,
    OpFailed,
    OpProgress,
    Ops,
    describe_error,
)


def test_work_runs_off_the_ui_thread_and_progress_arrives_on_it(ops: Ops, run) -> None:
    ui = threading.current_thread()
    seen: list[tuple[OpProgress, threading.Thread]] = []
    busy: list[bool] = []
    changes: list[OpChanges] = []
    ops.busy_changed.connect(busy.append)
    ops.changed.connect(changes.append)

    def work(report) -> threading.Thread:
        for i in range(3):
            report(i + 1, 3, f"step {i + 1}")
        return threading.current_thread()

    worker = run(
        ops.run(
            work,
            label="Counting",
            changes=[Change.RELEASES],
            initiator="me",
            on_progress=lambda p: seen.append((p, threading.current_thread())),
        )
    )
    assert worker is not ui
    assert [p.message for p, _ in seen] == ["step 1", "step 2", "step 3"]
    assert all(thread is ui for _, thread in seen)
    assert busy == [True, False]
    assert changes == [OpChanges(frozenset({Change.RELEASES}), "me")]


def test_errors_are_presented_once_and_raised_as_op_failed(ops: Ops, run) -> None:
    presented: list[tuple[str, str]] = []
    ops.failed.connect(lambda label, message: presented.append((label, message)))

    def work(_report) -> None:
        raise ManifestNotFoundError("demo/web:9.9 not found")

    with pytest.raises(OpFailed) as failed:
        run(ops.run(work, label="Creating release", changes=[Change.RELEASES]))
    assert failed.value.message == "Not in the registry: demo/web:9.9 not found"
    assert presented == [("Creating release", failed.value.message)]

    # In-place callers present it themselves: the window hears nothing.
    with pytest.raises(OpFailed):
        run(ops.run(work, label="Creating release", present_errors=False))
    assert len(presented) == 1
    assert not ops.busy


def test_cancel_stops_at_the_next_progress_point(ops: Ops, run) -> None:
    token = CancelToken()
    reached: list[int] = []

    def work(report) -> str:
        report(0, 2, "first")
        token.cancel()  # as if the person pressed Stop now
        reached.append(1)
        report(1, 2, "second")  # the core's next checkpoint: stops here
        reached.append(2)
        return "stored"

    with pytest.raises(OperationCancelled):
        run(ops.run(work, label="Resolving", cancel=token))
    assert reached == [1]


def test_spawned_failures_are_not_lost(ops: Ops, run) -> None:
    presented: list[str] = []
    ops.failed.connect(lambda _label, message: presented.append(message))

    async def broken() -> None:
        raise ValueError("boom")

    ops.spawn(broken())
    run(ops.idle())
    assert presented == ["Unexpected error (ValueError): boom"]


def test_error_classes_map_to_words() -> None:
    assert describe_error(AuthorizationError("bob is approver")) == "Not allowed: bob is approver"
    assert describe_error(DigestMismatchError("x")) == "Integrity check failed: x"
    assert "trying again may help" in describe_error(RegistryUnreachableError("timeout"))
    quota = QuotaError("too many environments", limit=3, usage=3, resets_at=None)
    assert describe_error(quota) == "too many environments (limit 3, used 3)"


def test_signal_emits_cannot_exhaust_references_to_true() -> None:
    import sys

    from stella_desk.qtcompat import _Probe, emit_drops_true_references

    # The session fixture applied the guard; if the binding leaks, True must have headroom.
    if sys.version_info < (3, 12) and emit_drops_true_references():
        assert sys.getrefcount(True) > 1 << 39
    probe = _Probe()
    for _ in range(20_000):  # more than True's natural reference count on 3.11
        probe.fired.emit(1)
    assert sys.getrefcount(True) > 0
