"""The project file, ``airgap.yaml``: what to bundle and how it must run on the far side.

Parsed once into frozen dataclasses. Every error names the field and the line it is on, because the
person reading it is usually editing the file in a terminal on a workstation they cannot leave.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from packaging.requirements import InvalidRequirement, Requirement

from airgap.core.contractspec import (
    AcceptanceSpec,
    DataSpec,
    PromoteSpec,
    SloSpec,
    parse_acceptance,
    parse_data,
    parse_promote,
    parse_slo,
)
from airgap.core.rebuild import TargetSpec, parse_targets
from airgap.core.yamlfields import Lines as _Lines
from airgap.core.yamlfields import expect as _expect
from airgap.core.yamlfields import integer as _int
from airgap.core.yamlfields import mapping as _mapping
from airgap.core.yamlfields import relative_path as _relative_path
from airgap.errors import InvalidInputError

SEMVER = re.compile(
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-((?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DIGEST_REF = re.compile(r"^(?P<repo>[^@\s]+)@sha256:(?P<hex>[0-9a-f]{64})$")
IMAGE_REF = re.compile(r"^[a-z0-9][a-z0-9._/:-]*[a-z0-9](@sha256:[0-9a-f]{64})?$")
CPU_QTY = re.compile(r"^([0-9]+(\.[0-9]+)?|[0-9]+m)$")
MEM_QTY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$")
SEVERITIES = ("high", "medium", "low")
PROJECT_FILE = "airgap.yaml"


@dataclass(frozen=True)
class ModelSpec:
    """The model file and the golden inputs and outputs it must reproduce, within ``rtol``/``atol``, on the
    far side before an install counts as done."""

    path: str  # the .onnx file, or a model directory (the graph, its external data, e.g. a tokenizer)
    golden: str
    rtol: float
    atol: float
    graph: str | None = None  # in a model directory: its .onnx file, when it holds more than one


@dataclass(frozen=True)
class ImageSpec:
    """How the serving image is made: a prebuilt image pinned by digest, a Dockerfile template of the
    project's own, or (both None) the bundled template."""

    prebuilt: str | None = None
    dockerfile_template: str | None = None


@dataclass(frozen=True)
class Serving:
    """How the model server runs, rendered into the image: its port and threads, and the batch and
    request-size limits that keep one oversized request from exhausting its memory."""

    port: int = 8080
    threads: int = 2
    max_batch: int = 64
    max_request_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class Resources:
    """Kubernetes resource requests and limits as quantity strings; defaults are filled in so no rendered
    Deployment runs unbounded."""

    requests: Mapping[str, str]
    limits: Mapping[str, str]


@dataclass(frozen=True)
class KubernetesSpec:
    """How the Kubernetes manifests are rendered: the namespace (the project name by default), replicas, the
    version whose schemas they are checked against, optional project templates, and an optional autoscaler
    ceiling."""

    namespace: str
    replicas: int = 2
    templates: str | None = None
    version: str | None = None
    autoscaling_max: int | None = None


@dataclass(frozen=True)
class Waiver:
    """A written decision to accept an open rule; the justification is required because the checklist prints
    it as the override reason an assessor reads."""

    rule: str
    justification: str


@dataclass(frozen=True)
class PolicySpec:
    """Which severity blocks signing (``fail_on``), the project's waivers, and extra rule directories to
    evaluate with the shipped policies."""

    fail_on: str = "high"
    waivers: tuple[Waiver, ...] = ()
    paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class Project:
    """A validated ``airgap.yaml``. Paths are relative to the project directory, never outside it."""

    name: str
    version: str
    model: ModelSpec
    requirements: tuple[str, ...]
    requirements_file: str | None
    base_image: str
    image: ImageSpec
    serving: Serving
    resources: Resources
    kubernetes: KubernetesSpec
    policies: PolicySpec
    target_profile: str | None
    data: DataSpec | None = None
    slo: SloSpec | None = None
    acceptance: AcceptanceSpec | None = None
    promote: PromoteSpec | None = None
    targets: tuple[TargetSpec, ...] = ()  # extra interpreters whose wheelhouses the bundle carries
    raw: Mapping[str, Any] = field(repr=False, default_factory=dict)

    @property
    def slug(self) -> str:
        """``NAME-VERSION``: the one spelling of the bundle's directory and file names."""
        return f"{self.name}-{self.version}"


_TOP_KEYS = {
    "name",
    "version",
    "model",
    "requirements",
    "base_image",
    "image",
    "serving",
    "resources",
    "kubernetes",
    "policies",
    "target",
    "data",
    "slo",
    "acceptance",
    "promote",
    "targets",
}


