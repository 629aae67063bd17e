"""Reading a split bundle's parts as one stream, each part checked against the signed index.

The parts are read one after another; when a part ends, its size and SHA-256 are compared with
the signed parts index at once, so a bad copy is named by the part that carries it, before
anything after it is read. A part that cannot be opened or read is a damaged part (exit 3), not
a crash: with parity parts, the opener rebuilds it and reads again.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import BinaryIO, cast

from airgap.adapters.archive import CHUNK, open_regular
from airgap.errors import EnvironmentFailure, TamperError


class ConcatenatedParts:
    """Reads parts one after another as one stream, hashing each part as it goes, and compares
    each part with the signed index the moment it ends."""

    def __init__(self, paths: list[Path], expected: list[tuple[str, int, str]]) -> None:
        self.paths = paths
        self.expected = expected
        self.index = -1
        self.fh: BinaryIO | None = None
        self.hash = hashlib.sha256()
        self.read_in_part = 0
        self._advance()

    def _advance(self) -> None:
        if self.fh is not None:
            self.fh.close()
            name, size, sha = self.expected[self.index]
            if self.read_in_part != size or self.hash.hexdigest() != sha:
                raise TamperError(
                    f"part {self.index + 1} of {len(self.expected)} ({name}) is damaged: "
                    f"{self.read_in_part} bytes with sha256 {self.hash.hexdigest()[:16]}…, "
                    f"expected {size} bytes with {sha[:16]}…",
                    hint=f"copy {name} again from the original media, then re-run",
                )
        self.index += 1
        self.fh = None
        if self.index < len(self.paths):
            try:
                self.fh = open_regular(self.paths[self.index], "a bundle part", buffered=False)
            except EnvironmentFailure as exc:
                name = self.expected[self.index][0]
                raise TamperError(f"part {self.index + 1} ({name}) cannot be read: {exc.message}") from None
            self.hash = hashlib.sha256()
            self.read_in_part = 0

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes across parts; leaving a part checks its size and digest against the index."""
        out = bytearray()
        while len(out) < n and self.fh is not None:
            try:
                data = self.fh.read(n - len(out))
            except OSError as exc:
                name = self.expected[self.index][0]
                raise TamperError(
                    f"part {self.index + 1} ({name}) cannot be read: {exc.strerror or exc}",
                    hint=f"copy {name} again from the original media, then re-run",
                ) from None
            if not data:
                self._advance()
                continue
            self.hash.update(data)
            self.read_in_part += len(data)
            out += data
        return bytes(out)

    def readinto(self, view: memoryview) -> int:
        """Up to ``len(view)`` bytes of the current part straight into ``view`` (no copy), hashed
        as they pass; 0 only once every part is read and checked."""
        while self.fh is not None:
            try:
                n = cast(io.RawIOBase, self.fh).readinto(view) or 0
            except OSError as exc:
                name = self.expected[self.index][0]
                raise TamperError(
                    f"part {self.index + 1} ({name}) cannot be read: {exc.strerror or exc}",
                    hint=f"copy {name} again from the original media, then re-run",
                ) from None
            if not n:
                self._advance()
                continue
            self.hash.update(view[:n])
            self.read_in_part += n
            return n
        return 0

    def finish(self) -> None:
        """Reads whatever the tar reader left (padding), closing and checking the last parts."""
        while self.fh is not None:
            if not self.read(CHUNK):
                break
