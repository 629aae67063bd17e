"""Reads what a staging directory contains — wheels, model, image layers — for its SBOM.

The image's OS packages come from the image's own package database (``var/lib/dpkg/status``,
``var/lib/dpkg/status.d/``, ``lib/apk/db/installed``), read straight out of the layers of the
``docker save`` archive or the OCI layout: the archive is streamed once, nothing is extracted to
disk, and every member name is treated as hostile (it is only ever compared with the few paths we
want, never used to open or create anything). Layers are applied in order with their whiteouts, so
the file that counts is the one the running container would see. An rpm-based image is queried
with ``rpm -qa`` inside the image, with the network off, when an engine is given.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import posixpath
import re
import tarfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from airgap import __version__
from airgap.adapters.fs import atomic_write_bytes
from airgap.adapters.interfaces import ImageRunner
from airgap.core.policy import mapping_of
from airgap.core.sbom import (
    Distro,
    ImageInfo,
    ModelInfo,
    OsPackage,
    SbomInputs,
    WheelInfo,
    build_sbom,
    parse_apk_installed,
    parse_dpkg_status,
    parse_os_release,
    parse_rpm_query,
    wheel_license_fields,
)
from airgap.core.wheelhouse import parse_lock
from airgap.errors import AirgapError, IntegrityError, InvalidInputError

SBOM_FILE = "sbom.cdx.json"
DPKG_STATUS = "var/lib/dpkg/status"
DPKG_STATUS_D = "var/lib/dpkg/status.d/"
APK_INSTALLED = "lib/apk/db/installed"
OS_RELEASE = ("etc/os-release", "usr/lib/os-release")
RPM_DATABASES = frozenset(
    {
        "var/lib/rpm/Packages",
        "var/lib/rpm/rpmdb.sqlite",
        "usr/lib/sysimage/rpm/Packages",
        "usr/lib/sysimage/rpm/rpmdb.sqlite",
    }
)
WANTED = frozenset({DPKG_STATUS, APK_INSTALLED, *OS_RELEASE})
MAX_WANTED_FILE = 64 << 20  # a package database larger than this is not one
SMALL_MEMBER = 4 << 20  # archive members up to this size (manifests, configs) are kept in memory
MAX_BUFFERED = 256 << 20
MAX_METADATA = 16 << 20
RPM_QUERY = "%{NAME}\\t%{EPOCH}\\t%{VERSION}-%{RELEASE}\\t%{ARCH}\\t%{LICENSE}\\n"
_HEX_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")


def normalize_member(name: str) -> str | None:
    """A member name as a clean relative path, or None if it could never be one we want.

    ``./a//b`` becomes ``a/b``; a name with ``..``, a NUL or nothing left is refused. The result is
    only compared with known paths, never joined to a directory.
    """
    if "\x00" in name:
        return None
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


@dataclass(frozen=True)
class Entry:
    """A wanted path in a layer: a regular file's bytes, a symlink's target, or mere presence."""

    kind: str  # "file", "symlink" or "present"
    data: bytes = b""
    target: str = ""


@dataclass
class _LayerChanges:
    entries: dict[str, Entry] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    opaque: set[str] = field(default_factory=set)


def _wanted(name: str) -> bool:
    return name in WANTED or name in RPM_DATABASES or name.startswith(DPKG_STATUS_D)


def _scan_layer(stream: IO[bytes], label: str) -> _LayerChanges:
    """One pass over one layer tar (plain or compressed), keeping only the wanted paths."""
    changes = _LayerChanges()
    with tarfile.open(fileobj=stream, mode="r|*") as tf:
        for member in tf:
            name = normalize_member(member.name)
            if name is None:
                continue
            parent, _, base = name.rpartition("/")
            if base == ".wh..wh..opq":
                changes.opaque.add(parent)
                continue
            if base.startswith(".wh."):
                changes.deleted.add(posixpath.join(parent, base[4:]) if parent else base[4:])
                continue
            if not _wanted(name):
                continue
            if name in RPM_DATABASES:
                changes.entries[name] = Entry("present")
            elif member.issym():
                changes.entries[name] = Entry("symlink", target=member.linkname)
            elif member.islnk():
                source = normalize_member(member.linkname)
                if source is not None and source in changes.entries:
                    changes.entries[name] = changes.entries[source]
            elif member.isreg():
                if member.size > MAX_WANTED_FILE:
                    raise InvalidInputError(
                        f"{label}: {name} is {member.size} bytes, too large to be a package database"
                    )
                fh = tf.extractfile(member)
                changes.entries[name] = Entry("file", fh.read(MAX_WANTED_FILE) if fh else b"")
            else:
                changes.entries.pop(name, None)
    return changes


def _apply(overlay: dict[str, Entry], layer: _LayerChanges) -> None:
    """Applies one layer on top of the lower ones: opaque dirs and whiteouts first, then its files."""

    for directory in layer.opaque:  # hides what lower layers had inside the directory
        for key in [k for k in overlay if directory == "" or k.startswith(directory + "/")]:
            del overlay[key]
    for path in layer.deleted:  # removes the path, and everything under it if it was a directory
        for key in [k for k in overlay if k == path or k.startswith(path + "/")]:
            del overlay[key]
    overlay.update(layer.entries)


@dataclass(frozen=True)
class ImageContents:
    """What an image archive says about the image: its config and the wanted files of its root fs."""

    config: Mapping[str, Any]
    config_digest: str
    manifest_digest: str | None
    repo_tags: tuple[str, ...]
    files: Mapping[str, Entry]
    layers: int

    def read(self, path: str, hops: int = 5) -> bytes | None:
        """A wanted file's bytes, following symlinks among the wanted files (os-release is one)."""
        entry = self.files.get(path)
        while entry is not None and entry.kind == "symlink" and hops > 0:
            target = entry.target
            joined = (
                target.lstrip("/")
                if target.startswith("/")
                else posixpath.join(posixpath.dirname(path), target)
            )
            path = normalize_member(posixpath.normpath(joined)) or ""
            entry = self.files.get(path)
            hops -= 1
        return entry.data if entry is not None and entry.kind == "file" else None


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise InvalidInputError(f"{what} is not valid JSON: {exc}") from None


