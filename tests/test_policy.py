"""The policy engine and the shipped rules, on values: a corpus of bad manifests, each named after
the mistake it carries, must yield exactly its findings (rule, STIG/SRG ids, object, field); a
clean bundle must yield none; manual rules are never passed; waivers and --fail-on behave as
documented; a rule file that cites an id airgap cannot back is refused.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from airgap.core.checklist import ChecklistContext, render_all
from airgap.core.policy import (
    SELECTORS,
    Catalog,
    Evaluation,
    Item,
    ObjectRef,
    RuleResult,
    Selector,
    evaluate,
    format_path,
    parse_catalog,
    parse_path,
)
from airgap.core.project import Waiver
from airgap.errors import InvalidInputError
from airgap.resources import policies_dir
from airgap.services.build.check import load_catalog
from tests.conftest import ROOT
from tests.disa import DISA

MANIFESTS = ROOT / "tests" / "data" / "manifests"
GOOD = sorted((MANIFESTS / "good").glob("*.yaml"))
PROFILE = ROOT / "tests" / "data" / "profiles" / "rocky8-aarch64-py310.json"
DIGEST = "sha256:" + "b" * 64
K8S_SELECTORS = {"objects", "pod_specs", "containers", "namespaces"}


def srg(group_id: str) -> tuple[str, str, str | None]:
    """A Container Platform SRG reference as the catalog resolves it (with DISA's SRG id)."""
    return ("container_platform_srg", group_id, DISA["container_platform_srg"][group_id]["rule_version"])


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog([policies_dir()])


def manifests(*paths: Path) -> list[dict[str, Any]]:
    out = []
    for path in paths:
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc:
                out.append({"source": f"manifests/{path.name}", "document": i, "object": doc})
    return out


def bundle_facts(objects: list[dict[str, Any]] | None = None, **overrides: Any) -> dict[str, Any]:
    """The facts of a bundle that does everything right; tests change one thing at a time."""
    facts: dict[str, Any] = {
        "manifests": objects if objects is not None else manifests(*GOOD),
        "image": {
            "ref": "airgap/tabular-classifier:1.0.0",
            "id": "sha256:" + "a" * 64,
            "digest": None,
            "user": "10001:10001",
            "labels": {
                "org.opencontainers.image.title": "tabular-classifier",
                "org.opencontainers.image.version": "1.0.0",
                "org.opencontainers.image.created": "2023-11-14T22:13:20Z",
                "org.opencontainers.image.base.digest": DIGEST,
                "org.opencontainers.image.base.name": "127.0.0.1:5000/airgap/python-base:bookworm",
            },
            "exposed_ports": ["8080/tcp"],
            "env": ["PATH=/opt/airgap/venv/bin:/usr/bin:/bin", "AIRGAP_PORT=8080"],
            "arch": "x86_64",
        },
        "base_image": {
            "requested": "127.0.0.1:5000/airgap/python-base:bookworm",
            "resolved": f"127.0.0.1:5000/airgap/python-base@{DIGEST}",
            "pinned_by_digest": True,
        },
        "lock": {"pins": 5, "all_hashed": True, "hash_algorithms": ["sha256"], "unhashed": []},
        "host_lock": None,
        "signature": {
            "algorithm": "ecdsa-p384-sha384",
            "curve": "secp384r1",
            "key_bits": 384,
            "hash": "sha384",
        },
        "hashes": {"manifest_algorithm": "sha256"},
        "sbom": {"present": True, "spec_version": "1.6", "components": 130, "format": "CycloneDX"},
        "profile": None,
        "project": {"name": "tabular-classifier", "version": "1.0.0", "namespace": "tabular"},
        "bundle": {"files": 20, "size_bytes": 400_000_000, "required_disk_bytes": 800_000_000},
        "sources": {
            "image": "build.json",
            "base_image": "build.json",
            "lock": "requirements.lock",
            "signature": "signature.json",
            "sbom": "sbom.cdx.json",
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(facts.get(key), dict):
            facts[key] = {**facts[key], **value}
        else:
            facts[key] = value
    return facts


def open_results(ev: Evaluation) -> dict[str, RuleResult]:
    return {r.rule.id: r for r in ev.results if r.status == "open"}


def refs(result: RuleResult) -> set[tuple[str, str, str | None]]:
    return {(r.benchmark, r.group_id, r.stig_id) for r in result.rule.references.benchmarks}


# ------------------------------------------------------------------------------------ the corpus

PSS = ("kubernetes_stig", "V-254800", "CNTR-K8-002011")
CONTAINER = "spec.template.spec.containers[0]"
SC = f"{CONTAINER}.securityContext"
POD = "spec.template.spec"
PSA_LABEL = 'metadata.labels["pod-security.kubernetes.io/enforce"]'

# bad file -> {rule id: (a field one of its findings names, STIG/SRG references it must carry)}
BAD: dict[str, dict[str, tuple[str, set[tuple[str, str, str | None]]]]] = {
    "privileged": {
        "AG-PSS-PRIVILEGED": (
            f"{SC}.privileged",
            {PSS, srg("V-233185"), srg("V-233127")},
        ),
        "AG-PSS-PRIVILEGE-ESCALATION": (f"{SC}.allowPrivilegeEscalation", {PSS}),
    },
    "hostpath": {
        "AG-PSS-HOST-PATH": (
            f"{POD}.volumes[1].hostPath",
            {PSS, srg("V-233127")},
        ),
        "AG-PSS-VOLUME-TYPES": (f"{POD}.volumes[1]", {PSS}),
    },
    "host-network": {"AG-PSS-HOST-NAMESPACES": (f"{POD}.hostNetwork", {PSS, srg("V-233127")})},
    "host-pid": {"AG-PSS-HOST-NAMESPACES": (f"{POD}.hostPID", {PSS})},
    "host-ipc": {"AG-PSS-HOST-NAMESPACES": (f"{POD}.hostIPC", {PSS})},
    "run-as-root": {
        "AG-PSS-RUN-AS-USER": (
            f"{SC}.runAsUser",
            {
                PSS,
                ("kubernetes_stig", "V-242437", "CNTR-K8-002010"),
                srg("V-233163"),
            },
        )
    },
    "capability-sys-admin": {
        "AG-PSS-CAPABILITIES-ADD": (
            f"{SC}.capabilities.add[0]",
            {PSS, srg("V-233163")},
        )
    },
    "secret-env": {
        "AG-K8S-SECRET-ENV": (
            f"{CONTAINER}.env[1].valueFrom.secretKeyRef",
            {("kubernetes_stig", "V-242415", "CNTR-K8-001160")},
        )
    },
    "no-resource-limits": {
        "AG-SRG-RESOURCE-LIMITS": (
            f"{CONTAINER}.resources.limits.memory",
            {srg("V-270875")},
        )
    },
    "image-tag": {"AG-SC-IMAGE-BY-DIGEST": (f"{CONTAINER}.image", set())},
    "hostport-80": {
        "AG-K8S-HOSTPORT-BELOW-1024": (
            f"{CONTAINER}.ports[0].hostPort",
            {("kubernetes_stig", "V-242414", "CNTR-K8-000960"), srg("V-233074")},
        ),
        "AG-PSS-HOST-PORTS": (f"{CONTAINER}.ports[0].hostPort", {PSS}),
    },
    "writable-root": {
        "AG-SRG-READ-ONLY-ROOT": (
            f"{SC}.readOnlyRootFilesystem",
            {srg("V-270876")},
        )
    },
    "seccomp-unconfined": {"AG-PSS-SECCOMP": (f"{POD}.securityContext.seccompProfile.type", {PSS})},
    "init-privileged": {
        "AG-PSS-PRIVILEGED": (f"{POD}.initContainers[0].securityContext.privileged", {PSS}),
        "AG-PSS-PRIVILEGE-ESCALATION": (
            f"{POD}.initContainers[0].securityContext.allowPrivilegeEscalation",
            {PSS},
        ),
    },
    "init-privilege-escalation": {
        "AG-PSS-PRIVILEGE-ESCALATION": (
            f"{POD}.initContainers[0].securityContext.allowPrivilegeEscalation",
            {PSS},
        )
    },
    "ephemeral-privileged": {
        "AG-PSS-PRIVILEGED": ("spec.ephemeralContainers[0].securityContext.privileged", {PSS}),
        "AG-PSS-PRIVILEGE-ESCALATION": (
            "spec.ephemeralContainers[0].securityContext.allowPrivilegeEscalation",
            {PSS},
        ),
    },
    "ephemeral-privilege-escalation": {
        "AG-PSS-PRIVILEGE-ESCALATION": (
            "spec.ephemeralContainers[0].securityContext.allowPrivilegeEscalation",
            {PSS},
        )
    },
    "workload-in-default": {
        "AG-K8S-DEFAULT-NAMESPACE": (
            "metadata.namespace",
            {("kubernetes_stig", "V-242383", "CNTR-K8-000290")},
        ),
        "AG-K8S-PSA-ENFORCE-RESTRICTED": (PSA_LABEL, {PSS}),
        "AG-K8S-DEFAULT-DENY-NETWORK": ("default_deny.ingress", set()),
    },
    "workload-in-kube-system": {
        "AG-K8S-SYSTEM-NAMESPACE-PODS": (
            "metadata.namespace",
            {("kubernetes_stig", "V-242417", "CNTR-K8-001360")},
        ),
        "AG-K8S-PSA-ENFORCE-RESTRICTED": (PSA_LABEL, {PSS}),
        "AG-K8S-DEFAULT-DENY-NETWORK": ("default_deny.egress", set()),
    },
    "namespace-without-psa-label": {"AG-K8S-PSA-ENFORCE-RESTRICTED": (PSA_LABEL, {PSS})},
    "two-image-versions": {
        "AG-K8S-IMAGE-ONE-VERSION": (
            f"{POD}.containers[1].image",
            {("kubernetes_stig", "V-242442", "CNTR-K8-002700")},
        )
    },
    "apparmor-unconfined": {
        "AG-PSS-APPARMOR": (
            'spec.template.metadata.annotations["container.apparmor.security.beta.kubernetes.io/model"]',
            {PSS},
        )
    },
    "unsafe-sysctl": {"AG-PSS-SYSCTLS": (f"{POD}.securityContext.sysctls[0].name", {PSS})},
    "selinux-spc": {"AG-PSS-SELINUX": (f"{SC}.seLinuxOptions.type", {PSS})},
    "proc-unmasked": {"AG-PSS-PROC-MOUNT": (f"{SC}.procMount", {PSS})},
    "nfs-volume": {"AG-PSS-VOLUME-TYPES": (f"{POD}.volumes[1]", {PSS})},
    "capabilities-not-dropped": {"AG-PSS-CAPABILITIES-DROP-ALL": (f"{SC}.capabilities.drop", {PSS})},
    "run-as-non-root-overridden": {
        "AG-PSS-RUN-AS-NON-ROOT": (
            f"{SC}.runAsNonRoot",
            {PSS, ("kubernetes_stig", "V-242437", "CNTR-K8-002010")},
        )
    },
    "root-group": {
        "AG-K8S-NON-ROOT-GROUPS": (
            f"{POD}.securityContext.fsGroup",
            {("kubernetes_stig", "V-242437", "CNTR-K8-002010")},
        )
    },
    "service-account-token": {"AG-K8S-SERVICE-ACCOUNT-TOKEN": (f"{POD}.automountServiceAccountToken", set())},
}


def with_bad(name: str) -> list[dict[str, Any]]:
    bad = MANIFESTS / "bad" / f"{name}.yaml"
    replaced = "00-namespace.yaml" if name == "namespace-without-psa-label" else "20-deployment.yaml"
    return manifests(*[g for g in GOOD if g.name != replaced], bad)


def test_the_corpus_and_the_table_name_the_same_files() -> None:
    assert {p.stem for p in (MANIFESTS / "bad").glob("*.yaml")} == set(BAD)


# Objects the example does not ship but a clean bundle may: a binding to a narrow ClusterRole and
# a Secret that carries no value (Kubernetes fills in a service-account token's data itself).
CLEAN_EXTRAS = [
    {
        "source": "manifests/50-extras.yaml",
        "document": 0,
        "object": {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "tabular-classifier-view", "namespace": "tabular"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "tabular-classifier", "namespace": "tabular"}],
        },
    },
    {
        "source": "manifests/50-extras.yaml",
        "document": 1,
        "object": {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/service-account-token",
            "metadata": {
                "name": "tabular-classifier-token",
                "namespace": "tabular",
                "annotations": {"kubernetes.io/service-account.name": "tabular-classifier"},
            },
        },
    },
]


def test_clean_bundle_has_no_open_findings(catalog: Catalog) -> None:
    ev = evaluate(catalog, bundle_facts(manifests(*GOOD) + CLEAN_EXTRAS))
    assert open_results(ev) == {}
    # and the Kubernetes rules really looked at the manifests: none of them is "not applicable"
    k8s = [r for r in ev.results if not r.rule.manual and r.rule.check.select in K8S_SELECTORS]  # type: ignore[union-attr]
    assert k8s and all(r.status == "not_a_finding" for r in k8s), [
        (r.rule.id, r.status, r.reason) for r in k8s if r.status != "not_a_finding"
    ]


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_manifest_yields_exactly_its_findings(catalog: Catalog, name: str) -> None:
    ev = evaluate(catalog, bundle_facts(with_bad(name)))
    found = open_results(ev)
    assert set(found) == set(BAD[name]), {rid: [f.message for f in r.findings] for rid, r in found.items()}
    for rule_id, (fld, expected_refs) in BAD[name].items():
        result = found[rule_id]
        assert expected_refs <= refs(result), (rule_id, refs(result))
        fields = [f.field for f in result.findings]
        assert fld in fields, fields
        finding = next(f for f in result.findings if f.field == fld)
        assert finding.object.kind in ("Deployment", "Pod", "Namespace")
        assert finding.object.name in (
            "tabular-classifier",
            "tabular-classifier-debug",
            "tabular",
            "default",
            "kube-system",
        )
        if finding.object.kind != "Namespace" or name == "namespace-without-psa-label":
            assert finding.object.source == f"manifests/{name}.yaml"
        assert finding.message and finding.fix == result.rule.fix


def test_privileged_ephemeral_container_is_named_by_its_own_path(catalog: Catalog) -> None:
    ev = evaluate(catalog, bundle_facts(with_bad("ephemeral-privileged")))
    finding = open_results(ev)["AG-PSS-PRIVILEGED"].findings[0]
    assert (
        finding.object.describe()
        == "Pod tabular/tabular-classifier-debug (manifests/ephemeral-privileged.yaml)"
    )
    assert finding.field == "spec.ephemeralContainers[0].securityContext.privileged"
    assert "privileged" in finding.message and "true" in finding.message


def test_object_without_namespace_is_judged_where_it_would_land(catalog: Catalog) -> None:
    ev = evaluate(catalog, bundle_facts(with_bad("workload-in-default")))
    finding = open_results(ev)["AG-K8S-DEFAULT-NAMESPACE"].findings[0]
    assert finding.object.namespace == "default"
    assert "default" in finding.message


def test_manifests_inside_a_list_object_are_checked(catalog: Catalog) -> None:
    privileged = manifests(MANIFESTS / "bad" / "privileged.yaml")[0]["object"]
    wrapped = {
        "source": "manifests/all.yaml",
        "document": 0,
        "object": {"apiVersion": "v1", "kind": "List", "items": [privileged]},
    }
    others = [m for m in manifests(*GOOD) if m["object"]["kind"] != "Deployment"]
    ev = evaluate(catalog, bundle_facts([*others, wrapped]))
    assert open_results(ev)["AG-PSS-PRIVILEGED"].findings[0].object.source == "manifests/all.yaml"


def test_container_value_overrides_the_pod_value(catalog: Catalog) -> None:
    """runAsNonRoot true on the pod does not save a container that sets it false (the API's rule)."""
    ev = evaluate(catalog, bundle_facts(with_bad("run-as-non-root-overridden")))
    assert "AG-PSS-RUN-AS-NON-ROOT" in open_results(ev)
    # ...and a pod-level value alone is enough when no container overrides it
    deployment = manifests(MANIFESTS / "good" / "20-deployment.yaml")[0]
    del deployment["object"]["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonRoot"]
    others = [m for m in manifests(*GOOD) if m["object"]["kind"] != "Deployment"]
    assert "AG-PSS-RUN-AS-NON-ROOT" not in open_results(
        evaluate(catalog, bundle_facts([*others, deployment]))
    )


def with_objects(*objects: dict[str, Any]) -> dict[str, Any]:
    """The clean bundle plus ``objects`` in one extra manifest file."""
    extra = [{"source": "manifests/50-extra.yaml", "document": i, "object": o} for i, o in enumerate(objects)]
    return bundle_facts(manifests(*GOOD) + extra)


def service(**spec: Any) -> dict[str, Any]:
    ports = [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "tabular-classifier-edge", "namespace": "tabular"},
        "spec": {"selector": {"app.kubernetes.io/name": "tabular-classifier"}, "ports": ports, **spec},
    }


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"type": "NodePort"}, "spec.type"),
        ({"type": "LoadBalancer"}, "spec.type"),
        ({"externalIPs": ["10.0.0.5"]}, "spec.externalIPs[0]"),
    ],
)
def test_service_reachable_from_outside_the_cluster_is_open(
    catalog: Catalog, spec: dict[str, Any], field: str
) -> None:
    result = evaluate(catalog, with_objects(service(**spec))).result("AG-K8S-SERVICE-NODE-EXPOSURE")
    assert result.status == "open"
    [finding] = result.findings
    assert (finding.object.kind, finding.object.name, finding.field) == (
        "Service",
        "tabular-classifier-edge",
        field,
    )
    assert finding.object.source == "manifests/50-extra.yaml"
    assert {r.group_id for r in result.rule.references.benchmarks} == {"V-233073", "V-233190", "V-233030"}


