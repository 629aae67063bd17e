"""Pure checks behind `airgap rebuild`: the ``targets`` field, a target's interpreter and tags,
and which of a bundle's wheelhouses installs on a site's Python (the refusal names the wheels)."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.tags import Tag

from airgap.core.build_record import BuildRecord
from airgap.core.profile import Profile
from airgap.core.project import parse_project
from airgap.core.rebuild import Candidate, TargetSpec, candidates, choose, misfits, suggestion, target_facts
from airgap.core.tags import compute_tags
from airgap.errors import InvalidInputError
from tests.conftest import FOREIGN

BASE = """
name: demo
version: "1.0.0"
model: {path: m.onnx, golden: g.json}
requirements: [onnxruntime]
base_image: python:3.11-slim
"""


def test_targets_are_parsed_and_duplicates_are_one() -> None:
    project = parse_project(
        BASE + "targets:\n  - {python: '3.9'}\n  - {python: '3.9'}\n  - {python: '3.10', glibc: '2.28'}\n"
    )
    assert project.targets == (TargetSpec("3.9"), TargetSpec("3.10", "2.28"))
    assert [t.key for t in project.targets] == ["py3.9", "py3.10-glibc2.28"]
    assert parse_project(BASE).targets == ()


@pytest.mark.parametrize(
    ("snippet", "field"),
    [
        ("targets: {python: '3.9'}", "targets"),
        ("targets:\n  - {python: 3.9}", "targets[0].python"),
        ("targets:\n  - {python: '2.7'}", "targets[0].python"),
        ("targets:\n  - {python: '3.9', glibc: 'new'}", "targets[0].glibc"),
        ("targets:\n  - {python: '3.9', arch: x86_64}", "targets[0]"),
    ],
)
def test_a_bad_target_names_its_field(snippet: str, field: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        parse_project(BASE + snippet + "\n")
    assert field in err.value.one_line()


def test_a_target_is_the_base_platform_with_its_own_python_and_glibc() -> None:
    base = Profile.from_json(FOREIGN.read_text()).primary_python()
    py = target_facts(base, TargetSpec("3.9", "2.17"))
    assert py.version_str == "3.9.0" and py.markers["python_version"] == "3.9"
    tags = compute_tags(py)
    assert Tag("cp39", "cp39", "manylinux_2_17_aarch64") in tags
    assert not any(t.interpreter == "cp310" for t in tags)
    assert not any("manylinux_2_28" in t.platform for t in tags)


RECORD = {
    "base_image": {"python": "3.11.2"},
    "wheelhouses": {
        "image": {"lock": "requirements.lock"},
        "host": {"lock": "host/requirements.lock"},
        "py3.9": {"lock": "targets/py3.9/requirements.lock", "python": "3.9"},
    },
}
FILES = [
    "wheels/numpy-2.2.0-cp311-cp311-manylinux_2_17_x86_64.whl",
    "wheels/packaging-24.0-py3-none-any.whl",
    "host/wheels/numpy-2.2.0-cp310-cp310-manylinux_2_17_aarch64.whl",
    "targets/py3.9/wheels/numpy-2.0.2-cp39-cp39-manylinux_2_17_x86_64.whl",
    "targets/py3.9/wheels/packaging-24.0-py3-none-any.whl",
]
PY39 = [Tag("cp39", "cp39", "manylinux_2_17_x86_64"), Tag("py3", "none", "any")]


def test_the_first_wheelhouse_that_fits_entirely_is_chosen_host_wheelhouses_never() -> None:
    record = BuildRecord.from_mapping(RECORD)
    found = candidates(record.wheelhouses, record.base_image.python, FILES)
    assert [c.kind for c in found] == ["image", "py3.9"]
    fit = choose(found, PY39)
    assert fit.chosen is not None and fit.chosen.kind == "py3.9" and fit.chosen.directory == "targets/py3.9"
    assert fit.misfits == {"image": ("numpy-2.2.0-cp311-cp311-manylinux_2_17_x86_64.whl",)}


def test_no_fit_names_every_wheel_that_does_not_install_and_what_to_bundle() -> None:
    fit = choose([Candidate("image", "", "3.11", tuple(f[7:] for f in FILES[:2]))], PY39)
    assert fit.chosen is None
    line = fit.reason("site:py39 (Python 3.9.2)", [Tag("cp39", "cp39", "linux_x86_64"), *PY39])
    assert line == (
        "no wheelhouse in the bundle installs on site:py39 (Python 3.9.2) "
        "(best tag cp39-cp39-manylinux_2_17_x86_64): "
        "image wheelhouse: numpy-2.2.0-cp311-cp311-manylinux_2_17_x86_64.whl"
    )
    assert (
        suggestion("3.9", "2.31")
        == "add `targets: [{python: '3.9', glibc: '2.31'}]` to airgap.yaml and bundle again"
    )
    assert misfits(["not-a-wheel.whl"], PY39) == ("not-a-wheel.whl",)


def test_a_rebuild_refuses_a_bundle_checked_against_rules_this_airgap_does_not_have(tmp_path: Path) -> None:
    """The publisher's own rules (policies.paths) are not in the bundle: re-checking without them
    would sign a compliance result that silently drops them."""
    import json

    from airgap.services.build.check import load_catalog, policy_directories
    from airgap.services.build.rebuild import _same_rules

    builtin = [r.id for r in load_catalog(policy_directories()).rules]
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"rules": [{"id": i} for i in builtin]}))
    _same_rules(results)  # airgap's own rules only: the re-check covers them all
    results.write_text(json.dumps({"rules": [{"id": i} for i in [*builtin, "SITE-CUSTOM-1"]]}))
    with pytest.raises(InvalidInputError, match=r"rules this airgap does not have \(SITE-CUSTOM-1\)"):
        _same_rules(results)
