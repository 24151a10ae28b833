"""What the ledger is asked for: type, release, environment, person and a time range.

These become the core's `Filter` (the database narrows the rows); the free-text box of the page
only narrows what was fetched. Typing waits for a pause before asking again.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, time, timedelta

from PySide6.QtCore import QDate, QStringListModel, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QCompleter,
    QDateEdit,
    QHBoxLayout,
    QLineEdit,
    QWidget,
)

from stella_core.evidence.model import Filter
from stella_desk.chrome import label

TYPE_CHOICES: list[tuple[str, str | None]] = [
    ("All types", None),
    ("Decisions (vsa)", "vsa"),
    ("Approvals", "approval"),
    ("Deployments", "deployment"),
    ("Rollbacks", "rollback"),
    ("Drift checks", "drift"),
    ("Runs", "run"),
    ("Exceptions", "exception"),
    ("Key endorsements", "key"),
]

BETWEEN = "between"
TIME_CHOICES: list[tuple[str, timedelta | str | None]] = [
    ("Any time", None),
    ("Last 24 hours", timedelta(days=1)),
    ("Last 7 days", timedelta(days=7)),
    ("Last 30 days", timedelta(days=30)),
    ("Between dates", BETWEEN),
]

TYPING_PAUSE_MS = 350


def day_start(day: date) -> datetime:
    """Local midnight at the start of `day`, as an aware datetime."""
    return datetime.combine(day, time()).astimezone()


class FilterBar(QWidget):
    changed = Signal()  # the ledger should be asked again

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(8)
        self.type = QComboBox()
        for text, value in TYPE_CHOICES:
            self.type.addItem(text, value)
        self.type.setToolTip("Only packets of this type")
        self.release = self._text("Release", "Only packets about this release (exact name)")
        self.environment = self._text("Environment", "Only packets about this environment")
        self.person = self._text("Person", "Only packets recorded by this person")
        self.time = QComboBox()
        for text, span in TIME_CHOICES:
            self.time.addItem(text, span)
        self.time.setToolTip("Only packets recorded in this time")
        today = QDate.currentDate()
        self.since = self._date(today.addDays(-7), "From the start of this day")
        self.until_label = label("to", "muted")
        self.until = self._date(today, "To the end of this day")
        for widget in (self.type, self.release, self.environment, self.person, self.time):
            row.addWidget(widget)
        row.addWidget(self.since)
        row.addWidget(self.until_label)
        row.addWidget(self.until)
        row.addStretch(1)
        self._show_dates(False)

        self._pause = QTimer(self)
        self._pause.setSingleShot(True)
        self._pause.setInterval(TYPING_PAUSE_MS)
        self._pause.timeout.connect(self.changed)
        self.type.currentIndexChanged.connect(lambda _i: self.changed.emit())
        self.time.currentIndexChanged.connect(self._time_chosen)
        for edit in (self.release, self.environment, self.person):
            edit.textChanged.connect(lambda _t: self._pause.start())
            # Enter or a completion asks at once rather than after the pause.
            edit.returnPressed.connect(self._ask_now)
        self.since.dateChanged.connect(self._dates_changed)
        self.until.dateChanged.connect(self._dates_changed)

    def _text(self, placeholder: str, tip: str) -> QLineEdit:
        edit = QLineEdit()
        edit.setPlaceholderText(placeholder)
        edit.setToolTip(tip)
        edit.setClearButtonEnabled(True)
        edit.setFixedWidth(130)
        completer = QCompleter(QStringListModel(edit), edit)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        completer.activated.connect(lambda _text: self._ask_now())
        edit.setCompleter(completer)
        return edit

    @staticmethod
    def _date(value: QDate, tip: str) -> QDateEdit:
        edit = QDateEdit(value)
        edit.setCalendarPopup(True)
        edit.setDisplayFormat("yyyy-MM-dd")
        edit.setToolTip(tip)
        return edit

    def _ask_now(self) -> None:
        self._pause.stop()
        self.changed.emit()

    def _time_chosen(self, _index: int) -> None:
        self._show_dates(self.time.currentData() == BETWEEN)
        self.changed.emit()

    def _show_dates(self, visible: bool) -> None:
        for widget in (self.since, self.until_label, self.until):
            widget.setVisible(visible)

    def _dates_changed(self, _date: QDate) -> None:
        self.until.setMinimumDate(self.since.date())
        if self.time.currentData() == BETWEEN:
            self.changed.emit()

    # --- reading and setting ---------------------------------------------------------------
    def time_range(self) -> tuple[datetime | None, datetime | None]:
        choice = self.time.currentData()
        if choice is None:
            return None, None
        if isinstance(choice, timedelta):
            return datetime.now().astimezone() - choice, None
        first, last = self.since.date(), self.until.date()
        since = day_start(date(first.year(), first.month(), first.day()))
        until = day_start(date(last.year(), last.month(), last.day()) + timedelta(days=1))
        return since, until

    def where(self) -> Filter:
        since, until = self.time_range()
        return Filter(
            type=self.type.currentData(),
            release=self.release.text().strip() or None,
            environment=self.environment.text().strip() or None,
            person=self.person.text().strip() or None,
            since=since,
            until=until,
        )

    def active(self) -> bool:
        where = self.where()
        return any(
            value is not None
            for value in (where.type, where.release, where.environment, where.person, where.since)
        )

    def choose_type(self, kind: str | None) -> None:
        self.type.setCurrentIndex(max(0, self.type.findData(kind)))

    def choose_time(self, text: str) -> None:
        self.time.setCurrentIndex(max(0, self.time.findText(text)))

    def clear(self) -> None:
        """Every filter off, asking the ledger once."""
        widgets = (self.type, self.time, self.release, self.environment, self.person)
        for widget in widgets:
            widget.blockSignals(True)
        self.type.setCurrentIndex(0)
        self.time.setCurrentIndex(0)
        for edit in (self.release, self.environment, self.person):
            edit.clear()
        for widget in widgets:
            widget.blockSignals(False)
        self._show_dates(False)
        self._ask_now()

    def set_known(
        self, releases: Iterable[str], environments: Iterable[str], people: Iterable[str]
    ) -> None:
        """Values seen in the ledger, offered as completions."""
        for edit, values in (
            (self.release, releases),
            (self.environment, environments),
            (self.person, people),
        ):
            completer = edit.completer()
            model = completer.model() if completer is not None else None
            if isinstance(model, QStringListModel):
                model.setStringList(sorted(set(values) | set(model.stringList())))
