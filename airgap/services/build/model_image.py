"""The model image: its Dockerfile, the offline build, the recorded model contract, and the
checks that refuse a build early (golden inputs that do not fit, a base image for another CPU).

`airgap bundle` orchestrates these phases (services/build/bundle.py); this module is what talks to the
engine about the image itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import jinja2

from airgap.adapters.engine_lease import EngineLease
from airgap.core.build_images import label_stages
from airgap.core.model_layer import MODEL_ROOT
from airgap.core.profile import Profile
from airgap.core.project import SEVERITIES, Project
from airgap.errors import AnswerIsNo, IntegrityError, InvalidInputError
from airgap.ports import ImageEngine, Mount, RunSpec
from airgap.resources import templates_dir
from airgap.services.build.check import policy_directories
from airgap.services.build.wheelhouse import WheelhouseResult
from airgap.services.observer import Observer

IMAGE_UID = 10001
PARTIAL_IMAGES = ".images"  # in a .partial staging directory: the image ids the build committed


def render_dockerfile(project: Project, project_dir: Path, base_ref: str, model_file: str) -> str:
    """The model image's Dockerfile: the project's own template or the shipped one, rendered
    strictly, so a misspelt variable is an error rather than an empty string in the image; every
    stage labelled as airgap's, so that what its steps commit can be cleaned up, and nothing else."""
    if project.image.dockerfile_template:
        loader: jinja2.BaseLoader = jinja2.FileSystemLoader(str(project_dir))
        name = project.image.dockerfile_template
    else:
        loader = jinja2.FileSystemLoader(str(templates_dir()))
        name = "Dockerfile.j2"
    env = jinja2.Environment(
        loader=loader, undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
    )
    try:
        template = env.get_template(name)
        return label_stages(
            template.render(
                base_image=base_ref,
                model_file=model_file,
                name=project.name,
                version=project.version,
                port=project.serving.port,
                threads=project.serving.threads,
                max_batch=project.serving.max_batch,
                max_request_bytes=project.serving.max_request_bytes,
                uid=IMAGE_UID,
            )
        )
    except jinja2.TemplateError as exc:
        raise InvalidInputError(f"Dockerfile template {name}: {exc}") from None


def lock_pin(result: WheelhouseResult, name: str) -> str | None:
    """The version the lock pins for ``name``, to prove the image runs what was locked."""
    pin = result.lock.by_name().get(name)
    return pin.version if pin else None


def check_golden_fits(model: Path, golden: Path, max_batch: int) -> None:
    """Every golden case names exactly the model's inputs, with their rank, fixed sizes and types.

    Decided with the model server's own request checks (the file that ships in the image), before
    anything is fetched or built, against the inputs read from the graph alone: onnxruntime would
    load every weight first, and a 10 GB model would cost 10 GB of this workstation's memory for
    a check of a few names and shapes (``GraphInputs``).
    """
    server = server_module()
    try:
        loaded = GraphInputs(server, model)
    except server.FatalError as exc:
        raise InvalidInputError(
            f"{model}: {exc}",
            hint="the model server takes tensor inputs: export the model with tensor inputs",
        ) from None
    expected = ", ".join(f"{s.name} {s.shape_text()} {s.dtype}" for s in loaded.inputs)
    try:
        for name, inputs in server.load_golden(str(golden)):
            server.fit_case(loaded, name, inputs, max_batch)
    except server.FatalError as exc:
        raise InvalidInputError(
            f"{golden}: {exc}",
            hint=f"edit the golden inputs to match the model's inputs ({expected}), not the model",
        ) from None


class GraphInputs:
    """The part of the model server's ``Model`` that checks a request's inputs, built from the
    graph's declared inputs (core/onnx_external.py ``graph_inputs``) instead of an onnxruntime
    session: the same ``TensorSpec``s and the same refusals, in the memory of the graph's structure.
    """

    def __init__(self, server: Any, model: Path) -> None:
        from airgap.core.onnx_external import NotAModel, graph_inputs

        self._server = server
        if not model.is_file():
            raise server.FatalError(
                f"model file {model} does not exist; set AIRGAP_MODEL_PATH (check: --model)"
            )
        server.read_onnx_header(str(model))  # the server's own "not an ONNX model" refusals
        try:
            with open(model, "rb", buffering=1 << 16) as f:
                declared = graph_inputs(f, os.fstat(f.fileno()).st_size)
        except OSError as exc:
            raise server.FatalError(f"cannot read model file {model}: {exc.strerror or exc}") from None
        except NotAModel as exc:
            raise server.FatalError(f"not an ONNX model: {model} is not a valid ModelProto ({exc})") from None
        self.inputs = [server.TensorSpec.from_node(node) for node in declared]
        for spec in self.inputs:
            if spec.dtype not in server.ORT_DTYPES.values():
                raise server.FatalError(
                    f"input '{spec.name}' has type {spec.dtype}; the server takes tensor inputs only"
                )

    def prepare(self, inputs: object, max_batch: int) -> Any:
        """The server's own check of one request's ``inputs`` (``Model.prepare``)."""
        return self._server.Model.prepare(self, inputs, max_batch)


