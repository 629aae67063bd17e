"""Large members are hashed on every core, from their byte ranges, and still prove every byte.

The tar walk reads the archive in order as before; each large member's content is hashed by a
pool of threads reading its range of the bundle's file (or of the parts it spans). A modified
byte anywhere in such a member is still refused, naming it, with exit 3.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from airgap.adapters import hash_pool
from airgap.errors import TamperError
from tests.bundles import EPOCH, flip_byte_in, make_key, members, rejected, synthetic_staging, verify
from tests.conftest import run_airgap

BIG = 6 << 20  # over hash_pool.PARALLEL_MIN: hashed by the pool


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    """The demo bundle with three large incompressible members, and a far side trusting its key."""
    from airgap.services.build.pack import pack

    key, pub, kid = make_key(tmp_path, "publisher")
    staging = synthetic_staging(tmp_path / "staging")
    rng = random.Random(11)
    for i in range(3):  # gzip's magic number: stored as they are, not compressed again
        (staging / "model" / f"shard-{i}.bin").write_bytes(b"\x1f\x8b" + rng.randbytes(BIG + i))
    result = pack(staging, tmp_path / "out", key, EPOCH, name="demo", version="1.0.0", bundle_format="v1")
    state = tmp_path / "state"
    assert run_airgap("keys", "trust", str(pub), "--state-dir", str(state)).returncode == 0
    return {"tmp": tmp_path, "key": key, "pub": pub, "kid": kid, "bundle": result.files[0], "state": state}


def test_a_bundle_of_large_members_verifies_with_them_hashed_in_threads(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: set[str] = set()
    original = hash_pool.RangeHasher._hash

    def spy(self: hash_pool.RangeHasher, offset: int, size: int) -> str:
        threads.add(threading.current_thread().name)
        return original(self, offset, size)

    monkeypatch.setattr(hash_pool.RangeHasher, "_hash", spy)
    proc = verify(env)
    assert proc.returncode == 0, proc.stderr
    assert threads and all(name.startswith("airgap-hash") for name in threads), threads


@pytest.mark.parametrize("shard", [0, 2])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_flipped_byte_in_a_large_member_is_refused_naming_it(
    env: dict[str, Any], shard: int, where: str
) -> None:
    name = f"bundle/model/shard-{shard}.bin"
    size = members(env["bundle"])[name].size
    flip_byte_in(env["bundle"], name, offset={"first": 0, "middle": size // 2, "last": size - 1}[where])
    rejected(env, f"model/shard-{shard}.bin has been modified", error=TamperError)


def test_a_range_across_parts_hashes_as_their_concatenation(tmp_path: Path) -> None:
    data = random.Random(3).randbytes(3 * hash_pool.BUFFER + 12345)
    cuts = [0, 1000, hash_pool.BUFFER + 7, 2 * hash_pool.BUFFER, len(data)]
    sources: list[tuple[Path | int, int]] = []
    for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
        (tmp_path / f"p{i}").write_bytes(data[a:b])
        sources.append((tmp_path / f"p{i}", b - a))
    with hash_pool.RangeHasher(tuple(sources)) as pool:
        ranges = [(0, len(data)), (999, 2), (500, 2 * hash_pool.BUFFER), (len(data) - 1, 1), (5, 0)]
        futures = [pool.submit(off, n) for off, n in ranges]
        got = pool.results(futures, lambda n: None)
    assert got == [hashlib.sha256(data[off : off + n]).hexdigest() for off, n in ranges]


def test_the_walk_s_own_descriptor_is_hashed_without_moving_its_position(tmp_path: Path) -> None:
    path = tmp_path / "bundle"
    data = os.urandom(hash_pool.BUFFER + 99)
    path.write_bytes(data)
    with open(path, "rb", buffering=0) as f:
        f.seek(17)
        sources = hash_pool.sources_of(f)
        assert sources == ((f.fileno(), len(data)),)
        with hash_pool.RangeHasher(sources) as pool:
            [digest] = pool.results([pool.submit(10, len(data) - 10)], lambda n: None)
        assert f.tell() == 17
    assert digest == hashlib.sha256(data[10:]).hexdigest()


def test_a_split_bundle_of_large_members_verifies(env: dict[str, Any]) -> None:
    out = env["tmp"] / "split"
    key = str(env["tmp"] / "publisher.key")
    proc = run_airgap(
        "split", str(env["bundle"]), "--part-size", "4M", "--out", str(out), "--key", key,
        env={"AIRGAP_KEY_PASSPHRASE": "correct horse battery staple"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    [index] = out.glob("*.parts.sha256")
    assert len(list(out.glob("*.part-*"))) >= 5
    proc = verify(env, index)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("seekable", [True, False])
def test_a_timed_reader_skips_to_exactly_the_byte_a_read_would_reach(tmp_path: Path, seekable: bool) -> None:
    from airgap.adapters.archive import CHUNK, TimedReader

    data = random.Random(5).randbytes(5 * CHUNK + 333)
    (tmp_path / "f").write_bytes(data)
    raw = open(tmp_path / "f", "rb", buffering=0)  # noqa: SIM115 - the reader owns it

    class Unseekable:  # a stream of parts: no seek, every byte must be read
        def read(self, n: int) -> bytes:
            return raw.read(n)

        def readinto(self, view: memoryview) -> int:
            return raw.readinto(view) or 0

        def close(self) -> None:
            raw.close()

    reader = TimedReader(raw if seekable else Unseekable(), 30, "f", owns=True)
    try:
        assert reader.read(10) == data[:10]
        view = memoryview(bytearray(CHUNK))
        at = 10
        for _ in range(2):  # what is buffered, then a large read (and the next block read ahead)
            got = reader.readinto(view)
            assert bytes(view[:got]) == data[at : at + got]
            at += got
        for n in (7, CHUNK + 5, 2 * CHUNK):
            assert reader.skip(n) == n
            at += n
            assert reader.read(3) == data[at : at + 3]
            at += 3
        # past the end: a file seeks there (and the next read finds the end), parts read to it
        assert reader.skip(len(data)) == (len(data) if seekable else len(data) - at)
        assert reader.read(1) == b""
    finally:
        reader.close()


def test_a_bundle_truncated_inside_a_large_member_is_refused_as_truncated(env: dict[str, Any]) -> None:
    info = members(env["bundle"])["bundle/model/shard-1.bin"]
    with open(env["bundle"], "r+b") as fh:
        fh.truncate(info.offset_data + info.size // 2)
    rejected(env, "truncated", error=TamperError)
