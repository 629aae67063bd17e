"""Extra wheelhouse targets, and whether a bundle's wheelhouses fit a site's base image.

A bundle is built on one base image, for one Python. A far site whose policy rejects that base
can rebuild the model image on its own approved base (`airgap rebuild`), but only from wheels the
bundle carries: so ``airgap.yaml`` may name extra ``targets`` (other Python versions and glibc
levels) whose wheelhouses ship in the bundle, and the far side picks the one whose every wheel
installs on its base's interpreter. Everything here is pure: facts in, decisions out.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from packaging.tags import Tag
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from airgap.core.profile import PythonFacts
from airgap.core.yamlfields import Lines, expect

_PYTHON = re.compile(r"^3\.([0-9]{1,2})$")
_GLIBC = re.compile(r"^2\.([0-9]{1,2})$")


@dataclass(frozen=True)
class TargetSpec:
    """One extra interpreter the bundle carries a wheelhouse for: ``python`` as ``3.Y``, and the
    oldest glibc it must run on (None: the base image's own)."""

    python: str
    glibc: str | None = None

    @property
    def key(self) -> str:
        """The wheelhouse's name in the bundle and in build.json (``py3.9``, ``py3.9-glibc2.28``)."""
        return f"py{self.python}" + (f"-glibc{self.glibc}" if self.glibc else "")


def parse_targets(lines: Lines, data: Mapping[str, Any]) -> tuple[TargetSpec, ...]:
    """``targets``: a list of ``{python: '3.9', glibc: '2.31'}``; duplicates are one target."""
    raw = data.get("targets")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise lines.error("targets", "must be a list such as [{python: '3.9'}]")
    out: list[TargetSpec] = []
    for i, item in enumerate(raw):
        where = f"targets[{i}]"
        if not isinstance(item, dict):
            raise lines.error(where, "must be a mapping such as {python: '3.9'}")
        expect(lines, item, where, {"python", "glibc"})
        python, glibc = item.get("python"), item.get("glibc")
        if not isinstance(python, str) or not _PYTHON.match(python):
            raise lines.error(
                f"{where}.python", f"{python!r} is not a Python version", "quote it: python: '3.9'"
            )
        if glibc is not None and (not isinstance(glibc, str) or not _GLIBC.match(glibc)):
            raise lines.error(
                f"{where}.glibc", f"{glibc!r} is not a glibc version", "quote it: glibc: '2.31'"
            )
        spec = TargetSpec(python, glibc)
        if spec not in out:
            out.append(spec)
    return tuple(out)


def target_facts(base: PythonFacts, target: TargetSpec) -> PythonFacts:
    """The interpreter ``target`` describes, on the base image's platform: the base's facts with
    the version, its markers and ABI swapped (and glibc lowered when the target names one)."""
    minor = int(target.python.split(".")[1])
    nodot = f"3{minor}"
    markers = dict(base.markers)
    markers["python_version"] = target.python
    markers["python_full_version"] = f"{target.python}.0"
    config = {k: v for k, v in base.config_vars.items() if k not in ("Py_GIL_DISABLED", "Py_DEBUG")}
    config["py_version_nodot"] = nodot
    old_suffix = str(base.config_vars.get("EXT_SUFFIX") or "")
    if old_suffix.startswith(".cpython-"):
        config["EXT_SUFFIX"] = ".cpython-" + nodot + "-" + old_suffix.split("-", 2)[2]
    return dataclasses.replace(
        base,
        version=(3, minor, 0),
        markers=markers,
        config_vars=config,
        extension_suffixes=tuple(s for s in base.extension_suffixes if "cpython" not in s),
        has_gettotalrefcount=False,
        glibc=target.glibc or base.glibc,
        manylinux_override=None,
        reported_tags=None,
        reported_tags_source=None,
    )


@dataclass(frozen=True)
class Candidate:
    """One wheelhouse a bundle carries: its name, its directory in the bundle, its wheel files."""

    kind: str
    directory: str  # "" for the image wheelhouse at the bundle's top, else e.g. "targets/py3.9"
    python: str | None
    wheels: tuple[str, ...]


@dataclass(frozen=True)
class Fit:
    """The first candidate all of whose wheels install on the site's interpreter, or why none does."""

    chosen: Candidate | None
    misfits: Mapping[str, tuple[str, ...]]  # candidate kind -> the wheels that do not install

    def reason(self, site: str, tags: Sequence[Tag]) -> str:
        """The one line that says which wheels do not fit, per wheelhouse the bundle carries."""
        best_tag = next((t for t in tags if not t.platform.startswith("linux_")), tags[0])
        parts = []
        for kind, wheels in self.misfits.items():
            shown = ", ".join(wheels[:4]) + (f" (+{len(wheels) - 4} more)" if len(wheels) > 4 else "")
            parts.append(f"{kind} wheelhouse: {shown}")
        return f"no wheelhouse in the bundle installs on {site} (best tag {best_tag}): " + "; ".join(parts)


class WheelhouseFacts(Protocol):
    """What a candidate is made of: a build record's wheelhouse (core/build_record.py's
    WheelhouseRecord; named structurally, as that module imports the project model, which imports
    this one)."""

    @property
    def lock(self) -> str | None:
        """The wheelhouse's lock, relative to the bundle (None: the image's, at the top)."""

    @property
    def python(self) -> str | None:
        """The Python a target wheelhouse is for."""


def candidates(
    wheelhouses: Mapping[str, WheelhouseFacts], image_python: str | None, files: Sequence[str]
) -> list[Candidate]:
    """The wheelhouses named in the signed build record (``image_python``: its base image's
    Python), with their wheels from the manifest."""
    out: list[Candidate] = []
    for kind, wh in wheelhouses.items():
        if kind not in ("image",) and not str(kind).startswith("py"):
            continue  # the host and airgap wheelhouses are for the bare host, not an image
        lock = wh.lock or "requirements.lock"
        directory = lock.rpartition("/")[0]
        prefix = f"{directory}/wheels/" if directory else "wheels/"
        wheels = tuple(sorted(f[len(prefix) :] for f in files if f.startswith(prefix) and f.endswith(".whl")))
        python = image_python if kind == "image" else wh.python
        out.append(Candidate(str(kind), directory, python, wheels))
    return out


def misfits(wheels: Sequence[str], tags: Sequence[Tag]) -> tuple[str, ...]:
    """The wheels none of whose tags the interpreter supports."""
    supported = set(tags)
    bad = []
    for name in wheels:
        try:
            wheel_tags = parse_wheel_filename(name)[3]
        except InvalidWheelFilename:
            bad.append(name)
            continue
        if not wheel_tags & supported:
            bad.append(name)
    return tuple(bad)


def choose(found: Sequence[Candidate], tags: Sequence[Tag]) -> Fit:
    """The first wheelhouse (the image's, then each target in order) that fits entirely."""
    bad: dict[str, tuple[str, ...]] = {}
    for cand in found:
        miss = misfits(cand.wheels, tags)
        if cand.wheels and not miss:
            return Fit(cand, bad)
        bad[cand.kind] = miss or ("(no wheels)",)
    return Fit(None, bad)


def suggestion(python: str, glibc: str | None) -> str:
    """What the publisher adds to airgap.yaml so the next bundle fits this site."""
    glibc_part = f", glibc: '{glibc}'" if glibc else ""
    return f"add `targets: [{{python: '{python}'{glibc_part}}}]` to airgap.yaml and bundle again"
