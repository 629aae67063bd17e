"""`airgap rebuild`: the far side rebuilds a verified bundle's model image on its own approved base.

A site whose policy rejects the bundle's base image rebuilds offline, from nothing but the bundle
and the base image its engine (or registry) already holds:

    verified → base probed → wheelhouse fits → extracted → image built (no network) → golden
    outputs re-checked against the signed contract → policies → signed by the site key

The bundle is verified exactly as `install` does, and nothing is extracted before that passes;
the wheelhouse fit is decided from the signed manifest's file names alone, so a base whose Python
no wheelhouse fits is refused in seconds, naming the wheels and what to bundle instead. Nothing is
re-recorded: the rebuilt image must answer the golden inputs as the signed contract says. The new
bundle is signed by the site's key and its build record (and provenance) names the original
bundle — name, version, manifest hash, publisher key — and the new base digest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airgap.adapters.engine_lease import EngineLease
from airgap.adapters.fs import atomic_write_bytes, write_json
from airgap.adapters.oci import docker_archive_to_oci, write_model_image
from airgap.adapters.sbom import write_staging_sbom
from airgap.adapters.wheels import sha256_file
from airgap.core import rebuild as fit
from airgap.core.build_record import BuildRecord
from airgap.core.model_layer import MODEL_ROOT
from airgap.core.project import Waiver
from airgap.core.signing import allowed_algorithm
from airgap.core.smoke import compare_contract, summary
from airgap.core.tags import compute_tags
from airgap.errors import AnswerIsNo, IntegrityError, InvalidInputError, UsageError
from airgap.ports import ImageEngine, Mount, RunSpec, Signer
from airgap.services.build.bundle import readable_by_the_server
from airgap.services.build.check import (
    DirectoryReader,
    check_bundle,
    load_catalog,
    policy_directories,
    write_compliance,
)
from airgap.services.build.model_image import build_image, remove_unshipped, stable_layer_epoch
from airgap.services.build.pack import PackResult
from airgap.services.build.probe import probe_image
from airgap.services.build.sign import pack_staging
from airgap.services.media import formats
from airgap.services.media.extraction import extract
from airgap.services.media.verify import VerifyOptions, verify_and_audit
from airgap.services.observer import BYTES, NullObserver, Observer, Phases
from airgap.services.state import State

REBUILT_FORMAT = "airgap.rebuilt-from/v1"
_KEEP = ("build.json", "model/contract.json")


@dataclass(frozen=True)
class RebuildOptions:
    """What to rebuild, on which base, signed by whom, and what the far side trusts."""

    bundle: Path
    base: str
    signer: Signer
    verify: VerifyOptions
    output_dir: Path
    bundle_format: str = formats.DEFAULT


@dataclass(frozen=True)
class RebuildResult:
    """The new bundle, what it was rebuilt from and on, and how long each phase took."""

    packed: PackResult
    rebuilt_from: dict[str, Any]
    base: dict[str, Any]
    wheelhouse: str  # which of the bundle's wheelhouses the image was built from
    onnxruntime: str
    phases: dict[str, float]
    seconds: float


def rebuild(
    options: RebuildOptions, state: State, engine: ImageEngine, observer: Observer | None = None
) -> RebuildResult:
    """Verifies, checks the fit, rebuilds, re-checks and signs; raises on every failure and leaves
    no staging directory behind. The original bundle is never modified."""
    obs = observer or NullObserver()
    phase = Phases(obs)
    started = time.monotonic()
    out_dir = options.output_dir.resolve()
    if out_dir == options.bundle.resolve().parent:
        raise UsageError(
            f"--output {options.output_dir} is the original bundle's directory: the rebuilt bundle "
            "has the same name and would replace it",
            hint="choose another directory, e.g. --output rebuilt/",
        )
    # 1. Verified exactly as install verifies — trusted for its name, and in the same version
    #    order: nothing older than the highest version installed here under its name, nor another
    #    bundle under a version installed here, is re-signed by the site key (which every install
    #    here trusts). Small metadata is handed back by the verifier.
    keep = dataclasses.replace(
        options.verify,
        keep=lambda path, size: path in _KEEP and size < 16 << 20,
        installed_versions=state.installed_versions(),
        installed_manifests=state.installed_manifests(),
    )
    verified = verify_and_audit(options.bundle, state, keep, obs, action="rebuild")
    phase.seconds["verify"] = round(time.monotonic() - started, 3)
    missing = [p for p in _KEEP if p not in verified.kept]
    if missing:
        raise InvalidInputError(
            f"{options.bundle} has no {', '.join(missing)}: it cannot be rebuilt and re-checked",
            hint="ask the publisher for a bundle built by `airgap bundle`",
        )
    record = BuildRecord.from_json(verified.kept["build.json"])
    contract = json.loads(verified.kept["model/contract.json"])
    dockerfile = record.image.dockerfile
    old_base = record.base_image.resolved or ""
    if not isinstance(dockerfile, str) or not old_base or old_base not in dockerfile:
        raise InvalidInputError(
            f"{verified.manifest.name} {verified.manifest.version} ships a prebuilt image with no "
            "Dockerfile airgap rendered: there is nothing to rebuild it from",
            hint="ask the publisher for a bundle built by `airgap bundle` from a base image",
        )
    # 2. The site's base image, probed inside itself with the network off.
    with phase("probe base"):
        base_ref = engine.resolve_digest(options.base)
        base_inspect = engine.inspect_image(base_ref)
        py = probe_image(engine, base_ref).profile.primary_python()
        tags = compute_tags(py)
    # 3. Which wheelhouse fits, from the signed file names alone: refused before any extraction.
    files = [f.content_path for f in verified.manifest.files]
    chosen = fit.choose(fit.candidates(record.wheelhouses, record.base_image.python, files), tags)
    if chosen.chosen is None:
        site = f"{options.base} (Python {py.version_str}, glibc {py.glibc or 'none'})"
        raise InvalidInputError(
            chosen.reason(site, tags),
            hint=fit.suggestion(f"{py.minor[0]}.{py.minor[1]}", py.glibc),
        )
    cand = chosen.chosen
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = f"{verified.manifest.name}-{verified.manifest.version}"
    staging = out_dir / f".{slug}.rebuild-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        with phase("extract"):
            extract(
                options.bundle,
                verified,
                lambda p: not p.startswith(("image/", "attestations/", "compliance/")),
                staging,
                state.blob_store,
                # The staging tree is edited below: its files are copies, never the store's inodes.
                copy=True,
            )
        if cand.directory:
            record = _swap_wheelhouse(staging, record, cand)
        name, version = record.name, record.version
        epoch, model_file = record.source_date_epoch, record.model.file
        if name is None or version is None or epoch is None or model_file is None:
            raise InvalidInputError(
                f"{slug}'s build.json has no name, version, source_date_epoch or model file: "
                "it cannot be rebuilt",
                hint="ask the publisher for a bundle built by `airgap bundle`",
            )
        with phase("model image"):
            labels = dict(record.image.labels)
            labels.update(
                {
                    "org.opencontainers.image.base.name": options.base,
                    "org.opencontainers.image.base.digest": base_ref.split("@", 1)[1],
                    "io.airgap.lock.sha256": sha256_file(staging / "requirements.lock"),
                    "io.airgap.rebuilt-from": f"{slug} sha256:{verified.manifest_sha256}",
                }
            )
            tag = f"airgap/{name}:{version}-site"
            previous = engine.tagged(tag)
            new_dockerfile = dockerfile.replace(old_base, base_ref)
            layer_epoch = stable_layer_epoch(epoch, base_inspect.get("Created"))
            with EngineLease() as lease:
                image_id = build_image(
                    engine,
                    staging,
                    new_dockerfile,
                    tag,
                    labels,
                    obs,
                    layer_epoch,
                    with_model=record.image.model_image is None,
                )
                remove_unshipped(engine, staging, image_id, previous, tag, lease)
        with phase("golden check"):
            separate = record.image.model_image
            if separate is not None:
                readable_by_the_server(staging / "model")
            ort = _check_golden(
                engine, tag, model_file, contract, staging / "model" if separate is not None else None
            )
            pinned = record.wheelhouses["image"].pins.get("onnxruntime")
            if pinned and pinned != ort:
                raise IntegrityError(
                    f"the rebuilt image runs onnxruntime {ort} but its lock pins {pinned}: "
                    "the image is not built from the wheelhouse"
                )
        with phase("save image"):
            oci = _save_oci(
                engine,
                tag,
                staging,
                f"{name}:{version}",
                layer_epoch if separate is not None else epoch,
                layer_epoch,
                obs,
            )
        model_image: dict[str, Any] | None = None
        old_image, new_image = record.image.digest or "", oci.manifest_digest
        if separate is not None:
            with phase("model layer"):
                # The same model layer (the same files, the same epoch) on the rebuilt server image.
                model_labels = {
                    "org.opencontainers.image.title": name,
                    "org.opencontainers.image.version": version,
                    "org.opencontainers.image.created": time.strftime(
                        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch)
                    ),
                }
                model_image = write_model_image(
                    oci, staging / "model", dict(separate.env), model_labels, epoch
                )
            old_image, new_image = separate.manifest_digest, model_image["manifest_digest"]
        _relink_manifests(staging, old_image, new_image)
        inspect = engine.inspect_image(tag)
        rebuilt_from = {
            "format": REBUILT_FORMAT,
            "name": verified.manifest.name,
            "version": verified.manifest.version,
            "manifest_sha256": verified.manifest_sha256,
            "publisher_key_id": verified.key_id,
            "base_image": old_base,
            "image_digest": old_image,
        }
        base = {"requested": options.base, "resolved": base_ref, "python": py.version_str, "glibc": py.glibc}
        # The new record is a copy of the original with its own fields set: never the parsed one.
        doc = _copy(record)
        doc.update(
            {
                "base_image": base,
                "rebuilt_from": rebuilt_from,
                "model": {**doc["model"], "onnxruntime": ort},
                "image": {
                    **{k: v for k, v in doc["image"].items() if k != "id"},
                    "tag": tag,
                    "labels": inspect.get("Config", {}).get("Labels") or {},
                    "user": inspect.get("Config", {}).get("User"),
                    "dockerfile": new_dockerfile,
                    "digest": oci.manifest_digest,
                    "config_digest": oci.config_digest,
                    "layers": [{"digest": d, "size": s} for d, s in oci.layers],
                    **({"model_image": model_image} if model_image else {}),
                },
            }
        )
        if old_image and record.manifests.image is not None:
            # The Kubernetes manifests name the image by digest: they name the rebuilt one.
            relinked = record.manifests.image.replace(old_image, new_image)
            doc["manifests"] = {**doc["manifests"], "image": relinked}
        _write(staging / "build.json", dict(BuildRecord.from_mapping(doc).raw))
        when = dt.datetime.fromtimestamp(epoch, dt.timezone.utc)
        with phase("sbom"):
            _unlink(staging / "sbom.cdx.json")
            write_staging_sbom(staging, timestamp=when, engine=engine)
        with phase("compliance"):
            policy = record.policy
            _same_rules(staging / "compliance" / "results.json")
            outcome = check_bundle(
                DirectoryReader(staging),
                evaluated_at=when,
                waivers=[Waiver(w["rule"], w["justification"]) for w in policy.get("waivers") or []],
                fail_on=str(policy.get("fail_on") or "high"),
                policy_dirs=policy_directories(),
            )
            write_compliance(outcome, staging / "compliance")
        algorithm = allowed_algorithm(options.signer.algorithm)
        _unlink(staging / "signature.json")
        write_json(staging / "signature.json", {**algorithm.describe(), "key_id": options.signer.key_id})
        with phase("sign"):
            # The original's expiry travels with it: a site rebuild must not outlive what the
            # publisher signed.
            packed = pack_staging(
                staging,
                out_dir,
                options.signer,
                observer=obs,
                bundle_format=options.bundle_format,
                expires=verified.manifest.expires,
            )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return RebuildResult(
        packed=packed,
        rebuilt_from=rebuilt_from,
        base=base,
        wheelhouse=cand.kind,
        onnxruntime=ort,
        phases=phase.seconds,
        seconds=round(time.monotonic() - started, 1),
    )


def _same_rules(original_results: Path) -> None:
    """The publisher's check may have used rules of its own (``policies.paths``) that this airgap
    does not carry; re-checking without them would sign a result that silently drops them."""
    try:
        doc = json.loads(original_results.read_bytes())
        original = {str(r["id"]) for r in doc.get("rules") or []}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return  # a bundle without readable results: the re-check below is all there is
    here = {rule.id for rule in load_catalog(policy_directories()).rules}
    missing = sorted(original - here)
    if missing:
        raise InvalidInputError(
            f"the bundle was checked against rules this airgap does not have ({', '.join(missing[:8])}"
            f"{', …' if len(missing) > 8 else ''}): a rebuild checked without them would drop them",
            hint="ask the publisher for those policy files' rules in the built-in catalog, or for a "
            "bundle built on the site's base image",
        )


def _unlink(path: Path) -> None:
    # Extracted files may be hard links into the blob store: replace them, never write through.
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _copy(record: BuildRecord) -> dict[str, Any]:
    """A deep copy of the record's mapping, to edit into a new record."""
    copied: dict[str, Any] = json.loads(json.dumps(dict(record.raw)))
    return copied


