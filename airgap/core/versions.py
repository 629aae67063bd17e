"""The one version order of airgap: Semantic Versioning 2.0.0 precedence.

A bundle's version is a SemVer string (``airgap.yaml`` requires it and the signed manifest is
checked against it). Rollback protection, install, status and rollback all compare versions, and
they must agree: if one part thought ``1.0.0-rc1`` newer than ``1.0.0`` and another older, a
pre-release could replace its release without ``--allow-downgrade``. Everything that orders
versions goes through ``parse`` and ``compare`` here.

Precedence (semver.org, item 11): major, minor and patch compare numerically; a version with a
pre-release is lower than the same version without one; pre-release identifiers compare one by
one, numeric ones numerically and below alphanumeric ones, which compare in ASCII order; a longer
list of identifiers is higher when all before are equal. Build metadata (``+...``) is ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LENGTH = 128

SEMVER = re.compile(
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-((?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


class InvalidVersion(ValueError):
    """Not a SemVer 2.0.0 version."""


@dataclass(frozen=True)
class SemVer:
    """A parsed version; ``<`` and friends follow SemVer precedence (build metadata ignored)."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[int | str, ...] = ()
    build: str = ""

    def _key(self) -> tuple[object, ...]:
        # No pre-release sorts above any pre-release of the same core version.
        pre: tuple[object, ...] = (
            (1,)
            if not self.prerelease
            else (
                0,
                *((0, p, "") if isinstance(p, int) else (1, 0, p) for p in self.prerelease),
            )
        )
        return (self.major, self.minor, self.patch, pre)

    def __lt__(self, other: SemVer) -> bool:
        return self._key() < other._key()

    def __le__(self, other: SemVer) -> bool:
        return self._key() <= other._key()

    def __gt__(self, other: SemVer) -> bool:
        return self._key() > other._key()

    def __ge__(self, other: SemVer) -> bool:
        return self._key() >= other._key()

    @property
    def is_prerelease(self) -> bool:
        """Whether this is a pre-release, which sorts below the release of the same version."""
        return bool(self.prerelease)

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(str(p) for p in self.prerelease)
        if self.build:
            text += "+" + self.build
        return text


def parse(text: str) -> SemVer:
    """Parses a SemVer 2.0.0 string, or raises InvalidVersion."""
    if not isinstance(text, str) or len(text) > MAX_LENGTH:
        raise InvalidVersion(f"{text!r} is not a semantic version")
    m = SEMVER.fullmatch(text)
    if not m:
        raise InvalidVersion(f"{text!r} is not a semantic version (such as 1.2.0 or 1.2.0-rc.1)")
    pre = tuple(int(p) if p.isdigit() else p for p in m.group(4).split(".")) if m.group(4) else ()
    return SemVer(int(m.group(1)), int(m.group(2)), int(m.group(3)), pre, m.group(5) or "")


def is_valid(text: str) -> bool:
    """Whether ``text`` is a SemVer 2.0.0 version, for validators that report their own error."""
    try:
        parse(text)
    except InvalidVersion:
        return False
    return True


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` has lower, equal or higher precedence than ``b``."""
    va, vb = parse(a), parse(b)
    return -1 if va < vb else (1 if va > vb else 0)


def older(candidate: str, installed: str) -> bool:
    """Whether installing ``candidate`` after ``installed`` goes back in time (a rollback)."""
    return compare(candidate, installed) < 0


def highest(a: str, b: str) -> str:
    """The higher of two versions (the first when they have the same precedence)."""
    return b if compare(b, a) > 0 else a
