"""The service behind ``airgap check``: a bundle's facts, the policy evaluation and its three reports.

It reads a bundle through a *reader* (a staging directory today, the signed bundle tomorrow: both
implement the same two-method port), builds the facts the policy engine sees, evaluates the rules
of ``policies/`` (and the project's own rule directories), and returns the results with the
rendered ``results.json``, ``checklist.md`` and ``checklist.cklb``. Nothing is written into the
bundle being checked; ``write_compliance`` writes the three files, atomically, where the caller
says (the bundler puts them in ``compliance/`` before it signs).

The facts dict (its keys are the vocabulary of docs/policies.md):

``manifests``   ``[{"source": "manifests/x.yaml", "document": 0, "object": {...}}]``
``image``       ``{"ref", "id", "digest", "user", "labels", "exposed_ports", "env", "arch"}`` or None
``base_image``  ``{"requested", "resolved", "pinned_by_digest"}`` or None
``lock``        ``{"pins", "all_hashed", "hash_algorithms", "unhashed"}`` or None; ``host_lock`` too
``signature``   ``{"algorithm", "curve", "key_bits", "hash"}`` from ``signature.json``, or None
``hashes``      ``{"manifest_algorithm"}``
``sbom``        ``{"present", "spec_version", "components", "format"}``
``profile``     the target profile (``target-profile.json``), or None
``project``     ``{"name", "version", "namespace"}``
``bundle``      ``{"files", "size_bytes", "required_disk_bytes"}`` (sizes None if the reader cannot tell)
``sources``     which file each top-level fact came from, for findings
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, runtime_checkable

import yaml

from airgap import __version__
from airgap.adapters.fs import atomic_write_bytes
from airgap.adapters.sbom import SBOM_FILE, read_image_archive, resolve_oci_layout
from airgap.core import oscal
from airgap.core.build_record import BuildRecord
from airgap.core.checklist import ChecklistContext, render_all
from airgap.core.policy import Catalog, Evaluation, RuleResult, evaluate, mapping_of, parse_catalog
from airgap.core.profile import Profile
from airgap.core.project import DIGEST_REF, PolicySpec, Waiver
from airgap.core.sbom import summarize
from airgap.errors import EnvironmentFailure, InvalidInputError
from airgap.ports import BundleReader as BundleReader
from airgap.resources import policies_dir
from airgap.services.build.project import load_project

if TYPE_CHECKING:
    from airgap.services.observer import Observer
    from airgap.services.state import State

# The evaluation three ways (results.json, the STIG checklist twice), then OSCAL: the model service's
# component definition, the assessment results and their summary for the ISSO (docs/oscal.md).
COMPLIANCE_FILES = (
    "results.json",
    "checklist.md",
    "checklist.cklb",
    oscal.COMPONENT_FILE,
    oscal.RESULTS_FILE,
    oscal.SUMMARY_FILE,
)
IMAGE_ARCHIVE = "image/model-image.tar"
OCI_LAYOUT = "image/oci/"
# Installing needs the bundle and the image loaded into the runtime's store, on one filesystem.
DISK_FACTOR = 2
# Docker/OCI architecture names -> `uname -m`, the vocabulary of target profiles.
UNAME_ARCH = {
    "amd64": "x86_64",
    "arm64": "aarch64",
    "386": "i686",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


@runtime_checkable
class StreamingReader(Protocol):
    """Optional extras: a reader that can stream a file and tell its size without reading it.

    With them, ``check`` reads the image config out of a ``docker save`` archive and knows the
    bundle's size (for the target's free disk). A reader without them still gets every other fact.
    """

    def open(self, path: str) -> BinaryIO:
        """A binary stream of one file, so a large archive is read without loading it whole."""

    def size(self, path: str) -> int:
        """One file's size in bytes, without reading it."""


UNSHIPPED = frozenset({"image/model-image.tar"})


