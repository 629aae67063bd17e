"""Shadow and promote, for real on the Docker Engine and in virtualenvs: 1.0.0 installed, 1.0.1 (other
weights) run beside it as the candidate, compared, promoted, rolled back.

The session's bundle for this host (``clean_image_bundle``: an image and a host wheelhouse for this
Python) is 1.0.0; 1.0.1 is bundled once from the warm cache, with a ``promote`` section of its own,
and serves both targets.
"""

from __future__ import annotations

import base64
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airgap.adapters.http import request_json
from airgap.cli.wiring import real_adapters
from airgap.services.deploy import targets
from airgap.services.deploy.install import Installer
from airgap.services.state import State
from tests.conftest import EPOCH, PASSPHRASE, assert_one_line_error, run_airgap
from tests.loadloop import LoadLoop
from tests.test_delta import _new_model

pytestmark = [pytest.mark.docker]

NAME = "tabular-classifier"
PORT = 18471
THRESHOLDS = "promote:\n  min_agreement: 0.9\n  max_metric_drop: 0.02\n  max_p95_ratio: 3\n"


@pytest.fixture(scope="module")
def releases(
    clean_image_bundle: dict[str, Any],
    project: Path,
    cache: Path,
    signing_key: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Path]:
    """1.0.0 (the session's bundle) and 1.0.1: other weights, and thresholds for promoting it."""
    root = tmp_path_factory.mktemp("promote")
    v101 = root / "project" / "tabular"
    shutil.copytree(project, v101, ignore=shutil.ignore_patterns("build"))
    text = (v101 / "airgap.yaml").read_text().replace('version: "1.0.0"', 'version: "1.0.1"')
    (v101 / "airgap.yaml").write_text(text + "\n" + THRESHOLDS)
    _new_model(v101 / "model" / "classifier.onnx")
    proc = run_airgap(
        "--json",
        "bundle",
        str(v101),
        "--cache-dir",
        str(cache),
        "--profile",
        str(clean_image_bundle["work"] / "profile.json"),
        "--host-wheelhouse",
        "--key",
        str(signing_key.with_suffix(".key")),
        "-o",
        str(root / "out"),
        env={"SOURCE_DATE_EPOCH": str(int(EPOCH) + 86400), "AIRGAP_KEY_PASSPHRASE": PASSPHRASE},
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    # 1.0.1 again, signed, but holding 1.0.0's golden outputs: a candidate that fails its smoke test.
    staging = root / "repacked" / Path(result["staging"]).name
    shutil.copytree(result["staging"], staging)
    old = json.loads((Path(clean_image_bundle["staging"]) / "model" / "contract.json").read_text())
    (staging / "model" / "contract.json").write_text(json.dumps(old, indent=2))
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
    return {
        "v100": Path(clean_image_bundle["bundle"]),
        "v101": Path(result["bundle"][0]),
        "v101-wrong": Path(json.loads(packed.stdout)["bundle"][0]),
    }


def airgap(far: Path, *args: str) -> Any:
    return run_airgap(*args, "--state-dir", str(far))


def answering(port: int) -> str | None:
    """The version the server on ``port`` says it runs, or None when nothing answers."""
    try:
        status, body = request_json(port, "/readyz", timeout=3)
    except OSError:
        return None
    return str(body.get("model_version")) if status == 200 and isinstance(body, dict) else None


def status_row(far: Path, target: str) -> dict[str, Any]:
    proc = airgap(far, "--json", "status")
    assert proc.returncode == 0, proc.stderr
    [row] = [r for r in json.loads(proc.stdout) if r["target"] == target]
    return dict(row)


@pytest.fixture
def far(tmp_path: Path, signing_key: Path) -> Iterator[Path]:
    state = tmp_path / "state"
    assert (
        run_airgap(
            "keys", "trust", str(signing_key.with_suffix(".pub")), "--state-dir", str(state)
        ).returncode
        == 0
    )
    yield state
    for target in ("docker", "podman", "venv"):
        airgap(state, "uninstall", NAME, "--to", target)


def compare(far: Path, target: str) -> tuple[int, dict[str, Any]]:
    proc = airgap(far, "--json", "compare", NAME, "--to", target)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_candidate_compare_promote_rollback_on_docker(far: Path, releases: dict[str, Path]) -> None:
    proc = airgap(far, "install", str(releases["v100"]), "--to", "docker", "--port", str(PORT))
    assert proc.returncode == 0, proc.stderr
    # A promote with nothing to promote: one line, invalid input.
    line = assert_one_line_error(airgap(far, "promote", NAME, "--to", "docker"), 4)
    assert "no candidate to promote" in line

    # 1. The candidate runs beside the current version, on its own port and container.
    proc = airgap(far, "install", str(releases["v101"]), "--to", "docker", "--candidate")
    assert proc.returncode == 0, proc.stderr
    assert "installed the candidate" in proc.stdout
    row = status_row(far, "docker")
    assert row["version"] == "1.0.0" and row["port"] == PORT
    assert row["candidate"]["version"] == "1.0.1" and row["candidate"]["port"] == PORT + 1
    assert row["candidate"]["container"].endswith("-candidate")
    assert answering(PORT) == "1.0.0" and answering(PORT + 1) == "1.0.1"

    # 2. Other weights answer otherwise: compare says so, names the inputs, and exits 1.
    code, report = compare(far, "docker")
    assert code == 1 and report["ok"] is False
    assert report["current"] == "1.0.0" and report["candidate"] == "1.0.1"
    # 1.0.1's own promote section (min_agreement 0.9) is not its bar: 1.0.0 has none, so the defaults.
    assert report["thresholds"]["min_agreement"] == 0.95
    assert report["thresholds"]["source"] == "airgap's defaults"
    agreement = report["checks"][0]
    assert agreement["what"].startswith("agreement") and not agreement["ok"]
    assert report["disagreements"] and report["disagreements"][0]["input"].startswith(
        ("golden", "acceptance")
    )
    assert set(report["latency_ms"]) == {"current", "candidate"}
    assert set(report["metrics"]["current"]) == {"accuracy", "f1"}
    shown = airgap(far, "compare", NAME, "--to", "docker")
    assert shown.returncode == 1
    assert "MISSES" in shown.stdout and "differs: " in shown.stdout

    # 3. Promote: the normal port answers as the candidate; the candidate's own port is free again.
    proc = airgap(far, "--json", "promote", NAME, "--to", "docker")
    assert proc.returncode == 0, proc.stderr
    assert answering(PORT) == "1.0.1" and answering(PORT + 1) is None
    # The promoted version's smoke test where it now runs is attested, as `airgap smoke` is.
    [attestation] = json.loads(proc.stdout)["attestations"]
    envelope = json.loads(Path(attestation).read_text())
    predicate = json.loads(base64.b64decode(envelope["payload"]))["predicate"]
    assert predicate["result"] == "PASSED" and predicate["airgap"]["action"] == "smoke"
    assert predicate["airgap"]["bundle_version"] == "1.0.1"
    row = status_row(far, "docker")
    assert row["version"] == "1.0.1" and row["previous"] == "1.0.0" and row["candidate"] is None
    assert not row["container"].endswith("-candidate")

    # 4. The same model beside itself agrees with itself: compare passes (exit 0).
    proc = airgap(far, "install", str(releases["v101"]), "--to", "docker", "--candidate")
    assert proc.returncode == 0, proc.stderr
    code, report = compare(far, "docker")
    assert code == 0, report
    assert (
        report["ok"] and not report["disagreements"] and report["checks"][0]["measured"].startswith("100.00%")
    )
    # ...but it is the bundle that runs already: promoting it would stop the running version
    # first (they share the container name). Refused, and the current version keeps answering.
    proc = airgap(far, "promote", NAME, "--to", "docker")
    assert proc.returncode == 4 and "is the bundle that runs already" in proc.stderr, proc.stderr
    assert answering(PORT) == "1.0.1" and answering(PORT + 1) == "1.0.1"

    # 5. Rollback undoes the promote: 1.0.0 answers on the normal port again.
    proc = airgap(far, "rollback", NAME, "--to", "docker")
    assert proc.returncode == 0, proc.stderr
    assert answering(PORT) == "1.0.0"
    assert status_row(far, "docker")["version"] == "1.0.0"

    # 6. Uninstall removes the candidate too.
    proc = airgap(far, "--json", "uninstall", NAME, "--to", "docker")
    assert proc.returncode == 0, proc.stderr
    assert any(r.endswith("-candidate") for r in json.loads(proc.stdout)["removed"])
    assert answering(PORT) is None and answering(PORT + 1) is None


def venv_answers(far: Path, which: str) -> str:
    """The version a virtualenv install answers as, served from its virtualenv on a free port."""
    installer = Installer(State(far), adapters=real_adapters())
    current, _ = installer.installed.get(NAME, "venv")
    receipt = current if which == "current" else installer.installed.candidate(NAME, "venv")
    assert receipt is not None
    with targets.get("venv").endpoint(installer.site, receipt) as port:
        version = answering(port)
    assert version is not None
    return version


def test_candidate_compare_promote_rollback_on_venv(far: Path, releases: dict[str, Path]) -> None:
    proc = airgap(far, "install", str(releases["v100"]), "--to", "venv")
    assert proc.returncode == 0, proc.stderr
    proc = airgap(far, "install", str(releases["v101"]), "--to", "venv", "--candidate")
    assert proc.returncode == 0, proc.stderr
    row = status_row(far, "venv")
    assert row["version"] == "1.0.0" and row["candidate"]["version"] == "1.0.1"
    assert venv_answers(far, "current") == "1.0.0" and venv_answers(far, "candidate") == "1.0.1"

    code, report = compare(far, "venv")
    assert code == 1 and not report["checks"][0]["ok"] and report["disagreements"]

    proc = airgap(far, "promote", NAME, "--to", "venv")
    assert proc.returncode == 0, proc.stderr
    row = status_row(far, "venv")
    assert row["version"] == "1.0.1" and row["previous"] == "1.0.0" and row["candidate"] is None
    assert venv_answers(far, "current") == "1.0.1"
    assert Path(row["venv"]).is_dir(), "the promoted candidate's virtualenv is the current one now"

    proc = airgap(far, "rollback", NAME, "--to", "venv")
    assert proc.returncode == 0, proc.stderr
    assert status_row(far, "venv")["version"] == "1.0.0"
    assert venv_answers(far, "current") == "1.0.0"


def test_a_candidate_that_fails_its_smoke_test_is_removed_and_the_current_version_is_untouched(
    far: Path, releases: dict[str, Path]
) -> None:
    port = PORT + 10
    # Nothing installed: a candidate has nothing to run beside (exit 4).
    line = assert_one_line_error(
        airgap(far, "install", str(releases["v101"]), "--to", "docker", "--candidate"), 4
    )
    assert "a candidate runs beside the current version" in line
    proc = airgap(far, "install", str(releases["v100"]), "--to", "docker", "--port", str(port))
    assert proc.returncode == 0, proc.stderr
    before = status_row(far, "docker")
    proc = airgap(far, "install", str(releases["v101-wrong"]), "--to", "docker", "--candidate")
    line = assert_one_line_error(proc, 1)
    assert "candidate" in line and "failed its smoke test" in line and "1.0.0 still runs" in line
    after = status_row(far, "docker")
    assert (
        after["candidate"] is None
        and after["version"] == "1.0.0"
        and after["container"] == before["container"]
    )
    assert answering(port) == "1.0.0" and answering(port + 1) is None
    docker = Installer(State(far), adapters=real_adapters())._started_here()
    assert [c for _, _, c in docker if c.endswith("-candidate")] == []
    assert not (far / "journal" / f"{NAME}--docker--candidate.json").exists()


@pytest.mark.parametrize(
    ("target", "port"), [("docker", PORT + 20), pytest.param("podman", PORT + 30, marks=pytest.mark.podman)]
)
def test_promote_under_load_fails_no_request(
    far: Path, releases: dict[str, Path], clean_image_bundle: dict[str, Any], target: str, port: int
) -> None:
    proc = airgap(far, "install", str(releases["v100"]), "--to", target, "--port", str(port))
    assert proc.returncode == 0, proc.stderr
    proc = airgap(far, "install", str(releases["v101"]), "--to", target, "--candidate")
    assert proc.returncode == 0, proc.stderr
    staging = Path(clean_image_bundle["staging"])
    golden = json.loads((staging / "model" / "contract.json").read_text())["cases"][0]["inputs"]
    body = json.dumps({"inputs": golden}).encode()

    with LoadLoop(port, body) as load:
        time.sleep(1.0)  # answered by 1.0.0 alone first
        proc = run_airgap("promote", NAME, "--to", target, "--state-dir", str(far), process=True)
        promoted_at = time.monotonic()
        time.sleep(1.5)  # and by 1.0.1 alone after
    assert proc.returncode == 0, proc.stderr
    total = len(load.failures) + len(load.answered)
    assert load.failures == [], f"{len(load.failures)} of {total} failed ({len(load.retried)} sent again)"
    assert len(load.retried) <= 2, load.retried  # a stale keep-alive connection is rare, not the rule
    print(f"promote --to {target} under load: {total} requests, 0 failed, {len(load.retried)} sent again")
    versions = [v for _, v in load.answered]
    assert versions[0] == "1.0.0" and set(versions) == {"1.0.0", "1.0.1"}
    after = [v for at, v in load.answered if at > promoted_at + 0.5]
    assert after and set(after) == {"1.0.1"}, "the old version still answers after the promote"
    assert len(load.answered) > 200, "too little load to prove anything"
    assert answering(port) == "1.0.1" and status_row(far, target)["version"] == "1.0.1"