def test_cluster_ip_service_is_not_a_finding(catalog: Catalog) -> None:
    result = evaluate(catalog, with_objects(service(type="ClusterIP"))).result("AG-K8S-SERVICE-NODE-EXPOSURE")
    assert (result.status, result.checked) == ("not_a_finding", 2)  # the example's Service and this one


def binding(kind: str, role_kind: str, role: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "tabular-classifier-admin"}
    if kind == "RoleBinding":
        meta["namespace"] = "tabular"
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": "tabular-classifier", "namespace": "tabular"}],
    }


@pytest.mark.parametrize("kind", ["ClusterRoleBinding", "RoleBinding"])
def test_binding_to_cluster_admin_is_open(catalog: Catalog, kind: str) -> None:
    result = evaluate(catalog, with_objects(binding(kind, "ClusterRole", "cluster-admin"))).result(
        "AG-K8S-CLUSTER-ADMIN-BINDING"
    )
    assert result.status == "open"
    [finding] = result.findings
    assert (finding.object.kind, finding.field) == (kind, "roleRef.name")
    assert "cluster-admin" in finding.message
    assert ("container_platform_srg", "V-233162") in {
        (r.benchmark, r.group_id) for r in result.rule.references.benchmarks
    }


@pytest.mark.parametrize(
    ("role_kind", "role", "status"),
    [("ClusterRole", "view", "not_a_finding"), ("Role", "cluster-admin", "not_applicable")],
)
def test_binding_to_a_narrow_role_is_not_a_finding(
    catalog: Catalog, role_kind: str, role: str, status: str
) -> None:
    result = evaluate(catalog, with_objects(binding("RoleBinding", role_kind, role))).result(
        "AG-K8S-CLUSTER-ADMIN-BINDING"
    )
    assert result.status == status


