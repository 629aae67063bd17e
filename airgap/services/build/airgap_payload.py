"""airgap's own wheelhouse, so that a far side with nothing but ``python3`` can install airgap offline.

The far side must verify and install the bundle with airgap, but it may have no airgap and no
network. So the bundle carries ``airgap/wheels/`` and ``airgap/requirements.lock``: the airgap wheel
built from this source tree, plus every runtime dependency resolved for the *far-side host's*
interpreter (from the target profile) exactly like the host wheelhouse — binary wheels only, the
same content-addressed store and lock cache, verified by the same four rules. ``install.sh``
installs it into a virtualenv with ``pip install --no-index --require-hashes``.

The airgap wheel must be the same bytes for the same source, or ``build.json`` (which records its
hash) would differ between two bundles of the same inputs: it is built from a clean copy of the
source tree (never the working tree's stale ``build/``) with ``SOURCE_DATE_EPOCH`` fixing every
timestamp in the zip, and cached by the digest of that source.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.tags import Tag
from packaging.utils import canonicalize_name, parse_wheel_filename

import airgap
from airgap.adapters.fs import atomic_write_bytes
from airgap.adapters.wheels import ForeignResolver, WheelStore, describe_files, read_requires_dist
from airgap.core.profile import PythonFacts
from airgap.core.tags import compute_tags
from airgap.core.wheelhouse import Lock, Pin, required_names, verify_wheelhouse
from airgap.errors import EnvironmentFailure, IntegrityError, InvalidInputError
from airgap.services.build.wheelhouse import WheelhouseResult, WheelhouseSite, host_wheelhouse
from airgap.services.observer import NullObserver, Observer

# What setuptools reads to build the wheel (pyproject's packages, data-files, readme and license):
# copying only these keeps editors' scratch files, caches and the working tree's build/ out of it.
SOURCE_ENTRIES = ("pyproject.toml", "README.md", "LICENSE", "airgap", "bundle_templates", "policies")


def source_root() -> Path:
    """The airgap source tree this process runs from (``AIRGAP_SOURCE_DIR`` overrides it)."""
    override = os.environ.get("AIRGAP_SOURCE_DIR")
    root = Path(override) if override else Path(airgap.__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file() or not (root / "airgap" / "__init__.py").is_file():
        raise EnvironmentFailure(
            f"airgap is not running from its source tree ({root} has no pyproject.toml), so it cannot "
            "build its own wheel for the bundle",
            hint="install airgap from a source checkout (pip install -e .), set AIRGAP_SOURCE_DIR to "
            "one, or bundle without a target profile (the far side then needs airgap installed)",
        )
    return root


def check_interpreter(root: Path, py: PythonFacts) -> None:
    """Refuses (``InvalidInputError``) a far-side interpreter airgap cannot run on: not CPython, or
    outside the project's ``requires-python`` (RHEL 8's Python 3.6, say)."""
    import tomllib  # 3.11+: only the workstation bundles; the far side never imports this

    try:
        project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8")).get("project", {})
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise EnvironmentFailure(f"{root / 'pyproject.toml'} cannot be read: {exc}") from None
    spec = SpecifierSet(str(project.get("requires-python") or ""))
    if py.implementation != "cpython" or not spec.contains(py.version_str, prereleases=True):
        raise InvalidInputError(
            f"the far side's {py.implementation} {py.version_str} ({py.path}) cannot run airgap "
            f"(requires CPython {spec})",
            hint="install a newer python3 there, or choose it with --python",
        )


def _source_files(root: Path) -> Iterator[tuple[str, Path]]:
    """The files the wheel is built from, in a stable order: no caches, bytecode or hidden files."""
    for entry in SOURCE_ENTRIES:
        top = root / entry
        for path in [top] if top.is_file() else sorted(top.rglob("*")):
            rel = path.relative_to(root)
            hidden = any(p == "__pycache__" or p.startswith(".") for p in rel.parts)
            if path.is_file() and not hidden and path.suffix not in (".pyc", ".pyo"):
                yield rel.as_posix(), path


def source_digest(root: Path, epoch: int) -> str:
    """SHA-256 over every path, mode and byte the wheel is built from, and the timestamp it carries."""
    h = hashlib.sha256(f"airgap-wheel/1 {epoch}\n".encode())
    for rel, path in _source_files(root):
        h.update(f"{rel}\0{path.stat().st_mode & 0o777:o}\0{path.stat().st_size}\0".encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def build_airgap_wheel(
    root: Path, store: WheelStore, cache: Path, settings_args: list[str], epoch: int
) -> tuple[str, Path]:
    """The airgap wheel for this source tree, from the store when the same source was built before.

    pip builds it in build isolation (``build-system.requires`` fetched from the same index, with
    the same CA bundle, as every other download), because the workstation's own setuptools may be
    older than the project needs; the backend then only ever sees the clean copy.
    """
    digest = source_digest(root, epoch)
    memo = cache / f"airgap-wheel-{digest}.json"
    if memo.is_file():
        known = json.loads(memo.read_text())
        found = store.find(str(known["sha256"]))
        if found is not None:
            return str(known["sha256"]), found
    with tempfile.TemporaryDirectory(prefix="airgap-self-") as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        for rel, path in _source_files(root):
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / rel)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        env.update({"PIP_CONFIG_FILE": os.devnull, "SOURCE_DATE_EPOCH": str(epoch), "PYTHONHASHSEED": "0"})
        argv = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--isolated", *settings_args]
        proc = subprocess.run(
            [*argv, "--wheel-dir", str(out), str(src)], capture_output=True, env=env, timeout=900
        )
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
            raise EnvironmentFailure(
                f"building the airgap wheel from {root} failed: {(lines or ['no output'])[-1].strip()[:300]}",
                hint="check the network, proxy and --ca-bundle (pip fetches the build backend)",
            )
        wheels = sorted(out.glob("*.whl"))
        if len(wheels) != 1 or parse_wheel_filename(wheels[0].name)[0] != "airgap":
            raise EnvironmentFailure(
                f"pip wheel of {root} produced {[w.name for w in wheels]}, not one airgap wheel"
            )
        sha, stored = store.put(wheels[0])
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(memo, json.dumps({"filename": stored.name, "sha256": sha}).encode())
    return sha, stored


def airgap_wheelhouse(
    resolver: ForeignResolver,
    py: PythonFacts,
    target_label: str,
    dest: Path,
    store: WheelStore,
    lock_cache: Path,
    observer: Observer | None = None,
) -> WheelhouseResult:
    """``dest/wheels`` + ``dest/requirements.lock``: airgap and its runtime closure for ``py``, verified.

    ``InvalidInputError`` means this far side cannot have airgap from the bundle (its Python is too
    old, or some dependency publishes no wheel for its platform) and nothing is left in ``dest``;
    network, integrity and build failures raise their own errors.
    """
    obs = observer or NullObserver()
    settings = resolver.settings
    ca = str(settings.ca_bundle) if settings.ca_bundle else None
    root = source_root()
    check_interpreter(root, py)
    obs.begin("build airgap wheel", 1)
    sha, wheel = build_airgap_wheel(
        root, store, lock_cache, settings.pip_args(ca), settings.source_date_epoch
    )
    obs.advance("build airgap wheel", 1, wheel.name)
    obs.end("build airgap wheel")
    # airgap's own Requires-Dist as the far side's interpreter sees it (no extras: no dev tools).
    requirements = sorted(str(req) for _, req in required_names(read_requires_dist(wheel), py))
    try:
        deps = host_wheelhouse(
            resolver, py, target_label, requirements, WheelhouseSite(dest, store, lock_cache), obs
        )
    except InvalidInputError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    if "airgap" in deps.lock.by_name():
        raise IntegrityError("a dependency of airgap pulled another airgap from the index; refusing it")
    shutil.copyfile(wheel, dest / "wheels" / wheel.name)
    version = str(parse_wheel_filename(wheel.name)[1])
    pin = Pin("airgap", version, frozenset({sha}), "built from the airgap source tree (SOURCE_DATE_EPOCH)")
    tags: list[Tag] = compute_tags(py)
    lock = Lock(
        (*deps.lock.pins, pin),
        header=f"# airgap requirements.lock: airgap {version} and its dependencies for {target_label}\n"
        f"# target python {py.version_str}, best tag {tags[0]}\n"
        "# pip install --no-index --require-hashes --find-links wheels -r requirements.lock",
    )
    atomic_write_bytes(dest / "requirements.lock", lock.render().encode())
    files = sorted((dest / "wheels").iterdir())
    report = verify_wheelhouse(lock, describe_files(files), tags, py, roots=[canonicalize_name("airgap")])
    return WheelhouseResult(
        lock=lock,
        directory=dest,
        report=report,
        downloaded=deps.downloaded,
        from_cache=deps.from_cache,
        files=tuple(f.name for f in files),
    )
