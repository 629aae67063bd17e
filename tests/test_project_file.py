"""airgap.yaml validation: every error names the field and the line, and nothing outside the project."""

from __future__ import annotations

import pytest

from airgap.core.project import parse_project, parse_requirements_in
from airgap.errors import InvalidInputError
from tests.conftest import ROOT

GOOD = (ROOT / "examples" / "tabular" / "airgap.yaml").read_text()


def error_of(text: str) -> str:
    with pytest.raises(InvalidInputError) as info:
        parse_project(text, "airgap.yaml")
    return info.value.one_line()


def test_the_example_project_is_valid() -> None:
    p = parse_project(GOOD, "airgap.yaml")
    assert p.slug == "tabular-classifier-1.0.0"
    assert p.requirements_file == "requirements.in"
    assert p.serving.port == 8080 and p.kubernetes.namespace == "tabular"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('version: "1.0.0"', "version: 1.0", "version: 1.0 is not a semantic version"),
        ("name: tabular-classifier", "name: Tabular_Classifier", "name: 'Tabular_Classifier' must be"),
        ("  port: 8080", "  port: 80", "serving.port: must be an integer from 1024 to 65535"),
        (
            "  path: model/classifier.onnx",
            "  path: ../../etc/passwd",
            "model.path: '../../etc/passwd' leaves",
        ),
        ("  path: model/classifier.onnx", "  path: /etc/passwd", "model.path: '/etc/passwd' leaves"),
        ("  replicas: 2", "  replicas: 2\n  replcias: 3", "kubernetes.replcias: is not a known field"),
        ("  fail_on: high", "  fail_on: critical", "policies.fail_on: must be one of high, medium, low"),
        ('limits: {cpu: "1", memory: 1Gi}', "limits: {cpu: lots, memory: 1Gi}", "resources.limits.cpu"),
        ("base_image: 127.0.0.1", "base_image: 'UPPER case'\nx: 127.0.0.1", "base_image"),
    ],
)
def test_bad_fields_are_named_with_their_line(old: str, new: str, expected: str) -> None:
    assert old in GOOD
    assert expected in error_of(GOOD.replace(old, new, 1))


def test_line_numbers_point_at_the_offending_key() -> None:
    text = GOOD.replace("  threads: 2", "  threads: 0")
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "threads: 0" in ln)
    assert f"airgap.yaml:{line}: serving.threads" in error_of(text)


def test_a_waiver_needs_a_written_justification() -> None:
    text = GOOD.replace(
        "  fail_on: high", "  fail_on: high\n  waivers:\n    - {rule: AG-K8S-001, justification: ok}"
    )
    assert "written justification" in error_of(text)


def test_duplicate_keys_and_broken_yaml_are_refused() -> None:
    assert "given twice" in error_of(GOOD + "\nname: again\n")
    assert "not valid YAML" in error_of("name: [unclosed\n")
    assert "empty" in error_of("")


def test_requirements_in_refuses_index_options_and_bad_lines() -> None:
    assert parse_requirements_in("# c\nnumpy>=1.26  # inline\n\nonnxruntime\n", "r.in") == (
        "numpy>=1.26",
        "onnxruntime",
    )
    with pytest.raises(InvalidInputError, match="r.in:2: option '--index-url'"):
        parse_requirements_in("numpy\n--index-url http://evil.example/simple\n", "r.in")
    with pytest.raises(InvalidInputError, match="r.in:1"):
        parse_requirements_in("numpy>=>1\n", "r.in")
