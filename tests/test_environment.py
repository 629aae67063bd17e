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
