"""Hash-locked wheelhouses: the lock format and the checks a wheelhouse must pass before it is trusted.

A wheelhouse is trusted only when (1) it holds exactly one file per pin and nothing else, (2) each
file's SHA-256 is the one the lock names for that pin, (3) each wheel's tags intersect the target's
tag list, and (4) every ``Requires-Dist`` of every wheel, evaluated with the *target's* marker
environment, is itself pinned. All four are pure functions of values here; reading files is the
adapters' job.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import Tag
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from airgap.core.profile import PythonFacts
from airgap.core.tags import marker_environment
from airgap.errors import IntegrityError, InvalidInputError

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


@dataclass(frozen=True)
class Pin:
    """One locked requirement: the exact version and every SHA-256 a file for it may have, so pip refuses any
    other file."""

    name: str  # canonical (PEP 503) name
    version: str
    hashes: frozenset[str]
    note: str = ""


@dataclass(frozen=True)
class Lock:
    """A requirements lock: exact versions and the SHA-256 of every file pip may install."""

    pins: tuple[Pin, ...]
    header: str = ""

    def by_name(self) -> dict[str, Pin]:
        """Pins keyed by canonical name, for checking a wheel or dependency against the lock."""
        return {p.name: p for p in self.pins}

    def render(self) -> str:
        """The pip-compatible text (``pip install --require-hashes -r``), sorted for stable bytes."""
        out = [self.header.rstrip("\n")] if self.header else []
        for pin in sorted(self.pins, key=lambda p: p.name):
            hashes = sorted(pin.hashes)
            line = f"{pin.name}=={pin.version}"
            out.append(line + (" \\" if hashes else ""))
            for i, h in enumerate(hashes):
                out.append(f"    --hash=sha256:{h}" + (" \\" if i < len(hashes) - 1 else ""))
            if pin.note:
                out.append(f"    # {pin.note}")
        return "\n".join(out) + "\n"


def parse_lock(text: str, source: str = "requirements.lock") -> Lock:
    """Parses pip-compile ``--generate-hashes`` output (or our own rendering of it)."""
    pins: list[Pin] = []
    current: list[str] = []
    logical: list[str] = []
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") and not current:
            continue
        current.append(stripped.split(" #", 1)[0] if not stripped.startswith("#") else "")
        if stripped.endswith("\\"):
            current[-1] = current[-1].rstrip("\\").strip()
            continue
        logical.append(" ".join(c for c in current if c))
        current = []
    if current:
        logical.append(" ".join(c for c in current if c))
    seen: set[str] = set()
    for line in logical:
        if not line:
            continue
        m = _PIN.match(line)
        if not m:
            raise InvalidInputError(
                f"{source}: {line[:80]!r} is not a pinned requirement (name==version --hash=...)",
                hint="regenerate the lock with `airgap bundle`",
            )
        name = canonicalize_name(m.group(1))
        if name in seen:
            raise InvalidInputError(f"{source}: {name} is pinned twice")
        seen.add(name)
        try:
            Version(m.group(3))
        except InvalidVersion:
            raise InvalidInputError(
                f"{source}: {name}=={m.group(3)[:40]!r} is not a PEP 440 version",
                hint="regenerate the lock with `airgap bundle`",
            ) from None
        hashes = frozenset(_HASH.findall(line))
        if not hashes:
            raise InvalidInputError(
                f"{source}: {name}=={m.group(3)} has no --hash", hint="every pin needs a hash"
            )
        pins.append(Pin(name, m.group(3), hashes))
    return Lock(tuple(pins))


@dataclass(frozen=True)
class WheelFile:
    """One file in a wheelhouse, as an adapter read it: name, digest and its ``Requires-Dist``."""

    filename: str
    sha256: str
    requires_dist: tuple[str, ...] = ()

    @property
    def project(self) -> str:
        """The wheel's project name from its file name, which is all pip matches against the lock."""
        return str(parse_wheel_filename(self.filename)[0])

    @property
    def version(self) -> Version:
        """The wheel's version from its file name, compared with the pinned version."""
        return parse_wheel_filename(self.filename)[1]

    @property
    def tags(self) -> frozenset[Tag]:
        """The wheel's compatibility tags from its file name, matched against the target's tag list."""
        return parse_wheel_filename(self.filename)[3]


