"""The SBOM: OS packages read from the image's own package database inside the layers (last layer
wins, whiteouts honoured, hostile member names never used), wheels with purl, hash and license
from their own METADATA, the base image by digest and the model by hash — CycloneDX 1.6, valid
against the schema, the same bytes every time.

The first half uses archives built here, each carrying one trick; the second half bundles the
example with the real engine and checks the SBOM against `dpkg-query` run inside the image.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from airgap.adapters.sbom import (
    build_staging_sbom,
    distro_of,
    normalize_member,
    os_packages,
    read_image_archive,
    wheelhouse_components,
    write_staging_sbom,
)
from airgap.core.sbom import parse_dpkg_status
from airgap.core.wheelhouse import parse_lock
from airgap.errors import IntegrityError, InvalidInputError
from airgap.services.build.check import DirectoryReader, check_bundle
from tests.conftest import ROOT, bundle

WHEN = datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)
EPOCH = "1700000000"


def status_stanza(name: str, version: str, status: str = "install ok installed", arch: str = "amd64") -> str:
    return (
        f"Package: {name}\nStatus: {status}\nPriority: optional\nArchitecture: {arch}\n"
        f"Version: {version}\nDescription: {name}\n a package\n\n"
    )


def layer(*entries: tuple[str, str, bytes | str]) -> bytes:
    """A layer tar: ("file", name, bytes) | ("symlink", name, target) | ("dir", name, "")."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for kind, name, data in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                payload = data if isinstance(data, bytes) else data.encode()
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = str(data)
                tf.addfile(info)
            else:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
    return buf.getvalue()


def add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


CONFIG = {
    "architecture": "amd64",
    "os": "linux",
    "config": {"User": "10001:10001", "ExposedPorts": {"8080/tcp": {}}, "Env": ["PATH=/usr/bin"]},
    "rootfs": {"type": "layers", "diff_ids": []},
}


def docker_archive(
    layers: list[bytes],
    config: dict[str, Any] | None = None,
    *,
    tamper: bool = False,
    layer_names: list[str] | None = None,
) -> bytes:
    """A `docker save` archive (legacy layout: <id>/layer.tar, <config>.json, manifest.json last)."""
    cfg = json.dumps(config or CONFIG).encode()
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    if tamper:
        cfg = cfg.replace(b"10001:10001", b"0:0")
    names = layer_names or [f"{hashlib.sha256(data).hexdigest()}/layer.tar" for data in layers]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in zip(names, layers):
            add(tf, name, data)
        add(tf, cfg_name, cfg)
        manifest = [{"Config": cfg_name, "RepoTags": ["airgap/test:1.0.0"], "Layers": names}]
        add(tf, "manifest.json", json.dumps(manifest).encode())
    return buf.getvalue()


