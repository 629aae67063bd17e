"""Hashing a bundle's members on every core, with bounded memory.

One stream of SHA-256 runs on one core (hashlib, like ``openssl dgst``); a bundle's members are
independent, so the verifier hands each member it does not keep to a pool of threads that read
its byte range from the bundle's file (or parts) with ``pread`` and hash it (and inflate it, for a
member stored as zstd), while the tar walk goes on. hashlib and zstandard release the GIL for
large updates, so the threads run in parallel. Memory is one buffer per thread; nothing is read
whole.

The jobs are taken in the order they are given; the verifier gives the largest first, so that no
core is left hashing one large member alone at the end while the other has nothing to do. The
pool uses nothing but ``threading``: a verification pays for no executor machinery at start-up.

The tar walk still reads every header in order (so the archive's structure is checked exactly as
before); only the hashing of a member's content moves to the pool, and its digest is compared
with the manifest before verification succeeds.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from airgap.errors import EnvironmentFailure

BUFFER = 4 << 20  # bytes each thread reads and hashes at a time
PARALLEL_MIN = 4 << 20  # kept for callers that hash only large members in the pool


def workers() -> int:
    """Threads to hash with: every core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


Source = tuple["Path | int", int]  # a file (by path, or the walk's own open descriptor) and its size


class Inflater(Protocol):
    """What else a job feeds its bytes to (a zstd member's checker), in the job's thread."""

    def update(self, chunk: memoryview) -> None:
        """Takes the next stored bytes; a fault is kept for the caller, not raised here."""


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


class Job:
    """One byte range to hash (and, with ``inflater``, to inflate as it passes): its digest, or
    the error that stopped it, once ``done`` is set."""

    __slots__ = ("digest", "done", "error", "inflater", "offset", "size")

    def __init__(self, offset: int, size: int, inflater: Inflater | None = None) -> None:
        self.offset = offset
        self.size = size
        self.inflater = inflater
        self.digest = ""
        self.error: BaseException | None = None
        self.done = False

    def result(self) -> str:
        """The hex digest; the job's own error, raised, if it failed."""
        if self.error is not None:
            raise self.error
        return self.digest


