"""A new install target is one file in ``airgap/services/deploy/targets/`` and nothing else.

``tests/process_target.py`` is such a file. Here it is copied into a directory added to the
package's search path — exactly what dropping it into the package does — and a real signed bundle
is installed, smoke-tested, listed and uninstalled through it, by the unchanged installer.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import airgap.services.deploy.targets as targets_pkg
from airgap.adapters.runtimes import port_in_use
from airgap.cli.wiring import real_adapters
from airgap.errors import UsageError
from airgap.services.deploy import targets
from airgap.services.deploy.install import Installer, InstallOptions
from airgap.services.deploy.smoketest import healthz
from airgap.services.state import State
from tests.conftest import ROOT, run_airgap

pytestmark = [pytest.mark.docker]  # the session bundle is built with the Docker Engine

NAME = "tabular-classifier"
PORT = 18270


@pytest.fixture
def dropped_in(tmp_path: Path) -> Iterator[str]:
    """``process.py`` as one more module of the targets package; taken out again after."""
    extra = tmp_path / "more-targets"
    extra.mkdir()
    shutil.copy(ROOT / "tests" / "process_target.py", extra / "process.py")
    targets_pkg.__path__.append(str(extra))
    try:
        targets.discover()
        yield "process"
    finally:
        targets_pkg.__path__.remove(str(extra))
        targets.unregister("process")
        sys.modules.pop("airgap.services.deploy.targets.process", None)


def test_a_target_module_dropped_into_the_package_installs_smokes_and_uninstalls_a_real_bundle(
    dropped_in: str, tmp_path: Path, built: dict[str, Any], signing_key: Path
) -> None:
    assert dropped_in in targets.names()
    state = tmp_path / "state"
    assert (
        run_airgap(
            "keys", "trust", str(signing_key.with_suffix(".pub")), "--state-dir", str(state)
        ).returncode
        == 0
    )
    installer = Installer(State(state), adapters=real_adapters())
    options = InstallOptions(dropped_in, port=PORT, trusted=tuple(State(state).trust.keys()))
    try:
        result = installer.install(Path(built["bundle"][0]), options)
        assert result.receipt.target == "process" and result.prediction is not None
        assert result.prediction["outputs"]["label"] == [2]
        assert healthz(PORT)
        [row] = installer.status()
        assert (row["name"], row["target"], row["healthy"]) == (NAME, "process", True)
        _, mismatches = installer.smoke(NAME, "process")
        assert mismatches == []
        again = installer.install(Path(built["bundle"][0]), options)
        assert again.nothing_to_do  # healthy, through the target's own check
    finally:
        removed = installer.uninstall(NAME, "process") if installer.installed.all() else []
    assert removed and removed[0].startswith("process ")
    assert not port_in_use(PORT) and installer.status() == []


def test_a_target_registered_from_outside_the_package_is_a_choice_and_unknown_names_are_refused() -> None:
    from tests.process_target import ProcessTarget

    class Elsewhere(ProcessTarget):
        name = "elsewhere"

    targets.register(Elsewhere())
    try:
        assert "elsewhere" in targets.names() and targets.get("elsewhere").name == "elsewhere"
        with pytest.raises(ValueError, match="already named"):
            targets.register(Elsewhere())
    finally:
        targets.unregister("elsewhere")
    with pytest.raises(UsageError, match="--to must be one of docker, podman, podman-kube"):
        targets.get("elsewhere")
