"""Delta bundles end to end, on the real Docker Engine: 1.0.0 installed, then 1.0.1 with only the
model changed, bundled against the far side's inventory.

The session's signed 1.0.0 bundle is reused (no extra build of it); 1.0.1 is bundled once, from the
warm cache, with another SOURCE_DATE_EPOCH than 1.0.0's — as a later release would be — so the
test also proves that the layers the model does not touch keep their digests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from airgap.core.bundle_format import Manifest
from airgap.services.deploy.inventory import blob_store
from airgap.services.media.formats import reader_for
from airgap.services.state import State
from tests.bundles import members
from tests.conftest import EPOCH, FOREIGN, PASSPHRASE, ROOT, assert_one_line_error, run_airgap

pytestmark = [pytest.mark.docker]

PORT = "18431"
MB = 1_000_000


def _new_model(dest: Path) -> None:
    """Other weights, same inputs and outputs: the change of the new version. The example's
    acceptance labels are what its model computes, so they are computed again for the new weights
    (a real project's labels come from the field and would not change)."""
    from onnx import numpy_helper

    spec = importlib.util.spec_from_file_location(
        "make_model", ROOT / "examples" / "tabular" / "make_model.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.build_model(np.random.default_rng(module.SEED + 1))
    dest.write_bytes(model.SerializeToString(deterministic=True))
    w = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    csv = dest.parent / "acceptance.csv"
    header, *lines = csv.read_text().splitlines()
    rows = [line.split(",")[:-1] for line in lines]
    x = np.array([[float(v) for v in row] for row in rows])
    hidden = np.maximum(x @ w["hidden.weight"] + w["hidden.bias"], 0.0)
    labels = np.argmax(hidden @ w["head.weight"] + w["head.bias"], axis=1)
    csv.write_text("\n".join([header, *(",".join([*r, str(int(y))]) for r, y in zip(rows, labels))]) + "\n")


def _manifest(bundle: Path) -> Manifest:
    import tarfile

    with tarfile.open(bundle) as tf:
        fh = tf.extractfile("bundle/manifest.json")
        assert fh is not None
        raw = fh.read()
    return reader_for(raw).parse_manifest(raw)


@pytest.fixture(scope="module")
def delta(
    built: dict[str, Any],
    project: Path,
    cache: Path,
    signing_key: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Any:
    """1.0.0 installed on a far side; its inventory; 1.0.1 bundled against it."""
    root = tmp_path_factory.mktemp("delta")
    far = root / "state"
    pub = signing_key.with_suffix(".pub")
    assert run_airgap("keys", "trust", str(pub), "--state-dir", str(far)).returncode == 0
    full = root / "usb-1.0.0" / Path(built["bundle"][0]).name
    full.parent.mkdir()
    shutil.copy(built["bundle"][0], full)
    proc = run_airgap("install", str(full), "--to", "docker", "--port", PORT, "--state-dir", str(far))
    assert proc.returncode == 0, proc.stderr
    inventory = root / "site.inventory.json"
    proc = run_airgap("inventory", "--out", str(inventory), "--state-dir", str(far))
    assert proc.returncode == 0, proc.stderr

    v101 = root / "project" / "tabular"
    shutil.copytree(project, v101, ignore=shutil.ignore_patterns("build"))
    text = (v101 / "airgap.yaml").read_text()
    (v101 / "airgap.yaml").write_text(text.replace('version: "1.0.0"', 'version: "1.0.1"'))
    _new_model(v101 / "model" / "classifier.onnx")
    later = str(int(EPOCH) + 30 * 86400)  # a later release has a later SOURCE_DATE_EPOCH
    proc = run_airgap(
        "--json",
        "bundle",
        str(v101),
        "--cache-dir",
        str(cache),
        "--profile",
        str(FOREIGN),
        "--host-wheelhouse",
        "--key",
        str(signing_key.with_suffix(".key")),
        "--have",
        str(inventory),
        env={"SOURCE_DATE_EPOCH": later, "AIRGAP_KEY_PASSPHRASE": PASSPHRASE},
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    media = root / "usb-1.0.1"
    media.mkdir()
    bundle = media / Path(result["bundle"][0]).name
    shutil.copy(result["bundle"][0], bundle)
    yield {
        "far": far,
        "full": full,
        "bundle": bundle,
        "result": result,
        "model": v101 / "model" / "classifier.onnx",
        "old_record": built["record"],
        "inventory": inventory,
    }
    for name in ("tabular-classifier",):
        run_airgap("uninstall", name, "--to", "docker", "--state-dir", str(far))


def test_inventory_of_the_far_side_holds_the_installed_image(delta: dict[str, Any]) -> None:
    doc = json.loads(delta["inventory"].read_bytes())
    held = {b["sha256"] for b in doc["store"]["blobs"]}
    layers = {layer["digest"].split(":", 1)[1] for layer in delta["old_record"]["image"]["layers"]}
    assert layers <= held
    # The engine's unpacked layers are reported, for information only.
    (engine,) = doc["informational"]["engine_layers"]
    assert engine["engine"] == "docker" and len(engine["diff_ids"]) == len(layers)


def test_only_the_model_layer_changes_between_versions(delta: dict[str, Any]) -> None:
    old_image, new_image = delta["old_record"]["image"], delta["result"]["record"]["image"]
    # base, the installed wheelhouse (the venv), the server: the same server image, byte for
    # byte, though the release epoch differs; the model is its own layer on top of it.
    assert (old_image["digest"], old_image["config_digest"]) == (
        new_image["digest"],
        new_image["config_digest"],
    )
    assert old_image["layers"] == new_image["layers"]
    old_model, new_model = old_image["model_image"], new_image["model_image"]
    assert old_model["layer"]["digest"] != new_model["layer"]["digest"]
    assert old_model["manifest_digest"] != new_model["manifest_digest"]


def test_delta_with_only_the_model_changed_is_at_most_model_size_plus_1mb(delta: dict[str, Any]) -> None:
    size = sum(Path(p).stat().st_size for p in delta["result"]["bundle"])
    model = delta["model"].stat().st_size
    assert size <= model + MB, (size, model)
    summary = delta["result"]["delta"]
    assert summary["blobs_left_out"] > 0 and summary["bytes_left_out"] > 100 * MB
    # Every file is still listed and signed; the ones left out are marked external.
    manifest = _manifest(delta["bundle"])
    assert manifest.format == "airgap.bundle/v2"
    external = [f for f in manifest.files if f.external]
    # one content may serve several paths: each left-out content is one or more external files
    assert len({f.sha256 for f in external}) == summary["blobs_left_out"]
    stored = {name.removeprefix("bundle/") for name in members(delta["bundle"])}
    assert not any(f"blobs/sha256/{f.sha256}" in stored for f in external)
    assert {f.sha256 for f in external}.isdisjoint(b.sha256 for b in manifest.blobs)


def test_delta_verifies_and_installs_from_store_and_delta(delta: dict[str, Any]) -> None:
    far, bundle = delta["far"], delta["bundle"]
    proc = run_airgap("verify", str(bundle), "--state-dir", str(far))
    assert proc.returncode == 0, proc.stderr
    proc = run_airgap("install", str(bundle), "--to", "docker", "--port", PORT, "--state-dir", str(far))
    assert proc.returncode == 0, proc.stderr
    status = json.loads(run_airgap("--json", "status", "--state-dir", str(far)).stdout)
    row = next(r for r in status if r["target"] == "docker")
    assert (row["version"], row["healthy"], row["previous"]) == ("1.0.1", True, "1.0.0")


def test_delta_missing_an_external_blob_in_the_store_fails_verify_naming_it(delta: dict[str, Any]) -> None:
    far, bundle = delta["far"], delta["bundle"]
    manifest = _manifest(bundle)
    external = sorted((f for f in manifest.files if f.external), key=lambda f: f.size, reverse=True)
    assert external
    victim = external[0].sha256
    store = blob_store(State(far))
    path = store / victim
    aside = store.parent / f"aside-{victim}"
    os.replace(path, aside)
    try:
        line = assert_one_line_error(run_airgap("verify", str(bundle), "--state-dir", str(far)), 3)
        assert victim[:12] in line, line
    finally:
        os.replace(aside, path)
