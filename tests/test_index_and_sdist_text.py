"""What an index or an sdist says is foreign text: an sdist's build requirements (which pip reads with
the network on) must be PEP 508 requirements and never reach a shell; a wheel URL must decode to one
plain file name before it becomes a path in the wheel store."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from airgap.adapters.wheels import build_requires, wheel_file_name
from airgap.errors import IntegrityError, InvalidInputError


def _sdist(tmp_path: Path, pyproject: str) -> Path:
    path = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        data = pyproject.encode()
        info = tarfile.TarInfo("pkg-1.0/pyproject.toml")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return path


def test_build_requirements_are_read_and_normalised(tmp_path: Path) -> None:
    sdist = _sdist(tmp_path, '[build-system]\nrequires = ["setuptools >= 61", "wheel"]\n')
    assert build_requires(sdist) == ["setuptools>=61", "wheel"]


@pytest.mark.parametrize(
    "hostile",
    [
        "x'; curl http://127.0.0.1:9/ | sh; echo '",
        "--index-url=http://127.0.0.1:9/simple",
        "$(touch /tmp/pwned)",
    ],
)
def test_a_build_requirement_that_is_not_pep_508_is_refused(tmp_path: Path, hostile: str) -> None:
    sdist = _sdist(tmp_path, f"[build-system]\nrequires = [{hostile!r}]\n")
    with pytest.raises(InvalidInputError, match="not a PEP 508 requirement"):
        build_requires(sdist)


def test_an_sdist_without_pyproject_has_no_extra_build_requirements(tmp_path: Path) -> None:
    path = tmp_path / "old-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo("old-1.0/setup.py")
        info.size = 0
        tf.addfile(info, io.BytesIO(b""))
    assert build_requires(path) == []


def test_a_percent_encoded_wheel_url_is_stored_under_its_decoded_name() -> None:
    url = "https://files.example/packages/ab/torch-2.3.0%2Bcpu-cp311-cp311-linux_x86_64.whl#sha256=00"
    assert wheel_file_name(url) == "torch-2.3.0+cpu-cp311-cp311-linux_x86_64.whl"


@pytest.mark.parametrize(
    "url",
    [
        "https://files.example/p/..%2F..%2Fetc%2Fdemo-1.0-py3-none-any.whl",
        "https://files.example/p/not-a-wheel.tar.gz",
        "https://files.example/p/",
    ],
)
def test_an_index_url_that_is_not_one_plain_wheel_name_is_refused(url: str) -> None:
    with pytest.raises(IntegrityError):
        wheel_file_name(url)
