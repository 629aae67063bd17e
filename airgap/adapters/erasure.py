"""The erasure code over part files: zfec's Reed-Solomon, read and written stripe by stripe.

zfec (Tahoe-LAFS's erasure code) does the arithmetic; this adapter only feeds it. Each part is
one share; a stripe is the same byte range of every share, read ``stripe`` bytes at a time, so
memory is bounded by (shares x stripe) whatever the bundle's size. The code is bytewise, so a
stripe is cut into slices encoded in parallel threads (zfec releases the GIL).

Outputs go to the paths the caller gives (temporary names) and are hashed as they are written;
the caller compares the hashes with the signed index before renaming anything into place.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, cast

from airgap.errors import EnvironmentFailure

CHUNK = 1 << 20
_THREADS = max(1, min(8, os.cpu_count() or 1))
Progress = Callable[[int], None]


def file_digest(path: Path) -> tuple[int, str] | None:
    """Size and SHA-256 of what one read of a regular file gives; None when it is missing, not a
    regular file, or cannot be read to the end (a bad sector is a missing part, not a crash)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb", buffering=0) as fh:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            h = hashlib.sha256()
            n = 0
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            while True:
                got = fh.readinto(view)
                if not got:
                    return n, h.hexdigest()
                h.update(view[:got])
                n += got
        except OSError:
            return None


def encode(
    data: Sequence[Path],
    share_size: int,
    outputs: Sequence[Path],
    stripe: int,
    progress: Progress | None = None,
) -> list[tuple[int, str]]:
    """Writes ``len(outputs)`` parity shares of the data shares ``data`` (each padded with zeros
    to ``share_size``); returns the size and SHA-256 of each parity share written."""
    import zfec  # type: ignore[import-untyped]  # only when parity is written

    k, extra = len(data), len(outputs)
    encoder = zfec.Encoder(k, k + extra)
    wanted = tuple(range(k, k + extra))
    return _transform(
        data, outputs, share_size, [share_size] * extra, stripe, lambda b: encoder.encode(b, wanted), progress
    )


def rebuild(
    shares: Sequence[tuple[int, Path]],
    k: int,
    m: int,
    share_size: int,
    targets: Sequence[tuple[int, int, Path]],
    stripe: int,
    progress: Progress | None = None,
) -> list[tuple[int, str]]:
    """Rebuilds shares from ``k`` good ones (``(share number, path)``, checked by the caller):
    each target ``(share number, size, path)`` gets its first ``size`` bytes. Returns the size and
    SHA-256 of each target written, for the caller to compare with the signed index."""
    import zfec  # only when a part is rebuilt

    use = sorted(shares)[:k]
    numbers = tuple(n for n, _ in use)
    decoder = zfec.Decoder(k, m)
    encoder = zfec.Encoder(k, m)
    parity_wanted = tuple(n for n, _, _ in targets if n >= k)

    def step(blocks: tuple[bytes | memoryview, ...]) -> list[bytes]:
        primary = tuple(decoder.decode(blocks, numbers))
        extra = dict(zip(parity_wanted, encoder.encode(primary, parity_wanted))) if parity_wanted else {}
        return [primary[n] if n < k else extra[n] for n, _, _ in targets]

    return _transform(
        [p for _, p in use],
        [p for _, _, p in targets],
        share_size,
        [s for _, s, _ in targets],
        stripe,
        step,
        progress,
    )


def _transform(
    inputs: Sequence[Path],
    outputs: Sequence[Path],
    share_size: int,
    out_sizes: Sequence[int],
    stripe: int,
    step: Callable[[tuple[bytes | memoryview, ...]], list[bytes]],
    progress: Progress | None,
) -> list[tuple[int, str]]:
    """Reads every input stripe by stripe, maps each stripe through ``step`` (in parallel slices)
    and writes output ``i`` up to ``out_sizes[i]`` bytes."""
    ins: list[BinaryIO] = []
    outs: list[BinaryIO] = []
    hashes = [hashlib.sha256() for _ in outputs]
    written = [0] * len(outputs)
    try:
        for p in inputs:
            ins.append(_open(p, "rb"))
        for p in outputs:
            outs.append(_open(p, "wb"))
        with ThreadPoolExecutor(_THREADS, thread_name_prefix="airgap-erasure") as pool:
            offset = 0
            while offset < share_size:
                n = min(stripe, share_size - offset)
                blocks = tuple(_read_block(fh, n, p) for fh, p in zip(ins, inputs))
                results = _parallel(pool, step, blocks, n)
                for i, (fh, block) in enumerate(zip(outs, results)):
                    keep = max(0, min(n, out_sizes[i] - offset))
                    if keep:
                        view = memoryview(block)[:keep]
                        _write(fh, view, outputs[i])
                        hashes[i].update(view)
                        written[i] += keep
                offset += n
                if progress is not None:
                    progress(n * len(inputs))
        for fh, p in zip(outs, outputs):
            try:
                fh.flush()
                os.fsync(fh.fileno())
            except OSError as exc:
                raise EnvironmentFailure(
                    f"cannot write {p}: {exc.strerror}", hint="free some space"
                ) from None
    finally:
        for fh in ins + outs:
            fh.close()
    return [(n, h.hexdigest()) for n, h in zip(written, hashes)]


def _parallel(
    pool: ThreadPoolExecutor,
    step: Callable[[tuple[bytes | memoryview, ...]], list[bytes]],
    blocks: tuple[bytes, ...],
    n: int,
) -> list[bytes]:
    """``step`` over the stripe, cut into one slice per thread: the code is bytewise, so the
    slices' results joined are the whole stripe's."""
    slices = _THREADS if n >= 256 << 10 else 1
    if slices == 1:
        return step(blocks)
    size = -(-n // slices)
    views = [memoryview(b) for b in blocks]
    cuts = [(i, min(i + size, n)) for i in range(0, n, size)]
    parts = list(pool.map(lambda c: step(tuple(v[c[0] : c[1]] for v in views)), cuts))
    return [b"".join(p[i] for p in parts) for i in range(len(parts[0]))]


def _open(path: Path, mode: str) -> BinaryIO:
    try:
        # Reads are raw (large, looped until full); writes buffered, so a write is never short.
        return cast(BinaryIO, open(path, mode, buffering=0 if mode == "rb" else -1))
    except OSError as exc:
        raise EnvironmentFailure(
            f"cannot {'read' if mode == 'rb' else 'write'} {path}: {exc.strerror}",
            hint="check the media and free space",
        ) from None


def _read_block(fh: BinaryIO, n: int, path: Path) -> bytes:
    """``n`` bytes of a share, zeros past its end (the padding every share has to ``share_size``)."""
    out = bytearray()
    try:
        while len(out) < n:
            data = fh.read(n - len(out))
            if not data:
                break
            out += data
    except OSError as exc:
        raise EnvironmentFailure(f"reading {path} failed: {exc.strerror}", hint="check the media") from None
    if len(out) < n:
        out += bytes(n - len(out))
    return bytes(out)


def _write(fh: BinaryIO, data: memoryview, path: Path) -> None:
    try:
        fh.write(data)
    except OSError as exc:
        raise EnvironmentFailure(f"cannot write {path}: {exc.strerror}", hint="free some space") from None