def _graph_name(lines: _Lines, value: object) -> str | None:
    """``model.graph``: a file name directly inside the model directory."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.endswith(".onnx") or "/" in value or value.startswith("."):
        raise lines.error(
            "model.graph", f"{value!r} must be the name of a .onnx file directly in the model directory"
        )
    return value


def parse_project(text: str, source: str = "airgap.yaml") -> Project:
    """Parses and validates a project file; raises ``InvalidInputError`` naming field and line."""
    lines = _Lines(source)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidInputError(f"{source}{where}: not valid YAML: {problem}") from None
    if node is None:
        raise InvalidInputError(f"{source}: the file is empty", hint="see docs/project-file.md")
    data = lines.build(node)
    if not isinstance(data, dict):
        raise lines.error("(top)", "must be a mapping of fields", "see docs/project-file.md")
    _expect(lines, data, "", _TOP_KEYS)
    for required in ("name", "version", "model", "requirements", "base_image"):
        if required not in data:
            raise InvalidInputError(f"{source}: {required} is required", hint="see docs/project-file.md")

    name = data["name"]
    if not isinstance(name, str) or not DNS_LABEL.match(name):
        raise lines.error(
            "name", f"{name!r} must be a lowercase DNS label (a-z, 0-9, '-', at most 63)", "e.g. fraud-scorer"
        )
    version = data["version"]
    if not isinstance(version, str) or not SEMVER.match(version):
        raise lines.error("version", f"{version!r} is not a semantic version", 'quote it: version: "1.2.0"')

    model = _mapping(lines, data, "model", "")
    _expect(lines, model, "model", {"path", "golden", "rtol", "atol", "graph"})
    golden = model.get("golden")
    if golden is None:
        raise lines.error("model", "golden is required: the inputs the far side must answer correctly")
    tolerances = {}
    for key, default in (("rtol", 1e-4), ("atol", 1e-5)):
        tol = model.get(key, default)
        if not isinstance(tol, (int, float)) or isinstance(tol, bool) or not 0 <= tol < 1:
            raise lines.error(f"model.{key}", f"must be a number from 0 to 1, got {tol!r}")
        tolerances[key] = float(tol)
    model_spec = ModelSpec(
        path=_relative_path(lines, "model.path", model.get("path")),
        golden=_relative_path(lines, "model.golden", golden),
        rtol=tolerances["rtol"],
        atol=tolerances["atol"],
        graph=_graph_name(lines, model.get("graph")),
    )

    reqs = data["requirements"]
    req_file: str | None = None
    req_list: list[str] = []
    if isinstance(reqs, str):
        req_file = _relative_path(lines, "requirements", reqs)
    elif isinstance(reqs, list) and reqs:
        for i, item in enumerate(reqs):
            if not isinstance(item, str):
                raise lines.error(f"requirements[{i}]", "must be a requirement string such as 'numpy>=1.26'")
            try:
                Requirement(item)
            except InvalidRequirement as exc:
                raise lines.error(
                    f"requirements[{i}]", f"{item!r} is not a valid requirement: {exc}"
                ) from None
            req_list.append(item)
    else:
        raise lines.error(
            "requirements", "must be a requirements.in path or a non-empty list of requirements"
        )

    base = data["base_image"]
    if not isinstance(base, str) or not IMAGE_REF.match(base):
        raise lines.error(
            "base_image", f"{base!r} is not an image reference", "e.g. python:3.11-slim@sha256:<64 hex>"
        )

    image = _mapping(lines, data, "image", "")
    _expect(lines, image, "image", {"prebuilt", "dockerfile_template"})
    prebuilt = image.get("prebuilt")
    if prebuilt is not None and (not isinstance(prebuilt, str) or not DIGEST_REF.match(prebuilt)):
        raise lines.error("image.prebuilt", "a prebuilt image must be given by digest (repo@sha256:...)")
    template = image.get("dockerfile_template")
    image_spec = ImageSpec(
        prebuilt=prebuilt,
        dockerfile_template=_relative_path(lines, "image.dockerfile_template", template)
        if template
        else None,
    )

    serving = _mapping(lines, data, "serving", "")
    _expect(lines, serving, "serving", {"port", "threads", "max_batch", "max_request_bytes"})
    serving_spec = Serving(
        port=_int(lines, serving, "port", "serving", 8080, 1024, 65535),
        threads=_int(lines, serving, "threads", "serving", 2, 1, 256),
        max_batch=_int(lines, serving, "max_batch", "serving", 64, 1, 1_000_000),
        max_request_bytes=_int(lines, serving, "max_request_bytes", "serving", 1 << 20, 1024, 1 << 30),
    )

    resources = _mapping(lines, data, "resources", "")
    _expect(lines, resources, "resources", {"requests", "limits"})
    res: dict[str, dict[str, str]] = {}
    defaults = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
    for kind in ("requests", "limits"):
        block = _mapping(lines, resources, kind, "resources") or defaults[kind]
        _expect(lines, block, f"resources.{kind}", {"cpu", "memory"})
        merged = {**defaults[kind], **{k: str(v) for k, v in block.items()}}
        if not CPU_QTY.match(merged["cpu"]):
            raise lines.error(
                f"resources.{kind}.cpu", f"{merged['cpu']!r} is not a CPU quantity (e.g. 500m, 2)"
            )
        if not MEM_QTY.match(merged["memory"]):
            raise lines.error(
                f"resources.{kind}.memory", f"{merged['memory']!r} is not a memory quantity (e.g. 512Mi)"
            )
        res[kind] = merged

    k8s = _mapping(lines, data, "kubernetes", "")
    _expect(lines, k8s, "kubernetes", {"namespace", "replicas", "templates", "version", "autoscaling_max"})
    namespace = k8s.get("namespace", name)
    if not isinstance(namespace, str) or not DNS_LABEL.match(namespace):
        raise lines.error("kubernetes.namespace", f"{namespace!r} must be a lowercase DNS label")
    k8s_version = k8s.get("version")
    if k8s_version is not None and not re.match(r"^v?1\.[0-9]+(\.[0-9]+)?$", str(k8s_version)):
        raise lines.error("kubernetes.version", f"{k8s_version!r} is not a Kubernetes version such as 1.30")
    autoscaling = k8s.get("autoscaling_max")
    k8s_spec = KubernetesSpec(
        namespace=namespace,
        replicas=_int(lines, k8s, "replicas", "kubernetes", 2, 1, 1000),
        templates=_relative_path(lines, "kubernetes.templates", k8s["templates"])
        if k8s.get("templates")
        else None,
        version=str(k8s_version) if k8s_version is not None else None,
        autoscaling_max=(
            _int(lines, k8s, "autoscaling_max", "kubernetes", 0, 1, 1000) if autoscaling is not None else None
        ),
    )

    pol = _mapping(lines, data, "policies", "")
    _expect(lines, pol, "policies", {"fail_on", "waivers", "paths"})
    fail_on = pol.get("fail_on", "high")
    if fail_on not in SEVERITIES:
        raise lines.error("policies.fail_on", f"must be one of {', '.join(SEVERITIES)}, got {fail_on!r}")
    waivers: list[Waiver] = []
    raw_waivers = pol.get("waivers", []) or []
    if not isinstance(raw_waivers, list):
        raise lines.error("policies.waivers", "must be a list of {rule, justification}")
    for i, w in enumerate(raw_waivers):
        where = f"policies.waivers[{i}]"
        if not isinstance(w, dict):
            raise lines.error(where, "must be a mapping with rule and justification")
        _expect(lines, w, where, {"rule", "justification"})
        just = w.get("justification")
        if not isinstance(w.get("rule"), str) or not isinstance(just, str) or len(just.strip()) < 20:
            raise lines.error(
                where,
                "a waiver needs the rule id and a written justification (20 characters or more)",
                "the justification is printed in the checklist as the override reason",
            )
        waivers.append(Waiver(w["rule"], just.strip()))
    paths = pol.get("paths", []) or []
    if not isinstance(paths, list):
        raise lines.error("policies.paths", "must be a list of directories with extra rule files")
    policy_spec = PolicySpec(
        fail_on=fail_on,
        waivers=tuple(waivers),
        paths=tuple(_relative_path(lines, f"policies.paths[{i}]", p) for i, p in enumerate(paths)),
    )

    target = _mapping(lines, data, "target", "")
    _expect(lines, target, "target", {"profile"})
    target_profile = (
        _relative_path(lines, "target.profile", target["profile"]) if target.get("profile") else None
    )

    data_spec = parse_data(lines, data) if data.get("data") is not None else None
    slo_spec = parse_slo(lines, data) if data.get("slo") is not None else None
    acceptance_spec = parse_acceptance(lines, data) if data.get("acceptance") is not None else None
    promote_spec = parse_promote(lines, data) if data.get("promote") is not None else None

    return Project(
        name=name,
        version=version,
        model=model_spec,
        requirements=tuple(req_list),
        requirements_file=req_file,
        base_image=base,
        image=image_spec,
        serving=serving_spec,
        resources=Resources(res["requests"], res["limits"]),
        kubernetes=k8s_spec,
        policies=policy_spec,
        target_profile=target_profile,
        data=data_spec,
        slo=slo_spec,
        acceptance=acceptance_spec,
        promote=promote_spec,
        targets=parse_targets(lines, data),
        raw=data,
    )


def parse_requirements_in(text: str, source: str) -> tuple[str, ...]:
    """Reads a requirements.in: one requirement per line, comments and blank lines ignored.

    Options (``-r``, ``--index-url``, ``-e``) are refused: the index is airgap's to choose, and a
    bundle must not depend on files or URLs the reviewer cannot see.
    """
    out: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            raise InvalidInputError(
                f"{source}:{number}: option {line.split()[0]!r} is not supported in requirements",
                hint="list plain requirements only; airgap chooses the index and pins with hashes",
            )
        try:
            Requirement(line)
        except InvalidRequirement as exc:
            raise InvalidInputError(
                f"{source}:{number}: {line!r} is not a valid requirement: {exc}"
            ) from None
        out.append(line)
    if not out:
        raise InvalidInputError(f"{source}: no requirements listed", hint="add at least onnxruntime")
    return tuple(out)
