"""The Targets page: the enrolled agents (status, labels, last heartbeat, certificate expiry and
generation, the runtimes each reported) and every environment's targets (transport, group,
labels, what should run there, the sticker on it read on demand, drift).

Everyone reads; admins get the enrollment token dialog and revoke. A sticker is read only when
asked ("Read sticker": through the orchestrator, from the target itself, so it may take a
while) and shown plainly as verified or not. Agents' heartbeats change by the second and no
change feed carries them, so the page reads again every `REFRESH_MS` while it is on screen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QHideEvent, QShowEvent
from PySide6.QtWidgets import (
    QHBoxLayout,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from stella_core.agents.model import Agent, AgentStatus
from stella_desk import humane
from stella_desk.admin.common import ADMINS, Col, RecordModel, may, record_table
from stella_desk.chrome import PAGE_MARGINS, PageHeader, label
from stella_desk.ops import Change, OpChanges, OpFailed, Ops, Reads
from stella_desk.session import Session
from stella_desk.targets import drift, read
from stella_desk.targets.drift import DRIFT_COLOURS, NOT_CHECKED, UNAVAILABLE, DriftView
from stella_desk.targets.enroll import EnrollDialog, RevokeDialog
from stella_desk.targets.read import Estate, TargetRow

if TYPE_CHECKING:
    from datetime import datetime

    from stella_core.deploy.service import StickerReading
    from stella_desk.local_agent import DeskAgent

REFRESH_MS = 10_000
AGENT_COLOURS = {
    AgentStatus.ONLINE: "#15803d",
    AgentStatus.OFFLINE: "#a15c04",
    AgentStatus.REVOKED: "#b91c1c",
}
STATUS_WORDS = {  # the words: connected, offline, revoked
    AgentStatus.ONLINE: "connected",
    AgentStatus.OFFLINE: "offline",
    AgentStatus.REVOKED: "revoked",
}
VERIFIED = "#15803d"
NOT_VERIFIED = "#b91c1c"
READING = "reading…"


@dataclass(frozen=True)
class Sticker:
    """What the last "Read sticker" of a target found (or why it could not read)."""

    text: str
    detail: str
    ok: bool | None  # None: could not be read, or still reading


def labels_text(labels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))


class ColouredModel(RecordModel):
    """A record table whose cells may say their own text colour (statuses)."""

    def __init__(
        self,
        columns: Sequence[Col],
        colours: dict[int, Callable[[Any], str | None]],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(columns, parent)
        self.colours = colours

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = 0) -> Any:
        if role == Qt.ItemDataRole.ForegroundRole and index.isValid():
            colour = self.colours.get(index.column())
            found = colour(self.records[index.row()]) if colour else None
            return QColor(found) if found else None
        return super().data(index, role)

    def refresh_cells(self) -> None:
        if self.records:
            self.dataChanged.emit(
                self.index(0, 0), self.index(len(self.records) - 1, len(self.columns) - 1)
            )


class TargetsPage(QWidget):
    loaded = Signal()
    status_message = Signal(str)

    def __init__(self, ops: Ops, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("page")
        self.ops = ops
        self.session = session
        self.estate: Estate | None = None
        self.stickers: dict[str, Sticker] = {}
        # This desk's own local agent (main() sets it on the embedded default): while it runs,
        # a read never starts another beside it (one identity, one link).
        self.local_agent: DeskAgent | None = None
        self.enroll_dialog: EnrollDialog | None = None
        self.revoke_dialog: RevokeDialog | None = None
        self._reads = Reads()
        self._generation = 0
        self._checking = False
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self._tick)

        page = QVBoxLayout(self)
        page.setContentsMargins(*PAGE_MARGINS)
        page.setSpacing(8)
        header = PageHeader(
            "Targets", "Agents, the hosts releases run on, what should run there and what does."
        )
        self.drift_button = QPushButton("Check drift now")
        self.drift_button.setToolTip(
            "Read every target's sticker and inspect what runs there, against what should"
        )
        self.enroll_button = QPushButton("Enroll an agent…")
        self.enroll_button.setProperty("kind", "primary")
        self.enroll_button.setToolTip("Make a one-time enrollment token for a new agent")
        header.action_row.addWidget(self.drift_button)
        header.action_row.addWidget(self.enroll_button)
        page.addWidget(header)

        self.agents = ColouredModel(self._agent_columns(), {1: self._agent_colour}, self)
        self.agent_view = record_table(self.agents)
        self.targets = ColouredModel(
            self._target_columns(), {6: self._sticker_colour, 7: self._drift_colour}, self
        )
        self.target_view = record_table(self.targets)

        upper = QWidget()
        box = QVBoxLayout(upper)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(6)
        row = QHBoxLayout()
        self.agents_title = label("AGENTS", "section")
        row.addWidget(self.agents_title)
        row.addStretch(1)
        self.revoke_button = QPushButton("Revoke…")
        self.revoke_button.setToolTip("Cut the selected agent's link for good (admins)")
        row.addWidget(self.revoke_button)
        box.addLayout(row)
        box.addWidget(self.agent_view, 1)

        lower = QWidget()
        box = QVBoxLayout(lower)
        box.setContentsMargins(0, 6, 0, 0)
        box.setSpacing(6)
        row = QHBoxLayout()
        self.targets_title = label("TARGETS", "section")
        row.addWidget(self.targets_title)
        self.drift_note = label("", "muted")
        row.addWidget(self.drift_note)
        row.addStretch(1)
        self.sticker_button = QPushButton("Read sticker")
        self.sticker_button.setToolTip(
            "Read the version sticker on the selected target now and check its signature"
        )
        row.addWidget(self.sticker_button)
        box.addLayout(row)
        box.addWidget(self.target_view, 1)
        self.detail = label("", "muted", selectable=True)
        self.detail.setTextFormat(Qt.TextFormat.PlainText)  # a sticker's words are the target's
        self.detail.setWordWrap(True)
        # Two lines kept: a finding's reason wraps, and a label in a splitter gets no more.
        self.detail.setMinimumHeight(2 * self.detail.fontMetrics().lineSpacing() + 4)
        box.addWidget(self.detail)

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(upper)
        splitter.addWidget(lower)
        splitter.setChildrenCollapsible(False)
        splitter.setSizes([220, 300])
        page.addWidget(splitter, 1)
        self.error = label(kind="error", selectable=True)
        self.error.setWordWrap(True)
        page.addWidget(self.error)

        self.enroll_button.clicked.connect(lambda _checked=False: self.open_enroll())
        self.revoke_button.clicked.connect(lambda _checked=False: self.open_revoke())
        self.sticker_button.clicked.connect(lambda _checked=False: self._spawn_sticker())
        self.drift_button.clicked.connect(lambda _checked=False: self._spawn_drift())
        self.agent_view.selectionModel().currentRowChanged.connect(lambda *_: self._update())
        self.target_view.selectionModel().currentRowChanged.connect(lambda *_: self._update())
        ops.changed.connect(self._on_changes)
        self._update()

    # --- columns ---------------------------------------------------------------------------
    def _now(self) -> datetime | None:
        return self.estate.now if self.estate is not None else None

    def _agent_status(self, agent: Agent) -> AgentStatus:
        now = self._now()
        if now is None:
            return AgentStatus.REVOKED if agent.revoked_at else AgentStatus.OFFLINE
        return agent.status(now)

    def _agent_colour(self, agent: Agent) -> str | None:
        return AGENT_COLOURS.get(self._agent_status(agent))

    def _agent_columns(self) -> list[Col]:
        def status(agent: Agent) -> str:
            return STATUS_WORDS[self._agent_status(agent)]

        def status_tip(agent: Agent) -> str:
            if agent.revoked_at is not None:
                return (
                    f"revoked {humane.when(agent.revoked_at)} by {agent.revoked_by or '?'}: "
                    f"{agent.revoke_reason or 'no reason given'}"
                )
            return f"enrolled {humane.when(agent.enrolled_at)}"

        def runtimes(agent: Agent) -> str:
            if agent.runtimes is None:
                return "not reported yet"
            return ", ".join(agent.runtimes) or "none found"

        return [
            Col("Agent", lambda a: a.name, 110),
            Col("Status", status, 90, status_tip),
            Col("Labels", lambda a: labels_text(a.labels), 120),
            Col(
                "Last heartbeat",
                lambda a: humane.when_exact(a.last_heartbeat) or "never",
                150,
            ),
            Col(
                "Certificate expires",
                lambda a: humane.when(a.cert_not_after),
                135,
                lambda a: humane.when_exact(a.cert_not_after),
            ),
            Col("Generation", lambda a: str(a.generation_in_use), 92),
            Col("Runtimes", runtimes, 160),
            Col("Host", lambda a: f"{a.hostname} · {a.version}".strip(" ·"), 140),
        ]

    def _target_columns(self) -> list[Col]:
        def should_run(row: TargetRow) -> str:
            placed = row.placement
            return placed.release_name if placed is not None else "nothing deployed yet"

        def should_run_tip(row: TargetRow) -> str:
            placed = row.placement
            if placed is None:
                return "No deployment has reached this target yet"
            digests = "\n".join(f"{c}: {d}" for c, d in sorted(placed.digests.items()))
            return f"{placed.release_name}, deployed {humane.when(placed.placed_at)}\n{digests}"

        def sticker(row: TargetRow) -> str:
            found = self.stickers.get(row.target.name)
            return found.text if found is not None else "not read"

        def sticker_tip(row: TargetRow) -> str:
            found = self.stickers.get(row.target.name)
            return found.detail if found is not None else "Select the target and Read sticker"

        return [
            Col("Target", lambda r: r.target.name, 120),
            Col("Environment", lambda r: r.target.environment, 100),
            Col("Transport", lambda r: r.target.description, 160),
            Col("Group", lambda r: r.target.group or "", 70),
            Col("Labels", lambda r: labels_text(r.target.labels), 100),
            Col("Should run", should_run, 150, should_run_tip),
            Col("Last sticker", sticker, 190, sticker_tip),
            Col("Drift", self._drift_text, 110, self._drift_tip),
        ]

    def _sticker_colour(self, row: TargetRow) -> str | None:
        found = self.stickers.get(row.target.name)
        if found is None or found.ok is None:
            return None
        return VERIFIED if found.ok else NOT_VERIFIED

    def _drift_text(self, row: TargetRow) -> str:
        if self.estate is not None and not self.estate.drift_available:
            return "unavailable"  # the heading says it whole: drift checks unavailable
        return row.drift.words if row.drift is not None else NOT_CHECKED

    def _drift_tip(self, row: TargetRow) -> str:
        if self.estate is not None and not self.estate.drift_available:
            return f"{UNAVAILABLE[0].upper()}{UNAVAILABLE[1:]} in this build"
        if row.drift is None:
            return self._drift_text(row)
        checked = humane.when_exact(row.drift.checked_at)
        return f"{row.drift.detail()}\nchecked {checked}" if checked else row.drift.detail()

    @staticmethod
    def _drift_colour(row: TargetRow) -> str | None:
        if row.drift is None or row.drift.status not in DRIFT_COLOURS:
            return None
        return DRIFT_COLOURS[row.drift.status][0]

    # --- reading ---------------------------------------------------------------------------
    async def refresh(self) -> Estate | None:
        generation = self._generation = self._reads.begin()
        stella = self.session.require()
        self._update()
        try:
            estate = await self.ops.run(
                lambda _report: read.read_estate(stella),
                label="Loading agents and targets",
                present_errors=False,
            )
        except OpFailed as exc:
            if generation == self._generation:
                self.error.setText(f"Could not load agents and targets: {exc.message}")
            return None
        finally:
            self._reads.end()
        if generation != self._generation:
            await self._reads.settle(generation)
            return self.estate
        self._reads.land(generation)
        self.error.setText("")
        self._show(estate)
        self._schedule()
        self.loaded.emit()
        return estate

    def _show(self, estate: Estate) -> None:
        agent = self.selected_agent()
        target = self.selected_target()
        self.estate = estate
        self.agents.set_records(estate.agents)
        self.targets.set_records(estate.targets)
        if agent is not None:
            self.select_agent(agent.name)
        if target is not None:
            self.select_target(target.target.name)
        online = sum(1 for a in estate.agents if a.status(estate.now) is AgentStatus.ONLINE)
        self.agents_title.setText(
            f"AGENTS · {len(estate.agents)} · {online} CONNECTED" if estate.agents else "AGENTS"
        )
        self.targets_title.setText(
            f"TARGETS · {len(estate.targets)}" if estate.targets else "TARGETS · NONE YET"
        )
        self.drift_note.setText("" if estate.drift_available else f"({UNAVAILABLE} in this build)")
        self._update()

    def _tick(self) -> None:
        if self.isVisible() and self.session.ready and not self._reads.in_flight:
            self.ops.spawn(self.refresh())

    def _schedule(self) -> None:
        if self.isVisible() and self.session.ready:
            if not self._timer.isActive():
                self._timer.start()
        else:
            self._timer.stop()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self.session.ready:
            self.ops.spawn(self.refresh())

    def hideEvent(self, event: QHideEvent) -> None:
        super().hideEvent(event)
        self._timer.stop()

    def _on_changes(self, changes: OpChanges) -> None:
        if not self.session.ready:
            return
        if changes.touches(Change.PERSON, Change.ENVIRONMENTS) or (
            changes.touches(Change.RUNS, Change.PROMOTIONS) and self.isVisible()
        ):
            self.ops.spawn(self.refresh())

    # --- selection and roles ---------------------------------------------------------------
    def selected_agent(self) -> Agent | None:
        index = self.agent_view.currentIndex()
        found: Agent | None = self.agents.record(index.row()) if index.isValid() else None
        return found

    def selected_target(self) -> TargetRow | None:
        index = self.target_view.currentIndex()
        found: TargetRow | None = self.targets.record(index.row()) if index.isValid() else None
        return found

    @staticmethod
    def _select(view: QTableView, model: RecordModel, test: Callable[[Any], bool]) -> bool:
        for row, record in enumerate(model.records):
            if test(record):
                view.selectRow(row)
                return True
        return False

    def select_agent(self, name: str) -> bool:
        return self._select(self.agent_view, self.agents, lambda a: a.name == name)

    def select_target(self, name: str) -> bool:
        return self._select(self.target_view, self.targets, lambda r: r.target.name == name)

    @property
    def is_admin(self) -> bool:
        return may(self.session, ADMINS)

    def follow_role(self) -> None:
        self._update()

    def _update(self) -> None:
        admin = self.is_admin
        self.enroll_button.setVisible(admin)
        self.revoke_button.setVisible(admin)
        agent = self.selected_agent()
        self.revoke_button.setEnabled(agent is not None and agent.revoked_at is None)
        target = self.selected_target()
        reading = target is not None and self.stickers.get(target.target.name) == _READING
        self.sticker_button.setEnabled(target is not None and not reading)
        available = self.estate is None or self.estate.drift_available
        self.drift_button.setEnabled(available and not self._checking)
        self.drift_button.setToolTip(
            "Read every target's sticker and inspect what runs there, against what should"
            if available
            else f"{UNAVAILABLE[0].upper()}{UNAVAILABLE[1:]} in this build"
        )
        self._show_detail(target)

    def _show_detail(self, target: TargetRow | None) -> None:
        if target is None:
            self.detail.setText("Select a target to read its sticker or see its drift.")
            return
        parts = [f"{target.target.name} ({target.target.description})"]
        found = self.stickers.get(target.target.name)
        if found is not None and found.ok is not None:
            parts.append(f"sticker {found.detail}")
        elif found is None:
            parts.append(f"sticker in {target.target.directory}, not read yet")
        if target.drift is not None:
            parts.append("drift " + target.drift.detail().replace("\n", "; "))
        self.detail.setText(" · ".join(parts))

    def _beside(self) -> bool:
        """Whether a read may run this machine's agent beside itself (as the command line
        does): not while this desk runs it already."""
        return self.local_agent is None or not self.local_agent.running

    # --- stickers --------------------------------------------------------------------------
    def _spawn_sticker(self) -> None:
        target = self.selected_target()
        if target is not None:
            self.ops.spawn(self.read_sticker(target.target.name))

    async def read_sticker(self, name: str) -> Sticker:
        """Read the target's sticker now (on a worker thread) and show what it says."""
        stella = self.session.require()
        self.stickers[name] = _READING
        self.targets.refresh_cells()
        self._update()
        try:
            reading = await self.ops.run(
                lambda _report: read.read_sticker(stella, name, beside=self._beside()),
                label=f"Reading the sticker on {name}",
                present_errors=False,  # said in its cell and below the list
            )
        except OpFailed as exc:
            found = Sticker("could not be read", exc.message, None)
        else:
            found = sticker_of(reading)
        self.stickers[name] = found
        self.targets.refresh_cells()
        self._update()
        self.status_message.emit(f"Sticker on {name}: {found.text}")
        await self.refresh()  # the agent that answered has been heard from meanwhile
        return found

    # --- drift -----------------------------------------------------------------------------
    def _spawn_drift(self) -> None:
        self.ops.spawn(self.check_drift())

    async def check_drift(self, environment: str | None = None) -> list[DriftView] | None:
        """Check drift now (every target, or one environment's); the page shows the findings."""
        if self._checking:
            return None
        stella = self.session.require()
        rows = self.estate.targets if self.estate is not None else []
        from stella_core.agents.local import LOCAL_AGENT

        local = self._beside() and any(
            r.target.agent == LOCAL_AGENT
            for r in rows
            if environment is None or r.target.environment == environment
        )
        self._checking = True
        self._update()
        try:
            found = await self.ops.run(
                lambda _report: drift.check(stella, environment, local=local),
                label="Checking drift",
                # The board and the dashboard show environments' drift: they read it again.
                changes=[Change.ENVIRONMENTS],
            )
        except OpFailed:
            return None  # presented by the window's banner
        finally:
            self._checking = False
            self._update()
        if found is None:
            self.status_message.emit(f"No drift check: {UNAVAILABLE} in this build")
            return None
        drifted = sum(1 for f in found if f.status != drift.IN_SYNC)
        self.status_message.emit(
            f"Drift checked on {len(found)} target{'s' if len(found) != 1 else ''}: "
            + (f"{drifted} not in sync" if drifted else "all in sync")
        )
        await self.refresh()
        return found

    # --- dialogs ---------------------------------------------------------------------------
    def open_enroll(self) -> EnrollDialog:
        if self.enroll_dialog is not None and self.enroll_dialog.isVisible():
            self.enroll_dialog.raise_()
            return self.enroll_dialog
        dialog = EnrollDialog(self.ops, self.session, parent=self)
        dialog.issued.connect(
            lambda name: self.status_message.emit(f"Enrollment token made for agent {name}")
        )
        dialog.copied.connect(
            lambda: self.status_message.emit("Copied the enrollment command (shown once)")
        )
        self.enroll_dialog = dialog
        dialog.open()  # window-modal but asynchronous: the loop keeps running
        dialog.name.setFocus()
        return dialog

    def open_revoke(self) -> RevokeDialog | None:
        agent = self.selected_agent()
        if agent is None or agent.revoked_at is not None:
            return None
        if self.revoke_dialog is not None and self.revoke_dialog.isVisible():
            self.revoke_dialog.reject()
        dialog = RevokeDialog(self.ops, self.session, agent, parent=self)
        dialog.done_with.connect(self._revoked)
        self.revoke_dialog = dialog
        dialog.open()
        return dialog

    def _revoked(self, agent: Agent) -> None:
        self.status_message.emit(f"Agent {agent.name} is revoked")
        self.ops.spawn(self.refresh())


_READING = Sticker(READING, "Reading the sticker on the target…", None)


def sticker_of(reading: StickerReading) -> Sticker:
    text = read.sticker_words(reading)
    sticker = reading.sticker or {}
    release = sticker.get("release") or {}
    components = ", ".join(
        f"{c.get('name')}@{str(c.get('digest'))[:19]}…"
        for c in release.get("components") or []
        if isinstance(c, dict)
    )
    detail = f"{text} ({reading.path})" + (f": {components}" if components else "")
    return Sticker(text, detail, reading.signature_ok)
