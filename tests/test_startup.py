"""Start-up: a command imports what it needs when it needs it.

``airgap --help`` lists every command without loading an engine SDK, onnxruntime, the policy
engine or the signing library; ``verify`` loads the verifier and the signature check, and nothing
of the workstation's build (Docker, onnxruntime, Jinja2, YAML) or of the installer. Measured on
the imports a fresh process makes (``python -X importtime``), which is what start-up costs.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.bundles import signed_env

# What no command needs before it runs: the heavy libraries and airgap's own heavy layers.
NEVER_AT_HELP = (
    "onnxruntime", "docker", "jinja2", "cryptography", "yaml", "numpy", "requests", "zstandard",
    "packaging", "kubernetes_validate", "cyclonedx", "zfec", "piptools",
    "airgap.adapters", "airgap.core.policy", "airgap.core.project", "airgap.services.build",
    "airgap.services.deploy", "airgap.services.media.formats", "airgap.ports",
)  # fmt: skip
NEVER_AT_VERIFY = (
    "onnxruntime", "docker", "jinja2", "yaml", "numpy", "requests", "packaging", "kubernetes_validate",
    "cyclonedx", "piptools", "zfec", "airgap.core.policy", "airgap.core.project", "airgap.services.build",
    "airgap.services.deploy", "airgap.adapters.runtimes", "airgap.adapters.wheels",
)  # fmt: skip


def imported(*args: str) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """The modules a fresh ``airgap ARGS`` process imports."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "airgap", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)\s*$", proc.stderr, flags=re.M)
    assert names, proc.stderr[-2000:]
    return set(names), proc


def offenders(modules: set[str], banned: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == b or m.startswith(b + ".") for b in banned))


def test_help_lists_every_command_without_importing_engines_models_or_crypto() -> None:
    modules, proc = imported("--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for command in ("probe", "bundle", "verify", "install", "split", "join", "rebuild", "accept"):
        assert re.search(rf"^\W*{command}\s", proc.stdout, flags=re.M), (command, proc.stdout)
    assert offenders(modules, NEVER_AT_HELP) == []
    own = sorted(m for m in modules if m.startswith("airgap"))
    assert all(m.startswith(("airgap.cli", "airgap.errors")) or m in {
        "airgap", "airgap.services", "airgap.services.observer", "airgap.services.media",
        "airgap.services.media.format_options",
    } for m in own), own  # fmt: skip


def test_verify_imports_the_verifier_and_nothing_of_the_build_or_the_installer(tmp_path: Path) -> None:
    env: dict[str, Any] = signed_env(tmp_path)
    modules, proc = imported("verify", str(env["bundle"]), "--state-dir", str(env["state"]))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "airgap.services.media.verify" in modules and "cryptography" in modules
    assert offenders(modules, NEVER_AT_VERIFY) == []


@pytest.mark.parametrize("option", ["--help", "--version"])
def test_the_help_and_version_need_no_more_than_typer_and_rich(option: str) -> None:
    modules, proc = imported(option)
    assert proc.returncode == 0
    third_party = {m.split(".")[0] for m in modules} - set(sys.stdlib_module_names)
    allowed = {
        "airgap", "typer", "rich", "click", "markdown_it", "mdurl", "pygments", "shellingham",
        "annotated_doc", "typing_extensions", "attr", "linkify_it", "org", "sitecustomize",
    }  # fmt: skip
    extra = {m for m in third_party if not m.startswith(("_", "__editable__"))} - allowed
    assert extra == set(), extra


def test_the_formats_the_help_offers_are_the_registered_ones() -> None:
    from airgap.services.media import format_options, formats

    assert set(format_options.OPTIONS) <= set(formats.names())
    assert format_options.DEFAULT == formats.DEFAULT
    assert all(formats.get(o).summary == format_options.SUMMARIES[o] for o in format_options.OPTIONS)


def test_the_targets_the_help_offers_are_the_registered_ones() -> None:
    from airgap.cli.install import target_modules
    from airgap.services.deploy import targets

    built_in = {n for n in targets.names() if type(targets.get(n)).__module__.startswith(targets.__name__)}
    assert set(target_modules()) == built_in
