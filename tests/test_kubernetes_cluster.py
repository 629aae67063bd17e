"""``--to kubernetes`` on a real cluster: the Kubernetes 1.20.2 node of scripts/cluster.sh (a real
API server, controllers, scheduler, kube-proxy and a kubelet running the pods on the Docker Engine).

One state directory and the session's bundles (1.0.0, 1.1.0, rendered for 1.20) go through what a
site does: install (two replicas rolled out, smoke test through a port-forward), accept (load on
every replica), a candidate compared and promoted as a rolling update, a rollback, a kill at each
install step recovered by the next run, and an uninstall that takes seconds. The tests run in file
order and each leaves the cluster as the next expects; every wait is on a condition.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airgap.adapters.http import request_json
from tests.conftest import run_airgap

NAME = "tabular-classifier"
NAMESPACE = "tabular"
REGISTRY = "127.0.0.1:5000"
SELECTOR = f"app.kubernetes.io/name={NAME}"
TO = ("--to", "kubernetes", "--registry", REGISTRY, "--insecure-registry")
GRACE_SECONDS = 20  # bundle_templates/k8s/20-deployment.yaml.j2
INSTALL_STEPS = ("verified", "extracted", "created", "started", "smoke-passed", "committed")


def kubectl(*args: str, timeout: float = 120) -> str:
    proc = subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (args, proc.stderr)
    return proc.stdout


def deployment(name: str = NAME) -> dict[str, Any]:
    return dict(json.loads(kubectl("-n", NAMESPACE, "get", "deployment", name, "-o", "json")))


def pods() -> list[dict[str, Any]]:
    """The model's pods that are not being deleted."""
    items = json.loads(kubectl("-n", NAMESPACE, "get", "pods", "-l", SELECTOR, "-o", "json"))["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def image_of(d: dict[str, Any]) -> str:
    return str(d["spec"]["template"]["spec"]["containers"][0]["image"])


def digest_of(bundle: Path) -> str:
    """The digest of the image the cluster runs, as the bundle's signed build.json records it (its
    staging, beside the bundle): the model image — the server image's layers and the model layer."""
    [record] = [json.loads(p.read_text()) for p in bundle.parent.glob("*/build.json")]
    return str(record["image"]["model_image"]["manifest_digest"])


@contextlib.contextmanager
def forward_to_pod(pod: str) -> Iterator[int]:
    """A port-forward of the test's own to one pod (to read that replica's metrics)."""
    proc = subprocess.Popen(
        ["kubectl", "-n", NAMESPACE, "port-forward", "--address", "127.0.0.1", f"pod/{pod}", ":8080"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        m = re.search(r"127\.0\.0\.1:(\d+)", proc.stdout.readline())
        assert m, proc.stderr.read() if proc.stderr else "no output"
        yield int(m.group(1))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def predictions_served(pod: str) -> int:
    """How many /v1/predict requests this replica answered, from its own /metrics."""
    import http.client

    with forward_to_pod(pod) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
    return sum(
        int(float(m.group(1)))
        for m in re.finditer(r'airgap_requests_total\{path="/v1/predict",code="200"\} (\S+)', text)
    )


def airgap(*args: str, state: Path, process: bool = False, kill_at: str | None = None) -> Any:
    return run_airgap(*args, "--state-dir", str(state), process=process, kill_at=kill_at, timeout=600)


def leftovers() -> None:
    """Deletes the model's objects (current and candidate) from the namespace and waits for its
    pods to be gone."""
    selector = f"app.kubernetes.io/name in ({NAME},{NAME}-candidate)"
    kinds = "deployment,service,networkpolicy,poddisruptionbudget,serviceaccount"
    kubectl("-n", NAMESPACE, "delete", kinds, "-l", selector, "--ignore-not-found", "--wait=true")
    kubectl("-n", NAMESPACE, "wait", "--for=delete", "pod", "-l", selector, "--timeout=90s")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, signing_key: Path, kube_cluster: str) -> Iterator[Path]:
    """A state directory that trusts the session's key; whatever it still has installed on the
    cluster at the end is uninstalled."""
    state = tmp_path_factory.mktemp("k8s-site") / "state"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KUBECONFIG", kube_cluster)
        leftovers()  # of a run that was stopped before its clean-up
    trusted = run_airgap("keys", "trust", str(signing_key.with_suffix(".pub")), "--state-dir", str(state))
    assert trusted.returncode == 0, trusted.stderr
    yield state
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KUBECONFIG", kube_cluster)
        run_airgap("uninstall", NAME, "--to", "kubernetes", "--state-dir", str(state))


def test_install_rolls_out_two_replicas_of_the_image_by_digest_and_smokes_through_a_port_forward(
    kubeconfig: str, site: Path, built: dict[str, Any]
) -> None:
    bundle = Path(built["bundle"][0])
    proc = airgap("install", str(bundle), *TO, state=site)
    assert proc.returncode == 0, proc.stderr
    assert f"--to kubernetes at deployment/{NAME} in namespace {NAMESPACE}: smoke test passed" in proc.stdout
    # No host port is published: the curl line comes with the port-forward that makes it work.
    assert f"serve it: kubectl -n {NAMESPACE} port-forward deployment/{NAME} 8080:8080 &" in proc.stdout
    d = deployment()
    assert image_of(d) == f"{REGISTRY}/airgap/{NAME}@{digest_of(bundle)}"
    assert d["status"]["readyReplicas"] == 2 and d["status"]["updatedReplicas"] == 2
    running = pods()
    assert len(running) == 2 and all(p["status"]["phase"] == "Running" for p in running)
    assert {p["spec"]["nodeName"] for p in running}  # scheduled by the real scheduler
    # The pods answer through a port-forward (the smoke test's path): the golden case, label 2.
    with forward_to_pod(running[0]["metadata"]["name"]) as port:
        status, body = request_json(
            port, "/v1/predict", {"inputs": {"features": [[0.64, -1.0, 1.97, -0.71]]}}, timeout=10
        )
    assert status == 200 and body["outputs"]["label"] == [2]
    st = airgap("--json", "status", state=site)
    [row] = [r for r in json.loads(st.stdout) if r["target"] == "kubernetes"]
    assert row["version"] == "1.0.0" and row["healthy"] is True


def test_accept_loads_every_replica_and_measures_every_promise(kubeconfig: str, site: Path) -> None:
    """Every replica answers a share of the SLO run (each pod's own /metrics says so), and every
    promise is measured. The verdict on latency is the machine's: on a shared 2-core host the
    pods' CPU limit makes p95 a matter of what else runs, so only the other promises must hold."""
    names = sorted(p["metadata"]["name"] for p in pods())
    before = {n: predictions_served(n) for n in names}
    proc = airgap("--json", "accept", NAME, "--to", "kubernetes", state=site)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["target"] == "kubernetes" and report["figures"]["load"]
    missed = [f"{p['section']}: {p['what']}" for p in report["promises"] if not p["ok"]]
    assert all(m.startswith("slo: p9") for m in missed), missed
    assert len(report["promises"]) == 8
    after = {n: predictions_served(n) for n in names}
    # The SLO run alone is 200 requests on 4 connections, handed to the 2 pods in turn.
    assert all(after[n] - before[n] >= 50 for n in names), (before, after)


def test_a_candidate_is_compared_then_promoted_as_a_rolling_update_and_rolled_back(
    kubeconfig: str, site: Path, built: dict[str, Any], built_v110: Path
) -> None:
    uid = deployment()["metadata"]["uid"]
    v1_image = image_of(deployment())
    cand = airgap("install", str(built_v110), *TO, "--candidate", state=site)
    assert cand.returncode == 0, cand.stderr
    assert image_of(deployment(f"{NAME}-candidate")).endswith(digest_of(built_v110))
    assert image_of(deployment()) == v1_image  # the current version untouched beside it
    compared = airgap("compare", NAME, "--to", "kubernetes", state=site)
    assert compared.returncode == 0, compared.stdout + compared.stderr
    promoted = airgap("promote", NAME, "--to", "kubernetes", state=site)
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert f"as deployment/{NAME} in namespace {NAMESPACE}; smoke test passed" in promoted.stdout
    d = deployment()
    # A rolling update of the same Deployment (same object, next generation), not a replacement.
    assert d["metadata"]["uid"] == uid and image_of(d).endswith(digest_of(built_v110))
    assert d["spec"]["strategy"]["type"] == "RollingUpdate" and d["status"]["readyReplicas"] == 2
    gone = subprocess.run(
        ["kubectl", "-n", NAMESPACE, "get", "deployment", f"{NAME}-candidate"], capture_output=True, text=True
    )
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    back = airgap("rollback", NAME, "--to", "kubernetes", state=site)
    assert back.returncode == 0, back.stdout + back.stderr
    d = deployment()
    assert d["metadata"]["uid"] == uid and image_of(d) == v1_image and d["status"]["readyReplicas"] == 2
    assert {p["spec"]["containers"][0]["image"] for p in pods()} == {v1_image}


def test_an_install_killed_at_each_step_is_recovered_by_the_next_run(
    kubeconfig: str, site: Path, built_v110: Path
) -> None:
    """1.0.0 runs. Installing 1.1.0 is killed (SIGKILL) right after each of its steps in turn; each
    run first recovers the one killed before it (it cannot reach its own step otherwise), and the
    last, uninterrupted run completes the install killed after its commit. One healthy version is
    left, every pod on its image, and no journal."""
    journal = site / "journal"
    for step in INSTALL_STEPS:
        killed = airgap("install", str(built_v110), *TO, state=site, kill_at=step)
        assert killed.returncode == -9, (step, killed.stdout + killed.stderr)
        [left] = [json.loads(p.read_text()) for p in journal.glob("*.json")]
        assert left["steps"][-1] == step, left["steps"]
    again = airgap("install", str(built_v110), *TO, state=site)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "completed the interrupted install" in again.stdout + again.stderr
    d = deployment()
    assert image_of(d).endswith(digest_of(built_v110)) and d["status"]["readyReplicas"] == 2
    assert {p["spec"]["containers"][0]["image"] for p in pods()} == {image_of(d)}
    assert not list(journal.glob("*.json"))
    st = airgap("--json", "status", state=site)
    [row] = [r for r in json.loads(st.stdout) if r["target"] == "kubernetes"]
    assert (row["version"], row["healthy"], row["interrupted"]) == ("1.1.0", True, False)


def test_probe_reports_the_cluster_release_from_the_current_kubeconfig(
    kubeconfig: str, tmp_path: Path
) -> None:
    proc = run_airgap("probe", "--egress-check", "none", "-o", str(tmp_path / "p.json"))
    assert proc.returncode == 0, proc.stderr
    k8s = json.loads((tmp_path / "p.json").read_text())["kubernetes"]
    assert k8s["server"]["version"] == "v1.20.2" and k8s["context"] == "airgap-test-k8s"
    assert "server v1.20.2" in proc.stdout


def test_uninstall_removes_the_deployment_and_its_pods_in_seconds(kubeconfig: str, site: Path) -> None:
    """The command returns once the objects are deleted; the pods then stop within their bounded
    grace period (a 5 s preStop wait, then the server's drain of at most 10 s after SIGTERM), never
    Kubernetes' default 30 s. The wait allows two more grace periods for a kubelet slowed by a busy
    two-core machine, where pod deletion has taken up to 40 s."""
    grace = deployment()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace == GRACE_SECONDS
    start = time.monotonic()
    proc = airgap("uninstall", NAME, "--to", "kubernetes", state=site)
    assert proc.returncode == 0, proc.stderr
    returned = time.monotonic() - start
    assert returned < 10, f"airgap uninstall took {returned:.1f}s"
    gone = subprocess.run(
        ["kubectl", "-n", NAMESPACE, "get", "deployment", NAME], capture_output=True, text=True
    )
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    kubectl("-n", NAMESPACE, "wait", "--for=delete", "pod", "-l", SELECTOR, f"--timeout={3 * GRACE_SECONDS}s")
    assert pods() == []


def test_install_sh_hands_over_to_kubernetes(
    kubeconfig: str, clean_image_bundle: dict[str, Any], tmp_path: Path
) -> None:
    """The far side's own script: checks the bundle, makes airgap's virtualenv from the bundle
    (offline), then `airgap install --to kubernetes` on this cluster."""
    tar = clean_image_bundle["bundle"]
    # As docs/bundle-format.md says: install.sh is a blob, named in the signed manifest.
    with tarfile.open(tar) as t:
        manifest = t.extractfile("bundle/manifest.json")
        assert manifest is not None
        m = re.search(r'"path":\s*"install\.sh",\s*"sha256":\s*"([0-9a-f]{64})"', manifest.read().decode())
        assert m
        blob = t.extractfile(f"bundle/blobs/sha256/{m.group(1)}")
        assert blob is not None
        (tmp_path / "bundle").mkdir()
        (tmp_path / "bundle" / "install.sh").write_bytes(blob.read())
    state = tmp_path / "state"
    argv = [
        "sh", str(tmp_path / "bundle" / "install.sh"),
        "--key", str(clean_image_bundle["public_key"]), str(tar),
        "--prefix", str(tmp_path / "prefix"), "--state-dir", str(state), "--python", "/usr/bin/python3",
        "--", *TO,
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"installed {NAME} 1.0.0 --to kubernetes" in proc.stdout, proc.stdout
        assert deployment()["status"]["readyReplicas"] == 2
    finally:
        removed = subprocess.run(
            [str(tmp_path / "prefix" / "venv" / "bin" / "airgap"), "uninstall", NAME, "--to", "kubernetes",
             "--state-dir", str(state)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert removed.returncode == 0, removed.stdout + removed.stderr
    kubectl("-n", NAMESPACE, "wait", "--for=delete", "pod", "-l", SELECTOR, "--timeout=90s")
    assert pods() == []