@dataclass(frozen=True)
class WheelhouseReport:
    """What a verified wheelhouse holds: each pin, its file and the best-matching tag."""

    files: Mapping[str, WheelFile]
    best_tags: Mapping[str, str] = field(default_factory=dict)


def required_names(
    requirements: Iterable[str], py: PythonFacts, extras: Iterable[str] = ()
) -> list[tuple[str, Requirement]]:
    """The requirements that apply to the target, evaluated with its own marker environment."""
    env: dict[str, str] = marker_environment(py)
    out: list[tuple[str, Requirement]] = []
    for text in requirements:
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            raise InvalidInputError(f"invalid requirement {text!r}: {exc}") from None
        if req.marker is not None:
            wanted = [e for e in ("", *extras)]
            if not any(_evaluate(req.marker, {**env, "extra": e}) for e in wanted):
                continue
        out.append((canonicalize_name(req.name), req))
    return out


def _evaluate(marker: Marker, env: dict[str, str]) -> bool:
    return marker.evaluate(env)


def verify_wheelhouse(
    lock: Lock,
    files: Sequence[WheelFile],
    target_tags: Sequence[Tag],
    py: PythonFacts,
    roots: Iterable[str] = (),
) -> WheelhouseReport:
    """Raises ``IntegrityError`` on the first broken rule; returns what was proven otherwise."""
    pins = lock.by_name()
    rank = {t: i for i, t in enumerate(target_tags)}
    by_project: dict[str, WheelFile] = {}
    name: str
    for f in files:
        if not f.filename.endswith(".whl"):
            raise IntegrityError(f"wheelhouse holds {f.filename}, which is not a wheel")
        try:
            name = canonicalize_name(f.project)
        except ValueError as exc:
            raise IntegrityError(
                f"wheelhouse holds {f.filename}, whose name is not a wheel name: {exc}"
            ) from None
        # 1. exactly one file per pin, nothing unpinned
        if name not in pins:
            raise IntegrityError(f"wheelhouse holds {f.filename}, which no pin in the lock names")
        if name in by_project:
            raise IntegrityError(
                f"wheelhouse holds two files for {name}: {by_project[name].filename} and {f.filename}"
            )
        by_project[name] = f
        pin = pins[name]
        if f.version != Version(pin.version):
            raise IntegrityError(
                f"{f.filename} is version {f.version}, but the lock pins {name}=={pin.version}"
            )
        # 2. the hash is the lock's
        if f.sha256 not in pin.hashes:
            raise IntegrityError(
                f"{f.filename} has sha256 {f.sha256}, which the lock does not list for {name}=={pin.version}"
            )
    missing = sorted(set(pins) - set(by_project))
    if missing:
        raise IntegrityError(f"wheelhouse has no file for {', '.join(missing)}")
    # 3. every wheel runs on the target
    best: dict[str, str] = {}
    for name, f in by_project.items():
        matches = [rank[t] for t in f.tags if t in rank]
        if not matches:
            raise IntegrityError(
                f"{f.filename} does not run on the target: none of its tags "
                f"({', '.join(sorted(map(str, f.tags)))}) is in the target's list (best: {target_tags[0]})"
            )
        best[name] = str(target_tags[min(matches)])
    # 4. the Requires-Dist closure under the target's markers is pinned
    wanted: list[tuple[str, frozenset[str]]] = [(n, frozenset()) for n in map(canonicalize_name, roots)]
    wanted += [(n, frozenset()) for n in by_project]
    done: set[tuple[str, frozenset[str]]] = set()
    while wanted:
        name, extras = wanted.pop()
        if (name, extras) in done:
            continue
        done.add((name, extras))
        if name not in by_project:
            raise IntegrityError(f"{name} is required on the target but not pinned in the lock")
        for dep_name, req in required_names(by_project[name].requires_dist, py, extras):
            if dep_name not in pins:
                raise IntegrityError(
                    f"{by_project[name].filename} requires {req} on the target, which the lock does not pin"
                )
            if req.specifier and not req.specifier.contains(pins[dep_name].version, prereleases=True):
                raise IntegrityError(
                    f"{by_project[name].filename} requires {req}, "
                    f"but the lock pins {dep_name}=={pins[dep_name].version}"
                )
            wanted.append((dep_name, frozenset(req.extras)))
    return WheelhouseReport(files=by_project, best_tags=best)
