"""`airgap verify`: prove a bundle is whole, unmodified and signed by a trusted key.

The steps are numbered as in docs/bundle-format.md ("Verification"). Verification streams the
archive once, in order, with memory bounded by one chunk; it extracts nothing and trusts nothing
inside the bundle until the signature over the manifest's exact bytes has been checked with a key
from the far side's trust store (or one named with ``--key``). It returns only on success: every
failure raises, with IntegrityError (exit 3) for anything that could be tampering and
InvalidInputError (exit 4) when the input is not a bundle at all.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import zstandard
from packaging.version import InvalidVersion, Version

from airgap.adapters import keys
from airgap.adapters.archive import ConcatenatedParts, Member, TarReader
from airgap.core.bundle_format import (
    MANIFEST,
    MANIFEST_SIG,
    MAX_MANIFEST,
    MAX_RATIO,
    MAX_SIG,
    PARTS_INDEX_SUFFIX,
    ROOT,
    SUMS,
    SUMS_SIG,
    FileEntry,
    Manifest,
    parse_sums,
)
from airgap.errors import AirgapError, IntegrityError, InvalidInputError
from airgap.services.observer import BYTES, NullObserver, Observer
from airgap.services.state import State

MAX_SUMS = 64 << 20


@dataclass(frozen=True)
class VerifyOptions:
    trusted: tuple[keys.TrustedKey, ...]
    allow_downgrade: bool = False
    allow_expired: bool = False
    installed_versions: dict[str, str] = field(default_factory=dict)
    keep: Callable[[str, int], bool] = field(default=lambda path, size: False)  # members to hand back
    keep_limit: int = 32 << 20
    now: dt.datetime | None = None


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
        try:
            index = index_path.read_bytes()
        except OSError as exc:
            raise InvalidInputError(f"cannot read the parts index {index_path}: {exc.strerror}") from None
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
            try:
                index_sig = sig_path.read_bytes()[:MAX_SIG]
            except OSError:
                raise IntegrityError(
                    f"the parts index has no signature ({sig_path.name} is missing)"
                ) from None
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
            try:
                stream = stack.enter_context(open(paths[0], "rb"))
            except OSError as exc:
                raise InvalidInputError(f"cannot read {paths[0]}: {exc.strerror}") from None
            total = paths[0].stat().st_size
        obs.begin("verify", total, BYTES)
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
    reader = TarReader(stream, ROOT)
    # 1. The first member is bundle/manifest.json, the second its signature. Anything else is not
    #    a bundle (exit 4); nothing else is read before the signature is checked.
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
    manifest = Manifest.from_json(manifest_bytes)
    if manifest.key_id != key_id:
        raise IntegrityError(
            f"the manifest names signer {manifest.key_id[:16]} but was signed by {key_id[:16]}"
        )
    manifest_sha = hashlib.sha256(manifest_bytes).hexdigest()
    # 4. SHA256SUMS is signed by the same key and lists exactly the manifest's files.
    sums_member = _next_named(reader, SUMS)
    sums = reader.read(sums_member, MAX_SUMS)
    sums_sig = reader.read(_next_named(reader, SUMS_SIG), MAX_SIG)
    keys.verify(next(k.public for k in options.trusted if k.key_id == key_id), sums, sums_sig, "SHA256SUMS")
    listed = parse_sums(sums)
    expected_sums = {f.path: f.sha256 for f in manifest.files}
    expected_sums["manifest.json"] = manifest_sha
    expected_sums["manifest.json.sig"] = hashlib.sha256(manifest_sig).hexdigest()
    if listed != expected_sums:
        raise IntegrityError("SHA256SUMS and the manifest disagree about the bundle's files")
    # 5. Every other member: listed, safe, seen once, of the declared size and SHA-256; a
    #    compressed member's declared expansion is within the bound.
    entries = manifest.by_path()
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
        seen.add(member.name)
        if member.size != entry.size:
            raise IntegrityError(f"{member.name} is {member.size} bytes; the manifest says {entry.size}")
        size = entry.content_size if entry.content_size is not None else entry.size
        keep = options.keep(entry.content_path, size) and size <= options.keep_limit
        h = hashlib.sha256()
        buf = bytearray() if keep else None
        head = b""
        for chunk in reader.chunks(member):
            h.update(chunk)
            if buf is not None:
                buf += chunk
            if entry.compression and len(head) < 18:
                head += bytes(chunk[: 18 - len(head)])
            obs.advance("verify", len(chunk))
        if h.hexdigest() != entry.sha256:
            raise IntegrityError(
                f"{member.name} has been modified: "
                f"sha256 {h.hexdigest()[:16]}…, manifest {entry.sha256[:16]}…"
            )
        if entry.compression:
            _check_zstd_header(entry, head)
        if buf is not None:
            kept[entry.content_path] = _inflate(entry, bytes(buf)) if entry.compression else bytes(buf)
    # 6. Nothing listed is missing.
    missing = sorted(set(entries) - seen)
    if missing:
        raise IntegrityError(
            f"{missing[0]} is listed in the manifest but missing from the bundle ({len(missing)} missing)"
        )
    # 7. Not expired, unless --allow-expired.
    now = options.now or dt.datetime.now(dt.timezone.utc)
    if manifest.expires:
        expires = dt.datetime.fromisoformat(manifest.expires.replace("Z", "+00:00"))
        if now > expires:
            if not options.allow_expired:
                raise IntegrityError(
                    f"the bundle expired at {manifest.expires}",
                    hint="ask for a fresh bundle (or --allow-expired)",
                )
            notes.append(f"UNSAFE: accepted a bundle that expired at {manifest.expires} (--allow-expired)")
    # 8. Not older than what was last installed under this name, unless --allow-downgrade.
    previous = options.installed_versions.get(manifest.name)
    if previous and _older(manifest.version, previous):
        if not options.allow_downgrade:
            raise IntegrityError(
                f"{manifest.name} {manifest.version} is older than {previous}, installed before: "
                "refusing a rollback",
                hint="use --allow-downgrade only if the site has decided to go back",
            )
        notes.append(
            f"UNSAFE: accepted {manifest.version}, older than installed {previous} (--allow-downgrade)"
        )
    for note in notes:
        warnings.warn(note, UnsafeOptionWarning, stacklevel=2)
    return manifest, manifest_sha, key_id, kept


def _next_named(reader: TarReader, name: str, not_a_bundle: bool = False) -> Member:
    member = reader.next()
    full = f"{ROOT}/{member.name}" if member else None
    if full != name:
        if not_a_bundle:
            raise InvalidInputError(f"not an airgap bundle: the archive does not start with {name}")
        raise IntegrityError(f"the bundle's control files are out of order: expected {name}, found {full}")
    assert member is not None
    return member


def _claimed_key_id(manifest_bytes: bytes) -> str | None:
    import json

    try:
        data = json.loads(manifest_bytes)
        kid = data["signer"]["key_id"]
        return kid if isinstance(kid, str) and len(kid) == 64 else None
    except (ValueError, KeyError, TypeError):
        return None


def _check_zstd_header(entry: FileEntry, head: bytes) -> None:
    try:
        params = zstandard.get_frame_parameters(head)
    except zstandard.ZstdError:
        raise IntegrityError(f"{entry.path} is not a zstd stream") from None
    if params.content_size != entry.content_size:
        raise IntegrityError(
            f"{entry.path} declares {params.content_size} bytes of content; "
            f"the manifest says {entry.content_size}"
        )
    if entry.content_size is not None and entry.content_size > max(entry.size, 1) * MAX_RATIO:
        raise IntegrityError(f"{entry.path} would expand over {MAX_RATIO}:1: refusing a decompression bomb")


def _inflate(entry: FileEntry, stored: bytes) -> bytes:
    """Decompresses a kept member, never past its signed size, and checks the content hash."""
    assert entry.content_size is not None
    try:
        data = zstandard.ZstdDecompressor().decompress(stored, max_output_size=entry.content_size)
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"{entry.path} does not decompress: {exc}") from None
    if len(data) != entry.content_size or hashlib.sha256(data).hexdigest() != entry.content_sha256:
        raise IntegrityError(f"{entry.path} decompresses to content that differs from the manifest")
    return data


def _older(candidate: str, installed: str) -> bool:
    try:
        return Version(candidate.replace("-", "+", 1) if "-" in candidate else candidate) < Version(
            installed.replace("-", "+", 1) if "-" in installed else installed
        )
    except InvalidVersion:
        return candidate < installed


def verify_and_audit(
    path: Path, state: State, options: VerifyOptions, observer: Observer | None = None, action: str = "verify"
) -> VerifiedBundle:
    """Verifies, then appends the outcome — accepted or rejected, with the reason — to the audit log."""
    try:
        result = verify_bundle(path, options, observer)
    except AirgapError as exc:
        state.audit(
            {
                "action": action,
                "bundle": str(path),
                "result": "rejected",
                "exit_code": exc.exit_code,
                "reason": exc.one_line(),
            }
        )
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
