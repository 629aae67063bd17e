"""The bundle's container: a plain POSIX tar, written deterministically and read strictly.

Writing: headers are made by ``tarfile.TarInfo`` (PAX where a name needs it) with owner 0:0, no
user or group names, mode 0644 and mtime SOURCE_DATE_EPOCH; content is streamed in chunks. The
stream can be cut into parts of a fixed size, each hashed as it is written.

Reading: a small parser that accepts only what the writer produces — regular files, with ustar
or PAX ``x`` headers — and refuses everything else by name: links, devices, FIFOs, directories,
global headers, GNU long-name records, bad checksums, names that escape. It never seeks and never
writes: the verifier hashes members as they stream past.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from airgap.core.bundle_format import check_member_path
from airgap.errors import EnvironmentFailure, IntegrityError, InvalidInputError

BLOCK = 512
RECORD = 20 * BLOCK
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
    name: str
    size: int
    sha256: str


class PartSink:
    """A byte sink that writes one file, or consecutive parts of at most ``part_size`` bytes.

    Everything is written to hidden temporary names and renamed into place by ``commit``, so a
    failed pack leaves nothing that looks like a bundle.
    """

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

    def commit(self) -> list[PartInfo]:
        self._close_current()
        for tmp, final in self._tmp:
            os.replace(tmp, final)
        return self.parts

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
        for tmp, _ in self._tmp:
            tmp.unlink(missing_ok=True)


class TarWriter:
    """Deterministic tar members into a sink."""

    def __init__(self, sink: PartSink, epoch: int, root: str) -> None:
        self.sink = sink
        self.epoch = epoch
        self.root = root

    def _header(self, path: str, size: int) -> bytes:
        ti = tarfile.TarInfo(f"{self.root}/{path}")
        ti.size = size
        ti.mtime = self.epoch
        ti.mode = 0o644
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        ti.type = tarfile.REGTYPE
        return ti.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")

    def add_bytes(self, path: str, data: bytes) -> None:
        self.sink.write(self._header(path, len(data)))
        self.sink.write(data)
        self.sink.write(b"\0" * (-len(data) % BLOCK))

    def add_file(self, path: str, source: Path, size: int) -> None:
        self.sink.write(self._header(path, size))
        remaining = size
        buf = bytearray(CHUNK)
        with open(source, "rb") as fh:
            while remaining:
                n = fh.readinto(memoryview(buf)[: min(CHUNK, remaining)])
                if not n:
                    raise IntegrityError(f"{source} shrank while it was being packed")
                self.sink.write(memoryview(buf)[:n])
                remaining -= n
        self.sink.write(b"\0" * (-size % BLOCK))

    def close(self) -> None:
        self.sink.write(b"\0" * (2 * BLOCK))
        self.sink.write(b"\0" * (-self.sink.total % RECORD))


# --------------------------------------------------------------------------------------- reading
@dataclass
class Member:
    name: str
    size: int
    remaining: int = field(repr=False, default=0)


class TarReader:
    """A strict, forward-only reader of the tar stream ``stream`` (a file or concatenated parts)."""

    def __init__(self, stream: BinaryIO, root: str, max_members: int = 1_000_000) -> None:
        self.stream = stream
        self.root = root
        self.max_members = max_members
        self.count = 0
        self._current: Member | None = None
        self.ended = False

    def _read_exact(self, n: int) -> bytes:
        data = self.stream.read(n)
        if len(data) != n:
            raise IntegrityError("the bundle is truncated: the archive ends in the middle of a member")
        return bytes(data)

    def _skip_rest(self) -> None:
        m = self._current
        if m is None:
            return
        while m.remaining:
            chunk = self.stream.read(min(CHUNK, m.remaining))
            if not chunk:
                raise IntegrityError("the bundle is truncated")
            m.remaining -= len(chunk)
        pad = -m.size % BLOCK
        if pad:
            self._read_exact(pad)
        self._current = None

    def next(self) -> Member | None:
        """The next member's header, or None at the end of the archive."""
        self._skip_rest()
        if self.ended:
            return None
        pax: dict[str, str] = {}
        while True:
            header = self.stream.read(BLOCK)
            if len(header) == 0 and self.count == 0:
                raise InvalidInputError("the file is empty: not a bundle")
            if len(header) != BLOCK:
                raise IntegrityError("the bundle is truncated: no end-of-archive marker")
            if header == b"\0" * BLOCK:
                self.ended = True
                self._check_trailer()
                return None
            if self.count == 0 and header[257:262] != b"ustar":
                raise InvalidInputError("not a bundle: the file is not a tar archive")
            _check_checksum(header)
            typeflag = header[156:157]
            size = _octal(header[124:136])
            if typeflag == b"x":
                if size > 1 << 20:
                    raise IntegrityError("a PAX header is implausibly large")
                pax = _parse_pax(self._read_exact(size + (-size % BLOCK))[:size])
                continue
            self.count += 1
            if self.count > self.max_members:
                raise IntegrityError(f"the bundle has more than {self.max_members} members")
            name = pax.get("path") or _name(header)
            if "size" in pax:
                size = int(pax["size"])
            if typeflag in _REFUSED:
                raise IntegrityError(
                    f"member {name!r} is {_REFUSED[typeflag]}; bundles hold regular files only"
                )
            if typeflag not in (b"0", b"\0"):
                raise IntegrityError(f"member {name!r} has unknown type {typeflag!r}")
            if "linkpath" in pax:
                raise IntegrityError(
                    f"member {name!r} carries a link target; bundles hold regular files only"
                )
            prefix = f"{self.root}/"
            if not name.startswith(prefix):
                raise IntegrityError(f"member {name!r} is outside {prefix}: refusing a path that escapes")
            self._current = Member(check_member_path(name[len(prefix) :]), size, size)
            return self._current

    def _check_trailer(self) -> None:
        """Only zero blocks may follow the end marker: appended data is an unlisted file."""
        while True:
            chunk = self.stream.read(CHUNK)
            if not chunk:
                return
            if chunk.count(0) != len(chunk):
                raise IntegrityError(
                    "data follows the end of the archive: something was appended to the bundle"
                )

    def read(self, member: Member, limit: int) -> bytes:
        if member.size > limit:
            raise IntegrityError(f"{member.name} is {member.size} bytes, over the {limit} allowed")
        data = self._read_exact(member.size) if member.size else b""
        member.remaining = 0
        return data

    def chunks(self, member: Member) -> Iterator[bytes | memoryview]:
        """The member's bytes in chunks. A yielded view is only valid until the next one."""
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        readinto = getattr(self.stream, "readinto", None)
        while member.remaining:
            want = min(CHUNK, member.remaining)
            if readinto is not None:
                n = readinto(view[:want])
                if not n:
                    raise IntegrityError(f"the bundle is truncated inside {member.name}")
                member.remaining -= n
                yield view[:n]
            else:
                data = self.stream.read(want)
                if not data:
                    raise IntegrityError(f"the bundle is truncated inside {member.name}")
                member.remaining -= len(data)
                yield data