class DirectoryReader:
    """A staging directory (or an unpacked bundle) as a ``BundleReader``; it never writes."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise InvalidInputError(
                f"{root} is not a directory", hint="pass a staging directory from airgap bundle"
            )
        self.root = root.resolve()

    def _path(self, rel: str) -> Path:
        p = PurePosixPath(rel)
        if p.is_absolute() or ".." in p.parts or not p.parts:
            raise InvalidInputError(f"{rel!r} is not a path inside the bundle")
        full = (self.root / p).resolve()
        if full != self.root and self.root not in full.parents:
            raise InvalidInputError(f"{rel} leads outside the bundle (symlink)")
        return full

    def list(self) -> list[str]:
        """What the bundle will hold: hidden run files and the docker-save copy are not packed."""
        out = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                full = Path(dirpath) / name
                rel = full.relative_to(self.root).as_posix()
                if full.is_file() and not full.is_symlink() and not name.startswith("."):
                    out.append(rel)
        if f"{OCI_LAYOUT}index.json" in out:  # the OCI layout ships; the docker-save copy does not
            out = [p for p in out if p not in UNSHIPPED]
        return sorted(out)

    def read(self, path: str) -> bytes:
        """One file's bytes; a path that leaves the directory, even by symlink, is refused."""
        try:
            return self._path(path).read_bytes()
        except FileNotFoundError:
            raise InvalidInputError(f"{path} is not in the bundle {self.root}") from None
        except OSError as exc:
            raise EnvironmentFailure(f"cannot read {self.root / path}: {exc.strerror or exc}") from None

    def open(self, path: str) -> BinaryIO:
        """A stream of one file, confined to the directory like ``read``."""
        try:
            return self._path(path).open("rb")
        except OSError as exc:
            raise InvalidInputError(f"cannot open {path} in {self.root}: {exc.strerror or exc}") from None

    def size(self, path: str) -> int:
        """One file's size from ``stat``, confined to the directory like ``read``."""
        try:
            return self._path(path).stat().st_size
        except OSError as exc:
            raise InvalidInputError(f"cannot stat {path} in {self.root}: {exc.strerror or exc}") from None


# ------------------------------------------------------------------------------------------- facts


_PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]*\])?\s*===?\s*[^\s;\\]+")
_HASH_OPTION = re.compile(r"--hash[=\s]+([A-Za-z0-9_-]+):")


def lock_facts(text: str) -> dict[str, Any]:
    """Counts pins and the hash algorithms of a requirements lock, without trusting it.

    Unlike the wheelhouse parser this never refuses a lock: a pin without a hash is exactly what
    the policy must be able to report.
    """
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.strip().startswith("#") else ""
        if line.endswith("\\"):
            current += " " + line[:-1]
            continue
        current += " " + line
        if current.strip():
            logical.append(current.strip())
        current = ""
    if current.strip():
        logical.append(current.strip())
    pins = 0
    unhashed: list[str] = []
    algorithms: set[str] = set()
    for line in logical:
        if not _PIN.match(line):
            continue
        pins += 1
        found = _HASH_OPTION.findall(line)
        if not found:
            unhashed.append(re.split(r"[=\[\s]", line, maxsplit=1)[0])
        algorithms.update(a.lower() for a in found)
    return {
        "pins": pins,
        "all_hashed": not unhashed,
        "hash_algorithms": sorted(algorithms),
        "unhashed": unhashed,
    }


def _json_file(reader: BundleReader, path: str) -> Any:
    try:
        return json.loads(reader.read(path))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path} in the bundle is not valid JSON: {exc}") from None


