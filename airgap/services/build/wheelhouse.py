"""Hash-locked wheelhouses for an exact target: the base image's interpreter, or a probed far-side host.

Resolution happens once per (requirements, target, index); the final lock — exactly one file per pin,
with that file's SHA-256 — is cached, and files live in a content-addressed store, so a second bundle
with the same lock downloads nothing. Every wheelhouse is verified (one file per pin, hashes, tags,
marker closure) before it is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.tags import Tag
from packaging.utils import canonicalize_name, parse_wheel_filename

from airgap.adapters.fs import atomic_write_bytes
from airgap.adapters.wheels import (
    ForeignResolver,
    ImageResolver,
    ResolvedFile,
    ResolverSettings,
    WheelStore,
    describe_files,
    project_of,
    sha256_file,
)
from airgap.core.profile import PythonFacts, canonical_json
from airgap.core.rebuild import TargetSpec, target_facts
from airgap.core.tags import compute_tags, marker_environment
from airgap.core.wheelhouse import Lock, Pin, WheelhouseReport, parse_lock, verify_wheelhouse
from airgap.errors import IntegrityError, InvalidInputError
from airgap.services.observer import BYTES, NullObserver, Observer

LOCK_FORMAT = 1


@dataclass(frozen=True)
class WheelhouseResult:
    """The lock, the wheels and their verification report, and how this run got them (build record)."""

    lock: Lock
    directory: Path
    report: WheelhouseReport
    downloaded: int
    built: tuple[str, ...] = ()
    from_cache: bool = False
    files: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class WheelhouseSite:
    """Where one wheelhouse is written and what it reuses: ``dest`` receives ``wheels/`` and the
    lock; ``store`` is the content-addressed wheel cache every bundle shares (a second bundle with
    the same lock downloads nothing); ``lock_cache`` keeps resolutions, so an unchanged project
    is not resolved again."""

    dest: Path
    store: WheelStore
    lock_cache: Path

    def resolution(
        self, kind: str, target: str, requirements: Sequence[str], py: PythonFacts, settings: ResolverSettings
    ) -> Path:
        """The cache file of one resolution (the inputs' hash names it; the caller adds the suffix)."""
        return self.lock_cache / _cache_key(kind, target, requirements, py, settings)


def _cache_key(
    kind: str, target: str, requirements: Sequence[str], py: PythonFacts, settings: ResolverSettings
) -> str:
    doc = {
        "format": LOCK_FORMAT,
        "kind": kind,
        "target": target,
        "requirements": sorted(requirements),
        "index": settings.index_url,
        "markers": marker_environment(py),
        "tags": [str(t) for t in compute_tags(py)[:3]],
    }
    return hashlib.sha256(canonical_json(doc)).hexdigest()


def _rank(tags: Sequence[Tag]) -> dict[Tag, int]:
    return {t: i for i, t in enumerate(tags)}


def _best_cached(store: WheelStore, pin: Pin, rank: dict[Tag, int]) -> tuple[str, Path] | None:
    best: tuple[int, str, Path] | None = None
    for sha in pin.hashes:
        path = store.find(sha)
        if path is None or not path.name.endswith(".whl"):
            continue
        matches = [rank[t] for t in parse_wheel_filename(path.name)[3] if t in rank]
        if matches and (best is None or min(matches) < best[0]):
            best = (min(matches), sha, path)
    return (best[1], best[2]) if best else None


def _roots(requirements: Sequence[str]) -> list[str]:
    return [str(canonicalize_name(Requirement(r).name)) for r in requirements]


def _materialize(
    chosen: dict[str, tuple[str, Path]], pins: dict[str, Pin], notes: dict[str, str], dest: Path, header: str
) -> Lock:
    dest.mkdir(parents=True, exist_ok=True)
    final: list[Pin] = []
    for name in sorted(chosen):
        sha, path = chosen[name]
        shutil.copyfile(path, dest / path.name)
        final.append(Pin(name, pins[name].version, frozenset({sha}), notes.get(name, "")))
    return Lock(tuple(final), header=header)


def image_wheelhouse(
    resolver: ImageResolver,
    image_digest_ref: str,
    py: PythonFacts,
    requirements: Sequence[str],
    site: WheelhouseSite,
    observer: Observer | None = None,
) -> WheelhouseResult:
    """The wheelhouse for the base image's own interpreter, resolved inside that image."""
    obs = observer or NullObserver()
    dest, store = site.dest, site.store
    tags = compute_tags(py)
    rank = _rank(tags)
    cached = site.resolution("image", image_digest_ref, requirements, py, resolver.settings).with_suffix(
        ".lock"
    )
    from_cache = cached.is_file()
    obs.begin("resolve", 1)
    if from_cache:
        lock = parse_lock(cached.read_text(), str(cached))
    else:
        lock = parse_lock(resolver.compile(requirements), "pip-compile output")
    obs.advance("resolve", 1, f"{len(lock.pins)} pins")
    obs.end("resolve")
    pins = lock.by_name()
    chosen: dict[str, tuple[str, Path]] = {}
    missing: list[Pin] = []
    for pin in lock.pins:
        hit = _best_cached(store, pin, rank)
        if hit:
            chosen[pin.name] = hit
        else:
            missing.append(pin)
    downloaded = 0
    built: list[str] = []
    notes: dict[str, str] = {}
    if missing:
        with tempfile.TemporaryDirectory(prefix="airgap-dl-") as tmp:
            obs.begin("download", None, BYTES)
            files = resolver.download(
                Lock(tuple(missing)).render(), Path(tmp), on_bytes=lambda n: obs.advance("download", n)
            )
            downloaded += len(files)
            sdists: list[Path] = []
            for f in files:
                name = str(canonicalize_name(project_of(f.name)))
                if name not in pins:
                    raise IntegrityError(f"pip downloaded {f.name}, which the lock does not pin")
                sha, stored = store.put(f)
                if sha not in pins[name].hashes:
                    raise IntegrityError(
                        f"{f.name} has sha256 {sha}, which the lock does not list for {name}"
                    )
                if f.name.endswith(".whl"):
                    chosen[name] = (sha, stored)
                else:
                    sdists.append(stored)
                    notes[name] = f"built offline in the base image from {f.name} sha256:{sha}"
            obs.end("download")
            if sdists:
                obs.begin("build sdists", len(sdists))
                out = Path(tmp) / "built"
                out.mkdir()
                for wheel in resolver.build_sdists(sdists, out):
                    name = str(canonicalize_name(project_of(wheel.name)))
                    sha, stored = store.put(wheel)
                    chosen[name] = (sha, stored)
                    built.append(wheel.name)
                    obs.advance("build sdists", 1, wheel.name)
                obs.end("build sdists")
    unbuilt = sorted(set(pins) - set(chosen))
    if unbuilt:
        raise InvalidInputError(
            f"no wheel for {', '.join(unbuilt)} could be obtained for the base image (best tag {tags[0]})",
            hint="pick versions that publish wheels for it, or a base image that can build them",
        )
    header = (
        f"# airgap requirements.lock: one file per pin, for {image_digest_ref}\n"
        f"# target python {py.version_str}, best tag {tags[0]}"
    )
    final = _materialize(chosen, pins, notes, dest / "wheels", header)
    if not from_cache:
        site.lock_cache.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cached, final.render().encode())
    return _verify(final, dest, py, tags, requirements, downloaded, built, from_cache)


