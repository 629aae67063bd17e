"""`airgap rebuild` on the far side: the example rebuilt offline onto a site base image of another
Debian release and Python (bullseye, Python 3.9, built by scripts/setup-env.sh), signed by a site
key, trusted, installed to the real Docker Engine and smoke-tested against the signed contract.

The example project is given an extra ``targets`` entry (Python 3.9, glibc 2.31) here rather than
in examples/, so the other tests that bundle the example do not resolve and carry a second
wheelhouse. A bundle without that wheelhouse is refused within seconds, naming the wheels.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PASSPHRASE, assert_one_line_error, bundle, run_airgap
from tests.test_attestations import _member, openssl_verifies
from tests.tty import run_tty

pytestmark = [pytest.mark.docker]

SITE_IMAGE = "127.0.0.1:5000/airgap/site-base:bullseye"
ENV = {"AIRGAP_KEY_PASSPHRASE": PASSPHRASE}
PORT = "18477"


@pytest.fixture(scope="module")
def site_image(docker_client) -> str:  # type: ignore[no-untyped-def]
    try:
        docker_client.images.get(SITE_IMAGE)
    except Exception:
        try:
            docker_client.images.pull(SITE_IMAGE)
        except Exception as exc:
            pytest.fail(f"site base image {SITE_IMAGE} unavailable ({exc}); run scripts/setup-env.sh first")
    return SITE_IMAGE


@pytest.fixture(scope="module")
def targeted(
    project: Path, cache: Path, signing_key: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The example with an extra Python 3.9 target, bundled and signed by the publisher."""
    dest = tmp_path_factory.mktemp("targeted") / "tabular"
    shutil.copytree(project, dest, ignore=shutil.ignore_patterns("build"))
    yaml = dest / "airgap.yaml"
    yaml.write_text(yaml.read_text() + '\ntargets:\n  - {python: "3.9", glibc: "2.31"}\n')
    result = bundle(dest, cache, "--key", str(signing_key.with_suffix(".key")))
    return {"bundle": Path(result["bundle"][0]), "staging": Path(result["staging"]), "result": result}


@pytest.fixture(scope="module")
def site_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    prefix = tmp_path_factory.mktemp("site-keys") / "site"
    proc = run_airgap("keys", "generate", "-o", str(prefix), env=ENV)
    assert proc.returncode == 0, proc.stderr
    return prefix


def test_the_bundle_carries_a_python39_wheelhouse_for_the_target(targeted: dict[str, Any]) -> None:
    record = targeted["result"]["record"]
    wh = record["wheelhouses"]["py3.9-glibc2.31"]
    assert wh["python"] == "3.9" and wh["lock"] == "targets/py3.9-glibc2.31/requirements.lock"
    assert all("cp39" in f or "py3" in f or "abi3" in f for f in wh["files"]), wh["files"]
    assert wh["pins"]["numpy"].startswith(("1.", "2.0.")), wh["pins"]  # numpy 2.1 dropped Python 3.9
    assert (targeted["staging"] / wh["lock"]).is_file()


