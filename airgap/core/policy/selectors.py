"""Selectors: what a rule iterates over, and the one registry of them.

A rule says ``select: containers`` and its paths start at ``container.``, ``pod.``,
``effective.``: the selector turns the bundle's facts into one *item* per thing the rule is about,
with the keys docs/policies.md lists, and records where each key lives in the real object so a
finding names the field a reviewer must edit. Kubernetes rules need this work done once and right
(flattened ``List``s, the pod template of every workload kind, a container's security settings
falling back to the pod's, the namespace ``kubectl apply`` would really use), not in every rule.

Every selector is one entry of ``SELECTORS``: its name, how the checklist words it, what the bundle
lacks when it yields nothing, and the function that yields its items. Adding a selector is adding
one entry there; the rule parser, the check text and the not-applicable reason all read it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Callable

from airgap.core.policy.paths import PathTokens, format_path, lookup, mapping_of

# Kinds that live outside any namespace: everything else is namespaced, and a namespaced object
# without metadata.namespace lands in the namespace of whoever applies it — normally "default".
CLUSTER_SCOPED = frozenset(
    {
        "APIService",
        "CSIDriver",
        "CSINode",
        "CertificateSigningRequest",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "FlowSchema",
        "IngressClass",
        "MutatingWebhookConfiguration",
        "Namespace",
        "Node",
        "PersistentVolume",
        "PodSecurityPolicy",
        "PriorityClass",
        "PriorityLevelConfiguration",
        "RuntimeClass",
        "StorageClass",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingWebhookConfiguration",
        "VolumeAttachment",
    }
)

# Where each workload kind keeps its pod spec and the pod template's metadata.
POD_SPEC_PATHS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Pod": (("spec",), ("metadata",)),
    "PodTemplate": (("template", "spec"), ("template", "metadata")),
    "Deployment": (("spec", "template", "spec"), ("spec", "template", "metadata")),
    "StatefulSet": (("spec", "template", "spec"), ("spec", "template", "metadata")),
    "DaemonSet": (("spec", "template", "spec"), ("spec", "template", "metadata")),
    "ReplicaSet": (("spec", "template", "spec"), ("spec", "template", "metadata")),
    "ReplicationController": (("spec", "template", "spec"), ("spec", "template", "metadata")),
    "Job": (("spec", "template", "spec"), ("spec", "template", "metadata")),
    "CronJob": (
        ("spec", "jobTemplate", "spec", "template", "spec"),
        ("spec", "jobTemplate", "spec", "template", "metadata"),
    ),
}
CONTAINER_TYPES = ("initContainers", "containers", "ephemeralContainers")
# Pod-level securityContext fields a container-level value overrides (the Kubernetes API rule).
INHERITED_SECURITY = (
    "runAsNonRoot",
    "runAsUser",
    "runAsGroup",
    "seccompProfile",
    "seLinuxOptions",
    "appArmorProfile",
)
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


@dataclass(frozen=True)
class ObjectRef:
    """The thing a finding is about: a Kubernetes object, the image, the bundle or the profile."""

    kind: str
    name: str
    namespace: str | None = None
    source: str | None = None

    def describe(self) -> str:
        """``Deployment ns/name (manifests/x.yaml)``: enough to find the object without the tool."""
        name = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {name}" + (f" ({self.source})" if self.source else "")


Anchors = tuple[tuple[PathTokens, str], ...]


@dataclass(frozen=True)
class Item:
    """One selected thing: the root the rule's paths are read from, and how to name its fields.

    ``anchors`` map an item path prefix (``container``) to where it lives in the real object
    (``spec.template.spec.containers[0]``), so a finding names the field a reviewer must edit. A
    target ending in ``!`` is a derived value (``image_ref.*`` is computed from ``image``): every
    path under its prefix names that one field.
    """

    root: Mapping[str, Any]
    ref: ObjectRef
    anchors: Anchors = ()
    sources: Mapping[str, str] | None = None

    def locate(self, path: PathTokens) -> str:
        """The field of the real object an item path stands for (the longest anchor wins)."""
        best: tuple[PathTokens, str] | None = None
        for prefix, target in self.anchors:
            if path[: len(prefix)] == prefix and (best is None or len(prefix) > len(best[0])):
                best = (prefix, target)
        if best is None:
            return format_path(path)
        if best[1].endswith("!"):  # a derived value: every path under it names that one field
            return best[1][:-1]
        return format_path(path[len(best[0]) :], best[1])

    def ref_for(self, path: PathTokens) -> ObjectRef:
        """The item's object, naming the file a bundle-level fact was read from when known."""
        if self.sources and path and isinstance(path[0], str) and path[0] in self.sources:
            return replace(self.ref, source=self.sources[path[0]])
        return self.ref