SECRET_VALUE = "c3VwZXItc2VjcmV0LXBhc3N3b3Jk"  # base64 of a password: must never reach a report


def secret(**content: Any) -> dict[str, Any]:
    meta = {"name": "tabular-classifier-db", "namespace": "tabular"}
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": meta, **content}


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ({"data": {"password": SECRET_VALUE}}, "data.password"),
        ({"stringData": {"db-password": "super-secret-password"}}, "stringData.db-password"),
    ],
)
def test_secret_with_its_value_in_the_manifest_is_open_and_the_value_is_withheld(
    catalog: Catalog, content: dict[str, Any], field: str
) -> None:
    ev = evaluate(catalog, with_objects(secret(**content)))
    result = ev.result("AG-K8S-SECRET-IN-MANIFEST")
    assert result.status == "open"
    [finding] = result.findings
    assert (finding.object.kind, finding.object.name, finding.field) == (
        "Secret",
        "tabular-classifier-db",
        field,
    )
    assert "withheld" in finding.message
    ctx = ChecklistContext(
        "tabular-classifier", "1.0.0", datetime(2023, 11, 14, tzinfo=timezone.utc), "airgap"
    )
    for name, data in render_all(ev, ctx, catalog.benchmarks).items():
        for value in (SECRET_VALUE, "super-secret-password"):
            assert value.encode() not in data, f"{name} leaks the Secret's value"


