"""Reading a YAML project file with the line of every field, so that each error names field and line.

Shared by the project file's sections; nothing here knows what the fields mean.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

import yaml

from airgap.errors import InvalidInputError

# A project file holds some hundred values. YAML aliases let a 1 KiB file name the same node a
# billion times ("billion laughs"), and building plain values copies it each time: the values
# built are counted, and a document that expands past this is refused before memory runs out.
MAX_VALUES = 10_000


class Lines:
    """Remembers the line of every key path in the YAML document, for error messages."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[str, int] = {}
        self.built = 0

    def build(self, node: yaml.Node, path: str = "") -> Any:
        """The plain value of ``node``, recording the line of every key path below ``path``."""
        self.built += 1
        if self.built > MAX_VALUES:
            raise InvalidInputError(
                f"{self.source}: the document expands to more than {MAX_VALUES} values "
                "(YAML aliases repeating a large value?)",
                hint="write the values out once; a project file needs no aliases",
            )
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = key_node.value
                if not isinstance(key, str) or not isinstance(key_node, yaml.ScalarNode):
                    raise self.error(path or "(top)", "keys must be plain strings")
                if key in out:
                    raise InvalidInputError(
                        f"{self.source}:{key_node.start_mark.line + 1}: {self.join(path, key)} is given twice"
                    )
                sub = self.join(path, key)
                self.lines[sub] = key_node.start_mark.line + 1
                out[key] = self.build(value_node, sub)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        return yaml.safe_load(yaml.serialize(node))

    @staticmethod
    def join(path: str, key: str) -> str:
        """The dotted path of ``key`` under ``path``, as errors spell it."""
        return f"{path}.{key}" if path else key

    def line(self, path: str) -> int:
        """The line of ``path``, or of its nearest recorded parent."""
        while path and path not in self.lines:
            path = path.rsplit(".", 1)[0] if "." in path else ""
        return self.lines.get(path, 1)

    def error(self, path: str, message: str, hint: str | None = None) -> InvalidInputError:
        """The one-line error ``SOURCE:LINE: PATH: MESSAGE`` for a field."""
        return InvalidInputError(f"{self.source}:{self.line(path)}: {path}: {message}", hint=hint)


def relative_path(lines: Lines, path: str, value: object) -> str:
    """A path inside the project directory: absolute paths and ``..`` are refused."""
    if not isinstance(value, str) or not value.strip():
        raise lines.error(path, "must be a path relative to the project directory")
    p = PurePosixPath(value)
    if p.is_absolute() or ".." in p.parts:
        raise lines.error(path, f"{value!r} leaves the project directory", "use a path inside the project")
    return str(p)


def expect(lines: Lines, data: Mapping[str, Any], path: str, allowed: set[str]) -> None:
    """Refuses an unknown field: a typo must not fall back to a default silently."""
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise lines.error(
            Lines.join(path, unknown[0]),
            "is not a known field",
            f"known fields here: {', '.join(sorted(allowed))}",
        )


def mapping(lines: Lines, data: Mapping[str, Any], key: str, path: str) -> dict[str, Any]:
    """The mapping under ``key`` (empty when absent or null), refusing any other type."""
    value = data.get(key, {})
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise lines.error(Lines.join(path, key), "must be a mapping")
    return value


def integer(
    lines: Lines, data: Mapping[str, Any], key: str, path: str, default: int, lo: int, hi: int
) -> int:
    """An integer field within ``lo`` and ``hi``."""
    value = data.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise lines.error(Lines.join(path, key), f"must be an integer from {lo} to {hi}, got {value!r}")
    return value
