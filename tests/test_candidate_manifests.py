"""A candidate on Kubernetes: a second Deployment with its own Service, valid for the target's
schemas, that never shares a selector with the current version. (Installed, compared, promoted and
rolled back on the real cluster: tests/test_kubernetes_cluster.py.)"""

from __future__ import annotations

import pytest

from airgap.core.candidate_manifests import candidate_objects
from airgap.services.manifests import RenderedFile, validate_manifests
from tests.test_manifests import objects, rendered

NAME = "tabular-classifier"


@pytest.mark.parametrize("version", ["1.20.2", "1.25.0", "1.30.0"])
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
