"""What an image holds, read from its layers without running or extracting it: the overlay of
its package databases and os-release, and the OS packages they list.

A ``docker save`` archive or an OCI layout is streamed once, nothing is extracted to disk, and
every member name is treated as hostile (it is only ever compared with the few paths we want,
never used to open or create anything). Layers are applied in order with their whiteouts, so the
file that counts is the one the running container would see. An rpm-based image is queried with
``rpm -qa`` inside the image, with the network off, when an engine is given.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import posixpath
import re
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from airgap.core.sbom import (
    Distro,
    OsPackage,
    parse_apk_installed,
    parse_dpkg_status,
    parse_os_release,
    parse_rpm_query,
)
from airgap.errors import IntegrityError, InvalidInputError
from airgap.ports import ImageRunner

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
RPM_QUERY = "%{NAME}\\t%{EPOCH}\\t%{VERSION}-%{RELEASE}\\t%{ARCH}\\t%{LICENSE}\\n"
HEX_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")


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
        m = HEX_DIGEST.match(str(digest))
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
    """The image's distribution from the first os-release file found; None when the image has none."""
    for path in OS_RELEASE:
        data = contents.read(path)
        if data is not None:
            return parse_os_release(data.decode("utf-8", "replace"))
    return None
