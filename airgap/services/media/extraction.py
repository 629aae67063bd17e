"""Streaming a verified bundle's content into the far side's content store.

How the members come out is the format's (``BundleFormat.extract``, services/media/formats/):
every member is hashed again on the way out and checked against the verified manifest; compressed
members are inflated no further than their signed size; OCI blobs go to one shared store, where a
blob is reused only if it still hashes to its name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airgap.core.build_record import BuildRecord
from airgap.errors import InvalidInputError
from airgap.services.media.formats import format_named
from airgap.services.media.formats._extracting import disk_error as disk_error
from airgap.services.media.verify import VerifiedBundle


def extract(
    bundle: Path,
    verified: VerifiedBundle,
    want: Callable[[str], bool],
    dest: Path,
    blobs: Path,
    created: list[Path] | None = None,
    *,
    root: Path | None = None,
    copy: bool = False,
) -> None:
    """Streams the chosen files out of the bundle into ``dest`` (OCI blobs into the shared ``blobs``),
    re-hashing each one against the verified manifest, decompressing within the signed size.
    ``root``: the content store both lie in; no directory from it down may be a link or another
    user's. ``copy``: the caller will change the tree, so no file may share the store's inode."""
    fmt = format_named(verified.manifest.format)
    fmt.extract(verified.handle.stream, verified.manifest, want, dest, blobs, created, root, copy)


def model_file(record: BuildRecord) -> str:
    """The model file the signed build record names (checked as a safe path at verify time)."""
    file = record.model.file
    if file is None:
        raise InvalidInputError("the signed build.json names no model.file: there is nothing to serve")
    return file


def read_record(content: Path) -> BuildRecord:
    """The signed build.json of an installed bundle, from the content store (re-hashed against the
    signed manifest when it was extracted)."""
    return BuildRecord.from_json((content / "build.json").read_bytes())


def read_contract(content: Path) -> dict[str, Any]:
    """The golden inputs and outputs the installed model is held to; a bundle without them
    cannot be proved to work here."""
    path = content / "model" / "contract.json"
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise InvalidInputError("the bundle has no model/contract.json: nothing to smoke-test with") from None
    except ValueError as exc:
        raise InvalidInputError(f"the bundle's model/contract.json is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInputError("the bundle's model/contract.json is not an object")
    return data
