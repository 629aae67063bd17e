"""Free space, checked before a large write rather than discovered half-way through it.

A bundle of many gigabytes that fills the disk at 90 % leaves the engineer with a partial file, a
full disk and an hour lost; ``statvfs`` answers in microseconds. Every large write (pack, split,
join, install's extraction) asks first and refuses with exit 5 naming the path, the bytes needed
and the bytes free, before anything is written.
"""

from __future__ import annotations

import os
from pathlib import Path

from airgap.errors import EnvironmentFailure

MARGIN = 16 << 20  # headroom beyond the estimate: file system metadata, the journal, temp names


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system that holds ``path`` (or,
    when it does not exist yet, its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    st = os.statvfs(probe)
    return st.f_bavail * st.f_frsize


def require_free(path: Path, needed: int, what: str) -> None:
    """Refuses (EnvironmentFailure, exit 5) when ``path``'s file system has less than ``needed``
    bytes (plus a small margin) free for ``what``."""
    free = free_bytes(path)
    if free < needed + MARGIN:
        raise EnvironmentFailure(
            f"{what} needs {needed + MARGIN} bytes ({(needed + MARGIN) / 1e9:.2f} GB) in {path}, "
            f"which has {free} bytes ({free / 1e9:.2f} GB) free; nothing was written",
            hint="free some space there or choose another directory, then re-run",
        )
