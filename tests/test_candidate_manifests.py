"""A candidate on Kubernetes: a second Deployment with its own Service, valid for the target's
schemas, that never shares a selector with the current version; installed, promoted and rolled
back against the recorded cluster conversation of ``tests/kubefake.py`` (no cluster here)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airgap.cli.wiring import real_adapters
from airgap.core.candidate_manifests import candidate_objects
from airgap.services.deploy import targets
from airgap.services.deploy.candidate import promote
from airgap.services.deploy.install import Installer, InstallOptions
from airgap.services.deploy.targets.kubernetes import KubernetesTarget
from airgap.services.manifests import RenderedFile, validate_manifests
from airgap.services.state import State
from tests.conftest import run_airgap
from tests.kubefake import RecordedKubectl, model_server
from tests.test_manifests import objects, rendered

NAME = "tabular-classifier"


@pytest.mark.parametrize("version", ["1.25.0", "1.30.0"])
def test_the_candidate_renders_as_a_second_deployment_and_service_that_validate(version: str) -> None:
    made = candidate_objects(o for f in rendered() for o in f.objects)
    names = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in made)
    assert names == [
        f"Deployment/{NAME}-candidate",
        f"NetworkPolicy/{NAME}-ingress-candidate",
        f"Service/{NAME}-candidate",
    ]
    assert validate_manifests([RenderedFile("candidate.yaml", "", tuple(made))], version) == 3


def test_the_candidate_shares_no_selector_with_the_current_version() -> None:
    current = objects(rendered())
    made = {f"{o['kind']}/{o['metadata']['name']}": o for o in candidate_objects(current.values())}
    deployment, service = made[f"Deployment/{NAME}-candidate"], made[f"Service/{NAME}-candidate"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert all(pod_labels[k] == v for k, v in selector.items())
    assert all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items())
    # The current Service and Deployment do not select the candidate's pods.
    for current_selector in (
        current[f"Service/{NAME}"]["spec"]["selector"],
        current[f"Deployment/{NAME}"]["spec"]["selector"]["matchLabels"],
    ):
        assert any(pod_labels.get(k) != v for k, v in current_selector.items())
    assert deployment["spec"]["replicas"] == 1
    # Same image, same hardening: only names, labels and replicas differ.
    current_pod = current[f"Deployment/{NAME}"]["spec"]["template"]["spec"]
    assert deployment["spec"]["template"]["spec"] == current_pod


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RecordedKubectl]:
    fake = RecordedKubectl(lambda: model_server(tmp_path / "pods"))
    real = targets.get("kubernetes")
    targets.register(KubernetesTarget(kubectl=lambda context: fake), replace=True)
    try:
        yield fake
    finally:
        targets.register(real, replace=True)


@pytest.mark.docker
def test_a_kubernetes_candidate_is_applied_beside_the_current_one_then_promoted_and_rolled_back(
    cluster: RecordedKubectl, tmp_path: Path, signing_key: Path, built: dict[str, Any]
) -> None:
    state = tmp_path / "state"
    assert (
        run_airgap(
            "keys", "trust", str(signing_key.with_suffix(".pub")), "--state-dir", str(state)
        ).returncode
        == 0
    )
    installer = Installer(State(state), adapters=real_adapters())
    opts = InstallOptions(
        "kubernetes",
        registry="127.0.0.1:5000",
        insecure_registry=True,
        trusted=tuple(installer.state.trust.keys()),
    )
    bundle = Path(built["bundle"][0])
    installer.install(bundle, opts)
    cluster.calls.clear()
    cand = installer.install(bundle, InstallOptions(**{**opts.__dict__, "candidate": True})).receipt
    ns = cand.extra["namespace"]
    assert cand.extra["deployment"] == f"{NAME}-candidate"
    applied = cluster.calls[0]
    assert applied[0] == "apply" and set(applied[1]) == {
        f"Deployment/{NAME}-candidate",
        f"Service/{NAME}-candidate",
        f"NetworkPolicy/{NAME}-ingress-candidate",
    }
    assert ("port-forward", ns, f"deployment/{NAME}-candidate", 8080) in cluster.calls
    assert (ns, NAME) in cluster.deployments and (ns, f"{NAME}-candidate") in cluster.deployments

    cluster.calls.clear()
    promoted = promote(installer, NAME, "kubernetes", opts).receipt
    assert promoted.extra["deployment"] == NAME
    assert cluster.calls[0][0] == "apply" and f"Deployment/{NAME}" in cluster.calls[0][1]
    deleted = [c[1] for c in cluster.calls if c[0] == "delete"]
    assert deleted and f"Deployment/{NAME}-candidate" in deleted[0] and f"Deployment/{NAME}" not in deleted[0]
    assert (ns, f"{NAME}-candidate") not in cluster.deployments
    current, previous = installer.installed.get(NAME, "kubernetes")
    assert (
        current is not None
        and previous is not None
        and installer.installed.candidate(NAME, "kubernetes") is None
    )
    installer.rollback(NAME, "kubernetes", opts)
    assert installer.installed.get(NAME, "kubernetes")[0].installed_at == previous.installed_at  # type: ignore[union-attr]