# ------------------------------------------------------------------------ the bundle's own facts


def _bundle_items(facts: Mapping[str, Any]) -> list[Item]:
    project = mapping_of(facts.get("project"))
    name = f"{project.get('name', '(unnamed)')}@{project.get('version', '?')}"
    return [Item(root=facts, ref=ObjectRef("Bundle", name), sources=_sources(facts))]


def _image_items(facts: Mapping[str, Any]) -> list[Item]:
    image = facts.get("image")
    if not isinstance(image, dict):
        return []
    sources = _sources(facts)
    name = str(image.get("ref") or image.get("id") or "(model image)")
    return [Item(root=facts, ref=ObjectRef("Image", name, source=sources.get("image")), sources=sources)]


def _profile_items(facts: Mapping[str, Any]) -> list[Item]:
    profile = facts.get("profile")
    if not isinstance(profile, dict):
        return []
    sources = _sources(facts)
    host = str(mapping_of(profile.get("host")).get("hostname") or "(target)")
    ref = ObjectRef("TargetProfile", host, source=sources.get("profile"))
    return [Item(root=facts, ref=ref, sources=sources)]


def _sources(facts: Mapping[str, Any]) -> dict[str, Any]:
    return mapping_of(facts.get("sources"))


# ------------------------------------------------------------------------------------ Kubernetes


@dataclass(frozen=True)
class _Manifest:
    obj: Mapping[str, Any]
    source: str | None
    kind: str
    name: str
    namespace: str | None  # effective: "default" for a namespaced object without one
    namespaced: bool

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(self.kind, self.name, self.namespace, self.source)


@dataclass(frozen=True)
class _PodSpec:
    manifest: _Manifest
    spec: dict[str, Any]
    meta: dict[str, Any]
    spec_path: str
    meta_path: str

    def root(self) -> dict[str, Any]:
        """The keys every pod-level and container-level item shares."""
        m = self.manifest
        return {
            "object": m.obj,
            "kind": m.kind,
            "name": m.name,
            "namespace": m.namespace,
            "pod": self.spec,
            "pod_metadata": self.meta,
        }

    def anchors(self) -> list[tuple[PathTokens, str]]:
        return [
            (("object",), ""),
            (("namespace",), "metadata.namespace"),
            (("pod",), self.spec_path),
            (("pod_metadata",), self.meta_path),
        ]


def _manifests(facts: Mapping[str, Any]) -> list[_Manifest]:
    out: list[_Manifest] = []

    def add(obj: Any, source: str | None) -> None:
        if not isinstance(obj, dict):
            return
        kind = obj.get("kind")
        kind = kind if isinstance(kind, str) else "(no kind)"
        if kind == "List" or (kind.endswith("List") and isinstance(obj.get("items"), list)):
            for item in obj.get("items") or []:
                add(item, source)
            return
        meta = mapping_of(obj.get("metadata"))
        name = meta.get("name") or meta.get("generateName") or "(unnamed)"
        namespaced = kind not in CLUSTER_SCOPED
        ns = meta.get("namespace") if namespaced else None
        if namespaced and not ns:
            ns = "default"
        out.append(_Manifest(obj, source, kind, str(name), str(ns) if ns else None, namespaced))

    for entry in facts.get("manifests") or []:
        if isinstance(entry, dict) and "object" in entry:
            add(entry["object"], entry.get("source"))
        else:
            add(entry, None)
    return out


