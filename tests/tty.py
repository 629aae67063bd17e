"""A terminal harness: the real command line in a pseudo-terminal, as a field engineer runs it.

Piped runs (``run_airgap``) never see what a terminal sees: rich switches to live progress,
colour and cursor control only when stdout/stderr is a TTY. ``run_tty`` spawns ``airgap`` on a
pseudo-terminal of a chosen size with a chosen TERM (pexpect), collects every byte the terminal
received, and returns it raw (to assert that colour and live progress really appear) and as
the text a person would read (escape sequences removed, carriage-return redraws resolved).
"""

from __future__ import annotations

import io
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pexpect

# CSI sequences (colour, cursor movement, erase), OSC sequences (titles, hyperlinks), and the
# two-byte escapes (charset selection, keypad modes).
_ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]"
)
# SGR parameters that set a colour: 30-37/40-47 and bright 90-97/100-107, 38;5;N / 38;2;R;G;B.
_SGR = re.compile(r"\x1b\[([0-9;]*)m")
_COLOUR_PARAMS = re.compile(r"(?:^|;)(?:3[0-7]|4[0-7]|9[0-7]|10[0-7]|38|48)(?:;|$)")
HIDE_CURSOR = "\x1b[?25l"


def strip_ansi(raw: str) -> str:
    return _ANSI.sub("", raw)


def has_colour(raw: str) -> bool:
    return any(_COLOUR_PARAMS.search(m.group(1)) for m in _SGR.finditer(raw))


@dataclass(frozen=True)
class Screen:
    raw: str  # every byte the terminal received, escape sequences included
    exit_code: int
    columns: int

    @property
    def text(self) -> str:
        """What was drawn, line by line: a line redrawn after ``\\r`` shows its last (non-blank) draw."""
        lines = []
        for line in strip_ansi(self.raw).replace("\r\n", "\n").split("\n"):
            draws = [d.rstrip() for d in line.split("\r") if d.strip()]
            lines.append(draws[-1] if draws else "")
        return "\n".join(lines)

    @property
    def lines(self) -> list[str]:
        return [ln for ln in self.text.splitlines() if ln.strip()]

    @property
    def coloured(self) -> bool:
        return has_colour(self.raw)

    @property
    def live_progress(self) -> bool:
        """rich hides the cursor while it redraws a live progress display."""
        return HIDE_CURSOR in self.raw

    def widest_line(self) -> int:
        return max((len(ln) for ln in self.text.splitlines()), default=0)


def tty_env(term: str = "xterm-256color", no_color: bool = False, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES", "CI")
    }
    env["TERM"] = term
    if no_color:
        env["NO_COLOR"] = "1"
    env.update(extra)
    return env


def run_tty(
    *args: str,
    columns: int = 80,
    rows: int = 50,
    term: str = "xterm-256color",
    no_color: bool = False,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 600,
    interact: Callable[[pexpect.spawn], None] | None = None,
) -> Screen:
    """Runs ``airgap ARGS`` on a ``columns`` x ``rows`` pseudo-terminal until it exits.

    ``interact(child)`` may drive it meanwhile (wait for text, press Ctrl-C, answer a prompt).
    """
    child = pexpect.spawn(
        sys.executable,
        ["-m", "airgap", *args],
        dimensions=(rows, columns),
        env=tty_env(term, no_color, **dict(env or {})),
        cwd=str(cwd) if cwd else None,
        encoding="utf-8",
        codec_errors="replace",
        timeout=timeout,
        maxread=65536,
    )
    received = io.StringIO()
    child.logfile_read = received  # everything the terminal got, including what expect() consumed
    try:
        if interact is not None:
            interact(child)
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    code = child.exitstatus if child.exitstatus is not None else 128 + int(child.signalstatus or 0)
    return Screen(received.getvalue(), code, columns)
