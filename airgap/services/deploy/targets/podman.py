"""``--to podman``: the signed image loaded with ``podman load`` and run hardened on 127.0.0.1:PORT."""

from __future__ import annotations

from airgap.adapters.runtimes import PodmanRuntime
from airgap.services.deploy.targets._container import ContainerTarget

TARGET = ContainerTarget("podman", PodmanRuntime, frozenset({"podman", "podman-kube"}), rank=20)
