"""Writing a verified bundle's members out of the archive, re-hashed on the way: the helpers
every format's ``extract`` shares.

The media may have changed since verification: every member is hashed again as it is written and
checked against the verified manifest; a compressed member is inflated no further than its signed
size; a blob already in the far side's store is reused only if it still hashes to its name.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import shutil
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from airgap.adapters.archive import Member, TarReader
from airgap.core.bundle_format import CONTROL, MAX_ZSTD_WINDOW, ROOT, FileEntry
from airgap.errors import EnvironmentFailure, TamperError

CHUNK = 1 << 20


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# Every temporary file: created here and now (never an existing file, never through a link).
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
READ_ONLY = 0o444  # installed content: no installation can change a blob another shares
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def kind_of(mode: int) -> str:
    """What a file that is not a regular one is, for the line that refuses it."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _temp_beside(target: Path) -> tuple[int, Path]:
    """A new file next to ``target``, open for writing: a fresh random name created with
    ``O_EXCL|O_NOFOLLOW``, so nothing planted there (a link, a FIFO, a stale file) is ever written.
    The name starts with a dot, which no bundle name may, and does not grow with ``target``'s."""
    while True:
        tmp = target.with_name(f".airgap-{secrets.token_hex(8)}.part")
        try:
            return os.open(tmp, _CREATE, 0o600), tmp
        except FileExistsError:
            continue


