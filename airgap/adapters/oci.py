"""Images as content-addressed OCI layouts: converted from ``docker save``, stored once by digest.

The conversion makes an image reproducible: every layer is re-written with its timestamps clamped
to SOURCE_DATE_EPOCH and compressed deterministically (gzip with no name and mtime 0), and the
config's creation times and builder-container fields are normalized. The same image content then
gives the same layer, config and manifest digests — and so the same bundle bytes.

Everything streams: a layer is read once, rewritten, hashed twice (diff id and blob digest) and
compressed in one pass, with memory bounded by the tar block size.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, cast

from airgap.errors import IntegrityError, InvalidInputError
from airgap.ports import OciImage as OciImage

MANIFEST_MT = "application/vnd.oci.image.manifest.v1+json"
INDEX_MT = "application/vnd.oci.image.index.v1+json"
CONFIG_MT = "application/vnd.oci.image.config.v1+json"
LAYER_MT = "application/vnd.oci.image.layer.v1.tar+gzip"
CHUNK = 1 << 20
GZIP_LEVEL = 6


def canonical(value: object) -> bytes:
    """The one JSON serialization of configs, manifests and indexes (sorted keys, no spaces), so the same
    image always gets the same digests."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class _HashingWriter:
    """A write-only stream that hashes and counts what passes through it."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink = sink
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        self.sink.write(data)
        return len(data)

    def flush(self) -> None:
        self.sink.flush()


class _GzipSink:
    """Deterministic gzip (no file name, mtime 0) into a hashing writer: the blob digest."""

    def __init__(self, out: _HashingWriter) -> None:
        self.out = out
        self.gz = gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=GZIP_LEVEL)

    def write(self, data: bytes) -> int:
        self.gz.write(data)
        return len(data)

    def close(self) -> None:
        self.gz.close()


def _clamp(ti: tarfile.TarInfo, epoch: int) -> tarfile.TarInfo:
    ti.mtime = min(int(ti.mtime), epoch)
    ti.pax_headers = {k: v for k, v in ti.pax_headers.items() if k not in ("atime", "ctime", "mtime")}
    return ti


def _rewrite_layer(src: IO[bytes], dest_dir: Path, epoch: int) -> tuple[str, str, int]:
    """Rewrites one layer tar (clamped times, PAX) into a gzip blob; returns diff id, digest, size."""
    fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=".layer-", suffix=".tmp")
    diff = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as raw:
            blob = _HashingWriter(raw)
            gz = _GzipSink(blob)

            class _DiffTee:
                def write(self, data: bytes) -> int:
                    diff.update(data)
                    return gz.write(data)

            sink = cast(IO[bytes], _DiffTee())
            with (
                tarfile.open(fileobj=src, mode="r|") as tin,
                tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tout,
            ):
                for member in tin:
                    data = tin.extractfile(member) if member.isreg() else None
                    tout.addfile(_clamp(member, epoch), data)
            gz.close()
        digest = "sha256:" + blob.hash.hexdigest()
        final = dest_dir / blob.hash.hexdigest()
        if final.exists():
            os.unlink(tmp_name)
        else:
            os.replace(tmp_name, final)
        return "sha256:" + diff.hexdigest(), digest, blob.size
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


# The rewrite of a layer is a pure function of its bytes, the clamp time and the compression
# settings; the key names all of them, so a cache written by another airgap is never misread.
_LAYER_CACHE_KEY = f"v1-gzip{GZIP_LEVEL}-pax"


def _source_digest(member_file: IO[bytes]) -> str:
    """SHA-256 of a saved layer as the engine wrote it: the layer cache's key, from the bytes
    themselves (never from the archive's own claims)."""
    h = hashlib.sha256()
    while chunk := member_file.read(CHUNK):
        h.update(chunk)
    return h.hexdigest()


def _blob_digests(path: Path) -> tuple[str, str]:
    """(SHA-256 of a gzip blob, SHA-256 of what it decompresses to), in one read: a cached layer
    is reused only when both are what its record says, so neither a damaged blob nor a record
    pointing at another blob can put a wrong layer into a bundle."""
    blob, diff = hashlib.sha256(), hashlib.sha256()
    inflate = zlib.decompressobj(wbits=31)  # gzip framing
    with open(path, "rb", buffering=0) as fh:
        while chunk := fh.read(CHUNK):
            blob.update(chunk)
            diff.update(inflate.decompress(chunk))
    diff.update(inflate.flush())
    if not inflate.eof:
        return blob.hexdigest(), ""
    return blob.hexdigest(), diff.hexdigest()


class LayerCache:
    """Converted layers of earlier conversions, by the SHA-256 of the saved layer and the clamp
    time: a re-bundle whose base and dependency layers did not change skips re-compressing them
    (the gzip pass is most of the conversion's time). An entry is a small JSON record and the blob
    it names; a blob is re-hashed before it is reused, so a damaged cache costs a rewrite, never a
    wrong layer."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _record(self, source: str, epoch: int) -> Path:
        return self.root / _LAYER_CACHE_KEY / f"{source}-{epoch}.json"

    def get(self, source: str, epoch: int, blobs: Path) -> tuple[str, str, int] | None:
        """(diff id, blob digest, size) with the blob linked into ``blobs``, or None."""
        try:
            entry = json.loads(self._record(source, epoch).read_text())
            diff_id, digest, size = str(entry["diff_id"]), str(entry["digest"]), int(entry["size"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        hexd = digest.removeprefix("sha256:")
        cached = self.root / "blobs" / hexd
        try:
            if cached.stat().st_size != size:
                return None
            if _blob_digests(cached) != (hexd, diff_id.removeprefix("sha256:")):
                return None
        except (OSError, zlib.error):  # unreadable, or not a gzip stream: a miss, rewritten
            return None
        _place(cached, blobs / hexd, replace=True)
        return diff_id, digest, size

    def put(self, source: str, epoch: int, blob: Path, diff_id: str, digest: str, size: int) -> None:
        """Keeps ``blob`` (already in a layout) for later conversions; best effort."""
        with contextlib.suppress(OSError):
            (self.root / "blobs").mkdir(parents=True, exist_ok=True)
            self._record(source, epoch).parent.mkdir(parents=True, exist_ok=True)
            _place(blob, self.root / "blobs" / digest.removeprefix("sha256:"), replace=True)
            record = self._record(source, epoch)
            tmp = record.with_name(f".{record.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"diff_id": diff_id, "digest": digest, "size": size}))
            os.replace(tmp, record)


def _place(src: Path, dest: Path, *, replace: bool = False) -> None:
    """``dest`` gets ``src``'s bytes: a hard link where the file system allows it, else a copy;
    written under a temporary name and renamed, so a reader never sees half a blob. An existing
    ``dest`` is kept unless ``replace`` (a damaged cached blob is then replaced, not kept)."""
    if dest.exists() and (not replace or dest.samefile(src)):
        return
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def _write_blob(blobs: Path, data: bytes) -> tuple[str, int]:
    hexd = hashlib.sha256(data).hexdigest()
    path = blobs / hexd
    if not path.exists():
        tmp = blobs / f".{hexd}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return "sha256:" + hexd, len(data)


def _normalize_config(config: dict[str, Any], diff_ids: list[str], epoch: int) -> dict[str, Any]:
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    out = {k: v for k, v in config.items() if k not in ("container", "container_config", "id", "parent")}
    if isinstance(out.get("config"), dict) and "Image" in out["config"]:
        # The id of the engine's intermediate image the last step ran on: different in every
        # build that did not come from the cache, though the image is the same.
        out["config"] = {**out["config"], "Image": ""}
    out["created"] = created
    out["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    history = []
    for entry in config.get("history") or []:
        entry = dict(entry)
        entry["created"] = created
        history.append(entry)
    out["history"] = history
    return out


def docker_archive_to_oci(
    archive: Path,
    layout: Path,
    ref_name: str,
    epoch: int,
    on_bytes: Callable[[int], None] | None = None,
    *,
    layer_epoch: int | None = None,
    layer_cache: Path | None = None,
) -> OciImage:
    """Converts a ``docker save`` archive of one image into (or into an existing) OCI layout.

    ``on_bytes`` hears the size of each layer of the archive as it is converted. Layer timestamps
    are clamped to ``layer_epoch`` (default ``epoch``): a value that stays the same from one
    version to the next keeps the layers that did not change byte-identical, so a delta bundle
    leaves them out; the config's creation time is ``epoch`` either way. ``layer_cache``: a
    directory where converted layers are kept and reused (``LayerCache``).
    """
    cache = LayerCache(layer_cache) if layer_cache is not None else None
    clamp_to = epoch if layer_epoch is None else layer_epoch
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, mode="r:") as tf:
            entries = {m.name: m for m in tf.getmembers()}
            manifest_member = entries.get("manifest.json")
            if manifest_member is None:
                raise InvalidInputError(f"{archive} is not a docker save archive (no manifest.json)")
            saved = json.loads(_read_member(tf, manifest_member))
            if not isinstance(saved, list) or len(saved) != 1:
                raise InvalidInputError(f"{archive} must hold exactly one image")
            entry = saved[0]
            config = json.loads(_read_member(tf, entries[entry["Config"]]))
            diff_ids: list[str] = []
            layers: list[tuple[str, int]] = []
            for layer_name in entry["Layers"]:
                member = entries.get(layer_name)
                if member is None or not member.isfile():
                    raise InvalidInputError(f"{archive}: layer {layer_name} is missing")
                fh = tf.extractfile(member)
                assert fh is not None
                source = ""
                hit = None
                if cache is not None:
                    source = _source_digest(fh)
                    hit = cache.get(source, clamp_to, blobs)
                    fh.seek(0)
                if hit is not None:
                    diff_id, digest, size = hit
                else:
                    diff_id, digest, size = _rewrite_layer(fh, blobs, clamp_to)
                    if cache is not None:
                        blob = blobs / digest.removeprefix("sha256:")
                        cache.put(source, clamp_to, blob, diff_id, digest, size)
                diff_ids.append(diff_id)
                layers.append((digest, size))
                if on_bytes is not None:
                    on_bytes(member.size)
    except (tarfile.TarError, KeyError, ValueError) as exc:
        raise InvalidInputError(f"{archive} is not a valid docker save archive: {exc}") from None
    cfg_digest, cfg_size = _write_blob(blobs, canonical(_normalize_config(config, diff_ids, epoch)))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MT,
        "config": {"mediaType": CONFIG_MT, "digest": cfg_digest, "size": cfg_size},
        "layers": [{"mediaType": LAYER_MT, "digest": d, "size": s} for d, s in layers],
    }
    man_bytes = canonical(manifest)
    man_digest, man_size = _write_blob(blobs, man_bytes)
    (layout / "oci-layout").write_bytes(canonical({"imageLayoutVersion": "1.0.0"}))
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX_MT,
        "manifests": [
            {
                "mediaType": MANIFEST_MT,
                "digest": man_digest,
                "size": man_size,
                "annotations": {"org.opencontainers.image.ref.name": ref_name},
            }
        ],
    }
    (layout / "index.json").write_bytes(canonical(index))
    # The docker-archive manifest beside the OCI index, over the same blobs (as `docker save` writes
    # since Engine 25): `tar -cf - -C image/oci . | docker load` then works on engines before 25,
    # which cannot read an OCI layout, for an admin who has no airgap.
    docker_manifest = [
        {
            "Config": f"blobs/sha256/{cfg_digest.split(':', 1)[1]}",
            "RepoTags": [ref_name],
            "Layers": [f"blobs/sha256/{d.split(':', 1)[1]}" for d, _ in layers],
        }
    ]
    (layout / "manifest.json").write_bytes(canonical(docker_manifest))
    return OciImage(layout, man_digest, cfg_digest, tuple(layers), ref_name)


def _read_member(tf: tarfile.TarFile, member: tarfile.TarInfo, limit: int = 16 << 20) -> bytes:
    if member.size > limit:
        raise InvalidInputError(f"{member.name} is larger than {limit} bytes")
    fh = tf.extractfile(member)
    if fh is None:
        raise InvalidInputError(f"{member.name} is not a regular file")
    return fh.read()


def read_layout(layout: Path) -> OciImage:
    """The single image of an OCI layout written by ``docker_archive_to_oci``."""
    try:
        index = json.loads((layout / "index.json").read_bytes())
        desc = index["manifests"][0]
        man_digest = desc["digest"]
        manifest = json.loads(blob_path(layout, man_digest).read_bytes())
        return OciImage(
            layout,
            man_digest,
            manifest["config"]["digest"],
            tuple((layer["digest"], layer["size"]) for layer in manifest["layers"]),
            desc.get("annotations", {}).get("org.opencontainers.image.ref.name", ""),
        )
    except (OSError, KeyError, IndexError, ValueError) as exc:
        raise InvalidInputError(f"{layout} is not an airgap OCI layout: {exc}") from None


def blob_path(layout: Path, digest: str) -> Path:
    """The blob file a digest names, refusing anything but ``sha256:`` and 64 lowercase hex digits, so a
    digest read from a manifest cannot point outside the blob store."""
    algo, _, hexd = digest.partition(":")
    if algo != "sha256" or len(hexd) != 64 or not all(c in "0123456789abcdef" for c in hexd):
        raise IntegrityError(f"{digest!r} is not a sha256 digest")
    return layout / "blobs" / "sha256" / hexd


def _tar_header(name: str, size: int) -> bytes:
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mtime = 0
    ti.mode = 0o644
    return ti.tobuf(format=tarfile.PAX_FORMAT)


def _padding(size: int) -> bytes:
    return b"\0" * ((512 - size % 512) % 512)


def docker_archive_stream(image: OciImage, repo_tag: str) -> Iterator[bytes]:
    """A ``docker load``-able archive, generated on the fly from the layout.

    Docker Engines before 25 cannot load an OCI layout; this yields the classic docker-archive
    format chunk by chunk (tar headers written by hand), so loading needs neither a temporary copy
    of the image nor memory that grows with it. Layers go in as the gzip blobs they are: the engine
    decompresses them in native code and checks each against the config's diff ids, so the load
    costs what a plain ``docker load`` costs.
    """
    cfg_hex = image.config_digest.split(":", 1)[1]
    config_bytes = blob_path(image.layout, image.config_digest).read_bytes()
    if hashlib.sha256(config_bytes).hexdigest() != cfg_hex:
        # The engine trusts the config it is handed, and the config's diff ids vouch for the layers.
        raise IntegrityError(f"the image config in the blob store does not hash to {image.config_digest}")
    layer_names = [f"{d.split(':', 1)[1]}/layer.tar" for d, _ in image.layers]
    yield _tar_header(f"{cfg_hex}.json", len(config_bytes)) + config_bytes + _padding(len(config_bytes))
    for (digest, size), name in zip(image.layers, layer_names):
        path = blob_path(image.layout, digest)
        actual = path.stat().st_size
        if actual != size:
            raise IntegrityError(f"layer {digest} is {actual} bytes; the manifest says {size}")
        yield _tar_header(name, size)
        with open(path, "rb") as layer:
            yield from iter(lambda: layer.read(CHUNK), b"")
        yield _padding(size)
    manifest = json.dumps(
        [{"Config": f"{cfg_hex}.json", "RepoTags": [repo_tag], "Layers": layer_names}]
    ).encode()
    yield _tar_header("manifest.json", len(manifest)) + manifest + _padding(len(manifest))
    yield b"\0" * 1024


def model_files(model_dir: Path) -> list[tuple[str, int]]:
    """Every regular file under ``model_dir`` as ``(relative path, size)``: what the model layer holds
    (a link or anything but a file or directory there is refused: the layer carries only bytes)."""
    out: list[tuple[str, int]] = []
    for path in sorted(model_dir.rglob("*")):
        st = path.lstat()
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise IntegrityError(
                f"{path} is not a regular file or directory: the model layer carries files only"
            )
        if path.is_file():
            out.append((path.relative_to(model_dir).as_posix(), st.st_size))
    return out


def _opener(model_dir: Path) -> Callable[[str], IO[bytes]]:
    """Opens a model file for ``layer_chunks``, which closes it (its ``with``)."""

    def open_file(rel: str) -> IO[bytes]:
        return (model_dir / rel).open("rb")

    return open_file


def model_layer_image(
    runtime: OciImage,
    model_dir: Path,
    layer_digest: str,
    layer_size: int,
    manifest_digest: str,
    config_digest: str,
    mtime: int,
    files: list[tuple[str, int]] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> OciImage:
    """The model image as a pushable OCI image: the server image's layers, then the model layer,
    streamed from ``model_dir`` when a registry asks for it. ``files``: the signed model files
    (path under model/, size) — what the layer holds, whatever else the directory has."""
    from airgap.core.model_layer import LayerStream, layer_chunks

    files = model_files(model_dir) if files is None else files

    def body() -> LayerStream:
        return LayerStream(layer_chunks(files, mtime, _opener(model_dir)), layer_size, on_bytes)

    return OciImage(
        runtime.layout,
        manifest_digest,
        config_digest,
        (*runtime.layers, (layer_digest, layer_size)),
        runtime.ref_name,
        streams={layer_digest: body},
    )


def write_model_image(
    runtime: OciImage,
    model_dir: Path,
    env: dict[str, str],
    labels: dict[str, str],
    epoch: int,
    on_bytes: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Writes the model image's config and manifest into the server image's layout (the model layer
    itself is never written: it is the bundle's model files) and returns what the build record
    signs about it: its digests, the layer's digest and size, and the settings it serves with."""
    from airgap.core.model_layer import layer_chunks, layer_size, model_config, model_manifest

    files = model_files(model_dir)
    size = layer_size(files, epoch)
    digest = hashlib.sha256()
    for chunk in layer_chunks(files, epoch, _opener(model_dir)):
        digest.update(chunk)
        if on_bytes is not None:
            on_bytes(len(chunk))
    layer = "sha256:" + digest.hexdigest()
    blobs = runtime.layout / "blobs" / "sha256"
    runtime_config = json.loads(blob_path(runtime.layout, runtime.config_digest).read_bytes())
    runtime_manifest = json.loads(blob_path(runtime.layout, runtime.manifest_digest).read_bytes())
    config = model_config(runtime_config, layer, env, labels, epoch)
    cfg_digest, cfg_size = _write_blob(blobs, canonical(config))
    man_digest, _ = _write_blob(
        blobs, canonical(model_manifest(runtime_manifest, cfg_digest, cfg_size, layer, size))
    )
    return {
        "manifest_digest": man_digest,
        "config_digest": cfg_digest,
        "layer": {"digest": layer, "size": size},
        "env": env,
    }
