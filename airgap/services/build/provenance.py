"""The provenance every bundle carries, signed into its staging directory before it is packed.

``bundle/attestations/provenance.intoto.json`` is an in-toto Statement v1 with a SLSA provenance
v1 predicate, in a DSSE envelope signed by the publisher's key. It is written into the staging
directory just before the staging directory is packed, so it is an ordinary content file: listed
in the signed manifest with its SHA-256 like every other. Its subjects are what the bundle
delivers (the model image, the model and its contract, the locks); the bundle's manifest cannot
be one of them, since the manifest is signed after, and over, this file. The chain runs the other
way: the manifest's signature covers the attestation's hash.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from airgap import __version__
from airgap.adapters.fs import atomic_write_bytes
from airgap.core import attestation as at
from airgap.core.build_record import BuildRecord
from airgap.errors import EnvironmentFailure, InvalidInputError
from airgap.ports import Signer
from airgap.services.attest import sign_envelope

PROVENANCE = "attestations/provenance.intoto.json"
"""Where the provenance lives, relative to the staging directory and to ``bundle/``."""


def builder_id() -> str:
    """The SLSA builder id: this airgap, by version (a package URL)."""
    return f"pkg:generic/airgap@{__version__}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _digest_hex(value: object) -> str | None:
    if isinstance(value, str) and value.startswith("sha256:"):
        return value.split(":", 1)[1]
    return None


def provenance_statement(staging: Path, record: BuildRecord) -> bytes:
    """The SLSA provenance v1 statement of a staging directory, from its signed build record and
    the files themselves (hashed here, so a subject is what will be packed)."""
    name, version = str(record.name), str(record.version)
    subjects: list[at.Subject] = []
    image_digest = _digest_hex(record.image.digest)
    if image_digest:
        subjects.append(at.Subject(f"airgap/{name}", image_digest))
    for rel in (record.model.file or "", "model/contract.json", "model/golden.json"):
        if rel and (staging / rel).is_file():
            subjects.append(at.Subject(rel, _sha256(staging / rel)))
    locks = []
    for kind, wh in sorted(record.wheelhouses.items()):
        rel = wh.lock or ""
        if rel and (staging / rel).is_file():
            digest = _sha256(staging / rel)
            subjects.append(at.Subject(rel, digest))
            locks.append({"name": rel, "digest": {"sha256": digest}, "annotations": {"wheelhouse": kind}})
    if not subjects:
        raise InvalidInputError(
            f"{staging} has nothing to attest (no image, model or lock)",
            hint="build the staging directory with `airgap bundle`",
        )
    base = record.base_image
    resolved: list[dict[str, Any]] = []
    base_digest = _digest_hex((base.resolved or "").rpartition("@")[2])
    if base_digest:
        resolved.append(
            {
                "name": "base image",
                "uri": str(base.resolved),
                "digest": {"sha256": base_digest},
                "annotations": {"requested": base.requested, "python": base.python},
            }
        )
    resolved += locks
    origin = record.rebuilt_from  # `airgap rebuild`: the bundle this one was rebuilt from
    if origin is not None and origin.manifest_sha256:
        resolved.append(
            {
                "name": f"airgap bundle {origin.name} {origin.version}",
                "uri": f"airgap-bundle:{origin.name}@{origin.version}",
                "digest": {"sha256": origin.manifest_sha256},
                "annotations": {"publisherKeyId": origin.publisher_key_id, "role": "rebuilt-from"},
            }
        )
    project = record.project_file
    profile = record.target_profile
    predicate = {
        "buildDefinition": {
            "buildType": at.BUILD_TYPE,
            "externalParameters": {
                "project": {
                    "name": name,
                    "version": version,
                    "file": project.name,
                    "sha256": project.sha256,
                },
                "targetProfile": (
                    {"sha256": profile.sha256, "hostname": profile.hostname, "arch": profile.arch}
                    if profile
                    else None
                ),
                "policy": dict(record.policy),
            },
            "internalParameters": {
                "sourceDateEpoch": record.source_date_epoch,
                "kubernetesVersion": record.manifests.kubernetes_version,
            },
            "resolvedDependencies": resolved,
        },
        "runDetails": {
            "builder": {"id": builder_id(), "version": {"airgap": __version__}},
            "metadata": {"invocationId": f"{name}-{version}"},
        },
    }
    return at.statement(subjects, at.SLSA_PROVENANCE, predicate)


def write_provenance(staging: Path, record: BuildRecord, signer: Signer) -> Path:
    """Writes the signed provenance into the staging directory, where the packer finds it."""
    envelope = sign_envelope(provenance_statement(staging, record), signer)
    path = staging / PROVENANCE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EnvironmentFailure(f"cannot create {path.parent}: {exc.strerror}") from None
    atomic_write_bytes(path, envelope.to_bytes())
    return path
