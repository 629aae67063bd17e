"""The real adapters the far side's commands hand to the installer: the one place they are made.

Each factory imports its adapter when first called, so listing the ``--to`` choices or printing
``--help`` loads no engine SDK and no HTTP client.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airgap import ports


def _docker() -> ports.PullingRuntime:
    from airgap.adapters.runtimes import DockerRuntime

    return DockerRuntime()


def _podman() -> ports.KubePlayRuntime:
    from airgap.adapters.runtimes import PodmanRuntime

    return PodmanRuntime()


def _registry(url: str, insecure: bool, ca_bundle: Path | None) -> ports.Registry:
    from airgap.adapters.registry import Registry

    return Registry(url, insecure, ca_bundle)


def _kubectl(context: str | None) -> ports.Kubectl:
    from airgap.adapters.kubectl import KubectlCli

    return KubectlCli(context)


def real_adapters() -> ports.Adapters:
    """Docker (the SDK), Podman (its CLI), the registry (HTTP) and kubectl, as the far side has them."""
    from airgap import ports

    return ports.Adapters(docker=_docker, podman=_podman, registry=_registry, kubectl=_kubectl)
