"""Kubernetes manifests: rendered from ``bundle_templates/k8s/`` and validated offline, strictly.

Users add or override templates from a directory named in airgap.yaml (a file with the same name
replaces the shipped one). Every rendered object is validated against the OpenAPI-derived JSON
schema of the *target's* Kubernetes version, in strict mode (unknown fields are errors), with the
schemas that ship inside ``kubernetes-validate`` — no network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml

from airgap.core.profile import Profile, is_unknown
from airgap.core.project import Project
from airgap.errors import InvalidInputError
from airgap.resources import templates_dir

DEFAULT_KUBERNETES_VERSION = "1.30.0"
IMAGE_UID = 10001


@dataclass(frozen=True)
class RenderedFile:
    """One rendered manifest: the text shipped as-is, and its parsed objects for validation."""

    name: str  # e.g. "20-deployment.yaml"
    text: str
    objects: tuple[dict[str, Any], ...]


def target_kubernetes_version(project: Project, profile: Profile | None) -> tuple[str, str]:
    """The version to validate against, and where it came from."""
    if profile is not None:
        server = (profile.section("kubernetes") or {}).get("server")
        if isinstance(server, dict) and not is_unknown(server) and server.get("version"):
            return _normalize_version(str(server["version"])), f"the profile's cluster ({profile.hostname})"
    if project.kubernetes.version:
        return _normalize_version(project.kubernetes.version), "kubernetes.version in airgap.yaml"
    return DEFAULT_KUBERNETES_VERSION, "airgap's default"


def _normalize_version(text: str) -> str:
    m = re.match(r"^v?([0-9]+)\.([0-9]+)", text)
    if not m:
        raise InvalidInputError(f"{text!r} is not a Kubernetes version")
    return f"{m.group(1)}.{m.group(2)}.0"


def _template_names(dirs: list[Path]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in dirs:
        for path in sorted(d.glob("*.yaml.j2")) + sorted(d.glob("*.yaml")):
            found[path.name.removesuffix(".j2")] = path
    return dict(sorted(found.items()))


def render_manifests(project: Project, project_dir: Path, image: str) -> list[RenderedFile]:
    """Renders every template; a user directory adds files and overrides same-named ones."""
    dirs = [templates_dir() / "k8s"]
    if project.kubernetes.templates:
        user = project_dir / project.kubernetes.templates
        if not user.is_dir():
            raise InvalidInputError(f"kubernetes.templates: {user} is not a directory")
        dirs.append(user)
    labels = {
        "app.kubernetes.io/name": project.name,
        "app.kubernetes.io/version": project.version,
        "app.kubernetes.io/managed-by": "airgap",
    }
    context = {
        "name": project.name,
        "version": project.version,
        "namespace": project.kubernetes.namespace,
        "replicas": project.kubernetes.replicas,
        "autoscaling_max": project.kubernetes.autoscaling_max,
        "image": image,
        "port": project.serving.port,
        "requests": dict(project.resources.requests),
        "limits": dict(project.resources.limits),
        "uid": IMAGE_UID,
        "labels": labels,
    }
    out: list[RenderedFile] = []
    for name, path in _template_names(dirs).items():
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(path.parent)),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
        )
        try:
            text = env.get_template(path.name).render(**context)
        except jinja2.TemplateError as exc:
            raise InvalidInputError(f"manifest template {path}: {exc}") from None
        try:
            objects = tuple(o for o in yaml.safe_load_all(text) if o)
        except yaml.YAMLError as exc:
            raise InvalidInputError(f"manifest template {path} renders invalid YAML: {exc}") from None
        if not objects:
            continue
        for obj in objects:
            if not isinstance(obj, dict) or "kind" not in obj or "apiVersion" not in obj:
                raise InvalidInputError(
                    f"manifest template {path} renders something that is not a Kubernetes object"
                )
        out.append(RenderedFile(name, text, objects))
    return out


def validate_manifests(files: list[RenderedFile], version: str) -> int:
    """Strict schema validation of every object; returns how many were checked."""
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError, VersionNotSupportedError

    count = 0
    for f in files:
        for obj in f.objects:
            where = f"{f.name}: {obj.get('kind')}/{(obj.get('metadata') or {}).get('name', '?')}"
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except VersionNotSupportedError:
                raise InvalidInputError(
                    f"no schemas for Kubernetes {version} in this airgap",
                    hint="set kubernetes.version in airgap.yaml to a supported version (1.25 or newer)",
                ) from None
            except SchemaNotFoundError as exc:
                raise InvalidInputError(
                    f"{where}: Kubernetes {version} has no such kind/apiVersion ({exc})"
                ) from None
            except ValidationError as exc:
                path = ".".join(str(p) for p in exc.path) or "(object)"
                raise InvalidInputError(
                    f"{where} is not valid for Kubernetes {version}: {path}: {exc.message}",
                    hint="fix the template (unknown fields are errors in strict mode)",
                ) from None
            count += 1
    return count


def rewrite_images(files: list[RenderedFile], old: str, new: str) -> list[RenderedFile]:
    """Points every ``image:`` that names ``old`` at ``new`` (a far-side registry, same digest)."""
    out = []
    for f in files:
        text = f.text.replace(f"image: {old}", f"image: {new}")
        out.append(RenderedFile(f.name, text, tuple(o for o in yaml.safe_load_all(text) if o)))
    return out


def for_podman(files: list[RenderedFile], network: str) -> str:
    """One multi-document YAML for ``podman kube play``.

    Podman runs what a single node can: Namespaces, NetworkPolicies, PodDisruptionBudgets and
    autoscalers mean nothing to it and are left out. Podman 4 refuses port mappings unless the pod
    is on a bridge network, so without one the container ports (and Services) are dropped too.
    """
    keep: list[dict[str, Any]] = []
    for f in files:
        for obj in f.objects:
            kind = obj.get("kind")
            bridged = network not in ("none", "host")
            if kind in ("Deployment", "Pod", "ConfigMap", "PersistentVolumeClaim", "Secret") or (
                kind == "Service" and bridged
            ):
                keep.append(obj)
    if network in ("none", "host"):
        for obj in keep:
            spec = (obj.get("spec") or {}).get("template", {}).get("spec") or obj.get("spec") or {}
            for c in spec.get("containers", []):
                c.pop("ports", None)
    return yaml.safe_dump_all(keep, sort_keys=False)
