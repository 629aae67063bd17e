"""Filesystem writes that never leave a half-written file behind.

Everything airgap writes goes to a temporary file in the destination directory, is flushed to
disk, then renamed into place: a pulled USB stick or a killed shell leaves either the old file or
the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from airgap.errors import EnvironmentFailure


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


def read_bytes(path: Path, what: str = "file") -> bytes:
    """Reads a user-named file, turning OS errors into one clear line.

    A wrong path is the user's argument (exit 4, "check the path"), never the disk's fault.
    """
    from airgap.errors import InvalidInputError

    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise InvalidInputError(f"{what} {path} does not exist", hint="check the path") from None
    except NotADirectoryError:
        raise InvalidInputError(
            f"{what} {path} does not exist: part of that path is a file, not a directory",
            hint="check the path",
        ) from None
    except IsADirectoryError:
        raise InvalidInputError(
            f"{what} {path} is a directory, not a file", hint="name the file itself"
        ) from None
    except OSError as exc:
        raise _fail(Path(path), exc, "read") from None


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
