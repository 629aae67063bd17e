"""The test environment script: a second run on a ready machine is a no-op that succeeds."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import ROOT

CHANGING_WORDS = re.compile(r"\b(installed|started|updated|built|pushed|pulled|created|wrote)\b")


@pytest.mark.docker
@pytest.mark.podman
def test_setup_env_second_run_changes_nothing_and_succeeds(docker_client) -> None:  # type: ignore[no-untyped-def]
    script = ROOT / "scripts" / "setup-env.sh"
    image_before = docker_client.images.get("127.0.0.1:5000/airgap/python-base:bookworm").id
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for line in proc.stdout.splitlines():
        status = line.split(":", 1)[1] if ":" in line else line
        if CHANGING_WORDS.search(status):
            assert re.search(r"already|unchanged", status), f"second run changed something: {line}"
    assert "environment ready" in proc.stdout
    assert docker_client.images.get("127.0.0.1:5000/airgap/python-base:bookworm").id == image_before
    check = subprocess.run(["bash", str(script), "--check"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout


def _locked_versions() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements" / "dev.lock").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if match:
            pins[_normalise(match.group(1))] = match.group(2)
    return pins


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_test_environment_runs_exactly_the_locked_versions() -> None:
    """What the suite runs on is what the lock says, package for package: no drift, no extras."""
    from importlib import metadata

    pins = _locked_versions()
    assert len(pins) > 50, "the lock should pin the whole dependency tree"
    installed = {
        _normalise(dist.metadata["Name"]): dist.version
        for dist in metadata.distributions()
        if _normalise(dist.metadata["Name"]) != "airgap"
    }
    assert {name: v for name, v in installed.items() if pins.get(name) != v} == {}
    assert sorted(set(pins) - set(installed)) == []


def test_every_locked_package_is_hash_pinned() -> None:
    """pip --require-hashes refuses an unhashed line; check it here so a hand edit fails fast."""
    text = (ROOT / "requirements" / "dev.lock").read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text)
    unhashed = [b.split()[0] for b in blocks if "==" in b.split("\n", 1)[0] and "--hash=sha256:" not in b]
    assert unhashed == []
