"""The signed build record (``build.json``) as one typed value.

``bundle`` writes the record as a mapping and signs its bytes; every reader after that (install,
the targets, candidate, accept, rebuild, sign, provenance, check, the SBOM, the CLI) takes a
`BuildRecord`: parsed once, here, from the signed bytes, with every field the far side acts on
checked for its type. `BuildRecord.from_json` returns a valid record or raises InvalidInputError
naming the field. The parsed mapping is kept (``raw``) for what is written or signed again, so the
bytes of ``build.json`` never depend on this model: a writer that changes a record (rebuild) edits
a copy of ``raw`` and parses the result again. The checklist and the SBOM, which also read an
unsigned staging directory's record, parse it leniently (``from_mapping(..., lenient=True)``): a
field of the wrong type reads as absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from airgap.core.bundle_format import build_record_error, check_build_record

__all__ = [
    "BaseImageRecord",
    "BuildRecord",
    "ImageRecord",
    "ManifestsRecord",
    "ModelRecord",
    "OriginRecord",
    "ProjectFileRecord",
    "ServingRecord",
    "TargetProfileRecord",
    "WheelhouseRecord",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class _Fields:
    """Reads one field of a given type; a wrong type is refused naming the field or, leniently,
    read as absent (its default)."""

    def __init__(self, lenient: bool) -> None:
        self.lenient = lenient

    def _refuse(self, name: str, why: str) -> None:
        if not self.lenient:
            raise build_record_error(name, why)

    def mapping(self, data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
        value = data.get(key)
        if value is None:
            return _EMPTY
        if not isinstance(value, dict):
            self._refuse(f"{where}{key}", f"must be an object, not {type(value).__name__}")
            return _EMPTY
        return value

    def text(self, data: Mapping[str, Any], key: str, where: str = "") -> str | None:
        value = data.get(key)
        if value is None or isinstance(value, str):
            return value
        self._refuse(f"{where}{key}", f"must be a string, not {type(value).__name__}")
        return None

    def integer(self, data: Mapping[str, Any], key: str, where: str = "") -> int | None:
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        self._refuse(f"{where}{key}", f"must be an integer: {value!r:.40}")
        return None

    def array(self, data: Mapping[str, Any], key: str, where: str) -> list[Any]:
        value = data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self._refuse(f"{where}{key}", f"must be a list, not {type(value).__name__}")
            return []
        return value

    def strings(self, data: Mapping[str, Any], key: str, where: str) -> Mapping[str, str]:
        value = self.mapping(data, key, where)
        for k, v in value.items():
            if not isinstance(v, str):
                self._refuse(f"{where}{key}.{k}", f"must be a string, not {type(v).__name__}")
                return _EMPTY
        return MappingProxyType(dict(value))

    def string_array(self, data: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
        value = self.array(data, key, where)
        for i, v in enumerate(value):
            if not isinstance(v, str):
                self._refuse(f"{where}{key}[{i}]", f"must be a string, not {type(v).__name__}")
                return ()
        return tuple(value)

    def seconds(self, data: Mapping[str, Any], key: str, where: str) -> Mapping[str, float]:
        value = self.mapping(data, key, where)
        for k, v in value.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                self._refuse(f"{where}{key}.{k}", f"must be a number, not {type(v).__name__}")
                return _EMPTY
        return MappingProxyType(dict(value))


@dataclass(frozen=True)
class ServingRecord:
    """How the model server listens: its port, and the largest batch it takes."""

    port: int | None = None
    max_batch: int | None = None


@dataclass(frozen=True)
class ModelRecord:
    """The ONNX model: its path in the bundle (a safe relative path), hash, onnxruntime version."""

    file: str | None = None
    sha256: str | None = None
    onnxruntime: str | None = None


@dataclass(frozen=True)
class ImageRecord:
    """The model image as it was built: tag, ids, user, labels and its Dockerfile."""

    tag: str | None = None
    id: str | None = None
    digest: str | None = None
    config_digest: str | None = None
    user: str | None = None
    dockerfile: str | None = None
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    layers: tuple[Any, ...] = ()  # the OCI layers as recorded ({"digest", "size"}), for the manifest
    present: bool = False  # build.json has an image section (a non-empty object)
    # The model image (core/model_layer.py): the server image above plus one layer made of the
    # bundle's model/ files. None: a bundle whose image holds the model itself (or a prebuilt one).
    model_image: ModelImageRecord | None = None


@dataclass(frozen=True)
class ModelImageRecord:
    """The model image's digests, its model layer's digest and size, and the settings the model
    gives its server (what a container that mounts the model is started with)."""

    manifest_digest: str
    config_digest: str
    layer_digest: str
    layer_size: int
    env: Mapping[str, str]


@dataclass(frozen=True)
class BaseImageRecord:
    """The base image: as the project asked for it, as it was resolved, and its Python."""

    requested: str | None = None
    resolved: str | None = None
    python: str | None = None
    present: bool = False  # build.json has a base_image section (a non-empty object)


@dataclass(frozen=True)
class WheelhouseRecord:
    """One wheelhouse: its lock (path in the bundle) and the lock's hash, its pins, the Python it
    is for (a target wheelhouse), the packages built from sdists; ``downloaded`` is a fact of the
    run, in the writer's in-memory record only (build.json does not carry it)."""

    lock_sha256: str | None = None
    pins: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    python: str | None = None
    lock: str | None = None
    built_from_sdist: tuple[str, ...] = ()
    downloaded: int | None = None
    raw: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True)
