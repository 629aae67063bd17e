"""The SBOM of a bundle, as values: package databases parsed, components assembled, CycloneDX 1.6 out.

Pure: the adapter (``airgap.adapters.sbom``) reads wheels, hashes files and streams image layers;
this module turns what it found into one deterministic CycloneDX document. The document is built
with ``cyclonedx-python-lib`` (the reference model and serializer, so the output is valid by
construction and tests validate it against the schema the library ships).

Determinism: every component has an explicit ``bom-ref`` (the library would otherwise invent
random ones), the timestamp is an argument, and the serial number is a UUID derived from the
document's own content.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.parser import HeaderParser

from cyclonedx.contrib.license.factories import LicenseFactory
from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.license import License, LicenseAcknowledgement
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL
from packaging.utils import canonicalize_name

from airgap.errors import InvalidInputError

# uuid5(NAMESPACE_URL, "https://github.com/airgap/airgap#sbom"): serial numbers are uuid5 of the
# document's SHA-256 under this namespace.
SBOM_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/airgap/airgap#sbom")


@dataclass(frozen=True)
class Distro:
    """From the image's own ``/etc/os-release``."""

    id: str
    version_id: str
    pretty_name: str = ""

    @property
    def qualifier(self) -> str:
        """The purl ``distro`` qualifier: ``debian-12``, ``alpine-3.19.1``."""
        return f"{self.id}-{self.version_id}" if self.version_id else self.id


@dataclass(frozen=True)
class OsPackage:
    """One installed OS package as the image's own package database records it."""

    ecosystem: str  # deb, apk or rpm
    name: str
    version: str
    arch: str
    source: str = ""  # the source package (deb Source, apk origin)
    license: str = ""  # apk and rpm record one; dpkg does not


@dataclass(frozen=True)
class WheelInfo:
    """One wheel of a wheelhouse: its pin, its file, and the license its own METADATA declares."""

    wheelhouse: str  # "image" or "host"
    name: str
    version: str
    filename: str
    sha256: str
    license_expression: str = ""
    license: str = ""
    license_classifiers: tuple[str, ...] = ()
    summary: str = ""


@dataclass(frozen=True)
class ImageInfo:
    """The model image and the base image it was built from."""

    ref: str  # the tag the bundle built, e.g. airgap/tabular-classifier:1.0.0
    image_id: str  # sha256:<config digest>
    manifest_digest: str | None = None  # sha256:<manifest digest> when the bundle has an OCI layout
    architecture: str = ""
    os: str = "linux"
    user: str = ""
    base_requested: str = ""
    base_resolved: str = ""  # repo@sha256:...
    os_packages_source: str = ""  # how the OS packages were read (or why they could not be)


@dataclass(frozen=True)
class ModelInfo:
    """The model file as the bundle carries it, so the SBOM names the exact bytes that serve."""

    path: str  # relative to the bundle, e.g. model/classifier.onnx
    sha256: str


@dataclass(frozen=True)
class SbomInputs:
    """Everything the SBOM is built from, gathered by the adapter; the timestamp is passed in so the same
    inputs give the same document."""

    name: str
    version: str
    timestamp: datetime
    tool_version: str
    wheels: tuple[WheelInfo, ...] = ()
    os_packages: tuple[OsPackage, ...] = ()
    distro: Distro | None = None
    image: ImageInfo | None = None
    model: ModelInfo | None = None
    extra_properties: Mapping[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------- package databases


def _paragraphs(text: str) -> Iterable[dict[str, str]]:
    """RFC 822-style stanzas (dpkg's status file): ``Key: value`` with indented continuations."""
    current: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if not line.strip():
            if current:
                yield current
            current, key = {}, None
            continue
        if line[0] in " \t":
            if key is not None:
                current[key] += "\n" + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = name.strip()
        current[key] = value.strip()
    if current:
        yield current


def parse_dpkg_status(text: str, require_status: bool = True) -> list[OsPackage]:
    """Installed packages from ``var/lib/dpkg/status`` (or a distroless ``status.d/`` file).

    Only stanzas whose Status says ``installed`` count: removed packages whose configuration files
    remain (``deinstall ok config-files``) are not in the image in any meaningful sense.
    ``status.d`` files have no Status field; pass ``require_status=False`` for them.
    """
    out = []
    for p in _paragraphs(text):
        name, version = p.get("Package", ""), p.get("Version", "")
        if not name or not version:
            continue
        status = p.get("Status", "")
        if require_status or status:
            words = status.split()
            if len(words) != 3 or words[2] != "installed":
                continue
        source = p.get("Source", "").split(" ", 1)[0]
        out.append(OsPackage("deb", name, version, p.get("Architecture", ""), source))
    return out


def parse_apk_installed(text: str) -> list[OsPackage]:
    """Installed packages from Alpine's ``lib/apk/db/installed`` (``P:``, ``V:``, ``A:``, ``L:``, ``o:``)."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if len(line) > 2 and line[1] == ":" and line[0] not in fields:
                fields[line[0]] = line[2:].strip()
        if fields.get("P") and fields.get("V"):
            out.append(
                OsPackage(
                    "apk",
                    fields["P"],
                    fields["V"],
                    fields.get("A", ""),
                    fields.get("o", ""),
                    fields.get("L", ""),
                )
            )
    return out


def parse_rpm_query(text: str) -> list[OsPackage]:
    """Lines of ``rpm -qa --qf '%{NAME}\\t%{EPOCH}\\t%{VERSION}-%{RELEASE}\\t%{ARCH}\\t%{LICENSE}\\n'``."""
    out = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) != 5 or not parts[0] or parts[0] == "gpg-pubkey":
            continue
        name, epoch, version, arch, lic = parts
        if epoch and epoch != "(none)":
            version = f"{epoch}:{version}"
        out.append(OsPackage("rpm", name, version, "" if arch == "(none)" else arch, "", lic))
    return out


def parse_os_release(text: str) -> Distro | None:
    """The distribution an image says it is, from its ``/etc/os-release``; None when there is no ``ID``, so
    packages are not attributed to a guessed distro."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            values[key.strip()] = value.strip().strip("\"'")
    if not values.get("ID"):
        return None
    return Distro(values["ID"].lower(), values.get("VERSION_ID", ""), values.get("PRETTY_NAME", ""))


