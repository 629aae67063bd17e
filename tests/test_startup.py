"""Start-up: a command imports what it needs when it needs it.

``airgap --help`` lists every command without loading an engine SDK, onnxruntime, the policy
engine or the signing library; ``verify`` loads the verifier and the signature check, and nothing
of the workstation's build (Docker, onnxruntime, Jinja2, YAML) or of the installer. No command
imports pydantic to parse its arguments, and ``verify`` of a name that is not there fails before
the verifier is loaded. A help screen typer has drawn is shown again, byte for byte, from the help
cache without importing typer or rich, and only for the same code, terminal and environment.
Measured on the imports a fresh process makes (``python -X importtime``), which is what start-up
costs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import pytest
import typer

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


def imported(
    *args: str, cache: Path | None = None, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """The modules a fresh ``airgap ARGS`` process imports; its help cache is ``cache``, or a new
    empty one (the screen is drawn by typer, as on a first run)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.pop("AIRGAP_CACHE_DIR", None)
    full_env["XDG_CACHE_HOME"] = str(cache) if cache is not None else tempfile.mkdtemp(prefix="airgap-help-")
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "airgap", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=full_env,
        cwd=cwd,
    )
    if cache is None:
        shutil.rmtree(full_env["XDG_CACHE_HOME"], ignore_errors=True)
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


