"""``--to kubernetes`` against a recorded conversation with a cluster (``tests/kubefake.py``).

There is no cluster here: what these tests prove is airgap's side of the conversation — that it
applies the bundle's manifests, waits for the rollout and reads readiness from it, sends the smoke
test through a port-forward to the deployment it applied (a real HTTP exchange with the server the
forward reaches), and on a failed smoke test applies the previous version's manifests again (or
deletes what it applied) and says so. The image push to the loopback registry is real.
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
from tests.conftest import run_airgap
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


def test_kubernetes_install_waits_for_the_rollout_and_smokes_through_a_port_forward_to_what_it_applied(
    cluster: RecordedKubectl, far_side: Installer, built: dict[str, Any]
) -> None:
    result = far_side.install(v1(built), options(far_side))
    r = result.receipt
    ns, deployment = r.extra["namespace"], r.extra["deployment"]
    assert deployment == NAME
    assert result.prediction and result.prediction["outputs"]["label"] == [2]
    verbs = [c[0] for c in cluster.calls]
    assert verbs == ["apply", "rollout status", "port-forward"], cluster.calls
    assert f"Deployment/{NAME}" in cluster.calls[0][1]
    assert cluster.calls[1] == ("rollout status", ns, NAME, 300.0)
    assert cluster.calls[2] == ("port-forward", ns, f"deployment/{NAME}", 8080)
    assert cluster.deployments[(ns, NAME)] == r.extra["registry_ref"]
    assert r.extra["registry_ref"].startswith(f"{REGISTRY}/airgap/{NAME}@sha256:")
    assert cluster.forwarded and cluster.forwarded[0] != r.port  # an ephemeral port, not the host's
    [row] = far_side.status()
    assert row["healthy"] and cluster.calls[-1] == ("rollout status", ns, NAME, 0)
    _, mismatches = far_side.smoke(NAME, "kubernetes")
    assert mismatches == [] and cluster.calls[-1][0] == "port-forward" and len(cluster.forwarded) == 2


def test_kubernetes_smoke_fails_when_the_forwarded_server_answers_wrong_though_docker_answers_on_the_port(
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


def test_kubernetes_is_not_healthy_while_its_rollout_is_not_complete(
    cluster: RecordedKubectl, far_side: Installer, built: dict[str, Any]
) -> None:
    far_side.install(v1(built), options(far_side))
    waiting = f'Waiting for deployment "{NAME}" rollout to finish: 0 of 1 updated replicas are available...'
    cluster.rollouts = [Rollout(False, waiting)]
    [row] = far_side.status()
    assert row["healthy"] is False and cluster.calls[-1][0] == "rollout status"
    [row] = far_side.status()
    assert row["healthy"] is True  # the rollout completed since


def test_a_rollout_that_does_not_complete_fails_the_install_and_deletes_what_was_applied(
    cluster: RecordedKubectl, far_side: Installer, built: dict[str, Any]
) -> None:
    cluster.rollouts = [Rollout(False, "error: timed out waiting for the condition")]
    with pytest.raises(EnvironmentFailure, match="did not complete: error: timed out waiting for"):
        far_side.install(v1(built), options(far_side))
    assert [c[0] for c in cluster.calls] == ["apply", "rollout status", "delete"]
    assert not any(k.startswith("Namespace/") for k in cluster.calls[-1][1])
    assert cluster.deployments == {} and far_side.status() == []


def test_a_failed_kubernetes_smoke_on_a_fresh_cluster_deletes_the_deployment_and_says_so(
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


def test_a_failed_kubernetes_smoke_applies_the_previous_manifests_again_and_says_so(
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


def test_kubernetes_rollback_applies_the_previous_manifests_and_smokes_them(
    cluster: RecordedKubectl, far_side: Installer, built: dict[str, Any], v2: Path
) -> None:
    first = far_side.install(v1(built), options(far_side)).receipt
    second = far_side.install(v2, options(far_side)).receipt
    ns = first.extra["namespace"]
    assert cluster.deployments[(ns, NAME)] == second.extra["registry_ref"]
    back = far_side.rollback(NAME, "kubernetes", options(far_side))
    assert back.receipt.version == "1.0.0"
    assert cluster.deployments[(ns, NAME)] == first.extra["registry_ref"]
    assert [c[0] for c in cluster.calls[-3:]] == ["apply", "rollout status", "port-forward"]
    removed = far_side.uninstall(NAME, "kubernetes")
    assert removed == [f"deployment/{NAME} in namespace {ns}"] and cluster.deployments == {}
