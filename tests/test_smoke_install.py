"""A skl2onnx classifier with its default ZipMap output (a sequence of maps), bundled and installed
for real to Docker and to a virtualenv; a bundle whose recorded outputs are not what its model
answers; a taken port; a model server that dies before it is ready; what a failed install leaves.

The wrong-outputs bundle is made the way a publisher could ship one: the staging directory of a
real bundle, its recorded golden outputs replaced by another model's, signed again with
``airgap pack``. Everything here runs on the real engine; each test has its own state directory
and port.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airgap.adapters.runtimes import port_in_use
from airgap.cli.wiring import real_adapters
from airgap.core.smoke import Tolerance, compare_output
from tests import sklmodels
from tests.conftest import EPOCH, PASSPHRASE, ROOT, assert_one_line_error, bundle, run_airgap
from tests.test_server import SERVER

pytestmark = [pytest.mark.docker, pytest.mark.podman, pytest.mark.network]

NAME = "zipmap-classifier"
TOL = Tolerance(1e-4, 1e-5)


# ------------------------------------------------------------------------------------------ bundles


def zipmap_project(root: Path, version: str) -> Path:
    """The example project with its model replaced by a skl2onnx ZipMap classifier."""
    dest = root / NAME
    shutil.copytree(ROOT / "examples" / "tabular", dest, ignore=shutil.ignore_patterns("build"))
    built = sklmodels.build("zipmap", root / "model")
    shutil.copy(built.model, dest / "model" / "classifier.onnx")
    shutil.copy(built.golden, dest / "model" / "golden.json")
    text = (dest / "airgap.yaml").read_text()
    # The example's data contract describes the example model's columns, not this one's.
    text = text.split("\n# The data contract", 1)[0] + "\n"
    text = text.replace("name: tabular-classifier", f"name: {NAME}").replace('"1.0.0"', f'"{version}"')
    (dest / "airgap.yaml").write_text(text)
    return dest


@pytest.fixture(scope="module")
def host_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This host's own profile: the bundle's host wheelhouse is for this Python, for --to venv."""
    path = tmp_path_factory.mktemp("profile") / "host.json"
    proc = run_airgap("probe", "-o", str(path), "--egress-check", "none")
    assert proc.returncode == 0, proc.stderr
    return path


def make_bundle(root: Path, version: str, cache: Path, key: Path, profile: Path) -> dict[str, Any]:
    project = zipmap_project(root, version)
    return bundle(
        project,
        cache,
        "--profile",
        str(profile),
        "--host-wheelhouse",
        "--key",
        str(key.with_suffix(".key")),
        "-o",
        str(root / "out"),
    )


@pytest.fixture(scope="module")
def good(
    tmp_path_factory: pytest.TempPathFactory, cache: Path, signing_key: Path, host_profile: Path
) -> Path:
    """zipmap-classifier 1.0.0, as bundled."""
    result = make_bundle(tmp_path_factory.mktemp("good"), "1.0.0", cache, signing_key, host_profile)
    return Path(result["bundle"][0])


