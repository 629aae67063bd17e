"""The ``sha256sum`` file format, read the way ``sha256sum -c`` reads it.

A reviewer checks a split bundle's parts index with ``sha256sum --strict -c``; airgap must read
the very same lines, or a signed index could name one set of parts to airgap and another to the
reviewer. Python's ``splitlines`` splits on far more than a newline (``\\x1c``, ``\\x1d``,
``\\x1e``, ``\\x85``, ``\\u2028``, ``\\v``, ``\\f``, a lone ``\\r``): GNU coreutils does not. So
the lines are cut exactly as coreutils 9 cuts them (``digest.c``):

- on ``\\n`` only; a last line without one is still a line;
- one ``\\r`` right before the end of a line is dropped (a CRLF file checks as the LF one);
- a line ends at its first NUL (the name is a C string);
- empty lines and lines that start with ``#`` are skipped.

On top of that reading, airgap takes only the one spelling its packer writes — 64 lower-case hex
digits, two spaces, the name, ``\\n`` — and refuses any other (``parse_index``): an index that
sha256sum reads in some other way (``*`` binary marks, tabs, escapes, CRLF) never verifies here.
Pure: bytes in, values out.
"""

from __future__ import annotations

import re

from airgap.errors import TamperError

# A split bundle's parts index is such a file, named after the bundle with this suffix (defined
# here, the lightest module that knows it, so a check of a name alone loads no bundle format).
PARTS_INDEX_SUFFIX = ".parts.sha256"

_ENTRY = re.compile(rb"([0-9a-f]{64})  ([^\n]+)")


def sum_lines(data: bytes) -> list[bytes]:
    """The lines ``sha256sum -c`` checks in ``data``, in order, each without its line ending."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the file ends with a newline: no line after it
    out = []
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]
        line = line.split(b"\0", 1)[0]
        if line and not line.startswith(b"#"):
            out.append(line)
    return out


def render_index(entries: list[tuple[str, str]]) -> bytes:
    """``sha256sum`` lines for (name, sha256) pairs, in order: the one spelling airgap writes."""
    return "".join(f"{sha}  {name}\n" for name, sha in entries).encode()


def parse_index(data: bytes, where: str) -> list[tuple[str, str]]:
    """(name, sha256) of each line of a ``sha256sum`` file airgap wrote, in order.

    Read as ``sha256sum -c`` reads it (``sum_lines``), then held to the one spelling the packer
    writes: anything else — another separator, a binary mark, a comment, a blank line, CRLF, a
    missing final newline, a name that is not UTF-8 — is refused (TamperError, exit 3), naming
    ``where``. Names are returned as read; whether one is a safe file name is the caller's rule.
    """
    entries: list[tuple[str, str]] = []
    for number, line in enumerate(sum_lines(data), start=1):
        m = _ENTRY.fullmatch(line)
        try:
            name = m.group(2).decode("utf-8") if m else None
        except UnicodeDecodeError:
            name = None
        if m is None or name is None:
            raise TamperError(
                f"{where} is malformed: line {number} is not `SHA256  NAME` as sha256sum writes it"
            )
        entries.append((name, m.group(1).decode("ascii")))
    if not entries:
        raise TamperError(f"{where} is malformed: it names no file")
    if render_index(entries) != data:
        raise TamperError(
            f"{where} is not in the one spelling airgap writes (`SHA256  NAME` lines, each ending in "
            "one \\n; no CR, blank line, comment or other separator)"
        )
    return entries
