"""Kubernetes manifests: strict schema validation for the target version, overrides, and a real run."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from airgap.adapters.oci import read_layout
from airgap.adapters.registry import Registry
from airgap.errors import InvalidInputError
from airgap.services.build.project import load_project
from airgap.services.manifests import (
    RenderedFile,
    for_podman,
    render_manifests,
    rewrite_images,
    target_kubernetes_version,
    validate_manifests,
)
from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "tabular"
IMAGE = "airgap/tabular-classifier@sha256:" + "ab" * 32


def rendered(project_dir: Path = EXAMPLE, version: str = "1.30.0") -> list[RenderedFile]:
    project, _ = load_project(project_dir)
    return render_manifests(project, project_dir, IMAGE, version)


def objects(files: list[RenderedFile]) -> dict[str, dict[str, Any]]:
    return {f"{o['kind']}/{o['metadata']['name']}": o for f in files for o in f.objects}


@pytest.mark.parametrize(
    "version", ["1.20.0", "1.21.0", "1.22.0", "1.23.0", "1.24.0", "1.25.0", "1.30.0", "1.37.0"]
)
def test_example_manifests_rendered_for_a_release_pass_its_strict_schemas(version: str) -> None:
    files = rendered(version=version)
    assert validate_manifests(files, version) == 7


@pytest.mark.parametrize(
    ("version", "pdb", "hpa", "psa"),
    [
        ("1.20.2", "policy/v1beta1", "autoscaling/v2beta2", False),
        ("1.21.0", "policy/v1", "autoscaling/v2beta2", False),
        ("1.22.0", "policy/v1", "autoscaling/v2beta2", False),
        ("1.23.0", "policy/v1", "autoscaling/v2", True),
        ("1.30.0", "policy/v1", "autoscaling/v2", True),
    ],
)
def test_the_target_release_decides_the_api_versions_and_the_pod_security_labels(
    tmp_path: Path, version: str, pdb: str, hpa: str, psa: bool
) -> None:
    project = tmp_path / "p"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("build"))
    text = (project / "airgap.yaml").read_text()
    text = text.replace("  replicas: 2", "  replicas: 2\n  autoscaling_max: 4")
    (project / "airgap.yaml").write_text(text)
    objs = objects(rendered(project, version))
    assert objs["PodDisruptionBudget/tabular-classifier"]["apiVersion"] == pdb
    assert objs["HorizontalPodAutoscaler/tabular-classifier"]["apiVersion"] == hpa
    labels = objs["Namespace/tabular"]["metadata"]["labels"]
    assert ("pod-security.kubernetes.io/enforce" in labels) is psa


def test_manifests_rendered_for_1_30_are_refused_by_the_1_20_schemas_naming_the_object() -> None:
    with pytest.raises(
        InvalidInputError,
        match=r"PodDisruptionBudget/tabular-classifier: Kubernetes 1.20.0 has no such kind/apiVersion",
    ):
        validate_manifests(rendered(version="1.30.0"), "1.20.0")


def test_a_release_older_than_any_shipped_schema_is_one_line_naming_the_oldest() -> None:
    with pytest.raises(InvalidInputError, match=r"no schemas for Kubernetes 1.19.0") as refused:
        validate_manifests(rendered(version="1.20.0"), "1.19.0")
    assert "1.20 or newer" in (refused.value.hint or "")


def test_example_manifests_carry_the_restricted_profile_and_the_image_by_digest() -> None:
    objs = objects(rendered(version="1.30.0"))
    ns = objs["Namespace/tabular"]["metadata"]["labels"]
    assert ns["pod-security.kubernetes.io/enforce"] == "restricted"
    assert objs["ServiceAccount/tabular-classifier"]["automountServiceAccountToken"] is False
    pod = objs["Deployment/tabular-classifier"]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["image"] == IMAGE
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"requests", "limits"} <= set(c["resources"])
    assert {"startupProbe", "livenessProbe", "readinessProbe"} <= set(c)
    assert "env" not in c
    deny = objs["NetworkPolicy/default-deny-all"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_a_terminating_pod_keeps_serving_then_drains_within_its_grace_period() -> None:
    """preStop holds SIGTERM back while endpoints stop routing to the pod; then the server's drain.
    Both together must end before the kubelet kills the container."""
    import re

    pod = objects(rendered())["Deployment/tabular-classifier"]["spec"]["template"]["spec"]
    command = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "/opt/airgap/venv/bin/python"  # the image has no shell and no sleep
    slept = float(re.fullmatch(r"import time; time\.sleep\(([\d.]+)\)", command[2]).group(1))  # type: ignore[union-attr]
    server = (ROOT / "bundle_templates" / "server" / "airgap_server.py").read_text()
    drain = float(re.search(r"^DRAIN_SECONDS = ([\d.]+)", server, re.M).group(1))  # type: ignore[union-attr]
    assert slept >= 2 and slept + drain < pod["terminationGracePeriodSeconds"]


@pytest.mark.parametrize("version", ["1.20.0", "1.30.0"])
def test_an_unknown_field_fails_strict_validation_naming_it(version: str) -> None:
    files = rendered(version=version)
    bad = copy.deepcopy(list(files))
    dep = next(f for f in bad if f.name == "20-deployment.yaml")
    obj = dict(dep.objects[0])
    obj["spec"] = {**obj["spec"], "replicaz": 3}
    bad[bad.index(dep)] = RenderedFile(dep.name, dep.text, (obj,))
    with pytest.raises(
        InvalidInputError, match=r"20-deployment.yaml: Deployment/tabular-classifier .*replicaz"
    ):
        validate_manifests(bad, version)


def test_user_templates_override_and_extend_the_shipped_ones(tmp_path: Path) -> None:
    project = tmp_path / "p"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("build"))
    (project / "k8s").mkdir()
    (project / "k8s" / "30-service.yaml.j2").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: custom, namespace: {{ namespace }}}\n"
        "spec: {selector: {app.kubernetes.io/name: {{ name }}},\n"
        "       ports: [{port: 80, targetPort: {{ port }}}]}\n"
    )
    (project / "k8s" / "70-configmap.yaml.j2").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra, namespace: {{ namespace }}}\ndata: {k: v}\n"
    )
    text = (project / "airgap.yaml").read_text().replace("  replicas: 2", "  replicas: 2\n  templates: k8s")
    (project / "airgap.yaml").write_text(text)
    objs = objects(rendered(project))
    assert "Service/custom" in objs and "Service/tabular-classifier" not in objs
    assert "ConfigMap/extra" in objs


def test_target_version_comes_from_the_profile_then_the_project_then_the_default() -> None:
    project, _ = load_project(EXAMPLE)
    assert target_kubernetes_version(project, None) == ("1.30.0", "airgap's default")


@pytest.mark.docker
@pytest.mark.podman
def test_podman_kube_play_runs_the_manifests_and_answers_predict(built: dict[str, Any]) -> None:
    from airgap.adapters.oci import model_layer_image

    root = Path(built["staging"])
    # the model image the manifests name: the server image's layers and the model layer, made from
    # the staged model files as the far side makes it from the installed ones
    signed = built["record"]["image"]["model_image"]
    image = model_layer_image(
        read_layout(root / "image" / "oci"),
        root / "model",
        signed["layer"]["digest"],
        signed["layer"]["size"],
        signed["manifest_digest"],
        signed["config_digest"],
        built["record"]["source_date_epoch"],
    )
    ref = Registry("127.0.0.1:5000", insecure=True).push_image(image, "airgap/tabular-classifier", "1.0.0")
    assert ref.endswith(signed["manifest_digest"])
    files = [
        RenderedFile(p.name, p.read_text(), tuple(o for o in yaml.safe_load_all(p.read_text()) if o))
        for p in sorted((root / "manifests").iterdir())
    ]
    files = rewrite_images(files, built["record"]["manifests"]["image"], ref)
    play = root.parent / "kube-play.yaml"
    play.write_text(for_podman(files, "none"))
    subprocess.run(["podman", "kube", "down", str(play)], capture_output=True)
    proc = subprocess.run(
        ["podman", "kube", "play", "--network", "none", str(play)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    try:
        names = subprocess.run(
            ["podman", "ps", "--format", "{{.Names}}"], capture_output=True, text=True
        ).stdout
        container = next(n for n in names.split() if n.endswith("-model"))
        code = (
            "import json, urllib.request as u\n"
            "r = u.Request('http://127.0.0.1:8080/v1/predict',\n"
            "              headers={'Content-Type': 'application/json'},\n"
            "              data=json.dumps({'inputs': {'features': [[0.64, -1.0, 1.97, -0.71]]}}).encode())\n"
            "print(u.urlopen(r, timeout=5).read().decode())\n"
        )
        deadline = time.monotonic() + 90
        while True:
            out = subprocess.run(
                ["podman", "exec", container, "python", "-c", code], capture_output=True, text=True
            )
            if out.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert out.returncode == 0, out.stderr
        answer = json.loads(out.stdout)
        contract = json.loads((root / "model" / "contract.json").read_text())
        assert answer["outputs"]["label"] == contract["cases"][0]["outputs"]["label"]
        inspect = subprocess.run(
            ["podman", "inspect", container, "--format", "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}}"],
            capture_output=True,
            text=True,
        ).stdout.split()
        assert inspect == ["10001:10001", "true"]
    finally:
        subprocess.run(["podman", "kube", "down", str(play)], capture_output=True)


def _trust(tmp_path: Path, signing_key: Path) -> Path:
    from tests.conftest import run_airgap

    state = tmp_path / "state"
    assert (
        run_airgap(
            "keys", "trust", str(signing_key.with_suffix(".pub")), "--state-dir", str(state)
        ).returncode
        == 0
    )
    return state


@pytest.mark.docker
def test_the_example_bundle_passes_every_policy_and_ships_its_checklist(built: dict[str, Any]) -> None:
    root = Path(built["staging"])
    results = json.loads((root / "compliance" / "results.json").read_text())
    statuses = {r["id"]: r["status"] for r in results["rules"]}
    assert "open" not in statuses.values(), [k for k, v in statuses.items() if v == "open"]
    restricted = [k for k in statuses if k.startswith("AG-PSS-")]
    assert restricted and all(statuses[k] == "not_a_finding" for k in restricted)
    assert (root / "sbom.cdx.json").is_file() and (root / "compliance" / "checklist.cklb").is_file()
    import jsonschema

    schema = json.loads((ROOT / "tests" / "data" / "SV3_CKLB_1_0_JSON_SCHEMA.json").read_text())
    jsonschema.validate(json.loads((root / "compliance" / "checklist.cklb").read_text()), schema)


@pytest.mark.docker
def test_check_gives_the_same_results_on_the_staging_directory_and_the_bundle(
    built: dict[str, Any], signing_key: Path, tmp_path: Path
) -> None:
    from tests.conftest import run_airgap

    state = _trust(tmp_path, signing_key)
    on_staging = run_airgap("--json", "check", built["staging"], "-o", str(tmp_path / "a"))
    on_bundle = run_airgap(
        "--json", "check", built["bundle"][0], "-o", str(tmp_path / "b"), "--state-dir", str(state)
    )
    assert on_staging.returncode == on_bundle.returncode == 0, on_bundle.stderr
    for name in ("results.json", "checklist.md", "checklist.cklb"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


@pytest.mark.docker
def test_check_fails_on_an_injected_privileged_container(built: dict[str, Any], tmp_path: Path) -> None:
    from tests.conftest import run_airgap

    staging = tmp_path / "staging"
    shutil.copytree(built["staging"], staging, ignore=shutil.ignore_patterns("model-image.tar"))
    dep = staging / "manifests" / "20-deployment.yaml"
    dep.write_text(dep.read_text().replace("privileged: false", "privileged: true"))
    proc = run_airgap("check", str(staging), "--fail-on", "high")
    assert proc.returncode == 1
    results = json.loads((staging / "compliance" / "results.json").read_text())
    opened = {r["id"] for r in results["rules"] if r["status"] == "open"}
    assert any("PRIVILEGED" in rule for rule in opened), opened


@pytest.mark.docker
def test_a_written_waiver_appears_as_an_override_in_the_checklist(built: dict[str, Any]) -> None:
    root = Path(built["staging"])
    results = json.loads((root / "compliance" / "results.json").read_text())
    arch = next(r for r in results["rules"] if r["id"] == "AG-TGT-ARCH")
    assert arch["automated_status"] == "open" and arch["status"] == "not_a_finding"
    assert "aarch64 edge host" in arch["waiver"]["justification"]
    assert "aarch64 edge host" in (root / "compliance" / "checklist.md").read_text()
    assert "aarch64 edge host" in (root / "compliance" / "checklist.cklb").read_text()
