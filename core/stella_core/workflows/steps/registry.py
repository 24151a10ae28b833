"""The step registry: which step types exist and what they declare.

Built by a composition root (`default_registry()` gives the built-ins; later issues register gates,
deploy and stickers). Never a module-level instance: each caller owns its registry.
"""

from __future__ import annotations

from stella_core.errors import AlreadyExistsError
from stella_core.workflows.steps.spec import BUILTIN_SPECS, StepTypeSpec


class StepRegistry:
    """Step type declarations by name, in registration order."""

    def __init__(self, specs: tuple[StepTypeSpec, ...] | list[StepTypeSpec] = ()) -> None:
        self._specs: dict[str, StepTypeSpec] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: StepTypeSpec) -> None:
        """Add a step type; a second one with the same name is refused."""
        if spec.name in self._specs:
            raise AlreadyExistsError(f"step type '{spec.name}' is registered already")
        self._specs[spec.name] = spec

    def get(self, name: str) -> StepTypeSpec | None:
        return self._specs.get(name)

    def specs(self) -> list[StepTypeSpec]:
        return list(self._specs.values())

    def names(self) -> list[str]:
        return list(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __len__(self) -> int:
        return len(self._specs)


def default_registry() -> StepRegistry:
    """A fresh registry holding the built-in step types."""
    return StepRegistry(BUILTIN_SPECS)
