"""New release: a name and component pins, validated in place, resolved with visible progress.

The dialog is opened with `open()` (never `exec()`), so the loop keeps running while the core
resolves tags against the registry; errors stay inside the dialog next to what caused them.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from stella_core.errors import StellaError
from stella_core.releases.model import Component, ComponentPin, Release
from stella_core.releases.reference import check_release_name, parse_tag_or_digest
from stella_desk.chrome import InlineError, dialog_buttons, dialog_layout, label
from stella_desk.ops import (
    CancelToken,
    Change,
    OperationCancelled,
    OpFailed,
    OpProgress,
    Ops,
)
from stella_desk.session import Session
from stella_desk.theme import mono_font, repolish


def _mark(edit: QWidget, error_label: QLabel, message: str | None) -> None:
    edit.setProperty("invalid", message is not None)
    repolish(edit)
    error_label.setText(message or "")
    error_label.setVisible(message is not None)


class PinRow(QWidget):
    """One `component = tag or digest` line."""

    remove_requested = Signal(object)
    edited = Signal()

    def __init__(self, components: list[Component], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setHorizontalSpacing(8)
        grid.setVerticalSpacing(2)
        self.component = QComboBox()
        self.component.setMinimumWidth(200)
        for c in components:
            self.component.addItem(f"{c.name}   ({c.repository})", c.name)
        self.reference = QLineEdit()
        self.reference.setPlaceholderText("tag (1.2.0) or digest (sha256:…)")
        self.reference.setFont(mono_font())
        self.remove = QPushButton("Remove")
        self.remove.setProperty("kind", "flat")
        self.remove.setToolTip("Remove this component from the release")
        self.error = label(kind="error")
        self.error.setWordWrap(True)
        self.error.hide()
        grid.addWidget(self.component, 0, 0)
        grid.addWidget(self.reference, 0, 1)
        grid.addWidget(self.remove, 0, 2)
        grid.addWidget(self.error, 1, 0, 1, 3)
        grid.setColumnStretch(1, 1)
        self.remove.clicked.connect(lambda: self.remove_requested.emit(self))
        self.reference.textChanged.connect(self.edited)
        self.component.currentIndexChanged.connect(self.edited)

    @property
    def component_name(self) -> str:
        return str(self.component.currentData() or "")

    def set_component(self, name: str) -> None:
        index = self.component.findData(name)
        if index >= 0:
            self.component.setCurrentIndex(index)

    def set_error(self, message: str | None) -> None:
        _mark(self.reference, self.error, message)


class CreateReleaseDialog(QDialog):
    created = Signal(object)  # Release

    def __init__(
        self,
        ops: Ops,
        session: Session,
        *,
        initiator: object | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.ops = ops
        self.session = session
        self.initiator = initiator
        self.components: list[Component] = []
        self.rows: list[PinRow] = []
        self.release: Release | None = None
        self._token: CancelToken | None = None
        self._close_when_stopped = False
        self.setWindowTitle("New release")
        self.setMinimumWidth(640)

        outer = dialog_layout(
            self,
            "New release",
            "Tags are resolved to digests once, now; the release pins those digests for good.",
            gap_after_intro=6,
        )

        outer.addWidget(label("NAME", "section"))
        self.name = QLineEdit()
        self.name.setPlaceholderText("e.g. shop-2026.12.1")
        self.name_error = label(kind="error")
        self.name_error.setWordWrap(True)
        self.name_error.hide()
        outer.addWidget(self.name)
        outer.addWidget(self.name_error)
        outer.addSpacing(6)

        outer.addWidget(label("COMPONENTS", "section"))
        self._rows_box = QVBoxLayout()
        self._rows_box.setSpacing(8)
        outer.addLayout(self._rows_box)
        self.status = label("Loading components…", "muted")
        self.status.setWordWrap(True)
        outer.addWidget(self.status)
        self.add_button = QPushButton("+ Add component")
        self.add_button.setEnabled(False)
        add_row = QHBoxLayout()
        add_row.addWidget(self.add_button)
        add_row.addStretch(1)
        outer.addLayout(add_row)

        self.progress = QProgressBar()
        self.progress.setFormat("Resolving digests %v/%m")
        self.progress.hide()
        self.progress_text = label(kind="muted")
        self.progress_text.setFont(mono_font())
        self.progress_text.hide()
        outer.addWidget(self.progress)
        outer.addWidget(self.progress_text)

        self.error_box = InlineError()
        self.error = self.error_box.text
        outer.addWidget(self.error_box)
        outer.addStretch(1)

        buttons, self.cancel_button, self.create_button = dialog_buttons("Create release")
        outer.addLayout(buttons)

        self.add_button.clicked.connect(lambda: self.add_row())  # noqa: PLW0108 (drops `checked`)
        self.cancel_button.clicked.connect(self.reject)
        self.create_button.clicked.connect(lambda: self.ops.spawn(self.submit()))
        self.name.textChanged.connect(lambda: self.validate(final=False))

    @property
    def running(self) -> bool:
        return self._token is not None

    # --- loading ---------------------------------------------------------------------------
    async def load(self) -> None:
        stella = self.session.require()
        try:
            components = await self.ops.run(
                lambda _report: stella.releases.list_components(),
                label="Loading components",
                present_errors=False,
            )
        except OpFailed as exc:
            self.status.setText(f"Could not load components: {exc.message}")
            return
        self.components = components
        if not components:
            self.status.setText(
                "No components yet. Add one first (stella component add NAME REGISTRY/REPO)."
            )
            return
        self.status.hide()
        self.add_button.setEnabled(True)
        self.create_button.setEnabled(True)
        if not self.rows:
            self.add_row()

    def add_row(self, component: str | None = None, reference: str = "") -> PinRow:
        row = PinRow(self.components)
        taken = {r.component_name for r in self.rows}
        free = [c.name for c in self.components if c.name not in taken]
        if component:
            row.set_component(component)
        elif free:
            row.set_component(free[0])
        row.reference.setText(reference)
        row.remove_requested.connect(self.remove_row)
        row.edited.connect(lambda: self.validate(final=False))
        self.rows.append(row)
        self._rows_box.addWidget(row)
        self._sync_rows()
        return row

    def remove_row(self, row: PinRow) -> None:
        if row not in self.rows or len(self.rows) == 1:
            return
        self.rows.remove(row)
        self._rows_box.removeWidget(row)
        row.deleteLater()
        self._sync_rows()
        self.validate(final=False)

    def _sync_rows(self) -> None:
        for row in self.rows:
            row.remove.setEnabled(len(self.rows) > 1)
        self.add_button.setEnabled(bool(self.components) and len(self.rows) < len(self.components))

    # --- validation ------------------------------------------------------------------------
    def validate(self, *, final: bool) -> tuple[str, list[ComponentPin]] | None:
        """Check everything in place. While typing (`final` false) empty fields are not errors."""
        ok = True
        name = self.name.text().strip()
        name_error = None
        if not name:
            name_error = "A release needs a name." if final else None
            ok = False
        else:
            try:
                check_release_name(name)
            except StellaError as exc:
                name_error = exc.message
                ok = False
        _mark(self.name, self.name_error, name_error)

        pins: list[ComponentPin] = []
        seen: set[str] = set()
        for row in self.rows:
            text = row.reference.text().strip()
            component = row.component_name
            message = None
            if component in seen:
                message = f"{component} is already in this release."
            elif not text:
                message = "Give a tag (e.g. 1.2.0) or a digest (sha256:…)." if final else None
                ok = False
            else:
                try:
                    tag, digest = parse_tag_or_digest(text)
                    pins.append(ComponentPin(component=component, tag=tag, digest=digest))
                except StellaError as exc:
                    message = exc.message
            seen.add(component)
            if message:
                ok = False
            row.set_error(message)
        if not self.rows:
            ok = False
        if ok and not self.running:
            self._hide_error()
        return (name, pins) if ok else None

    def error_texts(self) -> list[str]:
        """Every error currently shown in the dialog (what a person would read)."""
        found = [w.text() for w in [self.name_error] + [r.error for r in self.rows]]
        found.append(self.error.text() if not self.error_box.isHidden() else "")
        return [t for t in found if t]

    # --- creating --------------------------------------------------------------------------
    async def submit(self) -> Release | None:
        if self.running:
            return None
        checked = self.validate(final=True)
        if checked is None:
            return None
        name, pins = checked
        stella = self.session.require()
        self._token = CancelToken()
        self._set_running(True, total=len(pins))
        try:
            release = await self.ops.run(
                lambda report: stella.releases.create_release(name, pins, report),
                label=f"Creating release {name}",
                changes=[Change.RELEASES],
                initiator=self.initiator,
                on_progress=self._show_progress,
                cancel=self._token,
                present_errors=False,
            )
        except OpFailed as exc:
            self._token = None
            self._set_running(False)
            self._show_failure(exc)
            return None
        except OperationCancelled:
            self._token = None
            self._set_running(False)
            self._show_error("Stopped. Nothing was stored.")
            if self._close_when_stopped:
                super().reject()
            return None
        self._token = None
        self._set_running(False)
        self.release = release
        self.created.emit(release)
        self.accept()
        return release

    def stop(self) -> None:
        if self._token is not None:
            self._token.cancel()
            self.progress_text.setText("Stopping after the current lookup…")
            self.cancel_button.setEnabled(False)

    def reject(self) -> None:
        # Closing while resolving stops first, so nothing is stored behind the person's back.
        if self.running:
            self._close_when_stopped = True
            self.stop()
            return
        super().reject()

    def _set_running(self, running: bool, total: int = 0) -> None:
        for widget in [self.name, self.add_button, self.create_button, *self.rows]:
            widget.setEnabled(not running)
        if not running:
            self._sync_rows()
        self.cancel_button.setEnabled(True)
        self.cancel_button.setText("Stop" if running else "Cancel")
        self.progress.setVisible(running)
        self.progress_text.setVisible(running)
        if running:
            self._hide_error()
            self.progress.setRange(0, total)
            self.progress.setValue(0)
            self.progress_text.setText("Looking up tags in the registry…")

    def _show_progress(self, progress: OpProgress) -> None:
        self.progress.setRange(0, max(progress.total, 1))
        self.progress.setValue(progress.done)
        self.progress_text.setText(progress.message)

    def _show_failure(self, failure: OpFailed) -> None:
        """Put the error next to the pin that caused it when the message names it."""
        by_name = {c.name: c for c in self.components}
        for row in self.rows:
            component = by_name.get(row.component_name)
            text = row.reference.text().strip()
            if (
                component
                and text
                and (
                    f"{component.repository}:{text}" in failure.message
                    or (text.startswith("sha256:") and text in failure.message)
                )
            ):
                row.set_error(failure.message)
                return
        self._show_error(failure.message)

    def _show_error(self, message: str) -> None:
        self.error.setText(message)
        self.error_box.show()

    def _hide_error(self) -> None:
        self.error.setText("")
        self.error_box.hide()
