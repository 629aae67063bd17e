"""Reads what a staging directory contains — wheels, model, image — for its SBOM.

The image's OS packages come from the image's own package database, read straight out of its
layers by adapters/image_contents.py; this module adds the wheelhouse (each wheel's own
metadata, checked against the hash-locked pins), the model, and writes the CycloneDX document.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from airgap import __version__
from airgap.adapters.fs import atomic_write_bytes
from airgap.adapters.image_contents import (
    HEX_DIGEST,
    distro_of,
    normalize_member,
    os_packages,
    read_staging_image,
    rpm_packages,
)
from airgap.adapters.image_contents import read_image_archive as read_image_archive
from airgap.adapters.image_contents import resolve_oci_layout as resolve_oci_layout
from airgap.core.build_record import BuildRecord
from airgap.core.policy import mapping_of
from airgap.core.sbom import (
    Distro,
    ImageInfo,
    ModelInfo,
    OsPackage,
    SbomInputs,
    WheelInfo,
    build_sbom,
    wheel_license_fields,
)
from airgap.core.wheelhouse import parse_lock
from airgap.errors import AirgapError, IntegrityError, InvalidInputError
from airgap.ports import ImageRunner

SBOM_FILE = "sbom.cdx.json"
MAX_METADATA = 16 << 20


# --------------------------------------------------------------------------------------- wheels


def sha256_file(path: Path) -> str:
    """Streams the file in 1 MiB chunks so a multi-gigabyte model is hashed without being held in memory."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()


