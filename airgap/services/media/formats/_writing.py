"""Reading staging files for the packer: hashing, zstd, and copying exactly what was hashed.

Shared by every format's layout (``BundleFormat.layout``) and the packer (services/build/pack.py).
A file is read once to hash (and, when large and compressible, compress) it, and once more to
write it, hashed again as it is copied: the signature always covers exactly what was written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

from airgap.adapters.archive import TarWriter
from airgap.core.tar_format import zero_padding

CHUNK = 1 << 20
COMPRESS_MIN = 256 << 10
ZSTD_LEVEL = 3
# Already-compressed formats: recompressing them costs time and saves nothing.
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"PK\x03\x04", b"\x28\xb5\x2f\xfd", b"\xfd7zXZ", b"BZh")


# zstd is kept only where it makes a content at least 1/SAVING smaller: weights and other
# random-looking data hardly compress (float32 and float16 weights by 7-8%, their exponents), and
# storing them as zstd would save little on the media while costing a compression here and a
# one-thread decompression at every verify and install (a content stored as it is is hashed on
# every core): 10 GB of float32 weights as zstd verified in 22 s against openssl's 6 s.
SAVING = 8
SAMPLES = 8  # a large file is first judged on this many SAMPLE-byte pieces spread over it
SAMPLE = 1 << 20


def pays(content_size: int, stored_size: int) -> bool:
    """Whether a zstd frame of ``stored_size`` bytes is worth storing for ``content_size`` bytes:
    it saves at least 1/SAVING of them."""
    return stored_size <= content_size - content_size // SAVING


def should_compress(path: Path, size: int) -> bool:
    """Large, not already compressed (gzip, zip, zstd, xz, bzip2 magic), and, when larger than
    its samples, samples spread over it compress enough to pay (``pays``): worth compressing.

    The samples (SAMPLES pieces of SAMPLE bytes, the first at the start and the last at the end)
    keep a multi-gigabyte file of weights that zstd cannot shrink from being compressed whole only
    to be stored as it is; they are read from the content, so the choice is reproducible. What is
    compressed is still stored as zstd only if the whole frame pays."""
    if size < COMPRESS_MIN:
        return False
    with open(path, "rb") as fh:
        if fh.read(8).startswith(_COMPRESSED_MAGIC):
            return False
        if size <= SAMPLES * SAMPLE:
            return True  # compressed whole, and judged by its frame
        import zstandard  # the packer's, as below

        cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        taken = stored = 0
        for i in range(SAMPLES):
            fh.seek((size - SAMPLE) * i // (SAMPLES - 1))
            block = fh.read(SAMPLE)
            taken += len(block)
            stored += len(cctx.compress(block))
    return pays(taken, stored)


def hash_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> tuple[str, int]:
    """SHA-256 and size of what one read of the file gives (not what ``stat`` said before);
    ``on_bytes`` hears each block's size, for progress."""
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
            n += len(block)
            if on_bytes is not None:
                on_bytes(len(block))
    return h.hexdigest(), n


class ContentChanged(Exception):
    """A staging file's bytes differ between the read that hashed it and the read that packs it."""


class HashingTarWriter(TarWriter):
    """Writes a member's content and hashes exactly the bytes written, in the same read.

    The manifest (first in the archive) needs every hash before any content is written, so each
    file is read twice; the second read is hashed as it is copied and must give the signed hash,
    or the pack fails: the signature always covers exactly what was written.
    """

    def add_checked_file(self, path: str, source: Path, size: int, sha256: str) -> None:
        """Writes ``source`` as member ``path``; raises ContentChanged unless it is exactly the
        ``size`` bytes hashing to ``sha256`` that the manifest signed."""
        self.sink.write(self._header(path, size))
        h = hashlib.sha256()
        remaining = size
        buf = bytearray(CHUNK)
        with open(source, "rb") as fh:
            while remaining:
                n = fh.readinto(memoryview(buf)[: min(CHUNK, remaining)])
                if not n:
                    raise ContentChanged(f"{source} shrank while it was being packed")
                view = memoryview(buf)[:n]
                h.update(view)
                self.sink.write(view)
                remaining -= n
            if fh.read(1):
                raise ContentChanged(f"{source} grew while it was being packed")
        if h.hexdigest() != sha256:
            raise ContentChanged(f"{source} changed while it was being packed")
        self.sink.write(zero_padding(size))


def compress(src: Path, dest: Path) -> tuple[int, str, int, str]:
    """zstd (multi-threaded, deterministic for a given level) with the content size in the header."""
    import zstandard  # the packer's: a verifier that reads this module does not load it

    content = hashlib.sha256()
    stored = hashlib.sha256()
    size = src.stat().st_size
    cctx = zstandard.ZstdCompressor(
        level=ZSTD_LEVEL, threads=-1, write_content_size=True, write_checksum=True
    )

    class _Out:
        def __init__(self, fh: Any) -> None:
            self.fh = fh
            self.n = 0

        def write(self, data: bytes) -> int:
            stored.update(data)
            self.n += len(data)
            return int(self.fh.write(data))

    read = 0
    try:
        with open(src, "rb") as fin, open(dest, "wb") as fout:
            out = _Out(fout)
            with cctx.stream_writer(cast(IO[bytes], out), size=size, closefd=False) as writer:
                for block in iter(lambda: fin.read(CHUNK), b""):
                    content.update(block)
                    read += len(block)
                    writer.write(block)
    except zstandard.ZstdError:
        read = -1  # the pledged size was not met: the file changed while it was read
    if read != size:
        raise ContentChanged(f"{src} changed size while it was being packed")
    # The private compressed copy is what is packed; its hash is of the bytes written to it.
    return out.n, stored.hexdigest(), size, content.hexdigest()