def resolve_oci_layout(read: Callable[[str], bytes], prefix: str = "") -> tuple[str, str, list[str]]:
    """``(manifest digest, config path, layer paths)`` of the first image in an OCI layout.

    ``read`` reads a path relative to the layout; digests are validated before they become paths.
    """

    def blob(digest: object) -> str:
        m = _HEX_DIGEST.match(str(digest))
        if not m:
            raise InvalidInputError(f"OCI layout {prefix or '.'}: {digest!r} is not a sha256 digest")
        return f"{prefix}blobs/sha256/{m.group(1)}"

    doc = _json(read(f"{prefix}index.json"), f"{prefix}index.json")
    for _ in range(3):
        manifests = doc.get("manifests") if isinstance(doc, dict) else None
        if not isinstance(manifests, list) or not manifests or not isinstance(manifests[0], dict):
            raise InvalidInputError(f"{prefix}index.json lists no image manifest")
        desc = manifests[0]
        digest = str(desc.get("digest"))
        doc = _json(read(blob(digest)), f"manifest {digest}")
        if isinstance(doc, dict) and "config" in doc:
            config = doc.get("config")
            layers = doc.get("layers")
            if not isinstance(config, dict) or not isinstance(layers, list):
                raise InvalidInputError(f"manifest {digest} has no config or layers")
            return (
                digest,
                blob(config.get("digest")),
                [blob(layer.get("digest")) for layer in layers if isinstance(layer, dict)],
            )
    raise InvalidInputError(f"{prefix}index.json nests image indexes too deeply")


def _check_config(data: bytes, expected_hex: str | None, label: str) -> str:
    digest = hashlib.sha256(data).hexdigest()
    if expected_hex is not None and digest != expected_hex:
        raise IntegrityError(
            f"{label}: the image config's SHA-256 is {digest}, not the {expected_hex} its manifest names",
            hint="the image archive was modified or is corrupt; rebuild the bundle",
        )
    return f"sha256:{digest}"