def _pod_specs(manifests: list[_Manifest]) -> list[_PodSpec]:
    out = []
    for m in manifests:
        paths = POD_SPEC_PATHS.get(m.kind)
        if paths is None:
            continue
        spec = lookup(m.obj, paths[0])
        if not isinstance(spec, dict):
            continue
        meta = mapping_of(lookup(m.obj, paths[1]))
        out.append(_PodSpec(m, spec, meta, format_path(paths[0]), format_path(paths[1])))
    return out


def parse_image_reference(ref: str) -> tuple[str, str | None, str | None]:
    """``(repository, tag, digest)`` with Docker Hub short names spelled out.

    ``python``, ``library/python`` and ``docker.io/library/python`` are one repository; comparing
    versions of an image across a bundle needs them to compare equal.
    """
    digest = None
    if "@" in ref:
        ref, digest = ref.split("@", 1)
    tag = None
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        ref, tag = ref.rsplit(":", 1)
    parts = ref.split("/")
    if len(parts) == 1:
        ref = f"docker.io/library/{ref}"
    elif not ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        ref = f"docker.io/{ref}"
    return ref, tag, digest


def _object_items(facts: Mapping[str, Any]) -> list[Item]:
    return [
        Item(
            root={
                "object": m.obj,
                "kind": m.kind,
                "name": m.name,
                "namespace": m.namespace,
                "namespaced": m.namespaced,
            },
            ref=m.ref,
            anchors=((("object",), ""), (("namespace",), "metadata.namespace"), (("name",), "metadata.name")),
        )
        for m in _manifests(facts)
    ]


def _pod_items(facts: Mapping[str, Any]) -> list[Item]:
    return [
        Item(root=p.root(), ref=p.manifest.ref, anchors=tuple(p.anchors()))
        for p in _pod_specs(_manifests(facts))
    ]


def _image_versions(pods: list[_PodSpec]) -> dict[str, set[str]]:
    """Every version (digest, else tag) of each image repository the bundle's pods reference."""
    versions: dict[str, set[str]] = defaultdict(set)
    for pod in pods:
        for ctype in CONTAINER_TYPES:
            for c in pod.spec.get(ctype) or []:
                if isinstance(c, dict) and isinstance(c.get("image"), str):
                    repo, tag, digest = parse_image_reference(c["image"])
                    versions[repo].add(digest or tag or "latest")
    return versions


def _image_ref(container: Mapping[str, Any], versions: Mapping[str, set[str]]) -> dict[str, Any] | None:
    image = container.get("image")
    if not isinstance(image, str) or not image:
        return None
    repo, tag, digest = parse_image_reference(image)
    return {
        "reference": image,
        "repository": repo,
        "tag": tag,
        "digest": digest,
        "versions_in_bundle": len(versions[repo]),
        "all_versions": sorted(versions[repo]),
    }


def _container_item(
    pod: _PodSpec, ctype: str, i: int, c: dict[str, Any], versions: Mapping[str, set[str]]
) -> Item:
    spec_path = pod.spec_path
    cpath = f"{spec_path}.{ctype}[{i}]"
    pod_sc = mapping_of(pod.spec.get("securityContext"))
    sc = mapping_of(c.get("securityContext"))
    effective: dict[str, Any] = {}
    anchors = pod.anchors()
    anchors += [(("container",), cpath), (("image_ref",), f"{cpath}.image!")]
    for key in INHERITED_SECURITY:
        if sc.get(key) is not None:
            effective[key] = sc[key]
            anchors.append((("effective", key), f"{cpath}.securityContext.{key}"))
        elif pod_sc.get(key) is not None:
            effective[key] = pod_sc[key]
            anchors.append((("effective", key), f"{spec_path}.securityContext.{key}"))
        else:
            anchors.append((("effective", key), f"{cpath}.securityContext.{key}"))
    name = str(c.get("name", f"#{i}"))
    annotation_key = APPARMOR_ANNOTATION + name
    anchors.append((("apparmor_annotation",), format_path(("annotations", annotation_key), pod.meta_path)))
    root = {
        **pod.root(),
        "container": c,
        "container_type": ctype,
        "container_name": name,
        "effective": effective,
        "apparmor_annotation": mapping_of(pod.meta.get("annotations")).get(annotation_key),
        "image_ref": _image_ref(c, versions),
    }
    return Item(root=root, ref=pod.manifest.ref, anchors=tuple(anchors))


