"""Bundle format ``airgap.bundle/v2`` (docs/bundle-format.md, "Format v2"): the packer's layout,
verification's steps 3 to 6c, and extraction into the far side's blob store.

The container, control files and signature frame are v1's, and so is every check of a stored
member (formats/v1.py); what differs is what the members are: one blob per distinct content,
named by its SHA-256, and the signed manifest's ``files[]``: the map from every logical path to
its blob. A blob the bundle leaves out (``external``)
must be in the far side's blob store with exactly that content: it is re-hashed there, never
trusted by its name. Memory stays bounded by one chunk plus the small contents handed back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from airgap.adapters.archive import TarReader
from airgap.core import bundle_v2
from airgap.core.bundle_format import (
    BUILD_RECORD,
    FORMAT_V2,
    MAX_BUILD_RECORD,
    MAX_RATIO,
    FileEntry,
    Manifest,
)
from airgap.errors import InvalidInputError, TamperError
from airgap.services.media.formats._extracting import (
    link_into,
    members,
    private_dir,
    reusable,
    store_problem,
    write_member,
)
from airgap.services.media.formats._registry import (
    BundleFormat,
    FormatResult,
    Keep,
    Layout,
    OpenStream,
    SignedFront,
)
from airgap.services.media.formats._writing import compress, hash_file, pays, should_compress
from airgap.services.media.formats.v1 import (
    check_front_headers,
    check_signed,
    check_sums,
    verify_members,
)
from airgap.services.observer import Observer


class V2Format(BundleFormat):
    """The content-addressed layout ``airgap pack`` writes by default."""

    name = FORMAT_V2
    option = "v2"
    summary = "v2 stores each distinct content once"
    supports_external_blobs = True
    stores_each_content_once = True

    def layout(
        self, files: list[tuple[str, Path]], work: Path, external: frozenset[str], observer: Observer
    ) -> Layout:
        """See ``BundleFormat.layout``: each distinct content once, as a blob named by its hash. A
        large compressible content is compressed once, whichever of its paths comes first; a
        content in ``external`` is hashed but not stored."""
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
                elif size <= max(stored_size, 1) * MAX_RATIO and pays(size, stored_size):
                    # Beyond the ratio the verifier accepts, or when zstd saves too little, a
                    # content is stored as it is (below).
                    blob = FileEntry(
                        bundle_v2.blob_path(sha, True), stored_size, stored_sha, "zstd", size, sha
                    )
                    blobs[sha] = blob
                    sources[blob.path] = (dest, stored_size)
                else:
                    dest.unlink()
            if sha is None:
                sha, size = hash_file(path)
            if sha not in seen and sha not in external and sha not in blobs:
                blob = FileEntry(bundle_v2.blob_path(sha, False), size, sha)
                blobs[sha] = blob
                sources[blob.path] = (path, size)
            seen.add(sha)
            logical.append(FileEntry(rel, size, sha, external=sha in external))
            observer.advance("hash", size, rel)
        stored = tuple(sorted(blobs.values(), key=lambda b: b.path))
        return Layout(tuple(logical), stored, sources, stored)

    def extract(
        self,
        stream: OpenStream,
        manifest: Manifest,
        want: Callable[[str], bool],
        dest: Path,
        blobs: Path,
        created: list[Path] | None,
        root: Path | None = None,
        copy: bool = False,
    ) -> None:
        """See ``BundleFormat.extract``: every blob the bundle carries goes into the shared store
        once (re-hashed on the way; one already there, or an external one a chosen file needs, is
        re-hashed there), then every chosen logical path is a hard link to it (a copy only where a
        link cannot be made). An OCI layout's blobs stay in the store, as in v1: the targets read
        the image from there."""
        chosen = [f for f in manifest.files if want(f.path)]
        needed = {f.sha256: f.size for f in chosen}
        stored = {b.path: b for b in manifest.stored}
        private_dir(blobs, root)
        have: set[str] = set()
        with stream() as opened:
            for reader, member, entry in members(opened, stored):
                hexd = bundle_v2.blob_hex(entry)
                # Every blob the bundle carries is kept, not only those this target needs: the
                # store is what `airgap inventory` reports, so the next delta can leave all out.
                target = blobs / hexd
                size = entry.content_size if entry.content_size is not None else entry.size
                if reusable(target, hexd, size):
                    for _ in reader.chunks(member):
                        pass
                else:
                    write_member(reader, member, entry, target)
                    if created is not None:
                        created.append(target)
                have.add(hexd)
        for hexd in sorted(set(needed) - have):
            # External (or, were the media changed, missing): the store's copy, re-hashed now.
            if not reusable(blobs / hexd, hexd, needed[hexd]):
                problem = store_problem(blobs / hexd, hexd, needed[hexd])[0]
                users = ", ".join(f.path for f in chosen if f.sha256 == hexd)
                raise TamperError(
                    f"blob {hexd} (needed by {users}) in the blob store {blobs} {problem}",
                    hint="the store changed since verification: verify again, or ask for a full bundle",
                )
        made: set[Path] = set()
        base = root if root is not None and dest.is_relative_to(root) else dest
        for f in chosen:
            if "/blobs/sha256/" not in f.path:
                target = dest / f.path
                if target.parent not in made:
                    private_dir(target.parent, base)
                    made.add(target.parent)
                link_into(blobs / f.sha256, target, copy)

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
        check_sums(reader, front, [(b.path, b.sha256) for b in manifest.stored], mtime)
        # 5-6. Every blob, as v1 checks every member; its content is handed back under each
        #      logical path that wants it.
        users = bundle_v2.files_by_blob(manifest)

        def names(blob: FileEntry, size: int) -> tuple[str, ...]:
            return tuple(f.path for f in users[bundle_v2.blob_hex(blob)] if _wanted(f.path, size, keep))

        kept = verify_members(reader, manifest.stored, mtime, names, observer)
        # 6c. Every blob left out is in the far side's store, with exactly its content.
        kept.update(check_external(manifest, front.blob_store, keep))
        # 6b. The build record the far side acts on is well typed (exit 4 naming the field).
        if BUILD_RECORD in kept:
            from airgap.core.build_record import BuildRecord  # imported while the pool hashes

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
        problem, data = store_problem(store / hexd, hexd, files[0].size, bool(wanted))
        if problem == "is missing":
            raise TamperError(
                f"external blob {hexd} (needed by {needed_by}) is missing from the blob store {store}",
                hint="the bundle is a delta against content this side no longer has: ask for a full bundle",
            )
        if problem is not None:
            raise TamperError(
                f"external blob {hexd} (needed by {needed_by}) in the blob store {store} {problem}",
                hint="the far side's store is damaged: remove that file, then ask for a full bundle",
            )
        if data is not None:
            for path in wanted:
                kept[path] = data
    return kept
