"""The model as its own content: the server image never holds the weights.

The server image (base + locked virtualenv + server) is the same for every model and release that
share its runtime; the model directory travels as the bundle's own files, is mounted read-only into
the container where the target can mount, and becomes one OCI layer on top of the server image
where it cannot (a registry, Kubernetes) — a layer whose every byte the bundle fixes, so the
registry itself checks it against the signed digest. A weights-only release therefore ships the
weights and nothing else, and the far side keeps the server image it already has.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from airgap.core.model_layer import (
    LayerStream,
    check_env,
    layer_chunks,
    layer_size,
    model_config,
    model_env,
    model_manifest,
)
from airgap.errors import IntegrityError, InvalidInputError
from tests.conftest import bundle, run_airgap
from tests.external_models import GOLDEN, external_project, save_external_model

EPOCH = 1700000000
REGISTRY = "127.0.0.1:5000"


def _model_dir(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    (root / "tok" / "deep").mkdir(parents=True)
    (root / "model.onnx").write_bytes(b"graph" * 100)
    (root / "model.onnx.data").write_bytes(bytes(range(256)) * 4099)  # not a multiple of 512
    (root / "tok" / "deep" / "vocab.json").write_text('{"a": 0}\n')
    (root / "golden.json").write_bytes(b"{}\n")
    (root / ("n" * 120)).write_bytes(b"long name: a PAX path record")
    return root


def _files(root: Path) -> list[tuple[str, int]]:
    return [
        (p.relative_to(root).as_posix(), p.stat().st_size) for p in sorted(root.rglob("*")) if p.is_file()
    ]


def _layer(root: Path) -> bytes:
    return b"".join(layer_chunks(_files(root), EPOCH, lambda rel: (root / rel).open("rb")))


# --- fast tier: the layer's bytes, read back by GNU tar ----------------------------------------------


def test_the_model_layer_is_a_tar_that_gnu_tar_reads_back_file_for_file(tmp_path: Path) -> None:
    root = _model_dir(tmp_path)
    layer = _layer(root)
    assert len(layer) == layer_size(_files(root), EPOCH)
    assert len(layer) % 10240 == 0
    (tmp_path / "layer.tar").write_bytes(layer)
    listing = subprocess.run(
        ["tar", "--numeric-owner", "--full-time", "-tvf", str(tmp_path / "layer.tar")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    names = [line.split()[-1] for line in listing]
    assert names == [
        f"opt/airgap/model/{rel}" for rel, _ in sorted(_files(root), key=lambda f: f[0].encode())
    ]
    assert all(line.startswith("-rw-r--r-- 0/0") for line in listing)
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "-xf", str(tmp_path / "layer.tar"), "-C", str(out)], check=True)
    for rel, _ in _files(root):
        assert (out / "opt/airgap/model" / rel).read_bytes() == (root / rel).read_bytes(), rel


def test_the_model_layer_is_the_same_bytes_every_time_and_changes_with_any_weight(tmp_path: Path) -> None:
    root = _model_dir(tmp_path)
    first = hashlib.sha256(_layer(root)).hexdigest()
    assert hashlib.sha256(_layer(root)).hexdigest() == first
    data = bytearray((root / "model.onnx.data").read_bytes())
    data[5000] ^= 1
    (root / "model.onnx.data").write_bytes(bytes(data))
    assert hashlib.sha256(_layer(root)).hexdigest() != first


def test_a_model_file_that_changed_size_since_it_was_signed_stops_the_layer(tmp_path: Path) -> None:
    root = _model_dir(tmp_path)
    files = _files(root)
    with (root / "model.onnx.data").open("ab") as fh:
        fh.write(b"appended after signing")
    with pytest.raises(IntegrityError, match="is not the .* bytes the bundle signed"):
        b"".join(layer_chunks(files, EPOCH, lambda rel: (root / rel).open("rb")))
    (root / "model.onnx.data").write_bytes(b"short")
    with pytest.raises(IntegrityError, match="model/model.onnx.data"):
        b"".join(layer_chunks(files, EPOCH, lambda rel: (root / rel).open("rb")))


def test_the_upload_stream_hands_out_exactly_the_layer_and_hashes_it(tmp_path: Path) -> None:
    root = _model_dir(tmp_path)
    layer = _layer(root)
    body = LayerStream(layer_chunks(_files(root), EPOCH, lambda rel: (root / rel).open("rb")), len(layer))
    assert len(body) == len(layer)
    got = io.BytesIO()
    while chunk := body.read(8192):
        got.write(chunk)
    assert got.getvalue() == layer
    assert body.sha256.hexdigest() == hashlib.sha256(layer).hexdigest() and body.sent == len(layer)


def test_the_model_image_is_the_server_image_plus_one_layer_and_the_model_s_settings() -> None:
    runtime_config = {
        "architecture": "amd64",
        "config": {
            "Env": ["PATH=/opt/airgap/venv/bin", "AIRGAP_PORT=1"],
            "Labels": {"io.airgap.lock.sha256": "x"},
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "a" * 64]},
        "history": [{"created_by": "base"}],
    }
    env = model_env("m", "2.0.0", "model/g.onnx", {"port": 8080, "threads": 2, "max_batch": 8, "x": True})
    assert env["AIRGAP_MODEL_PATH"] == "/opt/airgap/model/g.onnx" and env["AIRGAP_PORT"] == "8080"
    config = model_config(
        runtime_config, "sha256:" + "b" * 64, env, {"org.opencontainers.image.title": "m"}, EPOCH
    )
    assert config["rootfs"]["diff_ids"] == ["sha256:" + "a" * 64, "sha256:" + "b" * 64]
    assert "AIRGAP_PORT=1" not in config["config"]["Env"] and "AIRGAP_PORT=8080" in config["config"]["Env"]
    assert config["config"]["ExposedPorts"] == {"8080/tcp": {}}
    assert config["config"]["Labels"] == {"io.airgap.lock.sha256": "x", "org.opencontainers.image.title": "m"}
    assert len(config["history"]) == 2 and runtime_config["rootfs"]["diff_ids"] == ["sha256:" + "a" * 64]
    manifest = model_manifest(
        {"schemaVersion": 2, "layers": [{"digest": "sha256:" + "c" * 64}]},
        "sha256:" + "d" * 64,
        10,
        "sha256:" + "b" * 64,
        99,
    )
    assert [layer["digest"] for layer in manifest["layers"]] == ["sha256:" + "c" * 64, "sha256:" + "b" * 64]
    assert manifest["layers"][1]["mediaType"] == "application/vnd.oci.image.layer.v1.tar"


def test_installing_the_same_blob_again_leaves_no_temporary_beside_the_model(tmp_path: Path) -> None:
    """rename(2) of one hard link onto another of the same file is a no-op: the temporary link
    would stay in the model directory every container mounts."""
    from airgap.services.media.formats._extracting import link_into

    blob = tmp_path / "blob"
    blob.write_bytes(b"weights")
    blob.chmod(0o444)
    (tmp_path / "model").mkdir()
    target = tmp_path / "model" / "model.onnx.data"
    link_into(blob, target)
    link_into(blob, target)
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["model.onnx.data"]
    assert target.read_bytes() == b"weights"


@pytest.mark.parametrize(
    "env",
    [
        {"LD_PRELOAD": "/tmp/x.so"},
        {"PATH": "/tmp"},
        {"AIRGAP_X": "two\nlines"},
        {"AIRGAP_X": 5},
        {"airgap_x": "lower"},
        {f"AIRGAP_{i}": "v" for i in range(33)},
    ],
)
def test_a_signed_model_setting_that_is_not_an_airgap_setting_is_refused(env: dict[str, Any]) -> None:
    with pytest.raises(IntegrityError):
        check_env(env, "image.model_image.env")


def test_a_build_record_whose_model_image_would_inject_settings_or_paths_is_refused() -> None:
    from airgap.core.bundle_format import check_build_record

    good = {
        "manifest_digest": "sha256:" + "1" * 64,
        "config_digest": "sha256:" + "2" * 64,
        "layer": {"digest": "sha256:" + "3" * 64, "size": 10240},
        "env": {"AIRGAP_PORT": "8080"},
    }
    check_build_record(json.dumps({"image": {"model_image": good}}).encode())
    for bad in (
        {**good, "env": {"LD_PRELOAD": "/x.so"}},
        {**good, "config_digest": "sha256:../../etc/passwd"},
        {**good, "layer": {"digest": "sha256:" + "3" * 64, "size": -1}},
        {**good, "layer": "x"},
    ):
        with pytest.raises(InvalidInputError, match="image.model_image"):
            check_build_record(json.dumps({"image": {"model_image": bad}}).encode())


# --- engine tier: a weights-only release, two models on one server image ------------------------------


@pytest.fixture(scope="session")
def weights_release(
    tmp_path_factory: pytest.TempPathFactory,
    external_bundle: dict[str, Any],
    cache: Path,
    signing_key: Path,
    base_image: str,
) -> dict[str, Any]:
    """Version 1.0.1 of the external-data model: new weights (another seed), nothing else, bundled
    as a delta over 1.0.0 (``--since``) and whole."""
    work = tmp_path_factory.mktemp("weights-release")
    model = work / "weights"
    save_external_model(model, seed=21)
    project = external_project(work, base_image, model)
    (project / "airgap.yaml").write_text(
        (project / "airgap.yaml").read_text().replace('version: "1.0.0"', 'version: "1.0.1"')
    )
    profile = external_bundle["bundle"].parent.parent / "profile.json"
    args = ("--profile", str(profile), "--host-wheelhouse", "--key", str(signing_key.with_suffix(".key")))
    whole = bundle(project, cache, *args, "-o", str(work / "whole"))
    delta = bundle(
        project,
        cache,
        *args,
        "-o",
        str(work / "delta"),
        "--since",
        str(external_bundle["bundle"]),
        "--since-key",
        str(signing_key.with_suffix(".pub")),
    )
    return {"project": project, "whole": whole, "delta": delta, "model": model}


@pytest.mark.docker
def test_a_weights_only_release_ships_its_weights_and_reuses_the_far_side_s_server_image(
    external_bundle: dict[str, Any], weights_release: dict[str, Any], signing_key: Path, tmp_path: Path
) -> None:
    import onnxruntime as ort

    old, new = external_bundle["record"]["image"], weights_release["whole"]["record"]["image"]
    # The server image is the same image; the model image differs by its model layer only.
    assert (new["digest"], new["config_digest"]) == (old["digest"], old["config_digest"])
    assert new["model_image"]["layer"]["digest"] != old["model_image"]["layer"]["digest"]
    assert new["model_image"]["manifest_digest"] != old["model_image"]["manifest_digest"]

    weights = (weights_release["model"] / "model.onnx.data").stat().st_size
    delta_file = Path(weights_release["delta"]["bundle"][0])
    whole_file = Path(weights_release["whole"]["bundle"][0])
    assert delta_file.stat().st_size - weights < 1_000_000, (delta_file.stat().st_size, weights)
    assert whole_file.stat().st_size > delta_file.stat().st_size + 50_000_000  # the server image stayed home

    session = ort.InferenceSession(
        str(weights_release["model"] / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    expected = session.run(
        None, {"features": np.array(GOLDEN["cases"][0]["inputs"]["features"], np.float32)}
    )[0]

    contract = json.loads((Path(weights_release["whole"]["staging"]) / "model" / "contract.json").read_text())
    np.testing.assert_allclose(contract["cases"][0]["outputs"]["scores"], expected, rtol=1e-4, atol=1e-5)

    state = tmp_path / "state"
    far = ("--state-dir", str(state))
    assert run_airgap("keys", "trust", str(signing_key.with_suffix(".pub")), *far).returncode == 0
    port = 18291
    try:
        first = run_airgap(
            "install",
            str(external_bundle["bundle"]),
            "--to",
            "docker",
            "--port",
            str(port),
            *far,
            timeout=600,
        )
        assert first.returncode == 0, first.stderr
        # (1.0.0 may find the server image loaded already: any model on this runtime loaded it)
        # the delta names 1.0.0's blobs: the state directory holds them from the first install
        second = run_airgap(
            "install", str(delta_file), "--to", "docker", "--port", str(port), *far, timeout=600
        )
        assert second.returncode == 0, second.stderr
        assert "load image" not in second.stdout + second.stderr, "the server image was loaded again"
        smoke = run_airgap("--json", "smoke", "external-weights", "--to", "docker", *far)
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr  # the new weights' golden answers
        inspect = _docker_inspect("airgap-external-weights-1.0.1-")
        assert inspect["Image"] == old["config_digest"]
        mounts = [m for m in inspect["Mounts"] if m["Destination"] == "/opt/airgap/model"]
        assert len(mounts) == 1 and mounts[0]["RW"] is False
        served = Path(mounts[0]["Source"]) / "model.onnx.data"
        assert served.read_bytes() == (weights_release["model"] / "model.onnx.data").read_bytes()

        # Where nothing is mounted, the registry gets the model image: the server image's layers and
        # the model layer made from the installed files; the registry checks it against the signed digest.
        reg = run_airgap(
            "--json", "install", str(delta_file), "--to", "registry", "--registry", REGISTRY,
            "--insecure-registry", "--port", str(port + 1), *far, timeout=600,
        )  # fmt: skip
        assert reg.returncode == 0, reg.stderr
        ref = json.loads(reg.stdout)
        np.testing.assert_allclose(ref["prediction"]["outputs"]["scores"], expected, rtol=1e-4, atol=1e-5)
        manifest = subprocess.run(
            ["curl", "-fsS", "-H", "Accept: application/vnd.oci.image.manifest.v1+json",
             f"http://{REGISTRY}/v2/airgap/external-weights/manifests/{new['model_image']['manifest_digest']}"],
            capture_output=True, check=True,
        ).stdout  # fmt: skip
        assert hashlib.sha256(manifest).hexdigest() == new["model_image"]["manifest_digest"].split(":")[1]
        assert json.loads(manifest)["layers"][-1]["digest"] == new["model_image"]["layer"]["digest"]
    finally:
        for target in ("docker", "registry"):
            run_airgap("uninstall", "external-weights", "--to", target, *far)


@pytest.mark.docker
def test_two_models_with_one_runtime_share_one_server_image(
    external_bundle: dict[str, Any], clean_image_bundle: dict[str, Any]
) -> None:
    ours, theirs = external_bundle["record"], clean_image_bundle["record"]
    assert ours["name"] != theirs["name"]
    assert ours["wheelhouses"]["image"]["lock_sha256"] == theirs["wheelhouses"]["image"]["lock_sha256"]
    assert ours["image"]["config_digest"] == theirs["image"]["config_digest"]
    assert ours["image"]["model_image"]["config_digest"] != theirs["image"]["model_image"]["config_digest"]


def _docker_inspect(prefix: str) -> dict[str, Any]:
    names = subprocess.run(
        ["docker", "ps", "--format", "{{.Names}}"], capture_output=True, text=True, check=True
    )
    name = next(n for n in names.stdout.split() if n.startswith(prefix) and not n.endswith("-registry"))
    out = subprocess.run(["docker", "inspect", name], capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out)[0])


# --- staging: links, not copies, and a model that changes meanwhile is refused --------------------


def test_the_model_is_staged_as_links_that_cost_no_disk_and_hashed_once(tmp_path: Path) -> None:
    from airgap.services.build.model_files import ModelFiles, copy_model
    from airgap.services.observer import NullObserver

    src = _model_dir(tmp_path)
    files = tuple((rel, src / rel) for rel, _ in _files(src))
    staged = tmp_path / "staging" / "model"
    staged.mkdir(parents=True)
    out = copy_model(ModelFiles(src / "model.onnx", "model.onnx", files, ()), staged, NullObserver())
    for rel, path in files:
        assert (staged / rel).stat().st_ino == path.stat().st_ino, rel  # a link: no second copy
        assert out[rel] == (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size)


def test_a_model_file_written_to_while_it_was_bundled_is_refused_at_pack() -> None:
    from types import SimpleNamespace

    from airgap.core.build_record import BuildRecord
    from airgap.services.build.sign import _model_changed

    record = BuildRecord.from_mapping(
        {
            "model": {
                "file": "model/model.onnx",
                "sha256": "a" * 64,
                "external_data": [{"file": "model/model.onnx.data", "sha256": "b" * 64, "size": 1}],
            }
        }
    )

    def manifest(graph: str, data: str) -> Any:
        return SimpleNamespace(
            files=[
                SimpleNamespace(content_path="model/model.onnx", content_sha256=None, sha256=graph),
                SimpleNamespace(content_path="model/model.onnx.data.zst", content_sha256=None, sha256="x"),
                SimpleNamespace(content_path="model/model.onnx.data", content_sha256=data, sha256="y"),
            ]
        )

    assert _model_changed(record, manifest("a" * 64, "b" * 64)) is None
    assert _model_changed(record, manifest("a" * 64, "c" * 64)) == "model/model.onnx.data"
    assert _model_changed(record, manifest("d" * 64, "b" * 64)) == "model/model.onnx"
