"""Validation as you edit: the core's `validate()` on a worker thread, debounced.

The document is re-checked ~200 ms after it last changed; the inspector checks a field's
candidate value the same way while the person types. A newer check supersedes an older one
still running, so results never arrive out of order.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QTimer, Signal

from stella_core.workflows import template as wf_template
from stella_core.workflows.model import Problem, Template
from stella_desk.ops import OpFailed, Ops
from stella_desk.workflows.document import WorkflowDocument
from stella_desk.workflows.steps import Registry

DEBOUNCE_MS = 200


def field_matches(problem_field: str | None, key: str) -> bool:
    """Whether a problem's field names the editor row `key` (`inputs.url` matches
    `inputs.url`, `inputs.url[0]` and `inputs.url.x`)."""
    if problem_field is None:
        return False
    return problem_field == key or problem_field.startswith((key + ".", key + "["))


class Validator(QObject):
    checked = Signal()  # the document's problems are current

    def __init__(
        self,
        document: WorkflowDocument,
        registry: Registry,
        ops: Ops,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.document = document
        self.registry = registry
        self.ops = ops
        self._generation = 0
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(lambda: self.ops.spawn(self.validate_now()))
        document.template_changed.connect(self.schedule)

    @property
    def pending(self) -> bool:
        return self._timer.isActive()

    def schedule(self) -> None:
        self._timer.start()

    async def validate_now(self) -> list[Problem]:
        """Check the document now (tests call this instead of waiting for the debounce)."""
        self._timer.stop()
        self._generation += 1
        generation = self._generation
        template = self.document.template
        problems = await self.check(template)
        if generation == self._generation and template is self.document.template:
            self.document.set_problems(problems)
            self.checked.emit()
        return problems

    async def check(self, template: Template) -> list[Problem]:
        registry = self.registry
        try:
            return await self.ops.run(
                lambda _report: list(wf_template.validate(template, registry)),  # type: ignore[arg-type]
                label="Checking the workflow",
                present_errors=False,
            )
        except OpFailed as exc:
            return [Problem(node=None, field=None, message=f"Could not check: {exc.message}")]
