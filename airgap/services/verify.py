"""`airgap verify`: prove a bundle is whole, unmodified and signed by a trusted key.

The steps are numbered as in docs/bundle-format.md ("Verification"). Verification streams the
archive once, in order, with memory bounded by one chunk; it extracts nothing and trusts nothing
inside the bundle until the signature over the manifest's exact bytes has been checked with a key
from the far side's trust store (or one named with ``--key``). It returns only on success: every
failure raises, with IntegrityError (exit 3) for anything that could be tampering and
InvalidInputError (exit 4) when the input is not a bundle at all.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import os
import re
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO, cast

import zstandard

from airgap.adapters import keys
from airgap.adapters.archive import (
    ConcatenatedParts,
    Member,
    TarReader,
    TimedReader,
    open_regular,
    read_small,
)
from airgap.core import versions
from airgap.core.bundle_format import (
    BUILD_RECORD,
    MANIFEST,
    MANIFEST_SIG,
    MAX_BUILD_RECORD,
    MAX_MANIFEST,
    MAX_SIG,
    MAX_ZSTD_WINDOW,
    PARTS_INDEX_SUFFIX,
    ROOT,
    SUMS,
    SUMS_SIG,
    FileEntry,
    Manifest,
    check_build_record,
    render_sums,
)
from airgap.core.tar_format import differing_fields, first_difference, member_header, mtime_of
from airgap.core.zstd_frame import FrameError, FrameWalker
from airgap.errors import AirgapError, IntegrityError, InvalidInputError
from airgap.services.observer import BYTES, NullObserver, Observer
from airgap.services.state import State

MAX_INDEX = 1 << 20
CHUNK_OUT = 128 << 10  # the most decompressed output held at once


@dataclass(frozen=True)
class VerifyOptions:
    trusted: tuple[keys.TrustedKey, ...]
    allow_downgrade: bool = False
    allow_expired: bool = False
    installed_versions: dict[str, str] = field(default_factory=dict)
    installed_manifests: dict[str, dict[str, str]] = field(default_factory=dict)  # name: {sha: version}
    keep: Callable[[str, int], bool] = field(default=lambda path, size: False)  # members to hand back
    keep_limit: int = 32 << 20
    now: dt.datetime | None = None
    read_timeout: float | None = 120.0  # seconds one read of the media may take before exit 5


@dataclass(frozen=True)
class VerifiedBundle:
    manifest: Manifest
    manifest_sha256: str
    key_id: str
    source: tuple[Path, ...]
    kept: dict[str, bytes]
    warnings: tuple[str, ...]


class UnsafeOptionWarning(UserWarning):
    """Raised as a warning when a check is switched off (--allow-downgrade, --allow-expired)."""


@dataclass(frozen=True)
class Sources:
    paths: list[Path]
    parts: list[tuple[str, str]] | None = None  # (name, sha256) from the parts index
    index: bytes | None = None
    index_path: Path | None = None


def bundle_sources(path: Path) -> Sources:
    """The files to read: one bundle file, or the parts named by a signed parts index."""
    path = Path(path)
    # The name given decides: an index means parts; an existing file means that one file.
    if path.name.endswith(PARTS_INDEX_SUFFIX) or (
        not path.exists() and (path.parent / f"{path.name}{PARTS_INDEX_SUFFIX}").exists()
    ):
        index_path = (
            path
            if path.name.endswith(PARTS_INDEX_SUFFIX)
            else path.parent / f"{path.name}{PARTS_INDEX_SUFFIX}"
        )
        index = read_small(index_path, MAX_INDEX, "a parts index")
        expected: list[tuple[str, str]] = []
        for line in index.decode("utf-8", "replace").splitlines():
            sha, _, name = line.partition("  ")
            if len(sha) != 64 or "/" in name or not name or name.startswith("."):
                raise IntegrityError(f"the parts index {index_path.name} is malformed")
            expected.append((name, sha))
        return Sources([index_path.parent / n for n, _ in expected], expected, index, index_path)
    if not path.exists():
        raise InvalidInputError(
            f"{path} does not exist", hint="name the .airgap.tar file or its .parts.sha256 index"
        )
    return Sources([path])


def verify_bundle(
    path: Path,
    options: VerifyOptions,
    observer: Observer | None = None,
) -> VerifiedBundle:
    obs = observer or NullObserver()
    src = bundle_sources(path)
    paths = src.paths
    notes: list[str] = []
    with ExitStack() as stack:
        if src.parts is not None and src.index is not None and src.index_path is not None:
            # 0. A split bundle: the parts index must be signed by a trusted key, and every part
            #    present, before a byte of any part is read.
            sig_path = src.index_path.parent / (src.index_path.name + ".sig")
            if not sig_path.exists():
                raise IntegrityError(f"the parts index has no signature ({sig_path.name} is missing)")
            index_sig = read_small(sig_path, MAX_SIG, "a signature")
            _verify_with_any(options.trusted, src.index, index_sig, "the parts index")
            missing = [p.name for p in paths if not p.exists()]
            if missing:
                raise IntegrityError(
                    f"part {missing[0]} is missing ({len(missing)} of {len(paths)} parts missing)",
                    hint="copy the missing parts from the original media next to the index",
                )
            sizes = [(n, p.stat().st_size, sha) for (n, sha), p in zip(src.parts, paths)]
            stream: BinaryIO = ConcatenatedParts(paths, sizes)  # type: ignore[assignment]
            total = sum(s for _, s, _ in sizes)
        else:
            # Unbuffered, and closed by the timed reader only once no read of it is pending: a
            # read stalled on dead media must not turn into a hang when the stream is closed.
            stream = open_regular(paths[0], "a bundle", buffered=options.read_timeout is None)
            if options.read_timeout is None:
                stack.callback(stream.close)
            total = os.fstat(stream.fileno()).st_size
        obs.begin("verify", total, BYTES)
        if options.read_timeout is not None:
            owns = not isinstance(stream, ConcatenatedParts)
            timed = TimedReader(stream, options.read_timeout, str(path), owns=owns)
            stack.callback(timed.close)
            result = _verify_stream(timed, options, obs, notes)  # type: ignore[arg-type]
        else:
            result = _verify_stream(stream, options, obs, notes)
        if isinstance(stream, ConcatenatedParts):
            stream.finish()
        obs.end("verify")
    return VerifiedBundle(result[0], result[1], result[2], tuple(paths), result[3], tuple(notes))


def _verify_with_any(trusted: tuple[keys.TrustedKey, ...], data: bytes, sig: bytes, what: str) -> str:
    if not trusted:
        raise IntegrityError(
            f"no trusted key to check {what} with",
            hint="add the publisher's key with `airgap keys trust KEY.pub`, or pass --key KEY.pub",
        )
    for key in trusted:
        try:
            keys.verify(key.public, data, sig, what)
            return key.key_id
        except IntegrityError:
            continue
    raise IntegrityError(f"{what} is not signed by any trusted key")


def _verify_stream(
    stream: BinaryIO, options: VerifyOptions, obs: Observer, notes: list[str]
) -> tuple[Manifest, str, str, dict[str, bytes]]:
    reader = TarReader(stream, ROOT, first=MANIFEST)
    # 1. The first member is bundle/manifest.json, the second its signature. Anything else is not
    #    a bundle (exit 4); nothing else is read before the signature is checked, and no read is
    #    larger than its bound.
    first = _next_named(reader, MANIFEST, not_a_bundle=True)
    manifest_bytes = reader.read(first, MAX_MANIFEST)
    sig_member = _next_named(reader, MANIFEST_SIG)
    manifest_sig = reader.read(sig_member, MAX_SIG)
    # 2. The signature over the manifest's exact bytes verifies with a trusted key. The manifest's
    #    claimed key id is used only to name an untrusted signer in the error.
    try:
        key_id = _verify_with_any(options.trusted, manifest_bytes, manifest_sig, "the manifest")
    except IntegrityError as exc:
        claimed = _claimed_key_id(manifest_bytes)
        if claimed and claimed not in {k.key_id for k in options.trusted}:
            raise IntegrityError(
                f"the bundle is signed by key {claimed}, which is not trusted here",
                hint="if the publisher confirms this key id out of band: `airgap keys trust THEIR_KEY.pub`",
            ) from None
        raise exc from None
    # 3. Only now is the manifest parsed and validated, and it must name the key that signed it.
    #    From here on every byte of the archive is determined: the headers of the members read so
    #    far must be exactly the ones the manifest determines.
    manifest = Manifest.from_json(manifest_bytes)
    if manifest.to_bytes() != manifest_bytes:
        # One spelling only: a signed manifest that other readers could read differently
        # (indented, a BOM, UTF-16, reordered keys, fields restating defaults) is invalid input.
        raise InvalidInputError(
            "the signed manifest is not in the canonical form the packer writes "
            "(sorted keys, no spaces, UTF-8, one trailing newline)",
            hint="the publisher's tooling wrote an invalid bundle; refuse it and ask for a new one",
        )
    if manifest.key_id != key_id:
        raise IntegrityError(
            f"the manifest names signer {manifest.key_id[:16]} but was signed by {key_id[:16]}"
        )
    _check_blob_names(manifest)
    manifest_sha = hashlib.sha256(manifest_bytes).hexdigest()
    mtime = mtime_of(manifest.created)
    _canonical_signature(manifest_sig, MANIFEST_SIG)
    _exact_header(first, first.size, mtime)
    _exact_header(sig_member, sig_member.size, mtime)
    # 4. SHA256SUMS is signed by the same key and is exactly the one the manifest determines.
    expected_sums = render_sums(
        [(f.path, f.sha256) for f in manifest.files]
        + [
            ("manifest.json", manifest_sha),
            ("manifest.json.sig", hashlib.sha256(manifest_sig).hexdigest()),
        ]
    )
    sums_member = _next_named(reader, SUMS)
    _exact_header(sums_member, len(expected_sums), mtime)
    sums = reader.read(sums_member, len(expected_sums))
    sums_sig_member = _next_named(reader, SUMS_SIG)
    sums_sig = reader.read(sums_sig_member, MAX_SIG)
    keys.verify(next(k.public for k in options.trusted if k.key_id == key_id), sums, sums_sig, "SHA256SUMS")
    _canonical_signature(sums_sig, SUMS_SIG)
    _exact_header(sums_sig_member, sums_sig_member.size, mtime)
    if sums != expected_sums:
        raise IntegrityError("SHA256SUMS and the manifest disagree about the bundle's files")
    # 5. Every other member, in the manifest's path order: a regular file with a safe path under
    #    bundle/, listed, seen once, with exactly the header the manifest determines, of the
    #    declared size and SHA-256; a compressed member's declared expansion is within the bound.
    entries = manifest.by_path()
    order = sorted(manifest.files, key=lambda f: f.path)
    seen: set[str] = set()
    kept: dict[str, bytes] = {}
    while True:
        member = reader.next()
        if member is None:
            break
        entry = entries.get(member.name)
        if entry is None:
            raise IntegrityError(f"{member.name} is in the bundle but not in its signed manifest")
        if member.name in seen:
            raise IntegrityError(f"{member.name} appears twice in the bundle")
        due = order[len(seen)]
        if entry is not due:
            raise IntegrityError(
                f"{due.path} is listed in the manifest but missing from the bundle "
                f"({member.name} is at byte {member.offset}, where {due.path} is due)"
            )
        seen.add(member.name)
        if member.size != entry.size:
            raise IntegrityError(f"{member.name} is {member.size} bytes; the manifest says {entry.size}")
        _exact_header(member, entry.size, mtime)
        size = entry.content_size if entry.content_size is not None else entry.size
        record = entry.content_path == BUILD_RECORD
        if record and size > MAX_BUILD_RECORD:
            raise InvalidInputError(f"the signed build.json is {size} bytes, over {MAX_BUILD_RECORD}")
        keep = record or (options.keep(entry.content_path, size) and size <= options.keep_limit)
        h = hashlib.sha256()
        buf = bytearray() if keep and not entry.compression else None
        frame = _ZstdMember(entry, keep) if entry.compression else None
        for chunk in reader.chunks(member):
            h.update(chunk)
            if buf is not None:
                buf += chunk
            if frame is not None:
                frame.update(chunk)
            obs.advance("verify", len(chunk))
        if h.hexdigest() != entry.sha256:
            raise IntegrityError(
                f"{member.name} has been modified: "
                f"sha256 {h.hexdigest()[:16]}…, manifest {entry.sha256[:16]}…"
            )
        if frame is not None:
            content = frame.finish()
            if content is not None:
                kept[entry.content_path] = content
        elif buf is not None:
            kept[entry.content_path] = bytes(buf)
    # 6. Nothing listed is missing.
    missing = sorted(set(entries) - seen)
    if missing:
        raise IntegrityError(
            f"{missing[0]} is listed in the manifest but missing from the bundle ({len(missing)} missing)"
        )
    # 6b. The build record the far side acts on is well typed (exit 4 naming the field).
    if BUILD_RECORD in kept:
        check_build_record(kept[BUILD_RECORD])
    # 7. Not expired, unless --allow-expired.
    now = options.now or dt.datetime.now(dt.timezone.utc)
    expires = manifest.expires_at
    if expires is not None and now > expires:
        if not options.allow_expired:
            raise IntegrityError(
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
            raise IntegrityError(
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
            raise IntegrityError(
                f"same version, different content: {manifest.name} {manifest.version} has the "
                f"precedence of installed {same[-1]} but another manifest "
                f"(sha256 {manifest_sha[:16]}…)",
                hint="publish a new version (or --allow-downgrade, if the site has decided to replace it)",
            )
        notes.append(
            f"UNSAFE: accepted {manifest.version}, other content than installed {same[-1]} "
            "(--allow-downgrade)"
        )
    for note in notes:
        warnings.warn(note, UnsafeOptionWarning, stacklevel=2)
    return manifest, manifest_sha, key_id, kept


def _check_blob_names(manifest: Manifest) -> None:
    """A content-addressed blob is named by the hash of its content, and every blob an image
    names is in the bundle. The install side shares one blob store between bundles and reuses a
    blob by name, so a blob whose name is not its hash would poison it for every later bundle.
    Step 5 then proves each member's content is the hash the manifest gives, hence its name."""
    present: set[str] = set()
    for entry in manifest.files:
        head, sep, name = entry.content_path.rpartition("/blobs/sha256/")
        if not sep and entry.content_path.startswith("blobs/sha256/"):
            head, name = "", entry.content_path[len("blobs/sha256/") :]
        elif not sep:
            continue
        digest = entry.content_sha256 if entry.compression else entry.sha256
        if name != digest:
            raise IntegrityError(
                f"{entry.path} is a content-addressed blob whose content hashes to "
                f"{str(digest)[:16]}…, not to its name",
                hint="a blob named for other content would poison the shared blob store; refuse this bundle",
            )
        present.add(f"{head}/{name}" if head else name)
    for image in manifest.images:
        for digest in (image.manifest_digest, image.config_digest, *(d for d, _ in image.layers)):
            if f"{image.layout}/{digest.split(':', 1)[1]}" not in present:
                raise IntegrityError(
                    f"image {image.name} names blob {digest[:23]}… that is not in the bundle"
                )


