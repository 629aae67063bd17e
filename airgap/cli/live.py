"""The live progress display of a terminal: rich's bars, imported only when one is drawn."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from airgap.cli.units import human_bytes
from airgap.services.observer import BYTES


class _Amount(ProgressColumn):
    """``12.3/45.6 MB 80.1 MB/s`` for bytes, ``3/12 files`` for counts, nothing when unknown."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "")
        if unit == BYTES:
            text = human_bytes(task.completed)
            if task.total is not None:
                text = f"{human_bytes(task.completed).split()[0]}/{human_bytes(task.total)}"
            speed = task.finished_speed or task.speed
            if speed:
                text += f" {human_bytes(speed)}/s"
            return Text(text, style="progress.download")
        if task.total is None:
            return Text("")
        return Text(f"{task.completed:.0f}/{task.total:.0f}" + (f" {unit}" if unit else ""))


class _Bar(BarColumn):
    """A bar only where there is a total; an indeterminate task has the spinner and its time."""

    def render(self, task: Task) -> Any:
        if task.total is None:
            return Text("")
        return super().render(task)


def live_progress(console: Console) -> Progress:
    """Spinner, task, bar (where there is a total), amount and speed, elapsed time."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),
        _Bar(bar_width=30),
        _Amount(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
