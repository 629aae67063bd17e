"""The command line's view of time: progress in a terminal and in a log, and stopping on a signal.

Part of the CLI layer (rich lives here and in the ``airgap.cli`` package only). Services report
progress through the ``Observer`` port; ``ConsoleObserver`` draws it:

* in a terminal, as live rich progress: a bar with the amount (bytes with units and speed) for
  a task whose total is known, a spinner with the time spent for one whose total is not; every
  finished task leaves one line (✓ and its duration) above the live area;
* anywhere else (a pipe, a CI log), as one line on stderr when a task starts and one when it
  ends, with its duration, so that a log shows where five minutes went.

Untrusted text: every string this package prints — on a terminal, in a pipe, in a log line —
passes ``printable``, which shows control and format characters escaped (``\\x1b``, ``\\u202e``)
instead of handing them to the terminal. ``SafeConsole`` applies it to everything a console
prints and the observer to its log lines, so no call site has to remember it; rich markup is
escaped by the call sites as before (``rich.markup.escape``), which this does not replace.

Signals: SIGINT, SIGTERM and SIGHUP are turned alike into ``Interrupted`` — a BaseException, so
that the cleanup every service does in ``finally``/``except BaseException`` runs, and the CLI
prints one line and exits 128 + the signal number.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.segment import Segment
from rich.text import Text

from airgap.errors import Interrupted
from airgap.services.observer import BYTES

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# Control (C0 with ESC, CR, BEL; DEL; C1), format (bidi embeddings and isolates U+202A-202E,
# U+2066-2069, the marks U+200E/F, zero-width characters), line and paragraph separators,
# surrogates, private use and unassigned code points: none of them is text a person reads, and
# each can move the cursor, reorder or hide what follows, or start a terminal command.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def printable(text: str, *, keep_newlines: bool = True) -> str:
    """``text`` with every character a terminal would act on, rather than show, written as its
    escape (``\\x1b``, ``\\x0d``, ``\\u202e``, ``\\U000e0001``).

    A name from a bundle, a parts index, an evidence file or the media is attacker-chosen: printed
    raw, an ESC sequence could rewrite the screen (or the title, or the clipboard) and a bidi
    override could make ``evil.tar`` read as ``rat.live``. Newlines and tabs are kept unless
    ``keep_newlines`` is false (a one-line message must stay one line); everything else is shown.
    """
    if text.isprintable():  # the common case, decided in C
        return text
    out = []
    for ch in text:
        if ch.isprintable() or (keep_newlines and ch in "\n\t"):
            out.append(ch)
        elif unicodedata.category(ch) not in _UNSAFE_CATEGORIES:
            out.append(ch)  # a space other than U+0020 (no-break, ideographic): shown as itself
        else:
            code = ord(ch)
            out.append(
                f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
            )
    return "".join(out)


class SafeConsole(Console):
    """A rich console that never hands an untrusted control character to its output.

    Strings are made ``printable`` before rich measures them (so tables still line up), and every
    text segment again just before it is written, which covers ``Text`` built elsewhere (rich
    itself silently drops only BEL, BS, VT, FF and CR, and lets ESC through). The console's own
    styling and cursor control are control segments, which pass untouched.
    """

    def render_str(self, text: str, **kwargs: Any) -> Text:
        """Every printed or tabled string, made ``printable`` before rich parses and measures it."""
        return super().render_str(printable(text), **kwargs)

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        return super()._render_buffer(
            seg if seg.control else Segment(printable(seg.text), seg.style) for seg in buffer
        )


def human_bytes(n: float) -> str:
    """Decimal units, as disks and media are sold (the same units as ``--part-size``)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover - the loop returns at GB


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


@dataclass
class _Running:
    started: float
    depth: int
    total: float | None
    unit: str
    completed: float = 0.0
    detail: str = ""
    task_id: TaskID | None = None