class RangeHasher:
    """A pool of threads that hash byte ranges of the concatenation of ``sources``."""

    def __init__(self, sources: tuple[Source, ...], stall: float | None = None) -> None:
        self.sources = sources
        self.stall = stall
        self.hashed = 0  # bytes hashed so far, by every thread (read by the caller for progress)
        self._cond = threading.Condition()
        self._queue: deque[Job] = deque()
        self._threads: list[threading.Thread] = []
        self._stopped = False
        self._stalled = False
        self._last = time.monotonic()
        self._lock = threading.Lock()  # guards ``hashed`` and ``_opened``
        self._local = threading.local()  # each thread's buffer and descriptors
        self._opened: list[int] = []

    def submit(self, offset: int, size: int, inflater: Inflater | None = None) -> Job:
        """Queues hashing ``size`` bytes at ``offset``; the threads take jobs in this order."""
        job = Job(offset, size, inflater)
        self.submit_all([job])
        return job

    def submit_all(self, jobs: Sequence[Job]) -> None:
        """Queues ``jobs`` in order, starting threads (up to one per core) as there is work."""
        with self._cond:
            if self._stopped:
                raise RuntimeError("the hash pool is closed")
            self._queue.extend(jobs)
            self._last = time.monotonic()
            want = min(workers(), len(self._threads) + len(self._queue))
            while len(self._threads) < want:
                thread = threading.Thread(
                    target=self._work, name=f"airgap-hash-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            self._cond.notify_all()

    def results(self, jobs: Sequence[Job], progress: Callable[[int], None]) -> list[str]:
        """The digests of ``jobs``, in order, reporting hashed bytes to ``progress`` meanwhile;
        the first failed job (in this order) raises its error."""
        reported = self.hashed
        self._last = time.monotonic()
        progress(reported)
        with self._cond:
            while not all(j.done for j in jobs):
                self._cond.wait(0.2)
                if self.stall is not None and time.monotonic() - self._last > self.stall:
                    self._stalled = True
                    raise EnvironmentFailure(
                        f"reading the bundle stalled: no data for {self.stall:g} s",
                        hint="check the media (or copy the bundle to a local disk) and re-run",
                    )
                now = self.hashed
                if now != reported:
                    progress(now - reported)
                    reported = now
        if self.hashed != reported:
            progress(self.hashed - reported)
        return [j.result() for j in jobs]

    def close(self) -> None:
        """Stops the threads: jobs not started are dropped (the verification already failed or is
        over), a running one stops at its next read. A thread stalled on dead media is left (it
        is a daemon), so closing never hangs."""
        with self._cond:
            self._stopped = True
            self._queue.clear()
            self._cond.notify_all()
        if self._stalled:
            return
        for thread in self._threads:
            thread.join()
        with self._lock:
            opened, self._opened = self._opened, []
        for fd in opened:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> RangeHasher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ in the threads
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                job = self._queue.popleft()
            try:
                job.digest = (
                    self._hash(job.offset, job.size)
                    if job.inflater is None
                    else self._hash_with(job.offset, job.size, job.inflater)
                )
            except BaseException as exc:  # handed to the caller, in job order
                job.error = exc
            with self._cond:
                job.done = True
                self._cond.notify_all()

    def _hash(self, offset: int, size: int) -> str:
        """The SHA-256 of ``size`` bytes at ``offset`` of the sources' concatenation."""
        return self._hash_with(offset, size, None)

    def _hash_with(self, offset: int, size: int, inflater: Inflater | None) -> str:
        local = self._local
        if not hasattr(local, "view"):  # this thread's first job: one buffer, reused for every job
            local.view, local.fds = memoryview(bytearray(BUFFER)), {}
        digest = hashlib.sha256()
        start = 0
        for path, length in self.sources:
            if size == 0:
                break
            end = start + length
            if offset < end:
                take = min(size, end - offset)
                self._hash_file(path, offset - start, take, digest, local, inflater)
                offset += take
                size -= take
            start = end
        if size:
            raise EnvironmentFailure("a member runs past the end of the bundle's files")
        return digest.hexdigest()

    def _open(self, path: Path | int, fds: dict[Path | int, int]) -> int:
        """This thread's descriptor for ``path``, opened once per thread and reused for every job."""
        fd = fds.get(path)
        if fd is not None:
            return fd
        if isinstance(path, int):
            # The walk's file, opened again through its descriptor: the same file (no path is
            # looked up again), with its own read-ahead state, so that threads reading other
            # ranges do not defeat the kernel's read-ahead for one another.
            try:
                fd = os.open(f"/proc/self/fd/{path}", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except OSError:
                return path  # no /proc: pread on the shared descriptor still works (not closed)
        else:
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except OSError as exc:
                raise EnvironmentFailure(f"cannot open {path} to hash it: {exc.strerror or exc}") from None
        fds[path] = fd
        with self._lock:
            self._opened.append(fd)
        return fd

    def _hash_file(
        self, path: Path | int, at: int, size: int, digest: Any, local: Any, inflater: Inflater | None
    ) -> None:
        fd = self._open(path, local.fds)
        view: memoryview = local.view
        with contextlib.suppress(OSError, AttributeError):
            os.posix_fadvise(fd, at, size, os.POSIX_FADV_SEQUENTIAL)
        while size:
            if self._stopped:
                raise EnvironmentFailure("hashing stopped: the verification ended")
            try:
                n = os.preadv(fd, [view[: min(size, len(view))]], at)
            except OSError as exc:
                raise EnvironmentFailure(
                    f"reading {path} failed at byte {at}: {exc.strerror or exc}"
                ) from None
            if n <= 0:
                raise EnvironmentFailure(f"the bundle ({path}) ended while it was being hashed")
            chunk = view[:n]
            digest.update(chunk)
            if inflater is not None:
                inflater.update(chunk)
            at += n
            size -= n
            with self._lock:
                self.hashed += n
                self._last = time.monotonic()
