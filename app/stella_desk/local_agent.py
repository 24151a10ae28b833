"""This machine's agent, beside the desk's in-process orchestrator (the embedded default only).

Started on a thread of its own once the core is open (enrolling it first when the person may:
the first admin), so nothing waits on it: the gateway listens on loopback ports new at each
start, the agent dials them, and the demo's image layout is served as a registry on the loopback
port the seed recorded (`releases.layout_server`), for the agent's podman to pull from. Stopped
at exit, bounded, before the core closes. A failure (the ports cannot be opened, the agent is
not enrolled and this person may not enroll it) is logged, never shown as an error: the desk
works without it, and the local target says why it cannot deploy.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING

from stella_core.profiles import EMBEDDED

if TYPE_CHECKING:
    from stella_core.agents.local import LocalAgent
    from stella_core.bootstrap import Stella

log = logging.getLogger(__name__)

STOP_SECONDS = 2.0


def reason_not_to_run(stella: Stella) -> str | None:
    """Why this desk runs no local agent (None: it does)."""
    if stella.backend.target != EMBEDDED:
        return "the database is a shared server; its agents link to stella serve"
    if stella.orchestrator is None:
        return "this machine holds no orchestrator login"
    return None


class DeskAgent:
    def __init__(self) -> None:
        self.local: LocalAgent | None = None
        self.error: str | None = None
        self._starting: threading.Thread | None = None
        self._cancel = threading.Event()
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        local = self.local
        return local is not None and local.running

    @property
    def gateway_ports(self) -> tuple[int, int] | None:
        """(enrollment port, link port) while the gateway listens."""
        local = self.local
        gateway = local.gateway if local is not None else None
        return (gateway.enroll_port, gateway.link_port) if gateway is not None else None

    def start(self, stella: Stella) -> threading.Thread | None:
        """Start in the background (UI thread; returns at once). The thread, or None when this
        desk runs no local agent."""
        reason = reason_not_to_run(stella)
        if reason is not None:
            log.info("no local agent: %s", reason)
            return None
        if self._starting is not None and self._starting.is_alive():
            return self._starting
        self._cancel.clear()
        self._starting = threading.Thread(
            target=self._start, args=(stella,), name="stella-desk-local-agent", daemon=True
        )
        self._starting.start()
        return self._starting

    def _start(self, stella: Stella) -> None:  # its own thread
        from stella_core.agents.local import LocalAgent, ensure_local_agent, local_agent_dir

        try:
            if not ensure_local_agent(stella):
                self.error = "this machine's agent is not enrolled; an admin's start enrolls it"
                log.info("no local agent: %s", self.error)
                return
            if self._cancel.is_set():
                return
            local = LocalAgent(stella.orchestrator, local_agent_dir(stella.home), home=stella.home)
            local.start()
        except Exception as exc:  # logged: the desk works without its agent
            self.error = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            log.warning("the local agent did not start: %s", self.error)
            return
        with self._lock:
            if self._cancel.is_set():  # quit while it started
                local.stop(STOP_SECONDS)
                return
            self.local = local

    def _stop(self, timeout: float) -> None:
        self._cancel.set()
        starting = self._starting
        if starting is not None:
            starting.join(timeout)
        with self._lock:
            local, self.local = self.local, None
        if local is not None:
            local.stop(timeout)

    async def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Stop the agent and its gateway (bounded by about `timeout`)."""
        await asyncio.to_thread(self._stop, timeout)
