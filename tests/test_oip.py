"""The Open Inference Protocol v2 beside /v1, as the ecosystem's own client meets it.

tritonclient (Triton's HTTP client, which KServe and MLServer users already have) calls the server: a
real process on loopback in the fast tier, and the server each target installs from the session's
bundle in the engine tier. The protocol's parsing and encoding are also tested in-process, where
every malformed request can be named.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import run_airgap

# the session bundle on its USB stick, and a far side that uninstalls what it installed
from tests.test_install import far_side, install, media  # noqa: F401
from tests.test_server import (
    GOLDEN,
    MAX_BATCH,
    ROWS,
    SERVER,
    Server,
    oracle,
    serving,
    wait_for,
    wait_until_ready,
)

MODEL_NAME = "tabular"
VERSION = "2024.06.1"
INSIDE = [[0.63, -0.65, -1.16, 0.86], [-0.59, 0.03, 0.81, -0.01]]  # rows of the reference data
OUTSIDE = [0.64, 42.0, 1.97, -0.71]  # pressure 42: far above the contract's maximum


def load_server_module() -> Any:
    """The server's source as a module, to test the protocol's logic without HTTP."""
    spec = importlib.util.spec_from_file_location("airgap_server_under_test", SERVER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def srv() -> Any:
    return load_server_module()


@pytest.fixture(scope="module")
def model(srv: Any) -> Any:
    return srv.Model(str(SERVER.parents[2] / "examples" / "tabular" / "model" / "classifier.onnx"), 1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from tests.test_serving_doc import example_contract

    directory = tmp_path_factory.mktemp("oip")
    with serving(directory, contract=example_contract(directory)) as running:
        wait_until_ready(running)
        yield running
        assert running.stop() == 0


@contextlib.contextmanager
def serving_with(directory: Path, **settings: str) -> Iterator[Server]:
    """A server started with extra AIRGAP_* settings in its environment."""
    saved = dict(os.environ)
    os.environ.update(settings)
    try:
        context = serving(directory)
        running = context.__enter__()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        wait_until_ready(running)
        yield running
    finally:
        context.__exit__(None, None, None)


def reference_rows(count: int) -> list[list[float]]:
    with (SERVER.parents[2] / "examples" / "tabular" / "model" / "reference.csv").open() as f:
        return [[float(x) for x in row] for row in list(csv.reader(f))[1 : count + 1]]


def client(port: int) -> Any:
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(
        url=f"127.0.0.1:{port}", connection_timeout=10, network_timeout=10
    )


def infer(port: int, rows: list[list[float]], binary: bool, model_name: str = MODEL_NAME) -> Any:
    import tritonclient.http as httpclient

    tensor = httpclient.InferInput("features", [len(rows), 4], "FP32")
    tensor.set_data_from_numpy(np.array(rows, dtype=np.float32), binary_data=binary)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("probabilities", "label")]
    return client(port).infer(model_name, [tensor], outputs=outputs, request_id="r-1")


def assert_triton_answers_like_onnxruntime(
    port: int, rows: list[list[float]], name: str = MODEL_NAME, version: str = VERSION
) -> None:
    triton = client(port)
    assert triton.is_server_live() and triton.is_server_ready()
    metadata = triton.get_model_metadata(name)
    assert metadata["name"] == name and triton.is_model_ready(name)
    assert metadata["versions"] == [version]
    assert metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    for binary in (True, False):
        result = infer(port, rows, binary, name)
        probabilities, label = oracle(rows)
        np.testing.assert_array_equal(result.as_numpy("probabilities"), probabilities)
        np.testing.assert_array_equal(result.as_numpy("label"), label)
        response = result.get_response()
        assert (response["model_name"], response["model_version"], response["id"]) == (name, version, "r-1")


# ---------------------------------------------------------------------------------------------------
# tritonclient against the server process


def test_tritonclient_reads_health_and_metadata_and_infers_with_binary_and_json_tensors(
    server: Server,
) -> None:
    assert_triton_answers_like_onnxruntime(server.port, INSIDE)
    assert client(server.port).get_model_metadata(MODEL_NAME, VERSION)["name"] == MODEL_NAME


def test_a_v2_row_outside_the_data_contract_is_refused_as_on_v1(server: Server) -> None:
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as refused:
        infer(server.port, [INSIDE[0], OUTSIDE], binary=True)
    status, v1 = server.predict({"inputs": {"features": [INSIDE[0], OUTSIDE]}})
    assert (status, v1["error"]["code"]) == (400, "out_of_contract")
    assert refused.value.message() == v1["error"]["message"]
    assert refused.value.status() == "400"


def test_v2_unknown_model_or_version_is_404_and_not_ready_is_refused(server: Server, tmp_path: Path) -> None:
    from tritonclient.utils import InferenceServerException

    triton = client(server.port)
    assert not triton.is_model_ready("other")
    assert not triton.is_model_ready(MODEL_NAME, "0.0.1")
    with pytest.raises(InferenceServerException) as missing:
        infer(server.port, INSIDE, binary=False, model_name="other")
    assert missing.value.status() == "404" and "tabular version 2024.06.1" in missing.value.message()
    # a FIFO golden file holds the warm-up back: live, not ready, and infer refused with 503
    fifo = tmp_path / "golden.json"
    os.mkfifo(fifo)
    with serving(tmp_path, golden=fifo) as loading:
        triton = client(loading.port)
        assert triton.is_server_live() and not triton.is_server_ready()
        with pytest.raises(InferenceServerException) as early:
            infer(loading.port, INSIDE, binary=True)
        assert early.value.status() == "503"
        loading.proc.send_signal(signal.SIGTERM)
        assert loading.proc.wait(timeout=10) == 0


def test_requests_queued_while_the_model_runs_are_batched_and_each_gets_its_own_rows(tmp_path: Path) -> None:
    """64 requests at once, the first made to wait 300 ms for company: fewer runs than requests,
    and the answers split back by rows are each request's own."""
    import concurrent.futures

    rows = reference_rows(64)
    with serving_with(tmp_path, AIRGAP_BATCH_WAIT_MS="300", AIRGAP_MAX_BATCH="64") as running:
        before = running.metrics()

        def one(i: int) -> tuple[int, Any]:
            return running.predict({"inputs": {"features": [rows[i]]}})

        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            answers = list(pool.map(one, range(64)))
        after = running.metrics()
    probabilities, label = oracle(rows)
    for i, (status, answer) in enumerate(answers):
        assert status == 200, answer
        assert answer["outputs"]["label"] == [int(label[i])]
        np.testing.assert_allclose(answer["outputs"]["probabilities"][0], probabilities[i], rtol=1e-6)
    runs = after["airgap_inference_seconds_count"] - before["airgap_inference_seconds_count"]
    assert 1 <= runs < 64


