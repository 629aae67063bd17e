"""A reviewer with only tar, sha256sum, base64 and openssl can verify a bundle: the documented
commands, taken verbatim from docs/bundle-format.md, run here against real bundles."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.bundles import flip_byte_in, make_key, pack_demo
from tests.conftest import ROOT


def documented_commands() -> str:
    doc = (ROOT / "docs" / "bundle-format.md").read_text()
    block = re.search(
        r"<!-- verify-by-hand:start -->\n```sh\n(.*?)```\n<!-- verify-by-hand:end -->", doc, re.S
    )
    assert block, "the verify-by-hand block is missing from docs/bundle-format.md"
    return block.group(1)


def run_by_hand(workdir: Path, bundle: Path) -> subprocess.CompletedProcess[str]:
    script = "set -euo pipefail\n" + documented_commands()
    return subprocess.run(
        ["bash", "-c", script],
        cwd=workdir,
        env={"PATH": "/usr/bin:/bin", "BUNDLE": str(bundle)},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("split", [False, True])
def test_documented_manual_verification_passes_on_a_real_bundle(tmp_path: Path, split: bool) -> None:
    key, pub, kid = make_key(tmp_path, "publisher")
    pack_demo(tmp_path, key, part_size=(1 << 20) if split else None)
    work = tmp_path / "reviewer"
    work.mkdir()
    (work / "publisher.pub").write_bytes(pub.read_bytes())
    bundle = tmp_path / "out" / "demo-1.0.0.airgap.tar"
    proc = run_by_hand(work, bundle)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("Verified OK") == (3 if split else 2)
    assert kid in proc.stdout
    assert f'"key_id":"{kid}"' in proc.stdout


def test_documented_manual_verification_catches_a_modified_file(tmp_path: Path) -> None:
    key, pub, _ = make_key(tmp_path, "publisher")
    bundle = pack_demo(tmp_path, key).files[0]
    flip_byte_in(bundle, "bundle/model/model.onnx", offset=7)
    work = tmp_path / "reviewer"
    work.mkdir()
    (work / "publisher.pub").write_bytes(pub.read_bytes())
    proc = run_by_hand(work, bundle)
    assert proc.returncode != 0
    assert "model/model.onnx: FAILED" in proc.stdout


def test_documented_manual_verification_catches_an_unlisted_file(tmp_path: Path) -> None:
    key, pub, _ = make_key(tmp_path, "publisher")
    bundle = pack_demo(tmp_path, key).files[0]
    extra = tmp_path / "bundle" / "wheels"
    extra.mkdir(parents=True)
    (extra / "backdoor.whl").write_bytes(b"evil")
    subprocess.run(["tar", "-rf", str(bundle), "-C", str(tmp_path), "bundle/wheels/backdoor.whl"], check=True)
    work = tmp_path / "reviewer"
    work.mkdir()
    (work / "publisher.pub").write_bytes(pub.read_bytes())
    proc = run_by_hand(work, bundle)
    assert proc.returncode != 0
    assert "backdoor.whl" in proc.stdout


def test_the_same_inputs_give_byte_identical_bundles(tmp_path: Path) -> None:
    key, _, _ = make_key(tmp_path, "publisher")
    a = pack_demo(tmp_path / "a", key).files[0]
    b = pack_demo(tmp_path / "b", key).files[0]
    assert a.read_bytes() == b.read_bytes()
