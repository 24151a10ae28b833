"""Dashboard: the promotion path (with each environment's drift, where drift checks exist),
the release count and who is at the desk."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from stella_core.environments.model import Environment
from stella_desk.chrome import PAGE_MARGINS, Card, PageHeader, RoleBadge, label
from stella_desk.fit import ElidedLabel, SidewaysScroll
from stella_desk.ops import Change, OpChanges, OpFailed, Ops
from stella_desk.releases.table import ReleaseTableModel, created_text
from stella_desk.session import Session
from stella_desk.targets import drift
from stella_desk.targets.drift import DriftSummary

STAGE_WIDTH = 210  # the widest a stage of the path gets: a long name ends in "…" instead


def environment_facts(env: Environment) -> str:
    approvals = env.required_approvals
    facts = [f"{approvals} approval{'s' if approvals != 1 else ''}" if approvals else "no approval"]
    if env.separation_of_duties:
        facts.append("separation of duties")
    return " · ".join(facts)


class Dashboard(QWidget):
    loaded = Signal()

    def __init__(
        self,
        ops: Ops,
        session: Session,
        releases: ReleaseTableModel,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("page")
        self.ops = ops
        self.session = session
        self.releases = releases
        self.environments: list[Environment] = []
        # Each environment's latest drift findings counted; None: drift checks unavailable.
        self.drift: dict[str, DriftSummary] | None = None
        self.drift_badges: dict[str, QLabel] = {}

        page = QVBoxLayout(self)
        page.setContentsMargins(*PAGE_MARGINS)
        page.setSpacing(14)
        page.addWidget(PageHeader("Dashboard", "Where releases stand and who is at the desk."))

        grid = QGridLayout()
        grid.setHorizontalSpacing(14)
        grid.setVerticalSpacing(14)

        count_card = Card("Releases")
        self.release_count = label("-", "big")
        self.latest = label("", "muted")
        self.latest.setWordWrap(True)
        count_card.body.addWidget(self.release_count)
        count_card.body.addWidget(self.latest)
        count_card.body.addStretch(1)
        grid.addWidget(count_card, 0, 0)

        you_card = Card("At the desk")
        person_row = QHBoxLayout()
        person_row.setSpacing(10)
        self.person = label("-", "big")
        self.role = RoleBadge()
        person_row.addWidget(self.person)
        person_row.addWidget(self.role, 0, Qt.AlignmentFlag.AlignVCenter)
        person_row.addStretch(1)
        you_card.body.addLayout(person_row)
        self.tenant = label("", "muted")
        self.target = label("", "muted")
        you_card.body.addWidget(self.tenant)
        you_card.body.addWidget(self.target)
        you_card.body.addStretch(1)
        grid.addWidget(you_card, 0, 1)

        path_card = Card("Promotion path")
        # However many environments, the path scrolls sideways: it never widens the window.
        path = QWidget()
        path.setObjectName("path")
        path.setStyleSheet("QWidget#path { background: transparent; }")
        self._path_row = QHBoxLayout(path)
        self._path_row.setContentsMargins(0, 0, 0, 0)
        self._path_row.setSpacing(10)
        self.path_scroll = SidewaysScroll(path)
        path_card.body.addWidget(self.path_scroll)
        self._stage_names: list[ElidedLabel] = []
        self.path_hint = label("", "muted")
        path_card.body.addWidget(self.path_hint)
        grid.addWidget(path_card, 1, 0, 1, 2)
        grid.setColumnStretch(0, 1)
        grid.setColumnStretch(1, 1)
        page.addLayout(grid)

        later = label(
            "What runs where is on the Promotions page, what waits for your decision on "
            "Approvals, and each target's sticker and drift on Targets.",
            "muted",
        )
        later.setWordWrap(True)
        page.addWidget(later)
        page.addStretch(1)

        # The count comes from the release list the browser already fetched: one fetch.
        for signal in (releases.modelReset, releases.rowsInserted, releases.layoutChanged):
            signal.connect(self._show_releases)
        ops.changed.connect(self._on_changes)
        self._show_releases()

    async def refresh(self) -> None:
        stella = self.session.require()
        try:
            self.environments, self.drift = await self.ops.run(
                lambda _report: (
                    stella.environments.list(),
                    drift.summaries(drift.latest(stella)),
                ),
                label="Loading environments",
            )
        except OpFailed:
            return
        self._show_identity()
        self._show_path()
        self.loaded.emit()

    def _on_changes(self, changes: OpChanges) -> None:
        if not self.session.ready:
            return
        if changes.touches(Change.PERSON):
            self._show_identity()  # known already; only the environments need a fetch
        # Releases arrive through the browser's model, which refreshes itself.
        if changes.touches(Change.ENVIRONMENTS, Change.PERSON):
            self.ops.spawn(self.refresh())

    def _show_identity(self) -> None:
        identity = self.session.identity
        stella = self.session.stella
        if identity is None or stella is None:
            return
        self.person.setText(identity.user)
        self.role.set_role(identity.role.value)
        self.tenant.setText(f"Tenant: {identity.tenant_name}")
        self.target.setText(f"Database: {stella.backend.target}")

    def _show_path(self) -> None:
        while self._path_row.count():
            item = self._path_row.takeAt(0)
            widget = item.widget() if item is not None else None
            if widget is not None:
                widget.deleteLater()
        self._stage_names = []
        self.drift_badges = {}
        envs = sorted(self.environments, key=lambda e: e.order)
        for i, env in enumerate(envs):
            if i:
                self._path_row.addWidget(label("→", "arrow"))
            stage = Card()
            stage.setMaximumWidth(STAGE_WIDTH)
            # As wide as it needs (up to STAGE_WIDTH): the row scrolls rather than squeezes.
            stage.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Preferred)
            stage.body.setContentsMargins(14, 10, 14, 10)
            stage.body.setSpacing(2)
            name = ElidedLabel(env.name)
            name.setStyleSheet("font-size: 15px; font-weight: 600;")
            self._stage_names.append(name)
            stage.body.addWidget(name)
            stage.body.addWidget(ElidedLabel(environment_facts(env), "muted"))
            if self.drift is not None:
                summary = self.drift.get(env.name)
                text, tip, fg, bg = drift.summary_pill(summary, True)
                badge = label(text, "fact" if not fg else "muted")
                if fg:
                    badge.setStyleSheet(drift.pill_style(fg, bg))
                badge.setToolTip(tip)
                self.drift_badges[env.name] = badge
                stage.body.addWidget(badge, 0, Qt.AlignmentFlag.AlignLeft)
            self._path_row.addWidget(stage)
        self._path_row.addStretch(1)
        self.path_scroll.updateGeometry()
        # Once more after the row's own layout ran: a scroll area does not pass its content's
        # new height on, and a path rebuilt while shown kept its old one (no stages seen).
        QTimer.singleShot(0, self.path_scroll.updateGeometry)
        self.path_hint.setText(
            "Releases are promoted left to right."
            if envs
            else "No environments yet. An admin adds them with 'stella env add'."
        )

    def path_labels(self) -> list[ElidedLabel]:
        """The environments' names on the path, in promotion order."""
        return list(self._stage_names)

    def path_names(self) -> list[str]:
        return [name.full_text for name in self._stage_names]

    def _show_releases(self) -> None:
        count = self.releases.rowCount()
        self.release_count.setText(f"{count:,}")
        if count == 0:
            self.latest.setText("No releases yet.")
            return
        latest = max(self.releases.releases(), key=lambda r: r.created_at)
        self.latest.setText(
            f"Latest: {latest.name}, by {latest.created_by} on {created_text(latest)}"
        )
