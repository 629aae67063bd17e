"""What every command shares: the typer app, the global options, the consoles and the JSON output.

The command modules of this package register themselves on ``app``; ``airgap.cli.main`` runs it.
Services are imported inside the commands, so that ``airgap --help`` and a quick command do not
pay for the Docker SDK, onnxruntime or the policy engine.
"""

import contextlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from airgap import __version__
from airgap.cli.rendering import ConsoleObserver, SafeConsole
from airgap.errors import EXIT_CODES

if TYPE_CHECKING:
    import typer.core
    from rich.console import RenderableType
    from rich.style import StyleType
    from rich.table import Column, Table

    from airgap.adapters.keys import TrustedKey
    from airgap.adapters.signers import Signer
    from airgap.services.state import State as StateDir

EPILOG = "Exit codes: " + "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items()) + "."

app = typer.Typer(
    name="airgap",
    help=(
        "Get a machine-learning model running inside a network with no internet.\n\n"
        "On the air-gapped target: `airgap probe` records the facts that decide whether a deployment "
        "runs there. On a connected workstation: `airgap bundle` builds one signed bundle for that "
        "target. On the far side: `airgap verify` and `airgap install`."
    ),
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


@dataclass
class State:
    """The global flags, set once by the callback so every command reads the same answer."""

    json: bool = False
    verbose: bool = False
    quiet: bool = False
    # What an interrupt leaves behind, said in the one line printed when a signal stops a command.
    on_interrupt: str = "nothing half-written was left in place"
    # Under --json: the command's one document, printed by ``main`` once the outcome is known.
    document: object = None


STATE = State()


def _plain_help() -> None:
    """Help in click's plain words: no `<bool>` after a flag, no `{BUNDLE}` in the usage line.

    A flag takes no value, so it shows none; a value shows its metavar (TEXT, PATH, or the one
    the option names, such as HOST:PORT).
    """
    import typer.core

    words = {"str": "TEXT", "path": "PATH", "int": "INTEGER", "float": "NUMBER", "bool": ""}

    def option_type(self: "typer.core.TyperOption", ctx: "typer.Context") -> Optional[str]:
        if self.is_flag or self.count:
            return None
        if self.metavar:
            return str(self.metavar)
        label = str(self.display_type(ctx)).strip("<>").removeprefix("list[").removesuffix("]")
        return words.get(label.removesuffix(" range"), label.upper()) or None

    def argument_type(self: "typer.core.TyperArgument", ctx: "typer.Context") -> Optional[str]:
        return None  # the name column already shows the argument's metavar

    def usage_name(self: "typer.core.TyperArgument") -> str:
        name = str(self.display_name_raw)
        name = name if self.required else f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")

    for cls, attr, fn in (
        (typer.core.TyperOption, "display_type_rich", option_type),
        (typer.core.TyperArgument, "display_type_rich", argument_type),
        (typer.core.TyperArgument, "_usage_display_name", usage_name),
    ):
        if hasattr(cls, attr):  # a typer without these hooks prints its own style, which still works
            setattr(cls, attr, fn)


_plain_help()


def _validators_when_needed() -> None:
    """typer builds a pydantic validator for a parameter before it looks at the value, even when
    there is none; importing pydantic costs a command more than a tenth of a second.

    Every parameter gets a coercion that is built on first use instead: a parameter left unset
    (``None``, as most options of every command and typer's own ``--help`` are) is answered by
    typer's own rule for a missing value without any validator; a path given as text becomes the
    same path object pydantic makes of it (``Path(text)``) and goes through typer's own checks
    (``coerce_cli_path``), and if they refuse it, typer's own coercion says why (its message
    quotes the text as typed); any other value is handed to the validator typer builds, as before.
    A typer without these internals keeps its own coercion, which still works.
    """
    try:
        import typer.core
        from typer._click.exceptions import BadParameter
        from typer._coercion import RuntimeParam, build_runtime_param
        from typer._param_types import coerce_cli_path, lenient_issubclass
    except ImportError:  # pragma: no cover - another typer: its own coercion stays
        return
    if not hasattr(typer.core._TyperParameter, "get_runtime_param"):  # pragma: no cover
        return

    @dataclass(frozen=True)
    class OnFirstValue(RuntimeParam):
        """typer's coercion of one parameter, built when a value comes (``RuntimeParam.coerce``
        has already answered for ``None``)."""

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            descriptor = param.type_descriptor
            info = descriptor.parameter_info
            path_type = info.path_type if info.path_type is not None else descriptor.annotation
            if (
                isinstance(value, str)
                and descriptor.file_annotation is None
                and lenient_issubclass(descriptor.annotation, Path)
                and info.parser is None
            ):
                if not lenient_issubclass(path_type, Path):  # kept as text: typer passes it as is
                    return coerce_cli_path(value, info, path_type=path_type, param=param, ctx=ctx)
                try:
                    return coerce_cli_path(path_type(value), info, path_type=path_type, param=param, ctx=ctx)
                except BadParameter:
                    pass  # typer's own coercion words the error: it quotes the text as given
            built = build_runtime_param(descriptor)
            param._runtime_param = built
            return built._coerce_value(value, param=param, ctx=ctx)

    def get_runtime_param(self: Any) -> Any:
        if self._runtime_param is None:
            described = self.type_descriptor
            self._runtime_param = OnFirstValue(
                parameter_info=described.parameter_info, annotation=described.annotation
            )
        return self._runtime_param

    typer.core._TyperParameter.get_runtime_param = get_runtime_param  # type: ignore[method-assign]


_validators_when_needed()
# Every line airgap prints goes through one of these two: neither lets a control character of a
# name it quotes reach the terminal (``SafeConsole``).
err_console: Console = SafeConsole(stderr=True, highlight=False)
out_console: Console = SafeConsole(highlight=False, soft_wrap=True)


def _Table(*headers: "Column | str", title: Optional[str] = None, **kw: Any) -> "Table":
    """A table whose string title and cells are shown as written: they quote bundle, profile and
    user text, which must not be read as rich markup (``[conceal]`` would hide the rest).
    (rich.table is imported by the commands that draw one, not at start-up.)"""
    from rich.table import Table

    class _Escaped(Table):
        def add_row(
            self,
            *renderables: "RenderableType | None",
            style: "StyleType | None" = None,
            end_section: bool = False,
        ) -> None:
            super().add_row(
                *(escape(c) if isinstance(c, str) else c for c in renderables),
                style=style,
                end_section=end_section,
            )

    return _Escaped(*headers, title=escape(title) if title is not None else None, **kw)


StateDirOption = Annotated[
    Optional[Path],
    typer.Option(
        "--state-dir",
        help="Far-side state: trust store, audit log, installed versions "
        "(default /var/lib/airgap as root, else ~/.local/share/airgap; or AIRGAP_STATE_DIR).",
    ),
]


def _version(value: bool) -> None:
    if value:
        print(f"airgap {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    json_out: Annotated[
        bool, typer.Option("--json", help="Machine-readable JSON on stdout instead of tables.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show details, and tracebacks of internal errors.")
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="No progress: neither live bars in a terminal nor phase lines in a log."
        ),
    ] = False,
    # A plain flag (False, not None): typer coerces a bool flag's value without building a
    # pydantic validator, so `airgap COMMAND --help` does not import pydantic for the root options.
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    STATE.json = json_out
    STATE.verbose = verbose
    STATE.quiet = quiet


