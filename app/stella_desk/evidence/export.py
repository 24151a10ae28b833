"""Export capsule: a release's, a run's or a time range's evidence as one archive for an auditor.

Opened with `open()` (never `exec()`). The export runs through `Ops` with the core's progress and
can be stopped at any of its progress points; the archive is written in one step at the end, so
a stopped export leaves no file. The result names the archive's digest, which the auditor can
compare with `sha256sum`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from PySide6.QtCore import QDateTime, QStringListModel, Qt, Signal
from PySide6.QtGui import QFontMetrics, QGuiApplication
from PySide6.QtWidgets import (
    QButtonGroup,
    QCompleter,
    QDateTimeEdit,
    QDialog,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QWidget,
)

from stella_core.evidence.service import Selection
from stella_desk.chrome import Card, InlineError, dialog_buttons, dialog_layout, label
from stella_desk.ops import CancelToken, OperationCancelled, OpFailed, OpProgress, Ops, Report
from stella_desk.session import Session
from stella_desk.theme import mono_font, repolish

if TYPE_CHECKING:
    from stella_core.bootstrap import Stella

RELEASE, RUN, RANGE = "release", "run", "range"


@dataclass(frozen=True)
class ExportChoice:
    """What the dialog opens with: taken from the page's filter and selected packet."""

    kind: str = RELEASE
    release: str = ""
    run_id: UUID | None = None
    since: datetime | None = None
    until: datetime | None = None


def export_capsule(stella: Stella, selection: Selection, out: Path, report: Report) -> Any:
    """Worker thread: the core's export, its (done, total) progress relayed with words."""

    def progress(done: int, total: int) -> None:
        report(done, total, "Collecting and writing the archive")

    return stella.evidence.export(selection, out, progress=progress)


def default_name(choice: ExportChoice) -> str:
    if choice.kind == RELEASE and choice.release:
        stem = choice.release
    elif choice.kind == RUN and choice.run_id is not None:
        stem = f"run-{str(choice.run_id)[:8]}"
    else:
        stem = datetime.now().strftime("%Y%m%d")
    return "evidence-" + re.sub(r"[^A-Za-z0-9._-]+", "-", stem) + ".tar"


def to_qt(value: datetime) -> QDateTime:
    return QDateTime(value.astimezone().replace(tzinfo=None))


def from_qt(value: QDateTime) -> datetime:
    return datetime.fromtimestamp(value.toSecsSinceEpoch()).astimezone()


