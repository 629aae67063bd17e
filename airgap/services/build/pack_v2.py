"""The v2 layout of a staging directory: each distinct content once, as a blob named by its hash.

The three wheelhouses (the image's, the host's, airgap's own) share most wheels, and the OCI
layout's blobs are content-addressed already; v2 stores each such content once and lists every
logical path that uses it in the signed manifest. Content the far side already holds (``external``)
is listed but not stored. See docs/bundle-format.md ("Format v2").
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from airgap.core.bundle_format import MAX_RATIO, FileEntry
from airgap.core.bundle_v2 import blob_path
from airgap.services.build.pack_files import compress, hash_file, should_compress
from airgap.services.observer import Observer


def layout(
    files: list[tuple[str, Path]], work: Path, external: frozenset[str], obs: Observer
) -> tuple[list[FileEntry], list[FileEntry], dict[str, tuple[Path, int]]]:
    """(logical files, blobs to store, where each blob's bytes are). A large compressible content
    is compressed once, whichever of its paths comes first; a content in ``external`` is hashed
    but not stored."""
    logical: list[FileEntry] = []
    blobs: dict[str, FileEntry] = {}
    sources: dict[str, tuple[Path, int]] = {}
    seen: set[str] = set()
    for rel, path in files:
        size = path.stat().st_size
        sha: str | None = None
        if should_compress(path, size):
            dest = work / hashlib.sha256(rel.encode()).hexdigest()
            stored_size, stored_sha, size, sha = compress(path, dest)
            if sha in seen or sha in external:
                dest.unlink()
            elif size <= max(stored_size, 1) * MAX_RATIO:
                # Beyond the ratio the verifier accepts, a content is stored as it is (below).
                blob = FileEntry(blob_path(sha, True), stored_size, stored_sha, "zstd", size, sha)
                blobs[sha] = blob
                sources[blob.path] = (dest, stored_size)
            else:
                dest.unlink()
        if sha is None:
            sha, size = hash_file(path)
        if sha not in seen and sha not in external and sha not in blobs:
            blob = FileEntry(blob_path(sha, False), size, sha)
            blobs[sha] = blob
            sources[blob.path] = (path, size)
        seen.add(sha)
        logical.append(FileEntry(rel, size, sha, external=sha in external))
        obs.advance("hash", size, rel)
    return logical, sorted(blobs.values(), key=lambda b: b.path), sources
