"""A bounded, open-loop load generator for the installed model server: a fixed request rate, a fixed
number of keep-alive connections, a fixed duration and request budget.

Built in because the far side has no internet to fetch a load-testing tool, and stdlib only
(``http.client`` over loopback or a port-forward). Open loop: request *i* is due at ``i / rps``
seconds whatever happened before, and its latency is measured from when it was due, not from when a
free connection sent it; a server that falls behind shows the queueing in its percentiles instead of
hiding it by slowing the generator down ("coordinated omission").
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

MAX_REQUESTS = 100_000  # the budget: a typo in the rate must not run for hours


@dataclass
class LoadResult:
    """What a run measured; latencies of the successful requests only."""

    planned: int
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def sent(self) -> int:
        """Requests answered or failed."""
        return len(self.latencies_ms) + self.errors


def run_load(
    port: int,
    bodies: Sequence[bytes],
    rps: float,
    concurrency: int,
    duration_s: float,
    host: str = "127.0.0.1",
    progress: Callable[[int, int], None] | None = None,
    timeout: float = 10.0,
) -> LoadResult:
    """POSTs ``bodies`` round-robin to ``/v1/predict`` at ``rps`` for ``duration_s`` on ``concurrency``
    connections; ``progress(done, planned)`` is called as requests finish."""
    planned = min(MAX_REQUESTS, max(1, int(rps * duration_s)))
    result = LoadResult(planned=planned)
    lock = threading.Lock()
    counter = iter(range(planned))
    start = time.perf_counter() + 0.05

    def worker() -> None:
        conn: http.client.HTTPConnection | None = None
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            due = start + i / rps
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            status = "error"
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=timeout)
                conn.request(
                    "POST",
                    "/v1/predict",
                    body=bodies[i % len(bodies)],
                    headers={"Content-Type": "application/json"},
                )
                response = conn.getresponse()
                response.read()
                status = str(response.status)
                if response.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
            took = (time.perf_counter() - due) * 1000
            with lock:
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if status == "200":
                    result.latencies_ms.append(took)
                else:
                    result.errors += 1
                done = result.sent
            if progress is not None:
                progress(done, planned)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, concurrency))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.elapsed_s = max(time.perf_counter() - start, 1e-9)
    return result
