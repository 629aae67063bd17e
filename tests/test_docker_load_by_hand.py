"""An admin with no airgap, only tar and the Docker CLI, loads the bundled image with plain
``docker load`` (the image directory carries a docker-archive ``manifest.json`` beside the OCI
``index.json``) and the model it runs answers its golden inputs as recorded."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from airgap.core.smoke import compare_contract
from tests.test_bundle_by_hand import documented_commands

pytestmark = pytest.mark.docker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(port: int, inputs: Any) -> Any:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/predict",
        data=json.dumps({"inputs": inputs}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _wait_ready(port: int, container: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True).stderr
    pytest.fail(f"the model server never became ready:\n{logs[-2000:]}")


def _unpack(bundle: Path, tmp_path: Path) -> Path:
    """Extracts the bundle, and lays out its files from their blobs with the documented v2 commands
    (docs/bundle-format.md), as an admin without airgap does; returns the tree of files."""
    subprocess.run(["tar", "-xf", str(bundle), "-C", str(tmp_path), "--no-same-owner"], check=True)
    if '"format":"airgap.bundle/v2"' not in (tmp_path / "bundle" / "manifest.json").read_text():
        return tmp_path / "bundle"  # v1: the tree is the archive
    script = "set -euo pipefail\n" + documented_commands("verify-by-hand-v2")
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path / "bundle", capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return tmp_path / "tree"


def test_plain_docker_load_of_the_bundled_image_answers_the_golden_inputs(
    built: dict[str, Any], tmp_path: Path
) -> None:
    bundle = Path(built["bundle"][0])
    root = _unpack(bundle, tmp_path)
    layout = root / "image" / "oci"
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    image = manifest["images"][0]
    # The docker-archive manifest names the very blobs the signed OCI index does.
    docker_manifest = json.loads((layout / "manifest.json").read_text())
    assert docker_manifest[0]["Config"] == "blobs/sha256/" + image["config_digest"].split(":")[1]
    assert docker_manifest[0]["Layers"] == [
        "blobs/sha256/" + d["digest"].split(":")[1] for d in image["layers"]
    ]
    tag = docker_manifest[0]["RepoTags"][0]
    had = subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0

    loaded = subprocess.run(
        f"tar -cf - -C {layout} . | docker load", shell=True, capture_output=True, text=True, check=False
    )
    assert loaded.returncode == 0, loaded.stderr
    assert f"Loaded image: {tag}" in loaded.stdout
    image_id = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert image_id == image["config_digest"]

    # The server image holds no model: the model directory is mounted read-only with the settings
    # build.json signs, as docs/bundle-format.md shows (an env file written from build.json).
    env_file = tmp_path / "model.env"
    subprocess.run(
        [
            "python3",
            "-c",
            'import json; [print(f"{k}={v}") for k, v in '
            'json.load(open("build.json"))["image"]["model_image"]["env"].items()]',
        ],
        cwd=root,
        stdout=env_file.open("w"),
        check=True,
    )
    assert "AIRGAP_MODEL_PATH=/opt/airgap/model/classifier.onnx" in env_file.read_text().splitlines()
    port = _free_port()
    container = f"airgap-by-hand-{port}"
    run = subprocess.run(
        [
            *("docker", "run", "-d", "--name", container, "--network", "host", "--read-only"),
            *("--env-file", str(env_file), "-v", f"{root / 'model'}:/opt/airgap/model:ro"),
            *("-e", f"AIRGAP_PORT={port}", "-e", "AIRGAP_HOST=127.0.0.1", tag),
        ],
        capture_output=True,
        text=True,
    )
    try:
        assert run.returncode == 0, run.stderr
        _wait_ready(port, container)
        contract = json.loads((root / "model" / "contract.json").read_text())
        answers = {c["name"]: _post(port, c["inputs"])["outputs"] for c in contract["cases"]}
        assert contract["cases"], "the example records golden cases"
        assert compare_contract(contract, answers) == []
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)
        if not had:
            subprocess.run(["docker", "rmi", tag], capture_output=True)


@pytest.mark.podman
def test_plain_podman_load_of_the_bundled_image_gives_the_signed_config_digest(
    built: dict[str, Any], tmp_path: Path
) -> None:
    bundle = Path(built["bundle"][0])
    layout = _unpack(bundle, tmp_path) / "image" / "oci"
    image = json.loads((tmp_path / "bundle" / "manifest.json").read_text())["images"][0]
    tag = json.loads((layout / "manifest.json").read_text())[0]["RepoTags"][0]
    had = subprocess.run(["podman", "image", "exists", tag], capture_output=True).returncode == 0
    loaded = subprocess.run(
        f"tar -cf - -C {layout} . | podman load", shell=True, capture_output=True, text=True, check=False
    )
    try:
        assert loaded.returncode == 0, loaded.stderr
        image_id = subprocess.run(
            ["podman", "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True, text=True
        ).stdout.strip()
        assert "sha256:" + image_id == image["config_digest"]
    finally:
        if not had:
            subprocess.run(["podman", "rmi", tag], capture_output=True)
