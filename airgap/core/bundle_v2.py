"""Bundle format v2 (``airgap.bundle/v2``): content-addressed, as values. See docs/bundle-format.md.

Every distinct content is stored once, as the member ``bundle/blobs/sha256/<hex>`` (``<hex>.zst``
when stored compressed; ``hex`` is always the SHA-256 of the content, decompressed). The signed
manifest lists every logical file (``files[]``: path, content size and SHA-256, and ``external``
when its blob is left out of the archive) and the blobs stored compressed (``blobs[]``); a
file's SHA-256 is the name of its blob, which is stored as it is unless ``blobs[]`` lists it.
Nothing is in the archive twice: the control files are v1's, and the map from paths to blobs is
the signed manifest itself (a reviewer reads it with grep and sed). Nothing here touches the disk.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from airgap.core.bundle_format import (
    _TOP_LEVEL,
    FORMAT_V2,
    FileEntry,
    Manifest,
    _bad,
    _digest,
    _int,
    _list,
    _object,
    check_distinct,
    check_file_path,
    common_fields,
    load_manifest,
    signer_algorithm,
)
from airgap.errors import IntegrityError, InvalidInputError

BLOB_DIR = "blobs/sha256"
TOP_LEVEL_V2 = _TOP_LEVEL | {"blobs"}
# A logical file may not live under blobs/ (in any case): once the tree is materialised beside the
# blobs, the two would be one path. The control files' names are reserved for every format
# (core/names.py).
RESERVED = ("blobs",)
_BLOB_PATH = re.compile(r"^blobs/sha256/([0-9a-f]{64})(\.zst)?$")


def blob_path(hexd: str, compressed: bool) -> str:
    """The member path (relative to ``bundle/``) of the blob whose content hashes to ``hexd``."""
    return f"{BLOB_DIR}/{hexd}{'.zst' if compressed else ''}"


def blob_hex(entry: FileEntry) -> str:
    """The content hash a blob entry is named by (the part of its path after ``blobs/sha256/``)."""
    return entry.content_path.rsplit("/", 1)[1]


def _file_entry(data: object, where: str) -> FileEntry:
    obj = _object(data, where, frozenset({"path", "size", "sha256", "external"}))
    path = check_file_path(_text_path(obj, where), where)
    external = obj.get("external", False)
    if external is not True and "external" in obj:
        raise _bad(f"{where}.external", "must be true when present")
    return FileEntry(path, _int(obj, "size", where), _digest(obj, "sha256", where), external=bool(external))


def _text_path(obj: Mapping[str, Any], where: str) -> str:
    v = obj.get("path")
    if not isinstance(v, str) or not v:
        raise InvalidInputError(f"manifest: {where}.path must be a non-empty string")
    return v


def _blob_entry(data: object, where: str) -> FileEntry:
    entry = FileEntry.from_json(data, where)
    m = _BLOB_PATH.fullmatch(entry.path)
    if m is None or not m.group(2) or not entry.compression:
        raise _bad(
            f"{where}.path", f"is not a compressed blob (blobs/sha256/<64 hex>.zst): {entry.path!r:.100}"
        )
    digest = entry.content_sha256 if entry.compression else entry.sha256
    if m.group(1) != digest:
        raise IntegrityError(
            f"{entry.path} is a content-addressed blob whose content hashes to "
            f"{str(digest)[:16]}…, not to its name",
            hint="a blob named for other content would poison the shared blob store; refuse this bundle",
        )
    return entry


def parse_manifest(raw: bytes) -> Manifest:
    """A v2 manifest from its bytes (after its signature verified), every field and every mapping
    checked: each compressed blob named by its content, listed once and used by a file; each
    file listed once, outside ``blobs/`` and the control names, of the size of the blob it maps
    to; a file marked external exactly when its content is not in the bundle. ``Manifest.blobs``
    is every stored member: the compressed ones listed, and one as-is blob per other content."""
    data = load_manifest(raw, FORMAT_V2, TOP_LEVEL_V2)
    algorithm = signer_algorithm(data)
    files = tuple(_file_entry(f, f"files[{i}]") for i, f in enumerate(_list(data.get("files"), "files")))
    check_distinct(files, RESERVED)
    listed = tuple(_blob_entry(b, f"blobs[{i}]") for i, b in enumerate(_list(data.get("blobs"), "blobs")))
    by_hex: dict[str, FileEntry] = {}
    for blob in listed:
        if by_hex.setdefault(blob_hex(blob), blob) is not blob:
            raise IntegrityError(f"manifest lists blob {blob_hex(blob)[:16]}… twice")
    # Every content a file needs is a blob of the bundle unless the file is external: stored as it
    # is (blobs/sha256/<sha256>, of the file's size) unless blobs[] lists it compressed.
    stored: dict[str, FileEntry] = {}
    for f in files:
        found = by_hex.get(f.sha256)
        if f.external:
            if found is not None:
                raise IntegrityError(
                    f"{f.path} is marked external, yet its blob {found.path} is in the bundle"
                )
            continue
        blob = found or FileEntry(blob_path(f.sha256, False), f.size, f.sha256)
        size = blob.content_size if blob.compression else blob.size
        if size != f.size or stored.setdefault(f.sha256, blob).size != blob.size:
            raise IntegrityError(f"{f.path} is {f.size} bytes but its blob {blob.path} holds {size}")
    unused = sorted(set(by_hex) - set(stored))
    if unused:
        raise IntegrityError(f"blob {by_hex[unused[0]].path} is in the manifest but no file maps to it")
    # Files sharing a content share its size, external ones included: each one's own size is
    # what the store's copy is held to.
    sizes: dict[str, FileEntry] = {}
    for f in files:
        first = sizes.setdefault(f.sha256, f)
        if first.size != f.size:
            raise IntegrityError(
                f"{f.path} is {f.size} bytes but {first.path}, of the same content "
                f"{f.sha256[:16]}…, is {first.size}"
            )
    externals = {f.sha256 for f in files if f.external}
    both = sorted(externals & set(stored))
    if both:
        raise IntegrityError(
            f"the content {both[0][:16]}… is marked external for one file and stored for another"
        )
    blobs = tuple(sorted(stored.values(), key=lambda b: b.path))
    # A content-addressed logical file (an OCI blob) is named by its content, and every digest an
    # image names is a file of its layout: present, or external.
    paths = {f.path for f in files}
    for f in files:
        _, sep, name = f.path.rpartition("/blobs/sha256/")
        if sep and name != f.sha256:
            raise IntegrityError(
                f"{f.path} is a content-addressed blob whose content hashes to "
                f"{f.sha256[:16]}…, not to its name",
                hint="a blob named for other content would poison the shared blob store; refuse this bundle",
            )
    fields = common_fields(data)
    for image in fields["images"]:
        for digest in (image.manifest_digest, image.config_digest, *(d for d, _ in image.layers)):
            if f"{image.layout}/blobs/sha256/{digest.split(':', 1)[1]}" not in paths:
                raise IntegrityError(
                    f"image {image.name} names blob {digest[:23]}… that is not in the bundle"
                )
    return Manifest(files=files, algorithm=algorithm, format=FORMAT_V2, blobs=blobs, **fields)


def files_by_blob(manifest: Manifest) -> dict[str, list[FileEntry]]:
    """The logical files each content hash stands for (several when a content is shared)."""
    out: dict[str, list[FileEntry]] = {}
    for f in manifest.files:
        out.setdefault(f.sha256, []).append(f)
    return out