def _manifests(reader: BundleReader, files: Sequence[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in files:
        if not (path.startswith("manifests/") and path.endswith((".yaml", ".yml"))):
            continue
        try:
            docs = list(yaml.safe_load_all(reader.read(path).decode("utf-8")))
        except UnicodeDecodeError:
            raise InvalidInputError(f"{path} is not UTF-8 text") from None
        except yaml.YAMLError as exc:
            raise InvalidInputError(f"{path}: not valid YAML: {exc}") from None
        for i, doc in enumerate(docs):
            if doc is None:
                continue
            if not isinstance(doc, dict) or not isinstance(doc.get("kind"), str):
                raise InvalidInputError(f"{path}: document {i + 1} is not a Kubernetes object (no kind)")
            out.append({"source": path, "document": i, "object": doc})
    return out


def _image_config(
    reader: BundleReader, files: set[str], record: BuildRecord
) -> tuple[dict[str, Any] | None, str | None]:
    """The config of the image that serves, and the file it came from: the model image's (the
    server image with the model layer) when the model is its own content, else the OCI layout's
    image by plain reads, else the archive."""
    model_image = record.image.model_image
    if model_image is not None:
        path = f"{OCI_LAYOUT}blobs/sha256/{model_image.config_digest.removeprefix('sha256:')}"
        if path in files:
            config = _json_file(reader, path)
            return (config if isinstance(config, dict) else None), path
    if f"{OCI_LAYOUT}index.json" in files:
        _, config_path, _ = resolve_oci_layout(reader.read, OCI_LAYOUT)
        config = _json_file(reader, config_path)
        return (config if isinstance(config, dict) else None), f"{OCI_LAYOUT}index.json"
    if IMAGE_ARCHIVE in files and isinstance(reader, StreamingReader):
        with reader.open(IMAGE_ARCHIVE) as fh:
            return dict(read_image_archive(fh, scan_layers=False, label=IMAGE_ARCHIVE).config), IMAGE_ARCHIVE
    return None, None


def _image_facts(record: BuildRecord, config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    rec = record.image
    if not rec.present and config is None:
        return None
    cfg = mapping_of(config.get("config")) if config else {}
    arch = None
    if config and isinstance(config.get("architecture"), str):
        arch = UNAME_ARCH.get(config["architecture"], config["architecture"])
        if arch == "arm":
            arch = {"v6": "armv6l", "v7": "armv7l"}.get(str(config.get("variant")), "armv7l")
    cfg_labels = cfg.get("Labels")
    labels: Mapping[str, Any] = cfg_labels if isinstance(cfg_labels, dict) else rec.labels
    return {
        "ref": rec.tag,
        "id": rec.id or rec.config_digest,
        "digest": rec.digest,
        "user": (cfg.get("User") if cfg else None) or rec.user,
        "labels": dict(labels),
        "exposed_ports": sorted(cfg.get("ExposedPorts") or {}) if cfg else [],
        "env": list(cfg.get("Env") or []) if cfg else [],
        "arch": arch,
    }


def build_facts(reader: BundleReader, project: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything the rules can talk about, read from the bundle (see the module docstring)."""
    files = reader.list()
    present = set(files)
    sources: dict[str, str] = {}

    record = BuildRecord.from_mapping({}, lenient=True)
    if "build.json" in present:
        loaded = _json_file(reader, "build.json")
        if not isinstance(loaded, dict):
            raise InvalidInputError("build.json in the bundle is not a build record")
        # Possibly an unsigned staging directory's record, read as found: a mistyped field is absent.
        record = BuildRecord.from_mapping(loaded, lenient=True)
        sources.update(image="build.json", base_image="build.json", project="build.json")

    config, config_source = _image_config(reader, present, record)
    if config_source:
        sources["image"] = config_source
    image = _image_facts(record, config)

    base_rec = record.base_image
    base_image = None
    if base_rec.present:
        resolved = base_rec.resolved or ""
        base_image = {
            "requested": base_rec.requested,
            "resolved": resolved or None,
            "pinned_by_digest": DIGEST_REF.match(resolved) is not None,
        }

    locks: dict[str, Any] = {}
    for key, path in (("lock", "requirements.lock"), ("host_lock", "host/requirements.lock")):
        locks[key] = None
        if path in present:
            locks[key] = lock_facts(reader.read(path).decode("utf-8", "replace"))
            sources[key] = path

    signature = None
    if "signature.json" in present:
        signature = _json_file(reader, "signature.json")
        if not isinstance(signature, dict):
            raise InvalidInputError("signature.json must be an object: {algorithm, curve, key_bits, hash}")
        sources["signature"] = "signature.json"

    manifest_algorithm = "sha256"  # build.json and the locks record SHA-256 digests
    if "manifest.json" in present:
        manifest = _json_file(reader, "manifest.json")
        if isinstance(manifest, dict) and isinstance(manifest.get("hash_algorithm"), str):
            manifest_algorithm = manifest["hash_algorithm"].lower()
        sources["hashes"] = "manifest.json"

    sbom: dict[str, Any] = {"present": False, "spec_version": None, "components": None, "format": None}
    if SBOM_FILE in present:
        doc = _json_file(reader, SBOM_FILE)
        sbom = summarize(doc) if isinstance(doc, dict) else sbom
        sources["sbom"] = SBOM_FILE

    profile = None
    if "target-profile.json" in present:
        profile = dict(Profile.from_json(reader.read("target-profile.json"), "target-profile.json").raw)
        sources["profile"] = "target-profile.json"

    size: int | None = None
    sizer = getattr(reader, "size", None)
    if sizer is not None:
        # The checklist must not depend on itself: compliance/ is written after the first check.
        size = sum(int(sizer(p)) for p in files if not p.startswith("compliance/"))

    proj = dict(project) if project else {}
    proj.setdefault("name", record.name)
    proj.setdefault("version", record.version)
    proj.setdefault("namespace", None)
    return {
        "manifests": _manifests(reader, files),
        "image": image,
        "base_image": base_image,
        "lock": locks["lock"],
        "host_lock": locks["host_lock"],
        "signature": signature,
        "hashes": {"manifest_algorithm": manifest_algorithm},
        "sbom": sbom,
        "profile": profile,
        "project": proj,
        "bundle": {
            "files": len(files),
            "size_bytes": size,
            "required_disk_bytes": size * DISK_FACTOR if size is not None else None,
        },
        "sources": sources,
    }


# ------------------------------------------------------------------------------------------- check


def load_catalog(directories: Sequence[Path]) -> Catalog:
    """Every ``*.yaml`` of the given directories, in order (airgap's own first, then the project's)."""
    documents: list[tuple[str, str]] = []
    for directory in directories:
        if not directory.is_dir():
            raise InvalidInputError(f"policy directory {directory} does not exist")
        for path in sorted(directory.glob("*.yaml")):
            try:
                documents.append((f"{directory.name}/{path.name}", path.read_text()))
            except (OSError, UnicodeDecodeError) as exc:
                raise InvalidInputError(f"cannot read policy file {path}: {exc}") from None
    if not documents:
        raise InvalidInputError(f"no policy files in {', '.join(map(str, directories))}")
    return parse_catalog(documents)


def policy_directories(project_dir: Path | None = None, spec: PolicySpec | None = None) -> list[Path]:
    """airgap's shipped rules, then the project's own (``policies.paths`` in airgap.yaml)."""
    dirs = [policies_dir()]
    if project_dir is not None and spec is not None:
        dirs += [project_dir / p for p in spec.paths]
    return dirs


@dataclass(frozen=True)
class CheckOutcome:
    """What ``airgap check`` found: the evaluation, the facts it saw and the rendered reports."""

    evaluation: Evaluation
    catalog: Catalog
    facts: Mapping[str, Any]
    files: Mapping[str, bytes]  # COMPLIANCE_FILES
    fail_on: str

    @property
    def blocking(self) -> tuple[RuleResult, ...]:
        """Open, unwaived results at or above ``fail_on``: non-empty means exit 1."""
        return self.evaluation.blocking(self.fail_on)

    @property
    def failed(self) -> bool:
        """True when a blocking result remains: the command answers no (exit 1)."""
        return bool(self.blocking)

    @property
    def below_gate(self) -> tuple[RuleResult, ...]:
        """Open findings of medium severity or above that do not block (``--fail-on high``): they
        pass the gate, so a summary that only listed blocking findings would hide them from the
        reviewer who signs."""
        blocking = {id(r) for r in self.blocking}
        return tuple(r for r in self.evaluation.blocking("medium") if id(r) not in blocking)


def check_bundle(
    reader: BundleReader,
    *,
    evaluated_at: datetime,
    waivers: Sequence[Waiver] = (),
    fail_on: str = "high",
    policy_dirs: Sequence[Path] | None = None,
    project: Mapping[str, Any] | None = None,
    catalog: Catalog | None = None,
) -> CheckOutcome:
    """Evaluates the policies on a bundle and renders the three reports; writes nothing.

    ``evaluated_at`` is the timestamp the reports carry (pass SOURCE_DATE_EPOCH for reproducible
    bundles); ``project`` may supply ``name``/``version``/``namespace`` when the bundle has no
    build record.
    """
    if fail_on not in ("high", "medium", "low"):
        raise InvalidInputError(f"--fail-on must be high, medium or low, not {fail_on!r}")
    if catalog is None:
        catalog = load_catalog(list(policy_dirs) if policy_dirs else [policies_dir()])
    facts = build_facts(reader, project)
    evaluation = evaluate(catalog, facts, waivers)
    host = mapping_of(mapping_of(facts.get("profile")).get("host"))
    ctx = ChecklistContext(
        name=str(facts["project"].get("name") or "bundle"),
        version=str(facts["project"].get("version") or "0.0.0"),
        evaluated_at=evaluated_at,
        tool=f"airgap {__version__}",
        fail_on=fail_on,
        target_host=str(host.get("hostname") or ""),
    )
    files = {**render_all(evaluation, ctx, catalog.benchmarks), **oscal.render_check(ctx, evaluation)}
    return CheckOutcome(evaluation, catalog, facts, files, fail_on)


def write_compliance(outcome: CheckOutcome, directory: Path) -> list[Path]:
    """Writes the COMPLIANCE_FILES (results.json, the checklists, the OSCAL documents) into
    ``directory``, each atomically."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EnvironmentFailure(
            f"cannot create {directory}: {exc.strerror or exc}", hint="choose a writable location"
        ) from None
    written = []
    for name in COMPLIANCE_FILES:
        atomic_write_bytes(directory / name, outcome.files[name])
        written.append(directory / name)
    return written


@dataclass(frozen=True)
class CheckTarget:
    """What ``check`` reads, and where its reports go unless the user says otherwise."""

    reader: BundleReader
    default_output: Path


def open_target(
    target: Path,
    state: State,
    key: Path | None = None,
    observer: Observer | None = None,
) -> CheckTarget:
    """A staging directory is read as it is (its reports go into its ``compliance/``); anything
    else is a bundle, and is verified in full — signature by a trusted key, every hash, audited —
    before one byte of it is evaluated (its reports go into ``./compliance``)."""
    if target.is_dir():
        return CheckTarget(DirectoryReader(target), target / "compliance")
    from airgap.services.media.verify import VerifiedReader, VerifyOptions, verify_and_audit
    from airgap.services.trust import trusted_keys

    options = VerifyOptions(
        trusted=trusted_keys(state, key), keep=VerifiedReader.keep, blob_store=state.blob_store
    )
    verified = verify_and_audit(target, state, options, observer, action="check")
    return CheckTarget(VerifiedReader(verified), Path("compliance"))


@dataclass(frozen=True)
class CheckInputs:
    """Everything ``check_bundle`` is evaluated with, besides the bundle itself."""

    evaluated_at: datetime
    waivers: tuple[Waiver, ...]
    fail_on: str
    policy_dirs: list[Path] | None


def check_inputs(
    reader: BundleReader, project_dir: Path | None = None, fail_on: str | None = None
) -> CheckInputs:
    """Which inputs a check reads, in order of precedence.

    The bundle's own build record first: its waivers (with their written justification), its
    ``fail_on``, and its ``source_date_epoch`` as the evaluation time, so that checking the same
    bundle twice writes the same reports. A project directory replaces the waivers, adds its own
    policy directories and brings its ``fail_on``; an explicit ``fail_on`` wins over both, and
    ``high`` is the default.
    """
    loaded = json.loads(reader.read("build.json")) if "build.json" in reader.list() else {}
    record = BuildRecord.from_mapping(loaded, lenient=True)
    policy: Mapping[str, Any] = record.policy
    waivers = tuple(Waiver(w["rule"], w["justification"]) for w in policy.get("waivers", []))
    dirs = None
    if project_dir is not None:
        project, _ = load_project(project_dir)
        waivers = project.policies.waivers
        dirs = policy_directories(project_dir, project.policies)
        policy = {"fail_on": project.policies.fail_on}
    epoch = record.source_date_epoch or 0
    return CheckInputs(
        evaluated_at=datetime.fromtimestamp(epoch, timezone.utc),
        waivers=waivers,
        fail_on=fail_on or policy.get("fail_on") or "high",
        policy_dirs=dirs,
    )
