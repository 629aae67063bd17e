"""Models saved with ONNX external data: the graph in ``model.onnx``, the weights beside it.

airgap reads the references from the graph without loading a weight, carries every file they
name, and refuses, before any slow phase, a reference that escapes the model's directory, names a
missing file or claims more bytes than the file has. The engine test bundles such a model as a
model directory, verifies it, and installs it to Docker and to a virtualenv, where it answers its
golden inputs.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BASE_IMAGE, assert_one_line_error, run_airgap
from tests.external_models import GOLDEN, external_project, set_location

REFUSE_WITHIN = 5.0  # seconds: a refusal comes before any slow phase


@pytest.fixture
def project(tmp_path: Path, external_model: Path) -> Path:
    return external_project(tmp_path, BASE_IMAGE, external_model)


def refused_quickly(project: Path) -> str:
    started = time.monotonic()
    proc = run_airgap("bundle", str(project))
    elapsed = time.monotonic() - started
    line = assert_one_line_error(proc, 4)
    assert elapsed < REFUSE_WITHIN, (elapsed, line)
    assert "[" not in proc.stderr.split("project: failed")[-1], "no phase after the project ran"
    return line


def test_external_references_are_read_from_the_graph_as_onnx_wrote_them(external_model: Path) -> None:
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

    from airgap.core.onnx_external import external_tensors

    proto = onnx.load_model(str(external_model / "model.onnx"), load_external_data=False)
    theirs = [
        (t.name, ExternalDataInfo(t).location, ExternalDataInfo(t).offset, ExternalDataInfo(t).length)
        for t in _get_all_tensors(proto)
        if uses_external_data(t)
    ]
    with open(external_model / "model.onnx", "rb") as f:
        ours = external_tensors(f, os.fstat(f.fileno()).st_size)
    assert [(t.name, t.location, t.offset, t.length) for t in ours] == theirs
    assert len(ours) == 2 and all(t.length == t.expected_length for t in ours)


def test_a_location_that_escapes_the_model_directory_is_refused_in_seconds(
    project: Path, tmp_path: Path
) -> None:
    shutil.copy(project / "model" / "model.onnx.data", tmp_path / "outside.bin")
    set_location(project / "model" / "model.onnx", "../../outside.bin")
    line = refused_quickly(project)
    assert "'../../outside.bin' escapes the model's directory" in line


def test_an_absolute_location_is_refused_in_seconds(project: Path) -> None:
    set_location(project / "model" / "model.onnx", str(project / "model" / "model.onnx.data"))
    assert "is an absolute path" in refused_quickly(project)


def test_a_data_file_linked_from_outside_the_model_directory_is_refused(
    project: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere.bin"
    shutil.move(project / "model" / "model.onnx.data", outside)
    (project / "model" / "model.onnx.data").symlink_to(outside)
    assert "escapes the model's directory" in refused_quickly(project)


def test_a_missing_data_file_is_refused_in_seconds(project: Path) -> None:
    (project / "model" / "model.onnx.data").unlink()
    line = refused_quickly(project)
    assert "references external data model.onnx.data, which does not exist" in line


def test_a_data_file_shorter_than_offset_plus_length_is_refused(project: Path) -> None:
    data = project / "model" / "model.onnx.data"
    with open(data, "r+b") as f:
        f.truncate(data.stat().st_size - 4)
    line = refused_quickly(project)
    assert "up to byte 3670016, but the file has 3670012 bytes" in line


def test_a_model_directory_with_two_graphs_must_name_one(project: Path) -> None:
    shutil.copy(project / "model" / "model.onnx", project / "model" / "other.onnx")
    line = refused_quickly(project)
    assert "holds 2 .onnx files (model.onnx, other.onnx)" in line and "model.graph" in line


def test_a_model_file_named_as_airgap_s_own_is_refused(project: Path) -> None:
    (project / "model" / "contract.json").write_text("{}")
    assert "model/contract.json is a name airgap writes itself" in refused_quickly(project)


def test_a_broken_link_in_the_model_directory_is_refused_before_anything_slow(project: Path) -> None:
    (project / "model" / "vocab.txt").symlink_to(project / "model" / "gone.txt")
    assert "model/vocab.txt is not a regular file" in refused_quickly(project)


# --- engine tier: bundled, verified, installed to Docker and a virtualenv --------------------------


@pytest.mark.docker
def test_an_external_data_model_bundles_verifies_and_answers_its_golden_inputs_in_docker_and_a_venv(
    external_bundle: dict[str, Any], external_model: Path, signing_key: Path, tmp_path: Path
) -> None:
    import hashlib

    import numpy as np
    import onnxruntime as ort

    bundle_file = external_bundle["bundle"]
    data = (external_model / "model.onnx.data").read_bytes()
    model = external_bundle["record"]["model"]
    assert model["file"] == "model/model.onnx"
    assert model["external_data"] == [
        {"file": "model/model.onnx.data", "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    ]
    with tarfile.open(bundle_file) as tar:
        raw = tar.extractfile("bundle/manifest.json")
        assert raw is not None
        signed = {f["path"]: f for f in json.loads(raw.read())["files"]}
    # every file of the model directory is in the signed manifest, with its hash
    tokenizer = (external_bundle["staging"] / "model" / "tokenizer.json").read_bytes()
    for path, content in (("model/model.onnx.data", data), ("model/tokenizer.json", tokenizer)):
        entry = signed[path]
        assert entry.get("content", entry)["sha256"] == hashlib.sha256(content).hexdigest(), path

    # The golden outputs were recorded in the image with the weights: they are this model's answers.
    session = ort.InferenceSession(str(external_model / "model.onnx"), providers=["CPUExecutionProvider"])
    contract = json.loads((external_bundle["staging"] / "model" / "contract.json").read_text())
    expected = [
        session.run(None, {"features": np.array(case["inputs"]["features"], np.float32)})[0]
        for case in GOLDEN["cases"]
    ]
    assert len(contract["cases"]) == len(expected)
    for case, answer in zip(contract["cases"], expected):
        np.testing.assert_allclose(np.array(case["outputs"]["scores"]), answer, rtol=1e-4, atol=1e-5)

    state = tmp_path / "state"
    assert (
        run_airgap(
            "keys", "trust", str(signing_key.with_suffix(".pub")), "--state-dir", str(state)
        ).returncode
        == 0
    )
    far = ("--state-dir", str(state))
    verified = run_airgap("--json", "verify", str(bundle_file), *far)
    assert verified.returncode == 0, verified.stderr
    try:
        for target, port in (("docker", 18281), ("venv", 18282)):
            proc = run_airgap(
                "--json", "install", str(bundle_file), "--to", target, "--port", str(port), *far, timeout=600
            )
            assert proc.returncode == 0, f"{target}: {proc.stdout} {proc.stderr}"
            doc = json.loads(proc.stdout)
            assert doc["target"] == target
            np.testing.assert_allclose(
                doc["prediction"]["outputs"]["scores"], expected[0], rtol=1e-4, atol=1e-5
            )
            smoke = run_airgap("--json", "smoke", "external-weights", "--to", target, *far)
            assert smoke.returncode == 0, f"{target}: {smoke.stdout} {smoke.stderr}"
    finally:
        for target in ("docker", "venv"):
            run_airgap("uninstall", "external-weights", "--to", target, *far)