def server_module() -> Any:
    """The model server that ships in the image, imported here so the workstation checks with its code."""
    import importlib.util
    import sys

    name = "airgap_bundled_server"
    if name in sys.modules:
        return sys.modules[name]
    path = templates_dir() / "server" / "airgap_server.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses resolve their annotations through sys.modules
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def stable_layer_epoch(epoch: int, base_created: object) -> int:
    """The time the model image's layers are clamped to: the base image's creation time (``epoch``,
    SOURCE_DATE_EPOCH, only when the base image records none).

    Clamping to SOURCE_DATE_EPOCH made every layer's bytes change with it — and it changes with
    every release — so a delta bundle had to carry the whole image again when only the model
    changed. The base image is pinned by digest, so its creation time is an input like any other
    (the same inputs still give the same bytes), it is the same for every version built on that
    base, and the base's own files, made before it, keep their timestamps. Files the build makes
    carry that time rather than their build time.
    """
    import datetime as dt

    if not isinstance(base_created, str):
        return epoch
    try:
        # Engines write RFC 3339 with nanoseconds ("2024-05-01T10:00:00.123456789Z").
        when = dt.datetime.fromisoformat(base_created[:19]).replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return epoch
    return max(0, int(when.timestamp()))


def build_image(
    engine: ImageEngine,
    staging: Path,
    dockerfile: str,
    tag: str,
    labels: dict[str, str],
    obs: Observer,
    epoch: int,
    *,
    cache: bool = True,
    with_model: bool = False,
) -> str:
    """Builds the model image offline from the staged wheelhouse, with mtimes pinned to ``epoch``
    (``stable_layer_epoch``) so the same inputs give the same layers; every image the engine
    commits is recorded for cleanup. ``with_model``: the context carries the model too, for a
    Dockerfile from before the model was its own content (a rebuild of an older bundle); otherwise
    the model never enters the build, so its size costs the build nothing and a model-only change
    rebuilds nothing."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="airgap-context-") as tmp:
        ctx = Path(tmp)
        (ctx / "Dockerfile").write_text(dockerfile)
        shutil.copytree(staging / "wheels", ctx / "wheels")
        shutil.copyfile(staging / "requirements.lock", ctx / "requirements.lock")
        (ctx / "server").mkdir()
        shutil.copyfile(templates_dir() / "server" / "airgap_server.py", ctx / "server" / "airgap_server.py")
        if with_model:
            shutil.copytree(staging / "model", ctx / "model")
        # COPY keeps source mtimes: pin them so the same inputs give the same layers.
        for path in [ctx, *ctx.rglob("*")]:
            os.utime(path, (epoch, epoch), follow_symlinks=False)
        obs.begin("docker build", None)
        images = staging / PARTIAL_IMAGES

        def committed(image_id: str) -> None:
            # Recorded as soon as the engine commits it: a run killed right now still has its
            # images removed, by its own cleanup or by the next run's reclaim.
            with open(images, "a") as fh:
                fh.write(image_id + "\n")
                fh.flush()
                os.fsync(fh.fileno())

        try:
            return engine.build(
                ctx,
                tag,
                labels,
                on_line=lambda line: obs.advance("docker build", 0, line[:60]),
                on_image=committed,
                cache=cache,
            )
        finally:
            obs.end("docker build")


def remove_unshipped(
    engine: ImageEngine,
    staging: Path,
    image_id: str,
    previous: str | None,
    tag: str,
    lease: EngineLease,
) -> list[str]:
    """After a build: removes the images it made that the model image does not stand on (the
    build stage), and the image the tag named before, once nothing uses either — and only when
    no other build holds the engine ``lease`` (else the last one to finish removes them)."""
    try:
        ids = (staging / PARTIAL_IMAGES).read_text().split()
    except OSError:
        ids = []
    if previous and previous != image_id:
        ids.append(previous)
    removed = lease.remove_when_alone(ids, engine.remove_build_images)
    with contextlib.suppress(OSError):
        (staging / PARTIAL_IMAGES).unlink()  # the rest is the shipped image's own history
    if removed is None:
        return [
            "left the build-stage images for the build still running on this engine to remove "
            "when it finishes (removing them now would break it)"
        ]
    count, freed = removed
    if not count:
        return []
    return [
        f"removed {count} image(s) the build made or replaced and did not ship ({freed / 1e6:.0f} MB); "
        "--keep-images keeps them"
    ]


def record_contract(
    engine: ImageEngine,
    image_ref: str,
    project: Project,
    model_name: str,
    golden: dict[str, Any],
    wheelhouse: WheelhouseResult,
    model_dir: Path | None = None,
) -> dict[str, Any]:
    """Runs the golden inputs inside the built image (network off, read-only) and records the outputs.

    The outputs come from the exact onnxruntime the far side will run; they are the contract
    `airgap install` and `airgap smoke` hold the installed model to. ``model_dir``: the staged model,
    mounted read-only where the far side mounts it (the server image holds no model); None for an
    image that holds its own (a prebuilt one).
    """
    mounts = [Mount(model_dir, MODEL_ROOT, read_only=True)] if model_dir is not None else []
    res = engine.run(
        RunSpec(
            image=image_ref,
            argv=[
                "check",
                "--model",
                f"{MODEL_ROOT}/{model_name}",
                "--golden",
                f"{MODEL_ROOT}/golden.json",
            ],
            network="none",
            mounts=mounts,
            timeout=max(300.0, _model_bytes(model_dir) / 50e6),
        )
    )
    if res.exit_code != 0:
        line = (res.stderr.decode("utf-8", "replace").strip().splitlines() or ["no output"])[-1]
        if line.startswith("golden case"):
            raise InvalidInputError(
                f"{project.model.golden}: {line[:300]}",
                hint="edit the golden inputs to match the model's inputs, not the model",
            )
        raise InvalidInputError(
            f"the locked onnxruntime in {image_ref} cannot run the model: {line[:300]}",
            hint="export the model with an opset that onnxruntime version supports, or raise onnxruntime",
        )
    doc = json.loads(res.stdout)
    locked = lock_pin(wheelhouse, "onnxruntime")
    if locked is not None and doc.get("onnxruntime") != locked:
        raise IntegrityError(
            f"the image runs onnxruntime {doc.get('onnxruntime')} but the lock pins {locked}: "
            "the image is not built from the wheelhouse"
        )
    cases = []
    for case, outputs in zip(golden["cases"], doc["cases"]):
        cases.append({"name": outputs["name"], "inputs": case["inputs"], "outputs": outputs["outputs"]})
    return {
        "format": "airgap.model-contract/v1",
        "model": model_name,
        "onnxruntime": doc["onnxruntime"],
        "opset": doc["opset"],
        "ir_version": doc["ir_version"],
        "inputs": doc["inputs"],
        "outputs": doc["outputs"],
        "tolerance": {"rtol": project.model.rtol, "atol": project.model.atol},
        "cases": cases,
    }


def _model_bytes(model_dir: Path | None) -> int:
    """The staged model's size: loading it bounds how long its golden run may take."""
    if model_dir is None:
        return 0
    return sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())


def check_architecture(
    image: dict[str, Any], profile: Profile | None, project: Project, project_dir: Path
) -> None:
    """The base image runs on the target's CPU, unless the project waived that in writing.

    The compliance check (AG-TGT-ARCH) would refuse the bundle at the very end; the image's
    architecture is known as soon as the base image is resolved, so the refusal comes first.
    """
    from airgap.services.build.check import UNAME_ARCH, load_catalog

    if profile is None or not profile.arch or not isinstance(image.get("Architecture"), str):
        return
    arch = UNAME_ARCH.get(image["Architecture"], image["Architecture"])
    if (
        arch == profile.arch
        or arch == "arm"
        or any(w.rule == "AG-TGT-ARCH" for w in project.policies.waivers)
    ):
        return
    rule = load_catalog(policy_directories(project_dir, project.policies)).rule("AG-TGT-ARCH")
    if rule is None or SEVERITIES.index(rule.severity) > SEVERITIES.index(project.policies.fail_on):
        return
    raise AnswerIsNo(
        f"the base image {project.base_image} is {arch} but the target {profile.hostname} is {profile.arch}: "
        "the model image would fail there with 'exec format error' (policy AG-TGT-ARCH; nothing was built)",
        hint=f"set base_image to a {profile.arch} image (pinned by digest), or bundle with the profile of an "
        f"{arch} host; if this image is not meant for that host, waive AG-TGT-ARCH in airgap.yaml "
        "with a written justification",
    )
