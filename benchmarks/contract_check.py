"""The model server's data-contract check, per feature per row, in-process:

    python benchmarks/contract_check.py [--json]

For 4 features (the example model's float32 [batch, 4] input, contract derived from its reference)
and 20 (a float32 [batch, 20] model, 20 lognormal columns), in 1-row and 64-row batches, the time of
what a predict request adds when the bundle has a data contract: ``DataGuard.check`` (the refusal
rules) and ``DataGuard.observe`` (the drift window), and for reference the time to read the JSON
``inputs`` into the tensor (``Model.prepare``, paid with or without a contract). Each figure is the
median of 7 runs of 2,000 requests, in µs per feature per row (goal: check + observe ≤ 2 µs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from airgap.core import datacontract as dc  # noqa: E402
from airgap.services.build.model_image import server_module  # noqa: E402

EXAMPLE = ROOT / "examples" / "tabular" / "model"
REQUESTS = 2000
REPEATS = 7


def wide_model(directory: Path, width: int) -> Path:
    """A float32 [batch, width] model (its output: the row sums) to carry a wide contract."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["features"], ["total"], keepdims=0)],
        "wide",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, ["batch"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 8
    path = directory / f"wide{width}.onnx"
    onnx.save(model, str(path))
    return path


def load_server(path: Path) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("airgap_other_server", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["airgap_other_server"] = module
    spec.loader.exec_module(module)
    return module


def case(server: Any, model_path: Path, header: list[str], rows: list[list[str]]) -> dict[str, Any]:
    doc = dc.derive(header, rows, "features").to_json()
    model = server.Model(str(model_path), 1)
    guard = server.DataGuard(doc, model)
    numbers = [[float(c) for c in row] for row in rows]
    out: dict[str, Any] = {"features": len(header)}
    for batch in (1, 64):
        requests = [numbers[(i * batch) % (len(numbers) - batch) :][:batch] for i in range(REQUESTS)]
        feeds = [model.prepare({"features": r}, 64) for r in requests]

        def timed(fn: Any, items: list[Any], batch: int = batch) -> float:
            runs = []
            for _ in range(REPEATS):
                start = time.perf_counter()
                for item in items:
                    fn(item)
                runs.append(time.perf_counter() - start)
            return statistics.median(runs) / (len(items) * batch * len(header)) * 1e6

        check = timed(guard.check, feeds)
        observe = timed(guard.observe, feeds)
        prepare = timed(lambda r: model.prepare({"features": r}, 64), requests)
        out[f"batch_{batch}"] = {
            "check_us": round(check, 3),
            "observe_us": round(observe, 3),
            "contract_us": round(check + observe, 3),
            "prepare_us": round(prepare, 3),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--server", type=Path, help="another airgap_server.py to measure (e.g. an older one)")
    args = parser.parse_args()
    server = server_module() if args.server is None else load_server(args.server)
    header, rows = dc.read_csv((EXAMPLE / "reference.csv").read_text(), "reference.csv")
    results = [case(server, EXAMPLE / "classifier.onnx", header, rows)]
    rng = np.random.default_rng(7)
    wide = rng.lognormal(0.0, 1.0, size=(2000, 20))
    with tempfile.TemporaryDirectory() as tmp:
        results.append(
            case(
                server,
                wide_model(Path(tmp), 20),
                [f"f{i}" for i in range(20)],
                [[repr(float(v)) for v in row] for row in wide],
            )
        )
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print("µs per feature per row (median of 7 x 2,000 requests; contract = check + observe)")
    print(f"{'features':>8} {'batch':>5} {'check':>8} {'observe':>8} {'contract':>9} {'prepare':>8}")
    for result in results:
        for batch in (1, 64):
            r = result[f"batch_{batch}"]
            print(
                f"{result['features']:>8} {batch:>5} {r['check_us']:>8.3f} {r['observe_us']:>8.3f} "
                f"{r['contract_us']:>9.3f} {r['prepare_us']:>8.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
