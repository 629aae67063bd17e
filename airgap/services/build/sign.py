"""Signing a finished staging directory: the compliance gate, then the packer.

A staging directory is signed only if its policy evaluation passed (or the publisher said
``--unsafe-sign-failed-policy``, which the signed manifest records); the key is a ``Signer``
(airgap/ports.py; the signers are in adapters/signers.py) chosen by the CLI from ``--key``, so
nothing here sees key material.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Protocol

from airgap.adapters.fs import read_bytes
from airgap.core.build_record import BuildRecord
from airgap.errors import AnswerIsNo, InvalidInputError
from airgap.ports import Signer
from airgap.services.build.check import CheckOutcome
from airgap.services.build.pack import PackResult, pack
from airgap.services.build.provenance import write_provenance
from airgap.services.media import formats
from airgap.services.observer import Observer


class Staged(Protocol):
    """What sealing needs of a finished build (``bundle.BundleResult`` is one): the staging
    directory and its policy verdict. Declared here so that signing does not depend on the build
    that produced the directory."""

    @property
    def staging(self) -> Path:
        """The staging directory, complete but for its provenance."""
        ...

    @property
    def compliance(self) -> CheckOutcome:
        """The policy evaluation of the staging directory."""
        ...


class UnsafeSignWarning(UserWarning):
    """A bundle whose policy evaluation failed was signed anyway (--unsafe-sign-failed-policy)."""


def compliance_verdict(staging: Path, unsafe_sign_failed_policy: bool = False) -> dict[str, Any]:
    """The compliance gate of signing: the staging directory's policy evaluation, as the signed
    manifest records it. A failed evaluation is not signed (exit 1) unless the publisher says
    ``--unsafe-sign-failed-policy``, which warns and is written into the manifest for the far
    side to see; a staging directory without an evaluation is not a bundle's staging (exit 4)."""
    path = staging / "compliance" / "results.json"
    if not path.is_file():
        raise InvalidInputError(
            f"{staging} has no policy evaluation ({path.relative_to(staging)} is missing)",
            hint="build the staging directory with `airgap bundle`, which evaluates the policies",
        )
    try:
        results = json.loads(read_bytes(path, "policy results"))
    except ValueError as exc:
        raise InvalidInputError(f"{path} is not JSON: {exc}") from None
    failed = results.get("failed") if isinstance(results, dict) else None
    fail_on = results.get("fail_on") if isinstance(results, dict) else None
    if not isinstance(failed, bool) or fail_on not in ("high", "medium", "low"):
        raise InvalidInputError(f"{path} is not a policy evaluation (no failed/fail_on)")
    blocking = [str(r) for r in results.get("blocking") or []]
    verdict: dict[str, Any] = {
        "fail_on": fail_on,
        "failed": failed,
        "summary": results.get("summary") or {},
        "blocking": blocking,
    }
    if failed:
        if not unsafe_sign_failed_policy:
            raise AnswerIsNo(
                f"the policy evaluation failed ({len(blocking)} open finding(s) at or above {fail_on}"
                + (f": {', '.join(blocking[:3])}" if blocking else "")
                + "): the bundle was not signed",
                hint=f"see {staging / 'compliance' / 'checklist.md'}; fix them, or waive each in "
                "airgap.yaml with a written justification",
            )
        verdict["unsafe_signed_failed_policy"] = True
        warnings.warn(
            f"UNSAFE: signing {staging.name} although its policy evaluation failed "
            "(--unsafe-sign-failed-policy); the manifest records it and `airgap install` refuses it "
            "without --unsafe-install-failed-policy",
            UnsafeSignWarning,
            stacklevel=2,
        )
    return verdict


def _staged_record(staging: Path) -> BuildRecord:
    """The staging directory's build record, checked as the far side will check it, with the
    fields the packer needs: a bad record is refused here (exit 4), never signed."""
    record = BuildRecord.from_json(read_bytes(staging / "build.json", "build record"))
    epoch = record.source_date_epoch
    if epoch is None or epoch < 0:
        raise InvalidInputError(
            f"{staging / 'build.json'}: source_date_epoch must be a non-negative integer, not {epoch!r:.40}",
            hint="re-run `airgap bundle` to write a complete staging directory",
        )
    for key, value in (("name", record.name), ("version", record.version)):
        if value is None:
            raise InvalidInputError(
                f"{staging / 'build.json'}: {key} must be a string",
                hint="re-run `airgap bundle` to write a complete staging directory",
            )
    return record


