"""``--to podman``: the signed image loaded with ``podman load`` and run hardened on 127.0.0.1:PORT."""

from __future__ import annotations

from airgap.services.deploy.targets._container import ContainerTarget

TARGET = ContainerTarget("podman", "podman", frozenset({"podman", "podman-kube"}), rank=20)
