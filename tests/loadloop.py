"""Requests to a model server's port from the first moment to the last of a switch, as clients send
them, counting every request that is not answered 200 (tests of promote and of the server's drain)."""

from __future__ import annotations

import http.client
import json
import select
import threading
import time


class LoadLoop:
    """Requests to the port from the first moment to the last of a promote, as clients would send
    them: keep-alive connections (each checked before reuse, as urllib3 does: a connection the
    server closed while idle is readable, and is replaced; one closed just as a request went out on
    it is sent again once on a new connection, as HTTP clients do, and counted in ``retried``) and a
    new connection per request, never retried. Every request not answered 200 is a failure, with
    why. Bounded in time and count."""

    def __init__(self, port: int, body: bytes, keep_alive: int = 2, fresh: int = 2) -> None:
        self.port, self.body = port, body
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.answered: list[tuple[float, str]] = []  # when, and the version that answered
        self.failures: list[str] = []
        self.retried: list[str] = []  # stale keep-alive connections, each request sent again once
        self.threads = [threading.Thread(target=self._run, args=(True,)) for _ in range(keep_alive)]
        self.threads += [threading.Thread(target=self._run, args=(False,)) for _ in range(fresh)]

    def __enter__(self) -> LoadLoop:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _once(self, conn: http.client.HTTPConnection) -> tuple[bool, str, bool]:
        """One request on ``conn``: (answered 200, the version or why not, the server closes it)."""
        conn.request("POST", "/v1/predict", self.body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = response.read()
        if response.status != 200:
            return False, f"HTTP {response.status} {payload[:200]!r}", True
        closes = response.getheader("Connection", "").lower() == "close"
        return True, str(json.loads(payload)["model_version"]), closes

    def _run(self, keep_alive: bool) -> None:
        conn: http.client.HTTPConnection | None = None
        deadline = time.monotonic() + 300
        for _ in range(100_000):
            if self.stop.is_set() or time.monotonic() > deadline:
                break
            if conn is not None and conn.sock is not None and select.select([conn.sock], [], [], 0)[0]:
                conn.close()  # closed by the server while idle (or it said more than it was asked)
                conn = None
            reused = conn is not None
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                try:
                    ok, outcome, closes = self._once(conn)
                except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected) as exc:
                    if not reused:
                        raise
                    # A reused keep-alive connection the server closed as the request went out, with
                    # no byte of an answer: sent again once on a new connection, as HTTP clients do
                    # (RFC 9112, 9.3.1; urllib3, Go's net/http). Counted, never hidden.
                    with self.lock:
                        self.retried.append(repr(exc))
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                    ok, outcome, closes = self._once(conn)
                if closes or not keep_alive:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException, ValueError) as exc:
                ok, outcome = False, f"{'keep-alive' if keep_alive else 'new connection'}: {exc!r}"
                conn.close()
                conn = None
            with self.lock:
                if ok:
                    self.answered.append((time.monotonic(), outcome))
                else:
                    self.failures.append(outcome)
            time.sleep(0.01)
        if conn is not None:
            conn.close()
