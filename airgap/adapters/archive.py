"""The bundle's container: a plain POSIX tar, written deterministically and read strictly.

Writing: every header is ``core.tar_format.member_header`` (the one function the verifier also
uses to regenerate it), content is streamed in chunks, padding and the end of the archive are the
zeros the format fixes. The stream can be cut into parts of a fixed size, each hashed as it is
written.

Reading: a small parser that accepts only what the writer produces — regular files, with ustar or
PAX ``x`` headers carrying only ``path`` and ``size`` — and refuses everything else by name:
links, devices, FIFOs, directories, global headers, GNU records, bad checksums, malformed
numbers, non-zero padding, anything after the end, names that escape. It never seeks and never
writes: the verifier hashes members as they stream past. Only regular files are opened.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from airgap.adapters.timed_reader import READ_AHEAD as READ_AHEAD
from airgap.adapters.timed_reader import TimedReader as TimedReader
from airgap.core.bundle_format import check_member_path
from airgap.core.tar_format import (
    BLOCK,
    MAX_MEMBER_SIZE,
    MAX_PAX,
    NAME_FIELD,
    USTAR_MAGIC,
    end_of_archive_length,
    header_checksum,
    member_header,
    padding_length,
    parse_octal,
    parse_pax,
    zero_padding,
)
from airgap.errors import EnvironmentFailure, InvalidInputError, TamperError

CHUNK = 1 << 20
_REFUSED = {
    b"1": "a hard link",
    b"2": "a symbolic link",
    b"3": "a character device",
    b"4": "a block device",
    b"5": "a directory",
    b"6": "a FIFO",
    b"7": "a contiguous file",
    b"g": "a global PAX header",
    b"L": "a GNU long-name record",
    b"K": "a GNU long-link record",
    b"S": "a sparse file",
}


# --------------------------------------------------------------------------------------- writing
@dataclass
class PartInfo:
    """One file the packer wrote (archive or media part), as the signed parts index lists it."""

    name: str
    size: int
    sha256: str


class PartSink:
    """A byte sink that writes one file, or consecutive parts of at most ``part_size`` bytes.
    Everything is written to hidden temporary names and renamed into place by ``commit``, so a
    failed pack leaves nothing that looks like a bundle."""

    def __init__(self, directory: Path, base_name: str, part_size: int | None) -> None:
        self.directory = directory
        self.base_name = base_name
        self.part_size = part_size
        self.parts: list[PartInfo] = []
        self.total = 0
        self._fh: BinaryIO | None = None
        self._hash = hashlib.sha256()
        self._written = 0
        self._tmp: list[tuple[Path, Path]] = []
        self._open_next()

    def _final_name(self, index: int) -> str:
        return self.base_name if self.part_size is None else f"{self.base_name}.part-{index:03d}"

    def _open_next(self) -> None:
        name = self._final_name(len(self._tmp))
        tmp = self.directory / f".{name}.tmp"
        try:
            self._fh = open(tmp, "wb")  # noqa: SIM115 - closed in _close_current
        except OSError as exc:
            raise EnvironmentFailure(f"cannot write {tmp}: {exc.strerror}") from None
        self._tmp.append((tmp, self.directory / name))
        self._hash = hashlib.sha256()
        self._written = 0

    def _close_current(self) -> None:
        assert self._fh is not None
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._fh = None
        final = self._tmp[-1][1]
        self.parts.append(PartInfo(final.name, self._written, self._hash.hexdigest()))

    def write(self, data: bytes | memoryview) -> None:
        """Appends bytes, cutting parts at exactly ``part_size``; a failed write is an environment failure."""
        view = memoryview(data)
        while view:
            if self.part_size is not None and self._written == self.part_size:
                self._close_current()
                self._open_next()
            room = len(view) if self.part_size is None else min(len(view), self.part_size - self._written)
            chunk = view[:room]
            assert self._fh is not None
            try:
                self._fh.write(chunk)
            except OSError as exc:
                raise EnvironmentFailure(
                    f"writing the bundle failed: {exc.strerror}", hint="free some space"
                ) from None
            self._hash.update(chunk)
            self._written += room
            self.total += room
            view = view[room:]

    def close(self) -> list[Path]:
        """Finishes the last part; the temporary files, in order, for a pass over them (parity)
        before ``commit`` moves them into place."""
        if self._fh is not None:
            self._close_current()
        return [tmp for tmp, _ in self._tmp]

    def commit(self) -> list[PartInfo]:
        """Moves the finished temporary files into place: the bundle appears only once it is all on disk."""
        self.close()
        for tmp, final in self._tmp:
            os.replace(tmp, final)
        return self.parts

    def abort(self) -> None:
        """Removes every temporary file, so a failed or interrupted pack leaves nothing behind."""
        if self._fh is not None:
            self._fh.close()
        for tmp, _ in self._tmp:
            tmp.unlink(missing_ok=True)


class TarWriter:
    """Deterministic tar members into a sink: the bytes ``core.tar_format`` fixes, nothing else."""

    def __init__(self, sink: PartSink, epoch: int, root: str) -> None:
        self.sink = sink
        self.epoch = epoch
        self.root = root

    def _header(self, path: str, size: int) -> bytes:
        return member_header(f"{self.root}/{path}", size, self.epoch)

    def add_bytes(self, path: str, data: bytes) -> None:
        """One member: the header the verifier regenerates, ``data``, then zeros to the block."""
        self.sink.write(self._header(path, len(data)))
        self.sink.write(data)
        self.sink.write(zero_padding(len(data)))

    def close(self) -> None:
        """Ends the archive with exactly the zero blocks and record padding the reader requires."""
        self.sink.write(b"\0" * end_of_archive_length(self.sink.total))


# --------------------------------------------------------------------------------------- reading
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


def open_regular(path: Path, what: str = "a bundle", buffered: bool = True) -> BinaryIO:
    """Opens ``path`` for reading only if it is a regular file, without blocking on a FIFO.

    Devices, FIFOs, sockets and directories are refused before a byte is read (exit 4). The type
    is checked before opening (a socket cannot be opened at all) and again on the opened
    descriptor, so nothing can be swapped in between. ``buffered=False`` gives the raw file: its
    reads hold no lock, so a read stalled in another thread cannot make anything else wait.
    """
    try:
        _require_regular(path, os.stat(path).st_mode, what)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InvalidInputError(f"{path} does not exist", hint=f"name {what}") from None
    except NotADirectoryError:
        raise InvalidInputError(f"{path} does not exist (a parent is not a directory)") from None
    except PermissionError:
        # The user's argument, like a path that does not exist: exit 4, not the media's fault.
        raise InvalidInputError(
            f"cannot read {path}: permission denied", hint="make it readable by this user"
        ) from None
    except OSError as exc:
        raise EnvironmentFailure(
            f"cannot open {path}: {exc.strerror}", hint="check the permissions and the media"
        ) from None
    try:
        _require_regular(path, os.fstat(fd).st_mode, what)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=-1 if buffered else 0)
    except BaseException:
        os.close(fd)
        raise


def _require_regular(path: Path, mode: int, what: str) -> None:
    if not stat.S_ISREG(mode):
        kind = next((k for test, k in _KINDS if test(mode)), "not a regular file")
        raise InvalidInputError(f"{path} is {kind}, not {what}: only regular files are read")


def read_small(path: Path, limit: int, what: str) -> bytes:
    """The whole of a small regular file (an index, a signature), refusing one over ``limit`` bytes."""
    with open_regular(path, what) as fh:
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise EnvironmentFailure(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise TamperError(f"{path.name} is over {limit} bytes: it is not {what}")
    return data


@dataclass
class Member:
    """A member's parsed header. ``header`` holds every byte from ``offset`` up to its data, as
    read, so that the verifier can compare it with the header the manifest determines."""

    name: str
    size: int
    offset: int = 0
    header: bytes = field(repr=False, default=b"")
    remaining: int = field(repr=False, default=0)


class TarReader:
    """A strict, forward-only reader of the tar stream ``stream`` (a file or concatenated parts).

    It enforces what the format alone decides: every header is POSIX ustar with a correct checksum
    and an empty prefix; numbers are strictly typed; a PAX header carries only ``path`` and
    ``size`` and is followed by a member; padding is zeros; the archive ends with exactly the zero
    blocks and record padding the format requires, and nothing follows. Every read is sized by a
    checked number. Errors name the byte offset in the archive. When ``first`` is given, an archive
    whose first member is not that one is not a bundle at all (exit 4).
    """

    def __init__(
        self, stream: BinaryIO, root: str, max_members: int = 1_000_000, first: str | None = None
    ) -> None:
        self.stream = stream
        self.root = root
        self.max_members = max_members
        self.first = first
        self.count = 0
        self.offset = 0
        self._current: Member | None = None
        self.ended = False
        self._chunk: memoryview | None = None  # one buffer for every member's chunks

    def _read(self, n: int) -> bytes:
        try:
            data = self.stream.read(n)
        except OSError as exc:
            raise _read_failure(exc, self.offset) from None
        self.offset += len(data)
        return bytes(data)

    def _read_exact(self, n: int, where: str) -> bytes:
        data = self._read(n)
        if len(data) != n:
            raise TamperError(f"the bundle is truncated at byte {self.offset}, {where}")
        return data

    def _full(self, m: Member) -> str:
        return f"{self.root}/{m.name}"

    def _finish_current(self) -> None:
        m = self._current
        if m is None:
            return
        while m.remaining:
            chunk = self._read(min(CHUNK, m.remaining))
            if not chunk:
                raise TamperError(f"the bundle is truncated at byte {self.offset}, inside {self._full(m)}")
            m.remaining -= len(chunk)
        pad = padding_length(m.size)
        if pad:
            start = self.offset
            data = self._read_exact(pad, f"in the padding after {self._full(m)}")
            _zeros(data, start, f"in the zero padding after the data of {self._full(m)}")
        self._current = None

    def _header_block(self, start: int, where: str) -> bytes:
        block = self._read(BLOCK)
        if len(block) == BLOCK:
            return block
        if start == 0:
            if not block:
                raise InvalidInputError("the file is empty: not an airgap bundle")
            raise InvalidInputError(
                f"not an airgap bundle: the file is {len(block)} bytes, shorter than one tar header"
            )
        raise TamperError(f"the bundle is truncated at byte {self.offset}, {where}")

    def _check_block(self, block: bytes, start: int) -> None:
        if block[257:265] != USTAR_MAGIC:
            if start == 0:
                raise InvalidInputError("not an airgap bundle: the file is not a POSIX tar archive")
            raise TamperError(
                f"the header at byte {start} is not a POSIX ustar header "
                f"(magic {bytes(block[257:265])!r}); bundles hold nothing else"
            )
        stored = parse_octal(block[148:156], f"the checksum of the header at byte {start}")
        if stored != header_checksum(block):
            raise TamperError(f"the header at byte {start} is corrupt (checksum mismatch)")
        if block[345:500].count(0) != 155:
            raise TamperError(
                f"the header at byte {start} fills the ustar prefix field, which bundles never use"
            )

    def next(self) -> Member | None:
        """The next member's header, or None at the (checked) end of the archive."""
        self._finish_current()
        if self.ended:
            return None
        start = self.offset
        block = self._header_block(start, "where a header or the end of the archive was due")
        if block.count(0) == BLOCK:
            if start == 0:
                raise InvalidInputError("not an airgap bundle: the file starts with an empty block")
            self._end(start)
            return None
        self._check_block(block, start)
        raw = block
        pax: dict[str, str] = {}
        typeflag = block[156:157]
        if start == 0 and self.first is not None and typeflag != b"0":
            # The first member of a bundle is a plain ustar regular file: a tar that starts with a
            # PAX, GNU or other header (tar --format=pax, git archive) is some other archive.
            raise InvalidInputError(f"not an airgap bundle: the archive does not start with {self.first}")
        if typeflag == b"x":
            where = f"the PAX header at byte {start}"
            size = parse_octal(block[124:136], f"the size of {where}")
            if size > MAX_PAX:
                raise TamperError(f"{where} is {size} bytes, over the {MAX_PAX} a bundle needs")
            payload = self._read_exact(size + padding_length(size), f"inside {where}")
            _zeros(payload[size:], start + BLOCK + size, f"in the zero padding after {where}")
            pax = parse_pax(payload[:size], where)
            at = self.offset
            member_block = self._header_block(at, f"inside the header after {where}")
            if member_block.count(0) == BLOCK:
                raise TamperError(f"{where} is dangling: no member follows it")
            self._check_block(member_block, at)
            raw = block + payload + member_block
            block = member_block
            typeflag = block[156:157]
            if typeflag in (b"x", b"g"):
                raise TamperError(f"{where} is followed by another PAX header")
        name = pax["path"] if "path" in pax else _name(block, start)
        if self.count == 0 and self.first is not None and name != self.first:
            raise InvalidInputError(f"not an airgap bundle: the archive does not start with {self.first}")
        self.count += 1
        if self.count > self.max_members:
            raise TamperError(f"the bundle has more than {self.max_members} members")
        if typeflag in _REFUSED:
            raise TamperError(f"member {name!r} is {_REFUSED[typeflag]}; bundles hold regular files only")
        if typeflag != b"0":
            raise TamperError(f"member {name!r} has type {typeflag!r}; bundles hold regular files only")
        size = parse_octal(block[124:136], f"the size in the header of {name!r}")
        if "size" in pax:
            size = int(pax["size"])
        if size > MAX_MEMBER_SIZE:
            raise TamperError(f"member {name!r} claims {size} bytes, more than any bundle holds")
        prefix = f"{self.root}/"
        if not name.startswith(prefix):
            raise TamperError(f"member {name!r} is outside {prefix}: refusing a path that escapes")
        self._current = Member(check_member_path(name[len(prefix) :]), size, start, raw, size)
        return self._current

    def next_offset(self) -> int:
        """Where the next header starts: past the rest of the current member and its padding."""
        m = self._current
        if m is None:
            return self.offset
        return self.offset + m.remaining + padding_length(m.size)

    def _end(self, start: int) -> None:
        """Exactly the zero blocks and record padding the format requires, then the end of the file:
        anything else after the last member was added or changed."""
        want = end_of_archive_length(start) - BLOCK
        at = self.offset
        while want:
            chunk = self._read(min(CHUNK, want))
            if not chunk:
                raise TamperError(
                    f"the bundle is truncated at byte {self.offset}, inside the end-of-archive padding "
                    f"({want} bytes missing)"
                )
            _zeros(chunk, at, "in the end-of-archive padding")
            at += len(chunk)
            want -= len(chunk)
        if self._read(1):
            raise TamperError(
                f"data follows the end of the archive at byte {self.offset - 1}: "
                "something was appended to the bundle"
            )
        self.ended = True

    def read(self, member: Member, limit: int) -> bytes:
        """A small member's bytes, refused before reading if its size is over ``limit``."""
        if member.size > limit:
            raise TamperError(f"{self._full(member)} is {member.size} bytes, over the {limit} allowed")
        data = self._read_exact(member.size, f"inside {self._full(member)}") if member.size else b""
        member.remaining = 0
        return data

    def skip(self, member: Member) -> None:
        """Moves past the member's data without reading it where the stream can (a file seeks);
        otherwise reads it through. For a member whose bytes another reader hashes from their
        byte range (adapters/hash_pool.py): a short file still ends the walk as truncated."""
        skip = getattr(self.stream, "skip", None)
        if skip is None:
            seekable = getattr(self.stream, "seekable", None)
            if seekable is None or not seekable():
                for _ in self.chunks(member):
                    pass
                return
            skip = self._seek
        n = int(skip(member.remaining))
        self.offset += n
        member.remaining -= n

    def _seek(self, n: int) -> int:
        try:
            self.stream.seek(n, os.SEEK_CUR)
        except OSError as exc:
            raise _read_failure(exc, self.offset) from None
        return n

    def chunks(self, member: Member) -> Iterator[bytes | memoryview]:
        """The member's bytes in chunks. A yielded view is only valid until the next one (and
        until the next member's: one buffer serves them all, so a walk over many small members
        does not allocate and clear a chunk for each)."""
        if self._chunk is None:
            self._chunk = memoryview(bytearray(CHUNK))
        view = self._chunk
        readinto = getattr(self.stream, "readinto", None)
        while member.remaining:
            want = min(CHUNK, member.remaining)
            try:
                if readinto is not None:
                    n = readinto(view[:want])
                    data: bytes | memoryview = view[:n] if n else b""
                else:
                    data = self.stream.read(want)
                    n = len(data)
            except OSError as exc:
                raise _read_failure(exc, self.offset) from None
            if not n:
                raise TamperError(
                    f"the bundle is truncated at byte {self.offset}, inside {self._full(member)}"
                )
            self.offset += n
            member.remaining -= n
            yield data


def _read_failure(exc: OSError, offset: int) -> EnvironmentFailure:
    return EnvironmentFailure(
        f"reading the bundle failed at byte {offset}: {exc.strerror or exc}",
        hint="check the media (or copy the bundle to a local disk) and re-run",
    )


def _zeros(data: bytes, offset: int, where: str) -> None:
    if data.count(0) != len(data):
        bad = next(i for i, b in enumerate(data) if b)
        raise TamperError(f"byte {offset + bad} {where} is not zero")


def _name(header: bytes, start: int) -> str:
    raw = header[0:NAME_FIELD].split(b"\0", 1)[0]
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise TamperError(f"the member name at byte {start} is not ASCII") from None
