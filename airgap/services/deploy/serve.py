"""A virtualenv install as a service: ``airgap serve NAME`` runs its model server in the foreground
with the settings the model image would give it, and a systemd unit that runs ``airgap serve`` is
written on install (installed and enabled only when asked: ``install --systemd``).

The container targets get their serving settings from the image's ``ENV``; a virtualenv has no
image, so the same settings are read from the signed Dockerfile in ``build.json``
(core/service_unit.py) — one source, whichever way the model is run.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from airgap.adapters.fs import atomic_write_bytes
from airgap.core.build_record import BuildRecord
from airgap.core.service_unit import image_settings, unit_name, unit_text
from airgap.errors import InvalidInputError
from airgap.ports import ServiceManager
from airgap.services.deploy.receipts import Installed, Receipt
from airgap.services.media.extraction import model_file, read_record
from airgap.services.state import State

TARGET = "venv"


def server_env(receipt: Receipt, record: BuildRecord, content: Path, port: int | None) -> dict[str, str]:
    """The environment the installed model server runs with from its virtualenv: the image's serving
    settings, this installation's paths and name, loopback and the installed port (``port`` instead,
    when given)."""
    model_image = record.image.model_image
    # The model's own settings where the model is its own content; from the image's ENV before that.
    env = dict(model_image.env) if model_image is not None else image_settings(record.image.dockerfile)
    if record.serving.max_batch and "AIRGAP_MAX_BATCH" not in env:
        env["AIRGAP_MAX_BATCH"] = str(record.serving.max_batch)
    env.update(
        {
            "AIRGAP_MODEL_PATH": str(content / model_file(record)),
            "AIRGAP_GOLDEN_PATH": str(content / "model" / "golden.json"),
            "AIRGAP_MODEL_NAME": receipt.name,
            "AIRGAP_MODEL_VERSION": receipt.version,
            "AIRGAP_HOST": "127.0.0.1",
            "AIRGAP_PORT": str(port if port is not None else receipt.port or env.get("AIRGAP_PORT") or 8080),
        }
    )
    return env


@dataclass(frozen=True)
class ServePlan:
    """What ``airgap serve`` execs: the virtualenv's interpreter, its argv, the server's settings."""

    name: str
    version: str
    executable: str
    argv: tuple[str, ...]
    env: dict[str, str]


def plan(state: State, name: str, port: int | None = None) -> ServePlan:
    """How to serve the current virtualenv install of ``name`` (exit 4 when there is none)."""
    current, _ = Installed(state).get(name, TARGET)
    if current is None or not current.extra.get("python"):
        raise InvalidInputError(
            f"{name} is not installed with --to venv: nothing to serve",
            hint="install it first: airgap install BUNDLE --to venv "
            "(the container targets run a server of their own)",
        )
    content = Path(current.content)
    python = str(current.extra["python"])
    if not Path(python).exists():
        raise InvalidInputError(
            f"the virtualenv of {name} {current.version} is gone ({python})",
            hint="install the bundle again: airgap install BUNDLE --to venv",
        )
    record = read_record(content)
    server = content / "server" / "airgap_server.py"
    return ServePlan(
        current.name,
        current.version,
        python,
        (python, str(server), "serve"),
        server_env(current, record, content, port),
    )


def launcher() -> list[str]:
    """How this airgap is started again: its console script when it is the one beside this Python,
    else this Python with ``-m airgap``."""
    found = shutil.which("airgap")
    if found and Path(found).resolve().parent == Path(sys.executable).resolve().parent:
        return [found]
    return [sys.executable, "-m", "airgap"]


def serve_argv(state: State, name: str) -> list[str]:
    """``airgap serve NAME --state-dir STATE``, runnable from anywhere."""
    return [*launcher(), "serve", name, "--state-dir", str(state.directory.resolve())]


def unit_path(state: State, name: str) -> Path:
    """Where install writes the unit of ``name``."""
    return state.directory / "systemd" / unit_name(name)


def write_unit(state: State, name: str, user: bool) -> Path:
    """Writes (atomically) the systemd unit that serves the current virtualenv install of ``name``."""
    path = unit_path(state, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, unit_text(name, serve_argv(state, name), user).encode())
    return path


def enable_unit(state: State, name: str, manager: ServiceManager) -> Path:
    """Installs the unit written for ``name`` where the service manager finds it, and enables and
    starts it; returns where it was installed."""
    plan(state, name)  # installed with --to venv, or exit 4
    source = unit_path(state, name)
    if not source.is_file():  # installed before units were written
        write_unit(state, name, user=os.geteuid() != 0)
    directory = manager.unit_directory()
    directory.mkdir(parents=True, exist_ok=True)
    dest = directory / source.name
    atomic_write_bytes(dest, source.read_bytes())
    manager.enable(source.name)
    return dest
