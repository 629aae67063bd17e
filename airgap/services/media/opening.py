"""Opening a bundle: the one way every reader — verify, check, install, inspect, join — gets at it.

``locate_bundle`` finds the bytes (one file, or the parts a signed parts index names) and gives a
``BundleHandle`` that knows how to stream them, parts hashed against the index as they pass.
``open_bundle`` proves the bundle whole, unmodified, signed by a trusted key, fresh and not a
rollback, and returns a ``VerifiedBundle``: the typed manifest and a handle to read the same
bytes again. The steps are numbered as in docs/bundle-format.md ("Verification"); the part of
them that depends on the format is a reader registered in services/media/formats/ by
``manifest.format``. Nothing is extracted and nothing inside the bundle is trusted before the
signature over the manifest's exact bytes has been checked. Every failure raises.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO, TypeVar

from airgap.adapters import keys
from airgap.adapters.archive import TarReader, TimedReader, open_regular, read_small
from airgap.adapters.parts import ConcatenatedParts
from airgap.core import names, versions
from airgap.core.bundle_format import (
    MANIFEST,
    MANIFEST_SIG,
    MAX_MANIFEST,
    MAX_SIG,
    PARTS_INDEX_SUFFIX,
    ROOT,
    Manifest,
)
from airgap.core.checksums import parse_index
from airgap.core.parity import ParityIndex, parity_index_name
from airgap.errors import (
    ExpiredError,
    IntegrityError,
    InvalidInputError,
    RollbackError,
    SignatureError,
    TamperError,
    UntrustedKeyError,
)
from airgap.services.media.formats import SignedFront, next_named, reader_for
from airgap.services.media.formats.v1 import canonical_signature
from airgap.services.media.locating import missing_bundle, names_parts_index
from airgap.services.media.options import UnsafeOptionWarning as UnsafeOptionWarning
from airgap.services.media.options import VerifyOptions as VerifyOptions
from airgap.services.media.parity import Repair, RepairSpace, repair
from airgap.services.observer import BYTES, NullObserver, Observer

MAX_INDEX = 1 << 20
T = TypeVar("T")


@dataclass(frozen=True)
class BundleHandle:
    """A bundle on the media: one ``.airgap.tar`` file, or the parts its parts index names.

    Only the index has been read; nothing in it is trusted until ``check_index`` passed. With a
    parity index beside it, parts that are missing or damaged are rebuilt (``with_repairs``) into
    a temporary directory, never on the media unless asked; ``repaired`` names them.
    """

    path: Path
    paths: tuple[Path, ...]
    parts: tuple[tuple[str, str], ...] | None = None  # (name, sha256) from the parts index
    index: bytes | None = None
    index_path: Path | None = None
    parity_raw: bytes | None = None  # the parity index beside the parts index, not yet checked
    repaired: tuple[Repair, ...] = ()
    space: RepairSpace | None = field(default=None, repr=False, compare=False)

    @property
    def split(self) -> bool:
        """Whether the bundle is cut into parts (and so has a parts index)."""
        return self.parts is not None

    @property
    def can_repair(self) -> bool:
        """Whether parity parts are there to rebuild a missing or damaged part."""
        return self.parity_raw is not None

    def check_index(self, trusted: tuple[keys.TrustedKey, ...]) -> None:
        """Step 0: the parts index (and the parity index, if any) is signed by a trusted key and
        every part it names is present — or, with parity, few enough are missing to rebuild —
        before a byte of any part is read."""
        if self.parts is None or self.index is None or self.index_path is None:
            return
        sig_path = self.index_path.parent / (self.index_path.name + ".sig")
        if not sig_path.exists():
            raise SignatureError(f"the parts index has no signature ({sig_path.name} is missing)")
        sig = read_small(sig_path, MAX_SIG, "a signature")
        # One spelling, as for the signatures inside the archive: base64 of the low-s DER, one newline.
        canonical_signature(sig, sig_path.name)
        verify_with_any(trusted, self.index, sig, "the parts index")
        parity = self.parity(trusted)
        missing = [p.name for p in self.paths if not p.exists()]
        if missing and parity is None:
            raise IntegrityError(
                f"part {missing[0]} is missing ({len(missing)} of {len(self.paths)} parts missing)",
                hint="copy the missing parts from the original media next to the index",
            )
        if parity is not None and len(missing) > len(parity.parity):
            raise IntegrityError(
                f"{len(missing)} parts are missing: {', '.join(missing)}; {len(parity.parity)} parity "
                f"part(s) rebuild at most {len(parity.parity)}",
                hint="copy the missing parts from the original media next to the index",
            )

    def parity(self, trusted: tuple[keys.TrustedKey, ...]) -> ParityIndex | None:
        """The parity index, once its signature verified with a trusted key and it names exactly
        the parts of the signed parts index; None when the bundle has none."""
        if self.parity_raw is None or self.index is None or self.index_path is None or self.parts is None:
            return None
        path = self.index_path.parent / parity_index_name(self.index_path.name)
        sig = path.parent / (path.name + ".sig")
        if not sig.exists():
            raise SignatureError(f"the parity index has no signature ({sig.name} is missing)")
        sig_bytes = read_small(sig, MAX_SIG, "a signature")
        canonical_signature(sig_bytes, sig.name)
        verify_with_any(trusted, self.parity_raw, sig_bytes, "the parity index")
        index = ParityIndex.from_bytes(self.parity_raw, path.name)
        index.check_parts_index(self.index, list(self.parts), path.name)
        return index

    def with_repairs(
        self,
        trusted: tuple[keys.TrustedKey, ...],
        observer: Observer | None = None,
        scan: bool = False,
        in_place: bool = False,
    ) -> BundleHandle:
        """This bundle with its bad parts rebuilt from parity: the parts missing or of the wrong
        size, or (``scan``) every part whose hash differs from the signed index. Rebuilt parts go
        to a private temporary directory, or (``in_place``, `join --repair`) replace the bad
        parts — parity parts included — beside the index. Without parity, the handle itself."""
        parity = self.parity(trusted)
        if parity is None or self.index_path is None:
            return self
        space = None if in_place else RepairSpace()
        directory = self.index_path.parent
        done = repair(
            parity,
            directory,
            directory if space is None else space.path,
            scan=scan or in_place,
            include_parity=in_place,
            observer=observer,
        )
        if not done:
            return self
        moved = {r.part: r.path for r in done}
        paths = tuple(moved.get(share.name, directory / share.name) for share in parity.data)
        return replace(self, paths=paths, repaired=tuple(done), space=space)

    def read_repairing(
        self,
        trusted: tuple[keys.TrustedKey, ...],
        observer: Observer | None,
        read: Callable[[BundleHandle], T],
    ) -> tuple[BundleHandle, T]:
        """``read(handle)``; when it fails on the bytes and parity is there, every part is hashed,
        the damaged ones rebuilt, and ``read`` runs once more. A failure with every part intact
        is the bundle's own: it is raised as it was."""
        try:
            return self, read(self)
        except (IntegrityError, InvalidInputError):
            if not self.can_repair:
                raise
            again = self.with_repairs(trusted, observer, scan=True)
            if {r.part for r in again.repaired} <= {r.part for r in self.repaired}:
                raise
        return again, read(again)

    def part_sizes(self) -> list[tuple[str, int, str]]:
        """(name, size on the media, signed sha256) of each part, in order."""
        assert self.parts is not None
        return [(n, p.stat().st_size, sha) for (n, sha), p in zip(self.parts, self.paths)]

    @contextlib.contextmanager
    def stream(self, read_timeout: float | None = None) -> Iterator[BinaryIO]:
        """The bundle's bytes in order. Parts are hashed as they pass and a part that differs
        from the signed index raises TamperError naming it; call ``check_index`` first. With a
        ``read_timeout``, a read stalled on dead media becomes exit 5 instead of a hang."""
        with contextlib.ExitStack() as stack:
            stream: BinaryIO
            if self.parts is not None:
                stream = ConcatenatedParts(list(self.paths), self.part_sizes())  # type: ignore[assignment]
            else:
                # Unbuffered, and closed by the timed reader only once no read of it is pending:
                # a read stalled on dead media must not turn into a hang when it is closed.
                stream = open_regular(self.paths[0], "a bundle", buffered=read_timeout is None)
                if read_timeout is None:
                    stack.callback(stream.close)
            if read_timeout is not None:
                timed = TimedReader(stream, read_timeout, str(self.path), owns=self.parts is None)
                stack.callback(timed.close)
                yield timed  # type: ignore[misc]
            else:
                yield stream
            if isinstance(stream, ConcatenatedParts):
                stream.finish()

    def total_size(self) -> int:
        """Bytes on the media: the file's size, or the parts' together."""
        if self.parts is not None:
            return sum(s for _, s, _ in self.part_sizes())
        return os.stat(self.paths[0]).st_size

    def read_front(self) -> bytes:
        """The manifest's bytes, read without checking anything: for ``airgap inspect``, which
        says so. The parts are read in order, unhashed."""
        missing = [p.name for p in self.paths if not p.exists()]
        if missing:
            raise InvalidInputError(f"part {missing[0]} is missing", hint="copy it next to the parts index")
        stream = _Unchecked(list(self.paths))
        try:
            reader = TarReader(stream, ROOT, first=MANIFEST)  # type: ignore[arg-type]
            first = reader.next()
            if first is None or f"{ROOT}/{first.name}" != MANIFEST:
                raise InvalidInputError(f"not an airgap bundle: {self.path} does not start with {MANIFEST}")
            return reader.read(first, MAX_MANIFEST)
        finally:
            stream.close()


