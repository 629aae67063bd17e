"""Two `airgap bundle` runs on one engine at once: neither removes an image the other is using.

The classic builder reuses any cached step image, whoever committed it. Before the engine lease,
a run that finished first removed its build-stage images while the other was about to copy from
them, and the other failed with `invalid from flag value install: No such image: sha256:…`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EPOCH, PASSPHRASE, ROOT

pytestmark = [pytest.mark.docker]

ENV = {"AIRGAP_KEY_PASSPHRASE": PASSPHRASE, "SOURCE_DATE_EPOCH": EPOCH}
STAGE1 = "FROM {{ base_image }} AS install\n"
STAGE2 = "COPY --from=install /opt/airgap/venv /opt/airgap/venv\n"


def project(root: Path, name: str, token: str, before_copy: str) -> Path:
    """The example as ``name``: a build stage no other test has (``token``), the same in both
    projects, so the second build takes the first one's step images from the cache; and a step
    of its own in the runtime stage, before it copies from the build stage."""
    dest = root / name
    shutil.copytree(ROOT / "examples" / "tabular", dest, ignore=shutil.ignore_patterns("build"))
    template = (ROOT / "bundle_templates" / "Dockerfile.j2").read_text()
    assert STAGE1 in template and STAGE2 in template
    template = template.replace(STAGE1, STAGE1 + f'RUN echo "concurrent {token}" > /tmp/token\n')
    template = template.replace(STAGE2, before_copy + STAGE2)
    (dest / "Dockerfile.j2").write_text(template)
    yaml = dest / "airgap.yaml"
    text = yaml.read_text().replace("name: tabular-classifier", f"name: {name}")
    yaml.write_text(text + "\nimage:\n  dockerfile_template: Dockerfile.j2\n")
    return dest


def start(project_dir: Path, cache: Path, log: Path) -> subprocess.Popen[bytes]:
    """Starts a bundle whose stderr goes to ``log`` (a file: a pipe nobody reads would fill and
    stop the run)."""
    with log.open("wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "airgap", "bundle", str(project_dir), "--cache-dir", str(cache)],
            stdout=subprocess.DEVNULL,
            stderr=fh,
            env={**os.environ, **ENV},
        )


def running_step(client: Any, marker: str, within: float = 600) -> None:
    """Waits until a build step whose command holds ``marker`` is running in the engine."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for c in client.api.containers():
            if marker in " ".join(client.api.inspect_container(c["Id"])["Config"].get("Cmd") or []):
                return
        time.sleep(0.2)
    pytest.fail(f"no build step with {marker!r} started within {within:.0f}s")


def test_two_bundles_at_once_both_succeed_and_the_last_one_removes_the_build_images(
    tmp_path: Path, cache: Path, docker_client: Any
) -> None:
    token = uuid.uuid4().hex
    first_marker, second_marker = f"first-{token}", f"second-{token}"
    first = project(tmp_path, "concurrent-first", token, f'RUN echo "{first_marker}" && sleep 8\n')
    second = project(tmp_path, "concurrent-second", token, f'RUN echo "{second_marker}" && sleep 14\n')
    before = {i.id for i in docker_client.images.list(filters={"dangling": True})}
    try:
        one = start(first, cache, tmp_path / "first.log")
        # The first run's build stage is committed once its runtime stage runs; the second run
        # then takes every build-stage step from the cache, and copies from it only after the
        # first run has finished its build and cleaned up.
        running_step(docker_client, first_marker)
        two = start(second, cache, tmp_path / "second.log")
        one.wait(timeout=900)
        two.wait(timeout=900)
        err_one, err_two = (tmp_path / "first.log").read_text(), (tmp_path / "second.log").read_text()
        assert one.returncode == 0, err_one
        assert two.returncode == 0, err_two
        assert "No such image" not in err_one + err_two
        assert "left the build-stage images for the build still running" in err_one, err_one
        # the last one to finish removed what both left
        assert re.search(r"^removed \d+ image\(s\)", err_two, re.M), err_two
        after = {i.id for i in docker_client.images.list(filters={"dangling": True})}
        assert after <= before, "a build-stage image was left behind"
    finally:
        for name in ("concurrent-first", "concurrent-second"):
            for image in docker_client.images.list(name=f"airgap/{name}"):
                for tag in image.tags:
                    docker_client.images.remove(tag)
