"""Big weights stay shared file pages: the model server turns onnxruntime's pre-packing off for a
model whose directory holds 1 GiB or more (AIRGAP_PREPACK=auto), because pre-packing copies every
packed weight into private memory — a 10 GB model would need 20.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from airgap.services.build.model_image import server_module
from tests.conftest import ROOT

K = N = 4096  # one 64 MiB float32 weight matrix in external data
SERVER = ROOT / "bundle_templates" / "server" / "airgap_server.py"


def _matmul_model(directory: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(3).standard_normal((K, N)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", N])],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="model.onnx.data")
    return path


def _private_memory_after_a_run(path: Path, prepack: str) -> tuple[int, list[float]]:
    """RssAnon (KiB) of a fresh process that loaded the model with ``prepack`` and ran it once."""
    code = f"""
import importlib.util, json, sys
import numpy as np
spec = importlib.util.spec_from_file_location("srv", {str(SERVER)!r})
srv = importlib.util.module_from_spec(spec); sys.modules["srv"] = srv; spec.loader.exec_module(srv)
model = srv.Model({str(path)!r}, 1, {prepack!r})
y = model.session.run(None, {{"x": np.ones((1, {K}), np.float32)}})[0]
anon = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("RssAnon:"))
print(json.dumps([anon, model.prepacked, [float(v) for v in y[0, :4]]]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    anon, prepacked, head = json.loads(out)
    assert prepacked == (prepack == "on")
    return anon, head


def test_without_pre_packing_big_weights_are_not_copied_into_private_memory(tmp_path: Path) -> None:
    path = _matmul_model(tmp_path / "model")
    weights_kib = K * N * 4 // 1024
    packed, packed_answer = _private_memory_after_a_run(path, "on")
    shared, shared_answer = _private_memory_after_a_run(path, "off")
    assert packed - shared > weights_kib // 2, (packed, shared)  # the copy pre-packing makes
    np.testing.assert_allclose(shared_answer, packed_answer, rtol=1e-4)


def test_auto_turns_pre_packing_off_only_for_a_model_directory_of_a_gibibyte(tmp_path: Path) -> None:
    srv = server_module()
    small = tmp_path / "small"
    small.mkdir()
    (small / "model.onnx").write_bytes(b"x")
    assert srv.prepacks(str(small / "model.onnx"), "auto") is True
    assert srv.prepacks(str(small / "model.onnx"), "off") is False
    big = tmp_path / "big"
    big.mkdir()
    (big / "model.onnx").write_bytes(b"x")
    with open(big / "model.onnx.data", "wb") as fh:  # sparse: its size, not its blocks, counts
        fh.truncate(srv.PREPACK_OFF_FROM)
    assert srv.prepacks(str(big / "model.onnx"), "auto") is False
    assert srv.prepacks(str(big / "model.onnx"), "on") is True


def test_a_prepack_setting_that_is_not_on_off_or_auto_stops_the_server_with_one_line() -> None:
    srv = server_module()
    assert srv.Config.from_env({"AIRGAP_PREPACK": "off"}).prepack == "off"
    assert srv.Config.from_env({}).prepack == "auto"
    with pytest.raises(srv.FatalError, match="AIRGAP_PREPACK must be one of auto, on, off"):
        srv.Config.from_env({"AIRGAP_PREPACK": "sometimes"})
    assert os.environ.get("AIRGAP_PREPACK") is None