def other_models_outputs(staging: Path, work: Path) -> list[dict[str, Any]]:
    """Another ZipMap classifier's outputs for the same golden inputs, as the server records them."""
    other = sklmodels.build("zipmap", work, variant=1)
    proc = subprocess.run(
        [
            sys.executable,
            str(SERVER),
            "check",
            "--model",
            str(other.model),
            "--golden",
            str(staging / "model" / "golden.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout)["cases"])


@pytest.fixture(scope="module")
def wrong_outputs(
    tmp_path_factory: pytest.TempPathFactory, cache: Path, signing_key: Path, host_profile: Path
) -> Path:
    """zipmap-classifier 1.1.0, signed, whose contract holds another model's outputs."""
    root = tmp_path_factory.mktemp("wrong")
    result = make_bundle(root, "1.1.0", cache, signing_key, host_profile)
    staging = root / "repacked" / Path(result["staging"]).name
    shutil.copytree(result["staging"], staging)
    contract_path = staging / "model" / "contract.json"
    contract = json.loads(contract_path.read_text())
    for case, recorded in zip(contract["cases"], other_models_outputs(staging, root / "other")):
        assert case["name"] == recorded["name"]
        case["outputs"] = recorded["outputs"]
    contract_path.write_text(json.dumps(contract, indent=2))
    packed = run_airgap(
        "--json",
        "pack",
        str(staging),
        "--key",
        str(signing_key.with_suffix(".key")),
        "-o",
        str(root / "repacked-out"),
        env={"SOURCE_DATE_EPOCH": EPOCH, "AIRGAP_KEY_PASSPHRASE": PASSPHRASE},
    )
    assert packed.returncode == 0, packed.stderr
    return Path(json.loads(packed.stdout)["bundle"][0])


# --------------------------------------------------------------------------------------- far side


@pytest.fixture
def far_side(tmp_path: Path, signing_key: Path) -> Iterator[Path]:
    state = tmp_path / "state"
    trust = run_airgap("keys", "trust", str(signing_key.with_suffix(".pub")), "--state-dir", str(state))
    assert trust.returncode == 0, trust.stderr
    yield state
    status = run_airgap("--json", "status", "--state-dir", str(state))
    for row in json.loads(status.stdout or "[]"):
        run_airgap("uninstall", row["name"], "--to", row["target"], "--state-dir", str(state))


def install(state: Path, bundle_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_airgap("install", str(bundle_path), "--state-dir", str(state), *args, timeout=900)


def status(state: Path) -> list[dict[str, Any]]:
    proc = run_airgap("--json", "status", "--state-dir", str(state))
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout))


def started_by(state: Path, runtime: str = "docker") -> list[str]:
    """Containers that carry this state directory's label, running or not."""
    from airgap.services.deploy.install import Installer
    from airgap.services.state import State

    label = Installer(State(state), adapters=real_adapters()).state_label
    out = subprocess.run(
        [runtime, "ps", "-a", "--filter", f"label=io.airgap.state={label}", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def printed(stdout: str, prefix: str) -> str:
    lines = [line[len(prefix) :] for line in stdout.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, stdout
    return lines[0]


def run_printed_curl(stdout: str) -> dict[str, Any]:
    """The ``try it:`` line exactly as printed, run by a shell with the real curl."""
    assert shutil.which("curl"), "curl is needed: apt-get install -y curl"
    line = printed(stdout, "try it: ")
    assert line.startswith("curl ")
    proc = subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    answer = dict(json.loads(proc.stdout))
    assert "error" not in answer, answer
    status_code = subprocess.run(
        ["sh", "-c", line + " -o /dev/null -w '%{http_code}'"], capture_output=True, text=True, timeout=30
    )
    assert status_code.stdout == "200", status_code.stdout + status_code.stderr
    return answer


def assert_answers_as_printed(stdout: str, answer: dict[str, Any]) -> None:
    expected = json.loads(printed(stdout, "it answers: "))
    assert set(answer["outputs"]) == {"output_label", "output_probability"}
    for name, value in expected.items():
        assert compare_output(name, value, answer["outputs"][name], TOL) is None


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"nothing became ready on port {port}")


# -------------------------------------------------------------------------------------------- tests


def test_zipmap_classifier_installs_to_docker_passes_the_smoke_test_and_the_printed_curl_works(
    far_side: Path, good: Path
) -> None:
    proc = install(far_side, good, "--to", "docker", "--port", "18301")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "smoke test passed" in proc.stdout
    assert "http://127.0.0.1:18301/v1/predict" in printed(proc.stdout, "try it: ")
    answer = run_printed_curl(proc.stdout)
    assert answer["model"] == NAME and answer["model_version"] == "1.0.0"
    assert_answers_as_printed(proc.stdout, answer)
    assert isinstance(answer["outputs"]["output_probability"][0], dict)  # ZipMap: a list of maps
    smoke = run_airgap("smoke", NAME, "--to", "docker", "--state-dir", str(far_side))
    assert smoke.returncode == 0, smoke.stderr
    [row] = status(far_side)
    assert row["healthy"] and row["state"] == "installed"


def test_zipmap_classifier_installs_to_venv_and_the_printed_serve_and_curl_lines_work(
    far_side: Path, good: Path
) -> None:
    proc = install(far_side, good, "--to", "venv", "--port", "18302")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "smoke test passed" in proc.stdout
    assert not port_in_use(18302), "--to venv runs no server of its own"
    smoke = run_airgap("smoke", NAME, "--to", "venv", "--state-dir", str(far_side))
    assert smoke.returncode == 0, smoke.stderr
    serve = subprocess.Popen(
        ["sh", "-c", printed(proc.stdout, "serve it: ")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the shell and the server it starts: one process group to stop
    )
    try:
        wait_for_port(18302)
        answer = run_printed_curl(proc.stdout)
        assert answer["model_version"] == "1.0.0"
        assert_answers_as_printed(proc.stdout, answer)
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=20)
    deadline = time.monotonic() + 20  # the server drains, then lets go of the port
    while port_in_use(18302) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not port_in_use(18302)


def test_changed_model_output_fails_docker_install_with_exit_1_and_restores_the_previous_version(
    far_side: Path, good: Path, wrong_outputs: Path
) -> None:
    assert install(far_side, good, "--to", "docker", "--port", "18303").returncode == 0
    [before] = started_by(far_side)
    line = assert_one_line_error(install(far_side, wrong_outputs, "--to", "docker", "--port", "18303"), 1)
    assert "smoke test failed" in line and "1.0.0 restored" in line
    assert "output 'output_probability': at [0][\"0\"]: got " in line and ", expected " in line
    assert started_by(far_side) == [before], "the failed version's container must be gone"
    with urllib.request.urlopen("http://127.0.0.1:18303/readyz", timeout=5) as resp:
        assert json.loads(resp.read())["model_version"] == "1.0.0"
    [row] = status(far_side)
    assert (row["version"], row["healthy"], row["interrupted"]) == ("1.0.0", True, False)
    assert not list((far_side / "journal").glob("*.json"))


def test_changed_model_output_on_a_fresh_docker_host_leaves_nothing_running(
    far_side: Path, wrong_outputs: Path
) -> None:
    line = assert_one_line_error(install(far_side, wrong_outputs, "--to", "docker", "--port", "18304"), 1)
    assert "nothing left installed" in line and "got " in line
    assert started_by(far_side) == []
    assert not port_in_use(18304)
    assert status(far_side) == []
    again = assert_one_line_error(install(far_side, wrong_outputs, "--to", "docker", "--port", "18304"), 1)
    assert "smoke test failed" in again, "the next run fails the same clean way, not with a crash"
    assert started_by(far_side) == []


def test_changed_model_output_fails_venv_install_with_exit_1_and_removes_the_virtualenv(
    far_side: Path, good: Path, wrong_outputs: Path
) -> None:
    assert install(far_side, good, "--to", "venv").returncode == 0
    venvs = far_side / "venvs" / NAME
    kept = sorted(p.name for p in venvs.iterdir())
    line = assert_one_line_error(install(far_side, wrong_outputs, "--to", "venv"), 1)
    assert "1.0.0 restored" in line and "output 'output_probability'" in line
    assert sorted(p.name for p in venvs.iterdir()) == kept, "the failed version's virtualenv must be gone"
    # The failed install is attested all the same, with its golden numbers (docs/attestations.md).
    from airgap.core.attestation import parse_envelope

    last = sorted((far_side / "attestations").glob("*-install-*.intoto.json"))[-1]
    predicate = parse_envelope(last.read_bytes(), str(last), require_signature=False).statement()["predicate"]
    golden = predicate["airgap"]["golden"]
    assert predicate["result"] == "FAILED" and predicate["airgap"]["bundle_version"] == "1.1.0", predicate
    assert golden["failed"] > 0 and golden["passed"] + golden["failed"] == golden["cases"], golden
    [row] = status(far_side)
    assert (row["version"], row["healthy"], row["interrupted"]) == ("1.0.0", True, False)
    assert run_airgap("smoke", NAME, "--to", "venv", "--state-dir", str(far_side)).returncode == 0


def test_a_taken_port_is_refused_before_anything_starts_naming_the_port_and_the_fix(
    far_side: Path, good: Path
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 18305))
        squatter.listen()
        line = assert_one_line_error(install(far_side, good, "--to", "docker", "--port", "18305"), 5)
    assert "port 18305 on 127.0.0.1 is already in use" in line and "--port" in line
    assert started_by(far_side) == []
    assert status(far_side) == []


def test_a_port_held_by_another_installation_is_named(far_side: Path, good: Path) -> None:
    assert install(far_side, good, "--to", "docker", "--port", "18306").returncode == 0
    line = assert_one_line_error(install(far_side, good, "--to", "podman", "--port", "18306"), 5)
    assert f"in use by {NAME} 1.0.0 (--to docker)" in line
    assert started_by(far_side, "podman") == []


def test_a_model_server_that_dies_before_ready_has_its_last_log_lines_in_the_error(
    far_side: Path, good: Path
) -> None:
    """Port 80 on a host where unprivileged processes may not bind below 1024: the hardened, non-root
    container cannot listen; its log says so, and the error quotes it after the container is gone."""
    from airgap.errors import EnvironmentFailure
    from airgap.services.deploy.install import Installer, InstallOptions
    from airgap.services.state import State

    assert Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text().strip() == "1024"
    state = State(far_side)
    with pytest.raises(EnvironmentFailure) as failure:
        installer = Installer(state, adapters=real_adapters())
        installer.install(good, InstallOptions("docker", port=80, trusted=tuple(state.trust.keys())))
    line = failure.value.one_line()
    assert "stopped before it was ready on port 80; its last log lines: " in line
    assert "fatal: cannot listen on 127.0.0.1:80: Permission denied" in line
    assert "\n" not in line
    assert started_by(far_side) == []
    assert status(far_side) == []


def test_status_and_uninstall_see_an_install_killed_mid_way_and_a_container_nothing_names(
    far_side: Path, good: Path
) -> None:
    killed = run_airgap(
        "install",
        str(good),
        "--to",
        "docker",
        "--port",
        "18307",
        "--state-dir",
        str(far_side),
        kill_at="started",
        timeout=600,
    )
    assert killed.returncode == -9
    [row] = status(far_side)
    assert (row["name"], row["state"], row["healthy"]) == (NAME, "interrupted", False)
    # The journal gone too (a state directory restored from an old backup): the label still tells.
    for journal in (far_side / "journal").glob("*.json"):
        journal.unlink()
    [row] = status(far_side)
    assert (row["state"], row["version"], row["target"]) == ("orphaned", "1.0.0", "docker")
    assert started_by(far_side) == [row["container"]]
    removed = run_airgap("uninstall", NAME, "--to", "docker", "--state-dir", str(far_side))
    assert removed.returncode == 0, removed.stderr
    assert row["container"] in removed.stdout
    assert started_by(far_side) == [] and status(far_side) == []
    assert not port_in_use(18307)
