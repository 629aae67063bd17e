"""Help screens shown again without loading the CLI framework: typer's own output, kept.

Drawing ``airgap --help`` means importing typer, rich, markdown-it and pygments and laying out
every command: over a tenth of a second, every time, for the same screen. So the console script
keeps the screen typer drew, byte for byte, and shows it again when *everything* it was drawn
from is the same:

- the command line (``[COMMAND [SUBCOMMAND]] --help``, nothing else is kept);
- the code: every file of the airgap package (name, size, modification time), airgap's version,
  the Python executable and version, and the modification time of every directory on
  ``sys.path`` but the working directory (installing, upgrading or removing typer, rich or
  anything else changes it);
- the terminal: which of stdin, stdout and stderr are terminals, their size, stdout's encoding;
- the environment, every variable except the few that name only where the shell is (``PWD``,
  ``OLDPWD``, ``SHLVL``, ``_``): ``COLUMNS``, ``TERM``, ``NO_COLOR``, ``FORCE_COLOR``, the locale...
- the user (effective uid).

Anything else is drawn by typer as before, and kept. The key is a SHA-256 over all of that, so
no variable's value is written to disk. A kept screen is read only from a file this user owns
and no one else may write (it is written to the terminal as it is), in ``help/`` of airgap's
cache directory (``AIRGAP_CACHE_DIR``, else ``~/.cache/airgap``), one small file per command
line, replaced when its key changes. A cache that cannot be read or written is no error: the
help is drawn, as without it.
"""

import contextlib
import os
import sys
from typing import Any, Optional, TextIO

# Variables that say where the shell is, not how anything is drawn.
_PLACE = frozenset({"PWD", "OLDPWD", "SHLVL", "_"})
_WORD = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_SEP = b"\n"


def _eligible(args: list[str]) -> bool:
    """``--help``, ``COMMAND --help`` or ``COMMAND SUBCOMMAND --help``: a help screen and nothing
    else (no option before ``--help`` could take it as its value)."""
    if not args or args[-1] != "--help" or len(args) > 3:
        return False
    return all(a and a[0].isalpha() and set(a) <= _WORD for a in args[:-1])


def _directory() -> Optional[str]:
    """``help`` in airgap's cache directory, by the rule of ``--cache-dir``'s default
    (``AIRGAP_CACHE_DIR``, else ``$XDG_CACHE_HOME/airgap`` or ``~/.cache/airgap``)."""
    base = os.environ.get("AIRGAP_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "airgap"
    )
    if not os.path.isabs(base):
        return None
    return os.path.join(base, "help")


def _path(args: list[str]) -> Optional[str]:
    directory = _directory()
    if directory is None:
        return None
    return os.path.join(directory, "-".join(args[:-1]) or "airgap")


def _code(parts: list[str]) -> None:
    """The name, size and modification time of every file of the airgap package."""
    import airgap

    def walk(folder: str) -> None:
        with os.scandir(folder) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.name.startswith((".", "__pycache__")):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    walk(entry.path)
                else:
                    st = entry.stat()
                    parts.append(f"{entry.path}\0{st.st_size}\0{st.st_mtime_ns}")

    parts.append(f"airgap\0{airgap.__version__}\0{airgap.__file__}")
    walk(os.path.dirname(os.path.abspath(airgap.__file__)))


def key(args: list[str]) -> str:
    """The SHA-256 of everything a help screen is drawn from (see the module's docstring)."""
    import hashlib

    parts = ["\0".join(args), sys.executable, sys.version, str(os.geteuid())]
    _code(parts)
    here = os.getcwd()
    for entry in sys.path:
        if os.path.abspath(entry or ".") == here:
            continue  # `python -m` puts the working directory first: any file made there changes it
        try:
            parts.append(f"path\0{entry}\0{os.stat(entry or '.').st_mtime_ns}")
        except OSError:
            parts.append(f"path\0{entry}\0-")
    for fd in (0, 1, 2):
        try:
            tty = os.isatty(fd)
            size = tuple(os.get_terminal_size(fd)) if tty else None
        except OSError:
            tty, size = False, None
        parts.append(f"fd{fd}\0{tty}\0{size}")
    stdout = sys.stdout
    parts.append(f"stdout\0{getattr(stdout, 'encoding', None)}\0{getattr(stdout, 'errors', None)}")
    parts.extend(f"env\0{k}\0{v}" for k, v in sorted(os.environ.items()) if k not in _PLACE)
    return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogateescape")).hexdigest()


def replay(args: list[str]) -> bool:
    """Writes the kept help screen for ``args`` to stdout and says True, or says False (nothing
    kept for exactly this code, terminal and environment: typer draws it)."""
    if not _eligible(args) or sys.stdout is None:
        return False
    path = _path(args)
    if path is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022 or st.st_size > 1 << 20:
            return False
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read()
    except OSError:
        return False
    finally:
        os.close(fd)
    kept_key, sep, screen = data.partition(_SEP)
    if not sep or kept_key.decode("ascii", "replace") != key(args):
        return False
    try:
        text = screen.decode("utf-8", "surrogateescape")
    except UnicodeDecodeError:  # pragma: no cover - surrogateescape decodes any bytes
        return False
    sys.stdout.write(text)
    sys.stdout.flush()
    return True


def _ours(directory: str) -> bool:
    """The nearest existing directory on the way to ``directory`` belongs to this user: ``sudo``
    with another user's home must not leave that user a cache directory they cannot write."""
    while True:
        try:
            return os.stat(directory).st_uid == os.geteuid()
        except FileNotFoundError:
            parent = os.path.dirname(directory)
            if parent == directory:
                return False
            directory = parent
        except OSError:
            return False


class _Tee:
    """A text stream that passes everything to the real one and keeps what was written."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.written: list[str] = []
        self.bypassed = False

    def write(self, text: str) -> int:
        written = self._stream.write(text)  # first: a probe with bytes fails here, and is not kept
        self.written.append(text)
        return written

    @property
    def buffer(self) -> Any:
        self.bypassed = True  # bytes written past the text layer are not kept: keep nothing
        return self._stream.buffer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class Recorder:
    """Keeps the help screen typer draws for ``args`` (stdout only, and only if nothing at all
    went to stderr: a warning is not part of the screen and must not be lost on the next run)."""

    def __init__(self, args: list[str], out: _Tee, err: _Tee) -> None:
        self.args = args
        self.out = out
        self.err = err
        self.key = key(args)  # taken before the command runs: what the screen is drawn from

    @classmethod
    def start(cls, args: list[str]) -> "Optional[Recorder]":
        """A recorder on stdout and stderr when ``args`` asks for a help screen, or None."""
        if not _eligible(args) or sys.stdout is None or sys.stderr is None or _path(args) is None:
            return None
        out, err = _Tee(sys.stdout), _Tee(sys.stderr)
        recorder = cls(args, out, err)
        sys.stdout, sys.stderr = out, err
        return recorder

    def stop(self) -> None:
        """Puts the real streams back."""
        if sys.stdout is self.out:
            sys.stdout = self.out._stream
        if sys.stderr is self.err:
            sys.stderr = self.err._stream

    def save(self) -> None:
        """Writes the screen (after the key) atomically; a cache that cannot be written is skipped."""
        if any(self.err.written) or self.out.bypassed or self.err.bypassed or not self.out.written:
            return
        path = _path(self.args)
        if path is None:
            return
        data = self.key.encode("ascii") + _SEP + "".join(self.out.written).encode("utf-8", "surrogateescape")
        if not _ours(os.path.dirname(path)):
            return
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                with os.fdopen(fd, "wb", closefd=False) as f:
                    f.write(data)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
