"""bundle/install.sh on a bare far side: a clean Debian image with python3, python3-venv, openssl,
coreutils and tar only, no airgap and no network. The bundle is built for that image's own probed
profile, so it carries airgap and its dependencies for exactly that interpreter."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import canonicalize_name

from airgap.adapters import keys
from airgap.core.wheelhouse import parse_lock
from tests.bundles import flip_byte_in, make_key, members
from tests.conftest import CLEAN_IMAGE, EPOCH, FOREIGN, PASSPHRASE, ROOT, run_airgap

pytestmark = [pytest.mark.docker, pytest.mark.network]

INSTALL_SH = ROOT / "bundle_templates" / "install.sh"
VENV = "/home/op/.local/share/airgap/runtime/venv"  # the default prefix of a normal user


@pytest.fixture(scope="session")
def far_side(clean_image_bundle: dict[str, Any]) -> dict[str, Any]:
    """A real signed bundle of the example whose target profile is the clean image's own
    (``clean_image_bundle`` of conftest, shared with the other tests that need one)."""
    return clean_image_bundle


def key_id_of(pub: Path) -> str:
    return keys.key_id(keys.load_public(pub.read_bytes(), str(pub)))


def run_far_side(
    files: list[Path], pub: Path, target: str, *args: str, extract_from: str | None = None
) -> subprocess.CompletedProcess[str]:
    """As an operator would: extract install.sh, read it, run it with sh. A normal user, no network.

    The bundle files and the key are mounted read-only one by one; the home directory (where the
    default prefix is) is a fresh tmpfs. The container prints ``venv: yes|no`` and, when a venv
    exists, ``pip list --format=freeze`` after the script, so tests see what it left behind.
    """
    mounts: list[str] = []
    for f in files:
        mounts += ["-v", f"{f}:/media/{f.name}:ro"]
    source = extract_from or f"/media/{target}"
    cat = "cat /media/*.part-* |" if extract_from == "-" else ""
    # As docs/bundle-format.md says: install.sh is a blob in v2, named in the signed manifest.
    script = f"""cd /home/op
{cat} tar -xf {source} bundle/manifest.json || exit 99
hash=$(grep -o '"path":"install\\.sh","sha256":"[0-9a-f]*"' bundle/manifest.json | cut -d'"' -f8)
{cat} tar -xOf {source} "bundle/blobs/sha256/$hash" >bundle/install.sh || exit 99
sh bundle/install.sh --key /keys/publisher.pub /media/{target} "$@"
rc=$?
if [ -d {VENV} ]; then echo "venv: yes"; {VENV}/bin/python -m pip list --format=freeze
else echo "venv: no"; fi
for d in /home/op/st /home/op/.local/share/airgap; do
    if [ -e "$d/audit.log" ] || [ -e "$d/trust" ]; then echo "state in $d: yes"
    else echo "state in $d: no"; fi
done
exit $rc
"""
    argv = [
        "docker",
        "run",
        "--rm",
        "--network",
        "none",
        "--user",
        "1000:1000",
        "-e",
        "HOME=/home/op",
        *mounts,
        "-v",
        f"{pub}:/keys/publisher.pub:ro",
        "--tmpfs",
        "/home/op:exec,mode=1777,size=2g",
        "--tmpfs",
        "/tmp:exec,mode=1777,size=1g",
        CLEAN_IMAGE,
        "sh",
        "-c",
        script,
        "sh",
        *args,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600)


def refusal(proc: subprocess.CompletedProcess[str], code: int) -> str:
    """A refusal: the exit code, exactly one line on stderr, and no virtualenv created."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "venv: no" in proc.stdout, proc.stdout
    return lines[0]


def freeze(stdout: str) -> set[str]:
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", stdout, re.M)
    return {f"{canonicalize_name(n)}=={v}" for n, v in pins}


# ----------------------------------------------------------------- the bundle


