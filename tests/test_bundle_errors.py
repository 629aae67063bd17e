"""Bad input to `airgap bundle`: one clear line, the documented exit code, no staging left behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
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


# ------------------------------------------------------------------ the argument, the engine, early refusals
def test_the_project_file_itself_bundles_like_its_directory(project: Path) -> None:
    """`bundle DIR/airgap.yaml` reads the same project: it gets as far as the same refusal."""
    edit(project, "  port: 8080", "  port: eighty")
    by_dir = assert_one_line_error(run_airgap("bundle", str(project)), 4)
    by_file = assert_one_line_error(run_airgap("bundle", str(project / "airgap.yaml")), 4)
    assert by_dir == by_file and "serving.port" in by_file


@pytest.mark.parametrize("suffix", ["airgap.yaml/airgap.yaml", "no-such-dir", "airgap.yml"])
def test_a_wrong_project_argument_is_invalid_input_and_never_blames_the_disk(
    project: Path, suffix: str
) -> None:
    line = assert_one_line_error(run_airgap("bundle", str(project / suffix)), 4)
    assert "free some space" not in line and "writable" not in line
    assert "does not exist" in line and "airgap.yaml" in line


@pytest.mark.parametrize("kind", ["directory", "below a file"])
def test_reading_a_directory_or_a_path_below_a_file_is_invalid_input(tmp_path: Path, kind: str) -> None:
    (tmp_path / "file").write_text("{}")
    target = tmp_path if kind == "directory" else tmp_path / "file" / "profile.json"
    line = assert_one_line_error(run_airgap("profile", str(target)), 4)
    assert "free some space" not in line and "writable" not in line


def test_an_unreadable_file_says_permission_not_disk_space(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root reads anything: a path through a file the kernel refuses to open for reading
        target = Path("/proc/self/mem")
    else:
        target = tmp_path / "p.json"
        target.write_text("{}")
        target.chmod(0)
    proc = run_airgap("profile", str(target))
    assert proc.returncode in (4, 5), proc.stderr
    line = assert_one_line_error(proc, proc.returncode)
    assert "free some space" not in line


def test_no_engine_says_how_to_get_one_not_a_repository_script(project: Path, tmp_path: Path) -> None:
    env = {"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
    line = assert_one_line_error(run_airgap("bundle", str(project), env=env), 5)
    assert "setup-env.sh" not in line
    assert "DOCKER_HOST" in line and "start Docker" in line


def _phases_started(stderr: str) -> list[str]:
    return [
        m.group(1) for m in re.finditer(r"^\[\s*[\d.]+s\] (\S[^.:(]*?) (?:\(.*\) )?\.\.\.$", stderr, re.M)
    ]


@pytest.mark.docker
def test_golden_inputs_that_do_not_fit_the_model_are_refused_before_any_slow_phase(
    project: Path, docker_client
) -> None:  # type: ignore[no-untyped-def]
    golden = project / "model" / "golden.json"
    doc = json.loads(golden.read_text())
    doc["cases"][1]["inputs"]["features"] = [[1.0, 2.0, 3.0]]  # three features; the model takes four
    golden.write_text(json.dumps(doc))
    started = time.monotonic()
    proc = run_airgap("bundle", str(project), "--cache-dir", str(project / ".c"))
    line = assert_one_line_error(proc, 4)
    assert time.monotonic() - started < 30
    assert "golden case 'pair'" in line and "dimension 1 must be 4" in line
    assert "edit the golden inputs" in line and "opset" not in line
    assert _phases_started(proc.stderr) == ["project"], proc.stderr
    nothing_staged(project)


@pytest.mark.docker
def test_an_image_for_another_architecture_is_refused_at_the_start_with_the_fix(
    project: Path, docker_client
) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import FOREIGN

    started = time.monotonic()
    proc = run_airgap("bundle", str(project), "--profile", str(FOREIGN), "--cache-dir", str(project / ".c"))
    line = assert_one_line_error(proc, 1)
    assert time.monotonic() - started < 30
    assert "x86_64" in line and "aarch64" in line and "AG-TGT-ARCH" in line
    assert "base_image" in line and "waive" in line
    assert _phases_started(proc.stderr) == ["project", "base image"], proc.stderr
    nothing_staged(project)
