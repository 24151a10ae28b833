"""The main window: navigation, pages, the person switch and the status bar."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QGuiApplication
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QHBoxLayout,
    QListWidget,
    QMainWindow,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from stella_core.workflows.steps.registry import default_registry
from stella_desk import theme
from stella_desk.admin.common import WRITERS
from stella_desk.admin.page import AdminPage
from stella_desk.admin.settings import SettingsPage
from stella_desk.approvals.page import ApprovalsPage
from stella_desk.chrome import Banner, RoleBadge, label
from stella_desk.dashboard import Dashboard
from stella_desk.evidence.page import EvidencePage
from stella_desk.feed import ChangeFeed
from stella_desk.fit import Floating
from stella_desk.help import AboutDialog, HelpDialog
from stella_desk.menus import build_menus
from stella_desk.nav import NavDelegate, set_badge
from stella_desk.ops import Change, OpFailed, OpProgress, Ops
from stella_desk.person import (
    DemoBadge,
    PassphraseDialog,
    Switch,
    open_as,
    read_candidate,
    switch_rule,
)
from stella_desk.placeholder import ComingLater
from stella_desk.promotions.board import PromotionsPage
from stella_desk.promotions.history import HistoryPage
from stella_desk.releases.browser import ReleaseBrowser
from stella_desk.runs.page import RunsPage
from stella_desk.runs.worker import DeskWorker
from stella_desk.session import Session
from stella_desk.targets.page import TargetsPage
from stella_desk.workflows.editor import WorkflowEditor

if TYPE_CHECKING:
    from uuid import UUID

    from stella_core.bootstrap import Stella

# (key, navigation label); the key names the screenshot file too.
PAGES: list[tuple[str, str]] = [
    ("dashboard", "Dashboard"),
    ("releases", "Releases"),
    ("workflows", "Workflows"),
    ("runs", "Runs"),
    ("promotions", "Promotions"),
    ("approvals", "Approvals"),
    ("history", "History"),
    ("evidence", "Evidence"),
    ("targets", "Targets"),
    ("admin", "Administration"),
    ("settings", "Settings"),
]

# Pages not built yet: (subtitle, purpose) each, shown by a placeholder (none at present).
COMING: dict[str, tuple[str, str]] = {}

# The size the desk opens at, and the smallest screen it must fit (or 2560x1440 at 2x scaling):
# every page's minimum fits inside it. A smaller screen gets a window as large as it allows.
WINDOW_SIZE = QSize(1280, 720)
# The busy bar shows only for work that takes longer than this: the run monitor reads the run
# log twice a second, and a bar flashing at that rate would say nothing.
BUSY_DELAY_MS = 300


def fitting_size(window: QWidget) -> QSize:
    """WINDOW_SIZE, or as much of the screen's available area as there is."""
    screen = window.screen() or QGuiApplication.primaryScreen()
    if screen is None:
        return WINDOW_SIZE
    return WINDOW_SIZE.boundedTo(screen.availableGeometry().size())


