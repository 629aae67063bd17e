"""``--to docker``: the signed image loaded into the Docker Engine and run hardened on 127.0.0.1:PORT."""

from __future__ import annotations

from airgap.services.deploy.targets._container import ContainerTarget

TARGET = ContainerTarget("docker", "docker", frozenset({"docker", "registry"}), rank=10)
