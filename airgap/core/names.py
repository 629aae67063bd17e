"""The one rule for every name the far side creates from a bundle: files of the v1 archive and of
the v2 map, split parts, parity parts, evidence files. See docs/bundle-format.md, "Names".

A name that passes here can be laid out on any POSIX file system, a case-insensitive one (the FAT32
or exFAT of the media, a macOS disk) included, by airgap, by ``tar -x`` and by the by-hand recipe,
and means the same file to all of them. So the packer refuses to write what this refuses, and the
verifier refuses (exit 4, naming the entry) what the installer could not lay out: a verify that
passed is never followed by an install that fails on a name.

Pure: strings in, the same strings or ``UnsafeName`` out.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

from airgap.errors import InvalidInputError

MAX_PATH = 512  # bytes of a whole relative path
MAX_SEGMENT = 255  # bytes of one segment: NAME_MAX of every file system the far side uses
MAX_DEPTH = 32  # segments of one path
# Letters, digits and ``_+@=,~`` may start a segment; ``.`` and ``-`` may follow. A leading dot
# would hide a file from ``ls`` and collide with the installer's own temporary names
# (``.NAME.part``); a leading dash would be read as an option by the by-hand commands.
_SEGMENT = re.compile(r"[A-Za-z0-9_+@=,~][A-Za-z0-9._+@=,~-]*")
CHARACTERS = "A-Z a-z 0-9 . _ + @ = , ~ -"
# The control files of every format. They are reserved at the top of the tree, where they live; the
# signatures and the sums file at every depth too (a reviewer runs ``sha256sum -c`` and ``openssl``
# on files of these names). ``manifest.json`` is allowed below the top: an OCI image layout carries
# the Docker archive's own ``image/oci/manifest.json``.
CONTROL_NAMES = ("manifest.json", "manifest.json.sig", "SHA256SUMS", "SHA256SUMS.sig")
RESERVED_EVERYWHERE = ("manifest.json.sig", "SHA256SUMS", "SHA256SUMS.sig")
# Top-level names of an installed tree that belong to the installer: a target writes what it
# renders for the runtime into ``deploy/`` beside the bundle's files.
INSTALLER_NAMES = ("deploy",)


class UnsafeName(InvalidInputError):
    """A name the far side would refuse to create (exit 4); ``entry`` is the name as given."""

    def __init__(self, entry: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.entry = entry


def shown(name: str) -> str:
    """A name as an error quotes it: Python's escaped spelling (control characters, bidi marks and
    quotes visible), cut short."""
    text = repr(name)
    return text if len(text) <= 160 else text[:157] + "…'"


def twin_key(name: str) -> str:
    """What two names share when some file system would make them one file: the same letters
    after Unicode compatibility normalisation (NFKC, which covers NFC) and case folding."""
    return unicodedata.normalize("NFKC", name).casefold()


def _reserved(reserved: Iterable[str]) -> frozenset[str]:
    return frozenset(twin_key(r) for r in reserved)


_EVERYWHERE = _reserved(RESERVED_EVERYWHERE)


def segment_problem(segment: str) -> str | None:
    """Why ``segment`` cannot be one segment of a name, or None when it can."""
    if segment == "":
        return "an empty segment (// or a trailing /)"
    if segment in (".", ".."):
        return f"the segment {segment!r}"
    if len(segment.encode("utf-8", "surrogatepass")) > MAX_SEGMENT:
        return f"a segment over {MAX_SEGMENT} bytes"
    if segment[0] in ".-":
        return f"a segment starting with {segment[0]!r}"
    if not _SEGMENT.fullmatch(segment):
        bad = next((c for c in segment if not _SEGMENT.fullmatch("a" + c)), segment[0])
        spelled = repr(bad) if " " <= bad <= "~" else f"U+{ord(bad):04X}"
        return f"the character {spelled}, which is not one of {CHARACTERS}"
    if twin_key(segment) in _EVERYWHERE:
        return f"the reserved name {segment!r} (a control file's name)"
    return None


def check_path(path: str, what: str = "path", top_reserved: Sequence[str] = CONTROL_NAMES) -> str:
    """``path`` itself, if it is a relative ``/``-separated name the far side can create: plain
    segments of the documented characters, within the length limits, no control file's name.
    ``top_reserved`` are names (compared ignoring case) its first segment may not have."""
    if not isinstance(path, str) or not path:
        raise UnsafeName(str(path), f"unsafe {what}: an empty name")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH:
        raise UnsafeName(path, f"unsafe {what}: {shown(path)}, longer than {MAX_PATH} bytes")
    if path.startswith("/"):
        raise UnsafeName(path, f"unsafe {what}: {shown(path)}, which is absolute")
    segments = path.split("/")
    if len(segments) > MAX_DEPTH:
        raise UnsafeName(path, f"unsafe {what}: {shown(path)}, deeper than {MAX_DEPTH} directories")
    for segment in segments:
        problem = segment_problem(segment)
        if problem:
            raise UnsafeName(path, f"unsafe {what}: {shown(path)}, which has {problem}")
    if twin_key(segments[0]) in _reserved(top_reserved):
        raise UnsafeName(
            path,
            f"unsafe {what}: {shown(path)}, whose {segments[0]!r} is reserved at the top of a bundle "
            f"({', '.join(top_reserved)}, in any case)",
        )
    return path


def check_file_name(name: str, what: str = "file name") -> str:
    """A single name the far side creates beside the bundle (a part, a parity part, an evidence
    file): one segment by the same rule, with no control file's name."""
    if isinstance(name, str) and "/" in name:
        raise UnsafeName(name, f"unsafe {what}: {shown(name)}, which names a directory")
    return check_path(name, what)


def is_file_name(name: str) -> bool:
    """Whether ``name`` passes ``check_file_name``: for a parser that words its own refusal."""
    try:
        check_file_name(name)
    except UnsafeName:
        return False
    return True


def check_tree(paths: Iterable[str], what: str = "path", top_reserved: Sequence[str] = CONTROL_NAMES) -> None:
    """Every path passes ``check_path``, and together they can all be laid out as one tree: none
    twice, no two that are one name to a case-insensitive or normalising file system, and no
    file that is also a directory of another (``model/a`` and ``model/a/b``)."""
    files: dict[str, str] = {}
    directories: dict[str, str] = {}
    for path in paths:
        check_path(path, what, top_reserved)
        key = twin_key(path)
        other = files.get(key)
        if other is not None:
            if other == path:
                raise UnsafeName(path, f"the {what} {shown(path)} is listed twice")
            raise UnsafeName(
                path,
                f"the {what}s {shown(other)} and {shown(path)} are the same file once extracted "
                "on a case-insensitive file system",
            )
        files[key] = path
        segments = key.split("/")
        for depth in range(1, len(segments)):
            directories.setdefault("/".join(segments[:depth]), path)
    for key, path in files.items():
        under = directories.get(key)
        if under is not None:
            raise UnsafeName(
                path,
                f"the {what} {shown(path)} is a file, and {shown(under)} needs it to be a directory: "
                "no file system can hold both",
            )