class RichObserver:
    """The observer a service gets: the command's ``_progress()``, or nothing when there is none."""

    def __init__(self, progress: Optional[ConsoleObserver]) -> None:
        self.progress = progress

    def begin(self, task: str, total: Optional[float] = None, unit: str = "") -> None:
        """Forwards to the progress display, if any, so a service never checks for one."""
        if self.progress is not None:
            self.progress.begin(task, total, unit)

    def advance(self, task: str, amount: float = 1, detail: str = "") -> None:
        """Forwards to the progress display, if any; a no-op without one."""
        if self.progress is not None:
            self.progress.advance(task, amount, detail)

    def end(self, task: str) -> None:
        """Forwards to the progress display, if any; safe to call from a ``finally``."""
        if self.progress is not None:
            self.progress.end(task)


def _progress(log: bool = True) -> ConsoleObserver:
    """Live progress on stderr in a terminal; elsewhere one line per task start and end (``log``)."""
    return ConsoleObserver(err_console, log=log, enabled=not STATE.quiet)


def _emit_json(payload: object) -> None:
    """Hands the command's JSON document to ``main``, which prints it once the command succeeded.

    Kept, not printed, so that stdout under ``--json`` is exactly one document whatever happens
    next: a command that fails after producing its result (``check`` with open findings, ``smoke``
    with a mismatch) yields one failure document that carries that result's fields too.
    """
    STATE.document = payload


