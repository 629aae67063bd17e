"""Two model servers on one port, as a promote runs them for a moment: the new one binds beside the
old one (SO_REUSEPORT), takes no connection before it is warm, names its own process in /readyz,
and the old one, stopped, answers everything it had taken (new connections and keep-alive ones,
which get a moment to send their next request) and exits 0 — no request refused."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import time
from pathlib import Path

from tests.loadloop import LoadLoop
from tests.test_server import Server, serving, wait_for, wait_until_ready


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _instance(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/readyz")
        response = conn.getresponse()
        body = json.loads(response.read())
        assert response.status == 200, body
        return str(body["instance"])
    finally:
        conn.close()


def _events(server: Server) -> list[str]:
    return [r["event"] for r in server.log_records()]


def test_a_second_server_shares_the_port_only_once_warm_and_the_first_stops_refusing_nothing(
    tmp_path: Path,
) -> None:
    port = _free_port()
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    with serving(tmp_path / "old", port=port) as old:
        wait_until_ready(old)
        first = _instance(port)
        with serving(tmp_path / "new", port=port) as new:
            # The new one listens only after its warm-up: until then every connection is the old one's.
            wait_for(lambda: "listening" in _events(new), "the second server to listen", timeout=60)
            events = _events(new)
            assert events.index("ready") < events.index("listening"), events
            seen = {_instance(port) for _ in range(60)}
            assert first in seen and len(seen) == 2, "the kernel spreads new connections over both"

            body = json.dumps({"inputs": {"features": [[0.1, 0.2, 0.3, 0.4]]}}).encode()
            with LoadLoop(port, body, keep_alive=2, fresh=2) as load:
                time.sleep(0.3)
                old.proc.send_signal(signal.SIGTERM)
                assert old.proc.wait(30) == 0
                time.sleep(0.3)
            assert load.failures == [] and len(load.answered) > 50, (load.failures[:3], len(load.answered))
            after = {_instance(port) for _ in range(20)}
            assert len(after) == 1 and first not in after