def test_secret_without_a_value_is_not_a_finding(catalog: Catalog) -> None:
    result = evaluate(catalog, with_objects(secret(data={}))).result("AG-K8S-SECRET-IN-MANIFEST")
    assert (result.status, result.checked) == ("not_a_finding", 1)


def test_secret_in_the_image_environment_is_named_but_its_value_withheld(catalog: Catalog) -> None:
    env = ["PATH=/usr/bin", "DB_PASSWORD=hunter2"]
    result = evaluate(catalog, bundle_facts(image={"env": env})).result("AG-SC-IMAGE-ENV-SECRETS")
    assert [f.field for f in result.findings] == ["image.env[1]"]
    assert "hunter2" not in result.findings[0].message


def test_a_bundle_without_manifests_makes_kubernetes_rules_not_applicable(catalog: Catalog) -> None:
    ev = evaluate(catalog, bundle_facts([]))
    result = ev.result("AG-PSS-PRIVILEGED")
    assert result.status == "not_applicable"
    assert "no containers" in result.reason


def test_evaluation_is_pure_and_repeatable(catalog: Catalog) -> None:
    facts = bundle_facts(with_bad("privileged"))
    before = copy.deepcopy(facts)
    assert evaluate(catalog, facts) == evaluate(catalog, facts)
    assert facts == before


