"""Progress reporting, injected into services so that they never import a UI library.

The CLI passes an observer that draws live bars in a terminal and writes one line per task start
and end otherwise (so a CI log shows where the minutes went); tests pass one that records events.

A task is named by a short phrase ("save image", "download"); tasks may nest (a bundle phase
holds the downloads of its wheelhouse). ``total`` is in the task's ``unit``: ``BYTES`` lets the
CLI show sizes and speed, any other unit is a count ("files", "wheels", "" for steps). A task
whose total is unknown is indeterminate and shown as a spinner with the time spent.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Protocol

BYTES = "bytes"


class Observer(Protocol):
    """The port services report progress through, so they never import a UI library."""

    def begin(self, task: str, total: float | None = None, unit: str = "") -> None:
        """A unit of work starts; ``total`` in ``unit`` (``BYTES``, or a count) when known."""

    def advance(self, task: str, amount: float = 1, detail: str = "") -> None:
        """Some of that work is done; ``detail`` says what is being worked on now."""

    def end(self, task: str) -> None:
        """The unit of work is finished, successfully or not.

        Called from a ``finally``: an observer tells success from failure with ``sys.exc_info()``.
        """


class NullObserver:
    """Reports nothing: for library use."""

    def begin(self, task: str, total: float | None = None, unit: str = "") -> None:
        """Ignored: no one is watching."""

    def advance(self, task: str, amount: float = 1, detail: str = "") -> None:
        """Ignored: no one is watching."""

    def end(self, task: str) -> None:
        """Ignored: no one is watching."""


class Phases:
    """Times each phase of a long command as it is reported to the observer, so the build record
    (and the benchmarks that read it) say where the minutes went."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        """Begins ``name`` on the observer, and ends and times it however the block is left."""
        started = time.monotonic()
        self.observer.begin(name, None)
        try:
            yield
        finally:
            self.observer.end(name)
            self.seconds[name] = round(time.monotonic() - started, 3)
