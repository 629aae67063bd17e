"""``--to kubernetes`` facing faults the real test cluster cannot be made to produce on demand,
against a recorded conversation with a cluster (``tests/kubefake.py``): a model that answers wrong
behind the port-forward, a rollout stuck half-way or never completing (a real one waits out the
300 s timeout), and a cluster of another Kubernetes release than the test cluster's.

Everything a working cluster does is proven on the real one (tests/test_kubernetes_cluster.py).
What these prove is airgap's side of the conversation under those faults: on a failed smoke test or
rollout it applies the previous version's manifests again (or deletes what it applied) and says so,
and a bundle rendered for another release is refused before anything is pushed or applied. The
image push to the loopback registry is real.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airgap.adapters.kubectl import Rollout
from airgap.cli.wiring import real_adapters
from airgap.errors import AnswerIsNo, EnvironmentFailure
from airgap.services.deploy import targets
from airgap.services.deploy.install import Installer, InstallOptions
from airgap.services.deploy.smoketest import answers_on
from airgap.services.deploy.targets.kubernetes import KubernetesTarget
from airgap.services.state import State
from tests.conftest import assert_one_line_error, run_airgap
from tests.kubefake import RecordedKubectl, model_server, wrong_server

pytestmark = [pytest.mark.docker]

NAME = "tabular-classifier"
REGISTRY = "127.0.0.1:5000"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RecordedKubectl]:
    """The kubernetes target, registered with the fake cluster in place of kubectl; put back after."""
    fake = RecordedKubectl(lambda: model_server(tmp_path / "pods"))
    real = targets.get("kubernetes")
    targets.register(KubernetesTarget(kubectl=lambda context: fake), replace=True)
    try:
        yield fake
    finally:
        targets.register(real, replace=True)


@pytest.fixture
def far_side(tmp_path: Path, signing_key: Path) -> Iterator[Installer]:
    """A state directory that trusts the publisher; what it installed on the engine is removed after."""
    state = tmp_path / "state"
    assert (
        run_airgap(
            "keys", "trust", str(signing_key.with_suffix(".pub")), "--state-dir", str(state)
        ).returncode
        == 0
    )
    installer = Installer(State(state), adapters=real_adapters())
    yield installer
    for row in installer.status():
        if row["target"] == "docker":
            installer.uninstall(row["name"], "docker")


@pytest.fixture(scope="module")
def v2(built_v110: Path) -> Path:
    """Version 1.1.0 of the example, signed by the same key (the session's)."""
    return built_v110


def options(installer: Installer, target: str = "kubernetes", port: int | None = None) -> InstallOptions:
    return InstallOptions(
        target,
        port=port,
        registry=REGISTRY,
        insecure_registry=True,
        trusted=tuple(installer.state.trust.keys()),
    )


def v1(built: dict[str, Any]) -> Path:
    return Path(built["bundle"][0])


def test_fault_a_model_answering_wrong_behind_the_forward_fails_the_smoke_though_docker_answers_on_the_port(
    cluster: RecordedKubectl, far_side: Installer, built: dict[str, Any]
) -> None:
    port = 18260
    assert far_side.install(v1(built), options(far_side, "docker", port)).receipt.port == port
    far_side.install(v1(built), options(far_side, "kubernetes", port))
    cluster.backend = wrong_server
    # The same model answers correctly on the host port (the Docker install) ...
    assert far_side.smoke(NAME, "docker")[1] == []
    answers, _ = answers_on(
        port, {"cases": [{"name": "x", "inputs": {"features": [[0.64, -1.0, 1.97, -0.71]]}}]}
    )
    assert answers["x"]["label"] == [2]
    # ... and the Kubernetes smoke test still fails: it asks the pods, through the forward.
    _, mismatches = far_side.smoke(NAME, "kubernetes")
    assert mismatches and "label" in mismatches[0].line()
    assert cluster.calls[-1][0] == "port-forward"


def test_fault_a_rollout_stuck_half_way_is_not_healthy(
    cluster: RecordedKubectl, far_side: Installer, built: dict[str, Any]
) -> None:
    far_side.install(v1(built), options(far_side))
    waiting = f'Waiting for deployment "{NAME}" rollout to finish: 0 of 1 updated replicas are available...'
    cluster.rollouts = [Rollout(False, waiting)]
    [row] = far_side.status()
    assert row["healthy"] is False and cluster.calls[-1][0] == "rollout status"
    [row] = far_side.status()
    assert row["healthy"] is True  # the rollout completed since


def test_fault_a_rollout_that_never_completes_fails_the_install_and_deletes_what_was_applied(
    cluster: RecordedKubectl, far_side: Installer, built: dict[str, Any]
) -> None:
    cluster.rollouts = [Rollout(False, "error: timed out waiting for the condition")]
    with pytest.raises(EnvironmentFailure, match="did not complete: error: timed out waiting for"):
        far_side.install(v1(built), options(far_side))
    assert [c[0] for c in cluster.calls] == ["version", "apply", "rollout status", "delete"]
    assert not any(k.startswith("Namespace/") for k in cluster.calls[-1][1])
    assert cluster.deployments == {} and far_side.status() == []


def test_fault_a_failed_smoke_on_a_fresh_cluster_deletes_the_deployment_and_says_so(
    cluster: RecordedKubectl, far_side: Installer, built: dict[str, Any]
) -> None:
    cluster.backend = wrong_server
    with pytest.raises(AnswerIsNo) as failed:
        far_side.install(v1(built), options(far_side))
    line = failed.value.one_line()
    assert "smoke test failed, the new version removed and nothing left installed" in line
    assert f"deployment/{NAME} deleted from" in line
    assert cluster.calls[-1][0] == "delete" and f"Deployment/{NAME}" in cluster.calls[-1][1]
    assert cluster.deployments == {} and far_side.status() == []
    assert not list((far_side.state.directory / "journal").glob("*.json"))


def test_fault_a_failed_smoke_applies_the_previous_manifests_again_and_says_so(
    cluster: RecordedKubectl, far_side: Installer, built: dict[str, Any], v2: Path
) -> None:
    first = far_side.install(v1(built), options(far_side)).receipt
    ns = first.extra["namespace"]
    cluster.backend = wrong_server
    with pytest.raises(AnswerIsNo) as failed:
        far_side.install(v2, options(far_side))
    line = failed.value.one_line()
    assert (
        "the new version removed and 1.0.0 restored (its manifests applied again, its rollout complete)"
        in line
    )
    applies = [c for c in cluster.calls if c[0] == "apply"]
    assert len(applies) == 3  # v1, v2, v1 again
    assert cluster.deployments[(ns, NAME)] == first.extra["registry_ref"]  # v1's image runs again
    assert cluster.calls[-1] == ("rollout status", ns, NAME, 300.0)
    [row] = far_side.status()
    assert (row["version"], row["healthy"], row["interrupted"]) == ("1.0.0", True, False)


def test_fault_a_bundle_for_another_release_is_refused_before_anything_is_pushed_or_applied(
    cluster: RecordedKubectl, far_side: Installer, built: dict[str, Any], tmp_path: Path
) -> None:
    """The session's bundle is rendered for the test cluster's 1.20; this cluster runs 1.30."""
    cluster.version = "v1.30.2"
    state = str(far_side.state.directory)
    proc = run_airgap(
        "install", str(v1(built)), "--to", "kubernetes", "--registry", REGISTRY, "--insecure-registry",
        "--state-dir", state,
    )  # fmt: skip
    line = assert_one_line_error(proc, 4)
    assert "manifests are for Kubernetes 1.20, the cluster (the current context) runs v1.30.2" in line
    assert f"PodDisruptionBudget/{NAME} (policy/v1beta1, not policy/v1)" in line
    assert "Namespace/tabular (no Pod Security labels)" in line
    assert cluster.calls == [("version",)]  # nothing applied
    assert far_side.status() == []
    audit = (far_side.state.directory / "audit.log").read_text()
    assert '"result": "refused"' in audit and "Kubernetes 1.20" in audit