def read_image_archive(
    fileobj: IO[bytes], *, scan_layers: bool = True, label: str = "image archive"
) -> ImageContents:
    """Reads a ``docker save`` archive (legacy or OCI-style) or a tarred OCI layout, in one pass.

    A seekable file is read with random access, so skipping layers costs nothing; a stream is read
    once. Small members (manifests, configs) are kept in memory; layers are scanned as they pass
    and applied in the order the manifest gives once it is known.
    """
    try:
        seekable = fileobj.seekable()
    except (AttributeError, OSError):
        seekable = False
    small: dict[str, bytes] = {}
    scanned: dict[str, _LayerChanges] = {}
    buffered = 0
    try:
        with tarfile.open(fileobj=fileobj, mode="r:*" if seekable else "r|*") as tf:
            for member in tf:
                name = normalize_member(member.name)
                if name is None or not member.isreg():
                    continue
                fh = tf.extractfile(member)
                if fh is None:
                    continue
                if member.size <= SMALL_MEMBER:
                    buffered += member.size
                    if buffered > MAX_BUFFERED:
                        raise InvalidInputError(f"{label}: too many small members to be an image archive")
                    small[name] = fh.read()
                elif scan_layers:
                    with contextlib.suppress(tarfile.ReadError):
                        scanned[name] = _scan_layer(fh, label)
    except tarfile.TarError as exc:
        raise InvalidInputError(f"{label} is not a readable tar archive: {exc}") from None

    def small_member(name: str) -> bytes:
        norm = normalize_member(name)
        if norm is None or norm not in small:
            raise InvalidInputError(f"{label}: {name!r} is missing from the archive")
        return small[norm]

    repo_tags: tuple[str, ...] = ()
    manifest_digest: str | None = None
    if "manifest.json" in small:
        manifest = _json(small["manifest.json"], f"{label}: manifest.json")
        if not isinstance(manifest, list) or not manifest or not isinstance(manifest[0], dict):
            raise InvalidInputError(f"{label}: manifest.json does not describe an image")
        first = manifest[0]
        config_name = str(first.get("Config", ""))
        layer_names = [str(x) for x in first.get("Layers") or []]
        repo_tags = tuple(str(t) for t in first.get("RepoTags") or [])
        m = re.search(r"([0-9a-f]{64})(\.json)?$", config_name)
        expected = m.group(1) if m else None
    elif "index.json" in small:
        manifest_digest, config_name, layer_names = resolve_oci_layout(small_member)
        expected = config_name.rsplit("/", 1)[-1]
    else:
        raise InvalidInputError(f"{label} has neither manifest.json nor index.json: not an image archive")
    config_bytes = small_member(config_name)
    config_digest = _check_config(config_bytes, expected, label)
    config = _json(config_bytes, f"{label}: image config")
    if not isinstance(config, dict):
        raise InvalidInputError(f"{label}: the image config is not an object")
    overlay: dict[str, Entry] = {}
    if scan_layers:
        for layer in layer_names:
            norm = normalize_member(layer) or ""
            if norm in scanned:
                changes = scanned[norm]
            elif norm in small:
                try:
                    changes = _scan_layer(io.BytesIO(small[norm]), label)
                except tarfile.TarError as exc:
                    raise InvalidInputError(f"{label}: layer {layer} is not a tar archive: {exc}") from None
            else:
                raise InvalidInputError(f"{label}: layer {layer!r} is missing or unreadable")
            _apply(overlay, changes)
    return ImageContents(config, config_digest, manifest_digest, repo_tags, overlay, len(layer_names))


def read_oci_layout(layout: Path, *, scan_layers: bool = True) -> ImageContents:
    """The same, for an OCI image layout directory (``image/oci/`` in a staging directory)."""

    def read(rel: str) -> bytes:
        try:
            return (layout / rel).read_bytes()
        except OSError as exc:
            raise InvalidInputError(
                f"OCI layout {layout}: cannot read {rel}: {exc.strerror or exc}"
            ) from None

    manifest_digest, config_path, layer_paths = resolve_oci_layout(read)
    config_bytes = read(config_path)
    config_digest = _check_config(config_bytes, config_path.rsplit("/", 1)[-1], str(layout))
    config = _json(config_bytes, f"{layout}: image config")
    overlay: dict[str, Entry] = {}
    if scan_layers:
        for rel in layer_paths:
            try:
                with (layout / rel).open("rb") as fh:
                    _apply(overlay, _scan_layer(fh, f"{layout}/{rel}"))
            except OSError as exc:
                raise InvalidInputError(
                    f"OCI layout {layout}: cannot read {rel}: {exc.strerror or exc}"
                ) from None
            except tarfile.TarError as exc:
                raise InvalidInputError(f"OCI layout {layout}: {rel} is not a layer: {exc}") from None
    return ImageContents(
        config if isinstance(config, dict) else {},
        config_digest,
        manifest_digest,
        (),
        overlay,
        len(layer_paths),
    )


def read_staging_image(staging: Path, *, scan_layers: bool = True) -> ImageContents | None:
    """The image of a staging directory: its OCI layout if it has one, else the docker archive."""
    layout = staging / "image" / "oci"
    if (layout / "index.json").is_file():
        return read_oci_layout(layout, scan_layers=scan_layers)
    archive = staging / "image" / "model-image.tar"
    if archive.is_file():
        try:
            with archive.open("rb") as fh:
                return read_image_archive(fh, scan_layers=scan_layers, label=str(archive))
        except OSError as exc:
            raise InvalidInputError(f"cannot read {archive}: {exc.strerror or exc}") from None
    return None


# --------------------------------------------------------------------------------------- OS packages


