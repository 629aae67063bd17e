"""Progress reporting, injected into services so that they never import a UI library.

The CLI passes an observer that draws rich progress bars; tests pass one that records events.
"""

from __future__ import annotations

from typing import Protocol


class Observer(Protocol):
    def begin(self, task: str, total: float | None = None) -> None:
        """A unit of work starts; ``total`` in its own units (bytes, steps) when known."""

    def advance(self, task: str, amount: float = 1, detail: str = "") -> None:
        """Some of that work is done."""

    def end(self, task: str) -> None:
        """The unit of work is finished (successfully or not)."""


class NullObserver:
    """Reports nothing: for library use and ``--json`` runs."""

    def begin(self, task: str, total: float | None = None) -> None:
        pass

    def advance(self, task: str, amount: float = 1, detail: str = "") -> None:
        pass

    def end(self, task: str) -> None:
        pass
