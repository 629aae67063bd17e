"""The bundled model server as a client meets it: a real process on loopback serving the example model,
with onnxruntime run directly in the test as the oracle. Nothing is mocked; nothing sleeps blindly."""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import ROOT, assert_one_line_error

SERVER = ROOT / "bundle_templates" / "server" / "airgap_server.py"
EXAMPLE = ROOT / "examples" / "tabular"
MODEL = EXAMPLE / "model" / "classifier.onnx"
GOLDEN = EXAMPLE / "model" / "golden.json"
MAX_BATCH = 8
MAX_REQUEST_BYTES = 65536
ROWS = [[0.5, -1.25, 2.0, 0.75], [1.5, 0.0, -0.5, 3.0]]

T = TypeVar("T")


def wait_for(probe: Callable[[], T], what: str, timeout: float = 10.0) -> T:
    """Polls ``probe`` until it returns something truthy, or fails naming what never happened."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def oracle(features: list[list[float]]) -> list[np.ndarray]:
    """The model's answer computed here, by onnxruntime itself, without the server."""
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    return list(session.run(None, {"features": np.array(features, dtype=np.float32)}))


def assert_outputs_match(outputs: dict[str, Any], features: list[list[float]]) -> None:
    probabilities, label = oracle(features)
    np.testing.assert_array_equal(np.array(outputs["probabilities"], dtype=np.float32), probabilities)
    np.testing.assert_array_equal(np.array(outputs["label"], dtype=np.int64), label)


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    sandbox: Path  # its HOME and working directory, which must stay empty

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def get_json(self, path: str) -> tuple[int, Any]:
        status, _, body = self.request("GET", path)
        return status, json.loads(body)

    def predict(self, document: Any) -> tuple[int, Any]:
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        status, _, payload = self.request("POST", "/v1/predict", body, {"Content-Type": "application/json"})
        return status, json.loads(payload)

    def metrics(self) -> dict[str, float]:
        status, headers, body = self.request("GET", "/metrics")
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse_metrics(body.decode())

    def log_records(self) -> list[dict[str, Any]]:
        complete = self.log.read_text().split("\n")[:-1]  # a line being written has no newline yet
        return [json.loads(line) for line in complete]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=10)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition → {'name{labels}': value}; every sample line must be well-formed."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        assert re.fullmatch(r'[a-z_]+(\{([a-z_]+="[^"]*",?)+\})? [0-9.e+-]+', line), line
        key, value = line.rsplit(" ", 1)
        samples[key] = float(value)
    return samples


def sandbox_env(sandbox: Path) -> dict[str, str]:
    """HOME and the cache directory in an empty directory, to see whether anything writes there."""
    sandbox.mkdir()
    env = {**os.environ, "HOME": str(sandbox)}
    env.pop("XDG_CACHE_HOME", None)
    return env


def start_server(
    directory: Path, golden: Path | None = GOLDEN, model: Path = MODEL, contract: Path | None = None
) -> Server:
    """The server as the image runs it, configured by environment, on a port the kernel picks."""
    log = directory / "server.log"
    sandbox = directory / "sandbox"
    env = {
        **sandbox_env(sandbox),
        "AIRGAP_HOST": "127.0.0.1",
        "AIRGAP_PORT": "0",
        "AIRGAP_MODEL_PATH": str(model),
        "AIRGAP_MODEL_NAME": "tabular",
        "AIRGAP_MODEL_VERSION": "2024.06.1",
        "AIRGAP_GOLDEN_PATH": str(golden or ""),
        # none unless the test gives one (beside the example model there is none)
        "AIRGAP_DATA_CONTRACT_PATH": str(contract or directory / "no-data-contract.json"),
        "AIRGAP_MAX_BATCH": str(MAX_BATCH),
        "AIRGAP_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
    }
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(SERVER)], stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd=sandbox
        )

    def listening_port() -> int | None:
        assert proc.poll() is None, log.read_text()
        for line in log.read_text().split("\n")[:-1]:
            record = json.loads(line)
            if record["event"] == "listening":
                return int(record["port"])
        return None

    try:
        return Server(proc, wait_for(listening_port, "the server to listen"), log, sandbox)
    except BaseException:
        proc.kill()
        proc.wait()
        raise


@contextlib.contextmanager
def serving(
    directory: Path, golden: Path | None = GOLDEN, model: Path = MODEL, contract: Path | None = None
) -> Iterator[Server]:
    """A started server that is killed, whatever happens, if the test has not stopped it itself."""
    running = start_server(directory, golden, model, contract)
    try:
        yield running
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait()


