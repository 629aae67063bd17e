"""Kubernetes manifests: rendered from ``bundle_templates/k8s/`` and validated offline, strictly.

Users add or override templates from a directory named in airgap.yaml (a file with the same name
replaces the shipped one). Every rendered object is validated against the OpenAPI-derived JSON
schema of the *target's* Kubernetes version, in strict mode (unknown fields are errors), with the
schemas that ship inside ``kubernetes-validate`` — no network. kubernetes-validate carries the
releases of the last few years (1.25 on); for the older clusters enclaves run, airgap ships the same
strict schemas of 1.20–1.24 (``bundle_templates/k8s-schemas/``, made by scripts/k8s/old_schemas.py).

The version also decides what is rendered: API groups that went GA later than the target, and
Pod Security Admission labels, which only mean something where that admission exists.
"""

from __future__ import annotations

import gzip
import json
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
OLDEST_KUBERNETES_VERSION = "1.20.0"
SUPPORTED_HINT = "set kubernetes.version in airgap.yaml to a supported version (1.20 or newer)"
IMAGE_UID = 10001


def _minor(version: str) -> tuple[int, int]:
    major, minor = _normalize_version(version).split(".")[:2]
    return int(major), int(minor)


def api_versions(version: str) -> dict[str, Any]:
    """What the templates render for a cluster of ``version``: each object's apiVersion, from the
    release its API went GA in (policy/v1 in 1.21, autoscaling/v2 in 1.23; the beta APIs before
    them were removed in 1.25 and 1.26), and whether Pod Security Admission exists to read the
    namespace's labels (beta and on by default from 1.23, GA in 1.25)."""
    v = _minor(version)
    return {
        "kubernetes_version": f"{v[0]}.{v[1]}",
        "pdb_api": "policy/v1" if v >= (1, 21) else "policy/v1beta1",
        "hpa_api": "autoscaling/v2" if v >= (1, 23) else "autoscaling/v2beta2",
        "pod_security_admission": v >= (1, 23),
    }


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


def render_manifests(
    project: Project, project_dir: Path, image: str, kubernetes_version: str = DEFAULT_KUBERNETES_VERSION
) -> list[RenderedFile]:
    """Renders every template for a cluster of ``kubernetes_version``; a user directory adds files and
    overrides same-named ones (its templates see the same ``pdb_api``, ``hpa_api`` and
    ``pod_security_admission``)."""
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
        **api_versions(kubernetes_version),
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

    shipped = _shipped_schemas(version)
    if shipped is None and _minor(version) < _minor(kubernetes_validate.utils.all_versions()[0]):
        raise InvalidInputError(
            f"no schemas for Kubernetes {version} in this airgap",
            hint=SUPPORTED_HINT,
        )
    count = 0
    for f in files:
        for obj in f.objects:
            where = f"{f.name}: {obj.get('kind')}/{(obj.get('metadata') or {}).get('name', '?')}"
            try:
                if shipped is not None:
                    _validate_shipped(obj, version, shipped)
                else:
                    kubernetes_validate.validate(obj, version, strict=True)
            except VersionNotSupportedError:
                raise InvalidInputError(
                    f"no schemas for Kubernetes {version} in this airgap",
                    hint=SUPPORTED_HINT,
                ) from None
            except SchemaNotFoundError as exc:
                raise InvalidInputError(
                    f"{where}: Kubernetes {version} has no such kind/apiVersion ({exc.message})"
                ) from None
            except ValidationError as exc:
                path = ".".join(str(p) for p in exc.path) or "(object)"
                raise InvalidInputError(
                    f"{where} is not valid for Kubernetes {version}: {path}: {exc.message}",
                    hint="fix the template (unknown fields are errors in strict mode)",
                ) from None
            count += 1
    return count


def _shipped_schemas(version: str) -> dict[str, Any] | None:
    """airgap's own strict schemas for ``version``'s minor release, if it ships them (1.20–1.24)."""
    major, minor = _minor(version)
    path = templates_dir() / "k8s-schemas" / f"v{major}.{minor}.0.json.gz"
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(gzip.decompress(path.read_bytes()))
    return data


def _validate_shipped(obj: dict[str, Any], version: str, schemas: dict[str, Any]) -> None:
    """kubernetes-validate's own check (same file naming, same strict schemas, same errors), run on the
    schemas airgap ships for releases kubernetes-validate no longer carries."""
    import jsonschema  # type: ignore[import-untyped]
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError
    from referencing import Registry, Resource

    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", str(obj["apiVersion"]))
    schema = schemas["kinds"].get(f"{str(obj['kind']).lower()}-{api}")
    if schema is None:
        raise SchemaNotFoundError(version=version, kind=obj["kind"], api_version=obj["apiVersion"])
    definitions = Resource.from_contents(
        {"definitions": schemas["definitions"]}, default_specification=_draft4()
    )
    registry: Registry[Any] = Registry().with_resource("_definitions.json", definitions)
    validator = jsonschema.validators.Draft4Validator(schema, registry=registry)
    try:
        validator.validate(obj)
    except jsonschema.ValidationError as exc:
        raise ValidationError(exc, version=version) from None


def _draft4() -> Any:
    from referencing.jsonschema import DRAFT4

    return DRAFT4


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