def wheel_metadata(path: Path) -> str:
    """The wheel's own ``*.dist-info/METADATA`` (one, at the top level, bounded in size)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
            if len(names) != 1:
                raise InvalidInputError(
                    f"{path.name} has {len(names)} METADATA files; a wheel has exactly one"
                )
            info = zf.getinfo(names[0])
            if info.file_size > MAX_METADATA:
                raise InvalidInputError(
                    f"{path.name}: METADATA is implausibly large ({info.file_size} bytes)"
                )
            with zf.open(info) as fh:
                return fh.read(MAX_METADATA).decode("utf-8", "replace")
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidInputError(f"{path.name} is not a readable wheel: {exc}") from None


def wheelhouse_components(lock_path: Path, wheels_dir: Path, wheelhouse: str) -> list[WheelInfo]:
    """Every pin of a lock with its wheel file, hash checked against the lock, and its license."""
    try:
        text = lock_path.read_text()
    except OSError as exc:
        raise InvalidInputError(f"cannot read {lock_path}: {exc.strerror or exc}") from None
    lock = parse_lock(text, str(lock_path))
    files: dict[tuple[str, str], Path] = {}
    for candidate in sorted(wheels_dir.glob("*.whl")) if wheels_dir.is_dir() else []:
        try:
            name, version, _, _ = parse_wheel_filename(candidate.name)
        except InvalidWheelFilename:
            continue
        files[(str(name), str(version))] = candidate
    out = []
    for pin in lock.pins:
        path = next(
            (p for (n, v), p in files.items() if n == pin.name and _same_version(v, pin.version)), None
        )
        if path is None:
            raise InvalidInputError(
                f"{lock_path}: {pin.name}=={pin.version} has no wheel in {wheels_dir}",
                hint="the staging directory is incomplete; run airgap bundle again",
            )
        digest = sha256_file(path)
        if digest not in pin.hashes:
            raise IntegrityError(
                f"{path.name}: SHA-256 {digest} is not the hash {lock_path.name} pins",
                hint="the wheelhouse was modified; rebuild it with airgap bundle",
            )
        metadata = wheel_metadata(path)
        expression, lic, classifiers, summary = wheel_license_fields(metadata)
        metadata_name = _metadata_name(metadata) or pin.name
        out.append(
            WheelInfo(
                wheelhouse,
                metadata_name,
                pin.version,
                path.name,
                digest,
                expression,
                lic,
                classifiers,
                summary,
            )
        )
    return out


def _metadata_name(metadata: str) -> str | None:
    for line in metadata.splitlines():
        if not line.strip():
            return None
        if line.lower().startswith("name:"):
            return line.split(":", 1)[1].strip() or None
    return None


def _same_version(a: str, b: str) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


# --------------------------------------------------------------------------------------- the SBOM


def _build_record(staging: Path) -> BuildRecord:
    path = staging / "build.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidInputError(
            f"{staging} has no build.json: not a staging directory", hint="run airgap bundle first"
        ) from None
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path} is not a build record")
    # An unsigned staging directory's record, read as found: a field of the wrong type is absent.
    return BuildRecord.from_mapping(data, lenient=True)


def _arch(config: Mapping[str, Any]) -> str:
    arch = str(config.get("architecture") or "")
    variant = config.get("variant")
    return f"{arch}/{variant}" if arch and variant else arch


def staging_sbom_inputs(
    staging: Path, *, timestamp: datetime, engine: ImageRunner | None = None
) -> SbomInputs:
    """Everything the SBOM lists, read from a staging directory (and its image's layers)."""
    record = _build_record(staging)
    wheels = wheelhouse_components(staging / "requirements.lock", staging / "wheels", "image")
    if (staging / "host" / "requirements.lock").is_file():
        wheels += wheelhouse_components(
            staging / "host" / "requirements.lock", staging / "host" / "wheels", "host"
        )
    model: ModelInfo | None = None
    model_file = record.model.file
    if model_file is not None and normalize_member(model_file) == model_file:
        digest = sha256_file(staging / model_file)
        recorded = record.model.sha256
        if recorded and recorded != digest:
            raise IntegrityError(f"{model_file}: SHA-256 {digest} is not the {recorded} build.json records")
        model = ModelInfo(model_file, digest)
    image_rec, base_rec = record.image, record.base_image
    contents = read_staging_image(staging, scan_layers=True)
    packages: list[OsPackage] = []
    distro: Distro | None = None
    image: ImageInfo | None = None
    if contents is not None:
        distro = distro_of(contents)
        packages, source = os_packages(contents)
        config = mapping_of(contents.config.get("config"))
        ref = image_rec.tag or (contents.repo_tags[0] if contents.repo_tags else "model-image")
        if source == "rpm":
            source = "rpm: the image has an rpm database, not read (no container engine given)"
            if engine is not None:
                try:
                    packages = rpm_packages(image_rec.id or ref, engine)
                    source = "rpm: rpm -qa inside the image, network off"
                except AirgapError as exc:
                    source = f"rpm: the image has an rpm database that could not be read: {exc.one_line()}"
        image = ImageInfo(
            ref=ref,
            image_id=contents.config_digest,
            manifest_digest=contents.manifest_digest or _digest_or_none(image_rec.digest),
            architecture=_arch(contents.config),
            os=str(contents.config.get("os") or "linux"),
            user=str(config.get("User") or image_rec.user or ""),
            base_requested=base_rec.requested or "",
            base_resolved=base_rec.resolved or "",
            os_packages_source=source,
        )
    return SbomInputs(
        name=record.name or staging.name,
        version=record.version or "0.0.0",
        timestamp=timestamp,
        tool_version=__version__,
        wheels=tuple(wheels),
        os_packages=tuple(packages),
        distro=distro,
        image=image,
        model=model,
    )


def _digest_or_none(value: object) -> str | None:
    return str(value) if isinstance(value, str) and HEX_DIGEST.match(value) else None


def build_staging_sbom(staging: Path, *, timestamp: datetime, engine: ImageRunner | None = None) -> bytes:
    """The CycloneDX 1.6 JSON of a staging directory (nothing is written)."""
    return build_sbom(staging_sbom_inputs(staging, timestamp=timestamp, engine=engine))


def write_staging_sbom(staging: Path, *, timestamp: datetime, engine: ImageRunner | None = None) -> Path:
    """Writes ``sbom.cdx.json`` into the staging directory, atomically, and returns its path."""
    data = build_staging_sbom(staging, timestamp=timestamp, engine=engine)
    dest = staging / SBOM_FILE
    atomic_write_bytes(dest, data)
    return dest
