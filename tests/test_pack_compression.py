"""Which contents the packer stores as zstd: only those it makes at least 1/8 smaller.

Weights are random-looking: zstd cannot shrink them, and storing a multi-gigabyte file as a zstd
frame of the same size cost a whole compression at pack time and a one-thread decompression at
every verify and install. A large file is judged first on samples spread over it, so such a
file is never compressed whole; a smaller one is compressed and judged by its frame."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest

from airgap.adapters import keys
from airgap.services.build.pack import pack
from airgap.services.media.formats import _writing, v1, v2
from airgap.services.media.verify import VerifyOptions, verify_bundle
from tests.bundles import EPOCH, make_key, members

MIB = 1 << 20


def _staging(root: Path) -> dict[str, bytes]:
    rng = random.Random(5)
    words = [bytes(rng.choice(b"abcdefghij") for _ in range(6)) for _ in range(300)]
    files = {
        "model/weights.bin": rng.randbytes(12 * MIB),  # larger than its samples: judged on them
        "model/weights-small.bin": rng.randbytes(2 * MIB),  # compressed whole, judged by its frame
        "model/vocab.txt": b" ".join(rng.choice(words) for _ in range(200_000)),  # compresses well
        "build.json": json.dumps({"name": "demo"}).encode(),
    }
    for rel, data in files.items():
        (root / "staging" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "staging" / rel).write_bytes(data)
    return files


@pytest.mark.parametrize("fmt", ["v1", "v2"])
def test_weights_zstd_cannot_shrink_are_stored_as_they_are_and_never_compressed_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    files = _staging(tmp_path)
    compressed: list[str] = []

    def spy(src: Path, dest: Path) -> Any:
        compressed.append(src.relative_to(tmp_path / "staging").as_posix())
        return _writing.compress(src, dest)

    monkeypatch.setattr(v1 if fmt == "v1" else v2, "compress", spy)
    key, pub, kid = make_key(tmp_path, "publisher")
    result = pack(
        tmp_path / "staging", tmp_path / "out", key, EPOCH, name="demo", version="1.0.0", bundle_format=fmt
    )
    assert sorted(compressed) == ["model/vocab.txt", "model/weights-small.bin"]
    names = set(members(result.files[0]))
    if fmt == "v1":
        stored = {n.removeprefix("bundle/") for n in names}
        assert {"model/weights.bin", "model/weights-small.bin", "model/vocab.txt.zst"} <= stored
    else:
        stored = {n.removeprefix("bundle/blobs/sha256/") for n in names if "/blobs/" in n}
        sha = {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}
        assert {
            sha["model/weights.bin"],
            sha["model/weights-small.bin"],
            sha["model/vocab.txt"] + ".zst",
        } <= stored
        assert [n for n in stored if n.endswith(".zst")] == [sha["model/vocab.txt"] + ".zst"]
    trusted = (keys.TrustedKey(kid, pub, keys.load_public(pub.read_bytes(), str(pub))),)
    verify_bundle(result.files[0], VerifyOptions(trusted=trusted))


def test_zstd_is_kept_only_where_it_saves_an_eighth() -> None:
    assert _writing.pays(32 * MIB, 28 * MIB)
    assert not _writing.pays(32 * MIB, 28 * MIB + 1)
    assert not _writing.pays(2_000_000_000, 2_000_045_791)  # a zstd frame of 2 GB of random bytes


def test_float32_weights_that_zstd_shrinks_by_a_few_percent_are_stored_as_they_are(tmp_path: Path) -> None:
    """Normal float32 weights compress by 7-8% (their exponents): not worth a one-thread
    decompression at every verify and install; text still compresses."""
    import numpy as np

    weights = tmp_path / "model.onnx.data"
    np.random.default_rng(5).standard_normal(3 << 20).astype(np.float32).tofile(weights)  # 12 MiB
    assert not _writing.should_compress(weights, weights.stat().st_size)
    import zstandard  # a small file is compressed whole and judged by its frame

    small = weights.read_bytes()[: 4 * MIB]
    assert not _writing.pays(
        len(small), len(zstandard.ZstdCompressor(level=_writing.ZSTD_LEVEL).compress(small))
    )
    text = tmp_path / "vocab.txt"
    text.write_text("".join(f"token{i}\n" for i in range(1 << 20)))
    assert _writing.should_compress(text, text.stat().st_size)
