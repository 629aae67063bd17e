"""`airgap copy`: a bundle onto removable media, proved readable there before it leaves.

A USB stick that accepts writes and returns other bytes is found today at the far side, after the
walk across the gap. ``copy`` writes each part to the medium, flushes it (``fsync``), drops it
from the page cache so that the read comes from the medium and not from memory, reads it back and
checks it against the signed parts index (a single-file bundle: the whole copy is verified
against its signed manifest). Run again after an interruption or a failed part, it keeps every
part already on the medium that reads back right and writes only the others.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from airgap.adapters import keys
from airgap.adapters.space import require_free
from airgap.core.parity import parity_index_name
from airgap.errors import EnvironmentFailure, IntegrityError
from airgap.services.media.opening import VerifyOptions, locate_bundle, open_bundle
from airgap.services.observer import BYTES, NullObserver, Observer

CHUNK = 4 << 20


@dataclass(frozen=True)
class Expected:
    """A file to put on the medium: its name, size and (when a signed index gives it) SHA-256."""

    name: str
    size: int
    sha256: str | None


@dataclass(frozen=True)
class CopyResult:
    """What is on the medium now: the files written this run and those kept from an earlier one."""

    dest: Path
    written: tuple[str, ...]
    kept: tuple[str, ...]
    bytes_written: int


def copy_bundle(
    source: Path, dest: Path, trusted: tuple[keys.TrustedKey, ...], observer: Observer | None = None
) -> CopyResult:
    """Copies the bundle at ``source`` (a file or a parts index) into the directory ``dest``.

    Raises IntegrityError (exit 3) when the source is not intact and signed by a trusted key, and
    EnvironmentFailure (exit 5) when the medium is too small or reads back other bytes than were
    written (the bad copy is removed; run again on another medium)."""
    obs = observer or NullObserver()
    handle = locate_bundle(source)
    handle.check_index(trusted)  # a split bundle: its signed index is the reference
    files: list[Expected] = []
    extra: list[Path] = []  # signed indexes and signatures: small, copied as they are
    if handle.parts is not None and handle.index_path is not None:
        sizes = {p.name: p.stat().st_size for p in handle.paths if p.exists()}
        files = [Expected(n, sizes.get(n, -1), sha) for n, sha in handle.parts]
        index = handle.index_path
        extra = [index, index.parent / f"{index.name}.sig"]
        parity = handle.parity(trusted)
        if parity is not None:
            files += [Expected(s.name, s.size, s.sha256) for s in parity.parity]
            pindex = index.parent / parity_index_name(index.name)
            extra += [pindex, pindex.parent / f"{pindex.name}.sig"]
        origin = index.parent
    else:
        files = [Expected(source.name, source.stat().st_size, None)]
        origin = source.parent
    missing = [f.name for f in files if f.size < 0]
    if missing:
        raise IntegrityError(f"part {missing[0]} is missing from {origin}", hint="copy it there first")

    dest.mkdir(parents=True, exist_ok=True)
    if dest.resolve() == origin.resolve():
        raise EnvironmentFailure(f"{dest} is where the bundle already is", hint="name the medium's directory")
    good = [f for f in files if _reads_back(dest / f.name, f)]
    todo = [f for f in files if f not in good]
    total = sum(f.size for f in todo)
    require_free(dest, total, "copy")
    written: list[str] = []
    obs.begin("copy", total, BYTES)
    started, done = time.monotonic(), 0

    def progress(n: int) -> None:
        nonlocal done
        done += n
        elapsed = time.monotonic() - started
        left = (total - done) * elapsed / done if done and elapsed > 0 else None
        obs.advance("copy", n, f"ETA {int(left) // 60}m{int(left) % 60:02d}s" if left is not None else "")

    try:
        for f in todo:
            digest = _write(origin / f.name, dest / f.name, f.size, progress)
            if f.sha256 is not None and digest != f.sha256:
                (dest / f.name).unlink()
                raise IntegrityError(
                    f"{f.name} on {origin} is not the part the signed index lists",
                    hint="copy it again from the original media",
                )
            if not _reads_back(dest / f.name, Expected(f.name, f.size, digest)):
                (dest / f.name).unlink()
                raise EnvironmentFailure(
                    f"{f.name} reads back from {dest} with other bytes than were written: the medium is bad",
                    hint="use another medium; the parts already checked there are kept",
                )
            written.append(f.name)
    finally:
        obs.end("copy")
    for path in extra:
        if path.exists():
            _atomic_copy_small(path, dest / path.name)
    if handle.parts is None:
        # One file: its read-back is the whole verification, signature first, from the medium.
        _drop_cache(dest / source.name)
        open_bundle(dest / source.name, VerifyOptions(trusted=trusted), obs)
    return CopyResult(dest, tuple(written), tuple(f.name for f in good), total)


def _write(src: Path, dest: Path, size: int, on_bytes: Callable[[int], None]) -> str:
    """``src`` into ``dest`` through a temporary name, flushed to the medium; returns its SHA-256."""
    tmp = dest.with_name(f".{dest.name}.copying")
    digest = hashlib.sha256()
    try:
        with open(src, "rb", buffering=0) as fin, open(tmp, "wb", buffering=0) as fout:
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            while n := fin.readinto(buf):
                digest.update(view[:n])
                fout.write(view[:n])
                on_bytes(n)
            os.fsync(fout.fileno())
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise EnvironmentFailure(f"writing {dest} failed: {exc.strerror or exc}") from None
    return digest.hexdigest()


def _reads_back(path: Path, expected: Expected) -> bool:
    """Whether ``path`` on the medium has the expected size and, read from the medium (not the
    page cache), the expected SHA-256. A file with no signed hash is judged by its size only
    here; the verification at the end reads it back."""
    try:
        if path.stat().st_size != expected.size:
            return False
    except OSError:
        return False
    if expected.sha256 is None:
        return False  # a single file is always written again: only the verification proves it
    _drop_cache(path)
    digest = hashlib.sha256()
    try:
        with open(path, "rb", buffering=0) as fh:
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            while n := fh.readinto(buf):
                digest.update(view[:n])
    except OSError:
        return False
    return digest.hexdigest() == expected.sha256


def _drop_cache(path: Path) -> None:
    """Evicts ``path``'s pages, so that the next read goes to the medium."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_copy_small(src: Path, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.copying")
    tmp.write_bytes(src.read_bytes())
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, dest)
