"""`airgap bundle` on the example, end to end against the real engine, registry and index.

One bundle is built per session (cold cache) and reused; the second-bundle test rebuilds with the
same cache and proves nothing is downloaded again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import parse_wheel_filename

from airgap.core.profile import Profile
from airgap.core.tags import compute_tags
from tests.conftest import FOREIGN, built_args, bundle

pytestmark = [pytest.mark.docker, pytest.mark.network]


def staging(built: dict[str, Any]) -> Path:
    return Path(built["staging"])


def test_bundle_writes_a_complete_staging_directory(built: dict[str, Any]) -> None:
    root = staging(built)
    rec = built["record"]
    for rel in (
        "requirements.lock",
        "wheels",
        "host/requirements.lock",
        "host/wheels",
        "image/model-image.tar",
        "model/classifier.onnx",
        "model/golden.json",
        "model/contract.json",
        "build.json",
    ):
        assert (root / rel).exists(), rel
    from airgap.services.build.bundle import split_record

    assert json.loads((root / "build.json").read_text()) == split_record(rec)[0]
    assert "phases" not in json.loads((root / "build.json").read_text())
    assert set(rec["phases"]) >= {
        "base image",
        "image wheelhouse",
        "host wheelhouse",
        "model image",
        "save image",
    }
    assert rec["base_image"]["resolved"].startswith("127.0.0.1:5000/airgap/python-base@sha256:")
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")], "a partial directory was left"


@pytest.fixture(scope="module")
def rebundled(built: dict[str, Any], project: Path, cache: Path, signing_key: Path) -> dict[str, Any]:
    """The session's bundle made again: the same project, profile, key and SOURCE_DATE_EPOCH,
    every image build step run again (--no-build-cache) and every layer converted again (the
    converted-layer cache emptied), the wheels from the cache the first run warmed. The staging
    directory is the first one's, replaced."""
    lock_before = (staging(built) / "requirements.lock").read_bytes()
    shutil.rmtree(cache / "layers", ignore_errors=True)  # every layer converted again too
    again = bundle(project, cache, *built_args(signing_key), "--no-build-cache")
    return {**again, "lock_before": lock_before}


def test_second_bundle_with_the_same_lock_downloads_nothing(rebundled: dict[str, Any]) -> None:
    lock_before, again = rebundled["lock_before"], rebundled
    for kind, wh in again["record"]["wheelhouses"].items():
        assert wh["downloaded"] == 0, kind
        assert wh["lock_from_cache"] is True, kind
    assert (Path(again["staging"]) / "requirements.lock").read_bytes() == lock_before


def test_lock_has_exactly_one_hashed_file_per_pin(built: dict[str, Any]) -> None:
    root = staging(built)
    lock = (root / "requirements.lock").read_text()
    wheels = sorted(p.name for p in (root / "wheels").iterdir())
    pins = [ln for ln in lock.splitlines() if "==" in ln]
    assert len(pins) == len(wheels) == lock.count("--hash=sha256:")
    for wheel in wheels:
        digest = subprocess.run(
            ["sha256sum", str(root / "wheels" / wheel)], capture_output=True, text=True, check=True
        ).stdout.split()[0]
        assert f"--hash=sha256:{digest}" in lock, wheel


def test_image_wheelhouse_installs_offline_in_a_fresh_base_container(
    built: dict[str, Any], base_image: str
) -> None:
    root = staging(built)
    script = (
        "set -e; python3 -m venv /tmp/v; "
        "/tmp/v/bin/pip install -q --no-index --require-hashes --find-links /wh/wheels "
        "-r /wh/requirements.lock; /tmp/v/bin/pip check; "
        "/tmp/v/bin/python -c 'import onnxruntime, numpy; print(onnxruntime.__version__)'"
    )
    proc = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "--read-only",
            "--tmpfs",
            "/tmp:exec",
            "-v",
            f"{root}:/wh:ro",
            base_image,
            "sh",
            "-c",
            script,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "No broken requirements found" in proc.stdout
    assert (
        proc.stdout.strip().splitlines()[-1] == built["record"]["wheelhouses"]["image"]["pins"]["onnxruntime"]
    )


