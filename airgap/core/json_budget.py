"""How many values a JSON document may hold before it is parsed.

Python's JSON reader turns every value into an object of 30 to 100 bytes, so a document of
nothing but ``{},{},…`` costs some 25 times its size in memory: a 50 MB file is over a gigabyte.
A size cap alone does not bound that. Counting the bytes that start a value or a member
(``{``, ``[``, ``,``, ``:``) costs one pass in C and over-counts only (they may sit inside
strings), so a document within its value budget parses in a small multiple of its size, and one
over it is refused before a single object is made. Pure: bytes in, an error out.
"""

from __future__ import annotations

from airgap.errors import InvalidInputError

# The most bytes one counted value may cost once parsed (an empty dict with its list slot is 72).
VALUE_COST = 128


def json_values(raw: bytes) -> int:
    """An upper bound of the values and members a JSON document holds (strings may hold these
    bytes too: a bound, never an undercount)."""
    return raw.count(b"{") + raw.count(b"[") + raw.count(b",") + raw.count(b":")


def check_json_budget(raw: bytes, max_values: int, what: str) -> None:
    """Refuses (exit 4) a document ``what`` with more than ``max_values`` values, before parsing."""
    found = json_values(raw)
    if found > max_values:
        raise InvalidInputError(
            f"{what} has {found} places where a JSON value may start, more than the {max_values} "
            "it may have: it is not one airgap wrote",
            hint="check that it is the right file",
        )