def _check_checksum(header: bytes) -> None:
    stored = header[148:156]
    try:
        expected = int(stored.replace(b"\0", b" ").strip() or b"0", 8)
    except ValueError:
        raise IntegrityError("a tar header has a malformed checksum") from None
    actual = sum(header[:148]) + 8 * 32 + sum(header[156:])
    if actual != expected:
        raise IntegrityError("a tar header is corrupt (checksum mismatch)")


def _octal(field: bytes) -> int:
    text = field.replace(b"\0", b" ").strip()
    if text[:1] and text[0] & 0x80:
        raise IntegrityError("a tar header uses base-256 sizes, which bundles never need")
    try:
        return int(text or b"0", 8)
    except ValueError:
        raise IntegrityError("a tar header has a malformed size") from None


def _name(header: bytes) -> str:
    name = header[0:100].split(b"\0", 1)[0]
    prefix = header[345:500].split(b"\0", 1)[0]
    full = prefix + b"/" + name if prefix else name
    try:
        return full.decode("utf-8")
    except UnicodeDecodeError:
        raise IntegrityError("a member name is not UTF-8") from None


def _parse_pax(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            raise IntegrityError("a PAX header is malformed")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise IntegrityError("a PAX header is malformed") from None
        record = data[space + 1 : pos + length - 1]
        key, sep, value = record.partition(b"=")
        if not sep or length <= 0:
            raise IntegrityError("a PAX header is malformed")
        out[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        pos += length
    return out


class ConcatenatedParts:
    """Reads parts one after another as one stream, hashing each part as it goes.

    When a part ends, its digest is compared with the signed index at once, so a bad copy is named
    by the part that carries it, before anything after it is read.
    """

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
                raise IntegrityError(
                    f"part {self.index + 1} of {len(self.expected)} ({name}) is damaged: "
                    f"{self.read_in_part} bytes with sha256 {self.hash.hexdigest()[:16]}…, "
                    f"expected {size} bytes with {sha[:16]}…",
                    hint=f"copy {name} again from the original media, then re-run",
                )
        self.index += 1
        self.fh = None
        if self.index < len(self.paths):
            try:
                self.fh = open(self.paths[self.index], "rb")  # noqa: SIM115 - closed in _advance
            except OSError as exc:
                name = self.expected[self.index][0]
                raise IntegrityError(
                    f"part {self.index + 1} ({name}) cannot be read: {exc.strerror}"
                ) from None
            self.hash = hashlib.sha256()
            self.read_in_part = 0

    def read(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n and self.fh is not None:
            data = self.fh.read(n - len(out))
            if not data:
                self._advance()
                continue
            self.hash.update(data)
            self.read_in_part += len(data)
            out += data
        return bytes(out)

    def finish(self) -> None:
        """Reads whatever the tar reader left (padding), closing and checking the last parts."""
        while self.fh is not None:
            if not self.read(CHUNK):
                break
