"""Bundle format ``airgap.bundle/v1`` (docs/bundle-format.md): one member per file.

The packer's layout (``layout``), verification's steps 3 to 6b (``verify``) and extraction
(``extract``) of this version, in one class.

The opener has already checked steps 0 to 2 (the parts index, the frame, the manifest's
signature). From step 3 every byte of the archive is determined by the signed manifest, and this
reader proves it while streaming: memory is bounded by one chunk plus the small members it hands
back. Tampering raises TamperError, a bad signature SignatureError, input that is not a v1
bundle InvalidInputError.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from airgap.adapters import hash_pool, keys
from airgap.adapters.archive import Member, TarReader
from airgap.core.bundle_format import (
    BUILD_RECORD,
    FORMAT,
    MANIFEST_SIG,
    MAX_BUILD_RECORD,
    MAX_RATIO,
    MAX_SIG,
    MAX_ZSTD_WINDOW,
    ROOT,
    SUMS,
    SUMS_SIG,
    FileEntry,
    Manifest,
    render_sums,
)
from airgap.core.tar_format import (
    differing_fields,
    first_difference,
    member_header,
    mtime_of,
    padding_length,
)
from airgap.core.zstd_frame import FrameError, FrameWalker
from airgap.errors import IntegrityError, InvalidInputError, SignatureError, TamperError
from airgap.services.media.formats._extracting import members, private_dir, reusable, write_member
from airgap.services.media.formats._registry import (
    BundleFormat,
    FormatResult,
    Keep,
    Layout,
    OpenStream,
    SignedFront,
    next_named,
)
from airgap.services.media.formats._writing import compress, hash_file, pays, should_compress
from airgap.services.observer import Observer

CHUNK_OUT = 128 << 10  # the most decompressed output held at once


class V1Format(BundleFormat):
    """One member per file, a large compressible one as ``.zst``."""

    name = FORMAT
    option = "v1"
    summary = "v1 for far sides whose airgap reads only v1"

    def layout(
        self, files: list[tuple[str, Path]], work: Path, external: frozenset[str], observer: Observer
    ) -> Layout:
        """See ``BundleFormat.layout``: v1 stores every file, so ``external`` is never given."""
        entries: list[FileEntry] = []
        sources: dict[str, tuple[Path, int]] = {}
        for rel, path in files:
            size = path.stat().st_size
            entry = None
            if should_compress(path, size):
                dest = work / hashlib.sha256(rel.encode()).hexdigest()
                stored_size, stored_sha, csize, csha = compress(path, dest)
                # Beyond the ratio the verifier accepts, or when zstd saves too little, a file is
                # stored as it is.
                if csize <= max(stored_size, 1) * MAX_RATIO and pays(csize, stored_size):
                    entry = FileEntry(rel + ".zst", stored_size, stored_sha, "zstd", csize, csha)
                    sources[entry.path] = (dest, stored_size)
            if entry is None:
                sha, size = hash_file(path)
                entry = FileEntry(rel, size, sha)
                sources[entry.path] = (path, size)
            entries.append(entry)
            observer.advance("hash", size, rel)
        return Layout(tuple(entries), tuple(entries), sources, None)

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
        """See ``BundleFormat.extract``: each chosen member to its path, an OCI blob to the store.
        Each file is written anew (never shared with the store), so ``copy`` changes nothing."""
        entries = {f.path: f for f in manifest.files}
        made: set[Path] = set()
        with stream() as opened:
            for reader, member, entry in members(opened, entries):
                if not want(entry.content_path):
                    continue
                if "/blobs/sha256/" in entry.content_path:
                    target = blobs / entry.content_path.rsplit("/", 1)[1]
                    base = root if root is not None and blobs.is_relative_to(root) else blobs
                    # A blob already in the shared store is reused only if its bytes still hash to
                    # its name; anything else there is replaced from this verified bundle.
                    size = entry.content_size if entry.content_size is not None else entry.size
                    if reusable(target, target.name, size):
                        for _ in reader.chunks(member):
                            pass
                        continue
                else:
                    target = dest / entry.content_path
                    base = root if root is not None and dest.is_relative_to(root) else dest
                if target.parent not in made:
                    private_dir(target.parent, base)
                    made.add(target.parent)
                write_member(reader, member, entry, target)
                if created is not None:
                    created.append(target)

    def parse_manifest(self, raw: bytes) -> Manifest:
        """See ``BundleFormat.parse_manifest``: ``Manifest.from_json`` checks every field."""
        return Manifest.from_json(raw)

    def verify(self, reader: TarReader, front: SignedFront, keep: Keep, observer: Observer) -> FormatResult:
        """Steps 3 to 6b; see the module docstring."""
        # 3. Only now is the manifest parsed and validated, and it must name the key that signed
        #    it. From here on every byte of the archive is determined: the headers of the members
        #    read so far must be exactly the ones the manifest determines.
        manifest = self.parse_manifest(front.manifest_bytes)
        check_signed(manifest, front)
        _check_blob_names(manifest)
        mtime = check_front_headers(manifest, front)
        # 4. SHA256SUMS is signed by the same key and is exactly the one the manifest determines.
        check_sums(reader, front, [(f.path, f.sha256) for f in manifest.files], mtime)

        def keep_as(entry: FileEntry, size: int) -> tuple[str, ...]:
            record = entry.content_path == BUILD_RECORD
            if record and size > MAX_BUILD_RECORD:
                raise InvalidInputError(f"the signed build.json is {size} bytes, over {MAX_BUILD_RECORD}")
            return (entry.content_path,) if record or keep(entry.content_path, size) else ()

        kept = verify_members(reader, manifest.files, mtime, keep_as, observer)
        # 6b. The build record the far side acts on is well typed (exit 4 naming the field).
        if BUILD_RECORD in kept:
            from airgap.core.build_record import BuildRecord

            BuildRecord.from_json(kept[BUILD_RECORD])
        return FormatResult(manifest, kept)


def check_signed(manifest: Manifest, front: SignedFront) -> None:
    """Step 3 for any format: the manifest is in its one canonical spelling and names the key and
    algorithm that verified it."""
    if manifest.to_bytes() != front.manifest_bytes:
        # One spelling only: a signed manifest that other readers could read differently
        # (indented, a BOM, UTF-16, reordered keys, fields restating defaults) is invalid input.
        raise InvalidInputError(
            "the signed manifest is not in the canonical form the packer writes "
            "(sorted keys, no spaces, UTF-8, one trailing newline)",
            hint="the publisher's tooling wrote an invalid bundle; refuse it and ask for a new one",
        )
    if manifest.key_id != front.key_id:
        raise SignatureError(
            f"the manifest names signer {manifest.key_id[:16]} but was signed by {front.key_id[:16]}"
        )
    if manifest.algorithm != front.algorithm:
        raise SignatureError(
            f"the manifest names algorithm {manifest.algorithm} but was signed with {front.algorithm}"
        )


def check_front_headers(manifest: Manifest, front: SignedFront) -> int:
    """Step 3, end: the signature's spelling, and the headers of the two members read so far are
    exactly the ones the manifest determines. Returns their mtime (the manifest's ``created``)."""
    mtime = mtime_of(manifest.created)
    canonical_signature(front.manifest_sig, MANIFEST_SIG)
    exact_header(front.manifest_member, front.manifest_member.size, mtime)
    exact_header(front.sig_member, front.sig_member.size, mtime)
    return mtime


def check_sums(reader: TarReader, front: SignedFront, listed: list[tuple[str, str]], mtime: int) -> None:
    """Step 4: the next two members are SHA256SUMS and its signature by the same key, and
    SHA256SUMS is exactly the file ``listed`` (path, sha256) and the manifest's two members give."""
    expected_sums = render_sums(
        [
            *listed,
            ("manifest.json", hashlib.sha256(front.manifest_bytes).hexdigest()),
            ("manifest.json.sig", hashlib.sha256(front.manifest_sig).hexdigest()),
        ]
    )
    sums_member = next_named(reader, SUMS)
    exact_header(sums_member, len(expected_sums), mtime)
    sums = reader.read(sums_member, len(expected_sums))
    sums_sig_member = next_named(reader, SUMS_SIG)
    sums_sig = reader.read(sums_sig_member, MAX_SIG)
    front.verify_with_signer(sums, sums_sig, "SHA256SUMS")
    canonical_signature(sums_sig, SUMS_SIG)
    exact_header(sums_sig_member, sums_sig_member.size, mtime)
    if sums != expected_sums:
        raise TamperError("SHA256SUMS and the manifest disagree about the bundle's files")


def verify_members(
    reader: TarReader,
    listed: Sequence[FileEntry],
    mtime: int,
    keep_as: Callable[[FileEntry, int], tuple[str, ...]],
    obs: Observer,
) -> dict[str, bytes]:
    """Steps 5 and 6: every member after the control files, in path order of ``listed`` (the
    stored members the manifest lists): a regular file with a safe path under bundle/, listed,
    seen once, with exactly the header the manifest determines, of the declared size and
    SHA-256; a compressed member's declared expansion is within the bound; and nothing listed is
    missing. A member's content is handed back under each name ``keep_as`` gives for it.

    Every byte of the archive from here on is determined by the signed manifest, so where each
    member's content lies is known before the walk reaches it: the content of every member that
    nothing keeps (and that is not tiny) is handed to the pool of hashing threads at once, the
    largest first, while the walk checks every header and padding in order and skips the
    content. The walk proves each member is at the place the pool read it from."""
    entries = {f.path: f for f in listed}
    order = sorted(listed, key=lambda f: f.path)
    seen: set[str] = set()
    kept: dict[str, bytes] = {}
    plan = _plan(order, reader.next_offset(), mtime, keep_as)
    sources = hash_pool.sources_of(reader.stream)
    pool = hash_pool.RangeHasher(sources, hash_pool.stall_timeout(reader.stream)) if sources else None
    deferred: list[tuple[FileEntry, hash_pool.Job]] = []  # in archive order
    try:
        if pool is not None:
            jobs: dict[str, hash_pool.Job] = {}
            for step in plan:
                if step.pooled:
                    frame = _ZstdMember(step.entry, False) if step.entry.compression else None
                    jobs[step.entry.path] = hash_pool.Job(step.data_offset, step.entry.size, frame)
            pool.submit_all(sorted(jobs.values(), key=lambda j: j.size, reverse=True))
            deferred = [(s.entry, jobs[s.entry.path]) for s in plan if s.pooled]
        _walk_members(reader, entries, plan, seen, kept, obs, pool is not None)
        if pool is not None:
            # 5b. The members hashed on every core: each is the content the manifest lists (and a
            #     compressed one inflates to exactly its signed content), checked in archive order.
            digests = pool.results([j for _, j in deferred], lambda n: obs.advance("verify", n))
            for (entry, job), digest in zip(deferred, digests):
                _check_digest(entry, digest)
                if isinstance(job.inflater, _ZstdMember):
                    job.inflater.finish()
    finally:
        if pool is not None:
            pool.close()
    # 6. Nothing listed is missing.
    missing = sorted(set(entries) - seen)
    if missing:
        raise TamperError(
            f"{missing[0]} is listed in the manifest but missing from the bundle ({len(missing)} missing)"
        )
    return kept


INLINE_MAX = 64 << 10  # a member this small is hashed by the walk, from bytes it has read anyway


@dataclass(frozen=True)
class _Step:
    """One member as the signed manifest determines it: its header, where its content starts,
    the names it is kept under, and whether the pool hashes it."""

    entry: FileEntry
    header: bytes
    data_offset: int
    names: tuple[str, ...]
    pooled: bool


def _plan(
    order: list[FileEntry], offset: int, mtime: int, keep_as: Callable[[FileEntry, int], tuple[str, ...]]
) -> list[_Step]:
    """Each member in archive order, from ``offset`` (where the first one's header starts): its
    exact header and the offset of its content, by the byte-exact rule (docs/bundle-format.md)."""
    plan: list[_Step] = []
    for entry in order:
        header = member_header(f"{ROOT}/{entry.path}", entry.size, mtime)
        size = entry.content_size if entry.content_size is not None else entry.size
        names = keep_as(entry, size)
        plan.append(_Step(entry, header, offset + len(header), names, not names and entry.size > INLINE_MAX))
        offset += len(header) + entry.size + padding_length(entry.size)
    return plan


def _walk_members(
    reader: TarReader,
    entries: dict[str, FileEntry],
    plan: list[_Step],
    seen: set[str],
    kept: dict[str, bytes],
    obs: Observer,
    pooled: bool,
) -> None:
    """Step 5 over the members in archive order: each is the one the plan (the signed manifest)
    puts there, with exactly its header, at exactly its offset. With ``pooled``, a member the
    plan gives to the hashing threads is skipped, not read; every other one is hashed here."""
    while True:
        member = reader.next()
        if member is None:
            break
        entry = entries.get(member.name)
        if entry is None:
            raise TamperError(f"{member.name} is in the bundle but not in its signed manifest")
        if member.name in seen:
            raise TamperError(f"{member.name} appears twice in the bundle")
        step = plan[len(seen)]
        due = step.entry
        if entry is not due:
            raise TamperError(
                f"{due.path} is listed in the manifest but missing from the bundle "
                f"({member.name} is at byte {member.offset}, where {due.path} is due)"
            )
        seen.add(member.name)
        if member.size != entry.size:
            raise TamperError(f"{member.name} is {member.size} bytes; the manifest says {entry.size}")
        _exact(member, step.header)
        if member.offset + len(member.header) != step.data_offset:  # implied by the above; proved here
            raise TamperError(
                f"{member.name} starts at byte {member.offset + len(member.header)}, "
                f"not at byte {step.data_offset} where the signed manifest puts it"
            )
        if pooled and step.pooled:
            reader.skip(member)  # the pool reads and hashes these bytes; the walk goes on
            continue
        names = step.names
        h = hashlib.sha256()
        buf = bytearray() if names and not entry.compression else None
        frame = _ZstdMember(entry, bool(names)) if entry.compression else None
        for chunk in reader.chunks(member):
            h.update(chunk)
            if frame is not None:
                frame.update(chunk)
            if buf is not None:
                buf += chunk
            obs.advance("verify", len(chunk))
        _check_digest(entry, h.hexdigest())
        content = frame.finish() if frame is not None else bytes(buf) if buf is not None else None
        if content is not None:
            for name in names:
                kept[name] = content


def _check_digest(entry: FileEntry, digest: str) -> None:
    if digest != entry.sha256:
        raise TamperError(
            f"{entry.path} has been modified: sha256 {digest[:16]}…, manifest {entry.sha256[:16]}…"
        )


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


def exact_header(member: Member, size: int, mtime: int) -> None:
    """The member's header bytes, as read, must be exactly those the packer writes for it."""
    _exact(member, member_header(f"{ROOT}/{member.name}", size, mtime))


def _exact(member: Member, expected: bytes) -> None:
    if member.header == expected:
        return
    at = first_difference(member.header, expected)
    if at is not None:
        raise TamperError(
            f"{ROOT}/{member.name}: byte {member.offset + at} of the archive differs from the header "
            f"the signed manifest determines ({', '.join(differing_fields(member.header, expected)[:4])})"
        )


def canonical_signature(sig: bytes, name: str) -> None:
    """A signature member is exactly base64 of the DER signature, with the low ``s``, and a newline:
    a variant spelling of the same signature, or its (r, n - s) twin, would be bytes of the bundle
    that nothing else checks."""
    try:
        der = base64.b64decode(sig.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{name} is not base64") from None
    if base64.b64encode(der) + b"\n" != sig:
        raise SignatureError(f"{name} is not spelled as the packer writes it (base64 and one newline)")
    if not keys.is_low_s(der):
        raise SignatureError(f"{name} is not in the low-s form the packer writes (its twin (r, n-s) is)")


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
            raise TamperError(f"{self.entry.path} inflates past its signed content size ({self.limit} bytes)")
        self.hash.update(data)
        if self.data is not None:
            self.data += data
        return len(data)


class _ZstdMember:
    """Checks a ``.zst`` member as it streams past: exactly one zstd frame that declares the
    signed content size, with nothing after it, decompressing to exactly the signed content.
    Output is produced in bounded pieces, so a frame that lies cannot grow memory."""

    def __init__(self, entry: FileEntry, keep: bool) -> None:
        import zstandard  # only a bundle with compressed members needs it

        self.entry = entry
        self.walker = FrameWalker()
        self.sink = _Sink(entry, keep)
        self.faults: tuple[type[Exception], ...] = (FrameError, zstandard.ZstdError)
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
        except self.faults as exc:
            self.error = str(exc)
        except IntegrityError as exc:
            self.error = exc.message

    def finish(self) -> bytes | None:
        if self.error is None:
            try:
                self.walker.finish()
                self.writer.flush()  # type: ignore[no-untyped-call]
            except self.faults as exc:
                self.error = str(exc)
            except IntegrityError as exc:
                self.error = exc.message
        if self.error is not None:
            raise TamperError(f"{self.entry.path} is not a valid zstd member: {self.error}")
        if (
            self.sink.size != self.entry.content_size
            or self.sink.hash.hexdigest() != self.entry.content_sha256
        ):
            raise TamperError(
                f"{self.entry.path} decompresses to content that differs from the manifest "
                f"({self.sink.size} bytes, sha256 {self.sink.hash.hexdigest()[:16]}…)"
            )
        return bytes(self.sink.data) if self.sink.data is not None else None
