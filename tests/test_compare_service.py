"""`airgap compare` as a service, against two small model servers of our own on loopback: a
retrained regression judged by the promote tolerance, relative MAE drop and keep-alive latency,
and thresholds taken from the site or the current bundle — never from the candidate's own bundle."""

from __future__ import annotations

import json
import random
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from airgap.core.promotion import MIN_LATENCY_SAMPLES
from airgap.errors import InvalidInputError
from airgap.services.deploy import targets
from airgap.services.deploy.compare import compare
from airgap.services.deploy.receipts import Installed, Receipt
from airgap.services.deploy.targets import BaseTarget, Site
from airgap.services.observer import NullObserver
from airgap.services.state import State
from tests.fakes import fake_adapters

NAME = "price"


def regression_server(version: str, scale: float) -> ThreadingHTTPServer:
    """A model that answers the sum of a row's features times ``scale``, as ``version``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()  # headers and body leave in two writes: no 40 ms wait for a delayed ACK
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _send(self, doc: Any) -> None:
            body = json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._send({"status": "ready", "model_version": version})

        def do_POST(self) -> None:
            rows = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["inputs"]["x"]
            outputs = {"value": [[sum(r) * scale] for r in rows]}
            self._send({"model": NAME, "model_version": version, "outputs": outputs})

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class FixedPorts(BaseTarget):
    """A target whose installations answer on the port their receipt names (the servers above)."""

    name = "fixedports"
    candidates = True


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    rng = random.Random(11)
    rows = [[round(rng.uniform(0, 100), 2) for _ in range(3)] for _ in range(120)]
    labels = [sum(r) + rng.gauss(0, 5) for r in rows]
    acceptance = {"input": "x", "output": "value", "rows": rows, "labels": labels}
    acceptance["thresholds"] = {"mae": 10.0}
    contract = {"cases": [{"name": "one", "inputs": {"x": [rows[0]]}, "outputs": {}}]}
    servers = {"1.0.0": regression_server("1.0.0", 1.0), "1.0.1": regression_server("1.0.1", 1.01)}
    state = State(tmp_path / "state")
    installed = Installed(state)
    receipts = {}
    for version, server in servers.items():
        content = tmp_path / version
        (content / "model").mkdir(parents=True)
        (content / "model" / "contract.json").write_text(json.dumps(contract))
        (content / "model" / "acceptance.json").write_text(json.dumps(acceptance))
        port = server.server_address[1]
        receipts[version] = Receipt(
            NAME, version, "fixedports", version * 8, "k", "b", "t", str(content), port=port
        )
    # The candidate's own bundle would let anything through: it is not its own bar.
    (tmp_path / "1.0.1" / "model" / "promote.json").write_text(
        json.dumps({"min_agreement": 0.0, "max_metric_drop": 1e9, "max_p95_ratio": 1000, "output_rtol": 1.0})
    )
    installed.put(receipts["1.0.0"], None)
    installed.put_candidate(NAME, "fixedports", receipts["1.0.1"])
    targets.register(FixedPorts())
    try:
        yield Site(state, NullObserver(), installed, tmp_path, "label", targets.find, fake_adapters())
    finally:
        targets.unregister("fixedports")
        for server in servers.values():
            server.shutdown()
            server.server_close()


def test_a_retrained_regression_1pct_off_agrees_within_the_default_tolerance(site: Site) -> None:
    report = compare(site, NAME, "fixedports")
    by = {c.what.split(" ")[0]: c for c in report.checks}
    assert report.spec_source == "airgap's defaults", "the candidate's own promote.json is no bar"
    assert by["agreement"].ok and report.disagreements == ()  # the golden 1e-4 would call all 121 different
    assert by["mae"].threshold == "≤ 2.00% relative" and "95 % CI" in by["mae"].measured
    assert "McNemar" not in by, "a regression has no classes to test"
    assert by["p95"].what.endswith(f"{MIN_LATENCY_SAMPLES + 100} keep-alive samples each)")
    assert report.latency["current"]["count"] == MIN_LATENCY_SAMPLES + 100


def test_the_site_thresholds_come_first_and_a_bad_site_file_is_refused(site: Site) -> None:
    site_file = site.state.directory / "promote.json"
    site_file.write_text(json.dumps({"output_rtol": 0.001, "min_agreement": 0.99}))
    report = compare(site, NAME, "fixedports")
    assert report.spec_source.startswith("the site (") and str(site_file) in report.spec_source
    assert not report.ok and not report.checks[0].ok  # 1 % apart is more than the site's 0.1 %
    assert len(report.disagreements) == 121

    site_file.write_text(json.dumps({"min_agreement": 2}))
    with pytest.raises(InvalidInputError, match=r"min_agreement must be a number from 0 to 1"):
        compare(site, NAME, "fixedports")
    site_file.write_text(json.dumps({"agreement": 0.9}))
    with pytest.raises(InvalidInputError, match=r"'agreement' is not a promote threshold"):
        compare(site, NAME, "fixedports")


def test_the_current_bundle_sets_the_bar_when_the_site_has_none(site: Site, tmp_path: Path) -> None:
    (tmp_path / "1.0.0" / "model" / "promote.json").write_text(json.dumps({"max_metric_drop": 0.0}))
    report = compare(site, NAME, "fixedports")
    assert report.spec_source.startswith("the current bundle 1.0.0")
    assert report.spec.max_metric_drop == 0.0