class ManifestsRecord:
    """The Kubernetes manifests: the image reference they name, their namespace, their version."""

    image: str | None = None
    namespace: str | None = None
    kubernetes_version: str | None = None


@dataclass(frozen=True)
class ProjectFileRecord:
    """The project file (airgap.yaml) the bundle was built from: its name and hash."""

    name: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class TargetProfileRecord:
    """The site profile the bundle was built for: its hash, the host it describes, its arch."""

    sha256: str | None = None
    hostname: str | None = None
    arch: str | None = None


@dataclass(frozen=True)
class OriginRecord:
    """``rebuilt_from``: the signed bundle an ``airgap rebuild`` started from."""

    name: str | None = None
    version: str | None = None
    manifest_sha256: str | None = None
    publisher_key_id: str | None = None


@dataclass(frozen=True)
class BuildRecord:
    """``build.json``, parsed and checked (the fields the code reads); ``raw`` is the signed mapping."""

    name: str | None
    version: str | None
    source_date_epoch: int | None
    serving: ServingRecord
    resource_limits: Mapping[str, str] | None
    model: ModelRecord
    image: ImageRecord
    base_image: BaseImageRecord
    manifests: ManifestsRecord
    wheelhouses: Mapping[str, WheelhouseRecord]
    policy: Mapping[str, Any]
    raw: Mapping[str, Any]
    project_file: ProjectFileRecord = ProjectFileRecord()
    target_profile: TargetProfileRecord | None = None  # None when absent or empty
    rebuilt_from: OriginRecord | None = None  # None when absent or empty
    phases: Mapping[str, float] = field(default_factory=lambda: _EMPTY)  # in-memory record only

    @classmethod
    def from_json(cls, raw: bytes) -> BuildRecord:
        """The record from its signed bytes, or InvalidInputError naming the field that is wrong."""
        return cls.from_mapping(check_build_record(raw))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, lenient: bool = False) -> BuildRecord:
        """The record from a mapping already read as JSON (the one ``bundle`` is writing).

        ``lenient``: for an unsigned staging directory's record, which the checklist and the SBOM
        read as they find it: a field of the wrong type reads as absent instead of being refused
        (a document that is not an object is refused all the same)."""
        if not isinstance(data, Mapping):
            raise build_record_error("the document", f"must be an object, not {type(data).__name__}")
        f = _Fields(lenient)
        serving = f.mapping(data, "serving", "")
        resources = f.mapping(data, "resources", "")
        model = f.mapping(data, "model", "")
        image = f.mapping(data, "image", "")
        base = f.mapping(data, "base_image", "")
        manifests = f.mapping(data, "manifests", "")
        wheelhouses = {}
        for kind, wh in f.mapping(data, "wheelhouses", "").items():
            if not isinstance(wh, dict):
                if lenient:
                    continue
                raise build_record_error(f"wheelhouses.{kind}", f"must be an object, not {type(wh).__name__}")
            where = f"wheelhouses.{kind}."
            wheelhouses[kind] = WheelhouseRecord(
                lock_sha256=f.text(wh, "lock_sha256", where),
                pins=f.strings(wh, "pins", where),
                python=f.text(wh, "python", where),
                lock=f.text(wh, "lock", where),
                built_from_sdist=f.string_array(wh, "built_from_sdist", where),
                downloaded=f.integer(wh, "downloaded", where),
                raw=MappingProxyType(wh),
            )
        limits = f.strings(resources, "limits", "resources.") if resources.get("limits") else None
        project_file = f.mapping(data, "project_file", "")
        profile = f.mapping(data, "target_profile", "")
        origin = f.mapping(data, "rebuilt_from", "")
        return cls(
            name=f.text(data, "name"),
            version=f.text(data, "version"),
            source_date_epoch=f.integer(data, "source_date_epoch"),
            serving=ServingRecord(
                port=f.integer(serving, "port", "serving."),
                max_batch=f.integer(serving, "max_batch", "serving."),
            ),
            resource_limits=limits,
            model=ModelRecord(
                file=f.text(model, "file", "model."),
                sha256=f.text(model, "sha256", "model."),
                onnxruntime=f.text(model, "onnxruntime", "model."),
            ),
            image=ImageRecord(
                tag=f.text(image, "tag", "image."),
                id=f.text(image, "id", "image."),
                digest=f.text(image, "digest", "image."),
                config_digest=f.text(image, "config_digest", "image."),
                user=f.text(image, "user", "image."),
                dockerfile=f.text(image, "dockerfile", "image."),
                labels=f.strings(image, "labels", "image."),
                layers=tuple(f.array(image, "layers", "image.")),
                present=bool(image),
                model_image=_model_image(f, image),
            ),
            base_image=BaseImageRecord(
                requested=f.text(base, "requested", "base_image."),
                resolved=f.text(base, "resolved", "base_image."),
                python=f.text(base, "python", "base_image."),
                present=bool(base),
            ),
            manifests=ManifestsRecord(
                image=f.text(manifests, "image", "manifests."),
                namespace=f.text(manifests, "namespace", "manifests."),
                kubernetes_version=f.text(manifests, "kubernetes_version", "manifests."),
            ),
            wheelhouses=MappingProxyType(wheelhouses),
            policy=MappingProxyType(dict(f.mapping(data, "policy", ""))),
            raw=MappingProxyType(dict(data)),
            project_file=ProjectFileRecord(
                name=f.text(project_file, "name", "project_file."),
                sha256=f.text(project_file, "sha256", "project_file."),
            ),
            target_profile=(
                TargetProfileRecord(
                    sha256=f.text(profile, "sha256", "target_profile."),
                    hostname=f.text(profile, "hostname", "target_profile."),
                    arch=f.text(profile, "arch", "target_profile."),
                )
                if profile
                else None
            ),
            rebuilt_from=(
                OriginRecord(
                    name=f.text(origin, "name", "rebuilt_from."),
                    version=f.text(origin, "version", "rebuilt_from."),
                    manifest_sha256=f.text(origin, "manifest_sha256", "rebuilt_from."),
                    publisher_key_id=f.text(origin, "publisher_key_id", "rebuilt_from."),
                )
                if origin
                else None
            ),
            phases=f.seconds(data, "phases", ""),
        )

    @property
    def port(self) -> int:
        """The port the model server listens on (8080 when the record names none)."""
        return self.serving.port or 8080


def _model_image(f: _Fields, image: Mapping[str, Any]) -> ModelImageRecord | None:
    section = f.mapping(image, "model_image", "image.")
    if not section:
        return None
    layer = f.mapping(section, "layer", "image.model_image.")
    where = "image.model_image."
    manifest, config = f.text(section, "manifest_digest", where), f.text(section, "config_digest", where)
    digest, size = f.text(layer, "digest", where + "layer."), f.integer(layer, "size", where + "layer.")
    if manifest is None or config is None or digest is None or size is None:
        if f.lenient:
            return None
        raise build_record_error("image.model_image", "needs manifest_digest, config_digest and layer")
    return ModelImageRecord(manifest, config, digest, size, f.strings(section, "env", where))
