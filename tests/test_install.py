"""`airgap install` on the far side, against the real Docker Engine, Podman and loopback registry.

The bundle is copied elsewhere first, as media would carry it; each test has its own state
directory and port. Crash recovery is tested by really killing the installer (SIGKILL) at each
journalled step and running it again.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.bundles import flip_byte_in, members
from tests.conftest import PASSPHRASE, assert_one_line_error, run_airgap

pytestmark = [pytest.mark.docker, pytest.mark.podman]


@pytest.fixture(scope="session")
def media(built: dict[str, Any], tmp_path_factory: pytest.TempPathFactory, signing_key: Path) -> Path:
    """The signed bundle and the public key, copied to another place: the USB stick."""
    stick = tmp_path_factory.mktemp("usb")
    shutil.copy(built["bundle"][0], stick)
    shutil.copy(signing_key.with_suffix(".pub"), stick / "publisher.pub")
    return stick / Path(built["bundle"][0]).name


@pytest.fixture(scope="session")
def media_v2(built_v110: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Version 1.1.0 of the same project, signed by the same key, on its own stick."""
    stick = tmp_path_factory.mktemp("usb2")
    shutil.copy(built_v110, stick)
    return stick / built_v110.name


@pytest.fixture
def far_side(tmp_path: Path, media: Path):  # type: ignore[no-untyped-def]
    """A fresh state directory that trusts the publisher; everything it installed is removed after."""
    state = tmp_path / "state"
    assert (
        run_airgap("keys", "trust", str(media.parent / "publisher.pub"), "--state-dir", str(state)).returncode
        == 0
    )
    yield state
    status = run_airgap("--json", "status", "--state-dir", str(state))
    for row in json.loads(status.stdout or "[]"):
        run_airgap("uninstall", row["name"], "--to", row["target"], "--state-dir", str(state))


def install(state: Path, bundle_path: Path, *args: str, kill_at: str | None = None) -> Any:
    return run_airgap(
        "--json", "install", str(bundle_path), "--state-dir", str(state), *args, timeout=600, kill_at=kill_at
    )


