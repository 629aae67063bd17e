"""Bad input to `airgap bundle`: one clear line, the documented exit code, no staging left behind."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT, assert_one_line_error, run_airgap


@pytest.fixture
def project(tmp_path: Path) -> Path:
    dest = tmp_path / "tabular"
    shutil.copytree(ROOT / "examples" / "tabular", dest, ignore=shutil.ignore_patterns("build"))
    return dest


def edit(project: Path, old: str, new: str) -> None:
    path = project / "airgap.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def nothing_staged(project: Path) -> None:
    build = project / "build"
    assert not build.exists() or list(build.iterdir()) == [], list(build.iterdir())


def test_model_that_is_not_onnx_exits_4_before_anything_is_fetched(project: Path) -> None:
    (project / "model" / "classifier.onnx").write_bytes(b"this is a pickle, not an ONNX model\n")
    line = assert_one_line_error(run_airgap("bundle", str(project)), 4)
    assert "not an ONNX model" in line
    nothing_staged(project)


def test_malformed_project_file_names_the_field_and_line(project: Path) -> None:
    edit(project, "  port: 8080", "  port: eighty")
    line = assert_one_line_error(run_airgap("bundle", str(project)), 4)
    assert "airgap.yaml:" in line and "serving.port" in line
    nothing_staged(project)


def test_missing_project_file_exits_4(tmp_path: Path) -> None:
    line = assert_one_line_error(run_airgap("bundle", str(tmp_path)), 4)
    assert "airgap.yaml" in line


@pytest.mark.docker
def test_base_image_that_cannot_be_found_says_where_it_looked(project: Path, docker_client) -> None:  # type: ignore[no-untyped-def]
    edit(project, "airgap/python-base:bookworm", "airgap/no-such-base:1")
    line = assert_one_line_error(run_airgap("bundle", str(project), "--cache-dir", str(project / ".c")), 4)
    assert "127.0.0.1:5000" in line and "no-such-base" in line
    nothing_staged(project)


@pytest.mark.docker
@pytest.mark.network
def test_requirement_that_does_not_exist_exits_4_and_stages_nothing(project: Path, docker_client) -> None:  # type: ignore[no-untyped-def]
    (project / "requirements.in").write_text("onnxruntime>=1.17\nairgap-no-such-package-4f1c==1.0\n")
    line = assert_one_line_error(run_airgap("bundle", str(project), "--cache-dir", str(project / ".c")), 4)
    assert "airgap-no-such-package-4f1c" in line
    nothing_staged(project)


def test_host_wheelhouse_without_a_profile_is_refused(project: Path) -> None:
    line = assert_one_line_error(run_airgap("bundle", str(project), "--host-wheelhouse"), 4)
    assert "--profile" in line
    nothing_staged(project)
