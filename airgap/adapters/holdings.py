"""What the far side's engines and registries hold, read for `airgap inventory`.

Both readings are informational: the inventory reports them, but a bundle file is never left out
because of them (install cannot rebuild a gzip layer blob from an engine's unpacked layer, and does
not pull from a registry). Each one answers None when the engine or registry is not there, rather
than failing the inventory: an inventory lists what is there.
"""

from __future__ import annotations

import json
import shutil
import subprocess

from airgap.core.inventory import DIGEST


def engine_diff_ids(engine: str, image_id: str) -> list[str] | None:
    """The RootFS diff ids of ``image_id`` in ``engine`` (docker or podman), or None when the engine
    does not answer or does not hold the image."""
    exe = shutil.which(engine)
    if exe is None or engine not in ("docker", "podman"):
        return None
    ref = image_id.removeprefix("sha256:") if engine == "podman" else image_id
    try:
        proc = subprocess.run(
            [exe, "image", "inspect", "--format", "{{json .RootFS.Layers}}", ref],
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    try:
        layers = json.loads(proc.stdout)
    except ValueError:
        return None
    if not isinstance(layers, list):
        return None
    return [d for d in layers if isinstance(d, str) and DIGEST.fullmatch(d)]


def registry_holds(registry: str, repo: str, digests: list[str]) -> list[str] | None:
    """Which of ``digests`` the registry's repository holds (loopback registries answer in plain
    HTTP first, as `--insecure-registry` installs do); None when it does not answer."""
    import requests

    from airgap.adapters.registry import Registry
    from airgap.errors import AirgapError

    for insecure in (True, False):
        try:
            reg = Registry(registry, insecure=insecure)
            return [d for d in digests if reg.has_blob(repo, d)]
        except (AirgapError, requests.exceptions.RequestException, OSError):
            continue
    return None