def predict(port: int, row: list[float] | None = None) -> dict[str, Any]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/predict",
        data=json.dumps({"inputs": {"features": [row or [0.64, -1.0, 1.97, -0.71]]}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, **json.loads(exc.read())}


def airgap_containers(runtime: str) -> set[str]:
    out = subprocess.run(
        [runtime, "ps", "-a", "--filter", "label=io.airgap.install", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def test_install_to_docker_podman_podman_kube_and_registry_each_pass_the_smoke_test(
    far_side: Path, media: Path
) -> None:
    from tests.test_oip import assert_installed_answers  # that module imports this one's fixtures

    targets = [
        ("docker", 18180, []),
        ("podman", 18181, []),
        ("podman-kube", 18182, []),
        ("registry", 18183, ["--registry", "127.0.0.1:5000", "--insecure-registry"]),
    ]
    for target, port, extra in targets:
        proc = install(far_side, media, "--to", target, "--port", str(port), *extra)
        assert proc.returncode == 0, f"{target}: {proc.stdout} {proc.stderr}"
        doc = json.loads(proc.stdout)
        assert doc["target"] == target and doc["nothing_to_do"] is False
        assert doc["prediction"]["outputs"]["label"] == [2]
        assert predict(port)["model_version"] == "1.0.0"
        # the signed data contract travelled with the model: the installed server enforces it
        refused = predict(port, [0.64, 42.0, 1.97, -0.71])
        assert (refused["status"], refused["error"]["code"]) == (400, "out_of_contract"), refused
        assert "(pressure) = 42 is above the contract's maximum" in refused["error"]["message"]
        smoke = run_airgap("smoke", "tabular-classifier", "--to", target, "--state-dir", str(far_side))
        assert smoke.returncode == 0, smoke.stderr
        # A client a team already has (tritonclient) speaks the Open Inference Protocol to it
        assert_installed_answers(port)
    rows = json.loads(run_airgap("--json", "status", "--state-dir", str(far_side)).stdout)
    assert {r["target"] for r in rows} == {"docker", "podman", "podman-kube", "registry"}
    assert all(r["healthy"] and r["version"] == "1.0.0" for r in rows)
    audit = (far_side / "audit.log").read_text()
    assert audit.count('"result": "accepted"') >= 4  # every install verified the bundle first


def test_installing_the_same_bundle_twice_has_nothing_to_do(far_side: Path, media: Path) -> None:
    assert install(far_side, media, "--to", "docker", "--port", "18190").returncode == 0
    again = install(far_side, media, "--to", "docker", "--port", "18190")
    assert again.returncode == 0 and json.loads(again.stdout)["nothing_to_do"] is True
    human = run_airgap(
        "install", str(media), "--to", "docker", "--port", "18190", "--state-dir", str(far_side)
    )
    assert "nothing to do" in human.stdout


def test_upgrade_to_v2_then_rollback_answers_as_v1_again(far_side: Path, media: Path, media_v2: Path) -> None:
    others = airgap_containers("docker")  # installs of other state directories on this engine
    assert install(far_side, media, "--to", "docker", "--port", "18200").returncode == 0
    assert predict(18200)["model_version"] == "1.0.0"
    assert install(far_side, media_v2, "--to", "docker", "--port", "18200").returncode == 0
    assert predict(18200)["model_version"] == "1.1.0"
    rows = json.loads(run_airgap("--json", "status", "--state-dir", str(far_side)).stdout)
    assert rows[0]["version"] == "1.1.0" and rows[0]["previous"] == "1.0.0"
    back = run_airgap("rollback", "tabular-classifier", "--to", "docker", "--state-dir", str(far_side))
    assert back.returncode == 0, back.stderr
    assert predict(18200)["model_version"] == "1.0.0"
    assert len(airgap_containers("docker") - others) == 1, "the rolled-back version left a container behind"


def test_an_older_bundle_is_refused_after_a_newer_was_installed(
    far_side: Path, media: Path, media_v2: Path
) -> None:
    assert install(far_side, media_v2, "--to", "docker", "--port", "18210").returncode == 0
    line = assert_one_line_error(install(far_side, media, "--to", "docker", "--port", "18210"), 3)
    assert "older than 1.1.0" in line


@pytest.mark.parametrize(
    "step", ["extracted", "loaded", "created", "stopped-old", "started", "smoke-passed", "committed"]
)
def test_install_killed_at_each_step_is_completed_by_the_next_run(
    far_side: Path, media: Path, media_v2: Path, step: str
) -> None:
    port = "18220"
    others = airgap_containers("docker")
    assert install(far_side, media, "--to", "docker", "--port", port).returncode == 0
    images_before = _docker_images()
    killed = install(far_side, media_v2, "--to", "docker", "--port", port, kill_at=step)
    assert killed.returncode == -9, killed.stderr
    again = install(far_side, media_v2, "--to", "docker", "--port", port)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["recovered"], "the next run must say what it repaired"
    assert predict(int(port))["model_version"] == "1.1.0"
    containers = airgap_containers("docker") - others
    assert len(containers) == 1, f"orphaned containers: {containers}"
    assert len(_docker_images() - images_before) <= 1, "orphaned images"
    rows = json.loads(run_airgap("--json", "status", "--state-dir", str(far_side)).stdout)
    assert rows[0]["version"] == "1.1.0" and rows[0]["healthy"] and not rows[0]["interrupted"]


def _docker_images() -> set[str]:
    out = subprocess.run(
        ["docker", "images", "-aq", "--no-trunc"], capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


def test_a_tampered_bundle_is_refused_before_anything_is_loaded(
    far_side: Path, media: Path, tmp_path: Path
) -> None:
    evil = tmp_path / media.name
    shutil.copy(media, evil)
    layer = max((m for m in members(evil) if "/blobs/" in m), key=lambda n: members(evil)[n].size)
    flip_byte_in(evil, layer, offset=1000)
    before_docker, before_podman = _docker_images(), _podman_images()
    line = assert_one_line_error(install(far_side, evil, "--to", "docker", "--port", "18230"), 3)
    assert "has been modified" in line
    line = assert_one_line_error(install(far_side, evil, "--to", "podman", "--port", "18231"), 3)
    assert _docker_images() == before_docker and _podman_images() == before_podman
    assert not (far_side / "content").exists() or not any((far_side / "content").rglob("*.onnx"))


def _podman_images() -> set[str]:
    out = subprocess.run(
        ["podman", "images", "-aq", "--no-trunc"], capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


def test_uninstall_removes_the_container(far_side: Path, media: Path) -> None:
    assert install(far_side, media, "--to", "podman", "--port", "18240").returncode == 0
    assert any("tabular" in c for c in airgap_containers("podman"))
    assert (
        run_airgap(
            "uninstall", "tabular-classifier", "--to", "podman", "--state-dir", str(far_side)
        ).returncode
        == 0
    )
    assert not any("tabular" in c for c in airgap_containers("podman"))
    assert json.loads(run_airgap("--json", "status", "--state-dir", str(far_side)).stdout) == []


def test_uninstall_keeps_an_image_another_installation_still_needs_to_roll_back_to(
    far_side: Path, media: Path, media_v2: Path
) -> None:
    """registry: 1.0.0 (the model image, pulled back into docker); docker: 1.0.0, then 1.1.0 over
    it — both versions on the one server image, which 1.0.0's rollback needs too. Uninstalling the
    registry's installation removes its own model image and must not take docker's server image
    with it."""
    assert install(far_side, media, "--to", "docker", "--port", "18250").returncode == 0
    registry = install(
        far_side,
        media,
        "--to",
        "registry",
        "--port",
        "18251",
        "--registry",
        "127.0.0.1:5000",
        "--insecure-registry",
    )
    assert registry.returncode == 0, registry.stderr
    upgrade = install(far_side, media_v2, "--to", "docker", "--port", "18250")
    assert upgrade.returncode == 0, upgrade.stderr
    model_image = json.loads(registry.stdout)["receipt"]["image_id"]
    server_image = json.loads(upgrade.stdout)["receipt"]["image_id"]
    assert model_image != server_image  # the registry's image holds the model; docker mounts it
    assert {model_image, server_image} <= _docker_images()
    gone = run_airgap(
        "--json", "uninstall", "tabular-classifier", "--to", "registry", "--state-dir", str(far_side)
    )
    assert gone.returncode == 0, gone.stderr
    assert server_image in _docker_images(), "the server image docker's versions need was removed"
    back = run_airgap("rollback", "tabular-classifier", "--to", "docker", "--state-dir", str(far_side))
    assert back.returncode == 0, back.stderr
    assert predict(18250)["model_version"] == "1.0.0"


# ------------------------------------------------------------------ pure parts, no engine needed


def test_log_tail_keeps_the_last_lines_on_one_line_with_repeats_counted() -> None:
    from airgap.services.deploy.smoketest import log_tail

    fatal = json.dumps(
        {
            "ts": "2026-01-01T00:00:00.000Z",
            "event": "fatal",
            "message": "cannot listen on 127.0.0.1:80: Permission denied",
        }
    )
    log = "\n".join(
        [
            '{"ts":"2026-01-01T00:00:00.000Z","event":"listening","host":"127.0.0.1","port":80}',
            fatal,
            fatal.replace("00.000Z", "01.000Z"),
            fatal.replace("00.000Z", "02.000Z"),
            "Traceback (most recent call last): not JSON",
        ]
    )
    assert log_tail(log) == (
        "listening host=127.0.0.1 port=80 | "
        "fatal: cannot listen on 127.0.0.1:80: Permission denied (x3) | "
        "Traceback (most recent call last): not JSON"
    )
    assert log_tail("\n".join(f"line {i}" for i in range(50)), lines=2) == "line 48 | line 49"
    assert log_tail("") == ""


def test_port_in_use_sees_a_listener_and_a_bound_socket_but_not_a_free_port() -> None:
    import socket

    from airgap.adapters.runtimes import port_in_use

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        assert port_in_use(port)  # bound, not yet listening: the kernel holds it already
        listener.listen()
        assert port_in_use(port)
    assert not port_in_use(port)
    with socket.socket() as wildcard:  # a server on every address holds 127.0.0.1 too
        wildcard.bind(("0.0.0.0", 0))
        wildcard.listen()
        assert port_in_use(wildcard.getsockname()[1])


def test_a_v1_bundle_of_the_example_still_verifies_and_installs_to_docker(
    far_side: Path, built: dict[str, Any], tmp_path: Path, signing_key: Path
) -> None:
    """Sites whose other machines run an airgap that reads only v1 get ``--format v1``; this
    airgap installs it as before."""
    packed = run_airgap(
        "--json",
        "pack",
        built["staging"],
        "--key",
        str(signing_key.with_suffix(".key")),
        "--format",
        "v1",
        "-o",
        str(tmp_path),
        env={"AIRGAP_KEY_PASSPHRASE": PASSPHRASE},
    )
    assert packed.returncode == 0, packed.stderr
    v1 = Path(json.loads(packed.stdout)["bundle"][0])
    with tarfile.open(v1) as tf:
        assert json.loads(tf.extractfile("bundle/manifest.json").read())["format"] == "airgap.bundle/v1"  # type: ignore[union-attr]
    proc = install(far_side, v1, "--to", "docker", "--port", "18195")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["prediction"]["outputs"]["label"] == [2]
    assert predict(18195)["model_version"] == "1.0.0"