def test_the_bundle_carries_airgap_and_its_dependencies_for_the_far_side_python(
    far_side: dict[str, Any],
) -> None:
    staging = far_side["staging"]
    lock_text = (staging / "airgap" / "requirements.lock").read_text()
    lock = parse_lock(lock_text)
    wheels = sorted(p.name for p in (staging / "airgap" / "wheels").iterdir())
    assert len(wheels) == len(lock.pins) > 10
    assert all(len(p.hashes) == 1 for p in lock.pins), "one hash per pin"
    assert lock.by_name()["airgap"].version == run_airgap("--version").stdout.split()[1]
    for name in ("typer", "cryptography", "zstandard", "onnxruntime", "packaging"):
        assert name in lock.by_name(), name
    assert not {"pytest", "mypy", "ruff"} & set(lock.by_name()), "dev extras do not ship"
    # every binary wheel is for the far side's CPython 3.11 on x86_64 glibc
    binary = [w for w in wheels if not w.endswith("-none-any.whl")]
    assert binary and all(re.search(r"-(cp311|cp3\d+-abi3)-.*x86_64\.whl$", w) for w in binary), binary
    record = json.loads((staging / "build.json").read_text())
    assert record["wheelhouses"]["airgap"]["lock"] == "airgap/requirements.lock"
    assert record["wheelhouses"]["airgap"]["pins"]["airgap"] == lock.by_name()["airgap"].version
    assert "downloaded" not in record["wheelhouses"]["airgap"], "build.json keeps only what is reproducible"
    assert "airgap wheelhouse" in far_side["record"]["phases"]
    assert (staging / "install.sh").read_bytes() == INSTALL_SH.read_bytes()
    with tarfile.open(far_side["bundle"]) as tf:
        manifest = json.loads(tf.extractfile("bundle/manifest.json").read())  # type: ignore[union-attr]
        names = set(tf.getnames())
    files = {f["path"]: f["sha256"] for f in manifest["files"]}
    digest = hashlib.sha256(lock_text.encode()).hexdigest()
    assert manifest["locks"]["airgap"] == digest
    assert files["airgap/requirements.lock"] == digest and f"bundle/blobs/sha256/{digest}" in names
    script = hashlib.sha256(INSTALL_SH.read_bytes()).hexdigest()
    assert files["install.sh"] == script and f"bundle/blobs/sha256/{script}" in names


def test_the_airgap_wheel_is_the_same_bytes_when_built_again(
    far_side: dict[str, Any], tmp_path: Path
) -> None:
    from airgap.adapters.wheels import ResolverSettings, WheelStore, default_ca_bundle
    from airgap.services.build.airgap_payload import build_airgap_wheel, source_root

    settings = ResolverSettings(ca_bundle=default_ca_bundle())
    ca = str(settings.ca_bundle) if settings.ca_bundle else None
    sha, _ = build_airgap_wheel(
        source_root(), WheelStore(tmp_path / "store"), tmp_path / "locks", settings.pip_args(ca), int(EPOCH)
    )
    lock = parse_lock((far_side["staging"] / "airgap" / "requirements.lock").read_text())
    assert lock.by_name()["airgap"].hashes == {sha}


def test_a_far_side_python_too_old_for_airgap_gets_no_airgap_wheelhouse(tmp_path: Path) -> None:
    """RHEL 8's Python 3.6 cannot run airgap: refused before anything is built or fetched."""
    from airgap.adapters.wheels import ForeignResolver, ResolverSettings, WheelStore
    from airgap.core.profile import Profile
    from airgap.errors import InvalidInputError
    from airgap.services.build.airgap_payload import airgap_wheelhouse

    doc = json.loads(FOREIGN.read_text())
    doc["pythons"][0]["version"] = [3, 6, 8]
    py = Profile.from_dict(doc).primary_python()
    store = WheelStore(tmp_path / "store")
    with pytest.raises(InvalidInputError, match=r"3\.6\.8 .* cannot run airgap \(requires CPython >=3\.9\)"):
        airgap_wheelhouse(
            ForeignResolver(ResolverSettings()), py, "rhel8", tmp_path / "airgap", store, tmp_path
        )
    assert not (tmp_path / "airgap").exists()
    assert not list((tmp_path / "store" / "sha256").iterdir()), "nothing was built or downloaded"