def test_a_full_queue_answers_503_with_retry_after(tmp_path: Path) -> None:
    """AIRGAP_MAX_QUEUE=1 with a request held back: the next is refused at once, not queued."""
    from tests.test_server import read_response

    # the first request waits a second for company before it runs
    with serving_with(tmp_path, AIRGAP_MAX_QUEUE="1", AIRGAP_BATCH_WAIT_MS="1000") as running:
        body = json.dumps({"inputs": {"features": ROWS}}).encode()
        head = b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as held:
            held.sendall(head + body)
            wait_for(
                lambda: running.metrics()["airgap_requests_in_flight"] == 2, "the first request to queue"
            )
            status, headers, payload = running.request("POST", "/v1/predict", body)
            assert (status, json.loads(payload)["error"]["code"], headers["Retry-After"]) == (
                503,
                "overloaded",
                "1",
            )
            assert read_response(held)[0] == 200  # the held one is answered after its wait


def test_a_client_that_leaves_before_its_answer_is_counted(server: Server) -> None:
    before = server.metrics().get("airgap_client_disconnects_total", 0.0)
    body = json.dumps({"inputs": {"features": ROWS}}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:5]
        )
        wait_for(lambda: server.metrics()["airgap_requests_in_flight"] == 2, "the request to start")
    wait_for(
        lambda: server.metrics()["airgap_client_disconnects_total"] == before + 1,
        "the disconnect to be counted",
    )


