"""A lease on the image engine, so that concurrent builds never remove each other's images.

The classic builder reuses any cached step image, whoever committed it: while one `airgap bundle`
builds, another run's cleanup could remove the build-stage image it is about to copy from (`invalid
from flag value install: No such image`). So every run that builds holds a shared lease for as long
as it runs, and images are removed only by a run that holds the lease alone. A run that is not
alone records what it would remove; the last run to finish removes it all. A run killed by any
signal releases its lease with its file descriptors, so a dead run never blocks cleanup.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

from airgap.errors import EnvironmentFailure

_FULL_ID = re.compile(r"^sha256:[0-9a-f]{64}$")


def lease_directory() -> Path:
    """Per user, whatever ``--cache-dir`` or session variables a run has: two builds of one user
    on one engine meet here from a terminal, cron or a CI runner alike. (Not shared between
    users: a pending list another user could write would let them name images to remove.)"""
    return Path.home() / ".cache" / "airgap" / "engine-leases"


def _engine_key() -> str:
    """One lease per engine address (the SDK's own choice: ``DOCKER_HOST`` or the local socket)."""
    return hashlib.sha256(os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").encode()).hexdigest()[
        :16
    ]


class EngineLease:
    """Held (shared) for a whole build; ``remove_when_alone`` removes images only when no other
    run holds it."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or lease_directory()
        key = _engine_key()
        self.lock_path = self.directory / f"{key}.lock"
        self.pending_path = self.directory / f"{key}.pending"
        self._fh: IO[str] | None = None

    def __enter__(self) -> EngineLease:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._fh = _open_regular(self.lock_path)
        except OSError as exc:
            raise EnvironmentFailure(
                f"cannot take the image engine lease {self.lock_path}: {exc.strerror or exc}",
                hint="make the directory writable by this user, or set XDG_RUNTIME_DIR to one that is",
            ) from None
        fcntl.flock(self._fh.fileno(), fcntl.LOCK_SH)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    @contextlib.contextmanager
    def _pending(self) -> Iterator[IO[str]]:
        with _open_regular(self.pending_path) as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            yield fh

    def remove_when_alone(
        self, ids: Sequence[str], remove: Callable[[Sequence[str]], tuple[int, int]]
    ) -> tuple[int, int] | None:
        """Removes ``ids`` and whatever earlier runs deferred, through ``remove``, if this run is
        the only one holding the lease; else records ``ids`` for the last run to finish and
        returns None. Only full image ids (``sha256:`` and 64 hex digits) are accepted: a prefix
        could name images that are not this run's."""
        wanted = [i for i in ids if _FULL_ID.match(i)]
        assert self._fh is not None, "remove_when_alone outside the lease"
        with self._pending() as fh:
            fh.seek(0, os.SEEK_END)
            fh.write("".join(f"{i}\n" for i in wanted))
            fh.flush()
        fd = self._fh.fileno()
        try:
            # Not atomic (the shared lock is dropped first); losing the race only defers removal.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(fd, fcntl.LOCK_SH)
            return None
        try:
            with self._pending() as fh:
                fh.seek(0)
                every = list(dict.fromkeys(ln for ln in fh.read().split() if _FULL_ID.match(ln)))
                if not every:
                    return (0, 0)
                result = remove(every)
                fh.seek(0)
                fh.truncate()  # what could not be removed is in use by someone: theirs now
                return result
        finally:
            fcntl.flock(fd, fcntl.LOCK_SH)


def _open_regular(path: Path) -> IO[str]:
    """Opens (creating) a lock file without following a planted link."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    return os.fdopen(fd, "r+")