def pack_staging(
    staging: Path,
    out_dir: Path,
    signer: Signer,
    *,
    part_size: int | None = None,
    expires: str | None = None,
    observer: Observer | None = None,
    unsafe_sign_failed_policy: bool = False,
    parity: int = 0,
    bundle_format: str = formats.DEFAULT,
    external: frozenset[str] = frozenset(),
) -> PackResult:
    """Signs and packs a finished staging directory into the bundle that crosses the gap, if its
    policy evaluation passed (see ``compliance_verdict``). ``external``: content hashes the far
    side holds, listed in the signed manifest but left out of the archive (a delta bundle)."""
    record = _staged_record(staging)
    policy = compliance_verdict(staging, unsafe_sign_failed_policy)
    # The provenance is a content file like any other: the manifest's signature covers its hash.
    write_provenance(staging, record, signer)
    image = record.image
    images = []
    if image.digest:
        images.append(
            {
                "name": f"{record.name}:{record.version}",
                "layout": "image/oci",
                "manifest_digest": image.digest,
                "config_digest": image.config_digest,
                "layers": list(image.layers),
                "user": image.user,
            }
        )
    metadata = {
        "target_profile_sha256": record.target_profile.sha256 if record.target_profile else None,
        "images": images,
        "locks": {kind: wh.lock_sha256 for kind, wh in record.wheelhouses.items()},
        "policy": policy,
    }
    assert record.name is not None and record.version is not None and record.source_date_epoch is not None
    result = pack(
        staging,
        out_dir,
        signer,
        record.source_date_epoch,
        name=record.name,
        version=record.version,
        part_size=part_size,
        expires=expires,
        metadata=metadata,
        observer=observer,
        parity=parity,
        bundle_format=bundle_format,
        external=external,
    )
    changed = _model_changed(record, result.manifest)
    if changed:
        for path in result.files:
            path.unlink(missing_ok=True)
        raise InvalidInputError(
            f"{changed} changed after its golden outputs were recorded (its hash is not the one "
            "build.json records): nothing was written",
            hint="the staged model files are links to the project's own when they can be: do not change "
            "the model while it is being bundled, then bundle again",
        )
    return result


def _model_changed(record: BuildRecord, manifest: Any) -> str | None:
    """The first model file whose packed content is not the content build.json records (the model
    is staged as hard links to the project's files where it can be, so a project file written to
    during the build would otherwise ship with the golden outputs of other bytes)."""
    raw_model = record.raw.get("model")
    model: dict[str, Any] = raw_model if isinstance(raw_model, dict) else {}
    expected: dict[str, str] = {}
    if isinstance(model.get("file"), str) and isinstance(model.get("sha256"), str):
        expected[model["file"]] = model["sha256"]
    for entry in model.get("external_data") or []:
        if (
            isinstance(entry, dict)
            and isinstance(entry.get("file"), str)
            and isinstance(entry.get("sha256"), str)
        ):
            expected[entry["file"]] = entry["sha256"]
    packed = {str(f.content_path): str(f.content_sha256 or f.sha256) for f in manifest.files}
    for path, sha in sorted(expected.items()):
        if path in packed and packed[path] != sha:
            return path
    return None


def seal(
    result: Staged,
    signer: Signer | None,
    *,
    part_size: int | None = None,
    expires: str | None = None,
    observer: Observer | None = None,
    unsafe_sign_failed_policy: bool = False,
    parity: int = 0,
    bundle_format: str = formats.DEFAULT,
    external: frozenset[str] = frozenset(),
) -> PackResult | None:
    """The last step of ``airgap bundle``, and its compliance gate.

    With a signer, the staging directory is signed and packed beside itself (``pack_staging``
    refuses a failed policy evaluation unless ``unsafe_sign_failed_policy``). Without one, only
    the staging directory exists; a failed evaluation is still the answer no (exit 1), so that a
    pipeline never mistakes a non-compliant build for a good one.
    """
    if signer is None:
        if result.compliance.failed:
            raise AnswerIsNo(
                f"{len(result.compliance.blocking)} open policy finding(s) at or above "
                f"{result.compliance.fail_on}",
                hint=f"see {result.staging / 'compliance' / 'checklist.md'}; fix them, or waive each in "
                "airgap.yaml with a written justification",
            )
        return None
    return pack_staging(
        result.staging,
        result.staging.parent,
        signer,
        part_size=part_size,
        expires=expires,
        observer=observer,
        unsafe_sign_failed_policy=unsafe_sign_failed_policy,
        parity=parity,
        bundle_format=bundle_format,
        external=external,
    )