def os_packages(contents: ImageContents) -> tuple[list[OsPackage], str]:
    """The packages the image's own database lists, and where they were read from."""
    status = contents.read(DPKG_STATUS)
    status_d = sorted(
        k for k, v in contents.files.items() if k.startswith(DPKG_STATUS_D) and v.kind == "file"
    )
    if status is not None or status_d:
        packages = parse_dpkg_status(status.decode("utf-8", "replace")) if status is not None else []
        for path in status_d:
            packages += parse_dpkg_status(
                contents.files[path].data.decode("utf-8", "replace"), require_status=False
            )
        where = " and ".join(
            x for x in (DPKG_STATUS if status is not None else "", DPKG_STATUS_D if status_d else "") if x
        )
        return packages, f"dpkg: {where} in the image layers"
    apk = contents.read(APK_INSTALLED)
    if apk is not None:
        return parse_apk_installed(
            apk.decode("utf-8", "replace")
        ), f"apk: {APK_INSTALLED} in the image layers"
    if any(k in RPM_DATABASES for k in contents.files):
        return [], "rpm"
    return [], "none: the image has no dpkg, apk or rpm package database"


def rpm_packages(image: str, engine: ImageRunner) -> list[OsPackage]:
    """``rpm -qa`` inside the image (no network, read-only root): the rpm database is binary."""
    out = engine.run_isolated(image, ["rpm", "-qa", "--qf", RPM_QUERY], timeout=120)
    return parse_rpm_query(out.decode("utf-8", "replace"))


def distro_of(contents: ImageContents) -> Distro | None:
    for path in OS_RELEASE:
        data = contents.read(path)
        if data is not None:
            return parse_os_release(data.decode("utf-8", "replace"))
    return None


# --------------------------------------------------------------------------------------- wheels


def sha256_file(path: Path) -> str:
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


def _build_record(staging: Path) -> dict[str, Any]:
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
    return data


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
    model_rec = mapping_of(record.get("model"))
    model_file = model_rec.get("file")
    if isinstance(model_file, str) and normalize_member(model_file) == model_file:
        digest = sha256_file(staging / model_file)
        recorded = model_rec.get("sha256")
        if recorded and recorded != digest:
            raise IntegrityError(f"{model_file}: SHA-256 {digest} is not the {recorded} build.json records")
        model = ModelInfo(model_file, digest)
    image_rec = mapping_of(record.get("image"))
    base_rec = mapping_of(record.get("base_image"))
    contents = read_staging_image(staging, scan_layers=True)
    packages: list[OsPackage] = []
    distro: Distro | None = None
    image: ImageInfo | None = None
    if contents is not None:
        distro = distro_of(contents)
        packages, source = os_packages(contents)
        config = mapping_of(contents.config.get("config"))
        ref = str(image_rec.get("tag") or (contents.repo_tags[0] if contents.repo_tags else "model-image"))
        if source == "rpm":
            source = "rpm: the image has an rpm database, not read (no container engine given)"
            if engine is not None:
                try:
                    packages = rpm_packages(str(image_rec.get("id") or ref), engine)
                    source = "rpm: rpm -qa inside the image, network off"
                except AirgapError as exc:
                    source = f"rpm: the image has an rpm database that could not be read: {exc.one_line()}"
        image = ImageInfo(
            ref=ref,
            image_id=contents.config_digest,
            manifest_digest=contents.manifest_digest or _digest_or_none(image_rec.get("digest")),
            architecture=_arch(contents.config),
            os=str(contents.config.get("os") or "linux"),
            user=str(config.get("User") or image_rec.get("user") or ""),
            base_requested=str(base_rec.get("requested") or ""),
            base_resolved=str(base_rec.get("resolved") or ""),
            os_packages_source=source,
        )
    return SbomInputs(
        name=str(record.get("name") or staging.name),
        version=str(record.get("version") or "0.0.0"),
        timestamp=timestamp,
        tool_version=__version__,
        wheels=tuple(wheels),
        os_packages=tuple(packages),
        distro=distro,
        image=image,
        model=model,
    )


def _digest_or_none(value: object) -> str | None:
    return str(value) if isinstance(value, str) and _HEX_DIGEST.match(value) else None


def build_staging_sbom(staging: Path, *, timestamp: datetime, engine: ImageRunner | None = None) -> bytes:
    """The CycloneDX 1.6 JSON of a staging directory (nothing is written)."""
    return build_sbom(staging_sbom_inputs(staging, timestamp=timestamp, engine=engine))


def write_staging_sbom(staging: Path, *, timestamp: datetime, engine: ImageRunner | None = None) -> Path:
    """Writes ``sbom.cdx.json`` into the staging directory, atomically, and returns its path."""
    data = build_staging_sbom(staging, timestamp=timestamp, engine=engine)
    dest = staging / SBOM_FILE
    atomic_write_bytes(dest, data)
    return dest