def _write(path: Path, doc: dict[str, Any]) -> None:
    _unlink(path)
    atomic_write_bytes(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())


def _swap_wheelhouse(staging: Path, record: BuildRecord, cand: fit.Candidate) -> BuildRecord:
    """The chosen target's wheelhouse becomes the image's (top-level ``wheels/`` and lock); the
    original image wheelhouse moves to ``targets/pyX.Y``, so the new bundle can go back. Returns
    the record that says so: a new one, re-parsed (``record`` is not changed)."""
    orig_py = ".".join((record.base_image.python or "3").split(".")[:2])
    back = f"py{orig_py}"
    parked = staging / f".image-{uuid.uuid4().hex[:8]}"
    parked.mkdir()
    os.replace(staging / "wheels", parked / "wheels")
    os.replace(staging / "requirements.lock", parked / "requirements.lock")
    src = staging / cand.directory
    os.replace(src / "wheels", staging / "wheels")
    os.replace(src / "requirements.lock", staging / "requirements.lock")
    shutil.rmtree(src)
    (staging / "targets" / back).parent.mkdir(parents=True, exist_ok=True)
    if (staging / "targets" / back).exists() or back in record.wheelhouses:
        back = f"{back}-image"  # a target for the image's own Python: keep both, never merge
    os.replace(parked, staging / "targets" / back)
    image = dict(record.wheelhouses["image"].raw)
    chosen = {k: v for k, v in record.wheelhouses[cand.kind].raw.items() if k not in ("python", "glibc")}
    wheelhouses = {kind: dict(wh.raw) for kind, wh in record.wheelhouses.items() if kind != cand.kind}
    wheelhouses["image"] = {**chosen, "lock": "requirements.lock"}
    wheelhouses[back] = {**image, "lock": f"targets/{back}/requirements.lock", "python": orig_py}
    return BuildRecord.from_mapping({**record.raw, "wheelhouses": wheelhouses})