def host_wheelhouse(
    resolver: ForeignResolver,
    py: PythonFacts,
    target_label: str,
    requirements: Sequence[str],
    site: WheelhouseSite,
    observer: Observer | None = None,
) -> WheelhouseResult:
    """The wheelhouse for a probed far-side interpreter that this workstation does not have."""
    tags = compute_tags(py)
    obs = observer or NullObserver()
    cached = site.resolution("host", target_label, requirements, py, resolver.settings).with_suffix(".json")
    from_cache = cached.is_file()
    obs.begin("resolve host", 1)
    if from_cache:
        resolved = [ResolvedFile(**item) for item in json.loads(cached.read_text())]
    else:
        resolved = resolver.resolve(requirements, py)
    obs.end("resolve host")
    downloaded = 0
    chosen: dict[str, tuple[str, Path]] = {}
    pins: dict[str, Pin] = {}
    obs.begin("download host wheels", len(resolved), "wheels")
    for item in resolved:
        before = site.store.find(item.sha256)
        path = site.store.fetch_url(item.url, item.filename, item.sha256, resolver.settings.ca_bundle)
        downloaded += before is None
        chosen[item.name] = (item.sha256, path)
        pins[item.name] = Pin(item.name, item.version, frozenset({item.sha256}))
        obs.advance("download host wheels", 1, item.filename)
    obs.end("download host wheels")
    if not from_cache:
        site.lock_cache.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cached, json.dumps([r.__dict__ for r in resolved], indent=1).encode())
    header = f"# airgap requirements.lock for {target_label}: python {py.version_str}, best tag {tags[0]}"
    final = _materialize(chosen, pins, {}, site.dest / "wheels", header)
    return _verify(final, site.dest, py, tags, requirements, downloaded, (), from_cache)


