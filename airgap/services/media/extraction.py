"""Streaming a verified bundle's content into the far side's content store.

The media may have changed since verification: every member is hashed again on the way out and
checked against the verified manifest; compressed members are inflated no further than their
signed size; OCI blobs go to one shared store, where a blob is reused only if it still hashes to
its name.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

import zstandard

from airgap.adapters.archive import TarReader
from airgap.core import bundle_v2
from airgap.core.build_record import BuildRecord
from airgap.core.bundle_format import CONTROL, FORMAT_V2, MAX_ZSTD_WINDOW, ROOT, FileEntry
from airgap.errors import EnvironmentFailure, InvalidInputError, TamperError
from airgap.services.media.verify import VerifiedBundle

CHUNK = 1 << 20


def extract(
    bundle: Path,
    verified: VerifiedBundle,
    want: Callable[[str], bool],
    dest: Path,
    blobs: Path,
    created: list[Path] | None = None,
) -> None:
    """Streams the chosen files out of the bundle into ``dest`` (OCI blobs into the shared ``blobs``),
    re-hashing each one against the verified manifest, decompressing within the signed size."""
    if verified.manifest.format == FORMAT_V2:
        _extract_v2(verified, want, dest, blobs, created)
        return
    entries = {f.path: f for f in verified.manifest.files}
    with verified.handle.stream() as stream:
        reader = TarReader(stream, ROOT)
        while True:
            member = reader.next()
            if member is None:
                break
            entry = entries.get(member.name)
            if entry is None and f"{ROOT}/{member.name}" in CONTROL:
                continue
            if entry is None:
                raise TamperError(
                    f"{member.name} appeared in the bundle after it was verified: the media changed"
                )
            if not want(entry.content_path):
                continue
            if "/blobs/sha256/" in entry.content_path:
                target = blobs / entry.content_path.rsplit("/", 1)[1]
                # A blob already in the shared store is reused only if its bytes still hash to
                # its name; anything else there is replaced from this verified bundle.
                if target.name == _file_sha256(target):
                    for _ in reader.chunks(member):
                        pass
                    continue
            else:
                target = dest / entry.content_path
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise disk_error(target.parent, exc) from None
            _write_member(reader, member, entry, target)
            if created is not None:
                created.append(target)


def _extract_v2(
    verified: VerifiedBundle, want: Callable[[str], bool], dest: Path, blobs: Path, created: list[Path] | None
) -> None:
    """v2: every blob the bundle carries goes into the shared store once (re-hashed on the way;
    one already there, or an external one a chosen file needs, is re-hashed there), then every
    chosen logical path is a hard link to it (a copy only where a link cannot be made). An OCI
    layout's blobs stay in the store, as in v1: the targets read the image from there."""
    manifest = verified.manifest
    chosen = [f for f in manifest.files if want(f.path)]
    needed = {f.sha256 for f in chosen}
    stored = {b.path: b for b in manifest.blobs}
    try:
        blobs.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise disk_error(blobs, exc) from None
    have: set[str] = set()
    with verified.handle.stream() as stream:
        reader = TarReader(stream, ROOT)
        while True:
            member = reader.next()
            if member is None:
                break
            entry = stored.get(member.name)
            if entry is None and f"{ROOT}/{member.name}" in CONTROL:
                continue
            if entry is None:
                raise TamperError(
                    f"{member.name} appeared in the bundle after it was verified: the media changed"
                )
            hexd = bundle_v2.blob_hex(entry)
            # Every blob the bundle carries is kept, not only those this target needs: the store
            # is what `airgap inventory` reports, so the next delta can leave all of them out.
            target = blobs / hexd
            if hexd != _file_sha256(target):
                _write_member(reader, member, entry, target)
                if created is not None:
                    created.append(target)
            have.add(hexd)
    for hexd in sorted(needed - have):
        # External (or, were the media changed, missing): the store's copy, re-hashed now.
        if _file_sha256(blobs / hexd) != hexd:
            users = ", ".join(f.path for f in chosen if f.sha256 == hexd)
            raise TamperError(
                f"blob {hexd} (needed by {users}) is missing from the blob store {blobs} "
                "or has other content",
                hint="the store changed since verification: verify again, or ask for a full bundle",
            )
    for f in chosen:
        if "/blobs/sha256/" not in f.path:
            _link_into(blobs / f.sha256, dest / f.path)


def _link_into(blob: Path, target: Path) -> None:
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


def model_file(record: BuildRecord) -> str:
    """The model file the signed build record names (checked as a safe path at verify time)."""
    file = record.model.file
    if file is None:
        raise InvalidInputError("the signed build.json names no model.file: there is nothing to serve")
    return file


def read_record(content: Path) -> BuildRecord:
    """The signed build.json of an installed bundle, from the content store (re-hashed against the
    signed manifest when it was extracted)."""
    return BuildRecord.from_json((content / "build.json").read_bytes())


def read_contract(content: Path) -> dict[str, Any]:
    """The golden inputs and outputs the installed model is held to; a bundle without them
    cannot be proved to work here."""
    path = content / "model" / "contract.json"
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise InvalidInputError("the bundle has no model/contract.json: nothing to smoke-test with") from None
    except ValueError as exc:
        raise InvalidInputError(f"the bundle's model/contract.json is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInputError("the bundle's model/contract.json is not an object")
    return data


def disk_error(path: Path, exc: OSError) -> EnvironmentFailure:
    """A write on the far side failed: the disk is full, read-only, or not ours (exit 5)."""
    reason = exc.strerror or str(exc)
    hint = "free space in the state directory (or choose another --state-dir), then install again"
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        hint = "check the permissions of the state directory (or choose another --state-dir)"
    return EnvironmentFailure(f"cannot write {path}: {reason}", hint=hint)


def _file_sha256(path: Path) -> str | None:
    """The SHA-256 of a regular file, streamed; None when there is no such regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            return None
        h = hashlib.sha256()
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
        return h.hexdigest()


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


def _write_member(reader: TarReader, member: Any, entry: FileEntry, target: Path) -> None:
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