def test_rebuild_onto_bullseye_offline_signed_by_site_key_installs_and_answers_golden(
    targeted: dict[str, Any],
    signing_key: Path,
    site_key: Path,
    site_image: str,
    tmp_path: Path,
    docker_client: Any,
) -> None:
    state = tmp_path / "state"
    assert (
        run_airgap(
            "keys", "trust", str(signing_key.with_suffix(".pub")), "--state-dir", str(state)
        ).returncode
        == 0
    )
    # Run as a field engineer runs it: in an 80-column terminal, every phase live.
    started = time.monotonic()
    screen = run_tty(
        "rebuild",
        str(targeted["bundle"]),
        "--base",
        site_image,
        "--key",
        str(site_key.with_suffix(".key")),
        "--state-dir",
        str(state),
        "-o",
        str(tmp_path / "rebuilt"),
        env=ENV,
        columns=80,
        timeout=900,
    )
    seconds = time.monotonic() - started
    text = screen.text
    assert screen.exit_code == 0 and "Traceback" not in text, text[-3000:]
    print(f"\nrebuild onto {site_image}: {seconds:.1f} s")
    assert "rebuilt tabular-classifier 1.0.0" in text and "signed by site key" in text, text[-3000:]
    assert "match the signed contract" in text, text[-3000:]
    assert screen.coloured and screen.live_progress
    for phase in ("verify", "probe base", "extract", "model image", "golden check", "sign"):
        assert re.search(rf"✓ {phase} done in \d+\.\ds", text), (phase, text[-3000:])
    rebuilt = sorted((tmp_path / "rebuilt").glob("tabular-classifier-1.0.0*.airgap.tar"))
    assert len(rebuilt) == 1, rebuilt
    new_bundle = rebuilt[0]
    original_sha = hashlib.sha256(_member(targeted["bundle"], "bundle/manifest.json")).hexdigest()

    record = json.loads(_member(new_bundle, "bundle/build.json"))
    assert record["rebuilt_from"]["manifest_sha256"] == original_sha
    assert record["rebuilt_from"]["name"] == "tabular-classifier"
    # The 3.9 wheelhouse became the image's; the original image wheelhouse is kept as a target.
    image_wh = record["wheelhouses"]["image"]
    assert any("cp39" in f for f in image_wh["files"]) and not any("cp311" in f for f in image_wh["files"])
    assert record["wheelhouses"]["py3.11"]["python"] == "3.11", sorted(record["wheelhouses"])
    assert record["base_image"]["resolved"].startswith("127.0.0.1:5000/airgap/site-base@sha256:")
    assert "FROM 127.0.0.1:5000/airgap/site-base@sha256:" in record["image"]["dockerfile"]

    # The provenance, signed by the site key, names the original bundle as a resolved dependency.
    envelope = json.loads(_member(new_bundle, "bundle/attestations/provenance.intoto.json"))
    assert openssl_verifies(envelope, site_key.with_suffix(".pub"), tmp_path)
    statement = json.loads(base64.b64decode(envelope["payload"]))
    deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    origin = [d for d in deps if d["digest"].get("sha256") == original_sha]
    assert origin and origin[0]["annotations"]["role"] == "rebuilt-from", deps

    # Signed by the site key: untrusted until the site key is trusted.
    untrusted = run_airgap("verify", str(new_bundle), "--state-dir", str(state))
    assert untrusted.returncode == 3, untrusted.stderr
    assert (
        run_airgap("keys", "trust", str(site_key.with_suffix(".pub")), "--state-dir", str(state)).returncode
        == 0
    )
    try:
        inst = run_airgap(
            "--json",
            "install",
            str(new_bundle),
            "--to",
            "docker",
            "--port",
            PORT,
            "--state-dir",
            str(state),
            timeout=600,
        )
        assert inst.returncode == 0, inst.stderr
        assert json.loads(inst.stdout)["version"] == "1.0.0"
        smoke = run_airgap(
            "--json", "smoke", "tabular-classifier", "--to", "docker", "--state-dir", str(state)
        )
        assert smoke.returncode == 0, smoke.stderr
    finally:
        run_airgap("uninstall", "tabular-classifier", "--to", "docker", "--state-dir", str(state))
        with contextlib.suppress(Exception):  # the image this test's rebuild tagged
            docker_client.images.remove("airgap/tabular-classifier:1.0.0-site")


def test_rebuild_on_a_base_no_wheelhouse_fits_fails_in_seconds_naming_the_wheels(
    targeted: dict[str, Any], signing_key: Path, site_key: Path, site_image: str, tmp_path: Path
) -> None:
    # The same project signed without its Python 3.9 wheelhouse.
    staging = tmp_path / "staging"
    shutil.copytree(targeted["staging"], staging)
    shutil.rmtree(staging / "targets")
    record = json.loads((staging / "build.json").read_text())
    record["wheelhouses"] = {k: v for k, v in record["wheelhouses"].items() if not k.startswith("py")}
    (staging / "build.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    packed = run_airgap(
        "--json",
        "pack",
        str(staging),
        "--key",
        str(signing_key.with_suffix(".key")),
        "-o",
        str(tmp_path / "out"),
        env=ENV,
    )
    assert packed.returncode == 0, packed.stderr
    no_target = Path(json.loads(packed.stdout)["bundle"][0])
    state = tmp_path / "state"
    assert (
        run_airgap(
            "keys", "trust", str(signing_key.with_suffix(".pub")), "--state-dir", str(state)
        ).returncode
        == 0
    )
    started = time.monotonic()
    proc = run_airgap(
        "rebuild",
        str(no_target),
        "--base",
        site_image,
        "--key",
        str(site_key.with_suffix(".key")),
        "--state-dir",
        str(state),
        "-o",
        str(tmp_path / "rebuilt"),
        env=ENV,
    )
    seconds = time.monotonic() - started
    line = assert_one_line_error(proc, 4)
    print(f"\nrefused in {seconds:.1f} s: {line}")
    assert seconds < 30, seconds
    assert "no wheelhouse in the bundle installs on" in line and "Python 3.9" in line, line
    assert "image wheelhouse: " in line and "cp311" in line, line
    assert "targets: [{python: '3.9'" in line, line
    assert not (tmp_path / "rebuilt").exists() or not any((tmp_path / "rebuilt").glob("*.airgap.tar"))
