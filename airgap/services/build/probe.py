"""`airgap probe`: learn the target before anything is built.

The collector (``airgap.adapters.probe_script``) does the reading; this service runs it here or
inside an image, validates what it returns as a ``Profile``, derives the warnings and writes the
profile atomically.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from airgap.adapters import probe_script
from airgap.adapters.fs import atomic_write_bytes
from airgap.core.profile import Profile
from airgap.core.profile_warnings import ProfileWarning, profile_warnings
from airgap.errors import EnvironmentFailure
from airgap.ports import ImageRunner
from airgap.services.observer import NullObserver, Observer

SECTIONS = 14  # the collector's concurrent sections, for progress reporting
IMAGE_TIMEOUT = 60.0


@dataclass(frozen=True)
class ProbeResult:
    """The validated profile, its warnings, and the exact bytes that were validated, to be written."""

    profile: Profile
    warnings: tuple[ProfileWarning, ...]
    document: bytes


def _finish(data: dict[str, object], origin: str) -> ProbeResult:
    document = (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
    profile = Profile.from_json(document, origin)
    return ProbeResult(profile, tuple(profile_warnings(profile)), document)


def probe_host(
    paths: list[str] | None = None,
    egress: str = probe_script.DEFAULT_EGRESS,
    budget: float = probe_script.DEFAULT_BUDGET,
    observer: Observer | None = None,
) -> ProbeResult:
    """Probes the machine this runs on: the far-side host, when airgap is installed there."""
    obs = observer or NullObserver()
    obs.begin("probe", SECTIONS)
    try:
        data = probe_script.collect(paths, egress, budget, on_step=lambda name: obs.advance("probe", 1, name))
    finally:
        obs.end("probe")
    data["source"] = {"kind": "host", "collector": "airgap " + _tool_version()}
    return _finish(data, "probe of this host")


def probe_image(runner: ImageRunner, ref: str, observer: Observer | None = None) -> ProbeResult:
    """Runs the same collector inside ``ref`` (no network, read-only root) and returns its profile.

    This is how bundling learns the base image's own Python, ABI and glibc.
    """
    obs = observer or NullObserver()
    obs.begin("probe-image", 2)
    try:
        described = runner.describe_image(ref)
        obs.advance("probe-image", 1, "image ready")
        argv = ["python3", "-I", "-c", collector_source(), "--output", "-", "--egress-check", "none"]
        out = runner.run_isolated(ref, argv, IMAGE_TIMEOUT)
        obs.advance("probe-image", 1, "collected")
    finally:
        obs.end("probe-image")
    try:
        data = json.loads(out)
    except ValueError:
        raise EnvironmentFailure(
            f"the probe inside {ref} printed no profile",
            hint="run `docker run --rm IMAGE python3 -V` to check the image has a working python3",
        ) from None
    data["source"] = {
        "kind": "image",
        "image": ref,
        "image_id": described.get("id"),
        "repo_digests": described.get("repo_digests", []),
    }
    return _finish(data, f"probe of image {ref}")


def collector_source() -> str:
    """The collector as one readable, stdlib-only file: what --export-script writes."""
    path = Path(probe_script.__file__)
    return path.read_text(encoding="utf-8")


def export_script(dest: Path) -> None:
    """Writes the collector atomically and executable, for a host where airgap is not installed."""
    atomic_write_bytes(dest, collector_source().encode(), mode=0o755)


def write_profile(result: ProbeResult, dest: Path) -> None:
    """Writes atomically: an interrupted probe never leaves a truncated profile behind."""
    atomic_write_bytes(dest, result.document)


def _tool_version() -> str:
    from airgap import __version__

    return f"{__version__} (python {sys.version.split()[0]})"
