"""Hashing a bundle's large members on every core, with bounded memory.

One stream of SHA-256 runs on one core (hashlib, like ``openssl dgst``); a bundle's members are
independent, so the verifier hands each large one to a pool of threads that read its byte range
from the bundle's file (or parts) with ``pread`` and hash it, while the tar walk goes on. hashlib
releases the GIL for large updates, so the threads run in parallel. Memory is one buffer per
thread and a bounded number of queued ranges; nothing is read whole.

The tar walk still reads every byte in order (so the archive's structure is checked exactly as
before); only the hashing of a large member's content moves to the pool, and its digest is
compared with the manifest before verification succeeds.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from airgap.errors import EnvironmentFailure

BUFFER = 4 << 20  # bytes each thread reads and hashes at a time
PARALLEL_MIN = 4 << 20  # members smaller than this are hashed in the walk itself
MAX_QUEUED = 64  # ranges waiting at once: the walk waits for the oldest beyond this


def workers() -> int:
    """Threads to hash with: every core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


Source = tuple["Path | int", int]  # a file (by path, or the walk's own open descriptor) and its size


def sources_of(stream: Any) -> tuple[Source, ...] | None:
    """The files behind a bundle stream, in order, with their sizes: the bundle file (the very
    descriptor the walk reads, so both read the same file), or the parts of a split bundle;
    None when the stream is not backed by files that can be re-read."""
    inner = getattr(stream, "stream", None)  # a timed reader wraps the real stream
    if inner is not None and hasattr(stream, "timeout"):
        stream = inner
    paths = getattr(stream, "paths", None)
    expected = getattr(stream, "expected", None)
    if isinstance(paths, list) and isinstance(expected, list) and len(paths) == len(expected):
        return tuple((Path(p), int(size)) for p, (_, size, _) in zip(paths, expected))
    raw = getattr(stream, "raw", stream)  # a buffered reader's file
    try:
        fd = raw.fileno()
        return ((fd, os.fstat(fd).st_size),)
    except (AttributeError, OSError, ValueError):
        return None


def stall_timeout(stream: Any) -> float | None:
    """How long a read may stall before it is an environment failure (a timed reader's limit)."""
    timeout = getattr(stream, "timeout", None)
    return float(timeout) if isinstance(timeout, (int, float)) else None


class RangeHasher:
    """A pool of threads that hash byte ranges of the concatenation of ``sources``."""

    def __init__(self, sources: tuple[Source, ...], stall: float | None = None) -> None:
        self.sources = sources
        self.stall = stall
        self.hashed = 0  # bytes hashed so far, by every thread (read by the caller for progress)
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(workers(), thread_name_prefix="airgap-hash")
        self._pending: list[Future[str]] = []

    def submit(self, offset: int, size: int) -> Future[str]:
        """Starts hashing ``size`` bytes at ``offset``; waits first while too many are queued."""
        self._pending = [f for f in self._pending if not f.done()]
        while len(self._pending) >= MAX_QUEUED:
            self._wait(self._pending, FIRST_COMPLETED)
            self._pending = [f for f in self._pending if not f.done()]
        self._last = time.monotonic()
        future = self._pool.submit(self._hash, offset, size)
        self._pending.append(future)
        return future

    def results(self, futures: list[Future[str]], progress: Callable[[int], None]) -> list[str]:
        """The digests of ``futures``, in order, reporting hashed bytes to ``progress`` meanwhile."""
        reported = self.hashed
        self._last = time.monotonic()
        progress(reported)
        remaining = [f for f in futures if not f.done()]
        while remaining:
            self._wait(remaining, FIRST_COMPLETED, tick=0.2)
            remaining = [f for f in remaining if not f.done()]
            now = self.hashed
            progress(now - reported)
            reported = now
        return [f.result() for f in futures]

    def close(self) -> None:
        """Stops the threads; ranges not started are dropped (the verification already failed)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> RangeHasher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ in the threads
    def _wait(self, futures: list[Future[str]], when: str, tick: float = 1.0) -> None:
        """Waits for ``futures``; a pool that hashed nothing for ``stall`` seconds is a stalled medium."""
        wait(futures, timeout=tick, return_when=when)
        if self.stall is not None and time.monotonic() - self._last > self.stall:
            raise EnvironmentFailure(
                f"reading the bundle stalled: no data for {self.stall:g} s",
                hint="check the media (or copy the bundle to a local disk) and re-run",
            )

    def _hash(self, offset: int, size: int) -> str:
        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = bytearray(BUFFER)
        view = memoryview(buf)
        digest = hashlib.sha256()
        start = 0
        for path, length in self.sources:
            if size == 0:
                break
            end = start + length
            if offset < end:
                take = min(size, end - offset)
                self._hash_file(path, offset - start, take, digest, view)
                offset += take
                size -= take
            start = end
        if size:
            raise EnvironmentFailure("a member runs past the end of the bundle's files")
        return digest.hexdigest()

    def _hash_file(self, path: Path | int, at: int, size: int, digest: Any, view: memoryview) -> None:
        if isinstance(path, int):
            # The walk's file, opened again through its descriptor: the same file (no path is
            # looked up again), with its own read-ahead state, so that threads reading other
            # ranges do not defeat the kernel's read-ahead for one another.
            try:
                fd, owned = os.open(f"/proc/self/fd/{path}", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)), True
            except OSError:
                fd, owned = path, False  # no /proc: pread on the shared descriptor still works
        else:
            try:
                fd, owned = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)), True
            except OSError as exc:
                raise EnvironmentFailure(f"cannot open {path} to hash it: {exc.strerror or exc}") from None
        with contextlib.suppress(OSError, AttributeError):
            os.posix_fadvise(fd, at, size, os.POSIX_FADV_SEQUENTIAL)
        try:
            while size:
                try:
                    n = os.preadv(fd, [view[: min(size, len(view))]], at)
                except OSError as exc:
                    raise EnvironmentFailure(
                        f"reading {path} failed at byte {at}: {exc.strerror or exc}"
                    ) from None
                if n <= 0:
                    raise EnvironmentFailure(f"the bundle ({path}) ended while it was being hashed")
                digest.update(view[:n])
                at += n
                size -= n
                with self._lock:
                    self.hashed += n
                    self._last = time.monotonic()
        finally:
            if owned:
                os.close(fd)