class _Unchecked:
    """Reads parts in order without checking them (inspect only; verify checks)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.fh: BinaryIO | None = open_regular(self.paths.pop(0))

    def read(self, n: int) -> bytes:
        out = b""
        while len(out) < n and self.fh is not None:
            data = self.fh.read(n - len(out))
            if data:
                out += data
                continue
            self.fh.close()
            self.fh = open_regular(self.paths.pop(0)) if self.paths else None
        return out

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


def locate_bundle(path: Path) -> BundleHandle:
    """The files to read: one bundle file, or the parts named by a parts index. The name given
    decides: an index means parts; an existing file means that one file."""
    path = Path(path)
    if names_parts_index(path):
        index_path = (
            path
            if path.name.endswith(PARTS_INDEX_SUFFIX)
            else path.parent / f"{path.name}{PARTS_INDEX_SUFFIX}"
        )
        index = read_small(index_path, MAX_INDEX, "a parts index")
        parity_path = index_path.parent / parity_index_name(index_path.name)
        parity_raw = read_small(parity_path, MAX_INDEX, "a parity index") if parity_path.exists() else None
        # Read as `sha256sum -c` reads it, in the one spelling the packer writes (core/checksums.py).
        expected = parse_index(index, f"the parts index {index_path.name}")
        for name, _ in expected:
            if not names.is_file_name(name):  # the rule for every name the far side creates
                raise TamperError(f"the parts index {index_path.name} is malformed: it names {name!r}")
        paths = tuple(index_path.parent / n for n, _ in expected)
        return BundleHandle(path, paths, tuple(expected), index, index_path, parity_raw)
    missing = missing_bundle(path)
    if missing is not None:
        raise missing
    return BundleHandle(path, (path,))


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle proven whole, unmodified, trusted and fresh; ``handle`` reads its bytes again
    (extraction re-hashes every member against ``manifest``, as the media may change)."""

    manifest: Manifest
    manifest_sha256: str
    key_id: str
    source: tuple[Path, ...]
    kept: dict[str, bytes]
    warnings: tuple[str, ...]
    handle: BundleHandle


