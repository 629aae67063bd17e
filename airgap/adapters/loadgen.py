"""A bounded, open-loop load generator for the installed model server: a fixed request rate, a fixed
number of keep-alive connections, a fixed duration and request budget.

Built in because the far side has no internet to fetch a load-testing tool, and stdlib only
(``http.client`` over loopback or a port-forward). Open loop: request *i* is due at ``i / rps``
seconds whatever happened before, and its latency is measured from when it was due, not from when a
free connection sent it; a server that falls behind shows the queueing in its percentiles instead of
hiding it by slowing the generator down ("coordinated omission").

The generator also watches itself, so that its own slowness is never reported as the server's:
for every request it records how late it was sent (the *send lag*), and splits that into the wait
for a free connection (every connection busy) and its own lateness with a connection free (a
thread that woke late: a starved CPU, a busy interpreter). While a connection is busy it records
how long the generator itself worked (connecting, writing the request) and how long it waited for
the server's whole answer. ``LoadResult.generator_behind`` says when the figures measure the generator
rather than the server.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

MAX_REQUESTS = 100_000  # the budget: a typo in the rate must not run for hours
# Send lag the generator may add on its own before its figures stop measuring the server: 99 % of
# requests sent within this of when they were due, or of when a connection became free.
LAG_LIMIT_MS = 10.0
# ...and the least share of the connections' busy time in the generator's own work for that lateness
# to matter: a server that keeps every connection waiting is slow whatever the generator's timing.
GENERATOR_SHARE = 0.10
PROBE_S = 0.005  # how often a probe thread wakes to measure how late the generator gets the CPU


def percentile99(values: Sequence[float]) -> float:
    """Nearest-rank 99th percentile (0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, -(-99 * len(ordered) // 100) - 1)]


@dataclass
class LoadResult:
    """What a run measured: every request's latency and lag, and what the generator itself cost."""

    planned: int
    # Every request, from when it was due: an answer (whatever its status) when it came; a request
    # that got no answer (timeout, refused, reset) at the timeout.
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0  # requests not answered 200
    statuses: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    send_lag_ms: list[float] = field(default_factory=list)  # sent − due
    own_lag_ms: list[float] = field(default_factory=list)  # sent − max(due, a connection free)
    queue_ms: list[float] = field(default_factory=list)  # waiting for a free connection
    client_s: float = 0.0  # connections busy with the generator's own work
    server_s: float = 0.0  # connections waiting for the server's answer
    wake_lag_ms: list[float] = field(default_factory=list)  # a probe's oversleep: the generator's CPU

    @property
    def sent(self) -> int:
        """Requests answered or failed."""
        return len(self.latencies_ms)

    @property
    def server_latencies_ms(self) -> list[float]:
        """Each request's latency less the generator's own lateness in sending it (with a
        connection free): what the server took from when it could have been asked."""
        return [max(0.0, t - own) for t, own in zip(self.latencies_ms, self.own_lag_ms)]

    @property
    def generator_share(self) -> float:
        """The share of the connections' busy time spent in the generator's own work (connecting,
        writing requests, bookkeeping) rather than waiting for the server's answer."""
        busy = self.client_s + self.server_s
        return self.client_s / busy if busy > 0 else 0.0

    @property
    def generator_behind(self) -> str | None:
        """Why this run measured the generator rather than the server, or None when it kept up.

        Behind when the generator was late by itself — at the 99th percentile, a probe thread that
        only sleeps woke more than ``LAG_LIMIT_MS`` late (a starved CPU or interpreter), or requests
        went out that late with a connection free — while its own work was a real part of the
        connections' time (``GENERATOR_SHARE``); or when requests waited that long for a free
        connection while the connections spent more time in the generator than waiting for the
        server. A slow server keeps the connections waiting on it: a measurement, never this."""
        own, woke, share = percentile99(self.own_lag_ms), percentile99(self.wake_lag_ms), self.generator_share
        if share >= GENERATOR_SHARE and woke > LAG_LIMIT_MS:
            return (
                f"the load generator was starved of CPU (a {PROBE_S * 1000:g} ms sleep overslept by "
                f"{woke:.1f} ms at p99, limit {LAG_LIMIT_MS:g} ms; {share:.0%} of the connections' time "
                "was its own work)"
            )
        if share >= GENERATOR_SHARE and own > LAG_LIMIT_MS:
            return (
                f"the load generator sent requests late by itself (p99 {own:.1f} ms after they were "
                f"due with a connection free, limit {LAG_LIMIT_MS:g} ms)"
            )
        queued = percentile99(self.queue_ms)
        if queued > LAG_LIMIT_MS and self.client_s > self.server_s:
            return (
                f"the load generator's connections were busy with its own work (requests waited "
                f"p99 {queued:.1f} ms for a connection; {self.client_s:.2f} s in the generator against "
                f"{self.server_s:.2f} s waiting for the server)"
            )
        return None


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
            free = time.perf_counter()  # this connection can take the next request from now on
            with lock:
                i = next(counter, None)
            if i is None:
                break
            due = start + i / rps
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            status = "error"
            sent = time.perf_counter()
            written = answered = None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=timeout)
                conn.request(
                    "POST",
                    "/v1/predict",
                    body=bodies[i % len(bodies)],
                    headers={"Content-Type": "application/json"},
                )
                written = time.perf_counter()
                response = conn.getresponse()
                response.read()
                answered = time.perf_counter()  # the whole answer: its body may come later
                status = str(response.status)
                if response.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
            done = time.perf_counter()
            took = (done - due) * 1000
            if answered is None:  # no answer: counted as the timeout it is, at least
                took = max(took, (sent - due) * 1000 + timeout * 1000)
            written = written or done
            waited = (answered or done) - written
            with lock:
                result.statuses[status] = result.statuses.get(status, 0) + 1
                result.latencies_ms.append(took)
                if status != "200":
                    result.errors += 1
                result.send_lag_ms.append((sent - due) * 1000)
                result.own_lag_ms.append((sent - max(due, free)) * 1000)
                result.queue_ms.append(max(0.0, free - due) * 1000)
                result.server_s += waited
                result.client_s += (done - sent) - waited
                count = result.sent
            if progress is not None:
                progress(count, planned)
        if conn is not None:
            conn.close()

    finished = threading.Event()

    def probe() -> None:
        # A thread that only sleeps: how late it wakes is how late any worker would, whatever the
        # server does (a starved CPU, an interpreter busy elsewhere).
        while not finished.is_set():
            before = time.perf_counter()
            time.sleep(PROBE_S)
            late = (time.perf_counter() - before - PROBE_S) * 1000
            with lock:
                result.wake_lag_ms.append(max(0.0, late))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, concurrency))]
    watcher = threading.Thread(target=probe, daemon=True)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    finished.set()
    watcher.join()
    result.elapsed_s = max(time.perf_counter() - start, 1e-9)
    return result