class ExportDialog(QDialog):
    exported = Signal(object)  # the core's result dict
    verify_requested = Signal(object)  # the archive's Path

    def __init__(
        self,
        ops: Ops,
        session: Session,
        choice: ExportChoice,
        *,
        releases: Sequence[str] = (),
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.ops = ops
        self.session = session
        self.result_: dict[str, Any] | None = None
        self._token: CancelToken | None = None
        self.file_dialog: QFileDialog | None = None
        self.setWindowTitle("Export capsule")
        self.setMinimumWidth(640)

        outer = self._outer = dialog_layout(
            self,
            "Export capsule",
            (
                "One archive with the signed packets, every input they reference, the public keys, "
                "the ledger's chain and a signed checkpoint with inclusion proofs. An auditor "
                "verifies it offline, with Verify archive, 'stella evidence verify' or openssl."
            ),
        )

        outer.addWidget(label("WHAT TO EXPORT", "section"))
        grid = QGridLayout()
        grid.setHorizontalSpacing(12)
        grid.setVerticalSpacing(8)
        self.group = QButtonGroup(self)
        self.by_release = QRadioButton("A release")
        self.by_run = QRadioButton("A workflow run")
        self.by_range = QRadioButton("A time range")
        self.release = QLineEdit(choice.release)
        self.release.setPlaceholderText("release name, e.g. shop-2026.11.3")
        completer = QCompleter(QStringListModel(sorted(set(releases)), self), self.release)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.release.setCompleter(completer)
        self.run_id = QLineEdit(str(choice.run_id) if choice.run_id else "")
        self.run_id.setPlaceholderText("run id (a UUID, shown on the Runs page)")
        self.run_id.setFont(mono_font(9.5))
        now = datetime.now().astimezone()
        self.since = self._when(choice.since or now - timedelta(days=7))
        self.until = self._when(choice.until or now + timedelta(minutes=1))
        span = QHBoxLayout()
        span.setSpacing(8)
        span.addWidget(self.since)
        span.addWidget(label("to", "muted"))
        span.addWidget(self.until)
        span.addStretch(1)
        for row, (button, field) in enumerate(
            ((self.by_release, self.release), (self.by_run, self.run_id))
        ):
            self.group.addButton(button)
            grid.addWidget(button, row, 0)
            grid.addWidget(field, row, 1)
        self.group.addButton(self.by_range)
        grid.addWidget(self.by_range, 2, 0)
        grid.addLayout(span, 2, 1)
        grid.setColumnStretch(1, 1)
        outer.addLayout(grid)
        {RELEASE: self.by_release, RUN: self.by_run, RANGE: self.by_range}.get(
            choice.kind, self.by_release
        ).setChecked(True)

        outer.addSpacing(4)
        outer.addWidget(label("SAVE AS", "section"))
        where = QHBoxLayout()
        self.path = QLineEdit(str(Path.home() / default_name(choice)))
        self.choose_button = QPushButton("Choose…")
        where.addWidget(self.path, 1)
        where.addWidget(self.choose_button)
        outer.addLayout(where)

        self.progress = QProgressBar()
        self.progress.setTextVisible(False)
        self.progress.setFixedHeight(8)
        self.progress.hide()
        outer.addWidget(self.progress)
        self.status = label("", "muted")
        self.status.setWordWrap(True)
        outer.addWidget(self.status)

        self.result_card = Card("Exported")
        self.summary = label("", selectable=True)
        self.summary.setWordWrap(True)
        self.result_card.body.addWidget(self.summary)
        self.digest = label("", "digest", selectable=True)
        self.digest.setFont(mono_font(9))
        self.digest.setToolTip("The archive's sha256: compare it with 'sha256sum' on the file")
        self.result_card.body.addWidget(self.digest)
        result_row = QHBoxLayout()
        result_row.addStretch(1)
        self.copy_digest = QPushButton("Copy digest")
        self.verify_button = QPushButton("Verify it…")
        self.verify_button.setToolTip("Open the archive in Verify archive, as an auditor would")
        result_row.addWidget(self.copy_digest)
        result_row.addWidget(self.verify_button)
        self.result_card.body.addLayout(result_row)
        self.result_card.hide()
        outer.addWidget(self.result_card)

        self.error_box = InlineError()
        self.error = self.error_box.text
        outer.addWidget(self.error_box)
        outer.addStretch(1)

        buttons, self.cancel_button, self.export_button = dialog_buttons("Export")
        outer.addLayout(buttons)

        self.cancel_button.clicked.connect(self._cancel_or_close)
        self.export_button.clicked.connect(lambda: self.ops.spawn(self.submit()))
        self.choose_button.clicked.connect(self._choose_path)
        self.copy_digest.clicked.connect(
            lambda: QGuiApplication.clipboard().setText(self.digest.text())
        )
        self.verify_button.clicked.connect(self._verify)
        self.group.buttonToggled.connect(lambda *_: self._validate())
        for edit in (self.release, self.run_id, self.path):
            edit.textChanged.connect(lambda _t: self._validate())
        self.since.dateTimeChanged.connect(lambda _d: self._validate())
        self.until.dateTimeChanged.connect(lambda _d: self._validate())
        self._validate()

    @staticmethod
    def _when(value: datetime) -> QDateTimeEdit:
        edit = QDateTimeEdit(to_qt(value))
        edit.setCalendarPopup(True)
        edit.setDisplayFormat("yyyy-MM-dd HH:mm")
        return edit

    # --- the form --------------------------------------------------------------------------
    def kind(self) -> str:
        if self.by_run.isChecked():
            return RUN
        if self.by_range.isChecked():
            return RANGE
        return RELEASE

    def selection(self) -> Selection | None:
        """The selection the form describes, or None while it is incomplete."""
        kind = self.kind()
        if kind == RELEASE:
            name = self.release.text().strip()
            return Selection(release=name) if name else None
        if kind == RUN:
            try:
                return Selection(run_id=UUID(self.run_id.text().strip()))
            except ValueError:
                return None
        since, until = from_qt(self.since.dateTime()), from_qt(self.until.dateTime())
        return Selection(since=since, until=until) if since < until else None

    def _validate(self) -> None:
        kind = self.kind()
        self.release.setEnabled(kind == RELEASE)
        self.run_id.setEnabled(kind == RUN)
        self.since.setEnabled(kind == RANGE)
        self.until.setEnabled(kind == RANGE)
        run_text = self.run_id.text().strip()
        bad_run = kind == RUN and bool(run_text) and self._uuid(run_text) is None
        self.run_id.setProperty("invalid", bad_run)
        repolish(self.run_id)
        problem = ""
        if bad_run:
            problem = "A run id is a UUID, like 0b5e6c1a-…; copy it from the Runs page."
        elif kind == RANGE and self.selection() is None:
            problem = "The range must start before it ends."
        self.status.setText(problem)
        ready = self.selection() is not None and bool(self.path.text().strip())
        self.export_button.setEnabled(ready and self._token is None)

    @staticmethod
    def _uuid(text: str) -> UUID | None:
        try:
            return UUID(text)
        except ValueError:
            return None

    def _choose_path(self) -> QFileDialog:
        # `open()`, not the static getters: those run a nested event loop (an `exec()`).
        dialog = QFileDialog(self, "Save the capsule as")
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        dialog.setNameFilter("Capsule archives (*.tar)")
        dialog.setDefaultSuffix("tar")
        dialog.selectFile(self.path.text())
        dialog.fileSelected.connect(self.path.setText)
        self.file_dialog = dialog
        dialog.open()
        return dialog

    # --- exporting -------------------------------------------------------------------------
    async def submit(self) -> dict[str, Any] | None:
        selection = self.selection()
        text = self.path.text().strip()
        if selection is None or not text or self._token is not None:
            return None
        out = Path(text).expanduser()
        if not out.parent.is_dir():
            self._show_error(f"The folder {out.parent} does not exist.")
            return None
        stella = self.session.require()
        token = CancelToken()
        self._set_running(token)
        try:
            result: dict[str, Any] = await self.ops.run(
                lambda report: export_capsule(stella, selection, out, report),
                label="Exporting evidence",
                on_progress=self._on_progress,
                cancel=token,
                present_errors=False,  # shown here, in the dialog
            )
        except OperationCancelled:
            self._set_running(None)
            self.status.setText("Stopped: no archive was written.")
            return None
        except OpFailed as exc:
            self._set_running(None)
            self._show_error(exc.message)
            return None
        self._set_running(None)
        self.result_ = result
        self._show_result(result)
        self.exported.emit(result)
        return result

    def _on_progress(self, progress: OpProgress) -> None:
        self.progress.setRange(0, max(1, progress.total))
        self.progress.setValue(progress.done)
        self.status.setText(f"{progress.message}: {progress.done} of {progress.total}")

    def _set_running(self, token: CancelToken | None) -> None:
        self._token = token
        running = token is not None
        for widget in (
            self.by_release,
            self.by_run,
            self.by_range,
            self.path,
            self.choose_button,
        ):
            widget.setEnabled(not running)
        self.cancel_button.setText("Stop" if running else "Cancel")
        self.progress.setVisible(running)
        if running:
            self.progress.setRange(0, 0)  # until the core's first report
            self.status.setText("Reading the selected packets…")
            self._hide_error()
            self.result_card.hide()
        self._validate()
        self.fit_contents()

    def _show_result(self, result: dict[str, Any]) -> None:
        count = int(result["packets"])
        self.summary.setText(
            f"{count} packet{'s' if count != 1 else ''} and {result['files']} files in "
            f"{result['out']}"
        )
        self.digest.setText(str(result["digest"]))
        # The whole digest, never clipped: it is what the auditor compares.
        self.digest.setMinimumWidth(
            QFontMetrics(self.digest.font()).horizontalAdvance(self.digest.text()) + 4
        )
        self.status.setText("")
        self.result_card.show()
        self.cancel_button.setText("Close")
        self.fit_contents()

    def _cancel_or_close(self) -> None:
        if self._token is not None:
            self._token.cancel()  # the export stops at its next progress point
            self.status.setText("Stopping…")
            return
        self.reject()

    def reject(self) -> None:
        if self._token is not None:
            self._token.cancel()  # closed while exporting (Escape, the title bar): stop it too
        super().reject()

    def _verify(self) -> None:
        if self.result_ is not None:
            self.verify_requested.emit(Path(self.result_["out"]))
            self.accept()

    def _show_error(self, message: str) -> None:
        self.error.setText(message)
        self.error_box.show()
        self.fit_contents()

    def _hide_error(self) -> None:
        self.error.setText("")
        self.error_box.hide()

    def fit_contents(self) -> None:
        self._outer.activate()
        wanted = self.sizeHint().height()
        if self.height() < wanted:
            self.resize(self.width(), wanted)