def open_bundle(path: Path, options: VerifyOptions, observer: Observer | None = None) -> VerifiedBundle:
    """Verifies the bundle at ``path`` (a file or a parts index) and returns the verified view.

    Returns only on success; raises TamperError, SignatureError, UntrustedKeyError,
    ExpiredError or RollbackError (exit 3), or InvalidInputError (exit 4) when the input is not
    a bundle this build reads. Allowed unsafe overrides are warned as UnsafeOptionWarning.
    """
    obs = observer or NullObserver()
    handle = locate_bundle(path)
    handle.check_index(options.trusted)
    handle = handle.with_repairs(options.trusted, obs)

    def read(h: BundleHandle) -> tuple[Manifest, str, str, dict[str, bytes]]:
        obs.begin("verify", h.total_size(), BYTES)
        try:
            with h.stream(options.read_timeout) as stream:
                return _verify_stream(stream, options, obs)
        finally:
            obs.end("verify")

    handle, (manifest, manifest_sha, key_id, kept) = handle.read_repairing(options.trusted, obs, read)
    notes = _check_fresh(manifest, manifest_sha, options)
    for note in notes:
        warnings.warn(note, UnsafeOptionWarning, stacklevel=2)
    return VerifiedBundle(manifest, manifest_sha, key_id, handle.paths, kept, tuple(notes), handle)


