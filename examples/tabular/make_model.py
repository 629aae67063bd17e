"""Writes the example tabular classifier and its golden inputs, byte for byte the same on every run.

The weights are fixed seeded random numbers, not a trained model: the example exists to exercise the
bundler (wheelhouse, image, smoke test), and a reproducible file lets a test prove that the committed
model is exactly what this script makes. Opset 13 and IR version 8 keep it loadable by onnxruntime
1.16 and later, which older targets may still run.

    python examples/tabular/make_model.py               # rewrites examples/tabular/model/
    python examples/tabular/make_model.py --out DIR     # writes DIR/classifier.onnx, golden.json, *.csv
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEED = 20240613
OPSET = 13
IR_VERSION = 8
N_FEATURES, N_HIDDEN, N_CLASSES = 4, 16, 3
GOLDEN_BATCHES = {"single_row": 1, "pair": 2, "batch_of_four": 4}
FEATURE_NAMES = ("temperature", "pressure", "vibration", "current")
REFERENCE_ROWS = 400
ACCEPTANCE_ROWS = 200
DEFAULT_OUT = Path(__file__).resolve().parent / "model"


def _weights(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    # Rounded so that the values read well in a dump and are exact in float32 across platforms.
    return np.round(rng.normal(0.0, scale, size=shape), 3).astype(np.float32)


def build_model(rng: np.random.Generator) -> onnx.ModelProto:
    """features[N,4] → Gemm → Relu → Gemm → Softmax → probabilities[N,3]; ArgMax → label[N]."""
    initializers = [
        numpy_helper.from_array(_weights(rng, (N_FEATURES, N_HIDDEN), 0.5), "hidden.weight"),
        numpy_helper.from_array(_weights(rng, (N_HIDDEN,), 0.1), "hidden.bias"),
        numpy_helper.from_array(_weights(rng, (N_HIDDEN, N_CLASSES), 0.5), "head.weight"),
        numpy_helper.from_array(_weights(rng, (N_CLASSES,), 0.1), "head.bias"),
    ]
    nodes = [
        helper.make_node("Gemm", ["features", "hidden.weight", "hidden.bias"], ["hidden"], name="hidden"),
        helper.make_node("Relu", ["hidden"], ["hidden_relu"], name="relu"),
        helper.make_node("Gemm", ["hidden_relu", "head.weight", "head.bias"], ["logits"], name="head"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], name="argmax", axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "tabular_classifier",
        inputs=[helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", N_FEATURES])],
        outputs=[
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", N_CLASSES]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="airgap-example",
        producer_version="1",
        doc_string=(
            "Example tabular classifier for airgap: 4 float features per row, 3 classes. "
            "Fixed seeded weights, not trained; made by examples/tabular/make_model.py."
        ),
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def build_golden(rng: np.random.Generator) -> dict[str, object]:
    """Inputs only: the bundler records the expected outputs by running the model in the built image."""
    cases = []
    for name, batch in GOLDEN_BATCHES.items():
        rows = np.round(rng.uniform(-2.0, 2.0, size=(batch, N_FEATURES)), 2)
        cases.append({"name": name, "inputs": {"features": [[float(v) for v in row] for row in rows]}})
    return {"cases": cases}


def build_reference(rng: np.random.Generator) -> str:
    """The reference data the data contract and the drift baseline are derived from, as CSV.

    Drawn after the weights and the golden inputs, so those stay what they were before it existed.
    """
    rows = np.round(rng.normal(0.0, 1.0, size=(REFERENCE_ROWS, N_FEATURES)), 2)
    lines = [",".join(FEATURE_NAMES)] + [",".join(f"{float(v):g}" for v in row) for row in rows]
    return "\n".join(lines) + "\n"


def build_acceptance(rng: np.random.Generator, model: onnx.ModelProto) -> str:
    """The labelled acceptance set as CSV: the reference's columns plus ``label``.

    The weights are not trained, so there is no ground truth: the labels are what the model computes
    (in float64 here), i.e. what it was built to answer. A real project labels from the field.
    """
    w = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    # Drawn from the reference's population and kept well inside its data contract.
    rows = np.clip(np.round(rng.normal(0.0, 1.0, size=(ACCEPTANCE_ROWS, N_FEATURES)), 2), -2.5, 2.5)
    hidden = np.maximum(rows @ w["hidden.weight"] + w["hidden.bias"], 0.0)
    labels = np.argmax(hidden @ w["head.weight"] + w["head.bias"], axis=1)
    lines = [",".join((*FEATURE_NAMES, "label"))]
    lines += [",".join([*(f"{float(v):g}" for v in row), str(int(label))]) for row, label in zip(rows, labels)]
    return "\n".join(lines) + "\n"


def _dump_rows_on_one_line(document: object) -> str:
    """Indented JSON, but each innermost list (one row of features) on one line, for readable diffs."""

    def one_line(match: re.Match[str]) -> str:
        return "[" + ", ".join(item.strip() for item in match.group(1).split(",")) + "]"

    return re.sub(r"\[([^\[\]{}]*)\]", one_line, json.dumps(document, indent=2)) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="directory to write (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    rng = np.random.default_rng(SEED)
    model = build_model(rng)
    golden = build_golden(rng)
    reference = build_reference(rng)
    acceptance = build_acceptance(rng, model)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "classifier.onnx").write_bytes(model.SerializeToString(deterministic=True))
    (args.out / "golden.json").write_text(_dump_rows_on_one_line(golden), encoding="utf-8")
    (args.out / "reference.csv").write_text(reference, encoding="utf-8")
    (args.out / "acceptance.csv").write_text(acceptance, encoding="utf-8")
    print(f"wrote classifier.onnx, golden.json, reference.csv and acceptance.csv to {args.out}")


if __name__ == "__main__":
    main()
