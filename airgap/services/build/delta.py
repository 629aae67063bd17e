"""Delta bundles, on the workstation: which blobs of a new bundle the far side already holds.

Two sources say what the far side holds: its inventory (`airgap inventory`, carried back like a
target profile; signed by nobody) and a previous bundle it verified and installed (``--since``;
its signature is checked with a trusted key before its manifest is read). Neither is trusted for
integrity: every blob left out is still listed, with its hash and size, in the new bundle's signed
manifest and is re-hashed on the far side. A wrong claim costs a failed verification there
(exit 3, naming the blob), never a byte accepted unchecked.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from airgap.adapters import keys
from airgap.adapters.archive import TarReader
from airgap.adapters.fs import read_bytes
from airgap.core.bundle_format import MANIFEST, MANIFEST_SIG, MAX_MANIFEST, MAX_SIG, ROOT
from airgap.core.inventory import MAX_INVENTORY, DeltaPlan, Inventory, merge_held, plan_delta
from airgap.services.media.formats import next_named, reader_for
from airgap.services.media.formats._writing import hash_file
from airgap.services.media.formats.v1 import canonical_signature
from airgap.services.media.opening import locate_bundle, verify_with_any
from airgap.services.observer import BYTES, NullObserver, Observer


def load_inventory(path: Path) -> Inventory:
    """The far side's inventory, read strictly (a bad one is one line, exit 4)."""
    return Inventory.from_bytes(read_bytes(path, "inventory", MAX_INVENTORY))


def held_since(bundle: Path, trusted: tuple[keys.TrustedKey, ...]) -> dict[str, int]:
    """Every content hash (and size) a previous bundle's signed manifest lists — those it carried
    and those it left out as external — once its signature is checked with a trusted key.

    Only the signed front is read: a previous delta cannot be verified whole here, where its
    external blobs are not, and its manifest is all that says what the far side was sent. The
    far side is assumed to keep every blob of a bundle it installed, as install does since
    format v2; of a v1 bundle, only the image's blobs, which v1 installs kept.
    """
    handle = locate_bundle(bundle)
    handle.check_index(trusted)
    with handle.stream(120.0) as stream:
        reader = TarReader(stream, ROOT, first=MANIFEST)
        first = next_named(reader, MANIFEST, not_a_bundle=True)
        manifest_bytes = reader.read(first, MAX_MANIFEST)
        manifest_sig = reader.read(next_named(reader, MANIFEST_SIG), MAX_SIG)
    verify_with_any(trusted, manifest_bytes, manifest_sig, f"the manifest of {bundle.name}")
    canonical_signature(manifest_sig, MANIFEST_SIG)
    fmt = reader_for(manifest_bytes)
    manifest = fmt.parse_manifest(manifest_bytes)
    held: dict[str, int] = {}
    for entry in manifest.files:
        if not fmt.stores_each_content_once and "/blobs/sha256/" not in entry.path:
            continue  # a v1 install keeps only the image's blobs in the shared store
        if entry.content_sha256 is not None and entry.content_size is not None:
            held[entry.content_sha256] = entry.content_size
        else:
            held[entry.sha256] = entry.size
    return held


def bundle_files(staging: Path) -> list[tuple[str, Path]]:
    """(bundle path, file) of what the packer puts in a bundle of ``staging``."""
    from airgap.services.build.pack import content_files

    return content_files(staging)


def content_hashes(files: list[tuple[str, Path]], observer: Observer | None = None) -> dict[str, int]:
    """sha256 hex -> size of the files a bundle will hold, as blobs are named."""
    obs = observer or NullObserver()
    obs.begin("delta", sum(p.stat().st_size for _, p in files), BYTES)
    out: dict[str, int] = {}
    try:
        for _, path in files:
            sha, size = hash_file(path, lambda n: obs.advance("delta", n))
            out[sha] = size
    finally:
        obs.end("delta")
    return out


def plan(content: Mapping[str, int], *held: Mapping[str, int]) -> DeltaPlan:
    """What to leave out: every blob of ``content`` some source says the far side holds."""
    return plan_delta(content, merge_held(held))