# ------------------------------------------------------------------------------ bundle and image


def test_unsigned_staging_directory_is_open_for_signing_and_not_applicable_for_the_algorithm(
    catalog: Catalog,
) -> None:
    ev = evaluate(catalog, bundle_facts(signature=None))
    signed = ev.result("AG-SRG-IMAGE-SIGNED")
    assert signed.status == "open"
    assert srg("V-233065") in refs(signed)
    assert signed.findings[0].field == "signature"
    fips = ev.result("AG-SRG-FIPS-SIGNATURE")
    assert fips.status == "not_applicable"
    assert "nothing is signed yet" in fips.reason


@pytest.mark.parametrize(
    "signature",
    [
        {"algorithm": "ed25519", "curve": "ed25519", "key_bits": 256, "hash": "sha512"},
        {"algorithm": "ecdsa-p256-sha256", "curve": "secp256r1", "key_bits": 256, "hash": "sha256"},
        {"algorithm": "rsa-pkcs1-sha1", "curve": None, "key_bits": 1024, "hash": "sha1"},
    ],
    ids=["ed25519", "p256", "rsa-sha1"],
)
def test_signature_other_than_p384_sha384_is_open(catalog: Catalog, signature: dict[str, Any]) -> None:
    result = evaluate(catalog, bundle_facts(signature=signature)).result("AG-SRG-FIPS-SIGNATURE")
    assert result.status == "open"
    assert srg("V-233285") in refs(result)
    assert any(
        f.field == "signature.algorithm" and f.object.source == "signature.json" for f in result.findings
    )


def test_lock_with_an_unhashed_pin_is_open(catalog: Catalog) -> None:
    lock = {"pins": 5, "all_hashed": False, "hash_algorithms": ["sha256"], "unhashed": ["numpy"]}
    result = evaluate(catalog, bundle_facts(lock=lock)).result("AG-SC-LOCK-HASHED")
    assert result.status == "open"
    assert srg("V-233064") in refs(result)
    assert [(f.field, f.object.source) for f in result.findings] == [("lock.all_hashed", "requirements.lock")]


def test_md5_in_a_lock_is_not_fips_hashing(catalog: Catalog) -> None:
    lock = {"pins": 2, "all_hashed": True, "hash_algorithms": ["md5", "sha256"], "unhashed": []}
    result = evaluate(catalog, bundle_facts(lock=lock)).result("AG-SRG-FIPS-HASH")
    assert result.status == "open"
    assert result.findings[0].field == "lock.hash_algorithms[0]"
    assert "md5" in result.findings[0].message


def test_base_image_by_tag_is_open(catalog: Catalog) -> None:
    base = {"requested": "python:3.11-slim", "resolved": "python:3.11-slim", "pinned_by_digest": False}
    result = evaluate(catalog, bundle_facts(base_image=base)).result("AG-SC-BASE-IMAGE-DIGEST")
    assert result.status == "open"
    assert {f.field for f in result.findings} == {"base_image.pinned_by_digest", "base_image.resolved"}


@pytest.mark.parametrize("user", ["0", "root", "app", "10001:0", "", "0:10001"])
def test_image_user_must_be_numeric_and_not_root(catalog: Catalog, user: str) -> None:
    result = evaluate(catalog, bundle_facts(image={"user": user})).result("AG-SC-IMAGE-USER")
    assert result.status == "open", user


@pytest.mark.parametrize(
    ("port", "status"),
    [
        ("80/tcp", "open"),
        ("1023/tcp", "open"),
        ("1024/tcp", "not_a_finding"),
        ("8080/tcp", "not_a_finding"),
        ("65535/udp", "not_a_finding"),
        ("443", "open"),
    ],
)
def test_image_exposing_a_privileged_port(catalog: Catalog, port: str, status: str) -> None:
    result = evaluate(catalog, bundle_facts(image={"exposed_ports": [port]})).result("AG-SRG-IMAGE-PORTS")
    assert result.status == status


def test_secret_baked_into_the_image_environment_is_named(catalog: Catalog) -> None:
    env = ["PATH=/usr/bin", "DB_PASSWORD=hunter2", "AIRGAP_PORT=8080"]
    result = evaluate(catalog, bundle_facts(image={"env": env})).result("AG-SC-IMAGE-ENV-SECRETS")
    assert result.status == "open"
    assert [f.field for f in result.findings] == ["image.env[1]"]


def test_missing_sbom_is_open(catalog: Catalog) -> None:
    sbom = {"present": False, "spec_version": None, "components": 0, "format": None}
    result = evaluate(catalog, bundle_facts(sbom=sbom)).result("AG-SC-SBOM")
    assert result.status == "open"
    assert "sbom.present" in [f.field for f in result.findings]


# ------------------------------------------------------------------------------ target profile


@pytest.fixture
def fips_arm_profile() -> dict[str, Any]:
    """A real-shaped profile: Rocky 8 on aarch64, kernel FIPS mode on, 50 GiB free."""
    return dict(json.loads(PROFILE.read_text()))


