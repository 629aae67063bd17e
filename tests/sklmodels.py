"""Small real models exported by skl2onnx (and one built with onnx.helper), each with its golden
inputs, for the output kinds ONNX can express: a ZipMap classifier (a sequence of maps with int keys),
the same with ``zipmap=False`` (a probability tensor), a string-label classifier (a string tensor and
a sequence of maps with string keys), a multi-input pipeline with a string column, and a graph with a
sequence of tensors, a bool tensor and a NaN. Built in the test, deterministic, a few kB each."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("zipmap", "no_zipmap", "string_labels", "multi_input", "sequence_bool_nan")
OPSETS = {"": 15, "ai.onnx.ml": 3}  # every onnxruntime the lock may choose (>= 1.17) runs these


@dataclass(frozen=True)
class Built:
    kind: str
    model: Path
    golden: Path
    feeds: list[dict[str, np.ndarray]]  # the golden inputs as onnxruntime takes them, case by case


def _rows(seed: int, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    x = rng.randn(n, 4).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.3).astype(np.int64)
    return x, y


def _classifier(kind: str, seed: int) -> Any:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    x, y = _rows(seed)
    if kind == "string_labels":
        labels = np.array(["cat", "dog", "eel"])[y]
        return to_onnx(LogisticRegression().fit(x, labels), x[:1], target_opset=OPSETS)
    options = {"zipmap": False} if kind == "no_zipmap" else None
    model = LogisticRegression().fit(x, y)
    return to_onnx(model, x[:1], target_opset=OPSETS, options={id(model): options} if options else None)


def _multi_input(seed: int) -> Any:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.RandomState(seed)
    color = rng.choice(["red", "green", "blue"], 60)
    size = rng.randn(60)
    table = np.empty((60, 2), dtype=object)
    table[:, 0], table[:, 1] = color, size
    y = ((color == "red") | (size > 0.5)).astype(np.int64)
    columns = ColumnTransformer(
        [("color", OneHotEncoder(handle_unknown="ignore"), [0]), ("size", StandardScaler(), [1])]
    )
    pipeline = Pipeline([("columns", columns), ("classifier", LogisticRegression())]).fit(table, y)
    return convert_sklearn(
        pipeline,
        initial_types=[("color", StringTensorType([None, 1])), ("size", FloatTensorType([None, 1]))],
        target_opset=OPSETS,
    )


def _sequence_bool_nan(scale: float) -> Any:
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node(
            "Constant", [], ["k"], value=helper.make_tensor("k", TensorProto.FLOAT, [], [scale])
        ),
        helper.make_node("Mul", ["x", "k"], ["scaled"]),
        helper.make_node("SequenceConstruct", ["x", "scaled"], ["pieces"]),
        helper.make_node(
            "Constant", [], ["zero"], value=helper.make_tensor("zero", TensorProto.FLOAT, [], [0])
        ),
        helper.make_node("Greater", ["x", "zero"], ["positive"]),
        helper.make_node("Div", ["x", "x"], ["ratio"]),  # 0/0 is NaN
    ]
    graph = helper.make_graph(
        nodes,
        "kinds",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [
            helper.make_tensor_sequence_value_info("pieces", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("positive", TensorProto.BOOL, ["batch", 2]),
            helper.make_tensor_value_info("ratio", TensorProto.FLOAT, ["batch", 2]),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], ir_version=8)


def _golden(kind: str) -> list[dict[str, Any]]:
    if kind == "multi_input":
        return [
            {"name": "one_red", "inputs": {"color": [["red"]], "size": [[0.1]]}},
            {
                "name": "mixed",
                "inputs": {"color": [["blue"], ["green"], ["red"]], "size": [[2.0], [-1.0], [0.3]]},
            },
        ]
    if kind == "sequence_bool_nan":
        return [
            {"name": "with_zero", "inputs": {"x": [[0.0, 1.5], [-2.0, 0.25]]}},
            {"name": "one_row", "inputs": {"x": [[3.0, -1.0]]}},
        ]
    return [
        {"name": "single_row", "inputs": {"X": [[0.64, -1.0, 1.97, -0.71]]}},
        {
            "name": "three_rows",
            "inputs": {"X": [[-1.5, 1.0, -0.1, 0.4], [1.2, 0.9, 0.3, -0.2], [0.0, 0.0, 0.0, 0.0]]},
        },
    ]


def _feeds(kind: str, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    return {
        name: np.array(value, dtype=object if name == "color" else np.float32)
        for name, value in inputs.items()
    }


def build(kind: str, directory: Path, variant: int = 0) -> Built:
    """``kind``'s model and golden file in ``directory``. ``variant`` 1 is the same kind of model trained
    on other data: same inputs and outputs, different answers (the model that was not recorded)."""
    directory.mkdir(parents=True, exist_ok=True)
    if kind in ("zipmap", "no_zipmap", "string_labels"):
        onnx_model = _classifier(kind, seed=variant)
    elif kind == "multi_input":
        onnx_model = _multi_input(seed=variant)
    elif kind == "sequence_bool_nan":
        onnx_model = _sequence_bool_nan(scale=2.0 + variant)
    else:
        raise ValueError(kind)
    model = directory / "model.onnx"
    model.write_bytes(onnx_model.SerializeToString())
    cases = _golden(kind)
    golden = directory / "golden.json"
    golden.write_text(json.dumps({"cases": cases}, indent=2) + "\n")
    return Built(kind, model, golden, [_feeds(kind, c["inputs"]) for c in cases])
