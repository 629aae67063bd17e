"""The model as its own OCI layer: the weights never live in the server image.

The server image (base + locked virtualenv + server) is built without the model and is the same
for every model and every release that share its runtime, so a weights-only release ships the
weights and nothing else, and the far side keeps one server image for many models. Where the
target can mount files (Docker, Podman, a virtualenv's own files) the installed model directory is
mounted read-only at ``/opt/airgap/model``; where it cannot (a registry, Kubernetes) the far side
makes the *model image*: the server image's layers plus one layer holding the model directory,
whose bytes this module fixes completely, so its digest is known — and signed — when the bundle is
made, and the registry itself refuses a layer that is not those bytes.

The layer is an uncompressed tar written by the bundle's own byte-exact member rule
(core/tar_format.py): one ``opt/airgap/model/<path>`` member per file of the bundle's ``model/``
directory, sorted bytewise, mode 0644, owner 0:0, mtime the release's ``SOURCE_DATE_EPOCH``; no
directory entries (the runtime creates ``/opt/airgap/model`` 0755); then 1024 zero bytes and zeros
to a multiple of 10240. Pure: names, sizes and streams in; bytes and documents out.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any

from airgap.core.tar_format import end_of_archive_length, member_header, padding_length
from airgap.errors import IntegrityError

MODEL_ROOT = "/opt/airgap/model"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CHUNK = 1 << 20

_ENV_NAME = re.compile(r"AIRGAP_[A-Z0-9_]{1,40}")


def members(files: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """The layer's members in order: ``(name in the layer, size)`` for each ``(path under model/,
    size)``, sorted bytewise by path."""
    return [(f"{MODEL_ROOT[1:]}/{rel}", size) for rel, size in sorted(files, key=lambda f: f[0].encode())]


def layer_size(files: Iterable[tuple[str, int]], mtime: int) -> int:
    """How many bytes the layer is, without reading a file."""
    offset = 0
    for name, size in members(files):
        offset += len(member_header(name, size, mtime)) + size + padding_length(size)
    return offset + end_of_archive_length(offset)


def layer_chunks(
    files: Iterable[tuple[str, int]], mtime: int, open_file: Callable[[str], IO[bytes]]
) -> Iterator[bytes]:
    """The layer's bytes, streamed: each member's header, its file's bytes (``open_file(rel)``), the
    padding, and the end. A file that is not the size it was listed with is an IntegrityError
    (the layer's digest would not be the signed one)."""
    offset = 0
    by_name = {f"{MODEL_ROOT[1:]}/{rel}": rel for rel, _ in files}
    for name, size in members(files):
        header = member_header(name, size, mtime)
        yield header
        left = size
        with open_file(by_name[name]) as fh:
            while left:
                data = fh.read(min(CHUNK, left))
                if not data:
                    break
                left -= len(data)
                yield data
            if left or fh.read(1):
                raise IntegrityError(f"model/{by_name[name]} is not the {size} bytes the bundle signed")
        pad = padding_length(size)
        if pad:
            yield bytes(pad)
        offset += len(header) + size + pad
    yield bytes(end_of_archive_length(offset))


class LayerStream:
    """The layer as a file-like body of known length, for an HTTP upload that streams it (the
    registry hashes it and refuses other bytes), hashing what it hands out. A read returns at
    most what is left of the current chunk: http.client reads 8 KiB at a time, and re-slicing a
    1 MiB buffer on every read would copy each byte a hundred times."""

    def __init__(
        self, chunks: Iterator[bytes], size: int, on_bytes: Callable[[int], None] | None = None
    ) -> None:
        self._chunks = chunks
        self._size = size
        self._chunk = memoryview(b"")
        self._on_bytes = on_bytes
        self.sha256 = hashlib.sha256()
        self.sent = 0

    def __len__(self) -> int:
        return self._size

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all the rest when ``n`` < 0); empty at the end."""
        if n < 0:
            return b"".join(iter(lambda: self.read(CHUNK), b""))
        while not self._chunk:
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._chunk = memoryview(chunk)
        out = bytes(self._chunk[:n])
        self._chunk = self._chunk[len(out) :]
        self.sha256.update(out)
        self.sent += len(out)
        if self._on_bytes is not None:
            self._on_bytes(len(out))
        return out


def model_env(name: str, version: str, model_file: str, serving: Mapping[str, Any]) -> dict[str, str]:
    """The serving settings the model gives its server: what the model image's config carries and
    what a container that mounts the model is started with (one source for both). ``model_file``
    is the graph's path in the bundle (``model/…``)."""
    rel = model_file.removeprefix("model/")
    env = {
        "AIRGAP_MODEL_PATH": f"{MODEL_ROOT}/{rel}",
        "AIRGAP_GOLDEN_PATH": f"{MODEL_ROOT}/golden.json",
        "AIRGAP_MODEL_NAME": name,
        "AIRGAP_MODEL_VERSION": version,
    }
    for key in ("port", "threads", "max_batch", "max_request_bytes"):
        value = serving.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            env[f"AIRGAP_{key.upper()}"] = str(value)
    return env


def check_env(env: object, where: str) -> dict[str, str]:
    """A signed model environment as the far side will pass it to a runtime: ``AIRGAP_*`` names and
    short printable values only, or IntegrityError naming the entry."""
    if not isinstance(env, dict) or len(env) > 32:
        raise IntegrityError(f"{where} must be an object of at most 32 settings")
    out: dict[str, str] = {}
    for key, value in env.items():
        if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
            raise IntegrityError(f"{where}: {key!r:.60} is not an AIRGAP_ setting name")
        if not isinstance(value, str) or len(value) > 512 or not value.isprintable():
            raise IntegrityError(f"{where}.{key} must be a printable string of at most 512 characters")
        out[key] = value
    return out


def model_config(
    runtime_config: Mapping[str, Any],
    layer_digest: str,
    env: Mapping[str, str],
    labels: Mapping[str, str],
    epoch: int,
) -> dict[str, Any]:
    """The model image's config: the server image's, plus the model's settings, its port, its
    labels and the model layer."""
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    out = dict(runtime_config)
    cfg = dict(out.get("config") or {})
    base_env = [e for e in cfg.get("Env") or [] if e.split("=", 1)[0] not in env]
    cfg["Env"] = [*base_env, *(f"{k}={v}" for k, v in env.items())]
    if "AIRGAP_PORT" in env:
        cfg["ExposedPorts"] = {**(cfg.get("ExposedPorts") or {}), f"{env['AIRGAP_PORT']}/tcp": {}}
    cfg["Labels"] = {**(cfg.get("Labels") or {}), **labels}
    out["config"] = cfg
    out["created"] = created
    rootfs = dict(out.get("rootfs") or {"type": "layers"})
    rootfs["diff_ids"] = [*(rootfs.get("diff_ids") or []), layer_digest]
    out["rootfs"] = rootfs
    out["history"] = [
        *(out.get("history") or []),
        {"created": created, "created_by": f"airgap: the bundle's model/ files at {MODEL_ROOT}"},
    ]
    return out


def model_manifest(
    runtime_manifest: Mapping[str, Any], config_digest: str, config_size: int, layer_digest: str, size: int
) -> dict[str, Any]:
    """The model image's manifest: the server image's layers, then the model layer."""
    out = dict(runtime_manifest)
    out["config"] = {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config_size}
    out["layers"] = [
        *(runtime_manifest.get("layers") or []),
        {"mediaType": LAYER_MEDIA_TYPE, "digest": layer_digest, "size": size},
    ]
    return out
