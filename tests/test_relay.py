"""The round-robin relay in front of per-pod port-forwards: connection *i* reaches upstream *i mod n*,
bytes pass both ways unchanged, and the port is closed when the block ends."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from airgap.adapters.loadgen import run_load
from airgap.adapters.relay import round_robin

LOOPBACK = "127.0.0.1"


@contextmanager
def replica(name: str, served: dict[str, int]) -> Iterator[int]:
    """A keep-alive HTTP server that says its name and counts what it answered."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            served[name] = served.get(name, 0) + 1
            body = b'{"outputs": {"label": [1]}}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            body = name.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_each_new_connection_goes_to_the_next_upstream_in_turn() -> None:
    served: dict[str, int] = {}
    with (
        replica("a", served) as a,
        replica("b", served) as b,
        round_robin([(LOOPBACK, a), (LOOPBACK, b)]) as port,
    ):
        names = []
        for _ in range(4):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/")
            names.append(conn.getresponse().read().decode())
            conn.close()
    assert names == ["a", "b", "a", "b"]


def test_the_load_generators_keep_alive_connections_reach_every_replica() -> None:
    served: dict[str, int] = {}
    with (
        replica("a", served) as a,
        replica("b", served) as b,
        round_robin([(LOOPBACK, a), (LOOPBACK, b)]) as port,
    ):
        result = run_load(port, [b'{"inputs": {}}'], rps=100, concurrency=4, duration_s=0.5)
    assert result.errors == 0 and result.sent == 50
    assert set(served) == {"a", "b"} and sum(served.values()) == 50


def test_the_relay_port_is_closed_when_the_block_ends() -> None:
    with replica("a", {}) as a:
        with round_robin([(LOOPBACK, a)]) as port:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2)