# ------------------------------------------------------------ on the far side


def test_install_sh_verifies_installs_airgap_offline_and_airgap_verify_passes(
    far_side: dict[str, Any],
) -> None:
    tar = far_side["bundle"]
    proc = run_far_side(
        [tar], far_side["public_key"], tar.name, "--verify-only", "--state-dir", "/home/op/st"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"key id {key_id_of(far_side['public_key'])}" in proc.stdout
    assert "verified tabular-classifier 1.0.0" in proc.stdout  # airgap verify, run from the new venv
    assert "venv: yes" in proc.stdout
    lock = parse_lock((far_side["staging"] / "airgap" / "requirements.lock").read_text())
    assert freeze(proc.stdout) == {f"{p.name}=={p.version}" for p in lock.pins}, (
        "the venv holds the lock, exactly"
    )


def test_install_sh_installs_the_model_into_a_virtualenv_and_it_passes_the_smoke_test(
    far_side: dict[str, Any],
) -> None:
    """The whole far side with nothing but python3, openssl and coreutils, and no network; and the
    deployment contract proven there from the virtualenv (`install --accept`)."""
    tar = far_side["bundle"]
    proc = run_far_side(
        [tar], far_side["public_key"], tar.name, "--state-dir", "/home/op/st", "--", "--accept"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # every promise of the contract kept: 2 of the data contract, 2 metrics, p95, p99, errors, throughput
    assert proc.stdout.count("│ kept ") == 8, proc.stdout
    assert "MISSED" not in proc.stdout
    assert "installed tabular-classifier 1.0.0 --to venv" in proc.stdout
    # --state-dir is honoured: trust store, audit log and receipt there, nothing in the default
    assert "state in /home/op/st: yes" in proc.stdout
    assert "state in /home/op/.local/share/airgap: no" in proc.stdout
    assert "smoke test passed" in proc.stdout
    assert '"label": [2]' in proc.stdout  # the prediction printed by the installed model


def test_a_tampered_wheel_exits_3_before_any_venv_is_created(
    far_side: dict[str, Any], tmp_path: Path
) -> None:
    tar = tmp_path / far_side["bundle"].name
    shutil.copyfile(far_side["bundle"], tar)
    with tarfile.open(tar) as tf:
        manifest = json.loads(tf.extractfile("bundle/manifest.json").read())  # type: ignore[union-attr]
    wheel = next(f for f in manifest["files"] if f["path"].startswith("airgap/wheels/typer-"))
    blob = f"blobs/sha256/{wheel['sha256']}"
    flip_byte_in(tar, f"bundle/{blob}", offset=100)
    line = refusal(run_far_side([tar], far_side["public_key"], tar.name, "--verify-only"), 3)
    assert blob in line and wheel["path"] in line and "FAILED" in line


def _append_member(bundle: Path, name: str, data: bytes) -> None:
    """One more member after the last, with a well-formed end-of-archive after it."""
    raw = bundle.read_bytes()
    with tarfile.open(bundle) as tf:
        last = tf.getmembers()[-1]
    info = tarfile.TarInfo(name)
    info.size = len(data)
    body = raw[: last.offset_data + last.size + (-last.size % 512)] + info.tobuf(format=tarfile.USTAR_FORMAT)
    body += data + b"\0" * (-len(data) % 512) + b"\0" * 1024
    bundle.write_bytes(body + b"\0" * (-len(body) % 10240))


def test_install_sh_refuses_an_escaping_member_appended_garbage_and_a_changed_layer_before_any_venv(
    far_side: dict[str, Any], tmp_path: Path
) -> None:
    """Each is refused by the whole-bundle check, before PREFIX or a virtualenv exists."""
    tar = tmp_path / far_side["bundle"].name
    shutil.copyfile(far_side["bundle"], tar)
    _append_member(tar, "bundle/../x", b"x")
    line = refusal(run_far_side([tar], far_side["public_key"], tar.name), 3)
    assert "could escape" in line and "bundle/../x" in line
    shutil.copyfile(far_side["bundle"], tar)
    with open(tar, "ab") as fh:
        fh.write(b"garbage")
    line = refusal(run_far_side([tar], far_side["public_key"], tar.name), 3)
    assert "7 bytes were appended" in line
    shutil.copyfile(far_side["bundle"], tar)
    layer = max((m for m in members(tar) if "/blobs/" in m), key=lambda n: members(tar)[n].size)
    flip_byte_in(tar, layer, offset=1000)
    line = refusal(run_far_side([tar], far_side["public_key"], tar.name), 3)
    assert layer.removeprefix("bundle/") in line and "FAILED" in line


def test_the_wrong_public_key_exits_3(far_side: dict[str, Any], tmp_path: Path) -> None:
    _, other, other_id = make_key(tmp_path, "someone-else")
    tar = far_side["bundle"]
    line = refusal(run_far_side([tar], other, tar.name, "--verify-only"), 3)
    assert f"not signed by key {other_id}" in line


def test_a_bundle_built_without_a_profile_is_refused_with_exit_4(
    far_side: dict[str, Any], tmp_path: Path
) -> None:
    staging = tmp_path / far_side["staging"].name
    shutil.copytree(far_side["staging"], staging, ignore=shutil.ignore_patterns("model-image.tar"))
    shutil.rmtree(staging / "airgap")
    record = json.loads((staging / "build.json").read_text())
    del record["wheelhouses"]["airgap"]
    (staging / "build.json").write_text(json.dumps(record))
    packed = run_airgap(
        "pack",
        str(staging),
        "--key",
        str(far_side["public_key"].with_suffix(".key")),
        "-o",
        str(tmp_path / "out"),
        env={"AIRGAP_KEY_PASSPHRASE": PASSPHRASE},
    )
    assert packed.returncode == 0, packed.stderr
    tar = next((tmp_path / "out").glob("*.airgap.tar"))
    line = refusal(run_far_side([tar], far_side["public_key"], tar.name, "--verify-only"), 4)
    assert "does not carry airgap" in line


def test_a_split_bundle_installs_from_its_signed_parts_index(
    far_side: dict[str, Any], tmp_path: Path
) -> None:
    packed = run_airgap(
        "pack",
        str(far_side["staging"]),
        "--key",
        str(far_side["public_key"].with_suffix(".key")),
        "--part-size",
        "100M",
        "-o",
        str(tmp_path),
        env={"AIRGAP_KEY_PASSPHRASE": PASSPHRASE},
    )
    assert packed.returncode == 0, packed.stderr
    files = sorted(tmp_path.glob("*.airgap.tar.part*"))
    assert len([f for f in files if ".part-" in f.name]) >= 2
    index = next(f for f in files if f.name.endswith(".parts.sha256"))
    proc = run_far_side(files, far_side["public_key"], index.name, "--verify-only", extract_from="-")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verified tabular-classifier 1.0.0" in proc.stdout
    # a byte changed in one part: refused by the signed index before anything is extracted
    part = next(f for f in files if f.name.endswith(".part-001"))
    data = bytearray(part.read_bytes())
    data[12345] ^= 1
    part.write_bytes(bytes(data))
    line = refusal(
        run_far_side(files, far_side["public_key"], index.name, "--verify-only", extract_from="-"), 3
    )
    assert part.name in line


# --------------------------------------------------------------- the script


def test_install_sh_is_valid_posix_sh() -> None:
    for shell in ("sh", "dash", "bash --posix"):
        if shutil.which(shell.split()[0]):
            proc = subprocess.run([*shell.split(), "-n", str(INSTALL_SH)], capture_output=True, text=True)
            assert proc.returncode == 0, (shell, proc.stderr)
    assert INSTALL_SH.read_text().startswith("#!/bin/sh\n")


def test_install_sh_passes_shellcheck_as_posix_sh() -> None:
    assert shutil.which("shellcheck"), "scripts/setup-env.sh installs shellcheck"
    proc = subprocess.run(["shellcheck", "-s", "sh", str(INSTALL_SH)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
