"""The ``airgap`` command line: parse, build adapters, call one service, render, map errors to exit codes.

No logic a library user would need lives here. The commands, and the one place where errors and
signals become exit codes, are in ``airgap.cli.run``; this module is only the entry point, light
on purpose: a help screen the same process has already drawn, for the same code, terminal and
environment, is shown again from ``airgap.cli.helpcache`` without loading the CLI framework.
"""

import sys
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from airgap.cli.run import app as app

__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    """``airgap.cli.app``: the typer application, with every command registered on it."""
    if name == "app":
        from airgap.cli.run import app, load_commands

        load_commands()
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: Optional[list[str]] = None) -> int:
    """Console-script entry point: runs one command line and returns its exit code.

    Called as the console script (``argv`` None, the process's own arguments), a help screen is
    shown from the help cache when it holds one drawn for this very code, terminal and
    environment, and one drawn now is kept for next time; a command is run with only its own
    module loaded. Called with ``argv`` (tests, a caller in the same process), every command is
    registered and the command line always runs.
    """
    if argv is not None:
        from airgap.cli.run import run

        return run(argv)
    args = sys.argv[1:]
    recorder = None
    if args and args[-1] == "--help":  # the only command lines the cache keeps
        from airgap.cli import helpcache

        if helpcache.replay(args):
            return 0
        recorder = helpcache.Recorder.start(args)
    from airgap.cli.run import run

    try:
        code = run(None, one_command=True)
    finally:
        if recorder is not None:
            recorder.stop()
    if recorder is not None and code == 0:
        recorder.save()
    return code