def test_a_second_instance_binds_the_same_port_and_reports_its_own_instance(
    server: Server, tmp_path: Path
) -> None:
    """SO_REUSEPORT: during a promote on host networking the new version listens beside the old."""
    env = {
        **os.environ,
        "AIRGAP_HOST": "127.0.0.1",
        "AIRGAP_PORT": str(server.port),
        "AIRGAP_MODEL_PATH": str(SERVER.parents[2] / "examples" / "tabular" / "model" / "classifier.onnx"),
        "AIRGAP_GOLDEN_PATH": str(GOLDEN),
        "AIRGAP_DATA_CONTRACT_PATH": str(tmp_path / "none.json"),
    }
    log = tmp_path / "second.log"
    with log.open("wb") as stderr:
        second = subprocess.Popen(
            [sys.executable, str(SERVER)], stderr=stderr, stdout=subprocess.DEVNULL, env=env
        )
    try:

        def instances() -> set[str] | None:
            assert second.poll() is None, log.read_text()
            seen = {server.get_json("/readyz")[1].get("instance") for _ in range(20)} - {None}
            return seen if len(seen) == 2 else None

        assert len(wait_for(instances, "both instances to answer on one port", timeout=30)) == 2
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=15) == 0


# ---------------------------------------------------------------------------------------------------
# The protocol's logic, in-process


def binary_request(doc: dict[str, Any], *chunks: bytes) -> tuple[bytes, str]:
    header = json.dumps(doc).encode()
    return header + b"".join(chunks), str(len(header))


def test_binary_tensors_are_read_little_endian_after_the_json_header(srv: Any, model: Any) -> None:
    data = np.array(INSIDE, dtype="<f4")
    body, length = binary_request(
        {
            "inputs": [
                {
                    "name": "features",
                    "shape": [2, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": data.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        },
        data.tobytes(),
    )
    inputs, requested, binary_default, _ = srv.v2_parse_request(body, length, model)
    assert requested is None and binary_default is True
    feeds = model.prepare(inputs, MAX_BATCH)
    np.testing.assert_array_equal(feeds["features"], data)
    payload, content_type, headers = srv.v2_encode_response(model, model.run(feeds), None, True, {})
    size = int(dict(headers)["Inference-Header-Content-Length"])
    header = json.loads(payload[:size])
    assert content_type == "application/octet-stream"
    first = header["outputs"][0]
    assert first["name"] == "probabilities" and first["shape"] == [2, 3]
    raw = payload[size : size + first["parameters"]["binary_data_size"]]
    np.testing.assert_array_equal(np.frombuffer(raw, "<f4").reshape(2, 3), oracle(INSIDE)[0])


@pytest.mark.parametrize(
    ("doc", "binary", "length", "code", "mentions"),
    [
        (
            {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]},
            b"",
            None,
            "bad_dtype",
            "send datatype FP32",
        ),
        (
            {"inputs": [{"name": "features", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
            b"",
            None,
            "bad_shape",
            "needs 8",
        ),
        (
            {"inputs": [{"name": "nope", "shape": [1], "datatype": "FP32", "data": [1]}]},
            b"",
            None,
            "unknown_input",
            "'features'",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "features",
                        "shape": [1, 4],
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": 16},
                    }
                ]
            },
            b"\x00" * 8,
            "auto",
            "bad_request",
            "runs past",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "features",
                        "shape": [1, 4],
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": 16},
                    }
                ]
            },
            np.array([1, np.inf, 0, 0], "<f4").tobytes(),
            "auto",
            "bad_dtype",
            "infinity",
        ),
        (
            {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
            b"junk",
            "auto",
            "bad_request",
            "4 bytes of binary data follow",
        ),
        (
            {"inputs": [{"name": "features", "shape": [0, 4], "datatype": "FP32", "data": []}]},
            b"",
            None,
            "bad_shape",
            "no elements",
        ),
        (
            {
                "inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
                "outputs": [{"name": "logits"}],
            },
            b"",
            None,
            "unknown_output",
            "probabilities",
        ),
    ],
    ids=[
        "wrong_datatype",
        "data_shorter_than_shape",
        "unknown_input",
        "binary_short",
        "binary_inf",
        "binary_left_over",
        "empty",
        "unknown_output",
    ],
)
def test_a_malformed_infer_request_is_refused_with_a_code_and_the_fix(
    srv: Any, model: Any, doc: dict[str, Any], binary: bytes, length: str | None, code: str, mentions: str
) -> None:
    body, header_length = binary_request(doc, binary)
    with pytest.raises(srv.ApiError) as refused:
        srv.v2_parse_request(body, header_length if length == "auto" else None, model)
    assert (refused.value.status, refused.value.code) == (400, code)
    assert mentions in refused.value.message


def test_json_tensor_data_may_be_flat_or_nested_and_the_v1_checks_still_apply(srv: Any, model: Any) -> None:
    for data in ([1, 2, 3, 4, 5, 6, 7, 8], [[1, 2, 3, 4], [5, 6, 7, 8]]):
        doc = {"inputs": [{"name": "features", "shape": [2, 4], "datatype": "FP32", "data": data}]}
        inputs, _, _, _ = srv.v2_parse_request(json.dumps(doc).encode(), None, model)
        assert inputs == {"features": [[1, 2, 3, 4], [5, 6, 7, 8]]}
    doc = {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [1, "x", 3, 4]}]}
    inputs, _, _, _ = srv.v2_parse_request(json.dumps(doc).encode(), None, model)
    with pytest.raises(srv.ApiError) as refused:
        model.prepare(inputs, MAX_BATCH)
    assert refused.value.code == "bad_dtype" and "features[0][1]" in refused.value.message


