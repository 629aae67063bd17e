"""Bundle format ``airgap.bundle/v2`` (docs/bundle-format.md, "Format v2"): steps 3 to 6c.

The container, control files and signature frame are v1's, and so is every check of a stored
member (formats/v1.py); what differs is what the members are: one blob per distinct content,
named by its SHA-256, and the signed manifest's ``files[]``: the map from every logical path to
its blob. A blob the bundle leaves out (``external``)
must be in the far side's blob store with exactly that content: it is re-hashed there, never
trusted by its name. Memory stays bounded by one chunk plus the small contents handed back.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from airgap.adapters.archive import TarReader
from airgap.core import bundle_v2
from airgap.core.build_record import BuildRecord
from airgap.core.bundle_format import (
    BUILD_RECORD,
    FORMAT_V2,
    MAX_BUILD_RECORD,
    FileEntry,
    Manifest,
)
from airgap.errors import InvalidInputError, TamperError
from airgap.services.media.formats._registry import BundleFormat, FormatResult, Keep, SignedFront
from airgap.services.media.formats.v1 import (
    check_front_headers,
    check_signed,
    check_sums,
    verify_members,
)
from airgap.services.observer import Observer

CHUNK = 1 << 20


class V2Format(BundleFormat):
    """The content-addressed layout ``airgap pack`` writes by default."""

    name = FORMAT_V2

    def parse_manifest(self, raw: bytes) -> Manifest:
        """See ``BundleFormat.parse_manifest``: ``bundle_v2.parse_manifest`` checks every field
        and every path-to-blob mapping."""
        return bundle_v2.parse_manifest(raw)

    def verify(self, reader: TarReader, front: SignedFront, keep: Keep, observer: Observer) -> FormatResult:
        """Steps 3 to 6c; see the module docstring."""
        # 3. The manifest is parsed and validated (each logical file maps to a listed blob of its
        #    size, or is external; each blob is named by its content and used), in its canonical
        #    spelling, naming the key that signed it; the headers read so far are the determined ones.
        manifest = self.parse_manifest(front.manifest_bytes)
        check_signed(manifest, front)
        mtime = check_front_headers(manifest, front)
        # 4. SHA256SUMS is signed by the same key and lists exactly the blobs.
        check_sums(reader, front, [(b.path, b.sha256) for b in manifest.blobs], mtime)
        # 5-6. Every blob, as v1 checks every member; its content is handed back under each
        #      logical path that wants it.
        users = bundle_v2.files_by_blob(manifest)

        def names(blob: FileEntry, size: int) -> tuple[str, ...]:
            return tuple(f.path for f in users[bundle_v2.blob_hex(blob)] if _wanted(f.path, size, keep))

        kept = verify_members(reader, manifest.blobs, mtime, names, observer)
        # 6c. Every blob left out is in the far side's store, with exactly its content.
        kept.update(check_external(manifest, front.blob_store, keep))
        # 6b. The build record the far side acts on is well typed (exit 4 naming the field).
        if BUILD_RECORD in kept:
            BuildRecord.from_json(kept[BUILD_RECORD])
        return FormatResult(manifest, kept)


def _wanted(path: str, size: int, keep: Keep) -> bool:
    if path == BUILD_RECORD:
        if size > MAX_BUILD_RECORD:
            raise InvalidInputError(f"the signed build.json is {size} bytes, over {MAX_BUILD_RECORD}")
        return True
    return keep(path, size)


def check_external(manifest: Manifest, store: Path | None, keep: Keep) -> dict[str, bytes]:
    """Each external blob, re-hashed in ``store``: missing or different is exit 3 naming the blob
    and the logical paths that need it. Returns the contents ``keep`` wants of external files."""
    kept: dict[str, bytes] = {}
    for hexd, files in sorted(bundle_v2.files_by_blob(manifest).items()):
        if not files[0].external:
            continue
        wanted = [f.path for f in files if _wanted(f.path, f.size, keep)]
        needed_by = ", ".join(f.path for f in files[:3]) + (
            f" and {len(files) - 3} more" if len(files) > 3 else ""
        )
        if store is None:
            raise TamperError(
                f"external blob {hexd} (needed by {needed_by}) cannot be checked: "
                "there is no blob store here",
                hint="verify on the far side whose store holds it, or ask for a full bundle",
            )
        found = stored_blob(store / hexd, bool(wanted))
        if found is None:
            raise TamperError(
                f"external blob {hexd} (needed by {needed_by}) is missing from the blob store {store}",
                hint="the bundle is a delta against content this side no longer has: ask for a full bundle",
            )
        digest, size, data = found
        if digest != hexd or size != files[0].size:
            raise TamperError(
                f"external blob {hexd} (needed by {needed_by}) in the blob store {store} has other content "
                f"(sha256 {digest[:16]}…, {size} bytes)",
                hint="the far side's store is damaged: remove that file, then ask for a full bundle",
            )
        if data is not None:
            for path in wanted:
                kept[path] = data
    return kept


def stored_blob(path: Path, keep: bool) -> tuple[str, int, bytes | None] | None:
    """(SHA-256, size, content if ``keep``) of a regular file in the blob store, streamed and never
    following a link; None when there is no such regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            return None
        h = hashlib.sha256()
        size = 0
        buf = bytearray() if keep else None
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
            size += len(block)
            if buf is not None:
                buf += block
        return h.hexdigest(), size, bytes(buf) if buf is not None else None
