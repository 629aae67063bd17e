"""The bytes of a v1 bundle's tar container, as pure functions shared by the packer and the verifier.

A bundle's archive holds no free choice: given a member's name, its size and the manifest's
``created`` time, its header is exactly ``member_header(...)``; its data is followed by zeros to
the next 512-byte block; the archive ends with exactly ``end_of_archive_length(...)`` zero bytes.
The packer writes these bytes and the verifier regenerates and compares them, so the two cannot
drift apart, and a third party can reproduce them from docs/bundle-format.md ("Byte-exact rule").

The headers are what Python's ``tarfile`` writes in PAX format for such a member (so any tar
reads them), but spelled out here, so that a change in a Python release cannot change them.

The parsers are strict and typed: they read only what such headers can contain (octal digits
terminated by NUL or space, decimal PAX lengths without signs, underscores or leading zeros,
only the ``path`` and ``size`` records) and raise ``TamperError`` (an ``IntegrityError``) on
anything else, before a number is used to size a read.
"""

from __future__ import annotations

import datetime as dt
import re

from airgap.errors import InvalidInputError, TamperError

BLOCK = 512
RECORD = 20 * BLOCK
USTAR_MAGIC = b"ustar\x0000"  # magic "ustar\0" then version "00": POSIX.1-1988 ustar / pax
PAX_HEADER_NAME = b"././@PaxHeader"
NAME_FIELD = 100
OCTAL_LIMIT = 8**11  # an 11-digit octal field holds 0 .. 8**11 - 1 (8 GiB - 1 for a size)
MAX_MEMBER_SIZE = 1 << 50  # the largest size a manifest may list
MAX_PAX = 4 * BLOCK  # a bundle's PAX data is a path (at most 520 bytes) and a size
MEMBER_MODE = 0o644
PAX_KEYS = ("path", "size")

# (start, length, name) of every field of a ustar header block.
FIELDS = (
    (0, 100, "name"),
    (100, 8, "mode"),
    (108, 8, "uid"),
    (116, 8, "gid"),
    (124, 12, "size"),
    (136, 12, "mtime"),
    (148, 8, "checksum"),
    (156, 1, "typeflag"),
    (157, 100, "linkname"),
    (257, 6, "magic"),
    (263, 2, "version"),
    (265, 32, "uname"),
    (297, 32, "gname"),
    (329, 8, "devmajor"),
    (337, 8, "devminor"),
    (345, 155, "prefix"),
    (500, 12, "unused tail"),
)
_OCTAL = re.compile(rb"([0-7]+)[\0 ]*")
_DECIMAL = re.compile(rb"0|[1-9][0-9]{0,19}")


# ------------------------------------------------------------------------------------- writing
def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def ustar_block(name: bytes, size: int, mtime: int, mode: int, typeflag: bytes) -> bytes:
    """One ustar header block: owner 0:0, no user or group names, no device numbers, no prefix.

    The checksum is six octal digits, a NUL and a space, as tarfile and GNU tar write it.
    """
    if not 0 <= size < OCTAL_LIMIT or not 0 <= mtime < OCTAL_LIMIT:
        raise ValueError("a number does not fit its ustar field")
    block = bytearray(BLOCK)
    block[0 : min(len(name), NAME_FIELD)] = name[:NAME_FIELD]
    block[100:108] = _octal(mode, 8)
    block[108:116] = _octal(0, 8)
    block[116:124] = _octal(0, 8)
    block[124:136] = _octal(size, 12)
    block[136:148] = _octal(mtime, 12)
    block[148:156] = b" " * 8
    block[156:157] = typeflag
    block[257:265] = USTAR_MAGIC
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def pax_record(key: str, value: str) -> bytes:
    """``LEN key=value\\n`` where LEN, in decimal, counts the whole record including itself."""
    body = f" {key}={value}\n".encode()
    length = len(body)
    while len(body) + len(str(length)) != length:
        length = len(body) + len(str(length))
    return str(length).encode() + body


def member_header(name: str, size: int, mtime: int) -> bytes:
    """Every byte of the archive before a member's data: the header the packer writes.

    A PAX ``x`` header comes first only where ustar cannot hold a value: ``path`` when the name is
    over 100 bytes (the ustar name field then holds its first 100 bytes), ``size`` when the size is
    8 GiB or more (the ustar size field then holds 0). Names are ASCII (see ``check_member_path``).
    """
    raw = name.encode("ascii")
    if not 0 <= size <= MAX_MEMBER_SIZE:
        raise ValueError(f"size {size} out of range")
    records = b""
    if len(raw) > NAME_FIELD:
        records += pax_record("path", name)
    ustar_size = size
    if size >= OCTAL_LIMIT:
        records += pax_record("size", str(size))
        ustar_size = 0
    out = b""
    if records:
        out = ustar_block(PAX_HEADER_NAME, len(records), 0, 0, b"x") + records + zero_padding(len(records))
    return out + ustar_block(raw, ustar_size, mtime, MEMBER_MODE, b"0")