def wheel_license_fields(metadata: str) -> tuple[str, str, tuple[str, ...], str]:
    """``(License-Expression, License, license classifiers, Summary)`` from a wheel's METADATA."""
    msg = HeaderParser().parsestr(metadata)
    expression = (msg.get("License-Expression") or "").strip()
    lic = (msg.get("License") or "").strip()
    classifiers = tuple(
        c.split("::")[-1].strip()
        for c in msg.get_all("Classifier") or []
        if c.startswith("License ::") and c.split("::")[-1].strip() not in ("OSI Approved", "")
    )
    return expression, lic, classifiers, " ".join((msg.get("Summary") or "").split())


# ----------------------------------------------------------------------------- the document

_LICENSES = LicenseFactory()


def _wheel_licenses(w: WheelInfo) -> list[License]:
    """License-Expression (PEP 639) first, then a short License field, then the classifiers.

    A License field that holds a whole license text is not a name; the classifiers say it better.
    """
    ack = LicenseAcknowledgement.DECLARED
    if w.license_expression:
        return [_LICENSES.make_from_string(w.license_expression, license_acknowledgement=ack)]
    if w.license and "\n" not in w.license and len(w.license) <= 100:
        return [_LICENSES.make_from_string(w.license, license_acknowledgement=ack)]
    if w.license_classifiers:
        return [_LICENSES.make_with_name(c, acknowledgement=ack) for c in sorted(set(w.license_classifiers))]
    return []


def _props(**values: str) -> list[Property]:
    return [Property(name=f"airgap:{k.replace('_', '-')}", value=v) for k, v in sorted(values.items()) if v]


def _sha256(hexdigest: str) -> list[HashType]:
    return [HashType(alg=HashAlgorithm.SHA_256, content=hexdigest)]


def os_package_purl(pkg: OsPackage, distro: Distro | None) -> PackageURL:
    """The package URL of an OS package; the namespace and ``distro`` qualifier come from the image's
    os-release when known, and an rpm epoch moves into its own qualifier as the purl spec asks."""
    namespace = distro.id if distro else {"deb": "debian", "apk": "alpine", "rpm": "redhat"}[pkg.ecosystem]
    qualifiers = {}
    if pkg.arch:
        qualifiers["arch"] = pkg.arch
    if distro:
        qualifiers["distro"] = distro.qualifier
    version = pkg.version
    if pkg.ecosystem == "rpm" and ":" in version:
        epoch, version = version.split(":", 1)
        qualifiers["epoch"] = epoch
    return PackageURL(pkg.ecosystem, namespace, pkg.name, version, qualifiers or None)


def _oci_purl(repository: str, digest: str) -> PackageURL:
    name = repository.rsplit("/", 1)[-1].lower()
    return PackageURL("oci", None, name, digest, {"repository_url": repository})


def _document(bom: Bom) -> str:
    return JsonV1Dot6(bom).output_as_string(indent=2)