def _container_items(facts: Mapping[str, Any]) -> list[Item]:
    pods = _pod_specs(_manifests(facts))
    versions = _image_versions(pods)
    items = []
    for pod in pods:
        for ctype in CONTAINER_TYPES:
            containers = pod.spec.get(ctype)
            if not isinstance(containers, list):
                continue
            for i, c in enumerate(containers):
                if isinstance(c, dict):
                    items.append(_container_item(pod, ctype, i, c, versions))
    return items


def _denies_by_default(policy: Mapping[str, Any], direction: str) -> bool:
    """A NetworkPolicy selecting every pod that names ``direction`` and allows nothing wide open."""
    spec = mapping_of(policy.get("spec"))
    if spec.get("podSelector") not in ({}, None) and spec.get("podSelector") != {"matchLabels": {}}:
        return False
    types = spec.get("policyTypes") or (["Ingress"] if direction == "Ingress" else [])
    if direction not in types:
        return False
    rules = spec.get(direction.lower()) or []
    return isinstance(rules, list) and all(isinstance(r, dict) and r for r in rules)


def _namespace_items(facts: Mapping[str, Any]) -> list[Item]:
    manifests = _manifests(facts)
    declared = {m.name: m for m in manifests if m.kind == "Namespace"}
    used: dict[str, int] = defaultdict(int)
    for m in manifests:
        if m.namespace:
            used.setdefault(m.namespace, 0)
    for pod in _pod_specs(manifests):
        if pod.manifest.namespace:
            used[pod.manifest.namespace] += 1
    items = []
    for ns in sorted(set(declared) | set(used)):
        decl = declared.get(ns)
        obj = decl.obj if decl else {}
        policies = [m.obj for m in manifests if m.kind == "NetworkPolicy" and m.namespace == ns]
        root = {
            "name": ns,
            "declared": decl is not None,
            "object": obj,
            "labels": mapping_of(mapping_of(obj.get("metadata")).get("labels")),
            "workloads": used.get(ns, 0),
            "default_deny": {
                "ingress": any(_denies_by_default(p, "Ingress") for p in policies),
                "egress": any(_denies_by_default(p, "Egress") for p in policies),
            },
        }
        source = decl.source if decl else "not created by the bundle"
        items.append(
            Item(
                root=root,
                ref=ObjectRef("Namespace", ns, None, source),
                anchors=((("object",), ""), (("labels",), "metadata.labels")),
            )
        )
    return items


# -------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Selector:
    """One ``select:`` value: its items, and how the checklist words it.

    ``noun`` completes "For ..." in a rule's check text; ``lacking`` completes "nothing to check:
    the bundle has no ..." when the selector yields nothing (the rule is then not applicable).
    """

    name: str
    noun: str
    lacking: str
    items: Callable[[Mapping[str, Any]], list[Item]]


SELECTORS: Mapping[str, Selector] = {
    s.name: s
    for s in (
        Selector("objects", "every Kubernetes object in the bundle", "Kubernetes manifests", _object_items),
        Selector(
            "pod_specs",
            "every pod spec (Pods and the templates of Deployments, StatefulSets, DaemonSets, "
            "ReplicaSets, Jobs and CronJobs)",
            "workloads (pod specs)",
            _pod_items,
        ),
        Selector(
            "containers",
            "every container, init container and ephemeral container",
            "containers",
            _container_items,
        ),
        Selector("namespaces", "every namespace the bundle creates or uses", "namespaces", _namespace_items),
        Selector("image", "the model image", "model image facts", _image_items),
        Selector("bundle", "the bundle", "facts", _bundle_items),
        Selector(
            "profile",
            "the target profile",
            "target profile (pass one with --profile to check the target)",
            _profile_items,
        ),
    )
}


def select(selector: str, facts: Mapping[str, Any]) -> list[Item]:
    """The items a selector yields for these facts (none: the rule is not applicable).

    Raises ``KeyError`` for an unknown selector: the rule parser admits only registered ones.
    """
    return SELECTORS[selector].items(facts)