# ----------------------------------------------------------------------------- no pydantic, verify
@pytest.mark.parametrize("args", [("--help",), ("verify", "--help"), ("keys", "trust", "--help")])
def test_no_help_screen_imports_pydantic_or_the_verifier(args: tuple[str, ...]) -> None:
    modules, proc = imported(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert offenders(modules, ("pydantic", "pydantic_core", "airgap.services.media.opening")) == []


def test_verify_of_a_missing_bundle_is_refused_and_audited_before_the_verifier_loads(tmp_path: Path) -> None:
    """The refusal (exit 4, the name in one line, a 'rejected' audit record) is the verifier's
    own; only the archive, format and parity readers, and pydantic, are not loaded for it."""
    state = tmp_path / "state"
    missing = tmp_path / "nowhere" / "b.airgap.tar"
    modules, proc = imported("verify", str(missing), "--state-dir", str(state))
    assert proc.returncode == 4, proc.stderr[-2000:]
    assert f"{missing} does not exist" in " ".join(proc.stderr.split())
    banned = ("pydantic", "airgap.services.media.opening", "airgap.services.media.formats", "zstandard")
    assert offenders(modules, banned) == []
    other_commands = ("airgap.cli.build", "airgap.cli.install", "airgap.cli.probe", "airgap.cli.trust")
    assert offenders(modules, other_commands) == []
    audit = [json.loads(line) for line in (state / "audit.log").read_text().splitlines()]
    assert [(a["action"], a["result"], a["exit_code"]) for a in audit] == [("verify", "rejected", 4)]
    assert audit[0]["bundle"] == str(missing) and "does not exist" in audit[0]["reason"]


def test_a_parts_index_beside_a_missing_bundle_name_is_still_read(tmp_path: Path) -> None:
    """``verify NAME.airgap.tar`` with only ``NAME.airgap.tar.parts.sha256`` there reads the index
    (and fails on its content here), not 'does not exist': the early refusal is only for a name
    that names nothing."""
    bundle = tmp_path / "b.airgap.tar"
    (tmp_path / "b.airgap.tar.parts.sha256").write_text("not an index\\n")
    modules, proc = imported("verify", str(bundle), "--state-dir", str(tmp_path / "state"))
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "does not exist" not in proc.stderr
    assert "airgap.services.media.opening" in modules


def test_path_arguments_are_coerced_as_typer_itself_coerces_them(tmp_path: Path) -> None:
    """The coercion built on first use gives typer's own answer: the same value, or the same
    usage error, for a path that exists, one that does not, a file where a directory is wanted,
    a resolved path, a path kept as text, and an unset option."""
    import typer.main
    from typer._click.exceptions import BadParameter
    from typer._coercion import build_runtime_param

    import airgap.cli.common  # noqa: F401  (installs the coercion)

    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    app = typer.Typer()

    @app.command()
    def cmd(
        plain: Path,
        must: Annotated[Path, typer.Option(exists=True, dir_okay=False)] = a_file,
        resolved: Annotated[Path, typer.Option(resolve_path=True)] = Path("."),
        text: Annotated[str, typer.Option(path_type=str, exists=True)] = ".",
        unset: Annotated[Path | None, typer.Option()] = None,
        many: Annotated[list[Path] | None, typer.Option()] = None,
    ) -> None:
        """A command with every kind of path parameter."""

    command = typer.main.get_command(app)
    ctx = command.make_context("cmd", [str(a_file)])
    values: list[object] = [
        str(a_file),
        str(tmp_path / "missing"),
        str(tmp_path),
        "rel/../x",
        "",
        "-",
        "a\\udcffb",
        None,
    ]
    for param in command.params:
        for value in values + ([[str(a_file), "y"]] if param.name == "many" else []):
            if param.name == "many" and isinstance(value, str):
                continue
            answers = []
            for runtime in (param.get_runtime_param(), build_runtime_param(param.type_descriptor)):
                try:
                    answers.append(("value", runtime.coerce(value, param=param, ctx=ctx)))
                except BadParameter as exc:
                    answers.append(("error", exc.format_message()))
            assert answers[0] == answers[1], (param.name, value, answers)
            param._runtime_param = None  # the next value starts from the lazy coercion again


# ----------------------------------------------------------------------------- the help cache
def every_command() -> list[tuple[str, ...]]:
    """Every command path of ``airgap``, the root first: what ``--help`` can be asked of."""
    import typer.main

    from airgap.cli import app

    found: list[tuple[str, ...]] = [()]

    def walk(group: Any, path: tuple[str, ...]) -> None:
        for name, sub in getattr(group, "commands", {}).items():
            found.append((*path, name))
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


def all_commands_help(*args: str) -> str:
    """``airgap ARGS --help`` as drawn with every command registered (``main(argv)``)."""
    entry = "import sys; from airgap.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run(
        [sys.executable, "-c", entry, *args, "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_a_kept_help_screen_is_typers_own_screen_for_every_command(tmp_path: Path) -> None:
    """For every command: the first ``--help`` is drawn by typer, with only that command's module
    loaded, the same as with every command registered, and kept; the second is the kept screen,
    byte for byte the same, shown without importing typer, rich or the commands."""
    commands = every_command()
    assert len(commands) > 20
    for command in commands:
        drawn_modules, drawn = imported(*command, "--help", cache=tmp_path)
        kept_modules, kept = imported(*command, "--help", cache=tmp_path)
        assert drawn.returncode == kept.returncode == 0, (command, drawn.stderr[-500:])
        assert "typer.rich_utils" in drawn_modules, command
        assert drawn.stdout == all_commands_help(*command), command
        assert kept.stdout == drawn.stdout, command
        assert (
            offenders(kept_modules, ("typer", "rich", "click", "airgap.cli.run", "airgap.cli.common")) == []
        )
    assert len(list((tmp_path / "airgap" / "help").iterdir())) == len(commands)


def test_a_help_screen_kept_for_another_terminal_or_environment_is_not_shown(tmp_path: Path) -> None:
    """Width, colour or any variable differs from what the kept screen was drawn for: typer
    draws the screen for this terminal (and keeps that one instead)."""
    _, narrow = imported("verify", "--help", cache=tmp_path, env={"COLUMNS": "60"})
    others: list[dict[str, str]] = [
        {"COLUMNS": "120"},
        {"COLUMNS": "60", "FORCE_COLOR": "1"},
        {"COLUMNS": "60", "AIRGAP_UNRELATED": "1"},
    ]
    for env in others:
        modules, proc = imported("verify", "--help", cache=tmp_path, env=env)
        _, fresh = imported("verify", "--help", env=env)
        assert "typer.rich_utils" in modules, env
        assert proc.stdout == fresh.stdout, env
        if "AIRGAP_UNRELATED" not in env:
            assert proc.stdout != narrow.stdout, env
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 60


def test_a_kept_screen_is_shown_again_whatever_happens_in_the_working_directory(tmp_path: Path) -> None:
    """``python -m airgap`` puts the working directory on ``sys.path``; files made there between
    two runs (a redirection's output) are not other code."""
    work = tmp_path / "work"
    work.mkdir()
    _, drawn = imported("--help", cache=tmp_path / "cache", cwd=work)
    (work / "imp.txt").write_text("")
    modules, kept = imported("--help", cache=tmp_path / "cache", cwd=work)
    assert kept.stdout == drawn.stdout
    assert offenders(modules, ("typer", "rich")) == []


def test_a_kept_screen_others_may_write_or_of_other_content_is_not_shown(tmp_path: Path) -> None:
    """The cache is written to the terminal as it is: a file others may write is ignored, and
    so is one whose key is not this run's (a screen for other code or another terminal)."""
    _, drawn = imported("--help", cache=tmp_path)
    kept = tmp_path / "airgap" / "help" / "airgap"
    key, _, _ = kept.read_bytes().partition(b"\n")
    kept.write_bytes(key + b"\n\x1b]0;owned\x07planted\n")
    kept.chmod(0o666)
    modules, proc = imported("--help", cache=tmp_path)
    assert "planted" not in proc.stdout and proc.stdout == drawn.stdout
    assert "typer.rich_utils" in modules
    kept.write_bytes(b"0" * 64 + b"\nplanted\n")
    kept.chmod(0o600)
    modules, proc = imported("--help", cache=tmp_path)
    assert "planted" not in proc.stdout and proc.stdout == drawn.stdout


def test_the_key_covers_every_file_of_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Code edited in place (an editable install, a patched file) is other code: a new key."""
    import airgap
    from airgap.cli import helpcache

    package = tmp_path / "airgap"
    (package / "cli").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    command = package / "cli" / "verify.py"
    command.write_text("HELP = 'old'\n")
    monkeypatch.setattr(airgap, "__file__", str(package / "__init__.py"))
    before = helpcache.key(["verify", "--help"])
    assert helpcache.key(["verify", "--help"]) == before
    command.write_text("HELP = 'new, longer'\n")
    assert helpcache.key(["verify", "--help"]) != before
    assert helpcache.key(["probe", "--help"]) != helpcache.key(["verify", "--help"])


@pytest.mark.parametrize(
    "args",
    [["--help"], ["verify", "--help"], ["keys", "trust", "--help"]],
)
def test_only_a_plain_help_command_line_is_kept(args: list[str]) -> None:
    from airgap.cli import helpcache

    assert helpcache._eligible(args)
    for other in (
        args[:-1],
        [*args, "x"],
        ["--json", *args],
        ["keys", "create", "--name", "--help"],
        ["a"] * 3 + ["--help"],
    ):
        assert not helpcache._eligible(other), other


def test_no_help_cache_is_made_in_a_directory_of_another_user(tmp_path: Path) -> None:
    """``sudo airgap --help`` with the user's home: nothing is created there for root (the user
    could not write their own cache directory afterwards); the help is shown all the same."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to own a directory as another user")
    home = tmp_path / "someone"
    home.mkdir()
    os.chown(home, 12345, 12345)
    _, proc = imported("--help", cache=home / ".cache")
    assert proc.returncode == 0 and "Usage: airgap" in proc.stdout
    assert list(home.iterdir()) == []