def _check_golden(
    engine: ImageEngine, tag: str, model_file: str, contract: dict[str, Any], model_dir: Path | None
) -> str:
    """Runs the golden inputs in the rebuilt image (network off) and holds the answers to the signed
    contract's outputs, within its tolerance; returns the image's onnxruntime version. ``model_dir``:
    the model, mounted read-only, for a server image that holds none."""
    res = engine.run(
        RunSpec(
            image=tag,
            argv=[
                "check",
                "--model",
                f"/opt/airgap/{model_file}",
                "--golden",
                "/opt/airgap/model/golden.json",
            ],
            network="none",
            mounts=[Mount(model_dir, MODEL_ROOT)] if model_dir is not None else [],
            timeout=300,
        )
    )
    if res.exit_code != 0:
        line = (res.stderr.decode("utf-8", "replace").strip().splitlines() or ["no output"])[-1]
        raise AnswerIsNo(
            f"the rebuilt image cannot run the model: {line[:300]}",
            hint="rebuild on a base image the bundle's wheelhouse supports, or ask for a new bundle",
        )
    try:
        doc = json.loads(res.stdout)
        answers = {str(c["name"]): c["outputs"] for c in doc["cases"]}
        ort = str(doc["onnxruntime"])
    except (ValueError, KeyError, TypeError) as exc:
        raise AnswerIsNo(
            f"the rebuilt image's golden run printed no usable answers ({type(exc).__name__}: "
            f"{str(exc)[:200]})",
            hint="nothing was signed; run the image by hand to see what its server prints",
        ) from None
    mismatches = compare_contract(contract, answers)
    if mismatches:
        raise AnswerIsNo(
            f"the rebuilt image does not answer the golden inputs as the signed contract says: "
            f"{summary(mismatches)}",
            hint="nothing was signed; the model must be re-bundled and re-validated for this base",
        )
    return ort


def _save_oci(
    engine: ImageEngine,
    tag: str,
    staging: Path,
    ref: str,
    epoch: int,
    layer_epoch: int,
    obs: Observer,
) -> Any:
    (staging / "image").mkdir()
    archive = staging / "image" / "model-image.tar"
    obs.begin("docker save", engine.inspect_image(tag).get("Size") or None, BYTES)
    try:
        engine.save(tag, archive, on_bytes=lambda n: obs.advance("docker save", n))
    finally:
        obs.end("docker save")
    return docker_archive_to_oci(
        archive,
        staging / "image" / "oci",
        ref,
        epoch,
        layer_epoch=layer_epoch,
    )


def _relink_manifests(staging: Path, old: str, new: str) -> None:
    """The Kubernetes manifests name the image by digest: point their files at the rebuilt one."""
    directory = staging / "manifests"
    if not old or not directory.is_dir():
        return
    for path in sorted(directory.iterdir()):
        if path.is_file():
            text = path.read_text()
            if old in text:
                _unlink(path)
                atomic_write_bytes(path, text.replace(old, new).encode())
