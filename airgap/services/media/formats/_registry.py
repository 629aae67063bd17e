"""The frame every bundle format shares, the port each format implements, and their registry.

The port is here, not in ``airgap/ports.py``: it exchanges service-level values (the tar reader,
the signed front, the observer), which the ports module may not import. The package
(``formats/__init__.py``) registers the built-in formats and re-exports these names.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from airgap.adapters.archive import Member, TarReader
from airgap.core.bundle_format import ROOT, FileEntry, Manifest, strict_json
from airgap.errors import InvalidInputError, TamperError, UnsupportedFormatError, UsageError
from airgap.services.observer import Observer

Keep = Callable[[str, int], bool]
"""(content path, content size) -> whether the reader hands the member's content back."""
OpenStream = Callable[[], AbstractContextManager[BinaryIO]]
"""Opens the bundle's bytes, in order, once more (``BundleHandle.stream``)."""


@dataclass(frozen=True)
class SignedFront:
    """The frame every format starts with, as read and checked by the opener: the manifest's
    exact bytes and their signature (both members), and the trusted key that verified them."""

    manifest_bytes: bytes
    manifest_sig: bytes
    manifest_member: Member
    sig_member: Member
    key_id: str
    algorithm: str  # of the trusted key that verified the signature
    verify_with_signer: Callable[[bytes, bytes, str], None]  # (data, signature, what): raises
    # The far side's shared blob store (files named by their SHA-256): where a format that lets a
    # bundle leave content out finds it. None: there is none, and such a bundle cannot verify.
    blob_store: Path | None = None


@dataclass(frozen=True)
class Layout:
    """How a format stores a staging directory's files: what the manifest lists, and the members
    written after the control files, with where each member's bytes are."""

    files: tuple[FileEntry, ...]  # the manifest's files[], sorted by path
    stored: tuple[FileEntry, ...]  # the archive's members after the control files, sorted by path
    sources: dict[str, tuple[Path, int]]  # member path -> (file holding its bytes, size)
    blobs: tuple[FileEntry, ...] | None  # the manifest's blob list, None when the members are the files


@dataclass(frozen=True)
class FormatResult:
    """What a format reader proves: the typed manifest, and the small members it handed back."""

    manifest: Manifest
    kept: dict[str, bytes]


class BundleFormat(abc.ABC):
    """One bundle format: how the packer lays a staging directory out, how a bundle is verified
    (raising on every failure, returning only once every byte of the archive is what the signed
    manifest determines), and how a verified bundle's members are streamed out."""

    name: str = ""  # the manifest's ``format``
    option: str = ""  # what ``--format`` calls it; "" for a format this airgap does not write
    summary: str = ""  # one clause for ``--format``'s help
    # Whether a bundle may leave out contents the far side holds (listed, not stored: "external").
    supports_external_blobs: bool = False
    # Whether an install keeps every content the bundle carries in the far side's blob store
    # (else only the image's blobs): what a delta may assume the far side still holds.
    stores_each_content_once: bool = False

    def layout(
        self, files: list[tuple[str, Path]], work: Path, external: frozenset[str], observer: Observer
    ) -> Layout:
        """The members for ``files`` ((bundle path, file), sorted), compressing into ``work``;
        ``external`` content hashes are listed but not stored. A read-only format cannot."""
        raise UsageError(f"bundle format {self.name} is read here, never written")

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
        """Streams the files ``want`` chooses of a verified bundle into ``dest`` (OCI blobs into the
        shared store ``blobs``), re-hashing each one against ``manifest``; appends every file it
        writes to ``created``. The media may have changed since verification: what differs raises.
        Every directory written to, from ``root`` (the content store) down, is a real one this
        process owns; every file written is read-only, and with ``copy`` never shares an inode
        with the store (for a caller that changes the tree afterwards)."""
        raise UnsupportedFormatError(f"bundle format {self.name} is verified here, never extracted")

    @abc.abstractmethod
    def parse_manifest(self, raw: bytes) -> Manifest:
        """The typed manifest from its bytes (already signature-checked when verifying; not when
        ``airgap inspect`` takes a quick look)."""

    @abc.abstractmethod
    def verify(self, reader: TarReader, front: SignedFront, keep: Keep, observer: Observer) -> FormatResult:
        """Checks everything after the signed front, streaming ``reader`` to its end."""


def next_named(reader: TarReader, name: str, not_a_bundle: bool = False) -> Member:
    """The next member, which must be ``name``: control files have one fixed order."""
    member = reader.next()
    full = f"{ROOT}/{member.name}" if member else None
    if full != name:
        if not_a_bundle:
            raise InvalidInputError(f"not an airgap bundle: the archive does not start with {name}")
        raise TamperError(f"the bundle's control files are out of order: expected {name}, found {full}")
    assert member is not None
    return member


_READERS: dict[str, BundleFormat] = {}


def register(reader: BundleFormat) -> BundleFormat:
    """Makes ``reader`` the one for its format name; returns it, so a module can register on import."""
    if not reader.name:
        raise ValueError("a bundle format needs a name")
    _READERS[reader.name] = reader
    return reader


def names() -> tuple[str, ...]:
    """What ``--format`` chooses from: the formats this airgap writes, sorted."""
    return tuple(sorted(r.option for r in _READERS.values() if r.option))


def get(option: str) -> BundleFormat:
    """The format ``--format`` names; an unknown one is a usage error (exit 2)."""
    for reader in _READERS.values():
        if reader.option and reader.option == option:
            return reader
    raise UsageError(f"bundle format {option!r} is not one of {', '.join(names())}")


def unregister(name: str) -> None:
    """Removes a reader (tests register a fake format and take it away again)."""
    _READERS.pop(name, None)


def known_formats() -> tuple[str, ...]:
    """The format names this build reads, for messages and `airgap version`-style reports."""
    return tuple(sorted(_READERS))


def format_of(raw: bytes) -> str:
    """The ``format`` a manifest declares, read as strictly as the manifest itself will be."""
    try:
        data = strict_json(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidInputError(f"manifest.json is not JSON: {str(exc)[:120]}") from None
    fmt = data.get("format") if isinstance(data, dict) else None
    if not isinstance(fmt, str):
        raise InvalidInputError("manifest.json is not an airgap bundle manifest (it has no format)")
    return fmt


def reader_for(raw: bytes) -> BundleFormat:
    """The registered reader for the format ``raw`` declares; an unknown one is one line, exit 4."""
    return format_named(format_of(raw))


def format_named(fmt: str) -> BundleFormat:
    """The registered format whose manifest ``format`` is ``fmt``; an unknown one is one line, exit 4."""
    reader = _READERS.get(fmt)
    if reader is None:
        raise UnsupportedFormatError(
            f"the bundle is in format {fmt[:60]!r}, which this airgap cannot read "
            f"(it reads {', '.join(known_formats())})",
            hint="install a newer airgap here, or ask the publisher for a bundle in a format it reads",
        )
    return reader
