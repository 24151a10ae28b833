"""Start run: a stored template (and version), the release it runs on, and its inputs.

Opened with `open()` (never `exec()`): the loop keeps running while the dialog reads templates
and starts the run. Input values are typed as text, as on the command line; the service turns
them into their declared types and says which one is wrong, shown next to that field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from stella_core.workflows.model import InputSpec
from stella_desk.chrome import InlineError, dialog_buttons, dialog_layout, label
from stella_desk.ops import OpFailed, Ops
from stella_desk.session import Session
from stella_desk.theme import repolish

if TYPE_CHECKING:
    from stella_core.bootstrap import Stella
    from stella_core.workflows.model import RunInfo

NO_RELEASE = "(no release)"


@dataclass(frozen=True)
class Choices:
    templates: dict[str, list[int]]  # name -> versions, newest first
    releases: list[str]  # newest first


# --- worker-thread functions (called inside `ops.run`) ---------------------------------------
def read_choices(stella: Stella) -> Choices:
    service = stella.workflows
    templates = {
        t.name: sorted((v.version for v in service.template_versions(t.name)), reverse=True)
        for t in sorted(service.list_templates(), key=lambda t: t.name)
    }
    releases = sorted(stella.releases.list_releases(), key=lambda r: r.created_at, reverse=True)
    return Choices(templates, [r.name for r in releases])


def read_inputs(stella: Stella, name: str, version: int) -> dict[str, InputSpec]:
    return dict(stella.workflows.get_template(name, version).inputs)


def default_text(spec: InputSpec) -> str:
    if spec.default is None:
        return ""
    if isinstance(spec.default, str):
        return spec.default
    return json.dumps(spec.default)


class InputRow(QWidget):
    def __init__(self, name: str, spec: InputSpec, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self.spec = spec
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(2)
        self.edit = QLineEdit(default_text(spec))
        hint = spec.type + (" · required" if spec.required else " · optional")
        if spec.description:
            hint += f" · {spec.description}"
        self.edit.setPlaceholderText(hint)
        self.edit.setToolTip(hint)
        self.error = label(kind="error")
        self.error.setWordWrap(True)
        self.error.hide()
        column.addWidget(self.edit)
        column.addWidget(self.error)
        self.edit.textChanged.connect(lambda _text: self.set_error(None))

    def value(self) -> str | None:
        text = self.edit.text().strip()
        return text if text else None

    def set_error(self, message: str | None) -> None:
        self.edit.setProperty("invalid", message is not None)
        repolish(self.edit)
        self.error.setText(message or "")
        self.error.setVisible(message is not None)
        dialog = self.window()
        if isinstance(dialog, StartRunDialog):
            dialog.fit_contents()


class StartRunDialog(QDialog):
    started = Signal(object)  # RunInfo

    def __init__(
        self,
        ops: Ops,
        session: Session,
        *,
        release: str | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.ops = ops
        self.session = session
        self.choices = Choices({}, [])
        self.rows: dict[str, InputRow] = {}
        self.run: RunInfo | None = None
        self._wanted_release = release
        self._generation = 0
        self._busy = False
        self.setWindowTitle("Start run")
        self.setMinimumWidth(560)

        outer = self._outer = dialog_layout(
            self,
            "Start run",
            (
                "Run a stored workflow template, on a release if it uses one. The steps run on the "
                "workers (this window has one on the embedded default)."
            ),
        )

        form = QFormLayout()
        form.setHorizontalSpacing(14)
        form.setVerticalSpacing(10)
        self.template = QComboBox()
        self.template.setMinimumWidth(260)
        self.version = QComboBox()
        pick = QHBoxLayout()
        pick.addWidget(self.template, 1)
        pick.addWidget(self.version)
        form.addRow("Template", pick)
        self.release = QComboBox()
        form.addRow("Release", self.release)
        outer.addLayout(form)

        outer.addWidget(label("INPUTS", "section"))
        self._inputs_form = QFormLayout()
        self._inputs_form.setHorizontalSpacing(14)
        self._inputs_form.setVerticalSpacing(8)
        outer.addLayout(self._inputs_form)
        self.status = label("Loading templates…", "muted")
        self.status.setWordWrap(True)
        outer.addWidget(self.status)

        self.error_box = InlineError()
        self.error = self.error_box.text
        outer.addWidget(self.error_box)
        outer.addStretch(1)

        buttons, self.cancel_button, self.start_button = dialog_buttons("Start run")
        outer.addLayout(buttons)

        self.cancel_button.clicked.connect(self.reject)
        self.start_button.clicked.connect(lambda: self.ops.spawn(self.submit()))
        self.template.currentIndexChanged.connect(self._template_chosen)
        self.version.currentIndexChanged.connect(self._version_chosen)

    # --- loading ---------------------------------------------------------------------------
    async def load(self) -> None:
        stella = self.session.require()
        try:
            choices = await self.ops.run(
                lambda _report: read_choices(stella),
                label="Loading templates and releases",
                present_errors=False,
            )
        except OpFailed as exc:
            self.status.setText("")
            self._show_error(exc.message)
            return
        self.choices = choices
        self.release.blockSignals(True)
        self.release.clear()
        self.release.addItem(NO_RELEASE, None)
        for name in choices.releases:
            self.release.addItem(name, name)
        wanted = self._wanted_release or (choices.releases[0] if choices.releases else None)
        index = self.release.findData(wanted) if wanted else 0
        self.release.setCurrentIndex(max(0, index))
        self.release.blockSignals(False)
        if not choices.templates:
            self.status.setText(
                "No stored templates yet: draw one on the Workflows page and save it."
            )
            return
        self.template.blockSignals(True)
        self.template.clear()
        for name, versions in choices.templates.items():
            self.template.addItem(f"{name}  (v{versions[0]})", name)
        self.template.blockSignals(False)
        self.template.setCurrentIndex(0)
        self._template_chosen()

    def choose(self, template: str, version: int | None = None) -> None:
        """Select a template (and version) as a person would."""
        index = self.template.findData(template)
        if index >= 0:
            self.template.setCurrentIndex(index)
        if version is not None:
            vindex = self.version.findData(version)
            if vindex >= 0:
                self.version.setCurrentIndex(vindex)

    def _template_chosen(self, *_args: object) -> None:
        name = self.template.currentData()
        self.version.blockSignals(True)
        self.version.clear()
        for number in self.choices.templates.get(name, []):
            self.version.addItem(f"v{number}", number)
        self.version.blockSignals(False)
        self._version_chosen()

    def _version_chosen(self, *_args: object) -> None:
        name, version = self.template.currentData(), self.version.currentData()
        if name is None or version is None:
            return
        self.ops.spawn(self.load_inputs(str(name), int(version)))

    async def load_inputs(self, name: str, version: int) -> None:
        self._generation += 1
        generation = self._generation
        stella = self.session.require()
        self.start_button.setEnabled(False)
        self.status.setText(f"Reading the inputs of {name} v{version}…")
        try:
            inputs = await self.ops.run(
                lambda _report: read_inputs(stella, name, version),
                label=f"Reading {name} version {version}",
                present_errors=False,
            )
        except OpFailed as exc:
            if generation == self._generation:
                self.status.setText("")
                self._show_error(exc.message)
            return
        if generation != self._generation:
            return
        self._show_inputs(inputs)
        self.status.setText("" if inputs else f"{name} declares no inputs.")
        self.start_button.setEnabled(not self._busy)

    def _show_inputs(self, inputs: dict[str, InputSpec]) -> None:
        while self._inputs_form.rowCount():
            self._inputs_form.removeRow(0)
        self.rows = {}
        for name, spec in inputs.items():
            row = InputRow(name, spec)
            self.rows[name] = row
            self._inputs_form.addRow(f"{name}{' *' if spec.required else ''}", row)
        self._hide_error()
        self.fit_contents()

    def fit_contents(self) -> None:
        """Rows and errors were added after the dialog opened: give them their height."""
        self._outer.activate()
        wanted = self.sizeHint().height()
        if self.height() < wanted:
            self.resize(self.width(), wanted)

    # --- starting --------------------------------------------------------------------------
    def values(self) -> dict[str, Any] | None:
        """The inputs given, or None after marking the required ones left empty."""
        values: dict[str, Any] = {}
        missing = False
        for name, row in self.rows.items():
            value = row.value()
            if value is None:
                if row.spec.required and row.spec.default is None:
                    row.set_error(f"{name} is required")
                    missing = True
                continue
            values[name] = value
        return None if missing else values

    async def submit(self) -> RunInfo | None:
        if self._busy:
            return None
        name, version = self.template.currentData(), self.version.currentData()
        if name is None or version is None:
            return None
        values = self.values()
        if values is None:
            return None
        release = self.release.currentData()
        stella = self.session.require()
        self._set_busy(True)
        try:
            run = await self.ops.run(
                lambda _report: stella.workflows.start_run(
                    str(name), int(version), release, values
                ),
                label=f"Starting {name}",
                present_errors=False,  # shown here, next to the field it is about
            )
        except OpFailed as exc:
            self._set_busy(False)
            self._show_failure(exc.message)
            return None
        self._set_busy(False)
        self.run = run
        self.started.emit(run)
        self.accept()
        return run

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        for widget in (self.template, self.version, self.release, self.start_button):
            widget.setEnabled(not busy)
        self.status.setText("Starting…" if busy else "")

    def _show_failure(self, message: str) -> None:
        for name, row in self.rows.items():
            if f"'{name}'" in message:
                row.set_error(message)
                return
        self._show_error(message)

    def error_texts(self) -> list[str]:
        found = [row.error.text() for row in self.rows.values()]
        found.append(self.error.text() if not self.error_box.isHidden() else "")
        return [t for t in found if t]

    def _show_error(self, message: str) -> None:
        self.error.setText(message)
        self.error_box.show()
        self.fit_contents()

    def _hide_error(self) -> None:
        self.error.setText("")
        self.error_box.hide()