def padding_length(size: int) -> int:
    """Zeros after ``size`` bytes of data, to the next block."""
    return -size % BLOCK


def zero_padding(size: int) -> bytes:
    """The zero bytes that fill a member's data out to the next 512-byte block, as the packer writes them and
    the reader requires them."""
    return b"\0" * padding_length(size)


def end_of_archive_length(offset: int) -> int:
    """Zero bytes that end an archive whose last member ends at ``offset``: two zero blocks, then
    zeros to a multiple of the 10240-byte record. Nothing follows them."""
    return 2 * BLOCK + (-(offset + 2 * BLOCK) % RECORD)


def mtime_of(created: str) -> int:
    """The member mtime a manifest determines: its ``created`` instant, in whole seconds."""
    try:
        when = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError(f"manifest: created {created[:40]!r} is not a timestamp") from None
    if when.tzinfo is None or when.microsecond:
        raise InvalidInputError(f"manifest: created {created[:40]!r} is not a whole-second UTC time")
    seconds = int(when.timestamp())
    if not 0 <= seconds < OCTAL_LIMIT:
        raise InvalidInputError(f"manifest: created {created[:40]!r} is out of range")
    return seconds


# ------------------------------------------------------------------------------------- reading
def parse_octal(value: bytes, what: str) -> int:
    """A ustar number: octal digits, then only NULs or spaces. No sign, no base-256, no blanks first."""
    m = _OCTAL.fullmatch(value)
    if not m:
        shown = value.rstrip(b"\0")[:16]
        raise TamperError(f"{what} is not an octal number: {shown!r}")
    return int(m.group(1), 8)


def header_checksum(block: bytes) -> int:
    """The unsigned sum of the block with the checksum field counted as eight spaces."""
    return sum(block[:148]) + 8 * 32 + sum(block[156:])


def parse_pax(data: bytes, where: str) -> dict[str, str]:
    """The records of a bundle's PAX header: only ``path`` and ``size``, each at most once."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos, pos + 21)
        if space < 0 or not _DECIMAL.fullmatch(data[pos:space]):
            raise TamperError(f"{where}: a PAX record length is malformed")
        end = pos + int(data[pos:space])
        if end <= space + 1 or end > len(data) or data[end - 1] != 0x0A:
            raise TamperError(f"{where}: a PAX record does not end where its length says")
        key, sep, value = data[space + 1 : end - 1].partition(b"=")
        name = key.decode("ascii", "backslashreplace")[:40]
        if not sep or name not in PAX_KEYS:
            raise TamperError(
                f"{where}: PAX record {name!r} is not allowed (bundles carry only path and size)"
            )
        if name in out:
            raise TamperError(f"{where}: PAX record {name!r} appears twice")
        if name == "size" and (not _DECIMAL.fullmatch(value) or int(value) > MAX_MEMBER_SIZE):
            raise TamperError(f"{where}: PAX size {value[:24]!r} is not a decimal size")
        try:
            out[name] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise TamperError(f"{where}: PAX {name} is not UTF-8") from None
        pos = end
    return out


def describe_offset(expected: bytes, index: int) -> str:
    """Names what lies at ``index`` of a member's expected header bytes, for an error message."""
    if index >= len(expected):
        return "after the end of the expected header"
    pax_len = len(expected) - BLOCK
    if pax_len and index >= BLOCK and index < pax_len:
        return "PAX records" if index < BLOCK + int(parse_octal(expected[124:136], "size")) else "PAX padding"
    block = "PAX header" if pax_len and index < BLOCK else "header"
    at = index - (pax_len if index >= pax_len else 0)
    for start, length, field in FIELDS:
        if start <= at < start + length:
            return f"{block} field {field}"
    return block  # pragma: no cover - FIELDS spans the block


def differing_fields(actual: bytes, expected: bytes) -> list[str]:
    """Every part of the expected header that the actual bytes do not match, in order."""
    out: list[str] = []
    for i in range(max(len(actual), len(expected))):
        if i >= len(actual) or i >= len(expected) or actual[i] != expected[i]:
            what = describe_offset(expected, i)
            if what not in out:
                out.append(what)
    return out


def first_difference(actual: bytes, expected: bytes) -> int | None:
    """The index of the first byte where the two differ (or where the shorter ends), or None."""
    if actual == expected:
        return None
    for i, (a, b) in enumerate(zip(actual, expected)):
        if a != b:
            return i
    return min(len(actual), len(expected))
