"""Filesystem writes that never leave a half-written file behind.

Everything airgap writes goes to a temporary file in the destination directory, is flushed to
disk, then renamed into place: a pulled USB stick or a killed shell leaves either the old file or
the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from airgap.errors import AirgapError, EnvironmentFailure, InvalidInputError


def _fail(path: Path, exc: OSError, what: str = "write") -> EnvironmentFailure:
    """The one line for a failed write (or an unexpected read failure), with the fix that fits."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        hint = "free some space, or choose a location with more"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = (
            "choose a location this user can write to" if what == "write" else "make it readable by this user"
        )
    elif exc.errno in (errno.ENOENT, errno.ENOTDIR):
        hint = "create the directory first, or choose one that exists"
    elif what == "read":
        hint = "check the file and the medium it is on"
    else:
        hint = "choose a writable location or free some space"
    return EnvironmentFailure(f"cannot {what} {path}: {reason}", hint=hint)


@contextlib.contextmanager
def atomic_writer(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yields a binary file that becomes ``path`` only if the block completes without error."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise _fail(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _fail(path, exc) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Writes ``data`` to ``path`` atomically (temp file in the same directory, fsync, rename): a reader or a
    crash sees the old file or the new one, never half of either."""
    with atomic_writer(path, mode) as fh:
        fh.write(data)


# Caps on what a user or a medium names, checked against the file's size before a byte is read
# (docs/bundle-format.md, "Limits on what airgap reads"). Kinds with a format of their own keep
# their cap beside their parser: the inventory (core/inventory.py), evidence
# (services/evidence/attestations.py), an envelope (core/attestation.py), indexes and signatures.
MAX_READ = 64 << 20  # anything without a tighter cap: golden inputs, policy results, data files
MAX_KEY = 64 << 10  # a PEM key: some 250 bytes public, 600 encrypted private
MAX_PROFILE = 4 << 20  # a target profile: some 5 KiB
MAX_PROJECT = 4 << 20  # airgap.yaml and the requirements files it names

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(path: Path, mode: int, what: str) -> InvalidInputError | None:
    """The one line for a file that is not a regular file, or None when it is one."""
    if stat.S_ISREG(mode):
        return None
    kind = next((k for test, k in _KINDS if test(mode)), "not a regular file")
    hint = "name the file itself" if stat.S_ISDIR(mode) else "copy it to a regular file first"
    return InvalidInputError(f"{what} {path} is {kind}: only regular files are read", hint=hint)


def _open_failure(path: Path, exc: OSError, what: str) -> AirgapError:
    """A user-named file that cannot be opened: the argument's fault (exit 4), except a failing disk."""
    if isinstance(exc, FileNotFoundError):
        return InvalidInputError(f"{what} {path} does not exist", hint="check the path")
    if isinstance(exc, NotADirectoryError):
        return InvalidInputError(
            f"{what} {path} does not exist: part of that path is a file, not a directory",
            hint="check the path",
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return InvalidInputError(
            f"cannot read {what} {path}: permission denied", hint="make it readable by this user"
        )
    if exc.errno in (errno.ELOOP, errno.ENXIO, errno.ENAMETOOLONG, errno.ENODEV, errno.EOPNOTSUPP):
        return InvalidInputError(f"cannot open {what} {path}: {exc.strerror or exc}", hint="check the path")
    return _fail(path, exc, "read")


def open_regular_fd(path: Path, what: str) -> tuple[int, os.stat_result]:
    """An open descriptor on ``path`` and its ``fstat``, only if it is a regular file.

    The type is checked before opening (a socket cannot be opened at all) and again on the
    descriptor, so nothing can be swapped in between; ``O_NONBLOCK`` makes opening a FIFO return at
    once instead of waiting for a writer, and the descriptor is blocking again before any read.
    Everything but a failing disk is the user's argument: one line, exit 4.
    """
    try:
        problem = _not_regular(path, os.stat(path).st_mode, what)
        if problem is not None:
            raise problem
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise _open_failure(Path(path), exc, what) from None
    try:
        st = os.fstat(fd)
        problem = _not_regular(path, st.st_mode, what)
        if problem is not None:
            raise problem
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_bytes(path: Path, what: str = "file", limit: int = MAX_READ) -> bytes:
    """Reads a user- or medium-named file whole, within ``limit`` bytes: one clear line otherwise.

    Only a regular file is read (a directory, a device such as ``/dev/zero``, a FIFO or a socket is
    refused before a byte is read, and a FIFO never blocks); its size is compared with ``limit``
    before reading, and the read itself stops one byte past it, so a file that grows meanwhile, or
    one whose size the kernel does not report (``/proc``), is refused too. A wrong path, a missing
    permission or a file too large is the user's argument (exit 4), never a crash or a hang.
    """
    path = Path(path)
    fd, st = open_regular_fd(path, what)
    with os.fdopen(fd, "rb", buffering=0) as fh:
        if st.st_size > limit:
            raise _too_large(path, what, limit, st.st_size)
        try:
            # One allocation of the reported size (plus one byte to see the end); a file larger
            # than it said is read on, in chunks, only up to one byte past the cap.
            data = fh.read(st.st_size + 1) or b""
            if len(data) > st.st_size:
                chunks = [data]
                total = len(data)
                while total <= limit:
                    chunk = fh.read(min(1 << 20, limit + 1 - total))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    total += len(chunk)
                data = b"".join(chunks)
        except OSError as exc:
            raise _fail(path, exc, "read") from None
    if len(data) > limit:
        raise _too_large(path, what, limit)
    return data


def _too_large(path: Path, what: str, limit: int, size: int | None = None) -> InvalidInputError:
    """``size`` is the one ``stat`` reported; None when the read itself went past the cap."""
    said = f"{size} bytes, " if size is not None else ""
    return InvalidInputError(
        f"{what} {path} is {said}more than the {_human(limit)} airgap reads as one",
        hint="check that it is the right file",
    )


def _human(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"


def write_json(path: Path, value: object) -> None:
    """Pretty, sorted, newline-terminated JSON, written atomically: stable bytes for stable input."""
    import json

    atomic_write_bytes(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


@contextlib.contextmanager
def watch_directory(
    directory: Path, on_bytes: Callable[[int], None] | None, interval: float = 0.5
) -> Iterator[None]:
    """Calls ``on_bytes(n)`` with each growth of the files under ``directory`` while inside.

    For work another process does (pip in a container) that reports its progress to no one:
    the bytes it leaves on disk are the progress.
    """
    if on_bytes is None:
        yield
        return
    stop = threading.Event()
    seen = 0

    def total() -> int:
        size = 0
        with contextlib.suppress(OSError):
            for root, _dirs, files in os.walk(directory):
                for name in files:
                    with contextlib.suppress(OSError):
                        size += os.stat(os.path.join(root, name), follow_symlinks=False).st_size
        return size

    def poll() -> None:
        nonlocal seen
        while not stop.wait(interval):
            now = total()
            if now > seen:
                on_bytes(now - seen)
                seen = now

    thread = threading.Thread(target=poll, name="airgap-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        now = total()
        if now > seen:
            on_bytes(now - seen)