def test_host_wheelhouse_holds_only_wheels_for_the_foreign_target(built: dict[str, Any]) -> None:
    prof = Profile.from_json(FOREIGN.read_bytes())
    target = set(compute_tags(prof.primary_python()))
    files = list((staging(built) / "host" / "wheels").iterdir())
    assert files
    for f in files:
        assert parse_wheel_filename(f.name)[3] & target, f.name
    assert any("aarch64" in f.name and "cp310" in f.name for f in files)
    assert not any("x86_64" in f.name for f in files)


def test_host_wheelhouse_pins_equal_an_independent_resolver(built: dict[str, Any], project: Path) -> None:
    import sys

    uv = shutil.which("uv", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    assert uv, "uv (a dev dependency) is the independent resolver for this test"
    proc = subprocess.run(
        [
            uv,
            "pip",
            "compile",
            "--python-platform",
            "aarch64-manylinux_2_28",
            "--python-version",
            "3.10",
            "--no-header",
            "--no-annotate",
            "--no-config",
            str(project / "requirements.in"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, UV_PYTHON_DOWNLOADS="never", SSL_CERT_FILE="/etc/ssl/certs/ca-certificates.crt"),
    )
    assert proc.returncode == 0, proc.stderr
    theirs = dict(line.split("==") for line in proc.stdout.split() if "==" in line)
    ours = built["record"]["wheelhouses"]["host"]["pins"]
    assert ours == theirs


def _exec_json(
    container: str, method: str, path: str, body: object | None = None, strict: bool = True
) -> tuple[int, Any]:
    code = (
        "import json,sys,urllib.request as u\n"
        "data=sys.stdin.read().encode() or None\n"
        f"r=u.Request('http://127.0.0.1:8080{path}',data=data,method='{method}',"
        "headers={'Content-Type':'application/json'})\n"
        "try:\n resp=u.urlopen(r,timeout=10); print(resp.status); print(resp.read().decode())\n"
        "except u.HTTPError as e:\n print(e.code); print(e.read().decode())\n"
    )
    proc = subprocess.run(
        ["docker", "exec", "-i", container, "python", "-c", code],
        input=json.dumps(body) if body is not None else "",
        capture_output=True,
        text=True,
        timeout=30,
    )
    status, _, text = proc.stdout.partition("\n")
    if not status.strip().isdigit():
        assert not strict, proc.stderr
        return 0, None
    try:
        return int(status), json.loads(text)
    except ValueError:
        return int(status), text


def bundled_image(built: dict[str, Any]) -> str:
    """The server image the bundle carries, loaded from its OCI layout as the far side loads it (the
    workstation's tag may have been removed by a far-side test on this same engine); its id."""
    layout = staging(built) / "image" / "oci"
    config = built["record"]["image"]["config_digest"]
    if subprocess.run(["docker", "image", "inspect", config], capture_output=True).returncode != 0:
        subprocess.run(f"tar -cf - -C {layout} . | docker load", shell=True, check=True, capture_output=True)
    return str(config)


def model_env_file(built: dict[str, Any], tmp_path: Path) -> Path:
    """The settings build.json signs for the model, as a docker --env-file."""
    env = built["record"]["image"]["model_image"]["env"]
    path = tmp_path / "model.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return path


@pytest.fixture
def running(built: dict[str, Any], tmp_path: Path):  # type: ignore[no-untyped-def]
    """The bundle's server image, run as the far side runs it: no network, read-only, the model
    mounted read-only with the settings build.json signs."""
    cid = subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--network",
            "none",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--env-file",
            str(model_env_file(built, tmp_path)),
            "-v",
            f"{staging(built) / 'model'}:/opt/airgap/model:ro",
            bundled_image(built),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, _ = _exec_json(cid, "GET", "/readyz", strict=False) if _alive(cid) else (0, None)
            if status == 200:
                break
            time.sleep(0.5)
        else:
            logs = subprocess.run(["docker", "logs", cid], capture_output=True, text=True).stderr
            pytest.fail(f"model image never became ready: {logs[-2000:]}")
        yield cid
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)


def _alive(cid: str) -> bool:
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Running}}", cid], capture_output=True, text=True
    )
    return out.stdout.strip() == "true"


