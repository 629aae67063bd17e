"""The installer and the container targets drive whatever runtime the site's adapters give them.

Fast tier: a fake runtime (``tests/fakes.py``) stands in for Docker and Podman, so what status,
uninstall and the docker target decide from a runtime's containers and labels is proved in-process;
the engine tier proves the same on the real engines.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from airgap.errors import InvalidInputError
from airgap.services.deploy import targets
from airgap.services.deploy.install import Installer
from airgap.services.deploy.receipts import Receipt
from airgap.services.state import State
from tests.fakes import FakeRuntime, fake_adapters

NAME = "tabular-classifier"
STATE_LABEL = "io.airgap.state"


def labels(installer: Installer, version: str, target: str = "docker") -> dict[str, str]:
    return installer.site.labels(NAME, version, target)


def state_dir(tmp_path: Path) -> State:
    (tmp_path / "state").mkdir()
    return State(tmp_path / "state")


def receipt(name: str, container: str, image: str) -> Receipt:
    return Receipt(
        name, "1.0.0", "docker", "ab" * 32, "k" * 64, "b.tar", "2026-01-01T00:00:00Z", "/c", image, container
    )


def test_status_lists_a_container_this_state_directory_started_and_uninstall_removes_only_it(
    tmp_path: Path,
) -> None:
    docker = FakeRuntime("docker")
    installer = Installer(state_dir(tmp_path), adapters=fake_adapters(docker=docker))  # no podman
    docker.add_container("airgap-killed-mid-install", "sha256:" + "1" * 64, labels(installer, "1.0.0"))
    other = {**labels(installer, "1.0.0"), STATE_LABEL: "another-state-dir"}
    docker.add_container("airgap-of-another-site", "sha256:" + "2" * 64, other)
    docker.add_container("not-airgaps", "sha256:" + "3" * 64, {})
    docker.by_name["not-airgaps"].labels.clear()  # no install label: not airgap's

    rows = installer.status()

    assert [(r["name"], r["target"], r["container"], r["state"]) for r in rows] == [
        (NAME, "docker", "airgap-killed-mid-install", "orphaned")
    ]
    assert installer.uninstall(NAME, "docker") == ["container airgap-killed-mid-install"]
    assert sorted(docker.by_name) == ["airgap-of-another-site", "not-airgaps"]
    assert installer.status() == []
    with pytest.raises(InvalidInputError, match="is not installed with --to docker"):
        installer.uninstall(NAME, "docker")


def test_a_container_on_podman_is_found_under_the_target_its_label_names(tmp_path: Path) -> None:
    podman = FakeRuntime("podman")
    installer = Installer(state_dir(tmp_path), adapters=fake_adapters(podman=podman))  # no docker
    podman.add_container("airgap-pod", "sha256:" + "4" * 64, labels(installer, "2.0.0", "podman-kube"))

    assert [(t, rt.name, c) for t, rt, c in installer._started_here()] == [
        ("podman-kube", "podman", "airgap-pod")
    ]


def test_the_docker_target_removes_its_container_but_keeps_an_image_another_installation_uses(
    tmp_path: Path,
) -> None:
    docker = FakeRuntime("docker")
    installer = Installer(state_dir(tmp_path), adapters=fake_adapters(docker=docker))
    shared, own = "sha256:" + "5" * 64, "sha256:" + "6" * 64
    docker.add_container("airgap-a", shared, {})
    docker.add_container("airgap-b", own, {}, state="exited")
    installer.installed.put(receipt("other-model", "airgap-other", shared), None)
    target = targets.get("docker")

    # exited: not healthy, and its port is not even asked
    assert target.healthy(installer.site, receipt(NAME, "airgap-b", own)) is False
    assert target.remove(installer.site, receipt(NAME, "airgap-a", shared)) == ["container airgap-a"]
    assert shared in docker.images
    assert target.remove(installer.site, receipt(NAME, "airgap-b", own)) == [
        "container airgap-b",
        f"image {own[:19]}",
    ]
    assert own not in docker.images and docker.by_name == {}
