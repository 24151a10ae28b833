"""Promote: a release, the environment it goes to, what changes there (component by component,
tag and digest), the gates checked before anything is stored, a reason, and the request.

Opened with `open()` (never `exec()`). Every change of release or environment asks the core for
a dry-run decision (`promotions.preview`) on a worker thread; a newer question supersedes an older
one still in flight, so the gates shown always belong to what is selected. The core refuses what
it must (not a release manager, an open promotion already); the refusal is shown here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFormLayout,
    QLineEdit,
    QWidget,
)

from stella_desk.chrome import InlineError, dialog_buttons, dialog_layout, fit_height, label
from stella_desk.ops import Change, OpFailed, Ops
from stella_desk.promotions.diff import ChangeTable, ComponentChange, component_changes
from stella_desk.promotions.gates import GateList
from stella_desk.promotions.status import VERDICT_WORDS, may_request, status_text
from stella_desk.session import Session

if TYPE_CHECKING:
    from stella_core.bootstrap import Stella
    from stella_core.environments.model import Environment
    from stella_core.promotions.model import Promotion
    from stella_core.releases.model import Release

VERDICT_COLOURS = {"allow": "#15803d", "pending": "#a15c04", "deny": "#b91c1c"}


@dataclass(frozen=True)
class Choices:
    releases: list[str]  # newest first
    environments: list[Environment]  # in promotion order
    current: dict[str, str]  # environment -> the release there now
    by_name: dict[str, Release] = field(default_factory=dict)


# --- worker-thread functions (called inside `ops.run`) ---------------------------------------
def read_choices(stella: Stella) -> Choices:
    releases = sorted(stella.releases.list_releases(), key=lambda r: r.created_at, reverse=True)
    environments = sorted(stella.environments.list(), key=lambda e: e.order)
    current = {
        column["environment"]["name"]: column["current"]["release"]
        for column in stella.promotions.pipeline()
        if column["current"]
    }
    return Choices([r.name for r in releases], environments, current, {r.name: r for r in releases})


def environment_text(env: Environment) -> str:
    approvals = env.required_approvals
    facts = [f"{approvals} approval{'s' if approvals != 1 else ''}" if approvals else "no approval"]
    if env.separation_of_duties:
        facts.append("separation of duties")
    return f"{env.name}   ({', '.join(facts)})"


def next_environment(release: str, choices: Choices) -> str | None:
    """The first environment after the last one this release runs in (the usual next step)."""
    names = [e.name for e in choices.environments]
    reached = [i for i, name in enumerate(names) if choices.current.get(name) == release]
    start = reached[-1] + 1 if reached else 0
    return names[start] if start < len(names) else (names[-1] if names else None)


class PromoteDialog(QDialog):
    requested = Signal(object)  # Promotion

    def __init__(
        self,
        ops: Ops,
        session: Session,
        *,
        release: str | None = None,
        environment: str | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.ops = ops
        self.session = session
        self.choices = Choices([], [], {})
        self.preview: dict[str, Any] | None = None
        self.promotion: Promotion | None = None
        self._wanted = (release, environment)
        self._generation = 0
        self._busy = False
        self.setWindowTitle("Promote a release")
        self.setMinimumWidth(640)

        outer = self._outer = dialog_layout(
            self,
            "Promote a release",
            (
                "Choose a release and where it goes. The gates are checked as you choose; nothing "
                "is recorded until you request the promotion."
            ),
        )

        form = QFormLayout()
        form.setHorizontalSpacing(14)
        form.setVerticalSpacing(10)
        self.release = QComboBox()
        self.release.setMinimumWidth(320)
        self.environment = QComboBox()
        form.addRow("Release", self.release)
        form.addRow("Environment", self.environment)
        outer.addLayout(form)

        outer.addSpacing(4)
        self.change_title = label("WHAT CHANGES", "section")
        outer.addWidget(self.change_title)
        self.change_table = ChangeTable()
        outer.addWidget(self.change_table)

        outer.addSpacing(4)
        outer.addWidget(label("GATE PREVIEW", "section"))
        self.verdict = label("Loading releases and environments…", "muted")
        self.verdict.setWordWrap(True)
        outer.addWidget(self.verdict)
        self.gates = GateList()
        outer.addWidget(self.gates)

        outer.addSpacing(4)
        outer.addWidget(label("REASON", "section"))
        self.reason = QLineEdit()
        self.reason.setPlaceholderText("Why this release, why now (approvers read this)")
        outer.addWidget(self.reason)
        self.role_note = label("", "muted")
        self.role_note.setWordWrap(True)
        self.role_note.hide()
        outer.addWidget(self.role_note)

        self.error_box = InlineError()
        self.error = self.error_box.text
        outer.addWidget(self.error_box)
        outer.addStretch(1)

        buttons, self.cancel_button, self.submit_button = dialog_buttons("Request promotion")
        outer.addLayout(buttons)

        self.cancel_button.clicked.connect(self.reject)
        self.submit_button.clicked.connect(lambda: self.ops.spawn(self.submit()))
        self.release.currentIndexChanged.connect(lambda _i: self._chosen())
        self.environment.currentIndexChanged.connect(lambda _i: self._chosen())

    # --- loading ---------------------------------------------------------------------------
    async def load(self) -> None:
        stella = self.session.require()
        try:
            choices = await self.ops.run(
                lambda _report: read_choices(stella),
                label="Loading releases and environments",
                present_errors=False,
            )
        except OpFailed as exc:
            self.verdict.setText("")
            self._show_error(exc.message)
            return
        self.choices = choices
        if not choices.releases or not choices.environments:
            missing = "releases" if not choices.releases else "environments"
            self.verdict.setText(f"There are no {missing} yet, so nothing can be promoted.")
            return
        identity = self.session.identity
        if identity is not None and not may_request(identity.role):
            # The preview is for everyone; the request itself is the core's to refuse.
            self.role_note.setText(
                f"You act as {identity.user} ({identity.role.value}): you can check the gates, "
                "but only a release manager or an admin can request a promotion."
            )
            self.role_note.show()
        release, environment = self._wanted
        for combo in (self.release, self.environment):
            combo.blockSignals(True)
        self.release.clear()
        for name in choices.releases:
            self.release.addItem(name, name)
        self.environment.clear()
        for env in choices.environments:
            self.environment.addItem(environment_text(env), env.name)
        self._select(self.release, release or choices.releases[0])
        self._select(
            self.environment,
            environment or next_environment(self.release_name() or "", choices),
        )
        for combo in (self.release, self.environment):
            combo.blockSignals(False)
        self.submit_button.setEnabled(True)
        self._chosen()

    @staticmethod
    def _select(combo: QComboBox, value: str | None) -> None:
        index = combo.findData(value) if value else -1
        combo.setCurrentIndex(max(0, index))

    def choose(self, release: str | None = None, environment: str | None = None) -> None:
        """Select as a person would (each change asks for a new preview)."""
        if release is not None:
            self._select(self.release, release)
        if environment is not None:
            self._select(self.environment, environment)

    def release_name(self) -> str | None:
        value = self.release.currentData()
        return str(value) if value else None

    def environment_name(self) -> str | None:
        value = self.environment.currentData()
        return str(value) if value else None

    def _chosen(self) -> None:
        self._hide_error()
        self.show_changes()
        self.ops.spawn(self.check())

    def show_changes(self) -> list[ComponentChange]:
        """What the chosen release changes in the chosen environment against what runs there
        (read with the choices: no question to the database)."""
        release, environment = self.release_name(), self.environment_name()
        new = self.choices.by_name.get(release or "")
        if new is None or environment is None:
            self.change_table.clear()
            return []
        self.change_title.setText(f"WHAT CHANGES IN {environment.upper()}")
        current_name = self.choices.current.get(environment)
        current = self.choices.by_name.get(current_name or "")
        changes = component_changes(current, new)
        self.change_table.show_changes(changes, environment, current_name)
        self.fit_contents()
        return changes

    # --- the preview -----------------------------------------------------------------------
    async def check(self) -> dict[str, Any] | None:
        """Ask for the decision a request would get now; show it unless superseded."""
        release, environment = self.release_name(), self.environment_name()
        if release is None or environment is None:
            return None
        self._generation += 1
        generation = self._generation
        stella = self.session.require()
        self.verdict.setText(f"Checking the gates for {release} into {environment}…")
        self._paint_verdict(None)
        try:
            preview: dict[str, Any] = await self.ops.run(
                lambda _report: stella.promotions.preview(release, environment),
                label="Checking the gates",
                present_errors=False,
            )
        except OpFailed as exc:
            if generation == self._generation:
                self.preview = None
                self.gates.clear()
                self.verdict.setText(f"The gates could not be checked: {exc.message}")
                self._paint_verdict("deny")
            return None
        if generation != self._generation:
            return None
        self.preview = preview
        verdict = str(preview.get("verdict"))
        self.verdict.setText(VERDICT_WORDS.get(verdict, verdict))
        self._paint_verdict(verdict)
        self.gates.set_gates(preview.get("gates") or [])
        self.fit_contents()
        return preview

    def _paint_verdict(self, verdict: str | None) -> None:
        colour = VERDICT_COLOURS.get(verdict or "")
        self.verdict.setStyleSheet(f"color: {colour}; font-weight: 600;" if colour else "")

    def gate_status(self, gate: str) -> str | None:
        return self.gates.statuses().get(gate)

    # --- requesting ------------------------------------------------------------------------
    async def submit(self) -> Promotion | None:
        release, environment = self.release_name(), self.environment_name()
        if self._busy or release is None or environment is None:
            return None
        reason = self.reason.text().strip()
        stella = self.session.require()
        self._set_busy(True)
        try:
            promotion: Promotion = await self.ops.run(
                lambda _report: stella.promotions.request(release, environment, reason),
                label=f"Requesting {release} into {environment}",
                changes=[Change.PROMOTIONS],
                present_errors=False,  # shown here, where the person can change the choice
            )
        except OpFailed as exc:
            self._set_busy(False)
            self._show_error(exc.message)
            return None
        self._set_busy(False)
        self.promotion = promotion
        self.requested.emit(promotion)
        self.accept()
        return promotion

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        for widget in (self.release, self.environment, self.reason, self.submit_button):
            widget.setEnabled(not busy)
        self.submit_button.setText("Requesting…" if busy else "Request promotion")

    def _show_error(self, message: str) -> None:
        self.error.setText(message)
        self.error_box.show()
        self.fit_contents()

    def _hide_error(self) -> None:
        self.error.setText("")
        self.error_box.hide()

    def error_text(self) -> str:
        return self.error.text() if not self.error_box.isHidden() else ""

    def fit_contents(self) -> None:
        fit_height(self, self._outer)


def describe_request(promotion: Promotion) -> str:
    """The status bar's line after a request."""
    text = f"Requested {promotion.release} into {promotion.environment}: "
    text += status_text(promotion.status.value)
    if promotion.required_approvals:
        text += f" ({promotion.progress()} approvals)"
    return text