def test_model_image_with_network_none_answers_the_golden_outputs(
    built: dict[str, Any], running: str
) -> None:
    import numpy as np

    contract = json.loads((staging(built) / "model" / "contract.json").read_text())
    tol = contract["tolerance"]
    for case in contract["cases"]:
        status, body = _exec_json(running, "POST", "/v1/predict", {"inputs": case["inputs"]})
        assert status == 200, body
        for name, expected in case["outputs"].items():
            np.testing.assert_allclose(body["outputs"][name], expected, rtol=tol["rtol"], atol=tol["atol"])
    status, body = _exec_json(running, "POST", "/v1/predict", {"inputs": {"features": [[1.0, 2.0]]}})
    assert status == 400 and body["error"]["code"] == "bad_shape"
    status, body = _exec_json(running, "POST", "/v1/predict", {"inputs": {"nope": [[1, 2, 3, 4]]}})
    assert status == 400 and body["error"]["code"] in ("unknown_input", "missing_input")
    status, text = _exec_json(running, "GET", "/metrics")
    assert status == 200 and "airgap_requests_total" in text and 'version="1.0.0"' in text


def test_model_image_stops_cleanly_on_sigterm(running: str) -> None:
    subprocess.run(["docker", "stop", "-t", "10", running], check=True, capture_output=True)
    code = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.ExitCode}}", running], capture_output=True, text=True
    ).stdout.strip()
    assert code == "0"