def print_document(payload: object) -> None:
    """Writes one JSON document on stdout: the only writer of stdout under ``--json``."""
    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def failure_document(exit_code: int, kind: str, message: str, result: object = None) -> dict[str, object]:
    """The one shape of every failure under ``--json`` (documented in the README).

    ``{"ok": false, "exit_code": N, "kind": "...", "error": "one line"}``, plus the fields of the
    result the command had already produced (a JSON object), so that a pipeline reads one document
    and a non-zero ``exit_code`` on every failure, with the findings or mismatches when there are.
    """
    doc: dict[str, object] = dict(result) if isinstance(result, dict) else {}
    doc.update({"ok": False, "exit_code": exit_code, "kind": kind, "error": message})
    return doc


def _parse_hostport(value: str) -> str:
    if value in ("", "none"):
        return "none"
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise typer.BadParameter("must be HOST:PORT (e.g. pypi.org:443) or 'none'")
    return value


@contextlib.contextmanager
def _unsafe_warnings() -> Iterator[None]:
    """Shows the UNSAFE warnings a service raises (a switched-off check), one line each."""
    import warnings as _warnings

    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in caught:
                if w.category.__module__.startswith("airgap."):
                    err_console.print(f"[bold yellow]{escape(str(w.message))}[/]", soft_wrap=True)


def _passphrase(confirm: bool) -> bytes:
    import os

    from airgap.adapters.keys import PASSPHRASE_ENV

    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value.encode()
    if not sys.stdin.isatty():
        from airgap.errors import UsageError

        raise UsageError(f"no key passphrase: set {PASSPHRASE_ENV} or run in a terminal")
    return str(typer.prompt("key passphrase", hide_input=True, confirmation_prompt=confirm)).encode()


def _load_signing_key(uri: str) -> "Signer":
    from airgap.adapters.signers import signer_from_uri

    return signer_from_uri(uri, lambda: _passphrase(confirm=False))


def _state(state_dir: Optional[Path]) -> "StateDir":
    from airgap.services.state import State, default_state_dir

    return State(state_dir or default_state_dir())


def _trusted(state: "StateDir", key: Optional[Path], trust_dir: Optional[Path]) -> "tuple[TrustedKey, ...]":
    """The keys ``--key`` / ``--trust-dir`` / the state directory say to trust (``services.trust``)."""
    from airgap.services.trust import trusted_keys

    return trusted_keys(state, key, trust_dir)


def let_commands_open_their_paths(command: object) -> None:
    """Turns off the CLI framework's own checks of path arguments, in every command.

    typer checks that an existing path is readable before the command runs (its ``Path`` type
    does by default) and fails with a usage box and exit 2: a bundle, key or inventory this user
    cannot read would be a "usage error". The commands open every file themselves, through readers
    that say in one line what is wrong with it, with the documented exit code (4 for a file this
    user may not read).
    """
    for param in getattr(command, "params", ()):
        described = getattr(getattr(param, "type_descriptor", None), "parameter_info", None)
        for checks in (described, getattr(param, "type", None)):
            for attr in ("readable", "writable"):
                if getattr(checks, attr, False) is True:
                    setattr(checks, attr, False)
    for sub in getattr(command, "commands", {}).values():
        let_commands_open_their_paths(sub)
