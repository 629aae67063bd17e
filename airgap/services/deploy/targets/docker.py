"""``--to docker``: the signed image loaded into the Docker Engine and run hardened on 127.0.0.1:PORT."""

from __future__ import annotations

from airgap.adapters.runtimes import DockerRuntime, Runtime
from airgap.services.deploy.targets._container import ContainerTarget


def _docker() -> Runtime:
    return DockerRuntime()


TARGET = ContainerTarget("docker", _docker, frozenset({"docker", "registry"}), rank=10)