def test_model_image_is_non_root_labelled_and_carries_no_pip_wheels_or_compilers(
    built: dict[str, Any],
) -> None:
    import docker

    rec = built["record"]
    image = docker.from_env().images.get(bundled_image(built))
    cfg = image.attrs["Config"]
    user = cfg["User"].split(":")[0]
    assert user.isdigit() and int(user) != 0
    # The server image names its runtime; the model image (its config in the layout) names the model.
    labels = cfg["Labels"]
    assert labels["org.opencontainers.image.base.digest"] == rec["base_image"]["resolved"].split("@")[1]
    assert labels["io.airgap.lock.sha256"] == rec["wheelhouses"]["image"]["lock_sha256"]
    assert "org.opencontainers.image.version" not in labels and not any(
        "AIRGAP_MODEL" in e for e in cfg["Env"]
    )
    model_config = json.loads(
        (
            staging(built)
            / "image"
            / "oci"
            / "blobs"
            / "sha256"
            / rec["image"]["model_image"]["config_digest"][7:]
        ).read_text()
    )
    model_labels = model_config["config"]["Labels"]
    assert model_labels["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"
    assert model_labels["org.opencontainers.image.version"] == "1.0.0"
    assert model_labels["io.airgap.lock.sha256"] == labels["io.airgap.lock.sha256"]
    assert model_config["rootfs"]["diff_ids"][-1] == rec["image"]["model_image"]["layer"]["digest"]
    probe = (
        "import glob, shutil, os; "
        "print(sorted(p for d in ('/opt', '/tmp', '/root', '/home', '/srv') "
        "for p in glob.glob(d + '/**/*.whl', recursive=True))); "
        "print([c for c in ('gcc', 'cc', 'g++', 'make', 'pip', 'pip3') if shutil.which(c)]); "
        "print(os.path.isdir('/opt/airgap/venv/lib/python3.11/site-packages/pip'))"
    )
    out = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "/opt/airgap/venv/bin/python",
            bundled_image(built),
            "-c",
            probe,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.splitlines()
    assert out == ["[]", "[]", "False"]


def test_contract_was_recorded_by_the_locked_onnxruntime(built: dict[str, Any]) -> None:
    contract = json.loads((staging(built) / "model" / "contract.json").read_text())
    assert contract["onnxruntime"] == built["record"]["wheelhouses"]["image"]["pins"]["onnxruntime"]
    assert [i["name"] for i in contract["inputs"]] == ["features"]
    assert len(contract["cases"]) == 3 and all(c["outputs"] for c in contract["cases"])


def test_sdist_only_requirement_becomes_a_locked_wheel_built_offline(tmp_path: Path, base_image: str) -> None:
    from airgap.adapters.docker_engine import DockerEngine
    from airgap.adapters.wheels import (
        ImageResolver,
        ResolverSettings,
        WheelStore,
        default_ca_bundle,
        sha256_file,
    )
    from airgap.services.build.probe import probe_image
    from airgap.services.build.wheelhouse import WheelhouseSite, image_wheelhouse

    engine = DockerEngine()
    ref = engine.resolve_digest(base_image)
    py = probe_image(engine, ref).profile.primary_python()
    resolver = ImageResolver(engine, ref, ResolverSettings(ca_bundle=default_ca_bundle()), tmp_path / "cache")
    result = image_wheelhouse(
        resolver,
        ref,
        py,
        ["docopt==0.6.2"],
        WheelhouseSite(tmp_path / "wh", WheelStore(tmp_path / "store"), tmp_path / "locks"),
    )
    assert result.built == ("docopt-0.6.2-py2.py3-none-any.whl",)
    wheel = tmp_path / "wh" / "wheels" / result.built[0]
    lock = (tmp_path / "wh" / "requirements.lock").read_text()
    assert f"--hash=sha256:{sha256_file(wheel)}" in lock
    assert "built offline in the base image from docopt-0.6.2.tar.gz" in lock


def test_two_builds_with_the_same_source_date_epoch_give_identical_bundles(
    built: dict[str, Any], rebundled: dict[str, Any]
) -> None:
    """The first build ran from a cold cache; this one ran every image build step and layer
    conversion again, with the wheels from the warm cache: the bytes must not care."""
    import hashlib

    again = rebundled
    assert hashlib.sha256(Path(again["bundle"][0]).read_bytes()).hexdigest() == built["bundle_sha256"]


def test_the_example_in_v2_stores_each_content_once_and_is_smaller_than_v1_by_the_duplicates(
    built: dict[str, Any], signing_key: Path, tmp_path: Path
) -> None:
    """v1 and v2 packed from the one staging directory the session built (the image is not built
    again): v2 has no duplicate blob, each wheel shared by wheelhouses is one member, and it is
    smaller than v1 by at least the bytes v1 stores twice or three times."""
    import hashlib
    import tarfile
    from collections import Counter

    from airgap.adapters.signers import FileSigner
    from airgap.services.build.sign import pack_staging
    from tests.conftest import PASSPHRASE

    staging = Path(built["staging"])
    v2 = Path(built["bundle"][0])
    signer = FileSigner(signing_key.with_suffix(".key"), lambda: PASSPHRASE.encode())
    v1 = pack_staging(staging, tmp_path, signer, bundle_format="v1").files[0]
    with tarfile.open(v2) as tf:
        names = tf.getnames()
        manifest = json.loads(tf.extractfile("bundle/manifest.json").read())  # type: ignore[union-attr]
    assert manifest["format"] == "airgap.bundle/v2"
    blobs = [n.removeprefix("bundle/blobs/sha256/").removesuffix(".zst") for n in names if "/blobs/" in n]
    assert len(blobs) == len(set(blobs)) == len({f["sha256"] for f in manifest["files"]}), (
        "each content is stored once"
    )
    content: dict[str, tuple[str, int]] = {}
    for path in staging.rglob("*"):
        rel = path.relative_to(staging).as_posix()
        if path.is_file() and rel != "image/model-image.tar" and not rel.startswith("."):
            content[rel] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size)
    copies = Counter(sha for sha, _ in content.values())
    size_of = {sha: size for sha, size in content.values()}
    shared_wheels = {sha for rel, (sha, _) in content.items() if rel.endswith(".whl") and copies[sha] > 1}
    assert shared_wheels, "the wheelhouses share wheels (which ones depends on the profiled host)"
    assert all(blobs.count(sha) == 1 for sha in shared_wheels)
    duplicate_bytes = sum((n - 1) * size_of[sha] for sha, n in copies.items())

    def stored(bundle: Path) -> int:
        """Bytes up to the end of the last member: the end-of-archive blocks and the padding to a
        whole 10240-byte record (up to 10 KB of zeros either way) are not content."""
        with tarfile.open(bundle) as tf:
            last = tf.getmembers()[-1]
        return last.offset_data + -(-last.size // 512) * 512

    saved = stored(v1) - stored(v2)
    assert v1.stat().st_size - v2.stat().st_size >= duplicate_bytes - 10240
    print(
        f"\nexample bundle: v1 {v1.stat().st_size} bytes, v2 {v2.stat().st_size} bytes, "
        f"saved {saved}, duplicate bytes {duplicate_bytes}"
    )
    # v2 lists every content twice in its manifest (files and blobs): a few hundred bytes of the
    # saving go there
    assert saved >= duplicate_bytes - 4096 and duplicate_bytes > 0
