"""Paths into facts: ``spec.containers[0].securityContext``, ``labels["a.b/c"]``, ``env[*].name``.

A rule names the field it tests with a path so that the same words serve three readers: the
engine (which walks the facts), the finding (which names the field a reviewer must edit) and the
checklist (which prints the requirement). Facts come from untrusted YAML and JSON, so walking a
path never raises: whatever is not there is ``MISSING``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, Union


class _Wildcard:
    def __repr__(self) -> str:
        return "[*]"


class _Missing:
    """A value that is not there (absent key, index out of range, or null)."""

    def __repr__(self) -> str:
        return "MISSING"


WILDCARD = _Wildcard()
MISSING = _Missing()
Token = Union[str, int, _Wildcard]
PathTokens = tuple[Token, ...]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_BRACKET = re.compile(r'\[(\*|[0-9]+|"((?:[^"\\]|\\.)*)")\]')


def parse_path(text: str) -> PathTokens:
    """Parses a dotted path; raises ``ValueError`` with the position of the first bad character.

    Rule files are written by people: an error that points at the character saves a round trip.
    """
    if not isinstance(text, str) or not text:
        raise ValueError("a path must be a non-empty string")
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        if text[pos] == "[":
            m = _BRACKET.match(text, pos)
            if not m:
                raise ValueError(f"bad bracket at position {pos} of {text!r}")
            inner = m.group(1)
            if inner == "*":
                tokens.append(WILDCARD)
            elif m.group(2) is not None:
                tokens.append(json.loads(f'"{m.group(2)}"'))
            else:
                tokens.append(int(inner))
            pos = m.end()
            continue
        if tokens:
            if text[pos] != ".":
                raise ValueError(f"expected '.' or '[' at position {pos} of {text!r}")
            pos += 1
        m = _IDENT.match(text, pos)
        if not m:
            raise ValueError(f'expected a key at position {pos} of {text!r} (quote odd keys: ["a.b/c"])')
        tokens.append(m.group(0))
        pos = m.end()
    return tuple(tokens)


def format_path(tokens: Iterable[Token], prefix: str = "") -> str:
    """The inverse of ``parse_path``, so a finding names a field the way a rule author writes it.

    ``prefix`` is an already formatted path to continue (where an item lives in its object).
    """
    out = prefix
    for tok in tokens:
        if isinstance(tok, _Wildcard):
            out += "[*]"
        elif isinstance(tok, int):
            out += f"[{tok}]"
        elif _IDENT.fullmatch(tok):
            out += f".{tok}" if out else tok
        else:
            out += f"[{json.dumps(tok)}]"
    return out


def expand(root: Any, tokens: PathTokens) -> list[tuple[PathTokens, Any]]:
    """Every concrete path ``tokens`` reaches in ``root`` and its value (``MISSING`` if none).

    Each element a wildcard reaches becomes its own finding, so the concrete path is kept. A
    wildcard over a list yields each element, over a mapping each value (keys sorted, for stable
    output), over anything else nothing; so ``env[*].name`` of a container without ``env`` is an
    empty list.
    """
    current: list[tuple[PathTokens, Any]] = [((), root)]
    for tok in tokens:
        nxt: list[tuple[PathTokens, Any]] = []
        for path, value in current:
            if isinstance(tok, _Wildcard):
                if isinstance(value, list):
                    nxt.extend(((*path, i), v) for i, v in enumerate(value))
                elif isinstance(value, dict):
                    nxt.extend(((*path, str(k)), value[k]) for k in sorted(value, key=str))
            elif isinstance(tok, int):
                ok = isinstance(value, list) and 0 <= tok < len(value)
                nxt.append(((*path, tok), value[tok] if ok else MISSING))
            else:
                ok = isinstance(value, dict) and tok in value
                nxt.append(((*path, tok), value[tok] if ok else MISSING))
        current = nxt
    return [(p, MISSING if v is None else v) for p, v in current]


def mapping_of(value: object) -> dict[str, Any]:
    """``value`` if it is a mapping, else an empty one: facts come from untrusted YAML and JSON."""
    return value if isinstance(value, dict) else {}


def lookup(root: Any, tokens: PathTokens) -> Any:
    """The single value at a path without wildcards, for operators that compare two fields."""
    found = expand(root, tokens)
    return found[0][1] if len(found) == 1 else MISSING
