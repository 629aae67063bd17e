"""`airgap inspect` and `airgap join`: read a bundle's front matter; reassemble split parts.

Inspect reads only the first members of the archive (the manifest and the control files) and
parses them without trusting them: it is for a quick look at the media, and says so. Join checks
every part against the signed parts index before writing the joined file; with parity parts it
rebuilds a missing or damaged part first (with ``repair``, into the parts directory).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airgap.adapters import keys
from airgap.adapters.fs import atomic_writer
from airgap.adapters.space import require_free
from airgap.core.bundle_format import PARTS_INDEX_SUFFIX
from airgap.errors import InvalidInputError
from airgap.services.media.formats import reader_for
from airgap.services.media.opening import BundleHandle, locate_bundle
from airgap.services.media.parity import Repair
from airgap.services.observer import BYTES, NullObserver, Observer

CHUNK = 1 << 20


def inspect_bundle(path: Path) -> dict[str, Any]:
    """The bundle's front matter, parsed by its format's reader but NOT verified (``verified``
    is false): a quick look at the media; `airgap verify` is the check."""
    src = locate_bundle(path)
    raw = src.read_front()
    manifest = reader_for(raw).parse_manifest(raw)
    paths = [f.content_path for f in manifest.files]
    parts = []
    if src.parts:
        parts = [{"name": n, "sha256": sha} for n, sha in src.parts]
    external = sorted({f.sha256 for f in manifest.files if f.external})
    return {
        "format": manifest.format,
        "name": manifest.name,
        "version": manifest.version,
        "created": manifest.created,
        "expires": manifest.expires,
        "tool": manifest.tool,
        "key_id": manifest.key_id,
        "target_profile_sha256": manifest.target_profile_sha256,
        "images": [image.to_json() for image in manifest.images],
        "locks": dict(manifest.locks),
        "policy": dict(manifest.policy),
        "wheels": sorted(p.rsplit("/", 1)[-1] for p in paths if p.endswith(".whl")),
        "model": sorted(p for p in paths if p.startswith("model/")),
        "files": [f.to_json() for f in manifest.files],
        "blobs": [b.to_json() for b in manifest.blobs or ()],  # v2: the stored members, each content once
        "external": external,  # v2: contents left out, which the far side's blob store must hold
        "bytes": manifest.total_size,
        "parts": parts,
        "verified": False,
    }


@dataclass(frozen=True)
class Joined:
    """The joined bundle file and the parts rebuilt from parity on the way."""

    path: Path
    repaired: tuple[Repair, ...]


def join_bundle(
    index: Path,
    output: Path | None,
    trusted: tuple[keys.TrustedKey, ...],
    observer: Observer | None = None,
    repair: bool = False,
) -> Joined:
    """Reassembles split parts into one bundle file, only if every part matches the signed index.

    With parity parts, a missing or damaged part is rebuilt first (into a temporary directory;
    with ``repair``, every part is hashed and the bad ones — parity parts included — are
    replaced beside the index, so the media set is whole again)."""
    obs = observer or NullObserver()
    if not index.name.endswith(PARTS_INDEX_SUFFIX):
        raise InvalidInputError(f"{index} is not a parts index (*{PARTS_INDEX_SUFFIX})")
    src = locate_bundle(index)
    src.check_index(trusted)
    src = src.with_repairs(trusted, obs, in_place=repair)
    dest = output or index.parent / index.name[: -len(PARTS_INDEX_SUFFIX)]
    require_free(dest.parent, src.total_size(), "join")

    def copy(handle: BundleHandle) -> None:
        # One read: each part is hashed as it is copied, and the joined file appears only if
        # every part matched the signed index.
        obs.begin("join", handle.total_size(), BYTES)
        try:
            with atomic_writer(dest) as out, handle.stream() as stream:
                for block in iter(lambda: stream.read(CHUNK), b""):
                    out.write(block)
                    obs.advance("join", len(block))
        finally:
            obs.end("join")

    src, _ = src.read_repairing(trusted, obs, copy)
    return Joined(dest, src.repaired)
