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
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BASE_IMAGE, ROOT, assert_one_line_error, run_airgap
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
    # a phase line starts with its time ("[   7.6s] ..."); the refusal may quote a shape ("[batch, 4]")
    assert "\n[" not in proc.stderr.split("project: failed")[-1], "no phase after the project ran"
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


def test_golden_inputs_that_do_not_fit_an_external_data_model_are_refused_in_seconds(project: Path) -> None:
    golden = json.loads((project / "golden.json").read_text())
    golden["cases"][0]["inputs"]["features"] = [[1.0, 2.0, 3.0]]  # three features; the model takes four
    (project / "golden.json").write_text(json.dumps(golden))
    line = refused_quickly(project)
    assert "golden case 'one_row' does not fit the model" in line and "dimension 1 must be 4" in line
    assert "edit the golden inputs to match the model's inputs (features [batch, 4] float32)" in line


def _graph_input_models() -> dict[str, bytes]:
    """Graphs whose inputs onnxruntime reports in each of its ways: a negative size and an empty
    name (both dynamic), no shape, an input an initializer (dense or sparse) overrides, at IR 3
    and 8, and sequence, map and optional inputs."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    def model(
        nodes: list[Any], inputs: list[Any], outputs: list[Any], opsets: dict[str, int], **kw: Any
    ) -> bytes:
        graph = helper.make_graph(nodes, "g", inputs, outputs, **kw)
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
        proto.ir_version = 8
        return bytes(proto.SerializeToString())

    out = {}
    tensor = helper.make_tensor_value_info
    mixed = [
        tensor("x", TensorProto.FLOAT, [-1, 3]),
        tensor("y", TensorProto.INT64, ["", None]),
        tensor("z", TensorProto.STRING, None),
        tensor("w", TensorProto.FLOAT, [3]),
        tensor("b", TensorProto.BOOL, [2, 0, 5]),
    ]
    nodes = [
        helper.make_node("Add", ["x", "w"], ["o1"]),
        helper.make_node("Identity", ["y"], ["o2"]),
        helper.make_node("Identity", ["z"], ["o3"]),
        helper.make_node("Identity", ["b"], ["o4"]),
    ]
    outs = [tensor(n, t, None) for n, t in (("o1", 1), ("o2", 7), ("o3", 8), ("o4", 9))]
    w = numpy_helper.from_array(np.ones(3, np.float32), "w")
    for ir, opset in ((3, 8), (8, 13)):
        graph = helper.make_graph(nodes, "g", mixed, outs, initializer=[w])
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        proto.ir_version = ir
        out[f"mixed, IR {ir}"] = proto.SerializeToString()
    out["sequence"] = model(
        [helper.make_node("SequenceLength", ["s"], ["l"])],
        [helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, [2, "n"])],
        [tensor("l", TensorProto.INT64, [])],
        {"": 13},
    )
    float_tensor = helper.make_tensor_type_proto(TensorProto.FLOAT, None)
    out["map"] = model(
        [helper.make_node("DictVectorizer", ["m"], ["v"], domain="ai.onnx.ml", string_vocabulary=["a", "b"])],
        [helper.make_value_info("m", helper.make_map_type_proto(TensorProto.STRING, float_tensor))],
        [tensor("v", TensorProto.FLOAT, None)],
        {"": 13, "ai.onnx.ml": 1},
    )
    optional = helper.make_optional_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, [2]))
    out["optional"] = model(
        [helper.make_node("OptionalHasElement", ["o"], ["h"])],
        [helper.make_value_info("o", optional)],
        [tensor("h", TensorProto.BOOL, [])],
        {"": 18},
    )
    values = numpy_helper.from_array(np.array([1.0], np.float32), "sp")
    indices = numpy_helper.from_array(np.array([0], np.int64), "sp_idx")
    out["sparse initializer"] = model(
        [helper.make_node("Add", ["x", "sp"], ["o"])],
        [tensor("x", TensorProto.FLOAT, [3]), tensor("sp", TensorProto.FLOAT, [3])],
        [tensor("o", TensorProto.FLOAT, [3])],
        {"": 13},
        sparse_initializer=[helper.make_sparse_tensor(values, indices, [3])],
    )
    return out


def test_the_graph_s_inputs_are_those_onnxruntime_reports(external_model: Path) -> None:
    """The golden inputs are checked against inputs read from the graph alone; they must be the
    ones (names, types as onnxruntime spells them, dimensions) onnxruntime's session reports."""
    import io

    import onnxruntime as ort

    from airgap.core.onnx_external import graph_inputs

    models = _graph_input_models()
    models["external data"] = (external_model / "model.onnx").read_bytes()
    models["example"] = (ROOT / "examples" / "tabular" / "model" / "classifier.onnx").read_bytes()
    for label, raw in models.items():
        options = ort.SessionOptions()
        options.log_severity_level = 4
        source = str(external_model / "model.onnx") if label == "external data" else raw
        session = ort.InferenceSession(source, options, ["CPUExecutionProvider"])
        theirs = [(i.name, i.type, list(i.shape)) for i in session.get_inputs()]
        ours = [(i.name, i.type, list(i.shape)) for i in graph_inputs(io.BytesIO(raw), len(raw))]
        assert ours == theirs, label


