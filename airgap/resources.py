"""Where the shipped data lives: ``bundle_templates/`` and ``policies/``.

A source checkout (or editable install) keeps them beside the package; a wheel installs them under
``<prefix>/share/airgap/``. ``AIRGAP_DATA_DIR`` overrides both, for tests and unusual layouts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from airgap.errors import EnvironmentFailure


def _data_root(name: str) -> Path:
    candidates = []
    if os.environ.get("AIRGAP_DATA_DIR"):
        candidates.append(Path(os.environ["AIRGAP_DATA_DIR"]) / name)
    candidates.append(Path(__file__).resolve().parent.parent / name)
    candidates.append(Path(sys.prefix) / "share" / "airgap" / name)
    for c in candidates:
        if c.is_dir():
            return c
    raise EnvironmentFailure(
        f"airgap's {name}/ directory is missing (looked in {', '.join(map(str, candidates))})",
        hint="reinstall airgap, or set AIRGAP_DATA_DIR to a directory containing it",
    )


def templates_dir() -> Path:
    """The shipped ``bundle_templates/`` (Dockerfile, model server, install.sh, Kubernetes manifests); a
    missing one is an environment failure naming every place looked, not a crash mid-bundle."""
    return _data_root("bundle_templates")


def policies_dir() -> Path:
    """The shipped ``policies/`` rule files; a missing directory is an environment failure naming every place
    looked, so a check never silently runs with no rules."""
    return _data_root("policies")