def verify_stream(stream: BinaryIO, trusted: tuple[keys.TrustedKey, ...]) -> tuple[Manifest, str]:
    """Steps 1 to 6 over ``stream`` (read to its end): the manifest and its SHA-256, for a caller
    that copies the bytes as they are checked (`airgap split`)."""
    manifest, sha, _, _ = _verify_stream(stream, VerifyOptions(trusted=trusted), NullObserver())
    return manifest, sha


def verify_with_any(trusted: tuple[keys.TrustedKey, ...], data: bytes, sig: bytes, what: str) -> str:
    """The id of the trusted key whose signature ``sig`` is over ``data``; raises otherwise."""
    if not trusted:
        raise UntrustedKeyError(
            f"no trusted key to check {what} with",
            hint="add the publisher's key with `airgap keys trust KEY.pub`, or pass --key KEY.pub",
        )
    for key in trusted:
        try:
            keys.verify(key.public, data, sig, what)
            return key.key_id
        except IntegrityError:
            continue
    raise UntrustedKeyError(f"{what} is not signed by any trusted key")


def _verify_stream(
    stream: BinaryIO, options: VerifyOptions, obs: Observer
) -> tuple[Manifest, str, str, dict[str, bytes]]:
    reader = TarReader(stream, ROOT, first=MANIFEST)
    # 1. The first member is bundle/manifest.json, the second its signature. Anything else is not
    #    a bundle (exit 4); nothing else is read before the signature is checked, and no read is
    #    larger than its bound.
    first = next_named(reader, MANIFEST, not_a_bundle=True)
    manifest_bytes = reader.read(first, MAX_MANIFEST)
    sig_member = next_named(reader, MANIFEST_SIG)
    manifest_sig = reader.read(sig_member, MAX_SIG)
    # 2. The signature over the manifest's exact bytes verifies with a trusted key. The manifest's
    #    claimed key id is used only to name an untrusted signer in the error.
    try:
        key_id = verify_with_any(options.trusted, manifest_bytes, manifest_sig, "the manifest")
    except IntegrityError as exc:
        claimed = _claimed_key_id(manifest_bytes)
        if claimed and claimed not in {k.key_id for k in options.trusted}:
            raise UntrustedKeyError(
                f"the bundle is signed by key {claimed}, which is not trusted here",
                hint="if the publisher confirms this key id out of band: `airgap keys trust THEIR_KEY.pub`",
            ) from None
        raise exc from None
    key = next(k for k in options.trusted if k.key_id == key_id)
    # 3-6. The rest belongs to the format the signed manifest declares.
    fmt = reader_for(manifest_bytes)
    front = SignedFront(
        manifest_bytes,
        manifest_sig,
        first,
        sig_member,
        key_id,
        key.algorithm,
        lambda data, sig, what: keys.verify(key.public, data, sig, what),
        options.blob_store,
    )
    result = fmt.verify(reader, front, lambda p, n: options.keep(p, n) and n <= options.keep_limit, obs)
    return result.manifest, hashlib.sha256(manifest_bytes).hexdigest(), key_id, result.kept