def _verify(
    lock: Lock,
    dest: Path,
    py: PythonFacts,
    tags: Sequence[Tag],
    requirements: Sequence[str],
    downloaded: int,
    built: Sequence[str],
    from_cache: bool,
) -> WheelhouseResult:
    atomic_write_bytes(dest / "requirements.lock", lock.render().encode())
    files = sorted((dest / "wheels").iterdir())
    report = verify_wheelhouse(lock, describe_files(files), tags, py, roots=_roots(requirements))
    return WheelhouseResult(
        lock=lock,
        directory=dest,
        report=report,
        downloaded=downloaded,
        built=tuple(built),
        from_cache=from_cache,
        files=tuple(f.name for f in files),
    )


def default_cache_dir() -> Path:
    """``AIRGAP_CACHE_DIR``, else the XDG cache path: downloads survive between builds."""
    base = os.environ.get("AIRGAP_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "airgap"
    )
    return Path(base)


def wheelhouse_record(wh: WheelhouseResult, staging: Path) -> dict[str, Any]:
    """What build.json says of a wheelhouse: its lock and hash, pins, files, tags and cache use."""
    rel = wh.directory.relative_to(staging)
    return {
        "lock": str(rel / "requirements.lock"),
        "lock_sha256": sha256_file(wh.directory / "requirements.lock"),
        "pins": {p.name: p.version for p in wh.lock.pins},
        "files": list(wh.files),
        "best_tags": dict(wh.report.best_tags),
        "downloaded": wh.downloaded,
        "built_from_sdist": list(wh.built),
        "lock_from_cache": wh.from_cache,
    }


def target_wheelhouses(
    targets: Sequence[TargetSpec],
    base_py: PythonFacts,
    base_label: str,
    requirements: Sequence[str],
    settings: ResolverSettings,
    site: WheelhouseSite,
    observer: Observer | None = None,
) -> dict[str, dict[str, Any]]:
    """The wheelhouses of the project's extra ``targets`` (``targets/py3.9/``), each resolved as a
    host wheelhouse is, for the base image's platform with the target's Python (and glibc), so a
    far site can rebuild the image on a base with that Python (`airgap rebuild`). Identical wheels
    are stored once by the v2 format; build.json records each wheelhouse like the image's."""
    out: dict[str, dict[str, Any]] = {}
    for target in targets:
        py = target_facts(base_py, target)
        wh = host_wheelhouse(
            ForeignResolver(settings),
            py,
            f"python {target.python} on {base_label}",
            requirements,
            WheelhouseSite(site.dest / "targets" / target.key, site.store, site.lock_cache),
            observer,
        )
        out[target.key] = {**wheelhouse_record(wh, site.dest), "python": target.python, "glibc": py.glibc}
    return out