class ConsoleObserver:
    """Draws services' progress on ``console`` (stderr): live in a terminal, as log lines otherwise.

    ``log=False`` keeps a non-terminal run silent (quick commands whose output is the answer).
    """

    def __init__(self, console: Console, *, log: bool = True, enabled: bool = True) -> None:
        self.console = console
        self.live = enabled and console.is_terminal and not console.is_dumb_terminal
        self.log = enabled and log and not self.live
        self.origin = time.monotonic()
        self.running: dict[str, _Running] = {}
        self.progress: Progress | None = None
        if self.live:
            self.progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}", markup=False),
                _Bar(bar_width=30),
                _Amount(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )

    def __enter__(self) -> ConsoleObserver:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for name in list(self.running):  # tasks a failure skipped past: closed, not forgotten
            self.end(name)
        if self.progress is not None:
            self.progress.stop()

    # ------------------------------------------------------------------ the Observer port
    def begin(self, task: str, total: float | None = None, unit: str = "") -> None:
        """Starts a task, indented under those still running; beginning a task that is still running replaces
        it rather than showing it twice."""
        if task in self.running:
            self._forget(task)
        run = _Running(time.monotonic(), len(self.running), total, unit)
        self.running[task] = run
        if self.progress is not None:
            run.task_id = self.progress.add_task(self._label(task, run), total=total, unit=unit)
        elif self.log:
            size = ""
            if total is not None:
                amount = human_bytes(total) if unit == BYTES else f"{total:.0f} {unit}".rstrip()
                size = f" ({amount})"
            self._line(f"{'  ' * run.depth}{task}{size} ...")

    def advance(self, task: str, amount: float = 1, detail: str = "") -> None:
        """Adds ``amount`` to a running task; a report for a task not begun, or already ended, is ignored
        rather than allowed to fail the command."""
        run = self.running.get(task)
        if run is None:
            return
        run.completed += amount
        if detail:
            run.detail = detail
        if self.progress is not None and run.task_id is not None:
            self.progress.update(run.task_id, advance=amount, description=self._label(task, run))

    def end(self, task: str) -> None:
        """Closes a task with one line saying done, failed or interrupted, read from the exception being
        handled (services call this from ``finally``); ending an unknown task does nothing."""
        run = self.running.pop(task, None)
        if run is None:
            return
        seconds = time.monotonic() - run.started
        exc = sys.exc_info()[1]
        if exc is None:
            outcome, mark, style = f"done in {seconds:.1f}s", "✓", "green"
        elif isinstance(exc, (Interrupted, KeyboardInterrupt)):
            outcome, mark, style = f"interrupted after {seconds:.1f}s", "✗", "yellow"
        else:
            outcome, mark, style = f"failed after {seconds:.1f}s", "✗", "red"
        summary = self._summary(run, seconds) if exc is None else ""
        indent = "  " * run.depth
        if self.progress is not None:
            if run.task_id is not None:
                self.progress.remove_task(run.task_id)
            line = Text(indent)
            line.append(mark, style=style)
            line.append(f" {printable(task, keep_newlines=False)} ")
            line.append(outcome + summary, style="dim")
            self.progress.console.print(line, soft_wrap=True)
        elif self.log:
            self._line(f"{indent}{task}: {outcome}{summary}")

    # ------------------------------------------------------------------ helpers
    def _forget(self, task: str) -> None:
        run = self.running.pop(task)
        if self.progress is not None and run.task_id is not None:
            self.progress.remove_task(run.task_id)

    @staticmethod
    def _label(task: str, run: _Running) -> str:
        return printable(
            "  " * run.depth + task + (f": {run.detail[:60]}" if run.detail else ""), keep_newlines=False
        )

    @staticmethod
    def _summary(run: _Running, seconds: float) -> str:
        if run.unit == BYTES and run.completed:
            return f" ({human_bytes(run.completed)}, {human_bytes(run.completed / max(seconds, 1e-3))}/s)"
        if run.total is not None and run.unit:
            return f" ({run.completed:.0f}/{run.total:.0f} {run.unit})"
        if run.detail and run.unit != BYTES:
            return f" ({run.detail[:80]})"
        return ""

    def _line(self, text: str) -> None:
        """One plain line on stderr, prefixed with the time since the command started."""
        with contextlib.suppress(OSError, ValueError):  # a closed terminal must not hide the real outcome
            sys.stderr.write(
                f"[{time.monotonic() - self.origin:7.1f}s] {printable(text, keep_newlines=False)}\n"
            )
            sys.stderr.flush()


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """While inside, SIGINT, SIGTERM and SIGHUP raise ``Interrupted`` in the main thread."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    previous: dict[int, Any] = {}
    with contextlib.suppress(ValueError):  # not the main thread: leave the defaults alone
        for sig in HANDLED_SIGNALS:
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def ignore_signals() -> None:
    """Once the outcome is being reported, a second Ctrl-C must not turn it into a traceback."""
    with contextlib.suppress(ValueError):
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