def oci_archive(layers: list[bytes]) -> bytes:
    """A tarred OCI layout with gzip layers (what `docker save` writes since Docker 25)."""
    buf = io.BytesIO()
    blobs: dict[str, bytes] = {}

    def blob(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return f"sha256:{digest}"

    layer_descs = []
    for data in layers:
        gz = gzip.compress(data, mtime=0)
        layer_descs.append(
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob(gz), "size": len(gz)}
        )
    cfg = json.dumps(CONFIG).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": blob(cfg),
                "size": len(cfg),
            },
            "layers": layer_descs,
        }
    ).encode()
    index = {"schemaVersion": 2, "manifests": [{"digest": blob(manifest), "size": len(manifest)}]}
    with tarfile.open(fileobj=buf, mode="w") as tf:
        add(tf, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        for digest, data in blobs.items():
            add(tf, f"blobs/sha256/{digest}", data)
        add(tf, "index.json", json.dumps(index).encode())
    return buf.getvalue()


class Stream(io.RawIOBase):
    """A pipe-like reader: no seek, no tell — how a bundle reader may hand over the archive."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, b: Any) -> int:
        chunk = self._inner.read(len(b))
        b[: len(chunk)] = chunk
        return len(chunk)


DEBIAN = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
BASE = layer(
    ("file", "usr/lib/os-release", DEBIAN),
    ("symlink", "etc/os-release", "../usr/lib/os-release"),
    (
        "file",
        "var/lib/dpkg/status",
        status_stanza("libc6", "2.36-9+deb12u4") + status_stanza("python3.11", "3.11.2-6"),
    ),
)


def packages(archive: bytes | IO[bytes]) -> dict[str, str]:
    contents = read_image_archive(io.BytesIO(archive) if isinstance(archive, bytes) else archive)
    return {p.name: p.version for p in os_packages(contents)[0]}


def test_packages_come_from_the_last_layer_that_has_the_database() -> None:
    upgrade = layer(
        (
            "file",
            "var/lib/dpkg/status",
            status_stanza("libc6", "2.36-9+deb12u9") + status_stanza("tzdata", "2024a"),
        )
    )
    assert packages(docker_archive([BASE])) == {"libc6": "2.36-9+deb12u4", "python3.11": "3.11.2-6"}
    assert packages(docker_archive([BASE, upgrade])) == {"libc6": "2.36-9+deb12u9", "tzdata": "2024a"}


def test_a_whiteout_deletes_the_database_of_lower_layers() -> None:
    removed = layer(("file", "var/lib/dpkg/.wh.status", b""))
    contents = read_image_archive(io.BytesIO(docker_archive([BASE, removed])))
    assert os_packages(contents) == ([], "none: the image has no dpkg, apk or rpm package database")


def test_a_whiteout_of_a_parent_directory_deletes_it_too() -> None:
    removed = layer(("file", "var/lib/.wh.dpkg", b""))
    assert packages(docker_archive([BASE, removed])) == {}


def test_an_opaque_directory_hides_lower_layers_but_not_its_own_files() -> None:
    opaque = layer(
        ("file", "var/lib/dpkg/.wh..wh..opq", b""),
        ("file", "var/lib/dpkg/status", status_stanza("busybox", "1.36")),
    )
    assert packages(docker_archive([BASE, opaque])) == {"busybox": "1.36"}
    assert packages(docker_archive([BASE, layer(("file", "var/lib/dpkg/.wh..wh..opq", b""))])) == {}


def test_hostile_member_names_are_never_used_and_nothing_is_extracted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evil = layer(
        ("file", "../../../../tmp/airgap-pwned", b"x"),
        ("file", "var/lib/dpkg/../../../../etc/passwd", b"root::0:0"),
        ("file", "var/lib/../lib/dpkg/status", status_stanza("trojan", "6.6.6")),
        ("file", "/abs/var/lib/dpkg/status", status_stanza("trojan", "6.6.6")),
    )
    monkeypatch.chdir(tmp_path)
    assert packages(docker_archive([BASE, evil])) == {"libc6": "2.36-9+deb12u4", "python3.11": "3.11.2-6"}
    assert list(tmp_path.iterdir()) == []
    assert not Path("/tmp/airgap-pwned").exists()
    assert normalize_member("./var//lib/dpkg/status") == "var/lib/dpkg/status"
    for name in ("../x", "a/../../b", "a\x00b", "", "/"):
        assert normalize_member(name) is None


def test_a_manifest_that_points_outside_the_archive_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="missing"):
        read_image_archive(io.BytesIO(docker_archive([BASE], layer_names=["../../etc/passwd"])))


def test_an_image_config_that_does_not_match_its_digest_is_refused() -> None:
    with pytest.raises(IntegrityError, match="SHA-256"):
        read_image_archive(io.BytesIO(docker_archive([BASE], tamper=True)))


def test_os_release_is_found_through_its_symlink() -> None:
    distro = distro_of(read_image_archive(io.BytesIO(docker_archive([BASE]))))
    assert distro is not None and (distro.id, distro.version_id, distro.qualifier) == (
        "debian",
        "12",
        "debian-12",
    )


def test_a_streamed_archive_reads_the_same_as_a_file() -> None:
    archive = docker_archive(
        [BASE, layer(("file", "var/lib/dpkg/status", status_stanza("zlib1g", "1:1.2.13")))]
    )
    assert packages(Stream(archive)) == packages(archive) == {"zlib1g": "1:1.2.13"}  # type: ignore[arg-type]


def test_an_oci_layout_with_gzip_layers_reads_the_same() -> None:
    assert packages(oci_archive([BASE])) == packages(docker_archive([BASE]))
    contents = read_image_archive(io.BytesIO(oci_archive([BASE])))
    assert contents.manifest_digest is not None and contents.manifest_digest.startswith("sha256:")


def test_only_installed_packages_are_listed() -> None:
    text = status_stanza("libc6", "2.36") + status_stanza("old-tool", "1.0", "deinstall ok config-files")
    assert [p.name for p in parse_dpkg_status(text)] == ["libc6"]


def test_distroless_status_d_is_read() -> None:
    distroless = layer(
        (
            "file",
            "var/lib/dpkg/status.d/libc6",
            status_stanza("libc6", "2.36-9").replace("Status: install ok installed\n", ""),
        ),
        (
            "file",
            "var/lib/dpkg/status.d/tzdata",
            status_stanza("tzdata", "2024a").replace("Status: install ok installed\n", ""),
        ),
    )
    assert packages(docker_archive([distroless])) == {"libc6": "2.36-9", "tzdata": "2024a"}


def test_alpine_packages_are_read_from_the_apk_database() -> None:
    apk = layer(
        ("file", "etc/os-release", 'ID=alpine\nVERSION_ID=3.19.1\nPRETTY_NAME="Alpine Linux v3.19"\n'),
        (
            "file",
            "lib/apk/db/installed",
            "C:Q1abc=\nP:musl\nV:1.2.4_git20230717-r4\nA:x86_64\nL:MIT\no:musl\n\n"
            "P:busybox\nV:1.36.1-r15\nA:x86_64\nL:GPL-2.0-only\n\n",
        ),
    )
    contents = read_image_archive(io.BytesIO(docker_archive([apk])))
    found, source = os_packages(contents)
    assert source.startswith("apk:")
    assert {(p.name, p.version, p.license) for p in found} == {
        ("musl", "1.2.4_git20230717-r4", "MIT"),
        ("busybox", "1.36.1-r15", "GPL-2.0-only"),
    }


def test_an_rpm_image_is_recognised() -> None:
    rpm = layer(("file", "var/lib/rpm/rpmdb.sqlite", b"SQLite format 3\x00"))
    assert os_packages(read_image_archive(io.BytesIO(docker_archive([rpm])))) == ([], "rpm")


# -------------------------------------------------------------------- a synthetic staging directory


def wheel(directory: Path, name: str, version: str, headers: str) -> Path:
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(
            f"{name}-{version}.dist-info/METADATA",
            f"Metadata-Version: 2.4\nName: {name}\nVersion: {version}\n{headers}\nlong description\n",
        )
        zf.writestr(f"{name}/__init__.py", "")
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def synthetic_staging(tmp_path: Path) -> Path:
    root = tmp_path / "demo-1.0.0"
    (root / "wheels").mkdir(parents=True)
    (root / "image").mkdir()
    (root / "model").mkdir()
    wheels = [
        wheel(root / "wheels", "alpha", "1.0", "License-Expression: Apache-2.0 OR BSD-2-Clause"),
        wheel(
            root / "wheels",
            "beta_pkg",
            "2.0",
            "License: MIT License\nClassifier: License :: OSI Approved :: MIT License",
        ),
        wheel(root / "wheels", "gamma", "3.0", "Classifier: License :: OSI Approved :: BSD License"),
    ]
    pins = [(w.name.split("-")[0].replace("_", "-"), w.name.split("-")[1], sha256(w)) for w in wheels]
    lock = "".join(f"{name}=={version} \\\n    --hash=sha256:{digest}\n" for name, version, digest in pins)
    (root / "requirements.lock").write_text(lock)
    (root / "model" / "m.onnx").write_bytes(b"not really onnx, but hashed all the same")
    (root / "image" / "model-image.tar").write_bytes(docker_archive([BASE]))
    record = {
        "name": "demo",
        "version": "1.0.0",
        "base_image": {
            "requested": "reg.local/python:3.11",
            "resolved": "reg.local/python@sha256:" + "c" * 64,
        },
        "image": {"tag": "airgap/demo:1.0.0", "user": "10001:10001"},
        "model": {"file": "model/m.onnx", "sha256": sha256(root / "model" / "m.onnx")},
    }
    (root / "build.json").write_text(json.dumps(record))
    return root


def validate(document: bytes) -> None:
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(document.decode())
    assert error is None, error


def test_synthetic_staging_sbom_is_valid_complete_and_deterministic(synthetic_staging: Path) -> None:
    first = build_staging_sbom(synthetic_staging, timestamp=WHEN)
    assert build_staging_sbom(synthetic_staging, timestamp=WHEN) == first
    validate(first)
    doc = json.loads(first)
    assert doc["specVersion"] == "1.6" and doc["metadata"]["timestamp"] == "2023-11-14T22:13:20+00:00"
    by_purl = {c.get("purl"): c for c in doc["components"]}
    assert by_purl["pkg:pypi/alpha@1.0"]["licenses"] == [
        {"expression": "Apache-2.0 OR BSD-2-Clause", "acknowledgement": "declared"}
    ]
    assert by_purl["pkg:pypi/beta-pkg@2.0"]["licenses"][0]["license"]["name"] == "MIT License"
    assert by_purl["pkg:pypi/gamma@3.0"]["licenses"][0]["license"]["name"] == "BSD License"
    assert "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12" in by_purl
    model = next(c for c in doc["components"] if c["type"] == "machine-learning-model")
    assert model["hashes"] == [{"alg": "SHA-256", "content": sha256(synthetic_staging / "model" / "m.onnx")}]
    base = next(c for c in doc["components"] if c["bom-ref"].startswith("base-image:"))
    assert base["version"] == "sha256:" + "c" * 64
    # the serial number names the content: another timestamp is another document
    other = json.loads(
        build_staging_sbom(synthetic_staging, timestamp=datetime(2024, 1, 1, tzinfo=timezone.utc))
    )
    assert other["serialNumber"] != doc["serialNumber"]


def test_a_wheel_that_does_not_match_its_lock_hash_is_refused(synthetic_staging: Path) -> None:
    target = next((synthetic_staging / "wheels").glob("gamma-*.whl"))
    with zipfile.ZipFile(target, "a") as zf:
        zf.writestr("gamma/backdoor.py", "import os")
    with pytest.raises(IntegrityError, match="gamma"):
        build_staging_sbom(synthetic_staging, timestamp=WHEN)


def test_a_pin_without_its_wheel_is_invalid_input(synthetic_staging: Path) -> None:
    next((synthetic_staging / "wheels").glob("alpha-*.whl")).unlink()
    with pytest.raises(InvalidInputError, match="alpha"):
        wheelhouse_components(synthetic_staging / "requirements.lock", synthetic_staging / "wheels", "image")


def test_the_model_must_be_the_one_the_build_recorded(synthetic_staging: Path) -> None:
    (synthetic_staging / "model" / "m.onnx").write_bytes(b"swapped model")
    with pytest.raises(IntegrityError, match="model/m.onnx"):
        build_staging_sbom(synthetic_staging, timestamp=WHEN)


def test_write_staging_sbom_makes_the_sbom_rule_pass(synthetic_staging: Path) -> None:
    path = write_staging_sbom(synthetic_staging, timestamp=WHEN)
    assert path == synthetic_staging / "sbom.cdx.json"
    outcome = check_bundle(DirectoryReader(synthetic_staging), evaluated_at=WHEN)
    assert outcome.evaluation.result("AG-SC-SBOM").status == "not_a_finding"
    image = outcome.facts["image"]
    assert (image["user"], image["exposed_ports"], image["arch"]) == ("10001:10001", ["8080/tcp"], "x86_64")
    assert outcome.facts["sources"]["image"] == "image/model-image.tar"


# -------------------------------------------------------------------- the real example, real engine


@pytest.fixture(scope="session")
def staging(tmp_path_factory: pytest.TempPathFactory, docker_client: Any, cache: Path) -> Path:
    """`airgap bundle examples/tabular` once, unsigned (no --key: a staging directory and no
    bundle), into a temporary output directory; the session's warm cache."""
    project = tmp_path_factory.mktemp("sbom-project") / "tabular"
    shutil.copytree(ROOT / "examples" / "tabular", project, ignore=shutil.ignore_patterns("build"))
    out = tmp_path_factory.mktemp("sbom-out")
    result = bundle(project, cache, "--output", str(out))
    assert result["bundle"] is None
    return Path(result["staging"])


@pytest.fixture(scope="session")
def real_sbom(staging: Path) -> dict[str, Any]:
    return dict(json.loads(build_staging_sbom(staging, timestamp=WHEN)))


def image_in_engine(staging: Path) -> str:
    """The model image, by id, in the engine (loaded from the staging directory if it is not)."""
    archive = staging / "image" / "model-image.tar"
    with archive.open("rb") as fh:  # a `docker save`: its config digest is the engine's image id
        image_id = read_image_archive(fh, scan_layers=False).config_digest
    if subprocess.run(["docker", "image", "inspect", image_id], capture_output=True).returncode != 0:
        subprocess.run(
            ["docker", "load", "-q", "-i", str(staging / "image" / "model-image.tar")],
            check=True,
            capture_output=True,
        )
    return image_id


@pytest.mark.docker
@pytest.mark.network
def test_real_sbom_validates_against_the_cyclonedx_schema(staging: Path) -> None:
    document = build_staging_sbom(staging, timestamp=WHEN)
    validate(document)
    assert build_staging_sbom(staging, timestamp=WHEN) == document


@pytest.mark.docker
@pytest.mark.network
def test_real_sbom_lists_every_wheel_of_the_lock_with_purl_and_hash(
    staging: Path, real_sbom: dict[str, Any]
) -> None:
    for wheelhouse, lock_path, wheels_dir in (
        ("image", staging / "requirements.lock", staging / "wheels"),
        ("host", staging / "host" / "requirements.lock", staging / "host" / "wheels"),
    ):
        if not lock_path.exists():
            continue
        listed = {
            c["purl"]: c
            for c in real_sbom["components"]
            if c.get("purl", "").startswith("pkg:pypi/")
            and {"name": "airgap:wheelhouse", "value": wheelhouse} in c.get("properties", [])
        }
        pins = parse_lock(lock_path.read_text()).pins
        assert len(listed) == len(pins) > 0
        for pin in pins:
            component = listed[f"pkg:pypi/{pin.name}@{pin.version}"]
            digest = component["hashes"][0]["content"]
            assert digest in pin.hashes
            filename = next(p["value"] for p in component["properties"] if p["name"] == "airgap:file")
            independent = subprocess.run(
                ["sha256sum", str(wheels_dir / filename)], capture_output=True, text=True, check=True
            ).stdout.split()[0]
            assert digest == independent
    onnxruntime = next(
        c for c in real_sbom["components"] if c.get("purl", "").startswith("pkg:pypi/onnxruntime@")
    )
    assert onnxruntime.get("licenses"), "the license comes from the wheel's own METADATA"


@pytest.mark.docker
@pytest.mark.network
def test_real_sbom_lists_the_debian_packages_dpkg_query_sees_in_the_image(
    staging: Path, real_sbom: dict[str, Any]
) -> None:
    image = image_in_engine(staging)
    out = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "dpkg-query",
            image,
            "-W",
            "-f",
            "${Package}\t${Version}\t${Architecture}\n",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    expected = {tuple(line.split("\t")) for line in out.splitlines() if line}
    debs = [c for c in real_sbom["components"] if c.get("purl", "").startswith("pkg:deb/debian/")]
    listed = {(c["name"], c["version"], c["purl"].split("arch=")[1].split("&")[0]) for c in debs}
    assert listed == expected
    versions = {name: version for name, version, _ in expected}
    assert {"python3.11", "libc6"} <= set(versions)
    libc = next(c for c in debs if c["name"] == "libc6")
    assert libc["version"] == versions["libc6"]
    assert libc["purl"].endswith("?arch=amd64&distro=debian-12") or "distro=debian-12" in libc["purl"]
    os_component = next(c for c in real_sbom["components"] if c["type"] == "operating-system")
    assert (os_component["name"], os_component["version"]) == ("debian", "12")


@pytest.mark.docker
@pytest.mark.network
def test_real_sbom_names_the_base_image_by_digest_and_the_model_by_hash(
    staging: Path, real_sbom: dict[str, Any]
) -> None:
    record = json.loads((staging / "build.json").read_text())
    repo, digest = record["base_image"]["resolved"].split("@")
    base = next(c for c in real_sbom["components"] if c["bom-ref"].startswith("base-image:"))
    assert (base["type"], base["name"], base["version"]) == ("container", repo, digest)
    assert base["purl"].startswith(f"pkg:oci/{repo.rsplit('/', 1)[-1]}@sha256:")
    model_file = staging / record["model"]["file"]
    model = next(c for c in real_sbom["components"] if c["type"] == "machine-learning-model")
    independent = subprocess.run(
        ["sha256sum", str(model_file)], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    assert model["hashes"] == [{"alg": "SHA-256", "content": independent}]


@pytest.mark.docker
@pytest.mark.network
def test_check_of_a_real_staging_directory_sees_the_image(staging: Path, tmp_path: Path) -> None:
    copy = tmp_path / staging.name
    shutil.copytree(staging, copy)
    write_staging_sbom(copy, timestamp=WHEN)
    outcome = check_bundle(DirectoryReader(copy), evaluated_at=WHEN)
    image = outcome.facts["image"]
    assert image["user"] == "10001:10001" and image["exposed_ports"] == ["8080/tcp"]
    assert image["arch"] == os.uname().machine
    for rule_id in (
        "AG-SC-SBOM",
        "AG-SC-IMAGE-USER",
        "AG-SC-LOCK-HASHED",
        "AG-SC-BASE-IMAGE-DIGEST",
        "AG-SRG-IMAGE-PORTS",
    ):
        assert outcome.evaluation.result(rule_id).status == "not_a_finding", rule_id
