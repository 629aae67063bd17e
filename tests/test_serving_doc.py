"""docs/serving.md against the running model server: every route, status, error code and metric the
page names exists and answers as the page says, and the page names every one the server has."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import sklmodels
from tests.test_server import (
    GOLDEN,
    MAX_BATCH,
    MAX_REQUEST_BYTES,
    ROWS,
    SERVER,
    Server,
    raw_exchange,
    serving,
    wait_for,
    wait_until_ready,
)
from tests.test_smoke_models import record

DOC = Path(__file__).resolve().parent.parent / "docs" / "serving.md"
EXAMPLE_MODEL = Path(__file__).resolve().parent.parent / "examples" / "tabular" / "model"


def section(title: str) -> str:
    text = DOC.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def table(title: str) -> list[list[str]]:
    """The rows of the first table in a section, cells stripped, header and rule dropped."""
    rows = [line for line in section(title).splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def documented_routes() -> dict[str, str]:
    return {path.strip("`"): method for method, path, _ in table("Routes")}


def documented_errors() -> dict[str, int]:
    return {code.strip("`"): int(status) for status, code, _ in table("Errors")}


def server_error_codes() -> set[str]:
    """Every error code the server's source can answer with."""
    return set(re.findall(r'ApiError\(\s*(?:\d+|code),\s*"([a-z_]+)"', SERVER.read_text()))


def example_contract(directory: Path) -> Path:
    """The example's data contract, derived from its reference data as `bundle` derives it."""
    from airgap.core.datacontract import derive, read_csv

    header, rows = read_csv((EXAMPLE_MODEL / "reference.csv").read_text(), "reference.csv")
    path = directory / "data-contract.json"
    path.write_text(json.dumps(derive(header, rows, "features").to_json()))
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("doc")
    with serving(directory, contract=example_contract(directory)) as running:
        wait_until_ready(running)
        yield running
        assert running.stop() == 0


def test_the_page_names_exactly_the_servers_routes_and_error_codes() -> None:
    from_source = dict(re.findall(r'"(/[a-z0-9/]+)": "(GET|POST)"', SERVER.read_text()))
    assert documented_routes() == from_source
    assert set(documented_errors()) == server_error_codes()


def test_every_documented_route_answers_200_with_its_method(server: Server) -> None:
    for path, method in documented_routes().items():
        body = json.dumps({"inputs": {"features": ROWS}}).encode() if method == "POST" else None
        status, headers, payload = server.request(method, path, body, {"Content-Type": "application/json"})
        assert status == 200, (path, payload)
        if path == "/metrics":
            assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        else:
            assert headers["Content-Type"] == "application/json"
    assert server.get_json("/healthz") == (200, {"status": "ok"})
    ready = server.get_json("/readyz")[1]
    assert ready == {"status": "ready", "model_version": "2024.06.1", "instance": ready["instance"]}


def test_the_documented_response_schema(server: Server) -> None:
    status, answer = server.predict({"inputs": {"features": ROWS}})
    assert status == 200
    assert set(answer) == {"model", "model_version", "outputs"}
    assert set(answer["outputs"]) == {"probabilities", "label"}


def _post(server: Server, body: Any) -> tuple[int, dict[str, Any]]:
    return server.predict(body)


def _raw(server: Server, data: bytes) -> tuple[int, dict[str, Any]]:
    return raw_exchange(server.port, data)


