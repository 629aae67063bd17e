"""Packing a staging directory into a signed, reproducible, media-ready bundle (format v2 or v1).

Two passes over the content: the first hashes every file (compressing with zstd the large ones
that are not already compressed) so that the manifest — which comes first in the archive, so the
verifier can check the signature before reading anything else — lists every file; the second
streams the members into the archive, cut into parts when asked. How the files become members is
the format's (``BundleFormat.layout`` in services/media/formats/). See docs/bundle-format.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airgap import __version__
from airgap.adapters.archive import PartInfo
from airgap.core import names, versions
from airgap.core.bundle_format import (
    CONTROL,
    MAX_MANIFEST,
    ROOT,
    ImageEntry,
    Manifest,
    format_timestamp,
    render_sums,
)
from airgap.core.signing import ALLOWED_ALGORITHMS
from airgap.core.tar_format import OCTAL_LIMIT
from airgap.errors import InvalidInputError, UsageError
from airgap.ports import Signer
from airgap.services.media import formats
from airgap.services.media.formats._writing import ContentChanged, HashingTarWriter
from airgap.services.media.parity import ParitySink, write_parts_index
from airgap.services.observer import BYTES, NullObserver, Observer

# What of a staging directory ships: everything but the docker-save copy of the image.
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_EXCLUDE = re.compile(r"^(image/model-image\.tar)$")


@dataclass(frozen=True)
class PackResult:
    """What was written and the manifest it was sealed with, so the caller can report and verify it."""

    files: tuple[Path, ...]  # the bundle file, or its parts (data, then parity) and signed indexes
    manifest: Manifest
    manifest_sha256: str
    parts: tuple[PartInfo, ...]  # the data parts (their concatenation is the bundle)
    total_size: int
    parity_parts: tuple[PartInfo, ...] = ()
    parity_seconds: float = 0.0  # time spent encoding the parity parts


def content_files(staging: Path) -> list[tuple[str, Path]]:
    """(bundle path, file) of what a bundle of ``staging`` holds, sorted: the packer and the
    delta planner (which hashes them to find what the far side holds) read the same list."""
    out = []
    for path in sorted(staging.rglob("*")):
        if path.is_symlink():
            raise InvalidInputError(f"{path} is a symbolic link; a bundle holds regular files only")
        if not path.is_file():
            continue
        rel = path.relative_to(staging).as_posix()
        if _EXCLUDE.match(rel) or rel.startswith(".") or "/." in rel:
            continue
        out.append((rel, path))
    # Refused here, before any byte is hashed, by the rule the far side applies (core/names.py):
    # a bundle the packer writes always lays out.
    try:
        names.check_tree((rel for rel, _ in out), "file name", (*names.CONTROL_NAMES, *names.INSTALLER_NAMES))
    except names.UnsafeName as exc:
        raise InvalidInputError(
            f"{staging}: {exc.message}",
            hint=f"rename or remove that file in the staging directory ({names.CHARACTERS}; "
            "see docs/bundle-format.md, Names)",
        ) from None
    return out


def _expiry(now: dt.datetime, expires: str | None) -> str | None:
    """The instant after which the far side refuses the bundle.

    ``90d`` counts from ``now``, the signing time, not from SOURCE_DATE_EPOCH: a reproducible
    build may carry an old epoch, and its bundle must not be born expired. An absolute date is
    taken as given (and keeps the manifest reproducible).
    """
    if not expires:
        return None
    m = re.match(r"^([0-9]{1,5})d$", expires)
    if m:
        when = now + dt.timedelta(days=int(m.group(1)))
    else:
        try:
            when = dt.datetime.fromisoformat(expires.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInputError(
                f"--expires {expires!r} must be like 90d or 2027-01-31T00:00:00Z"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
    if when <= now:
        raise InvalidInputError(
            f"--expires {expires!r} is not in the future: the bundle would be born expired"
        )
    return format_timestamp(when)


def pack(
    staging: Path,
    out_dir: Path,
    signer: Signer,
    epoch: int,
    *,
    name: str,
    version: str,
    part_size: int | None = None,
    expires: str | None = None,
    metadata: dict[str, Any] | None = None,
    observer: Observer | None = None,
    now: dt.datetime | None = None,
    parity: int = 0,
    bundle_format: str = formats.DEFAULT,
    external: frozenset[str] = frozenset(),
) -> PackResult:
    """Writes ``NAME-VERSION.airgap.tar`` (or its parts + signed index, and ``parity`` parity
    parts with their signed index) into ``out_dir``.

    ``created`` is SOURCE_DATE_EPOCH (reproducible); a relative ``expires`` counts from ``now``,
    the signing time. Nothing is named from ``name`` or ``version`` before both are checked.
    ``bundle_format`` is a ``--format`` choice (``formats.names()``; v2, content-addressed, by
    default). ``external`` (only a format that ``supports_external_blobs``) holds content SHA-256
    hex digests the far side already has: their blobs are left out, and the files that use them
    are listed with ``"external": true``.
    """
    fmt = formats.get(bundle_format)
    if external and not fmt.supports_external_blobs:
        raise UsageError("only a v2 bundle can leave blobs out (external); pack it with format v2")
    obs = observer or NullObserver()
    meta = metadata or {}
    if not 0 <= epoch < OCTAL_LIMIT:
        raise InvalidInputError(f"SOURCE_DATE_EPOCH {epoch} does not fit a tar header's mtime")
    created = dt.datetime.fromtimestamp(epoch, dt.timezone.utc)
    signing_time = now or dt.datetime.now(dt.timezone.utc)
    if not DNS_LABEL.fullmatch(name):
        raise InvalidInputError(f"bundle name {name!r} must be a lowercase DNS label (a-z, 0-9, '-')")
    if not versions.is_valid(version):
        raise InvalidInputError(f"bundle version {version!r} is not a semantic version such as 1.2.0")
    expiry = _expiry(signing_time, expires)
    if signer.algorithm not in ALLOWED_ALGORITHMS:
        raise InvalidInputError(
            f"key {signer.key_id[:16]} signs with {signer.algorithm}, which verifiers refuse "
            f"(they accept {', '.join(sorted(ALLOWED_ALGORITHMS))})",
            hint="sign with a key from `airgap keys generate`",
        )
    base_name = f"{name}-{version}.airgap.tar"
    files = content_files(staging)
    total_in = sum(p.stat().st_size for _, p in files)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".airgap-pack-", dir=out_dir) as tmp:
        work = Path(tmp)
        obs.begin("hash", total_in, BYTES)
        try:
            layout = fmt.layout(files, work, external, obs)
        except ContentChanged as exc:
            raise InvalidInputError(
                f"{exc}: nothing was written",
                hint="stop whatever is changing the staging directory, then pack again",
            ) from None
        obs.end("hash")
        manifest = Manifest(
            name=name,
            version=version,
            created=format_timestamp(created),
            expires=expiry,
            tool=f"airgap {__version__}",
            key_id=signer.key_id,
            files=layout.files,
            target_profile_sha256=meta.get("target_profile_sha256"),
            images=tuple(
                ImageEntry.from_json(img, f"images[{i}]") for i, img in enumerate(meta.get("images", ()))
            ),
            locks=meta.get("locks", {}),
            policy=meta.get("policy", {}),
            algorithm=signer.algorithm,
            format=fmt.name,
            blobs=layout.blobs,
        )
        manifest_bytes = manifest.to_bytes()
        if len(manifest_bytes) > MAX_MANIFEST:
            raise InvalidInputError(
                f"the manifest would be {len(manifest_bytes)} bytes, "
                f"over the {MAX_MANIFEST} a verifier reads",
                hint="bundle fewer files",
            )
        # Never sign what the far side would refuse to parse.
        fmt.parse_manifest(manifest_bytes)
        manifest_sig = signer.sign(manifest_bytes)
        sums = render_sums(
            [(e.path, e.sha256) for e in layout.stored]
            + [
                ("manifest.json", hashlib.sha256(manifest_bytes).hexdigest()),
                ("manifest.json.sig", hashlib.sha256(manifest_sig).hexdigest()),
            ]
        )
        sums_sig = signer.sign(sums)

        sink = ParitySink(out_dir, base_name, part_size, parity if part_size is not None else 0, obs)
        try:
            writer = HashingTarWriter(sink, epoch, ROOT)
            control = dict(zip(CONTROL, (manifest_bytes, manifest_sig, sums, sums_sig)))
            for member, data in control.items():
                writer.add_bytes(member.split("/", 1)[1], data)
            obs.begin("pack", manifest.total_size, BYTES)
            for entry in sorted(layout.stored, key=lambda e: e.path):
                src, size = layout.sources[entry.path]
                writer.add_checked_file(entry.path, src, size, entry.sha256)
                obs.advance("pack", size, entry.path)
            obs.end("pack")
            writer.close()
            sink.close()  # and the parity parts are encoded, before anything is replaced
            # A previous pack of the same name and version (whole or split) would be ambiguous.
            for stale in out_dir.glob(f"{base_name}*"):
                if stale.is_file() and not stale.name.startswith("."):
                    stale.unlink()
            parts = sink.commit()
        except ContentChanged as exc:
            sink.abort()
            raise InvalidInputError(
                f"{exc}: nothing was written",
                hint="stop whatever is changing the staging directory, then pack again",
            ) from None
        except BaseException:
            sink.abort()
            raise
    written = [out_dir / p.name for p in parts] + sink.parity_files
    if part_size is not None:
        written += write_parts_index(out_dir, base_name, parts, sink.parity, signer)
    return PackResult(
        tuple(written),
        manifest,
        hashlib.sha256(manifest_bytes).hexdigest(),
        tuple(parts),
        sum(p.size for p in parts),
        sink.parity_parts,
        sink.encode_seconds,
    )
