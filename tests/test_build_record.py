"""The signed build record as one typed value: parsed once, every field it acts on checked."""

from __future__ import annotations

import json

import pytest

from airgap.core.build_record import BuildRecord
from airgap.errors import InvalidInputError

RECORD = {
    "name": "iris",
    "version": "1.2.0",
    "source_date_epoch": 1700000000,
    "serving": {"port": 9000, "max_batch": 16},
    "resources": {"limits": {"cpu": "500m", "memory": "512Mi"}},
    "model": {"file": "model/iris.onnx", "sha256": "0" * 64, "onnxruntime": "1.17.3"},
    "image": {"tag": "airgap/iris:1.2.0", "labels": {"a": "b"}},
    "base_image": {"requested": "python:3.11-slim", "resolved": "py@sha256:" + "1" * 64, "python": "3.11"},
    "manifests": {"image": "registry.local/iris:1.2.0", "namespace": "models"},
    "wheelhouses": {"image": {"lock_sha256": "2" * 64, "pins": {"onnxruntime": "1.17.3"}}},
}


def test_a_record_is_read_once_into_typed_fields_and_keeps_its_mapping() -> None:
    record = BuildRecord.from_json(json.dumps(RECORD).encode())
    assert (record.name, record.version, record.source_date_epoch) == ("iris", "1.2.0", 1700000000)
    assert (record.port, record.serving.max_batch) == (9000, 16)
    assert record.resource_limits == {"cpu": "500m", "memory": "512Mi"}
    assert record.model.file == "model/iris.onnx"
    assert record.manifests.namespace == "models"
    assert record.wheelhouses["image"].pins["onnxruntime"] == "1.17.3"
    assert record.raw == RECORD


def test_a_record_without_serving_serves_on_8080() -> None:
    assert BuildRecord.from_json(b"{}").port == 8080


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"serving": {"port": 0}}, "serving.port"),
        ({"serving": {"max_batch": "many"}}, "serving.max_batch"),
        ({"model": {"file": "../etc/passwd"}}, "model.file"),
        ({"image": "airgap/iris"}, "image"),
        ({"wheelhouses": {"image": {"pins": {"onnxruntime": 1}}}}, "wheelhouses.image.pins.onnxruntime"),
        ({"name": 7}, "name"),
        ({"wheelhouses": {"image": {"lock": 3}}}, "wheelhouses.image.lock"),
        ({"wheelhouses": {"image": {"built_from_sdist": "pkg"}}}, "wheelhouses.image.built_from_sdist"),
        ({"wheelhouses": {"image": {"built_from_sdist": [1]}}}, r"wheelhouses.image.built_from_sdist\[0\]"),
        ({"wheelhouses": {"image": {"downloaded": "3"}}}, "wheelhouses.image.downloaded"),
        ({"project_file": ["airgap.yaml"]}, "project_file"),
        ({"project_file": {"sha256": 1}}, "project_file.sha256"),
        ({"target_profile": {"hostname": 5}}, "target_profile.hostname"),
        ({"rebuilt_from": {"manifest_sha256": 5}}, "rebuilt_from.manifest_sha256"),
        ({"rebuilt_from": "iris"}, "rebuilt_from"),
        ({"phases": {"sbom": "fast"}}, "phases.sbom"),
    ],
)
def test_a_malformed_record_is_refused_naming_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInputError, match=f"build.json is malformed: {field} "):
        BuildRecord.from_json(json.dumps({**RECORD, **change}).encode())


def test_the_build_side_fields_are_read_with_their_defaults() -> None:
    record = BuildRecord.from_json(json.dumps(RECORD).encode())
    wh = record.wheelhouses["image"]
    assert (wh.lock, wh.built_from_sdist, wh.downloaded) == (None, (), None)
    assert record.project_file.name is None and record.project_file.sha256 is None
    assert (record.target_profile, record.rebuilt_from, dict(record.phases)) == (None, None, {})
    empty = BuildRecord.from_json(json.dumps({**RECORD, "target_profile": {}, "rebuilt_from": {}}).encode())
    assert (empty.target_profile, empty.rebuilt_from) == (None, None)
    full = BuildRecord.from_mapping(
        {
            **RECORD,
            "wheelhouses": {
                "image": {"lock": "requirements.lock", "built_from_sdist": ["a"], "downloaded": 2},
            },
            "project_file": {"name": "airgap.yaml", "sha256": "3" * 64},
            "target_profile": {"sha256": "4" * 64, "hostname": "site", "arch": "x86_64"},
            "rebuilt_from": {"name": "iris", "version": "1.1.0", "manifest_sha256": "5" * 64},
            "phases": {"sbom": 1.5, "project": 0},
        }
    )
    wh = full.wheelhouses["image"]
    assert (wh.lock, wh.built_from_sdist, wh.downloaded) == ("requirements.lock", ("a",), 2)
    assert (full.project_file.name, full.project_file.sha256) == ("airgap.yaml", "3" * 64)
    assert full.target_profile is not None and full.target_profile.hostname == "site"
    assert full.rebuilt_from is not None and full.rebuilt_from.publisher_key_id is None
    assert full.rebuilt_from.manifest_sha256 == "5" * 64
    assert dict(full.phases) == {"sbom": 1.5, "project": 0}


def test_a_lenient_read_takes_a_mistyped_field_as_absent_and_still_refuses_a_non_object() -> None:
    mistyped = {
        **RECORD,
        "name": 7,
        "source_date_epoch": "1700000000",
        "image": {"tag": 5, "user": "1000", "labels": {"a": 1}},
        "base_image": [],
        "policy": "strict",
        "wheelhouses": {"image": "requirements.lock", "py3.9": {"lock": 3, "python": "3.9"}},
    }
    with pytest.raises(InvalidInputError, match="build.json is malformed: base_image must be an object"):
        BuildRecord.from_mapping(mistyped)
    record = BuildRecord.from_mapping(mistyped, lenient=True)
    assert (record.name, record.version, record.source_date_epoch) == (None, "1.2.0", None)
    assert (record.image.tag, record.image.user, dict(record.image.labels)) == (None, "1000", {})
    assert record.image.present and not record.base_image.present
    assert (dict(record.policy), list(record.wheelhouses)) == ({}, ["py3.9"])
    assert (record.wheelhouses["py3.9"].lock, record.wheelhouses["py3.9"].python) == (None, "3.9")
    with pytest.raises(InvalidInputError, match="build.json is malformed: the document must be an object"):
        BuildRecord.from_mapping([], lenient=True)  # type: ignore[arg-type]


def test_a_section_is_present_only_as_a_non_empty_object() -> None:
    record = BuildRecord.from_json(json.dumps(RECORD).encode())
    assert record.image.present and record.base_image.present
    empty = BuildRecord.from_json(json.dumps({**RECORD, "image": {}, "base_image": None}).encode())
    assert not empty.image.present and not empty.base_image.present
