"""A reviewer with only tar, sha256sum, base64 and openssl can verify a bundle: the documented
commands, taken verbatim from docs/bundle-format.md, run here against real bundles."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.bundles import flip_byte_in, make_key, pack_demo, synthetic_staging
from tests.conftest import ROOT


def documented_commands(tag: str = "verify-by-hand") -> str:
    doc = (ROOT / "docs" / "bundle-format.md").read_text()
    block = re.search(rf"<!-- {tag}:start -->\n```sh\n(.*?)```\n<!-- {tag}:end -->", doc, re.S)
    assert block, f"the {tag} block is missing from docs/bundle-format.md"
    return block.group(1)


def run_by_hand(
    workdir: Path, bundle: Path, v2: bool = False, store: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The documented block (and, for a v2 bundle, the v2 block after it), as a reviewer runs them."""
    script = "set -euo pipefail\n" + documented_commands()
    if v2:
        script += documented_commands("verify-by-hand-v2")
    return subprocess.run(
        ["bash", "-c", script],
        cwd=workdir,
        env={"PATH": "/usr/bin:/bin", "BUNDLE": str(bundle), **({"STORE": str(store)} if store else {})},
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


def test_documented_manual_verification_catches_an_unlisted_sha256sums_in_a_subdirectory(
    tmp_path: Path,
) -> None:
    """``bundle/model/SHA256SUMS`` is not a control file: only the two at the top are set aside."""
    key, pub, _ = make_key(tmp_path, "publisher")
    bundle = pack_demo(tmp_path, key).files[0]
    extra = tmp_path / "bundle" / "model"
    extra.mkdir(parents=True)
    (extra / "SHA256SUMS").write_bytes(b"evil")
    subprocess.run(["tar", "-rf", str(bundle), "-C", str(tmp_path), "bundle/model/SHA256SUMS"], check=True)
    work = tmp_path / "reviewer"
    work.mkdir()
    (work / "publisher.pub").write_bytes(pub.read_bytes())
    proc = run_by_hand(work, bundle)
    assert proc.returncode != 0
    assert "> model/SHA256SUMS" in proc.stdout


@pytest.mark.parametrize("stray", ["part-999", "part-0"])
def test_documented_manual_verification_joins_only_the_signed_parts(tmp_path: Path, stray: str) -> None:
    """A stray file beside the parts (after them, or sorting first and holding another signed
    bundle) is not joined in: the joined file is exactly the parts the signed index names."""
    key, pub, _ = make_key(tmp_path, "publisher")
    pack_demo(tmp_path, key, part_size=1 << 20)
    other = pack_demo(tmp_path / "old", key, version="0.9.0").files[0]
    bundle = tmp_path / "out" / "demo-1.0.0.airgap.tar"
    index = Path(f"{bundle}.parts.sha256")
    parts = [index.parent / line[66:] for line in index.read_text().splitlines()]
    Path(f"{bundle}.{stray}").write_bytes(other.read_bytes())
    work = tmp_path / "reviewer"
    work.mkdir()
    (work / "publisher.pub").write_bytes(pub.read_bytes())
    proc = run_by_hand(work, bundle)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert bundle.read_bytes() == b"".join(p.read_bytes() for p in parts)
    assert '"version":"1.0.0"' in (work / "unpacked" / "bundle" / "manifest.json").read_text()


def test_the_same_inputs_give_byte_identical_bundles(tmp_path: Path) -> None:
    key, _, _ = make_key(tmp_path, "publisher")
    a = pack_demo(tmp_path / "a", key).files[0]
    b = pack_demo(tmp_path / "b", key).files[0]
    assert a.read_bytes() == b.read_bytes()


# ---------------------------------------------------------------- format v2


def _reviewer(tmp_path: Path, pub: Path) -> Path:
    work = tmp_path / "reviewer"
    work.mkdir()
    (work / "publisher.pub").write_bytes(pub.read_bytes())
    return work


@pytest.mark.parametrize("split", [False, True])
def test_documented_manual_verification_of_a_v2_bundle_rebuilds_and_checks_every_file(
    tmp_path: Path, split: bool
) -> None:
    key, pub, kid = make_key(tmp_path, "publisher")
    pack_demo(tmp_path, key, part_size=(1 << 20) if split else None, bundle_format="v2")
    work = _reviewer(tmp_path, pub)
    proc = run_by_hand(work, tmp_path / "out" / "demo-1.0.0.airgap.tar", v2=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("Verified OK") == (3 if split else 2)
    assert f'"key_id":"{kid}"' in proc.stdout
    staging = tmp_path / "staging" / "demo-1.0.0"
    files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    for rel in files:
        assert f"{rel}: OK" in proc.stdout, rel
        assert (work / "unpacked" / "tree" / rel).read_bytes() == (staging / rel).read_bytes()
    assert "model/weights.bin: OK" in proc.stdout  # a .zst blob, decompressed by zstd


def test_documented_manual_verification_of_a_v2_bundle_catches_a_modified_blob(tmp_path: Path) -> None:
    key, pub, _ = make_key(tmp_path, "publisher")
    result = pack_demo(tmp_path, key, bundle_format="v2")
    model = next(f for f in result.manifest.files if f.path == "model/model.onnx")
    flip_byte_in(result.files[0], f"bundle/blobs/sha256/{model.sha256}", offset=7)
    proc = run_by_hand(_reviewer(tmp_path, pub), result.files[0], v2=True)
    assert proc.returncode != 0
    assert f"blobs/sha256/{model.sha256}: FAILED" in proc.stdout


def test_documented_manual_verification_of_a_v2_bundle_takes_external_blobs_from_the_store(
    tmp_path: Path,
) -> None:
    key, pub, _ = make_key(tmp_path, "publisher")
    staging = synthetic_staging(tmp_path / "staging")
    wheel = (staging / "wheels" / "demo-1.0-py3-none-any.whl").read_bytes()
    digest = hashlib.sha256(wheel).hexdigest()
    bundle = pack_demo(tmp_path, key, bundle_format="v2", external=frozenset({digest})).files[0]
    proc = run_by_hand(_reviewer(tmp_path, pub), bundle, v2=True)
    assert proc.returncode != 0
    assert f"wheels/demo-1.0-py3-none-any.whl: its blob {digest} is not in the bundle" in proc.stdout
    store = tmp_path / "store"
    store.mkdir()
    (store / digest).write_bytes(wheel)
    shutil.rmtree(tmp_path / "reviewer")
    proc = run_by_hand(_reviewer(tmp_path, pub), bundle, v2=True, store=store)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "wheels/demo-1.0-py3-none-any.whl: OK" in proc.stdout
