"""The target profile: the facts of a far-side host (or an image), as values.

The profile crosses the air gap as JSON written by the stdlib-only collector. Everything
downstream (wheel resolution, policy checks, install planning) reads it through these frozen
dataclasses, so a malformed or hand-edited profile is rejected here, once, with the field named.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airgap.core.json_budget import check_json_budget
from airgap.errors import InvalidInputError

SCHEMA = "airgap.target-profile/v1"
MAX_PROFILE_VALUES = 1 << 16  # a profile holds a few hundred values; 128 bytes each once parsed
MARKER_KEYS = (
    "implementation_name",
    "implementation_version",
    "os_name",
    "platform_machine",
    "platform_release",
    "platform_system",
    "platform_version",
    "python_full_version",
    "platform_python_implementation",
    "python_version",
    "sys_platform",
)


def is_unknown(value: object) -> bool:
    """A fact the collector could not read is ``{"unknown": reason}``: never a guess."""
    return isinstance(value, dict) and "unknown" in value


def canonical_json(value: object) -> bytes:
    """Canonical bytes (sorted keys, no whitespace, UTF-8) so that digests are stable."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class _Reader:
    """Typed access to a JSON object that names the path of whatever is wrong."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, dict):
            raise InvalidInputError(f"profile: {where} must be a JSON object")
        self.data: dict[str, Any] = data
        self.where = where

    def _fail(self, key: str, expected: str) -> InvalidInputError:
        return InvalidInputError(
            f"profile: {self.where}.{key} must be {expected}, got {self.data.get(key)!r:.80}",
            hint="re-run `airgap probe` on the target, or fix the profile by hand",
        )

    def text(self, key: str, *, optional: bool = False) -> str | None:
        value = self.data.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value:
            raise self._fail(key, "a non-empty string")
        return value

    def integer(self, key: str) -> int:
        value = self.data.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._fail(key, "an integer")
        return value

    def obj(self, key: str) -> dict[str, Any]:
        value = self.data.get(key)
        if not isinstance(value, dict):
            raise self._fail(key, "an object")
        return value

    def str_list(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._fail(key, "a list of strings")
        return tuple(value)


@dataclass(frozen=True)
class ElfFacts:
    """The interpreter binary's ELF header fields that packaging's manylinux checks read."""

    bits: int
    little_endian: bool
    machine: int
    flags: int
    interpreter: str | None

    @classmethod
    def from_dict(cls, data: object, where: str) -> ElfFacts | None:
        """The ELF facts, or None when the collector could not read them, so manylinux checks fall back rather
        than guess."""
        if data is None or is_unknown(data):
            return None
        r = _Reader(data, where)
        return cls(
            bits=r.integer("class"),
            little_endian=r.text("byteorder") == "little",
            machine=r.integer("machine"),
            flags=r.integer("flags"),
            interpreter=r.text("interpreter", optional=True),
        )


@dataclass(frozen=True)
class PythonFacts:
    """One interpreter on the target, described well enough to compute its wheel tags."""

    path: str
    version: tuple[int, int, int]
    implementation: str
    sysconfig_platform: str
    pointer_bits: int
    config_vars: Mapping[str, Any]
    extension_suffixes: tuple[str, ...]
    has_gettotalrefcount: bool
    markers: Mapping[str, str]
    glibc: str | None
    musl: str | None
    elf: ElfFacts | None
    manylinux_override: tuple[str, ...] | None
    reported_tags: tuple[str, ...] | None = None
    reported_tags_source: str | None = None
    pip: str | None = None
    aliases: tuple[str, ...] = field(default=())

    @property
    def version_str(self) -> str:
        """The version as ``X.Y.Z``, for messages and for matching interpreters by name."""
        return ".".join(map(str, self.version))

    @property
    def minor(self) -> tuple[int, int]:
        """``(major, minor)``: what wheel tags and ``requires-python`` compare, ignoring the micro release."""
        return (self.version[0], self.version[1])

    @classmethod
    def from_dict(cls, data: object, where: str) -> PythonFacts:
        """One ``pythons[]`` entry. Every PEP 508 marker key must be present, because a missing one would
        silently evaluate markers against the wrong environment; optional facts the collector could not
        read become None."""
        r = _Reader(data, where)
        version = r.data.get("version")
        if not isinstance(version, list) or len(version) != 3 or not all(isinstance(v, int) for v in version):
            raise r._fail("version", "[major, minor, micro]")
        markers = r.obj("markers")
        missing = [k for k in MARKER_KEYS if not isinstance(markers.get(k), str)]
        if missing:
            raise InvalidInputError(
                f"profile: {where}.markers lacks {', '.join(missing)}",
                hint="a marker environment must have every PEP 508 key; re-run `airgap probe`",
            )
        suffixes = r.data.get("extension_suffixes")
        tags = r.data.get("reported_tags")
        reported: tuple[str, ...] | None = None
        source: str | None = None
        if isinstance(tags, dict) and not is_unknown(tags):
            reported = _Reader(tags, f"{where}.reported_tags").str_list("tags")
            source = _Reader(tags, f"{where}.reported_tags").text("source")
        musl = r.data.get("musl")
        override = r.data.get("manylinux_override")
        return cls(
            path=r.text("path") or "",
            version=(version[0], version[1], version[2]),
            implementation=r.text("implementation") or "",
            sysconfig_platform=r.text("sysconfig_platform") or "",
            pointer_bits=r.integer("pointer_bits"),
            config_vars=dict(r.obj("config_vars")),
            extension_suffixes=tuple(suffixes) if isinstance(suffixes, list) else (),
            has_gettotalrefcount=bool(r.data.get("has_gettotalrefcount")),
            markers={k: str(markers[k]) for k in MARKER_KEYS},
            glibc=r.text("glibc", optional=True),
            musl=musl if isinstance(musl, str) else None,
            elf=ElfFacts.from_dict(r.data.get("elf"), f"{where}.elf"),
            manylinux_override=tuple(override) if isinstance(override, list) else None,
            reported_tags=reported,
            reported_tags_source=source,
            pip=r.data.get("pip") if isinstance(r.data.get("pip"), str) else None,
            aliases=tuple(a for a in r.data.get("aliases", []) if isinstance(a, str)),
        )


@dataclass(frozen=True)
class Libc:
    """The C library the target links against, which bounds the manylinux and musllinux tags its wheels may
    use."""

    family: str  # "glibc" or "musl"
    version: tuple[int, int]

    @property
    def label(self) -> str:
        """The libc as a person reads it (``glibc 2.28``), for messages and reports."""
        return f"{self.family} {self.version[0]}.{self.version[1]}"


def parse_libc_version(text: str) -> tuple[int, int] | None:
    """``(major, minor)`` from a libc version string such as ``2.28`` or ``1.2.4-r0``, or None when it does
    not start with a numeric major and minor, so an unreadable version is never compared as a guess."""
    parts = text.split(".")
    try:
        return (int(parts[0]), int(parts[1].split("-")[0]))
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class Profile:
    """A validated target profile. ``raw`` keeps every collected fact for reports and policies."""

    schema: str
    collected_at: str
    hostname: str
    arch: str
    os_pretty_name: str
    pythons: tuple[PythonFacts, ...]
    broken_pythons: tuple[tuple[str, str], ...]
    libc: Libc | None
    source: Mapping[str, Any]
    raw: Mapping[str, Any]

    @classmethod
    def from_json(cls, text: str | bytes, origin: str = "profile") -> Profile:
        """Parses profile text; bad JSON is one invalid-input error that says which file to pass instead.

        A profile is some 5 KiB and a few hundred values: one with more than ``MAX_PROFILE_VALUES``
        is refused before it is parsed, so that its cost in memory stays bounded."""
        raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
        check_json_budget(raw, MAX_PROFILE_VALUES, origin)
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise InvalidInputError(
                f"{origin} is not JSON: {exc}",
                hint="pass the file written by `airgap probe --output` or the exported probe script",
            ) from None
        return cls.from_dict(data, origin)

    @classmethod
    def from_dict(cls, data: object, origin: str = "profile") -> Profile:
        """Validates a decoded profile: the schema must match, every field this model types is checked,
        and interpreters the collector could not run are kept aside in ``broken_pythons`` rather than
        failing the whole profile. Untyped sections stay in ``raw`` for ``section``."""
        r = _Reader(data, "profile")
        schema = r.data.get("schema")
        if schema != SCHEMA:
            raise InvalidInputError(
                f"{origin} is not an airgap target profile (schema {schema!r}, expected {SCHEMA!r})",
                hint="generate one with `airgap probe` or the script from `airgap probe --export-script`",
            )
        host = r.obj("host")
        hr = _Reader(host, "profile.host")
        pys_raw = r.data.get("pythons")
        if not isinstance(pys_raw, list):
            raise r._fail("pythons", "a list")
        pythons: list[PythonFacts] = []
        broken: list[tuple[str, str]] = []
        for i, entry in enumerate(pys_raw):
            if isinstance(entry, dict) and "error" in entry:
                broken.append((str(entry.get("path", "?")), str(entry["error"])))
                continue
            pythons.append(PythonFacts.from_dict(entry, f"profile.pythons[{i}]"))
        libc_raw = r.data.get("libc")
        libc: Libc | None = None
        if isinstance(libc_raw, dict) and not is_unknown(libc_raw):
            lr = _Reader(libc_raw, "profile.libc")
            parsed = parse_libc_version(lr.text("version") or "")
            family = lr.text("family") or ""
            if parsed is None or family not in ("glibc", "musl"):
                raise lr._fail("version", "a libc family and version such as glibc 2.28")
            libc = Libc(family, parsed)
        osr = host.get("os_release")
        pretty = osr.get("PRETTY_NAME", "") if isinstance(osr, dict) else ""
        source_raw = r.data.get("source")
        source: dict[str, Any] = source_raw if isinstance(source_raw, dict) else {"kind": "host"}
        return cls(
            schema=SCHEMA,
            collected_at=r.text("collected_at") or "",
            hostname=hr.text("hostname") or "",
            arch=hr.text("arch") or "",
            os_pretty_name=pretty if isinstance(pretty, str) else "",
            pythons=tuple(pythons),
            broken_pythons=tuple(broken),
            libc=libc,
            source=source,
            raw=data if isinstance(data, dict) else {},
        )

    @property
    def digest(self) -> str:
        """SHA-256 of the canonical profile: what a bundle records as the target it was built for."""
        return hashlib.sha256(canonical_json(self.raw)).hexdigest()

    def primary_python(self) -> PythonFacts:
        """The interpreter a bundle targets by default: `python3` first, as found on PATH."""
        if not self.pythons:
            raise InvalidInputError(
                f"profile of {self.hostname} has no working Python 3 interpreter",
                hint="install python3 on the target, or name an interpreter with --python",
            )
        for py in self.pythons:
            names = (py.path, *py.aliases)
            if any(n.rsplit("/", 1)[-1] == "python3" for n in names):
                return py
        return self.pythons[0]

    def python(self, selector: str | None) -> PythonFacts:
        """Selects an interpreter by path or by ``X.Y`` version; ``None`` means the primary."""
        if not selector:
            return self.primary_python()
        for py in self.pythons:
            if selector in (py.path, *py.aliases) or ".".join(map(str, py.minor)) == selector:
                return py
        known = ", ".join(f"{p.path} ({p.version_str})" for p in self.pythons) or "none"
        raise InvalidInputError(
            f"profile of {self.hostname} has no Python matching {selector!r}",
            hint=f"interpreters found there: {known}",
        )

    def section(self, name: str) -> Any:
        """A raw section of the profile (``None`` if absent), for the policy checks that read facts this model
        does not type."""
        return self.raw.get(name)
