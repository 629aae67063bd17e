"""Running one command line: parse, build adapters, call one service, render, map errors to exit codes.

Every expected failure is an ``AirgapError`` and is printed as one line; anything else is a bug,
printed as one line too (with the traceback only under ``--verbose``) and exit code 70.

One module per group of commands (``probe``, ``build``, ``trust``, ``verify``, ``install``,
``evidence``), each registering on the shared ``app`` of ``common``; this module imports them
all, and is the one place where errors and signals become exit codes and, under ``--json``, the
one JSON document on stdout. ``airgap.cli.main`` (the console script) runs it.
"""

import contextlib
import importlib
import sys
import traceback
from typing import Optional

import typer
from rich.markup import escape

from airgap.cli.common import (
    STATE,
    State,
    app,
    err_console,
    failure_document,
    let_commands_open_their_paths,
    print_document,
)
from airgap.cli.rendering import ignore_signals, printable, signals_interrupt
from airgap.errors import AirgapError, Interrupted

# The command modules register their commands on ``app`` when imported; this order is the order
# of `airgap --help`.
MODULES = (
    "probe", "build", "media", "trust", "verify", "install", "candidate", "rebuild", "delta", "accept",
    "evidence", "serve",
)  # fmt: skip
# The module that defines each command (or group): a process started for one command loads that
# one module, not the eleven others (tests/test_startup.py proves this map is the registration).
COMMAND_MODULES = {
    "probe": "probe", "profile": "probe", "split": "media", "copy": "media", "bundle": "build",
    "pack": "build", "check": "build", "keys": "trust", "verify": "verify", "inspect": "verify",
    "join": "verify", "accept": "accept", "install": "install", "smoke": "install",
    "status": "install", "rollback": "install", "uninstall": "install", "evidence": "evidence",
    "compare": "candidate", "promote": "candidate", "rebuild": "rebuild", "inventory": "delta",
    "serve": "serve",
}  # fmt: skip
# The root options that come before a command's name; all are flags (none takes a value).
_ROOT_FLAGS = frozenset({"--json", "--verbose", "-v", "--quiet", "-q"})


def command_named(args: list[str]) -> Optional[str]:
    """The command ``args`` runs, when it is one of ours after nothing but root flags; else None
    (no command, ``--help``, ``--version``, a misspelt name: typer needs every command for those)."""
    for arg in args:
        if arg in _ROOT_FLAGS:
            continue
        return arg if arg in COMMAND_MODULES else None
    return None


def load_commands(args: Optional[list[str]] = None) -> None:
    """Registers the commands on ``app``: every one, in the order of `airgap --help`; or, given
    the arguments of a process that runs one command, only that command's module."""
    named = command_named(args) if args is not None else None
    for module in (COMMAND_MODULES[named],) if named else MODULES:
        importlib.import_module(f"airgap.cli.{module}")


__all__ = ["app", "run"]


def _report(exc: AirgapError) -> int:
    if STATE.json:
        print_document(failure_document(exc.exit_code, exc.kind, exc.one_line(), STATE.document))
    # The message quotes names from bundles, media and evidence: one line, every control shown escaped.
    line = printable(exc.one_line(), keep_newlines=False)
    err_console.print(f"[bold red]airgap: {escape(exc.kind)}:[/] {escape(line)}", soft_wrap=True)
    return exc.exit_code


def _json_requested(argv: Optional[list[str]]) -> bool:
    """``--json`` was given, even when the command line failed before the root options were applied."""
    if STATE.json:
        return True
    for arg in sys.argv[1:] if argv is None else argv:
        if arg == "--json":
            return True
        if not arg.startswith("-"):
            return False  # the command's name: its own options are not the root's
    return False


def _succeeded() -> int:
    """The command finished: under ``--json``, its one document is printed now."""
    if STATE.json and STATE.document is not None:
        print_document(STATE.document)
    return 0


def run(argv: Optional[list[str]] = None, *, one_command: bool = False) -> int:
    """One command line (``sys.argv`` when None): the one place where errors and signals become
    exit codes. ``one_command``: this process runs only this command line (the console script),
    so only the module of the command it names is loaded."""
    load_commands((sys.argv[1:] if argv is None else argv) if one_command else None)
    command = typer.main.get_command(app)
    let_commands_open_their_paths(command)
    STATE.json = STATE.verbose = STATE.quiet = False
    STATE.on_interrupt = State.on_interrupt
    STATE.document = None
    try:
        with signals_interrupt():
            # Standalone mode lets typer print usage errors (exit 2) and --help; our own errors
            # (and Interrupted, a BaseException typer does not catch) come through to be reported here.
            command.main(args=argv, prog_name="airgap", standalone_mode=True)
        return _succeeded()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code == 0:
            return _succeeded()
        cause = exc.__context__
        if _json_requested(argv) and not (isinstance(cause, typer.TyperException) and not str(cause)):
            # typer has shown the usage error (or the abort) on stderr, and exits from inside its
            # handler: the exception it handled is the context of the exit. (A group called
            # without a command printed its help on stdout instead: that is the whole answer.)
            if isinstance(cause, typer.TyperException):
                kind = "usage" if code == 2 else "error"
                print_document(failure_document(code, kind, cause.format_message()))
            else:
                print_document(failure_document(code, "aborted", "the command was aborted"))
        return code
    except AirgapError as exc:
        if STATE.verbose:
            traceback.print_exc()
        return _report(exc)
    except (Interrupted, KeyboardInterrupt) as exc:
        ignore_signals()
        stopped = exc if isinstance(exc, Interrupted) else Interrupted(2)
        if STATE.verbose:
            traceback.print_exc()
        message = f"interrupted by {stopped.signal_name}; {STATE.on_interrupt}"
        with contextlib.suppress(OSError, ValueError):  # SIGHUP: the terminal may be gone
            if STATE.json:
                print_document(failure_document(stopped.exit_code, "interrupted", message, STATE.document))
            err_console.print(f"airgap: {message}", soft_wrap=True)
        return stopped.exit_code
    except Exception as exc:
        if STATE.verbose:
            traceback.print_exc()
        return _report(
            # The kind ("internal error") is printed before the message: do not repeat it here.
            _Internal(f"{type(exc).__name__}: {exc}", hint="re-run with --verbose and report it")
        )


class _Internal(AirgapError):
    exit_code = 70
    kind = "internal error"