def test_without_a_profile_target_rules_are_not_applicable(catalog: Catalog) -> None:
    ev = evaluate(catalog, bundle_facts())
    for rule_id in ("AG-TGT-ARCH", "AG-TGT-FIPS-ALGORITHMS", "AG-TGT-DISK"):
        result = ev.result(rule_id)
        assert result.status == "not_applicable", rule_id
        assert "profile" in result.reason


def test_x86_image_for_an_arm_target_is_open(catalog: Catalog, fips_arm_profile: dict[str, Any]) -> None:
    facts = bundle_facts(profile=fips_arm_profile, sources={"profile": "target-profile.json"})
    result = evaluate(catalog, facts).result("AG-TGT-ARCH")
    assert result.status == "open"
    finding = result.findings[0]
    assert finding.field == "profile.host.arch"
    assert finding.object.describe() == "TargetProfile edge-a64-01 (target-profile.json)"
    assert '"aarch64"' in finding.message and "x86_64" in finding.message


def test_image_for_the_targets_arch_passes(catalog: Catalog, fips_arm_profile: dict[str, Any]) -> None:
    facts = bundle_facts(profile=fips_arm_profile, image={"arch": "aarch64"})
    assert evaluate(catalog, facts).result("AG-TGT-ARCH").status == "not_a_finding"


def test_fips_target_refuses_a_signature_its_provider_may_reject(
    catalog: Catalog, fips_arm_profile: dict[str, Any]
) -> None:
    ed = {"algorithm": "ed25519", "curve": "ed25519", "key_bits": 256, "hash": "sha512"}
    assert (
        evaluate(catalog, bundle_facts(profile=fips_arm_profile, signature=ed))
        .result("AG-TGT-FIPS-ALGORITHMS")
        .status
        == "open"
    )
    assert (
        evaluate(catalog, bundle_facts(profile=fips_arm_profile)).result("AG-TGT-FIPS-ALGORITHMS").status
        == "not_a_finding"
    )


def test_non_fips_target_makes_the_fips_rule_not_applicable(
    catalog: Catalog, fips_arm_profile: dict[str, Any]
) -> None:
    fips_arm_profile["fips"] = {**fips_arm_profile["fips"], "kernel_fips_enabled": False}
    result = evaluate(catalog, bundle_facts(profile=fips_arm_profile)).result("AG-TGT-FIPS-ALGORITHMS")
    assert result.status == "not_applicable"


def test_target_without_room_for_the_bundle_is_open(
    catalog: Catalog, fips_arm_profile: dict[str, Any]
) -> None:
    need = 100 * 1024**3  # the profile has 50 GiB free
    facts = bundle_facts(profile=fips_arm_profile, bundle={"required_disk_bytes": need})
    result = evaluate(catalog, facts).result("AG-TGT-DISK")
    assert result.status == "open"
    assert str(need) in result.findings[0].message
    assert (
        evaluate(catalog, bundle_facts(profile=fips_arm_profile)).result("AG-TGT-DISK").status
        == "not_a_finding"
    )


# ------------------------------------------------------------------------------ manual, waivers


def test_manual_rules_are_not_reviewed_with_their_reason(catalog: Catalog) -> None:
    ev = evaluate(catalog, bundle_facts())
    manual = [r for r in ev.results if r.rule.manual]
    assert {r.rule.id for r in manual} >= {
        "AG-MAN-ATO",
        "AG-SRG-REGISTRY-ALLOWLIST",
        "AG-MAN-FIPS-VALIDATED-MODULE",
    }
    for r in manual:
        assert r.status == "not_reviewed"
        assert r.reason == r.rule.check.reason  # type: ignore[union-attr]
        assert len(r.reason) > 20
    assert ev.result("AG-SRG-REGISTRY-ALLOWLIST").rule.references.benchmarks[0].group_id == "V-233192"


def test_a_waiver_cannot_pass_a_manual_rule(catalog: Catalog) -> None:
    waiver = Waiver("AG-MAN-ATO", "the ATO is being renewed, see ticket 4711 for the schedule")
    ev = evaluate(catalog, bundle_facts(), [waiver])
    assert ev.result("AG-MAN-ATO").status == "not_reviewed"
    assert ev.unused_waivers == (waiver,)


def test_waived_open_rule_becomes_not_a_finding_with_its_justification(catalog: Catalog) -> None:
    waiver = Waiver(
        "AG-SRG-READ-ONLY-ROOT", "onnxruntime writes a cache under /opt; accepted by the ISSO 2024-03"
    )
    ev = evaluate(catalog, bundle_facts(with_bad("writable-root")), [waiver])
    result = ev.result("AG-SRG-READ-ONLY-ROOT")
    assert (result.status, result.automated_status) == ("not_a_finding", "open")
    assert result.waived and result.waiver == waiver
    assert result.findings, "the waived findings stay on the record"
    assert not ev.fails("low")


def test_waiver_naming_an_unknown_rule_is_refused(catalog: Catalog) -> None:
    with pytest.raises(InvalidInputError, match="AG-SRG-READONLY-ROOT"):
        evaluate(
            catalog,
            bundle_facts(),
            [Waiver("AG-SRG-READONLY-ROOT", "a typo must not silently waive nothing")],
        )


@pytest.mark.parametrize(
    ("bad", "severity"),
    [("privileged", "high"), ("writable-root", "medium"), ("service-account-token", "low")],
)
def test_fail_on_fails_at_or_above_the_open_severity(catalog: Catalog, bad: str, severity: str) -> None:
    ev = evaluate(catalog, bundle_facts(with_bad(bad)))
    worst = max(open_results(ev).values(), key=lambda r: ("low", "medium", "high").index(r.rule.severity))
    assert worst.rule.severity == severity
    levels = ("high", "medium", "low")
    for level in levels:
        expected = levels.index(level) >= levels.index(severity)
        assert ev.fails(level) is expected, (bad, level)
        assert all(r.status == "open" for r in ev.blocking(level))


