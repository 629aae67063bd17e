"""A small model saved the way every model over 2 GB must be: graph and weights in separate files.

``model.onnx`` holds the graph only; its two weight matrices (a few MB, seeded) live in
``model.onnx.data`` at the offsets and lengths the graph records, exactly as
``onnx.save_model(..., save_as_external_data=True)`` writes them for a multi-gigabyte model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

HIDDEN = 131072  # 4 x 131072 and 131072 x 3 float32: 2 MiB + 1.5 MiB of weights
GOLDEN = {
    "cases": [
        {"name": "one_row", "inputs": {"features": [[0.64, -1.0, 1.97, -0.71]]}},
        {"name": "two_rows", "inputs": {"features": [[0.1, 0.2, 0.3, 0.4], [-1.5, 2.5, 0.0, 1.0]]}},
    ]
}


def save_external_model(directory: Path, location: str = "model.onnx.data", seed: int = 20) -> Path:
    """Writes ``model.onnx`` and its external data file ``location`` into ``directory`` (``seed``:
    another seed gives other weights and the same graph)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((4, HIDDEN)) / 2).astype(np.float32)
    w2 = (rng.standard_normal((HIDDEN, 3)) / np.sqrt(HIDDEN)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "w1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["scores"]),
        ],
        "external-weights",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.onnx"
    onnx.save_model(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location
    )
    return path


def set_location(model: Path, location: str) -> None:
    """Rewrites the graph so that every external tensor names ``location`` (the data stays put)."""
    import onnx

    proto = onnx.load_model(str(model), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    model.write_bytes(proto.SerializeToString())


def external_project(root: Path, base_image: str, model_dir: Path) -> Path:
    """A project whose ``model:`` is a directory: the graph, its data file and a tokenizer file."""
    project = root / "extdata"
    (project / "model").mkdir(parents=True)
    for f in model_dir.iterdir():
        shutil.copy(f, project / "model" / f.name)
    (project / "model" / "tokenizer.json").write_text(json.dumps({"vocab": {"a": 0, "b": 1}}) + "\n")
    (project / "golden.json").write_text(json.dumps(GOLDEN))
    (project / "requirements.in").write_text("onnxruntime>=1.17\nnumpy>=1.24\n")
    (project / "airgap.yaml").write_text(
        "name: external-weights\n"
        'version: "1.0.0"\n'
        "model:\n"
        "  path: model\n"
        "  golden: golden.json\n"
        "requirements: requirements.in\n"
        f"base_image: {base_image}\n"
        "policies:\n"
        "  fail_on: high\n"
    )
    return project