def test_each_command_is_registered_by_the_module_the_map_names() -> None:
    """``COMMAND_MODULES`` (a process for one command loads only that module) is exactly what the
    modules register, and ``MODULES`` is every command module."""
    from airgap.cli import app, run

    found: dict[str, str] = {}
    for info in app.registered_commands:
        assert info.callback is not None
        found[info.name or info.callback.__name__] = info.callback.__module__
    for group in app.registered_groups:
        callbacks = [c.callback for c in group.typer_instance.registered_commands if c.callback]
        assert group.name is not None and callbacks
        found[group.name] = callbacks[0].__module__
    assert {k: f"airgap.cli.{v}" for k, v in run.COMMAND_MODULES.items()} == found
    assert set(run.COMMAND_MODULES.values()) <= set(run.MODULES)
    assert {p.stem for p in Path(run.__file__).parent.glob("*.py")} - set(run.MODULES) == {
        "__init__", "common", "helpcache", "live", "rendering", "run", "units", "wiring",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["verify", "b.tar"], "verify"),
        (["--json", "-v", "keys", "list"], "keys"),
        (["--help", "verify"], None),
        (["--version"], None),
        (["verfy", "b.tar"], None),
        ([], None),
        (["--", "verify"], None),
    ],
)
def test_only_a_command_named_after_root_flags_loads_alone(args: list[str], named: str | None) -> None:
    from airgap.cli import run

    assert run.command_named(args) == named