def test_bytes_tensors_travel_length_prefixed(srv: Any) -> None:
    raw = b"".join(len(s).to_bytes(4, "little") + s for s in (b"red", b"", "gr\u00fcn".encode()))
    assert srv._decode_bytes_tensor(raw, 3, "colour") == ["red", "", "gr\u00fcn"]
    with pytest.raises(srv.ApiError):
        srv._decode_bytes_tensor(raw[:-1], 3, "colour")
    datatype, data, encoded = srv._v2_elements(np.array(["red", "", "gr\u00fcn"], dtype=object))
    assert (datatype, data, encoded) == ("BYTES", ["red", "", "gr\u00fcn"], raw)


# ---------------------------------------------------------------------------------------------------
# Every target's installed server, called by tritonclient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.docker
def test_tritonclient_calls_the_server_installed_on_docker(far_side: Path, media: Path) -> None:  # noqa: F811
    port = free_port()
    proc = install(far_side, media, "--to", "docker", "--port", str(port))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_installed_answers(port)


@pytest.mark.podman
def test_tritonclient_calls_the_server_installed_on_podman(far_side: Path, media: Path) -> None:  # noqa: F811
    port = free_port()
    proc = install(far_side, media, "--to", "podman", "--port", str(port))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_installed_answers(port)