class StartingPage(QWidget):
    """What shows while the database starts, or why it did not."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("page")
        column = QVBoxLayout(self)
        column.addStretch(1)
        title = label("Stella Release Desk", "title")
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        column.addWidget(title)
        self.message = label("Starting the database…", "subtitle")
        self.message.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.message.setWordWrap(True)
        column.addWidget(self.message)
        self.bar = QProgressBar()
        self.bar.setRange(0, 0)  # indeterminate: the core gives no steps for startup
        self.bar.setTextVisible(False)
        self.bar.setFixedSize(280, 6)
        column.addWidget(self.bar, 0, Qt.AlignmentFlag.AlignHCenter)
        self.error = label(kind="error", selectable=True)
        self.error.setWordWrap(True)
        self.error.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.error.setMaximumWidth(640)
        self.error.hide()
        column.addWidget(self.error, 0, Qt.AlignmentFlag.AlignHCenter)
        self.quit = QPushButton("Quit")
        self.quit.hide()
        column.addWidget(self.quit, 0, Qt.AlignmentFlag.AlignHCenter)
        column.addStretch(2)

    def show_step(self, message: str) -> None:
        self.message.setText(message)
        self.bar.show()
        self.error.hide()
        self.quit.hide()

    def show_failure(self, message: str) -> None:
        self.message.setText("The desk could not start.")
        self.bar.hide()
        self.error.setText(message)
        self.error.show()
        self.quit.show()


class MainWindow(QMainWindow):
    closed = Signal()

    def __init__(
        self,
        ops: Ops,
        session: Session,
        parent: QWidget | None = None,
        *,
        worker: DeskWorker | None = None,
    ) -> None:
        super().__init__(parent)
        self.ops = ops
        self.session = session
        self.setWindowTitle("Stella Release Desk")
        self.resize(fitting_size(self))
        self.opened_as: str | None = None  # the profile the desk was opened with
        self.passphrase_dialog: PassphraseDialog | None = None
        self.help_dialog: HelpDialog | None = None
        self.about_dialog: AboutDialog | None = None
        self.theme_mode = theme.saved_mode()
        # What other processes change reaches every page through ops.changed.
        self.feed = ChangeFeed(ops, session, self)
        self.feed.live_changed.connect(self._present_feed)
        theme.style(self, self.theme_mode)

        self._root = QStackedWidget()
        self.starting = StartingPage()
        self._root.addWidget(self.starting)
        self._shell = QWidget()
        self._root.addWidget(self._shell)
        self.setCentralWidget(self._root)

        shell = QHBoxLayout(self._shell)
        shell.setContentsMargins(0, 0, 0, 0)
        shell.setSpacing(0)
        sidebar = QWidget()
        sidebar.setObjectName("deskSidebar")  # not "sidebar": QFileDialog's has that name
        sidebar.setFixedWidth(200)
        side = QVBoxLayout(sidebar)
        side.setContentsMargins(0, 16, 0, 12)
        side.setSpacing(2)
        self.nav = QListWidget()
        self.nav.setObjectName("nav")
        # A keyboard path: Tab reaches the list, the arrow keys move between pages.
        self.nav.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.nav.setAccessibleName("Pages")
        self.nav.setItemDelegate(NavDelegate(self.nav))
        side.addWidget(self.nav, 1)
        side.addWidget(self._version_label())
        shell.addWidget(sidebar)

        content = QWidget()
        content.setObjectName("content")
        column = QVBoxLayout(content)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        self.stack = QStackedWidget()
        column.addWidget(self.stack, 1)
        shell.addWidget(content, 1)
        # Over the page, not in its layout: an error never moves a button under the pointer.
        self.banner = Banner()
        self._banner_float = Floating(self.banner, content, margin=20)

        self.releases = ReleaseBrowser(ops, session)
        self.dashboard = Dashboard(ops, session, self.releases.model)
        registry = default_registry()
        self.workflows = WorkflowEditor(ops, session, registry)
        self.runs = RunsPage(ops, session, registry, worker=worker)
        self.promotions = PromotionsPage(ops, session)
        self.approvals = ApprovalsPage(ops, session)
        self.history = HistoryPage(ops, session)
        self.evidence = EvidencePage(ops, session)
        self.targets = TargetsPage(ops, session)
        self.admin = AdminPage(ops, session)
        self.settings = SettingsPage(ops, session)
        self.pages: dict[str, QWidget] = {
            "dashboard": self.dashboard,
            "releases": self.releases,
            "workflows": self.workflows,
            "runs": self.runs,
            "promotions": self.promotions,
            "approvals": self.approvals,
            "history": self.history,
            "evidence": self.evidence,
            "targets": self.targets,
            "admin": self.admin,
            "settings": self.settings,
        }
        for key, title in PAGES:
            if key not in self.pages:
                subtitle, purpose = COMING[key]
                self.pages[key] = ComingLater(title, subtitle, purpose)
            self.stack.addWidget(self.pages[key])
            self.nav.addItem(title)
        self.nav.currentRowChanged.connect(self.stack.setCurrentIndex)

        self.menus = build_menus(self, PAGES)
        self._check_theme_action()
        # "Follow the system": the platform switching light/dark switches the desk too.
        QGuiApplication.styleHints().colorSchemeChanged.connect(self._system_scheme_changed)
        self._build_toolbar()
        self._build_status_bar()
        self._busy_timer = QTimer(self)
        self._busy_timer.setSingleShot(True)
        self._busy_timer.setInterval(BUSY_DELAY_MS)
        self._busy_timer.timeout.connect(lambda: self.busy.setVisible(self.ops.busy))
        ops.busy_changed.connect(self._on_busy)
        ops.failed.connect(self._present_failure)
        ops.progressed.connect(self._present_progress)
        self.releases.detail.copied.connect(
            lambda text: self.statusBar().showMessage(f"Copied {text}", 5000)
        )
        self.workflows.status_message.connect(lambda text: self.statusBar().showMessage(text, 6000))
        self.runs.status_message.connect(lambda text: self.statusBar().showMessage(text, 6000))
        self.evidence.status_message.connect(lambda text: self.statusBar().showMessage(text, 6000))
        self.targets.status_message.connect(lambda text: self.statusBar().showMessage(text, 6000))
        self.promotions.status_message.connect(
            lambda text: self.statusBar().showMessage(text, 6000)
        )
        self.approvals.status_message.connect(lambda text: self.statusBar().showMessage(text, 6000))
        self.history.status_message.connect(lambda text: self.statusBar().showMessage(text, 6000))
        self.history.run_requested.connect(lambda run_id: self.ops.spawn(self.open_run(run_id)))
        self.approvals.pending_changed.connect(self._show_pending)
        self.admin.status_message.connect(lambda text: self.statusBar().showMessage(text, 6000))
        self.settings.status_message.connect(lambda text: self.statusBar().showMessage(text, 6000))
        self.admin.people.loaded.connect(self._people_listed)
        self.promotions.run_requested.connect(lambda run_id: self.ops.spawn(self.open_run(run_id)))
        self.starting.quit.clicked.connect(self.close)
        self.nav.setCurrentRow(0)
        self.set_theme(self.theme_mode, save=False)  # the palette too, as chosen last time

    @staticmethod
    def _version_text() -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"v{version('stella-release-desk')}"
        except PackageNotFoundError:
            return ""

    def _version_label(self) -> QWidget:
        widget = label(self._version_text())
        widget.setStyleSheet("color: #6f7792; padding: 0 22px; font-size: 11px;")
        return widget

    def _build_toolbar(self) -> None:
        bar = QToolBar("Main")
        bar.setMovable(False)
        bar.setFloatable(False)
        bar.toggleViewAction().setVisible(False)
        brand = label("Stella")
        brand.setStyleSheet(f"font-size: 16px; font-weight: 700; color: {theme.ACCENT};")
        bar.addWidget(brand)
        sub = label("Release Desk", "muted")
        sub.setStyleSheet("font-size: 14px;")
        bar.addWidget(sub)
        spacer = QWidget()
        spacer.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        bar.addWidget(spacer)
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)
        self.busy.setTextVisible(False)
        self.busy.setFixedSize(90, 4)
        self.busy.setToolTip("Working…")
        self.busy.hide()
        bar.addWidget(self.busy)
        self.demo_badge = DemoBadge()
        self.demo_badge_action = bar.addWidget(self.demo_badge)
        self.demo_badge_action.setVisible(False)
        bar.addWidget(label("Person", "muted"))
        self.person = QComboBox()
        self.person.setMinimumWidth(150)
        self.person.setToolTip(
            "Act as another person who has a profile on this machine (their key passphrase is "
            "asked for, except in a demo)"
        )
        self.person.setEnabled(False)
        self.person.activated.connect(
            lambda index: self.ops.spawn(self.switch_person(self.person.itemText(index)))
        )
        bar.addWidget(self.person)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)

    def _build_status_bar(self) -> None:
        status = self.statusBar()
        status.setSizeGripEnabled(False)
        self.acting = label("Not connected")
        self.role_badge = RoleBadge()
        self.target = label("")
        status.addPermanentWidget(self.acting)
        status.addPermanentWidget(self.role_badge)
        status.addPermanentWidget(self.target)

    # --- lifecycle -------------------------------------------------------------------------
    def show_starting(self, message: str) -> None:
        self._root.setCurrentWidget(self.starting)
        self.starting.show_step(message)

    def show_start_failure(self, message: str) -> None:
        self._root.setCurrentWidget(self.starting)
        self.starting.show_failure(message)

    async def attach(self, stella: Stella) -> None:
        """Show the product for an open core and load every page's data."""
        self.session.stella = stella
        self.feed.start(stella)  # before the first reads: a change made meanwhile is heard
        self.opened_as = stella.profile.name
        identity, names, demo = await self.ops.run(
            lambda _report: (
                stella.tenancy.whoami(),
                stella.profiles.names(stella.backend.target),
                stella.tenancy.is_demo(),
            ),
            label="Reading who you are",
        )
        self.session.identity = identity
        self._show_demo(demo)
        self._fill_people(names, stella.profile.name)
        self._show_identity()
        self._root.setCurrentWidget(self._shell)
        await asyncio.gather(
            self.dashboard.refresh(),
            self.releases.refresh(),
            self.workflows.refresh(),
            self.runs.refresh(),
            self.promotions.refresh(),
            self.approvals.refresh(),
            self.history.refresh(),
            self.evidence.refresh(),
            self.targets.refresh(),
            self.admin.refresh(),
            self.settings.refresh(),
        )
        self._follow_roles()

    async def switch_person(self, name: str) -> bool:
        """The person switch: act as `name` at once where the rule allows (a demo's people, or
        back to whoever opened the desk), else open the passphrase dialog (the switch happens
        there). True when the desk now acts as `name`."""
        old = self.session.stella
        if old is None:
            return False
        try:
            candidate = await self.ops.run(
                lambda _report: read_candidate(old, name), label=f"Switching to {name}"
            )
        except OpFailed:
            self._fill_people(None, old.profile.name)
            return False
        self._show_demo(candidate.demo)
        rule = switch_rule(candidate, opened_as=name == self.opened_as)
        if rule is not Switch.AT_ONCE:
            # Selecting yourself while your key is locked asks for your passphrase too.
            self._fill_people(None, old.profile.name)
            self.open_passphrase_dialog(name, protected=rule is Switch.ASK)
            return False
        if name == old.profile.name:
            return True
        return await self._switch(name, None) is None

    def open_passphrase_dialog(self, name: str, *, protected: bool) -> PassphraseDialog:
        if self.passphrase_dialog is not None:
            self.passphrase_dialog.reject()
        dialog = PassphraseDialog(
            name,
            protected=protected,
            attempt=self._switch,
            ops=self.ops,
            parent=self,
        )
        self.passphrase_dialog = dialog
        dialog.finished.connect(lambda _result: self._dialog_closed(dialog))
        dialog.open()  # window-modal but asynchronous: the loop keeps running
        dialog.passphrase.setFocus()
        return dialog

    def _dialog_closed(self, dialog: PassphraseDialog) -> None:
        if self.passphrase_dialog is dialog:
            self.passphrase_dialog = None

    async def _switch(self, name: str, passphrase: str | None) -> str | None:
        """Act as `name` (their key opened with `passphrase` when given); None once done, else
        why not (for the dialog to show)."""
        old = self.session.stella
        if old is None:
            return "The desk is not connected yet."
        self.person.setEnabled(False)
        try:
            new, identity = await self.ops.run(
                lambda _report: open_as(old, name, passphrase),
                label=f"Switching to {name}",
                present_errors=passphrase is None,  # the dialog shows its own refusals
            )
        except OpFailed as exc:
            self._fill_people(None, old.profile.name)
            return exc.message
        finally:
            self.person.setEnabled(self.person.count() > 1)
        self.session.stella, self.session.identity = new, identity
        self.feed.start(new)  # their tenant's channels, their connection
        self._fill_people(None, name)
        self._show_identity()
        self.ops.announce([Change.PERSON])
        with contextlib.suppress(OpFailed):  # presented; the new person's view is already up
            await self.ops.run(
                lambda _report: self._close_person(old),
                label="Closing the previous person's connection",
            )
        return None

    @staticmethod
    def _close_person(person: Stella) -> None:
        person.local_keys.forget()  # their passphrase and key leave with them
        person.close(keep_backend=True)

    async def open_run(self, run_id: UUID) -> bool:
        """A promotion's deployment run, in the run monitor."""
        self.show_page("runs")
        return await self.runs.open_run(run_id)

    def show_page(self, key: str) -> QWidget:
        self.nav.setCurrentRow([k for k, _ in PAGES].index(key))
        return self.pages[key]

    # --- menu bar, badge and theme (issue 10 §5) --------------------------------------------
    def _show_pending(self, count: int) -> None:
        row = [k for k, _ in PAGES].index("approvals")
        set_badge(self.nav, row, count, "waiting for your decision")

    def set_theme(self, mode: str, *, save: bool = True) -> None:
        """View > Theme: light, dark or the system's; kept for the next start."""
        self.theme_mode = mode
        app = QApplication.instance()
        if isinstance(app, QApplication):
            theme.apply(app, mode)
        theme.style(self, mode)
        for page in self.pages.values():
            restyle = getattr(page, "restyle", None)
            if callable(restyle):
                restyle(mode)
        if save:
            theme.save_mode(mode)
        self._check_theme_action()

    def _system_scheme_changed(self, *_args: object) -> None:
        if self.theme_mode == theme.SYSTEM_MODE:
            self.set_theme(theme.SYSTEM_MODE, save=False)

    def _check_theme_action(self) -> None:
        action = self.menus.theme_actions.get(self.theme_mode)
        if action is not None:
            action.setChecked(True)

    def open_help(self, tab: str = "pages") -> HelpDialog:
        if self.help_dialog is None:
            self.help_dialog = HelpDialog(PAGES, parent=self)
        self.help_dialog.show_tab(tab)
        self.help_dialog.open()  # window-modal but asynchronous: the loop keeps running
        return self.help_dialog

    def open_about(self) -> AboutDialog:
        if self.about_dialog is None:
            self.about_dialog = AboutDialog(self._version_text(), parent=self)
        self.about_dialog.open()
        return self.about_dialog

    def open_verify(self) -> None:
        self.show_page("evidence")
        self.evidence.open_verify_dialog()

    def closeEvent(self, event: QCloseEvent) -> None:
        # main() closes the core after the loop hears this; the window just goes away.
        self.feed.stop()
        self.closed.emit()
        event.accept()

    # --- presentation ----------------------------------------------------------------------
    def _on_busy(self, busy: bool) -> None:
        if busy:
            self._busy_timer.start()
        else:
            self._busy_timer.stop()
            self.busy.hide()

    def _fill_people(self, names: list[str] | None, current: str) -> None:
        if names is not None:
            self.person.clear()
            self.person.addItems(names)
        index = self.person.findText(current)
        if index >= 0:
            self.person.setCurrentIndex(index)
        self.person.setEnabled(self.person.count() > 1)

    def _show_demo(self, demo: bool) -> None:
        self.session.demo = demo
        self.demo_badge.setVisible(demo)
        self.demo_badge_action.setVisible(demo)

    def _show_identity(self) -> None:
        identity = self.session.identity
        stella = self.session.stella
        if identity is None or stella is None:
            return
        self.acting.setText(f"Acting as <b>{identity.user}</b> · tenant {identity.tenant_name}")
        self.role_badge.set_role(identity.role.value)
        self.target.setText(f"Database: {stella.backend.target}")
        self._follow_roles()

    def _people_listed(self) -> None:
        """A person added on the People tab can be acted as at once (their profile is here)."""
        stella = self.session.stella
        if stella is None:
            return
        names = stella.profiles.names(stella.backend.target)  # a small local file
        if names != [self.person.itemText(i) for i in range(self.person.count())]:
            self._fill_people(names, stella.profile.name)

    def _follow_roles(self) -> None:
        """Offer only what the acting person's role may do (the core refuses the rest anyway):
        an auditor gets no control that changes anything."""
        role = self.session.identity.role if self.session.identity is not None else None
        writes = role in WRITERS
        self.releases.new_button.setVisible(writes)
        self.promotions.promote_button.setVisible(writes)
        self.workflows.save_button.setVisible(writes)
        # An invisible action cannot be triggered by its shortcut either (Ctrl+S).
        self.workflows.save_action.setVisible(writes)
        self.admin.follow_role()
        self.targets.follow_role()

    def _present_progress(self, progress: OpProgress) -> None:
        self.statusBar().showMessage(
            f"{progress.label}: {progress.done}/{progress.total} · {progress.message}", 5000
        )

    def _present_feed(self, live: bool) -> None:
        if not live and self.feed.problem:
            self.statusBar().showMessage(
                f"Not hearing changes made elsewhere ({self.feed.problem}): pages poll instead",
                10000,
            )

    def _present_failure(self, title: str, message: str) -> None:
        self.banner.show_message(title, message)
        self.statusBar().showMessage(f"{title} failed", 8000)
