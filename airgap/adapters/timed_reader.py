"""A stream whose every read must finish within a deadline: media that stalls is exit 5, not a hang.

Kept apart from the tar reader (``archive.py``), which re-exports it: the one reads bytes from a
medium, the other judges them.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from typing import Any

from airgap.errors import EnvironmentFailure

READ_AHEAD = 256 << 10  # reads this small are served from a read-ahead buffer
SKIP_CHUNK = 1 << 20  # a stream that cannot seek is read through in blocks this large


class TimedReader:
    """A stream whose every read must return within ``timeout`` seconds (media that stalls).

    A read from a regular file cannot be interrupted, so the reads run in one helper thread and
    the caller waits for each with a deadline; when it passes, the caller gets an
    ``EnvironmentFailure`` (exit 5) instead of hanging, and the stalled thread is abandoned.
    Large reads are read ahead: while the caller hashes one block, the helper reads the next,
    so reading and hashing overlap. With ``owns``, ``close`` also closes the stream, but never
    while a read of it is pending: closing a buffered file waits for the stalled read's lock
    forever, so such a stream is left to be closed when the process exits.
    """

    def __init__(self, stream: Any, timeout: float, what: str, owns: bool = False) -> None:
        self.stream = stream
        self.timeout = timeout
        self.what = what
        self.owns = owns
        self.pending = False
        self._requests: queue.SimpleQueue[tuple[str, Any] | None] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        self._buf = b""
        self._pos = 0
        self._ahead = False  # the pending request is a read-ahead, not yet asked for
        self._eof = False
        self._thread = threading.Thread(target=self._serve, name="airgap-reader", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            request = self._requests.get()
            if request is None:
                return
            kind, arg = request
            try:
                result = self.stream.read(arg) if kind == "read" else self.stream.readinto(arg)
                self._results.put((True, result))
            except BaseException as exc:  # handed to the caller's thread
                self._results.put((False, exc))

    def _request(self, kind: str, arg: Any) -> None:
        if self.pending:
            raise EnvironmentFailure(f"reading {self.what} stalled earlier and has not finished")
        self.pending = True
        self._requests.put((kind, arg))

    def _collect(self, timeout: float | None = None) -> Any:
        try:
            ok, value = self._results.get(timeout=self.timeout if timeout is None else timeout)
            self.pending = False
        except queue.Empty:
            raise EnvironmentFailure(
                f"reading {self.what} stalled: no data for {self.timeout:g} s",
                hint="check the media (or copy the bundle to a local disk) and re-run",
            ) from None
        if not ok:
            raise value
        return value

    def _call(self, kind: str, arg: Any) -> Any:
        self._request(kind, arg)
        return self._collect()

    def _refill(self, n: int) -> None:
        """The buffer is empty: fill it from the read-ahead if one is out, else read ``n`` now."""
        if self._ahead:
            self._ahead = False
            data = self._collect()
        else:
            data = self._call("read", n)
        self._buf = bytes(data)
        self._pos = 0
        self._eof = not self._buf

    def _read_ahead(self, n: int) -> None:
        if not (self._ahead or self._eof or self.pending):
            self._request("read", n)
            self._ahead = True

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or fewer only at the end: small reads (headers, padding) are served
        from a read-ahead buffer so that the helper thread is asked once per block, not per header."""
        out = bytearray()
        while len(out) < n:
            if self._pos == len(self._buf):
                if self._eof:
                    break
                self._refill(max(n - len(out), READ_AHEAD))
                if not self._buf:
                    break
            take = min(n - len(out), len(self._buf) - self._pos)
            out += self._buf[self._pos : self._pos + take]
            self._pos += take
        return bytes(out)

    def readinto(self, view: memoryview) -> int:
        """Up to ``len(view)`` bytes: what is buffered or read ahead first, then large reads
        straight into ``view``; after a large read, the next block is read ahead."""
        large = len(view) >= READ_AHEAD and hasattr(self.stream, "readinto")
        if not large:
            data = self.read(len(view))
            view[: len(data)] = data
            return len(data)
        if self._pos == len(self._buf) and self._ahead:
            self._refill(len(view))
        if self._pos < len(self._buf):
            take = min(len(view), len(self._buf) - self._pos)
            view[:take] = self._buf[self._pos : self._pos + take]
            self._pos += take
            if self._pos == len(self._buf):
                self._read_ahead(len(view))
            return take
        if self._eof:
            return 0
        n = int(self._call("readinto", view))
        self._eof = not n
        self._read_ahead(len(view))
        return n

    def skip(self, n: int) -> int:
        """Moves ``n`` bytes forward without reading them: what is buffered or read ahead is
        dropped, the rest is a seek of the file (a regular file; a seek does not stall)."""
        done = min(n, len(self._buf) - self._pos)
        self._pos += done
        if done < n and self._ahead:  # the read-ahead holds the next bytes
            self._refill(0)
            take = min(n - done, len(self._buf))
            self._pos += take
            done += take
        if done < n and not self._eof and not hasattr(self.stream, "seek"):
            # Parts: every byte must pass through their hashes, so they are read, not skipped.
            view = memoryview(bytearray(SKIP_CHUNK))
            while done < n:
                got = self.readinto(view[: min(SKIP_CHUNK, n - done)])
                if not got:
                    break
                done += got
        elif done < n and not self._eof:
            if self.pending:
                raise EnvironmentFailure(f"reading {self.what} stalled earlier and has not finished")
            self.stream.seek(n - done, os.SEEK_CUR)
            done = n
        return done

    def close(self) -> None:
        """Stops the helper thread (a stalled one stays abandoned; it is a daemon) and, when the
        stream is owned and no read of it is pending, closes it."""
        if self._ahead:
            with contextlib.suppress(Exception):
                self._collect(timeout=min(self.timeout, 1.0))
        self._requests.put(None)
        if self.owns and not self.pending:
            self.stream.close()
