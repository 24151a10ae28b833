"""Who the desk acts as: the current `Stella` handle, swapped when the person changes."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stella_core.bootstrap import Stella
    from stella_core.tenancy.model import Identity


class NotConnectedError(RuntimeError):
    """A view asked for the core before it was opened."""


class Session:
    """Views read `stella` at call time, so a person switch reaches them without rewiring."""

    def __init__(self) -> None:
        self.stella: Stella | None = None
        self.identity: Identity | None = None
        # The database says it is a demo: the person switch is one click for its people.
        self.demo = False
        # Changes made elsewhere are heard (the change feed listens): views need not poll.
        self.live = False

    @property
    def ready(self) -> bool:
        return self.stella is not None

    def require(self) -> Stella:
        if self.stella is None:
            raise NotConnectedError("the core is not open yet")
        return self.stella