def _peak_rss_of_early_checks(model: Path, golden: Path) -> int:
    """The model checks `airgap bundle` makes before any slow phase, in a child: its peak RSS."""
    probe = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from airgap.services.build.model_files import check_model_file\n"
        "from airgap.services.build.model_image import check_golden_fits\n"
        "check_model_file(Path(sys.argv[1]))\n"
        "check_golden_fits(Path(sys.argv[1]), Path(sys.argv[2]), 64)\n"
        "sys.stdout.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, str(model), str(golden)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout)


def test_the_model_checks_before_bundling_never_hold_the_weights_of_a_2_gib_model(
    external_model: Path, tmp_path: Path
) -> None:
    """onnxruntime loaded the whole model twice to check it and its golden inputs: a 2 GB model
    peaked at 3.9 GB of the workstation's memory. Now the graph is parsed (onnxruntime, without
    the optimizations that read the weights) and its inputs read from the protobuf stream: a
    2 GiB data file (sparse: it costs no disk) costs no more memory than 3.5 MiB of weights."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    count = (2 << 30) // 4
    big = TensorProto(name="big", data_type=TensorProto.FLOAT, dims=[count])
    big.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "model.onnx.data"), ("offset", "0"), ("length", str(count * 4))):
        big.external_data.add(key=key, value=value)
    graph = helper.make_graph(
        [
            helper.make_node("Slice", ["big", "starts", "ends"], ["s"]),
            helper.make_node("Add", ["features", "s"], ["x"]),
            helper.make_node("MatMul", ["x", "w"], ["scores"]),
        ],
        "big",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3])],
        initializer=[
            big,
            numpy_helper.from_array(np.ones((4, 3), np.float32), "w"),
            numpy_helper.from_array(np.array([0], np.int64), "starts"),
            numpy_helper.from_array(np.array([4], np.int64), "ends"),
        ],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    (tmp_path / "model.onnx").write_bytes(proto.SerializeToString())
    with open(tmp_path / "model.onnx.data", "wb") as fh:
        fh.truncate(count * 4)
    (tmp_path / "golden.json").write_text(json.dumps(GOLDEN))
    big_rss = _peak_rss_of_early_checks(tmp_path / "model.onnx", tmp_path / "golden.json")
    small_rss = _peak_rss_of_early_checks(external_model / "model.onnx", tmp_path / "golden.json")
    assert big_rss - small_rss < 32 << 20, f"{(big_rss - small_rss) >> 20} MiB more than a 3.5 MiB model"


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