@pytest.mark.docker
def test_tritonclient_calls_the_server_installed_in_a_venv(
    tmp_path: Path, clean_image_bundle: dict[str, Any]
) -> None:
    """The session's bundle for Debian 12's Python 3.11 (this host's) installs into a virtualenv."""
    state, port = tmp_path / "state", free_port()
    pub = clean_image_bundle["public_key"]
    assert run_airgap("keys", "trust", str(pub), "--state-dir", str(state)).returncode == 0
    proc = install(state, clean_image_bundle["bundle"], "--to", "venv", "--port", str(port))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    serve_line = json.loads(proc.stdout)["serve"]
    serve = subprocess.Popen(
        ["sh", "-c", serve_line], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        wait_for(lambda: _ready(port), "the venv server to be ready", timeout=60)
        assert_installed_answers(port)
    finally:
        os.killpg(serve.pid, signal.SIGTERM)  # the shell and the server it started
        serve.wait(timeout=20)
        run_airgap("uninstall", "tabular-classifier", "--to", "venv", "--state-dir", str(state))


def _ready(port: int) -> bool:
    try:
        return bool(client(port).is_server_ready())
    except Exception:
        return False


def assert_installed_answers(port: int) -> None:
    """The bundle's model through the protocol: its metadata, a binary and a JSON inference, and the
    signed data contract enforced on v2 inputs."""
    from tritonclient.utils import InferenceServerException

    assert_triton_answers_like_onnxruntime(port, INSIDE, "tabular-classifier", "1.0.0")
    with pytest.raises(InferenceServerException) as refused:
        infer(port, [OUTSIDE], binary=True, model_name="tabular-classifier")
    assert "(pressure) = 42 is above the contract's maximum" in refused.value.message()


def test_sigterm_under_load_answers_every_request_it_read_and_exits_zero(tmp_path: Path) -> None:
    """Eight keep-alive clients predicting when SIGTERM comes: every answer the server starts is a
    whole 200, none is cut off, and the process exits 0 with nothing abandoned."""
    import http.client
    import threading

    body = json.dumps({"inputs": {"features": INSIDE}})
    answered: list[int] = []
    broken: list[str] = []
    stop = threading.Event()

    def client(port: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while not stop.is_set():
            try:
                conn.request("POST", "/v1/predict", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
            except (ConnectionError, http.client.RemoteDisconnected):
                # keep-alive's race: the server closed this idle connection, or stopped listening,
                # before it read the request; the count below shows no request it read was lost
                return
            try:
                payload = response.read()
                answered.append(response.status)
                assert json.loads(payload)["outputs"]
            except Exception as exc:  # an answer cut off or malformed
                broken.append(repr(exc))
                return
            if response.getheader("Connection") == "close":
                return  # the server is stopping: this connection's last answer

    with serving(tmp_path) as running:
        wait_until_ready(running)
        threads = [threading.Thread(target=client, args=(running.port,)) for _ in range(8)]
        for t in threads:
            t.start()
        wait_for(lambda: len(answered) > 200, "the clients to get going")
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(timeout=15) == 0
        stop.set()
        for t in threads:
            t.join(timeout=15)
    assert broken == [] and set(answered) == {200}
    records = running.log_records()
    served = [
        r for r in records if r["event"] == "request" and r["status"] == 200 and r["path"] == "/v1/predict"
    ]
    assert len(served) == len(answered)  # every answer the server gave reached its client
    stopped = [r for r in records if r["event"] == "stopped"]
    assert stopped[0]["abandoned_requests"] == 0


def test_a_warn_mode_value_is_answered_over_http_with_the_contract_warning_header(tmp_path: Path) -> None:
    """A feature in warn mode lets an out-of-contract value through, and the answer says so, on /v1
    and on v2 alike; an enforced feature still refuses."""
    import tritonclient.http as httpclient

    from tests.test_serving_doc import example_contract

    contract = example_contract(tmp_path)
    doc = json.loads(contract.read_text())
    doc["features"][1]["mode"] = "warn"  # pressure
    contract.write_text(json.dumps(doc))
    with serving(tmp_path, contract=contract) as running:
        wait_until_ready(running)
        body = json.dumps({"inputs": {"features": [OUTSIDE]}}).encode()
        status, headers, _ = running.request(
            "POST", "/v1/predict", body, {"Content-Type": "application/json"}
        )
        assert (status, headers.get("Airgap-Contract-Warning")) == (200, "pressure=max")
        tensor = httpclient.InferInput("features", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.array([OUTSIDE], dtype=np.float32))
        result = client(running.port).infer(MODEL_NAME, [tensor])
        assert result.get_response()["outputs"]
        status, headers, _ = running.request(
            "POST",
            "/v2/models/tabular/infer",
            json.dumps(
                {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": OUTSIDE}]}
            ).encode(),
        )
        assert (status, headers.get("Airgap-Contract-Warning")) == (200, "pressure=max")
        status, _, _ = running.request(
            "POST", "/v1/predict", json.dumps({"inputs": {"features": [[99.0, 0.0, 0.0, 0.0]]}}).encode()
        )
        assert status == 400  # temperature is enforced
        assert running.stop() == 0
