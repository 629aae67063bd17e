"""The converted-layer cache (adapters/oci.py): a warm conversion gives the same bytes as a cold
one, and a damaged blob or a record that points at another blob is a miss, never a wrong layer."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from airgap.adapters.oci import docker_archive_to_oci

EPOCH = 1700000000


def _layer(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), EPOCH + 500  # later than the clamp: rewritten
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def docker_save(path: Path, layers: list[bytes]) -> Path:
    """A `docker save` archive of one image with these layers, as the engine writes it."""
    diff_ids = [f"sha256:{hashlib.sha256(data).hexdigest()}" for data in layers]
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    )
    names = [f"{d.split(':')[1]}/layer.tar" for d in diff_ids]
    members = [(n, data) for n, data in zip(names, layers)]
    members += [("config.json", config.encode())]
    members += [
        (
            "manifest.json",
            json.dumps([{"Config": "config.json", "RepoTags": ["x:1"], "Layers": names}]).encode(),
        )
    ]
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def convert(tmp: Path, archive: Path, out: str, cache: Path | None) -> tuple[dict[str, bytes], str]:
    image = docker_archive_to_oci(archive, tmp / out, "demo:1.0.0", EPOCH, layer_cache=cache)
    blobs = tmp / out / "blobs" / "sha256"
    return {p.name: p.read_bytes() for p in blobs.iterdir()}, image.manifest_digest


def test_a_warm_conversion_gives_the_same_blobs_as_a_cold_one(tmp_path: Path) -> None:
    archive = docker_save(tmp_path / "img.tar", [_layer({"a": b"base" * 1000}), _layer({"b": b"deps" * 999})])
    cold, digest = convert(tmp_path, archive, "cold", None)
    cache = tmp_path / "cache"
    first, _ = convert(tmp_path, archive, "first", cache)
    warm, warm_digest = convert(tmp_path, archive, "warm", cache)
    assert first == cold and warm == cold and warm_digest == digest
    assert len(list((cache / "blobs").iterdir())) == 2


def test_a_damaged_cached_blob_is_a_miss_and_is_replaced(tmp_path: Path) -> None:
    archive = docker_save(tmp_path / "img.tar", [_layer({"a": b"base" * 1000})])
    cold, _ = convert(tmp_path, archive, "cold", None)
    cache = tmp_path / "cache"
    convert(tmp_path, archive, "first", cache)
    (blob,) = (cache / "blobs").iterdir()
    blob.unlink()  # a hard link to the layout's copy: write a new, damaged file in its place
    blob.write_bytes(b"\x1f\x8b" + b"\x00" * 40)
    warm, _ = convert(tmp_path, archive, "warm", cache)
    assert warm == cold
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name  # replaced by the good one


def test_a_record_pointing_at_another_blob_is_a_miss(tmp_path: Path) -> None:
    """A record edited (or left stale) to name a self-consistent blob of another layer."""
    one = docker_save(tmp_path / "one.tar", [_layer({"a": b"one" * 1000})])
    two = docker_save(tmp_path / "two.tar", [_layer({"a": b"two" * 1000})])
    cache = tmp_path / "cache"
    cold_one, _ = convert(tmp_path, one, "cold-one", None)
    convert(tmp_path, one, "first-one", cache)
    convert(tmp_path, two, "first-two", cache)
    records = sorted((cache / "v1-gzip6-pax").iterdir())
    entries = [json.loads(r.read_text()) for r in records]
    # every record now names the other record's blob (digest and size), keeping its own diff id
    for record, other in zip(records, reversed(entries)):
        own = json.loads(record.read_text())
        record.write_text(json.dumps({**own, "digest": other["digest"], "size": other["size"]}))
    again, _ = convert(tmp_path, one, "again-one", cache)
    assert again == cold_one