def wait_until_ready(server: Server) -> None:
    wait_for(lambda: server.get_json("/readyz")[0] == 200, "/readyz to answer 200")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("server")) as running:
        wait_until_ready(running)
        yield running
        assert running.stop() == 0


def raw_exchange(port: int, data: bytes) -> tuple[int, dict[str, Any]]:
    """Sends bytes as they are (http.client would add the headers these tests leave out)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        return read_response(sock)


def read_response(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    """One response: up to the end of its Content-Length, or of the connection when it has none."""
    received = b""
    while b"\r\n\r\n" not in received and (chunk := sock.recv(65536)):
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    match = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    while (match is None or len(body) < int(match.group(1))) and (chunk := sock.recv(65536)):
        body += chunk
    return int(head.split()[1]), json.loads(body)


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


# ---------------------------------------------------------------------------------------------------
# Predictions


def test_predict_returns_the_numbers_onnxruntime_computes(server: Server) -> None:
    for case in json.loads(GOLDEN.read_text())["cases"]:
        status, answer = server.predict({"inputs": case["inputs"]})
        assert status == 200, answer
        assert answer["model"] == "tabular"
        assert answer["model_version"] == "2024.06.1"
        assert set(answer["outputs"]) == {"probabilities", "label"}
        assert_outputs_match(answer["outputs"], case["inputs"]["features"])


def test_predict_accepts_integers_for_a_float_input(server: Server) -> None:
    status, answer = server.predict({"inputs": {"features": [[1, 2, 3, 4]]}})
    assert status == 200, answer
    assert_outputs_match(answer["outputs"], [[1.0, 2.0, 3.0, 4.0]])


INVALID_REQUESTS = [
    ("bad_json", b'{"inputs": {"features": [[1, 2', "bad_json", "JSON"),
    ("not_an_object", b"[1, 2, 3]", "bad_json", "inputs"),
    ("nan_is_not_json", b'{"inputs": {"features": [[NaN, 1, 2, 3]]}}', "bad_json", "NaN"),
    ("unknown_input", {"inputs": {"features": ROWS, "feature": ROWS}}, "unknown_input", "'feature'"),
    ("missing_input", {"inputs": {}}, "missing_input", "'features'"),
    ("wrong_rank", {"inputs": {"features": ROWS[0]}}, "bad_shape", "dimension"),
    ("too_deep", {"inputs": {"features": [[[1.0], [2.0], [3.0], [4.0]]]}}, "bad_shape", "dimension"),
    ("wrong_fixed_dim", {"inputs": {"features": [[1.0, 2.0, 3.0]]}}, "bad_shape", "must be 4"),
    ("string_value", {"inputs": {"features": [[1.0, "2", 3.0, 4.0]]}}, "bad_dtype", "features[0][1]"),
    ("bool_value", {"inputs": {"features": [[1.0, 2.0, True, 4.0]]}}, "bad_dtype", "features[0][2]"),
    ("null_value", {"inputs": {"features": [[1.0, 2.0, 3.0, None]]}}, "bad_dtype", "features[0][3]"),
    ("ragged_rows", {"inputs": {"features": [ROWS[0], ROWS[1][:3]]}}, "bad_shape", "ragged"),
    ("row_not_a_list", {"inputs": {"features": [ROWS[0], 5]}}, "bad_shape", "ragged"),
    ("empty_batch", {"inputs": {"features": []}}, "bad_shape", "empty"),
    (
        "batch_too_large",
        {"inputs": {"features": [ROWS[0]] * (MAX_BATCH + 1)}},
        "batch_too_large",
        "at most 8",
    ),
]


@pytest.mark.parametrize(
    ("body", "code", "mentions"), [r[1:] for r in INVALID_REQUESTS], ids=[r[0] for r in INVALID_REQUESTS]
)
def test_invalid_predict_request_gets_400_with_a_code_and_one_sentence_naming_the_fix(
    server: Server, body: Any, code: str, mentions: str
) -> None:
    status, answer = server.predict(body)
    assert status == 400, answer
    assert answer["error"]["code"] == code
    message = answer["error"]["message"]
    assert mentions in message
    assert "\n" not in message and len(message) < 300


def test_body_above_the_limit_is_refused_413_from_content_length_without_reading_it(server: Server) -> None:
    # Only the headers are sent: the answer can only come from Content-Length.
    status, answer = raw_exchange(
        server.port,
        b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (MAX_REQUEST_BYTES + 1),
    )
    assert (status, answer["error"]["code"]) == (413, "too_large")
    assert str(MAX_REQUEST_BYTES) in answer["error"]["message"]


def test_a_request_refused_unread_still_gets_its_answer_not_a_connection_reset(server: Server) -> None:
    body = b"0" * (16 << 20)  # more than the socket buffers hold: the client is still sending
    for path, status, code in (("/v1/predict", 413, "too_large"), ("/v1/nowhere", 404, "not_found")):
        head = b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (path.encode(), len(body))
        answer = raw_exchange(server.port, head + body)
        assert (answer[0], answer[1]["error"]["code"]) == (status, code)


def test_post_without_content_length_is_refused_411(server: Server) -> None:
    status, answer = raw_exchange(server.port, b"POST /v1/predict HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (status, answer["error"]["code"]) == (411, "length_required")
    chunked = (
        b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    )
    status, answer = raw_exchange(server.port, chunked)
    assert (status, answer["error"]["code"]) == (411, "length_required")


def test_unknown_path_is_404_and_wrong_method_is_405_with_allow(server: Server) -> None:
    status, _, body = server.request("GET", "/v2/predict")
    assert (status, json.loads(body)["error"]["code"]) == (404, "not_found")
    status, headers, body = server.request("GET", "/v1/predict")
    assert (status, json.loads(body)["error"]["code"], headers["Allow"]) == (
        405,
        "method_not_allowed",
        "POST",
    )
    status, headers, body = server.request("DELETE", "/healthz")
    assert (status, json.loads(body)["error"]["code"], headers["Allow"]) == (405, "method_not_allowed", "GET")
    status, _, body = server.request("BREW", "/healthz")
    assert (status, json.loads(body)["error"]["code"]) == (405, "method_not_allowed")


# ---------------------------------------------------------------------------------------------------
# Health, readiness, metrics, logs


def test_healthz_is_ok_and_readyz_is_ready_after_the_warm_up(server: Server) -> None:
    assert server.get_json("/healthz") == (200, {"status": "ok"})
    status, ready = server.get_json("/readyz")
    listening = [r for r in server.log_records() if r["event"] == "listening"]
    # "instance" tells apart two processes sharing the port during a promote: this start's, not a constant
    assert (status, ready) == (
        200,
        {"status": "ready", "model_version": "2024.06.1", "instance": listening[0]["instance"]},
    )
    assert re.fullmatch(r"[0-9a-f]{16}", ready["instance"])
    warm_up = [r for r in server.log_records() if r["event"] == "ready"]
    assert [r["warm_up_case"] for r in warm_up] == ["single_row"]


def test_metrics_count_the_requests_made(server: Server) -> None:
    before = server.metrics()
    for _ in range(3):
        assert server.predict({"inputs": {"features": ROWS}})[0] == 200
    assert server.predict({"inputs": {"features": [[1.0]]}})[0] == 400
    assert server.predict({"inputs": {}})[0] == 400
    assert server.request("GET", "/nowhere")[0] == 404
    after = server.metrics()

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta('airgap_requests_total{path="/v1/predict",code="200"}') == 3
    assert delta('airgap_requests_total{path="/v1/predict",code="400"}') == 2
    assert delta('airgap_requests_total{path="other",code="404"}') == 1
    assert delta('airgap_requests_total{path="/metrics",code="200"}') == 1  # the first scrape
    assert delta("airgap_request_errors_total") == 3
    assert delta("airgap_inference_seconds_count") == 3
    assert delta("airgap_inference_seconds_sum") > 0
    buckets = [v for k, v in after.items() if k.startswith("airgap_inference_seconds_bucket")]
    assert buckets == sorted(buckets) and buckets[-1] == after["airgap_inference_seconds_count"]
    assert after['airgap_inference_seconds_bucket{le="+Inf"}'] == after["airgap_inference_seconds_count"]
    info = f'airgap_model_info{{name="tabular",version="2024.06.1",onnxruntime="{ort.__version__}"}}'
    assert after[info] == 1
    assert after["airgap_ready"] == 1


def test_each_request_is_logged_as_one_json_line_without_its_body(server: Server) -> None:
    marker = 1.2345678
    assert server.predict({"inputs": {"features": [[marker, 0.0, 0.0, 0.0]]}})[0] == 200

    def predict_logged() -> list[dict[str, Any]]:  # the line is written just after the answer is sent
        records = [r for r in server.log_records() if r["event"] == "request"]
        return records if records[-1]["method"] == "POST" else []

    last = wait_for(predict_logged, "the request to be logged")[-1]
    assert (last["method"], last["path"], last["status"], last["error"]) == ("POST", "/v1/predict", 200, None)
    assert last["bytes_in"] > 0 and last["ms"] >= 0
    assert str(marker) not in server.log.read_text()


def test_serving_writes_no_file_not_even_onnxruntime_telemetry(server: Server) -> None:
    assert server.predict({"inputs": {"features": ROWS}})[0] == 200
    assert server.metrics()["airgap_ready"] == 1
    assert list(server.sandbox.rglob("*")) == []


def test_readyz_and_predict_answer_503_until_the_warm_up_succeeds(tmp_path: Path) -> None:
    # A FIFO as the golden file holds the warm-up back, for real, until the test writes the case into it.
    fifo = tmp_path / "golden.json"
    os.mkfifo(fifo)
    with serving(tmp_path, golden=fifo) as running:
        assert running.get_json("/healthz") == (200, {"status": "ok"})
        status, answer = running.get_json("/readyz")
        assert (status, answer["error"]["code"]) == (503, "not_ready")
        status, answer = running.predict({"inputs": {"features": ROWS}})
        assert (status, answer["error"]["code"]) == (503, "not_ready")
        assert running.metrics()["airgap_ready"] == 0

        def open_writer() -> int | None:
            try:
                return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO until the server opens it
            except OSError:
                return None

        fd = wait_for(open_writer, "the server to open the golden file")
        os.set_blocking(fd, True)
        os.write(fd, GOLDEN.read_bytes())
        os.close(fd)
        wait_until_ready(running)
        status, answer = running.predict({"inputs": {"features": ROWS}})
        assert status == 200
        assert_outputs_match(answer["outputs"], ROWS)
        assert running.stop() == 0


def test_sigterm_answers_the_in_flight_request_then_exits_zero(tmp_path: Path) -> None:
    body = json.dumps({"inputs": {"features": ROWS}}).encode()
    head = b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
    with serving(tmp_path) as running:
        wait_until_ready(running)
        sock = socket.create_connection(("127.0.0.1", running.port), timeout=10)
        sock.sendall(head + body[:10])  # the request is in flight: the server waits for the rest
        idle = socket.create_connection(("127.0.0.1", running.port), timeout=10)  # sends nothing, ever
        wait_for(
            lambda: running.metrics()["airgap_requests_in_flight"] == 2,  # it, and this scrape
            "the server to start on the request",
        )
        running.proc.send_signal(signal.SIGTERM)

        def refuses_connections() -> bool:
            try:
                socket.create_connection(("127.0.0.1", running.port), timeout=1).close()
                return False
            except (ConnectionRefusedError, ConnectionResetError):  # reset: it was in the closed backlog
                return True

        wait_for(refuses_connections, "the server to stop accepting connections")
        sock.sendall(body[10:])
        status, answer = read_response(sock)
        answered = time.monotonic()
        assert status == 200, answer
        assert_outputs_match(answer["outputs"], ROWS)
        assert running.proc.wait(timeout=5) == 0
        assert time.monotonic() - answered < 3  # the idle connection, still open, did not hold the exit
        sock.close()
        idle.close()
    stopped = [r for r in running.log_records() if r["event"] == "stopped"]
    assert stopped == [{**stopped[0], "exit_code": 0, "abandoned_requests": 0}]


def test_serve_exits_2_with_a_fatal_log_line_when_the_model_is_not_onnx(tmp_path: Path) -> None:
    junk = tmp_path / "model.onnx"
    junk.write_bytes(b"\x00" * 64)
    env = {**os.environ, "AIRGAP_HOST": "127.0.0.1", "AIRGAP_PORT": "0", "AIRGAP_MODEL_PATH": str(junk)}
    proc = subprocess.run([sys.executable, str(SERVER)], capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == 2, proc.stderr
    records = [json.loads(line) for line in proc.stderr.splitlines()]
    fatal = [r["message"] for r in records if r["event"] == "fatal"]
    assert len(fatal) == 1 and fatal[0].startswith("not an ONNX model"), fatal
    assert records[-1]["event"] == "stopped"


# ---------------------------------------------------------------------------------------------------
# check mode


def run_check(*args: str, sandbox: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SERVER), "check", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=sandbox_env(sandbox) if sandbox else None,
        cwd=sandbox,
    )


def test_check_prints_the_contract_and_the_outputs_onnxruntime_computes(tmp_path: Path) -> None:
    proc = run_check("--model", str(MODEL), "--golden", str(GOLDEN), sandbox=tmp_path / "sandbox")
    assert proc.returncode == 0, proc.stderr
    assert list((tmp_path / "sandbox").rglob("*")) == []  # no file written, telemetry included
    report = json.loads(proc.stdout)
    assert report["onnxruntime"] == ort.__version__
    assert report["opset"] == {"ai.onnx": 13}
    assert report["ir_version"] == 8
    assert report["inputs"] == [{"name": "features", "shape": ["batch", 4], "dtype": "float32"}]
    assert report["outputs"] == [
        {"name": "probabilities", "shape": ["batch", 3], "dtype": "float32"},
        {"name": "label", "shape": ["batch"], "dtype": "int64"},
    ]
    cases = json.loads(GOLDEN.read_text())["cases"]
    assert (
        [c["name"] for c in report["cases"]]
        == [c["name"] for c in cases]
        == [
            "single_row",
            "pair",
            "batch_of_four",
        ]
    )
    for case, result in zip(cases, report["cases"]):
        assert_outputs_match(result["outputs"], case["inputs"]["features"])


def test_check_refuses_a_file_that_is_not_onnx_with_exit_2_and_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "model.onnx"
    fake.write_text("<html>404 Not Found</html>\n")
    line = assert_one_line_error(run_check("--model", str(fake)), 2)
    assert line.startswith("not an ONNX model")


def test_check_refuses_a_golden_case_that_does_not_fit_the_model_with_exit_2(tmp_path: Path) -> None:
    golden = tmp_path / "golden.json"
    golden.write_text(
        json.dumps({"cases": [{"name": "three_features", "inputs": {"features": [[1, 2, 3]]}}]})
    )
    line = assert_one_line_error(run_check("--model", str(MODEL), "--golden", str(golden)), 2)
    assert "three_features" in line and "must be 4" in line


def test_check_refuses_fractions_for_an_integer_input(tmp_path: Path) -> None:
    onnx = require_onnx()
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["ids"], ["same"])],
        "ids",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 2])],
        [helper.make_tensor_value_info("same", TensorProto.INT64, ["batch", 2])],
    )
    model = tmp_path / "ids.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), model)
    golden = tmp_path / "golden.json"
    golden.write_text(json.dumps({"cases": [{"name": "whole", "inputs": {"ids": [[1, -2]]}}]}))
    proc = run_check("--model", str(model), "--golden", str(golden))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["cases"] == [{"name": "whole", "outputs": {"same": [[1, -2]]}}]
    golden.write_text(json.dumps({"cases": [{"name": "fraction", "inputs": {"ids": [[1, 2.5]]}}]}))
    line = assert_one_line_error(run_check("--model", str(model), "--golden", str(golden)), 2)
    assert "int64" in line and "ids[0][1]" in line


# ---------------------------------------------------------------------------------------------------
# The example model


def require_onnx() -> Any:
    """The onnx package builds models in these tests; the server itself never needs it."""
    if importlib.util.find_spec("onnx") is None:
        pytest.fail("these tests need the onnx package (pip install onnx)")
    import onnx

    return onnx


def test_make_model_is_deterministic_and_reproduces_the_committed_files(tmp_path: Path) -> None:
    require_onnx()
    outs = [tmp_path / "first", tmp_path / "second"]
    procs = [
        subprocess.Popen(
            [sys.executable, str(EXAMPLE / "make_model.py"), "--out", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for out in outs
    ]
    for proc in procs:
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr.decode()
    for name in ("classifier.onnx", "golden.json", "reference.csv", "acceptance.csv"):
        committed = (EXAMPLE / "model" / name).read_bytes()
        assert [(out / name).read_bytes() == committed for out in outs] == [True, True], name


def test_a_client_under_load_reuses_one_connection_for_many_requests(server: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.connect()
        sock = conn.sock
        for _ in range(5):
            conn.request(
                "POST",
                "/v1/predict",
                json.dumps({"inputs": {"features": ROWS}}),
                {"Content-Type": "application/json"},
            )
            response = conn.getresponse()
            assert response.status == 200
            assert response.getheader("Connection") != "close"
            response.read()
            assert conn.sock is sock, "the server closed a keep-alive connection"
        conn.request("GET", "/healthz", headers={"Connection": "close"})
        response = conn.getresponse()
        assert response.getheader("Connection") == "close"
        response.read()
    finally:
        conn.close()


def test_a_refusal_with_an_unread_body_closes_the_connection(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (MAX_REQUEST_BYTES + 1)
        )
        received = read_until_closed(sock)  # times out unless the server closes the connection
    assert received.startswith(b"HTTP/1.1 413 ")