def build_sbom(inputs: SbomInputs) -> bytes:
    """The CycloneDX 1.6 JSON document for a bundle, byte-identical for identical inputs (fixed refs, the
    timestamp passed in, a content-derived serial number), so a rebuilt bundle can be compared byte for
    byte. A naive timestamp is refused rather than guessed to be UTC."""
    if inputs.timestamp.tzinfo is None:
        raise InvalidInputError("the SBOM timestamp must be timezone-aware (UTC)")
    bundle = Component(
        type=ComponentType.APPLICATION,
        name=inputs.name,
        version=inputs.version,
        bom_ref=f"bundle:{inputs.name}@{inputs.version}",
        description="airgap bundle: model image, wheelhouses and model for an air-gapped target",
    )
    tool = Component(
        type=ComponentType.APPLICATION,
        name="airgap",
        version=inputs.tool_version,
        bom_ref=f"tool:airgap@{inputs.tool_version}",
    )
    bom = Bom(
        serial_number=uuid.UUID(int=0),
        metadata=BomMetaData(
            component=bundle,
            timestamp=inputs.timestamp.astimezone(timezone.utc).replace(microsecond=0),
            properties=_props(**dict(inputs.extra_properties)),
        ),
    )
    bom.metadata.tools.components.add(tool)

    bundle_deps: list[Component] = []
    image_deps: list[Component] = []
    image_component: Component | None = None
    if inputs.image is not None:
        img = inputs.image
        repo = img.ref.rsplit(":", 1)[0] if ":" in img.ref.rsplit("/", 1)[-1] else img.ref
        image_component = Component(
            type=ComponentType.CONTAINER,
            name=repo,
            version=inputs.version,
            bom_ref=f"image:{img.image_id}",
            purl=_oci_purl(repo, img.manifest_digest) if img.manifest_digest else None,
            hashes=_sha256(img.manifest_digest.split(":", 1)[1]) if img.manifest_digest else None,
            description="the model image (docker save archive / OCI layout in image/)",
            properties=_props(
                image_id=img.image_id,
                image_tag=img.ref,
                image_architecture=img.architecture,
                image_os=img.os,
                image_user=img.user,
                os_packages=img.os_packages_source,
            ),
        )
        bom.components.add(image_component)
        bundle_deps.append(image_component)
        m = re.match(r"^(?P<repo>[^@]+)@(?P<digest>sha256:[0-9a-f]{64})$", img.base_resolved or "")
        if m:
            base = Component(
                type=ComponentType.CONTAINER,
                name=m.group("repo"),
                version=m.group("digest"),
                bom_ref=f"base-image:{m.group('digest')}",
                purl=_oci_purl(m.group("repo"), m.group("digest")),
                hashes=_sha256(m.group("digest").split(":", 1)[1]),
                description="the base image the model image was built from, by digest",
                properties=_props(requested=img.base_requested),
            )
            bom.components.add(base)
            image_deps.append(base)
    if inputs.distro is not None:
        os_component = Component(
            type=ComponentType.OPERATING_SYSTEM,
            name=inputs.distro.id,
            version=inputs.distro.version_id or None,
            description=inputs.distro.pretty_name or None,
            bom_ref=f"os:{inputs.distro.qualifier}",
        )
        bom.components.add(os_component)
        image_deps.append(os_component)
    seen_refs: set[str] = set()
    for pkg in sorted(inputs.os_packages, key=lambda p: (p.ecosystem, p.name, p.arch, p.version)):
        purl = os_package_purl(pkg, inputs.distro)
        ref = purl.to_string()
        if ref in seen_refs:
            continue
        seen_refs.add(ref)
        licenses = [_LICENSES.make_from_string(pkg.license)] if pkg.license else []
        component = Component(
            type=ComponentType.LIBRARY,
            name=pkg.name,
            version=pkg.version,
            purl=purl,
            bom_ref=ref,
            licenses=licenses,
            properties=_props(package_source=pkg.source, package_ecosystem=pkg.ecosystem),
        )
        bom.components.add(component)
        image_deps.append(component)
    for w in sorted(inputs.wheels, key=lambda w: (w.wheelhouse, canonicalize_name(w.name), w.filename)):
        component = Component(
            type=ComponentType.LIBRARY,
            name=w.name,
            version=w.version,
            purl=PackageURL("pypi", None, canonicalize_name(w.name), w.version),
            bom_ref=f"wheel:{w.wheelhouse}:{w.filename}",
            hashes=_sha256(w.sha256),
            licenses=_wheel_licenses(w),
            description=w.summary or None,
            properties=_props(wheelhouse=w.wheelhouse, file=w.filename),
        )
        bom.components.add(component)
        (image_deps if w.wheelhouse == "image" else bundle_deps).append(component)
    if inputs.model is not None:
        model = Component(
            type=ComponentType.MACHINE_LEARNING_MODEL,
            name=inputs.model.path.rsplit("/", 1)[-1],
            version=inputs.version,
            bom_ref=f"model:{inputs.model.path}",
            hashes=_sha256(inputs.model.sha256),
            properties=_props(file=inputs.model.path),
        )
        bom.components.add(model)
        bundle_deps.append(model)
        image_deps.append(model)
    if image_component is not None:
        bom.register_dependency(image_component, image_deps)
    bom.register_dependency(bundle, bundle_deps)

    # The serial number names this exact content: uuid5 of the document rendered with a zero serial.
    draft = _document(bom)
    bom.serial_number = uuid.uuid5(SBOM_NAMESPACE, hashlib.sha256(draft.encode()).hexdigest())
    return (_document(bom) + "\n").encode()


def summarize(document: Mapping[str, object]) -> dict[str, object]:
    """``{"present", "spec_version", "components", "format"}``: the SBOM facts the policy engine sees."""
    components = document.get("components")
    return {
        "present": True,
        "spec_version": str(document.get("specVersion", "")),
        "components": len(components) if isinstance(components, list) else 0,
        "format": str(document.get("bomFormat", "")),
    }