def test_fail_on_rejects_an_unknown_level(catalog: Catalog) -> None:
    with pytest.raises(InvalidInputError):
        evaluate(catalog, bundle_facts()).fails("critical")


# ------------------------------------------------------------------------------ the rule format


def test_every_catalog_group_is_disas_own(catalog: Catalog) -> None:
    for bench in catalog.benchmarks:
        for group in bench.groups:
            disa = DISA[bench.id].get(group.group_id)
            assert disa is not None, f"{group.group_id} is not a group of DISA's {bench.display_name}"
            assert (group.stig_id, group.severity, list(group.ccis)) == (
                disa["rule_version"],
                disa["severity"],
                disa["ccis"],
            ), group.group_id


def test_shipped_rules_cite_only_disa_ids_and_every_listed_group_is_evaluated(catalog: Catalog) -> None:
    cited = [ref for r in catalog.rules for ref in r.references.benchmarks]
    for ref in cited:
        assert ref.stig_id == DISA[ref.benchmark][ref.group_id]["rule_version"], ref
    listed = {(b.id, g.group_id) for b in catalog.benchmarks for g in b.groups}
    assert {(r.benchmark, r.group_id) for r in cited} == listed, "every listed group is evaluated"


def _control(index: str) -> str:
    """``AC-6 (10)`` (the CCI list's spelling) -> ``AC-6(10)``; sub-items a/b/1 are dropped."""
    m = re.match(r"^([A-Z]{2}-\d+)(?: \((\d+)\))?", index)
    assert m, index
    return m.group(1) + (f"({m.group(2)})" if m.group(2) else "")


def test_every_cci_a_rule_cites_is_disas_and_belongs_to_its_groups_or_controls(catalog: Catalog) -> None:
    for rule in catalog.rules:
        assert rule.references.cci, f"{rule.id} cites no CCI"
        group_ccis = {
            c for ref in rule.references.benchmarks for c in DISA[ref.benchmark][ref.group_id]["ccis"]
        }
        controls = set(rule.references.nist)
        for cci in rule.references.cci:
            assert cci in DISA["cci"], f"{rule.id}: {cci} is not in DISA's CCI list"
            mapped = {_control(i) for i in DISA["cci"][cci]["nist_800_53_r5"]}
            bases = {m.split("(")[0] for m in mapped}
            assert cci in group_ccis or mapped & controls or bases & controls, (rule.id, cci, mapped)


def test_rules_without_a_stig_group_still_cite_800_53_and_ccis(catalog: Catalog) -> None:
    airgap_only = [r for r in catalog.rules if not r.references.benchmarks]
    assert {r.id for r in airgap_only} == {
        "AG-MAN-ATO",
        "AG-MAN-MEDIA-TRANSFER",
        "AG-SC-OCI-LABELS",
        "AG-TGT-ARCH",
        "AG-TGT-DISK",
    }
    assert all(r.references.nist and r.references.cci for r in airgap_only)


def test_every_shipped_rule_is_complete(catalog: Catalog) -> None:
    assert len(catalog.rules) >= 40
    for rule in catalog.rules:
        assert rule.title and rule.discussion and rule.fix and rule.severity in ("high", "medium", "low")
        assert rule.check_text()


BENCH = """
benchmarks:
  - id: kubernetes_stig
    name: Kubernetes Security Technical Implementation Guide
    display_name: Kubernetes STIG
    stig_id: Kubernetes_STIG
    release_info: test
    groups:
      - {group_id: V-242415, stig_id: CNTR-K8-001160, severity: high, title: secrets as files}
"""
RULE = """
rules:
  - id: AG-TEST-ONE
    title: a test rule
    severity: high
    references:
      kubernetes_stig: [{group_id: V-242415, stig_id: CNTR-K8-001160}]
    discussion: why
    check:
      select: containers
      assert: {path: container.securityContext.privileged, not_equals: true}
    fix: how
"""


def test_rule_citing_a_group_missing_from_the_catalog_is_refused() -> None:
    with pytest.raises(InvalidInputError, match=r"site\.yaml.*V-999999"):
        parse_catalog([("bench.yaml", BENCH), ("site.yaml", RULE.replace("V-242415", "V-999999"))])


def test_rule_pairing_a_group_with_the_wrong_stig_id_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="CNTR-K8-001160"):
        parse_catalog(
            [
                ("bench.yaml", BENCH),
                ("site.yaml", RULE.replace("stig_id: CNTR-K8-001160}", "stig_id: CNTR-K8-000001}")),
            ]
        )


