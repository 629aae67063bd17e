"""Writing a verified bundle's members out of the archive, re-hashed on the way: the helpers
every format's ``extract`` shares.

The media may have changed since verification: every member is hashed again as it is written and
checked against the verified manifest; a compressed member is inflated no further than its signed
size; a blob already in the far side's store is reused only if it still hashes to its name.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import zstandard

from airgap.adapters.archive import Member, TarReader
from airgap.core.bundle_format import CONTROL, MAX_ZSTD_WINDOW, ROOT, FileEntry
from airgap.errors import EnvironmentFailure, TamperError

CHUNK = 1 << 20


def link_into(blob: Path, target: Path) -> None:
    """``target`` becomes the store's ``blob``: a hard link, or a copy where none can be made
    (another file system, a file system without links)."""
    tmp = target.with_name(f".{target.name}.part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)
        try:
            os.link(blob, tmp)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                raise
            shutil.copyfile(blob, tmp)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise disk_error(target, exc) from None


def disk_error(path: Path, exc: OSError) -> EnvironmentFailure:
    """A write on the far side failed: the disk is full, read-only, or not ours (exit 5)."""
    reason = exc.strerror or str(exc)
    hint = "free space in the state directory (or choose another --state-dir), then install again"
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        hint = "check the permissions of the state directory (or choose another --state-dir)"
    return EnvironmentFailure(f"cannot write {path}: {reason}", hint=hint)


def file_sha256(path: Path) -> str | None:
    """The SHA-256 of a regular file, streamed; None when there is no such regular file."""
    found = stored_blob(path, False)
    return found[0] if found is not None else None


def stored_blob(path: Path, keep: bool) -> tuple[str, int, bytes | None] | None:
    """(SHA-256, size, content if ``keep``) of a regular file in the blob store, streamed and never
    following a link; None when there is no such regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            return None
        h = hashlib.sha256()
        size = 0
        buf = bytearray() if keep else None
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
            size += len(block)
            if buf is not None:
                buf += block
        return h.hexdigest(), size, bytes(buf) if buf is not None else None


def members(
    stream: BinaryIO, entries: Mapping[str, FileEntry]
) -> Iterator[tuple[TarReader, Member, FileEntry]]:
    """(reader, member, its entry) for each member after the control files of a verified bundle's
    ``stream``; a member ``entries`` does not list means the media changed since verification."""
    reader = TarReader(stream, ROOT)
    while True:
        member = reader.next()
        if member is None:
            return
        entry = entries.get(member.name)
        if entry is None and f"{ROOT}/{member.name}" in CONTROL:
            continue
        if entry is None:
            raise TamperError(
                f"{member.name} appeared in the bundle after it was verified: the media changed"
            )
        yield reader, member, entry


class _BoundedFile:
    """The decompressor's output: written to the file, hashed, never past the signed size."""

    def __init__(self, out: Any, entry: FileEntry) -> None:
        self.out = out
        self.entry = entry
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.entry.content_size is None or self.size > self.entry.content_size:
            raise TamperError(f"{self.entry.path} inflates past its signed size: a decompression bomb")
        self.hash.update(data)
        self.out.write(data)
        return len(data)


def write_member(reader: TarReader, member: Any, entry: FileEntry, target: Path) -> None:
    """Writes ``member``'s content to ``target`` (atomically), decompressing within the signed
    size; raises TamperError unless the bytes are exactly the ones ``entry`` signed."""
    tmp = target.with_name(f".{target.name}.part")
    stored = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            if entry.compression:
                sink = _BoundedFile(out, entry)
                # Output in bounded pieces: memory does not grow with what a frame expands to.
                writer = zstandard.ZstdDecompressor(max_window_size=MAX_ZSTD_WINDOW).stream_writer(
                    cast(IO[bytes], sink), write_size=CHUNK, write_return_read=True, closefd=False
                )
                try:
                    for chunk in reader.chunks(member):
                        stored.update(chunk)
                        writer.write(chunk)
                    writer.flush()  # type: ignore[no-untyped-call]
                except zstandard.ZstdError as exc:
                    raise TamperError(f"{entry.path} does not decompress: {exc}") from None
            else:
                for chunk in reader.chunks(member):
                    stored.update(chunk)
                    out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if stored.hexdigest() != entry.sha256:
            raise TamperError(f"{entry.path} changed on the media after verification")
        if entry.compression and (
            sink.hash.hexdigest() != entry.content_sha256 or sink.size != entry.content_size
        ):
            raise TamperError(f"{entry.path} decompresses to content that differs from the manifest")
        if "/blobs/sha256/" in entry.content_path and target.name != (
            sink.hash.hexdigest() if entry.compression else stored.hexdigest()
        ):
            raise TamperError(f"{entry.path} is a blob whose content does not hash to its name")
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise disk_error(target, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
