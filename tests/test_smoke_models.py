"""The smoke comparison on real models: skl2onnx classifiers with and without ZipMap, string labels, a
multi-input pipeline with a string column, and a graph with a sequence of tensors, a bool tensor and
a NaN. The golden outputs are recorded by the model server's ``check`` (as the bundler does inside
the image), the answers come from the real server over HTTP, and core/smoke.py judges them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from airgap.core.smoke import Tolerance, compare_contract, compare_output
from tests import sklmodels
from tests.test_server import SERVER, serving, wait_until_ready

TOL = Tolerance(1e-4, 1e-5)


def record(built: sklmodels.Built) -> dict[str, Any]:
    """The contract as the bundler records it: the server's ``check`` output plus the golden inputs."""
    proc = subprocess.run(
        [sys.executable, str(SERVER), "check", "--model", str(built.model), "--golden", str(built.golden)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    inputs = {c["name"]: c["inputs"] for c in json.loads(built.golden.read_text())["cases"]}
    cases = [{"name": c["name"], "inputs": inputs[c["name"]], "outputs": c["outputs"]} for c in doc["cases"]]
    return {**doc, "tolerance": {"rtol": TOL.rtol, "atol": TOL.atol}, "cases": cases}


def answers_over_http(directory: Path, built: sklmodels.Built, contract: dict[str, Any]) -> dict[str, Any]:
    with serving(directory, built.golden, built.model) as server:
        wait_until_ready(server)
        answers = {}
        for case in contract["cases"]:
            status, body = server.predict({"inputs": case["inputs"]})
            assert status == 200, body
            answers[case["name"]] = body["outputs"]
        assert server.stop() == 0
    return answers


def onnxruntime_values(value: Any) -> Any:
    """onnxruntime's own Python values, arrays as lists: maps keep their int keys."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list):
        return [onnxruntime_values(v) for v in value]
    return value


@pytest.mark.parametrize("kind", sklmodels.KINDS)
def test_the_server_answers_what_was_recorded_for_every_output_kind(kind: str, tmp_path: Path) -> None:
    built = sklmodels.build(kind, tmp_path / "model")
    contract = record(built)
    answers = answers_over_http(tmp_path, built, contract)
    assert compare_contract(contract, answers) == []
    # The JSON answers equal onnxruntime's own values too, int map keys and NaN included.
    session = ort.InferenceSession(str(built.model), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    for case, feeds in zip(contract["cases"], built.feeds):
        for name, value in zip(names, session.run(None, feeds)):
            assert compare_output(name, answers[case["name"]][name], onnxruntime_values(value), TOL) is None


def test_zipmap_output_is_a_list_of_objects_with_string_keys_in_numeric_order(tmp_path: Path) -> None:
    contract = record(sklmodels.build("zipmap", tmp_path))
    outputs = {o["name"]: o for o in contract["outputs"]}
    assert outputs["output_probability"]["dtype"] == "seq(map(int64,tensor(float)))"
    probabilities = contract["cases"][1]["outputs"]["output_probability"]
    assert len(probabilities) == 3
    assert all(list(row) == ["0", "1", "2"] for row in probabilities)
    assert all(abs(sum(row.values()) - 1) < 1e-5 for row in probabilities)


def test_string_labels_come_back_as_strings(tmp_path: Path) -> None:
    contract = record(sklmodels.build("string_labels", tmp_path))
    first = contract["cases"][0]["outputs"]
    assert first["output_label"][0] in ("cat", "dog", "eel")
    assert set(first["output_probability"][0]) == {"cat", "dog", "eel"}


def test_sequence_bool_and_nan_outputs_are_valid_json(tmp_path: Path) -> None:
    contract = record(sklmodels.build("sequence_bool_nan", tmp_path))
    case = contract["cases"][0]["outputs"]
    assert case["pieces"] == [[[0.0, 1.5], [-2.0, 0.25]], [[0.0, 3.0], [-4.0, 0.5]]]
    assert case["positive"] == [[False, True], [False, True]]
    assert case["ratio"] == [["NaN", 1.0], [1.0, 1.0]]
    json.loads(json.dumps(contract, allow_nan=False))  # strict JSON: no bare NaN anywhere


def test_the_server_writes_the_same_bytes_for_the_same_answer(tmp_path: Path) -> None:
    built = sklmodels.build("string_labels", tmp_path / "model")
    first = subprocess.run(
        [sys.executable, str(SERVER), "check", "--model", str(built.model), "--golden", str(built.golden)],
        capture_output=True,
        timeout=120,
    )
    second = subprocess.run(
        [sys.executable, str(SERVER), "check", "--model", str(built.model), "--golden", str(built.golden)],
        capture_output=True,
        timeout=120,
    )
    assert first.returncode == 0 and first.stdout == second.stdout


@pytest.mark.parametrize("kind", sklmodels.KINDS)
def test_a_different_model_at_install_than_recorded_is_a_readable_difference(
    kind: str, tmp_path: Path
) -> None:
    """Model A's contract, model B's answers: the same kind, trained on other data."""
    contract = record(sklmodels.build(kind, tmp_path / "a"))
    other = sklmodels.build(kind, tmp_path / "b", variant=1)
    answers = answers_over_http(tmp_path, other, contract)
    mismatches = compare_contract(contract, answers)
    assert mismatches, "a different model must not pass the smoke test"
    line = mismatches[0].line()
    assert line.startswith(f"case {mismatches[0].case!r}, output {mismatches[0].output!r}: at [")
    assert "got " in line and "expected " in line