def test_duplicate_rule_id_is_refused_naming_both_files() -> None:
    with pytest.raises(InvalidInputError, match=r"b\.yaml.*a\.yaml"):
        parse_catalog([("bench.yaml", BENCH), ("a.yaml", RULE), ("b.yaml", RULE)])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("not_equals: true", "is_not: true"), "operator"),
        (("severity: high", "severity: critical"), "severity"),
        (("select: containers", "select: nodes"), "select"),
        (("path: container.securityContext.privileged", "path: container..privileged"), "path"),
        (("    fix: how\n", "    fix: how\n    owner: me\n"), "owner"),
    ],
)
def test_malformed_rule_is_refused_with_file_and_rule(change: tuple[str, str], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as err:
        parse_catalog([("bench.yaml", BENCH), ("site.yaml", RULE.replace(*change))])
    assert "site.yaml" in err.value.message


def test_manual_rule_must_say_why() -> None:
    automated = RULE.split("    check:\n", 1)[1].split("    fix:", 1)[0]
    text = RULE.replace(automated, "      manual: ''\n")
    with pytest.raises(InvalidInputError, match="manual"):
        parse_catalog([("bench.yaml", BENCH), ("site.yaml", text)])


def test_site_rule_directory_adds_rules(tmp_path: Path, catalog: Catalog) -> None:
    site = tmp_path / "site-policies"
    site.mkdir()
    (site / "site.yaml").write_text(RULE.replace("AG-TEST-ONE", "AG-SITE-NO-PRIVILEGED"))
    extended = load_catalog([policies_dir(), site])
    assert len(extended.rules) == len(catalog.rules) + 1
    rule = extended.rule("AG-SITE-NO-PRIVILEGED")
    assert rule is not None and rule.source == "site-policies/site.yaml"


@pytest.mark.parametrize(
    "path",
    [
        "spec.template.spec.containers[0].securityContext",
        'metadata.labels["pod-security.kubernetes.io/enforce"]',
        "env[*].valueFrom.secretKeyRef",
        'annotations["container.apparmor.security.beta.kubernetes.io/model"]',
    ],
)
def test_paths_round_trip(path: str) -> None:
    assert format_path(parse_path(path)) == path


@pytest.mark.parametrize("path", ["", "a..b", "a[", "a[x]", ".a", "a.b c"])
def test_bad_paths_are_refused(path: str) -> None:
    with pytest.raises(ValueError):
        parse_path(path)


def _only(rule_yaml: str) -> Catalog:
    return parse_catalog([("bench.yaml", BENCH), ("t.yaml", rule_yaml)])


def _run(assertion: str, root: Mapping[str, Any]) -> RuleResult:
    text = f"""
rules:
  - id: AG-T
    title: t
    severity: low
    discussion: d
    fix: f
    check:
      select: bundle
      assert: {assertion}
"""
    return evaluate(_only(text), dict(root)).result("AG-T")


def test_a_wildcard_over_nothing_holds_and_any_needs_one_element() -> None:
    assert _run("{path: 'xs[*].v', gte: 1}", {"xs": []}).status == "not_a_finding"
    assert _run("{path: 'xs[*].v', gte: 1, quantifier: any}", {"xs": []}).status == "open"
    assert (
        _run("{path: 'xs[*].v', gte: 1, quantifier: any}", {"xs": [{"v": 0}, {"v": 2}]}).status
        == "not_a_finding"
    )


def test_every_failing_element_is_its_own_finding() -> None:
    result = _run("{path: 'xs[*].v', gte: 1}", {"xs": [{"v": 0}, {"v": 5}, {"v": -1}]})
    assert [f.field for f in result.findings] == ["xs[0].v", "xs[2].v"]


def test_yaml_true_is_not_the_number_one() -> None:
    assert _run("{path: v, equals: 1}", {"v": True}).status == "open"
    assert _run("{path: v, not_equals: true}", {"v": 1}).status == "not_a_finding"


def test_null_counts_as_missing() -> None:
    assert _run("{path: v, present: true}", {"v": None}).status == "open"
    assert _run("{path: v, absent: true}", {"v": None}).status == "not_a_finding"


def test_a_select_that_is_not_a_string_is_refused_not_crashed() -> None:
    with pytest.raises(InvalidInputError, match="select"):
        _only(RULE.replace("select: containers", "select: [containers]"))


def _services(facts: Mapping[str, Any]) -> list[Item]:
    return [
        Item(root={"service": s}, ref=ObjectRef("Service", str(s.get("name"))), anchors=((("service",), ""),))
        for s in facts.get("services") or []
    ]


def test_a_selector_is_one_registry_entry_read_by_parser_checklist_and_evaluation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(SELECTORS, "services", Selector("services", "every Service", "Services", _services))
    rule = RULE.replace("select: containers", "select: services").replace(
        "container.securityContext.privileged", "service.type"
    )
    catalog = _only(rule)
    assert catalog.rules[0].check_text().startswith("For every Service: service.type must not equal")
    empty = evaluate(catalog, {}).result("AG-TEST-ONE")
    assert (empty.status, empty.reason) == ("not_applicable", "nothing to check: the bundle has no Services")
    bad = evaluate(catalog, {"services": [{"name": "web", "type": True}]}).result("AG-TEST-ONE")
    assert bad.status == "open" and [(f.object.name, f.field) for f in bad.findings] == [("web", "type")]


def test_redact_must_be_a_boolean() -> None:
    with pytest.raises(InvalidInputError, match="redact"):
        _only(RULE.replace("not_equals: true}", "not_equals: true, redact: maybe}"))


def test_a_redacted_leaf_names_the_field_but_never_the_value() -> None:
    result = _run("{path: 'env[*]', not_contains: 'TOKEN=', redact: true}", {"env": ["A=1", "TOKEN=s3cr3t"]})
    [finding] = result.findings
    assert finding.field == "env[1]" and "withheld" in finding.message and "s3cr3t" not in finding.message


def test_a_group_citing_a_malformed_cci_is_refused() -> None:
    bench = BENCH.replace("severity: high, title", "severity: high, ccis: [CCI-12], title")
    with pytest.raises(InvalidInputError, match="ccis"):
        parse_catalog([("bench.yaml", bench), ("site.yaml", RULE)])