def _check_fresh(manifest: Manifest, manifest_sha: str, options: VerifyOptions) -> list[str]:
    """Steps 7 and 8: not expired, not a rollback; the loud overrides return their notes."""
    notes: list[str] = []
    # 7. Not expired, unless --allow-expired.
    now = options.now or dt.datetime.now(dt.timezone.utc)
    expires = manifest.expires_at
    if expires is not None and now > expires:
        if not options.allow_expired:
            raise ExpiredError(
                f"the bundle expired at {manifest.expires}",
                hint="ask for a fresh bundle (or --allow-expired)",
            )
        notes.append(f"UNSAFE: accepted a bundle that expired at {manifest.expires} (--allow-expired)")
    # 8. Not older than what was last installed under this name, unless --allow-downgrade. One
    #    order everywhere: SemVer 2.0 precedence (core/versions.py), so 1.0.0-rc1 < 1.0.0.
    previous = options.installed_versions.get(manifest.name)
    if previous and _older(manifest.version, previous):
        if not options.allow_downgrade:
            why = (
                " (a pre-release is older than its release)"
                if versions.parse(manifest.version).is_prerelease
                else ""
            )
            raise RollbackError(
                f"refusing a rollback: {manifest.name} {manifest.version} is older than {previous}, "
                f"the highest version installed here{why}",
                hint="use --allow-downgrade only if the site has decided to go back",
            )
        notes.append(
            f"UNSAFE: accepted {manifest.version}, older than installed {previous} (--allow-downgrade)"
        )
    # 8b. The same version (by precedence) as one installed here must be the same bundle: a
    #     rebuild under an old version number, or 1.0.0+build.1 after 1.0.0+build.2, is not.
    known = options.installed_manifests.get(manifest.name, {})
    same = sorted(
        v for sha, v in known.items() if sha != manifest_sha and _same_precedence(v, manifest.version)
    )
    if same and manifest_sha not in known:
        if not options.allow_downgrade:
            raise RollbackError(
                f"same version, different content: {manifest.name} {manifest.version} has the "
                f"precedence of installed {same[-1]} but another manifest "
                f"(sha256 {manifest_sha[:16]}…)",
                hint="publish a new version (or --allow-downgrade, if the site has decided to replace it)",
            )
        notes.append(
            f"UNSAFE: accepted {manifest.version}, other content than installed {same[-1]} "
            "(--allow-downgrade)"
        )
    return notes


_CLAIMED_KEY_ID = re.compile(rb'"signer":\{"algorithm":"[a-z0-9-]{1,32}","key_id":"([0-9a-f]{64})"\}')


def _claimed_key_id(manifest_bytes: bytes) -> str | None:
    """The key id an unverified manifest claims, found without parsing it: the bytes are not
    trusted yet, so they are neither JSON-decoded (a crafted 4 MiB document costs far more than
    4 MiB to decode) nor shown unless they are exactly 64 hex digits."""
    m = _CLAIMED_KEY_ID.search(manifest_bytes)
    return m.group(1).decode("ascii") if m else None


def _same_precedence(recorded: str, candidate: str) -> bool:
    try:
        return versions.compare(recorded, candidate) == 0
    except versions.InvalidVersion:
        return False


def _older(candidate: str, installed: str) -> bool:
    """SemVer precedence; a recorded version that is not SemVer cannot be ordered, so it refuses."""
    try:
        return versions.older(candidate, installed)
    except versions.InvalidVersion:
        return True