def _clear(target: Path) -> None:
    """Makes room at ``target`` for a regular file renamed onto it: a directory (or anything but a
    regular file or a link, which the rename replaces) planted at that name is removed. The name
    is inside a directory this process owns (``private_dir``); a link is never followed."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(target)


def private_dir(path: Path, root: Path | None = None) -> Path:
    """``path`` as a chain of real directories owned by this process from ``root`` (default: ``path``
    itself) down: a missing one is created, a link, file or FIFO where a directory belongs is
    replaced by one (below ``root``), and a directory another user owns, or ``root`` being a link,
    is refused (exit 3). Writes below it cannot be sent outside the state directory."""
    base = root if root is not None else path
    if root is None and not base.exists():
        try:
            base.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise disk_error(base, exc) from None
    rel = path.relative_to(base).parts
    steps = [base, *(base.joinpath(*rel[: i + 1]) for i in range(len(rel)))]
    for i, current in enumerate(steps):
        try:
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                os.mkdir(current, 0o755)
                st = os.lstat(current)
            if not stat.S_ISDIR(st.st_mode):
                if i == 0:
                    raise TamperError(
                        f"{current} is {kind_of(st.st_mode)}, not a directory of this state directory",
                        hint="someone changed the state directory: remove it, then install again",
                    )
                _clear(current)
                os.unlink(current)
                os.mkdir(current, 0o755)
                st = os.lstat(current)
        except OSError as exc:
            raise disk_error(current, exc) from None
        if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
            raise TamperError(
                f"{current} belongs to uid {st.st_uid}, not to this process: airgap writes only "
                "into directories it owns",
                hint="someone changed the state directory: remove that directory, then install again",
            )
    return path


def link_into(blob: Path, target: Path, copy: bool = False) -> None:
    """``target`` becomes the store's ``blob``, read-only: a hard link (the blob is 0444), or a
    read-only copy with ``copy`` (for a caller that goes on to change the tree) or where no link
    can be made (another file system, a file system without links). The temporary name is fresh
    and created exclusively; the parent directory is already ``private_dir``."""
    tmp: Path | None = None
    try:
        if not copy:
            while tmp is None:
                candidate = target.with_name(f".airgap-{secrets.token_hex(8)}.part")
                try:
                    os.link(blob, candidate, follow_symlinks=False)
                    tmp = candidate
                    if not stat.S_ISREG(os.lstat(tmp).st_mode):
                        # The blob was swapped for something else since it was re-hashed.
                        raise TamperError(f"{blob} changed in the blob store while it was installed")
                except FileExistsError:
                    continue
                except OSError as exc:
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                        raise
                    break
        if tmp is None:
            fd, tmp = _temp_beside(target)
            with os.fdopen(fd, "wb") as out, _open_regular(blob) as src:
                shutil.copyfileobj(src, out, CHUNK)
                os.fchmod(out.fileno(), READ_ONLY)
        _clear(target)
        os.replace(tmp, target)
        # rename(2) of a link onto another link of the same file does nothing and succeeds: a
        # target already linked to this blob (the same bundle installed again) leaves tmp behind.
        tmp.unlink(missing_ok=True)
    except OSError as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise disk_error(target, exc) from None
    except TamperError:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise


def _open_regular(path: Path) -> BinaryIO:
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path} is not a regular file")
    return os.fdopen(fd, "rb")


def disk_error(path: Path, exc: OSError) -> EnvironmentFailure:
    """A write on the far side failed: the disk is full, read-only, or not ours (exit 5)."""
    reason = exc.strerror or str(exc)
    hint = "free space in the state directory (or choose another --state-dir), then install again"
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        hint = "check the permissions of the state directory (or choose another --state-dir)"
    return EnvironmentFailure(f"cannot write {path}: {reason}", hint=hint)


def store_problem(path: Path, hexd: str, size: int, keep: bool = False) -> tuple[str | None, bytes | None]:
    """Whether the store file ``path`` is the blob ``hexd`` of ``size`` bytes: (None, its content if
    ``keep``) when it is, else (why not, None). The store is hostile ground: the name is ``lstat``-ed
    before anything is opened (a directory, link, FIFO or device is "not a regular file", never
    opened, never waited on), the size from ``stat`` is compared before a byte is hashed (a huge
    sparse file costs one ``stat``), and the file opened is the one that was ``lstat``-ed."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "is missing", None
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})", None
    if not stat.S_ISREG(st.st_mode):
        return f"is {kind_of(st.st_mode)}, not a regular file", None
    if st.st_size != size:
        return f"is {st.st_size} bytes, not {size}", None
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})", None
    with os.fdopen(fd, "rb") as fh:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(now.st_mode):
            return "changed while it was read", None
        h = hashlib.sha256()
        seen = 0
        buf = bytearray() if keep else None
        try:
            # Never more than the size stat gave, plus one byte to see a file that grew.
            while seen <= size:
                block = fh.read(min(CHUNK, size + 1 - seen))
                if not block:
                    break
                h.update(block)
                seen += len(block)
                if buf is not None:
                    buf += block
        except OSError as exc:
            return f"cannot be read ({exc.strerror or exc})", None
    if seen != size:
        return f"changed size while it was read ({seen} bytes, not {size})", None
    digest = h.hexdigest()
    if digest != hexd:
        return f"has other content (sha256 {digest[:16]}…, {seen} bytes)", None
    return None, bytes(buf) if buf is not None else None


def reusable(path: Path, hexd: str, size: int) -> bool:
    """Whether the store already holds the blob ``hexd`` of ``size`` bytes at ``path`` (re-hashed:
    a store file is never trusted by its name); if so it is made read-only, as installed blobs are."""
    if store_problem(path, hexd, size)[0] is not None:
        return False
    with contextlib.suppress(OSError):
        if stat.S_IMODE(os.lstat(path).st_mode) != READ_ONLY:
            os.chmod(path, READ_ONLY, follow_symlinks=False)
    return True


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
    """Writes ``member``'s content to ``target`` (atomically, read-only), decompressing within the
    signed size; raises TamperError unless the bytes are exactly the ones ``entry`` signed. The
    temporary file is fresh (``O_EXCL|O_NOFOLLOW``) in ``target``'s directory, which the caller
    made ``private_dir``; whatever was at ``target`` is replaced, never written through."""
    stored = hashlib.sha256()
    tmp: Path | None = None
    try:
        fd, tmp = _temp_beside(target)
        with os.fdopen(fd, "wb") as out:
            if entry.compression:
                import zstandard  # only compressed members need it: not imported at start-up

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
            os.fchmod(out.fileno(), READ_ONLY)
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
        _clear(target)
        os.replace(tmp, target)
    except OSError as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise disk_error(target, exc) from None
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise
