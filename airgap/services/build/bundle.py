"""`airgap bundle`: from a project and a target profile to a complete staging directory.

The phases run in order and each is timed: project → base image (tag resolved to a digest, then
probed) → image wheelhouse (resolved inside the base image) → optional host wheelhouse → model
image (built with the network disabled) → model contract (golden outputs recorded inside the
built image, by the locked onnxruntime) → saved image → record. Everything is written into a
hidden ``.partial`` directory that is renamed into place only when every phase succeeded, so an
interrupted or failed bundle never leaves a staging directory that looks complete.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airgap import __version__
from airgap.adapters.engine_lease import EngineLease
from airgap.adapters.fs import MAX_PROFILE, atomic_write_bytes, read_bytes, write_json
from airgap.adapters.oci import docker_archive_to_oci, write_model_image
from airgap.adapters.sbom import write_staging_sbom
from airgap.adapters.space import require_free
from airgap.adapters.wheels import ForeignResolver, ImageResolver, ResolverSettings, WheelStore, sha256_file
from airgap.core.model_layer import model_env
from airgap.core.profile import Profile
from airgap.core.project import Project
from airgap.core.signing import allowed_algorithm
from airgap.errors import AirgapError, InvalidInputError
from airgap.ports import ImageEngine, Signer
from airgap.resources import templates_dir
from airgap.services.build.airgap_payload import airgap_wheelhouse
from airgap.services.build.check import (
    CheckOutcome,
    DirectoryReader,
    check_bundle,
    policy_directories,
    write_compliance,
)
from airgap.services.build.datacontract import model_documents
from airgap.services.build.model_files import (
    ModelFiles,
    check_model_file,
    copy_model,
    model_files,
    model_record,
)
from airgap.services.build.model_image import (
    PARTIAL_IMAGES,
    build_image,
    check_architecture,
    check_golden_fits,
    record_contract,
    remove_unshipped,
    render_dockerfile,
    stable_layer_epoch,
)
from airgap.services.build.probe import probe_image
from airgap.services.build.project import load_project, locate_project
from airgap.services.build.sign import UnsafeSignWarning as UnsafeSignWarning
from airgap.services.build.sign import compliance_verdict as compliance_verdict
from airgap.services.build.sign import pack_staging as pack_staging
from airgap.services.build.sign import seal as seal
from airgap.services.build.wheelhouse import (
    WheelhouseResult,
    WheelhouseSite,
    host_wheelhouse,
    image_wheelhouse,
    target_wheelhouses,
    wheelhouse_record,
)
from airgap.services.manifests import render_manifests, target_kubernetes_version, validate_manifests
from airgap.services.observer import BYTES, NullObserver, Observer, Phases

RECORD_FORMAT = "airgap.build-record/v1"


@dataclass(frozen=True)
class BundleOptions:
    """Everything a build may vary besides the project itself, so ``bundle`` takes no CLI state."""

    project_dir: Path
    output_dir: Path | None = None
    target_profile: Path | None = None
    host_wheelhouse: bool = False
    host_python: str | None = None
    settings: ResolverSettings = field(default_factory=ResolverSettings)
    cache_dir: Path | None = None
    keep_images: bool = False  # keep the images the build made and did not ship (and the old tag's)
    build_cache: bool = True  # reuse the engine's cached build steps
    signer: Signer | None = None  # the key the bundle will be signed with, for the checklist


@dataclass(frozen=True)
class BundleResult:
    """The finished staging directory, its build record and compliance outcome, for the CLI to report."""

    staging: Path
    record: dict[str, Any]
    compliance: CheckOutcome
    cleanup: tuple[str, ...] = ()  # what this run removed that an earlier one, or the build, left behind


def load_golden(path: Path) -> dict[str, Any]:
    """Refuses a golden-inputs file without at least one case with inputs, before any slow phase runs."""
    try:
        data = json.loads(read_bytes(path, "golden inputs"))
    except ValueError as exc:
        raise InvalidInputError(f"{path} is not JSON: {exc}") from None
    cases = data.get("cases") if isinstance(data, dict) else None
    if (
        not isinstance(cases, list)
        or not cases
        or not all(isinstance(c, dict) and "inputs" in c for c in cases)
    ):
        raise InvalidInputError(
            f'{path} must be {{"cases": [{{"name": ..., "inputs": {{...}}}}]}} with at least one case'
        )
    return dict(data)


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH if set (reproducible builds), else now."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None:
        return int(time.time())
    if not (value.isascii() and value.isdigit()):
        raise InvalidInputError(f"SOURCE_DATE_EPOCH={value!r} is not a number of seconds")
    return int(value)


def _rfc3339(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


PLACEHOLDER_DIGEST = "sha256:" + "0" * 64  # renders templates before the real digests exist


def bundle(options: BundleOptions, engine: ImageEngine, observer: Observer | None = None) -> BundleResult:
    """Builds the staging directory in a locked partial directory and swaps it into place only when complete.

    Input that can be refused without the engine is refused first; on failure or interrupt the
    partial directory and the images this run made are removed, so no half-built bundle is left.
    """
    obs = observer or NullObserver()
    phase = Phases(obs)
    project_dir, project_file = locate_project(options.project_dir)
    project_dir = project_dir.resolve()
    epoch = source_date_epoch()
    settings = ResolverSettings(options.settings.index_url, options.settings.ca_bundle, epoch)
    cache = options.cache_dir or Path.home() / ".cache" / "airgap"

    # Everything that can be refused without the engine or the network is refused here, before
    # the first slow phase: the project, the model, the golden inputs against the model's inputs,
    # the profile and its interpreter, the Dockerfile and Kubernetes templates.
    with phase("project"):
        project, requirements = load_project(options.project_dir)
        model = model_files(project, project_dir)  # the graph, its external data, files beside it
        model_src = model.graph
        check_model_file(model_src)
        golden = load_golden(project_dir / project.model.golden)
        check_golden_fits(model_src, project_dir / project.model.golden, project.serving.max_batch)
        model_docs = model_documents(project, project_dir, model_src)  # the deployment contract
        profile: Profile | None = None
        profile_path = options.target_profile or (
            project_dir / project.target_profile if project.target_profile else None
        )
        if profile_path is not None:
            profile_bytes = read_bytes(profile_path, "target profile", MAX_PROFILE)
            profile = Profile.from_json(profile_bytes, str(profile_path))
        if options.host_wheelhouse and profile is None:
            raise InvalidInputError(
                "--host-wheelhouse needs the far-side host's profile",
                hint="pass --profile FILE (from `airgap probe` on that host) or set target.profile",
            )
        if profile is not None:
            profile.python(options.host_python)
        if not project.image.prebuilt:
            render_dockerfile(project, project_dir, f"base@{PLACEHOLDER_DIGEST}", model.graph_name)
        k8s_version, _ = target_kubernetes_version(project, profile)
        validate_manifests(
            render_manifests(
                project, project_dir, f"airgap/{project.name}@{PLACEHOLDER_DIGEST}", k8s_version
            ),
            k8s_version,
        )

    out_dir = (options.output_dir or project_dir / "build").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / project.slug
    with EngineLease() as lease:
        return _build_in_place(
            options, project, project_dir, project_file, requirements, golden, model, model_docs,
            profile, settings, cache, engine, obs, phase, out_dir, final, epoch, lease,
        )  # fmt: skip


def _build_in_place(
    options: BundleOptions,
    project: Project,
    project_dir: Path,
    project_file: Path,
    requirements: tuple[str, ...],
    golden: dict[str, Any],
    model: ModelFiles,
    model_docs: dict[str, bytes],
    profile: Profile | None,
    settings: ResolverSettings,
    cache: Path,
    engine: ImageEngine,
    obs: Observer,
    phase: Phases,
    out_dir: Path,
    final: Path,
    epoch: int,
    lease: EngineLease,
) -> BundleResult:
    """The build, in a partial directory swapped into place only when complete, while holding
    the engine ``lease`` (so no concurrent build removes an image this one uses)."""
    cleanup = list(reclaim_partials(out_dir, project.slug, engine, lease))
    staging = out_dir / f".{project.slug}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    lock = hold_partial(staging)
    try:
        record = _build(
            project,
            project_dir,
            requirements,
            golden,
            model,
            model_docs,
            profile,
            options,
            settings,
            cache,
            engine,
            obs,
            phase,
            staging,
            epoch,
            cleanup,
            lease,
        )
        record["project_file"] = {"name": project_file.name, "sha256": sha256_file(project_file)}
        durable, run = split_record(record)
        write_json(staging / "build.json", durable)
        with phase("sbom"):
            write_staging_sbom(
                staging, timestamp=dt.datetime.fromtimestamp(epoch, dt.timezone.utc), engine=engine
            )
        with phase("compliance"):
            outcome = check_bundle(
                DirectoryReader(staging),
                evaluated_at=dt.datetime.fromtimestamp(epoch, dt.timezone.utc),
                waivers=project.policies.waivers,
                fail_on=project.policies.fail_on,
                policy_dirs=policy_directories(project_dir, project.policies),
            )
            write_compliance(outcome, staging / "compliance")
        run["phases"] = record["phases"] = phase.seconds
        # How this particular run went (timings, cache hits) is kept beside, not in, what ships:
        # the bundle must be the same bytes whatever the cache held.
        write_json(staging / ".run.json", run)
        if final.exists():
            old = out_dir / f".{project.slug}.old-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(staging, final)
        for name in (PARTIAL_LOCK, PARTIAL_IMAGES):
            with contextlib.suppress(OSError):
                (final / name).unlink()
    except BaseException:
        # Interrupted or failed: the images this run's build committed, then its directory.
        if not options.keep_images:
            _remove_recorded_images(staging, engine, lease, interrupted=True)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        lock.close()
    if not options.keep_images:
        # What concurrent builds left for the last one to finish (this one, if it is alone now).
        with contextlib.suppress(AirgapError):
            deferred = lease.remove_when_alone([], engine.remove_build_images)
            if deferred and deferred[0]:
                cleanup.append(
                    f"removed {deferred[0]} image(s) concurrent builds made and did not ship "
                    f"({deferred[1] / 1e6:.0f} MB)"
                )
    return BundleResult(final, record, outcome, tuple(cleanup))


# Inside every partial directory: a lock its run holds while alive, and the images its build made.
PARTIAL_LOCK = ".lock"


def hold_partial(staging: Path) -> Any:
    """Marks ``staging`` as alive for as long as the returned file stays open (an flock on it)."""
    import fcntl

    fh = open(staging / PARTIAL_LOCK, "w")  # noqa: SIM115 - held open until the run ends
    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fh


def reclaim_partials(out_dir: Path, slug: str, engine: ImageEngine, lease: EngineLease) -> Iterator[str]:
    """Removes what killed earlier runs left: partial directories nobody holds, and their images.

    A run that is still going holds the lock inside its partial directory and is left alone; a
    run killed by any signal, SIGKILL included, released it when the kernel closed its files.
    """
    import fcntl

    for path in sorted(out_dir.glob(f".{slug}.partial-*")) + sorted(out_dir.glob(f".{slug}.old-*")):
        if not path.is_dir() or path.is_symlink():
            continue
        if path.name.startswith(f".{slug}.partial-"):
            try:
                with open(path / PARTIAL_LOCK, "a") as fh:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # another bundle of this project is running now
            except OSError:
                pass  # no lock file: killed before it took one
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
        images = _remove_recorded_images(path, engine, lease)
        shutil.rmtree(path, ignore_errors=True)
        note = f"reclaimed {path.name} left by an interrupted earlier run ({size / 1e6:.1f} MB"
        yield note + (f", {images} image(s))" if images else ")")


def _remove_recorded_images(
    staging: Path, engine: ImageEngine, lease: EngineLease, *, interrupted: bool = False
) -> int:
    """Removes the recorded images (and untagged ones built on them) nothing uses; returns how many.

    ``interrupted``: the engine may still be finishing the step it was on when the client went
    away; its build container is waited for (a condition, bounded) before the images are removed,
    so a step committed after the interrupt goes too.
    """
    try:
        ids = (staging / PARTIAL_IMAGES).read_text().split()
    except OSError:
        return 0
    if not ids:
        return 0
    try:
        if interrupted:
            engine.wait_for_build_steps(ids)
        removed = lease.remove_when_alone(ids, engine.remove_build_images)
    except AirgapError:
        return 0  # the engine is gone: nothing more can be removed now
    return removed[0] if removed else 0


def _build(
    project: Project,
    project_dir: Path,
    requirements: tuple[str, ...],
    golden: dict[str, Any],
    model: ModelFiles,
    model_docs: dict[str, bytes],
    profile: Profile | None,
    options: BundleOptions,
    settings: ResolverSettings,
    cache: Path,
    engine: ImageEngine,
    obs: Observer,
    phase: Phases,
    staging: Path,
    epoch: int,
    cleanup: list[str],
    lease: EngineLease,
) -> dict[str, Any]:
    store = WheelStore(cache / "store")
    with phase("base image"):
        base_ref = engine.resolve_digest(project.base_image)
        base_inspect = engine.inspect_image(base_ref)
        check_architecture(base_inspect, profile, project, project_dir)
        layer_epoch = stable_layer_epoch(epoch, base_inspect.get("Created"))
        base_profile = probe_image(engine, base_ref)
        base_py = base_profile.profile.primary_python()

    site = WheelhouseSite(staging, store, cache / "locks")
    with phase("image wheelhouse"):  # and the wheelhouses of airgap.yaml's extra targets
        image_wh = image_wheelhouse(
            ImageResolver(engine, base_ref, settings, cache), base_ref, base_py, requirements, site, obs
        )
        targets_wh = target_wheelhouses(project.targets, base_py, base_ref, requirements, settings, site, obs)

    host_wh: WheelhouseResult | None = None
    if options.host_wheelhouse and profile is not None:
        with phase("host wheelhouse"):
            host_py = profile.python(options.host_python)
            host_wh = host_wheelhouse(
                ForeignResolver(settings),
                host_py,
                f"{profile.hostname} ({profile.digest[:12]})",
                requirements,
                WheelhouseSite(staging / "host", store, cache / "locks"),
                obs,
            )

    # airgap itself, for the far side's interpreter: what install.sh installs before anything else.
    # A far side whose Python cannot run airgap still gets its bundle (for hosts that have airgap);
    # why it carries no airgap is recorded, and install.sh says so.
    airgap_wh: WheelhouseResult | None = None
    airgap_skipped: str | None = None
    if profile is not None:
        with phase("airgap wheelhouse"):
            try:
                airgap_wh = airgap_wheelhouse(
                    ForeignResolver(settings),
                    profile.python(options.host_python),
                    f"{profile.hostname} ({profile.digest[:12]})",
                    staging / "airgap",
                    store,
                    cache / "locks",
                    obs,
                )
            except InvalidInputError as exc:
                airgap_skipped = exc.one_line()
    shutil.copyfile(templates_dir() / "install.sh", staging / "install.sh")

    if profile is not None:
        atomic_write_bytes(
            staging / "target-profile.json",
            (json.dumps(dict(profile.raw), indent=2, sort_keys=True) + "\n").encode(),
        )
    # The model server ships beside the model too: `install --to venv` runs it without the image.
    (staging / "server").mkdir()
    shutil.copyfile(templates_dir() / "server" / "airgap_server.py", staging / "server" / "airgap_server.py")
    model_dir = staging / "model"
    model_dir.mkdir()
    (staging / "monitoring").mkdir()
    model_name = model.graph_name
    with phase("model files"):
        require_free(model_dir, sum(src.stat().st_size for _, src in model.files), "bundle (the model)")
        copied = copy_model(model, model_dir, obs)
    write_json(model_dir / "golden.json", golden)
    for rel, data in model_docs.items():  # the deployment contract and its monitoring: signed content
        atomic_write_bytes(staging / rel, data)

    lock_sha = sha256_file(staging / "requirements.lock")
    # The server image's labels name its runtime only (base, lock, tool): the same runtime gives the
    # same image for every model and release. What names the model is the model image's.
    labels = {
        "org.opencontainers.image.base.name": project.base_image,
        "org.opencontainers.image.base.digest": base_ref.split("@", 1)[1],
        "io.airgap.lock.sha256": lock_sha,
        "io.airgap.tool.version": __version__,
    }
    model_labels = {
        "org.opencontainers.image.title": project.name,
        "org.opencontainers.image.version": project.version,
        "org.opencontainers.image.created": _rfc3339(epoch),
    }
    if project.image.prebuilt:
        labels.update(model_labels)
    tag = f"airgap/{project.name}:{project.version}"
    with phase("model image"):
        if project.image.prebuilt:
            image_ref = engine.resolve_digest(project.image.prebuilt)
            image_id = engine.image_id(image_ref)
            dockerfile = None
        else:
            dockerfile = render_dockerfile(project, project_dir, base_ref, model_name)
            previous = engine.tagged(tag)
            image_id = build_image(
                engine, staging, dockerfile, tag, labels, obs, layer_epoch, cache=options.build_cache
            )
            image_ref = tag
            if not options.keep_images:
                cleanup.extend(remove_unshipped(engine, staging, image_id, previous, tag, lease))

    separate_model = not project.image.prebuilt  # a prebuilt image holds its own model
    with phase("model contract"):
        readable_by_the_server(model_dir)
        contract = record_contract(
            engine, image_ref, project, model_name, golden, image_wh, model_dir if separate_model else None
        )
        write_json(model_dir / "contract.json", contract)

    with phase("save image"):
        (staging / "image").mkdir()
        inspect = engine.inspect_image(image_ref)
        # the saved archive, then its layers converted to the OCI layout beside it
        require_free(staging, 2 * int(inspect.get("Size") or 0), "bundle (the saved image)")
        obs.begin("docker save", inspect.get("Size") or None, BYTES)
        try:
            engine.save(
                image_ref,
                staging / "image" / "model-image.tar",
                on_bytes=lambda n: obs.advance("docker save", n),
            )
        finally:
            obs.end("docker save")

    with phase("oci image"):
        archive = staging / "image" / "model-image.tar"
        obs.begin("convert layers", archive.stat().st_size, BYTES)
        try:
            oci = docker_archive_to_oci(
                archive,
                staging / "image" / "oci",
                f"{project.name}:{project.version}",
                # the server image's creation time is its runtime's (the base image's), not the release's
                layer_epoch if separate_model else epoch,
                on_bytes=lambda n: obs.advance("convert layers", n),
                layer_epoch=layer_epoch,
                layer_cache=cache / "layers",
            )
        finally:
            obs.end("convert layers")

    model_image: dict[str, Any] | None = None
    if separate_model:
        with phase("model layer"):
            serving = {
                "port": project.serving.port,
                "threads": project.serving.threads,
                "max_batch": project.serving.max_batch,
                "max_request_bytes": project.serving.max_request_bytes,
            }
            env = model_env(project.name, project.version, f"model/{model_name}", serving)
            total = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
            obs.begin("hash model layer", total, BYTES)
            try:
                model_image = write_model_image(
                    oci, model_dir, env, model_labels, epoch, lambda n: obs.advance("hash model layer", n)
                )
            finally:
                obs.end("hash model layer")
    served_digest = model_image["manifest_digest"] if model_image else oci.manifest_digest

    with phase("manifests"):
        k8s_version, k8s_source = target_kubernetes_version(project, profile)
        manifest_image = f"airgap/{project.name}@{served_digest}"
        rendered = render_manifests(project, project_dir, manifest_image, k8s_version)
        validated = validate_manifests(rendered, k8s_version)
        (staging / "manifests").mkdir()
        for f in rendered:
            atomic_write_bytes(staging / "manifests" / f.name, f.text.encode())

    if options.signer is not None:
        algorithm = allowed_algorithm(options.signer.algorithm)
        write_json(staging / "signature.json", {**algorithm.describe(), "key_id": options.signer.key_id})

    return {
        "format": RECORD_FORMAT,
        "name": project.name,
        "version": project.version,
        "tool": f"airgap {__version__}",
        "source_date_epoch": epoch,
        "serving": {
            "port": project.serving.port,
            "threads": project.serving.threads,
            "max_batch": project.serving.max_batch,
            "max_request_bytes": project.serving.max_request_bytes,
        },
        "resources": {"requests": dict(project.resources.requests), "limits": dict(project.resources.limits)},
        "base_image": {"requested": project.base_image, "resolved": base_ref, "python": base_py.version_str},
        "image": {
            "tag": tag,
            "id": image_id,
            "prebuilt": project.image.prebuilt,
            "user": inspect.get("Config", {}).get("User"),
            "labels": inspect.get("Config", {}).get("Labels") or {},
            "archive": "image/model-image.tar",
            "dockerfile": dockerfile,
            "oci_layout": "image/oci",
            "digest": oci.manifest_digest,
            "config_digest": oci.config_digest,
            "layers": [{"digest": d, "size": s} for d, s in oci.layers],
            **({"model_image": model_image} if model_image else {}),
        },
        "policy": {
            "fail_on": project.policies.fail_on,
            "waivers": [{"rule": w.rule, "justification": w.justification} for w in project.policies.waivers],
        },
        "manifests": {
            "image": manifest_image,
            "files": [f.name for f in rendered],
            "objects": validated,
            "kubernetes_version": k8s_version,
            "kubernetes_version_source": k8s_source,
        },
        "wheelhouses": {
            "image": wheelhouse_record(image_wh, staging),
            **({"host": wheelhouse_record(host_wh, staging)} if host_wh else {}),
            **({"airgap": wheelhouse_record(airgap_wh, staging)} if airgap_wh else {}),
            **targets_wh,
        },
        **({"airgap_wheelhouse_skipped": airgap_skipped} if airgap_skipped else {}),
        "target_profile": (
            {"hostname": profile.hostname, "sha256": profile.digest, "arch": profile.arch}
            if profile
            else None
        ),
        "model": model_record(model, copied, contract["onnxruntime"]),
        "phases": phase.seconds,
    }


def readable_by_the_server(model_dir: Path) -> None:
    """Opens the staged model to the server's unprivileged user: it reads it through a read-only
    mount, not as the owner of the files."""
    for path in [model_dir, *model_dir.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        path.chmod(mode | (0o555 if path.is_dir() else 0o444))


def split_record(record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The reproducible build record, and the facts of this run (timings, cache use, engine ids)."""
    durable = json.loads(json.dumps(record))
    run: dict[str, Any] = {"phases": durable.pop("phases", {}), "image_id": durable["image"].pop("id", None)}
    run["wheelhouses"] = {
        kind: {"downloaded": wh.pop("downloaded", None), "lock_from_cache": wh.pop("lock_from_cache", None)}
        for kind, wh in durable.get("wheelhouses", {}).items()
    }
    return durable, run