def _exact_header(member: Member, size: int, mtime: int) -> None:
    """The member's header bytes, as read, must be exactly those the packer writes for it."""
    full = f"{ROOT}/{member.name}"
    expected = member_header(full, size, mtime)
    at = first_difference(member.header, expected)
    if at is not None:
        raise IntegrityError(
            f"{full}: byte {member.offset + at} of the archive differs from the header the signed "
            f"manifest determines ({', '.join(differing_fields(member.header, expected)[:4])})"
        )


def _canonical_signature(sig: bytes, name: str) -> None:
    """A signature member is exactly base64 of the DER signature, with the low ``s``, and a newline:
    a variant spelling of the same signature, or its (r, n - s) twin, would be bytes of the bundle
    that nothing else checks."""
    try:
        der = base64.b64decode(sig.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise IntegrityError(f"{name} is not base64") from None
    if base64.b64encode(der) + b"\n" != sig:
        raise IntegrityError(f"{name} is not spelled as the packer writes it (base64 and one newline)")
    if not keys.is_low_s(der):
        raise IntegrityError(f"{name} is not in the low-s form the packer writes (its twin (r, n-s) is)")


def _next_named(reader: TarReader, name: str, not_a_bundle: bool = False) -> Member:
    member = reader.next()
    full = f"{ROOT}/{member.name}" if member else None
    if full != name:
        if not_a_bundle:
            raise InvalidInputError(f"not an airgap bundle: the archive does not start with {name}")
        raise IntegrityError(f"the bundle's control files are out of order: expected {name}, found {full}")
    assert member is not None
    return member


_CLAIMED_KEY_ID = re.compile(rb'"signer":\{"algorithm":"[a-z0-9-]{1,32}","key_id":"([0-9a-f]{64})"\}')


def _claimed_key_id(manifest_bytes: bytes) -> str | None:
    """The key id an unverified manifest claims, found without parsing it: the bytes are not
    trusted yet, so they are neither JSON-decoded (a crafted 4 MiB document costs far more than
    4 MiB to decode) nor shown unless they are exactly 64 hex digits."""
    m = _CLAIMED_KEY_ID.search(manifest_bytes)
    return m.group(1).decode("ascii") if m else None


class _Sink:
    """Where a member's decompressed bytes go during verification: hashed, counted, bounded."""

    def __init__(self, entry: FileEntry, keep: bool) -> None:
        self.entry = entry
        self.limit = entry.content_size or 0
        self.hash = hashlib.sha256()
        self.size = 0
        self.data = bytearray() if keep else None

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > self.limit:
            raise IntegrityError(
                f"{self.entry.path} inflates past its signed content size ({self.limit} bytes)"
            )
        self.hash.update(data)
        if self.data is not None:
            self.data += data
        return len(data)


class _ZstdMember:
    """Checks a ``.zst`` member as it streams past: exactly one zstd frame that declares the
    signed content size, with nothing after it, decompressing to exactly the signed content.
    Output is produced in bounded pieces, so a frame that lies cannot grow memory."""

    def __init__(self, entry: FileEntry, keep: bool) -> None:
        self.entry = entry
        self.walker = FrameWalker()
        self.sink = _Sink(entry, keep)
        self.writer = zstandard.ZstdDecompressor(max_window_size=MAX_ZSTD_WINDOW).stream_writer(
            cast(IO[bytes], self.sink), write_size=CHUNK_OUT, write_return_read=True, closefd=False
        )
        self.error: str | None = None

    def update(self, chunk: bytes | memoryview) -> None:
        # The first fault is kept and reported after the member's hash is checked: a changed
        # byte is "modified" before it is "not a valid zstd member".
        if self.error is not None:
            return
        try:
            self.walker.update(chunk)
            declared = self.walker.content_size
            if declared is not None and declared != self.entry.content_size:
                raise FrameError(
                    f"its frame declares {declared} bytes of content; "
                    f"the manifest says {self.entry.content_size}"
                )
            self.writer.write(chunk)
        except (FrameError, zstandard.ZstdError) as exc:
            self.error = str(exc)
        except IntegrityError as exc:
            self.error = exc.message

    def finish(self) -> bytes | None:
        if self.error is None:
            try:
                self.walker.finish()
                self.writer.flush()  # type: ignore[no-untyped-call]
            except (FrameError, zstandard.ZstdError) as exc:
                self.error = str(exc)
            except IntegrityError as exc:
                self.error = exc.message
        if self.error is not None:
            raise IntegrityError(f"{self.entry.path} is not a valid zstd member: {self.error}")
        if (
            self.sink.size != self.entry.content_size
            or self.sink.hash.hexdigest() != self.entry.content_sha256
        ):
            raise IntegrityError(
                f"{self.entry.path} decompresses to content that differs from the manifest "
                f"({self.sink.size} bytes, sha256 {self.sink.hash.hexdigest()[:16]}…)"
            )
        return bytes(self.sink.data) if self.sink.data is not None else None


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


def verify_and_audit(
    path: Path, state: State, options: VerifyOptions, observer: Observer | None = None, action: str = "verify"
) -> VerifiedBundle:
    """Verifies, then appends the outcome — accepted or rejected, with the reason — to the audit log."""
    try:
        result = verify_bundle(path, options, observer)
    except AirgapError as exc:
        try:
            state.audit(
                {
                    "action": action,
                    "bundle": str(path),
                    "result": "rejected",
                    "exit_code": exc.exit_code,
                    "reason": exc.one_line(),
                }
            )
        except AirgapError as audit_exc:
            # The verdict matters more than the record of it: an integrity failure stays exit 3,
            # and the line says the audit record is missing.
            exc.message = f"{exc.message} (and the audit record could not be written: {audit_exc.message})"
        raise
    state.audit(
        {
            "action": action,
            "bundle": str(path),
            "result": "accepted",
            "name": result.manifest.name,
            "version": result.manifest.version,
            "manifest_sha256": result.manifest_sha256,
            "key_id": result.key_id,
            "warnings": list(result.warnings),
        }
    )
    return result


class VerifiedReader:
    """The check port (``list``/``read``) over a bundle that has just been verified in full.

    Small members are handed back by the verifier itself, so nothing is read twice from media
    that could change in between, and nothing is extracted to disk.
    """

    SMALL_BLOB = 1 << 20

    def __init__(self, verified: VerifiedBundle) -> None:
        self.verified = verified

    @classmethod
    def keep(cls, path: str, size: int) -> bool:
        if "/blobs/" in path:
            return size <= cls.SMALL_BLOB  # image manifests and configs, not layers
        return (not path.endswith(".whl") and not path.startswith("model/")) or path.endswith(".json")

    def list(self) -> list[str]:
        return sorted(f.content_path for f in self.verified.manifest.files)

    def size(self, path: str) -> int:
        for f in self.verified.manifest.files:
            if f.content_path == path:
                return f.content_size if f.content_size is not None else f.size
        raise InvalidInputError(f"{path} is not in the verified bundle")

    def read(self, path: str) -> bytes:
        try:
            return self.verified.kept[path]
        except KeyError:
            raise InvalidInputError(f"{path} is not readable from the verified bundle") from None