TRIGGERS: dict[str, Callable[[Server], tuple[int, dict[str, Any]]]] = {
    "bad_json": lambda s: _post(s, b"{not json"),
    "bad_shape": lambda s: _post(s, {"inputs": {"features": [[1.0, 2.0, 3.0]]}}),
    "bad_dtype": lambda s: _post(s, {"inputs": {"features": [["a", 2.0, 3.0, 4.0]]}}),
    "unknown_input": lambda s: _post(s, {"inputs": {"features": ROWS, "extra": [[1.0]]}}),
    "missing_input": lambda s: _post(s, {"inputs": {}}),
    "batch_too_large": lambda s: _post(s, {"inputs": {"features": [ROWS[0]] * (MAX_BATCH + 1)}}),
    "out_of_contract": lambda s: _post(s, {"inputs": {"features": [[0.5, 9.5, 0.0, 0.0]]}}),
    "bad_request": lambda s: _raw(s, b"POST /v1/predict HTTP/1.1\r\nContent-Length: lots\r\n\r\n"),
    "not_found": lambda s: s.get_json("/nowhere"),
    "method_not_allowed": lambda s: s.get_json("/v1/predict"),
    "length_required": lambda s: _raw(s, b"POST /v1/predict HTTP/1.1\r\nHost: t\r\n\r\n"),
    "too_large": lambda s: _raw(
        s, b"POST /v1/predict HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_REQUEST_BYTES + 1)
    ),
}
NOT_TRIGGERED_HERE = {
    "not_ready": "test_not_ready_is_503_on_readyz_and_predict_until_the_warm_up",
    "overloaded": "test_oip.py::test_a_full_queue_answers_503_with_retry_after",
    "unknown_output": "test_oip.py::test_a_malformed_infer_request_is_refused_with_a_code_and_the_fix",
    "internal": "a bug: no request is meant to reach it",
}


def test_every_documented_error_answers_its_status_and_code(server: Server) -> None:
    documented = documented_errors()
    assert set(TRIGGERS) | set(NOT_TRIGGERED_HERE) == set(documented)
    for code, trigger in TRIGGERS.items():
        status, answer = trigger(server)
        assert (status, answer["error"]["code"]) == (documented[code], code), answer
        assert set(answer) == {"error"} and set(answer["error"]) == {"code", "message"}
        assert answer["error"]["message"] and "\n" not in answer["error"]["message"]


def test_not_ready_is_503_on_readyz_and_predict_until_the_warm_up(tmp_path: Path) -> None:
    fifo = tmp_path / "golden.json"
    os.mkfifo(fifo)  # the warm-up waits for its golden case until the test writes it
    with serving(tmp_path, golden=fifo) as running:
        expected = (documented_errors()["not_ready"], "not_ready")
        status, answer = running.get_json("/readyz")
        assert (status, answer["error"]["code"]) == expected
        status, answer = running.predict({"inputs": {"features": ROWS}})
        assert (status, answer["error"]["code"]) == expected

        def open_writer() -> int | None:
            try:
                return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                return None

        fd = wait_for(open_writer, "the server to open the golden file")
        os.set_blocking(fd, True)
        os.write(fd, GOLDEN.read_bytes())
        os.close(fd)
        wait_until_ready(running)
        assert running.stop() == 0


def test_a_route_with_another_method_names_the_right_one_in_allow(server: Server) -> None:
    for path, method in documented_routes().items():
        other = "GET" if method == "POST" else "POST"
        status, headers, _ = server.request(other, path, b"{}" if other == "POST" else None)
        assert (status, headers.get("Allow")) == (405, method)


def test_every_documented_metric_is_exposed_with_its_type_and_no_other(server: Server) -> None:
    documented = {name.strip("`"): kind for name, kind, _, _ in table("Metrics")}
    _, _, body = server.request("GET", "/metrics")
    exposed = dict(re.findall(r"^# TYPE (\S+) (\S+)$", body.decode(), re.MULTILINE))
    assert exposed == documented


def test_the_curl_example_on_the_page_works(server: Server) -> None:
    assert shutil.which("curl"), "curl is needed: apt-get install -y curl"
    [line] = [ln for ln in DOC.read_text().split("\n## ")[0].splitlines() if ln.startswith("curl ")]
    line = line.replace("127.0.0.1:8080", f"127.0.0.1:{server.port}")
    proc = subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads(proc.stdout)["outputs"]) == {"probabilities", "label"}


def test_the_zipmap_example_has_the_documented_shape(tmp_path: Path) -> None:
    built = sklmodels.build("zipmap", tmp_path / "model")
    contract = record(built)
    with serving(tmp_path, built.golden, built.model) as running:
        wait_until_ready(running)
        status, answer = running.predict({"inputs": contract["cases"][1]["inputs"]})
        assert running.stop() == 0
    assert status == 200
    probabilities = answer["outputs"]["output_probability"]
    assert isinstance(answer["outputs"]["output_label"][0], int)
    assert all(list(row) == ["0", "1", "2"] for row in probabilities)
    example = section("`POST /v1/predict`")
    assert '"output_probability": [{"0": ' in example
