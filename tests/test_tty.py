"""Every command, run in a real pseudo-terminal at 80 and 200 columns, as a field engineer runs it.

The rest of the suite pipes the CLI; here stdout and stderr are a terminal, so rich draws live
progress, colour and tables sized to the window. Each test asserts the exit code, what the
screen shows (escape sequences stripped), that colour and live progress appear with
TERM=xterm-256color, and that NO_COLOR removes every colour code. `bundle` and `install` run end
to end: the example is bundled, signed and installed to the real Docker Engine in a terminal.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
from pathlib import Path
from typing import Any

import pexpect
import pytest
import typer.main

from airgap.cli import app
from tests.bundles import pass_policy, synthetic_staging
from tests.conftest import EPOCH, PASSPHRASE, ROOT, run_airgap
from tests.tty import Screen, run_tty, strip_ansi

WIDTHS = (80, 200)
ENV = {"AIRGAP_KEY_PASSPHRASE": PASSPHRASE, "SOURCE_DATE_EPOCH": EPOCH}
TYPER_INTERNALS = re.compile(r"<bool>|<path>|<str>|<int>|<float|<list\[|\{[A-Z_]+\}")

# The whole command tree, written out: a new command must be added here, and to a TTY test.
COMMANDS = {
    "probe",
    "profile",
    "bundle",
    "pack",
    "check",
    "keys generate",
    "keys trust",
    "keys list",
    "keys remove",
    "verify",
    "inspect",
    "join",
    "split",
    "copy",
    "inventory",
    "evidence export",
    "evidence verify",
    "install",
    "rebuild",
    "smoke",
    "accept",
    "serve",
    "compare",
    "promote",
    "status",
    "rollback",
    "uninstall",
}


def command_tree() -> set[str]:
    root = typer.main.get_command(app)
    found = set()
    for name, cmd in root.commands.items():  # type: ignore[attr-defined]
        subs = getattr(cmd, "commands", None)
        if subs:
            found |= {f"{name} {sub}" for sub in subs}
        else:
            found.add(name)
    return found


def ok(screen: Screen, *expected: str) -> str:
    """Exit 0, no traceback, and every expected phrase on screen; returns the screen's text."""
    text = screen.text
    assert screen.exit_code == 0, text[-3000:]
    assert "Traceback" not in text
    for phrase in expected:
        assert phrase in text, (phrase, text[-3000:])
    return text


def assert_fits(screen: Screen) -> None:
    """Tables and help panels are drawn for the window: none of their lines is wider than it.

    (Plain sentences such as a long path are soft-wrapped by the terminal itself.)
    """
    drawn = [ln for ln in screen.text.splitlines() if any(c in ln for c in "│┃┌└╭╰─━")]
    assert drawn and max(len(ln) for ln in drawn) <= screen.columns, screen.text


# ------------------------------------------------------------------------------------- help
def test_the_command_list_here_is_the_cli_command_tree() -> None:
    assert command_tree() == COMMANDS


@pytest.mark.parametrize("columns", WIDTHS)
def test_help_of_every_command_is_plain_and_teaches_by_example(columns: int) -> None:
    top = run_tty("--help", columns=columns)
    ok(top, "Usage: airgap [OPTIONS] COMMAND", "bundle", "install")
    assert not TYPER_INTERNALS.search(top.text), top.text
    assert_fits(top)
    for command in sorted(COMMANDS):
        screen = run_tty(*command.split(), "--help", columns=columns)
        text = ok(screen, f"Usage: airgap {command}", "Example")
        assert not TYPER_INTERNALS.search(text), (command, TYPER_INTERNALS.search(text))
        assert "Exit codes:" in " ".join(text.split()), command
        assert_fits(screen)


def test_keys_generate_help_states_the_passphrase_minimum() -> None:
    text = ok(run_tty("keys", "generate", "--help", columns=80))
    assert "at least 12 characters" in " ".join(text.replace("│", " ").split())


def test_help_in_colour_with_term_and_without_under_no_color() -> None:
    assert run_tty("bundle", "--help", columns=200).coloured
    plain = run_tty("bundle", "--help", columns=200, no_color=True)
    ok(plain, "PROJECT")
    assert not plain.coloured, repr(plain.raw[:400])


# ------------------------------------------------------------------------------------- probe
@pytest.fixture(scope="module")
def profile_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tty-probe") / "site.json"
    screen = run_tty("probe", "-o", str(out), "--egress-check", "none", columns=80)
    ok(screen, "target profile", "wrote")
    assert screen.coloured
    assert_fits(screen)
    assert json.loads(out.read_text())["host"]
    return out


def test_probe_in_a_terminal_writes_the_profile_and_draws_a_table(profile_file: Path) -> None:
    assert profile_file.is_file()


def test_probe_under_no_color_has_no_colour(tmp_path: Path) -> None:
    screen = run_tty("probe", "-o", str(tmp_path / "p.json"), "--egress-check", "none", no_color=True)
    ok(screen, "wrote")
    assert not screen.coloured, repr(screen.raw[:400])


@pytest.mark.parametrize("columns", WIDTHS)
def test_profile_in_a_terminal_shows_the_interpreters(profile_file: Path, columns: int) -> None:
    screen = run_tty("profile", str(profile_file), columns=columns)
    ok(screen, "python", "read")
    assert_fits(screen)


# ------------------------------------------------------------------------------------- keys
def test_keys_generate_asks_for_the_passphrase_twice_in_a_terminal(tmp_path: Path) -> None:
    def answer(child: pexpect.spawn) -> None:
        child.expect("key passphrase")
        child.sendline(PASSPHRASE)
        child.expect("(?i)repeat")
        child.sendline(PASSPHRASE)

    screen = run_tty("keys", "generate", "-o", str(tmp_path / "k"), interact=answer)
    ok(screen, "key id", "k.key")
    assert PASSPHRASE not in screen.text  # hidden input: the terminal never echoes it
    assert (tmp_path / "k.key").stat().st_mode & 0o077 == 0


def test_keys_generate_refuses_a_short_passphrase_in_one_line(tmp_path: Path) -> None:
    def answer(child: pexpect.spawn) -> None:
        child.expect("key passphrase")
        child.sendline("short")
        child.expect("(?i)repeat")
        child.sendline("short")

    screen = run_tty("keys", "generate", "-o", str(tmp_path / "k"), interact=answer)
    assert screen.exit_code == 2
    assert "at least 12 characters" in screen.text
    assert not (tmp_path / "k.key").exists()


@pytest.fixture(scope="module")
def publisher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    prefix = tmp_path_factory.mktemp("tty-keys") / "publisher"
    ok(run_tty("keys", "generate", "-o", str(prefix), env=ENV), "key id")
    return prefix


def test_keys_trust_list_remove_in_a_terminal(publisher: Path, tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    trusted = ok(
        run_tty("keys", "trust", str(publisher.with_suffix(".pub")), "--state-dir", state), "trusted key"
    )
    kid = re.search(r"trusted key ([0-9a-f]{64})", trusted)
    assert kid is not None
    ok(run_tty("keys", "list", "--state-dir", state, columns=200), kid.group(1))
    ok(run_tty("keys", "remove", kid.group(1)[:12], "--state-dir", state), f"removed key {kid.group(1)}")
    ok(run_tty("keys", "list", "--state-dir", state), "no trusted keys")


# ------------------------------------------------------------------------ pack, verify, inspect, join
@pytest.fixture(scope="module")
def staging(tmp_path_factory: pytest.TempPathFactory) -> Path:
    st = synthetic_staging(tmp_path_factory.mktemp("tty-staging"))
    (st / "build.json").write_text(
        json.dumps({"name": "demo", "version": "1.0.0", "source_date_epoch": int(EPOCH)})
    )
    pass_policy(st)
    return st


@pytest.fixture(scope="module")
def packed(staging: Path, publisher: Path) -> Path:
    """The synthetic staging directory signed and split into 2 MB parts, in a terminal."""
    out = staging.parent / "out"
    screen = run_tty(
        "pack",
        str(staging),
        "--key",
        str(publisher.with_suffix(".key")),
        "-o",
        str(out),
        "--part-size",
        "2M",
        env=ENV,
        columns=200,
    )
    ok(screen, "bundle:", ".parts.sha256")
    assert screen.live_progress and screen.coloured
    assert re.search(r"✓ (hash|pack) done in \d+\.\ds \([\d.]+ [kM]B, [\d.]+ [kMG]B/s\)", screen.text), (
        screen.text
    )
    index = next(out.glob("*.parts.sha256"))
    return index


def test_pack_in_a_terminal_shows_bytes_and_speed(packed: Path) -> None:
    assert len(list(packed.parent.glob("*.part-*"))) >= 2


@pytest.mark.parametrize("columns", WIDTHS)
def test_verify_in_a_terminal(packed: Path, publisher: Path, tmp_path: Path, columns: int) -> None:
    screen = run_tty(
        "verify",
        str(packed),
        "--key",
        str(publisher.with_suffix(".pub")),
        "--state-dir",
        str(tmp_path),
        columns=columns,
    )
    ok(screen, "verified", "demo 1.0.0")
    assert screen.coloured and screen.live_progress
    assert re.search(r"✓ verify done in", screen.text)


def test_evidence_export_and_verify_in_a_terminal(packed: Path, publisher: Path, tmp_path: Path) -> None:
    """An accepted verify leaves its attestation; export carries it, verify lists it as a table."""
    state = str(tmp_path / "state")
    ok(run_tty("verify", str(packed), "--key", str(publisher.with_suffix(".pub")), "--state-dir", state))
    out = tmp_path / "evidence.json"
    ok(run_tty("evidence", "export", "--out", str(out), "--state-dir", state), "wrote", "1 attestations")
    screen = run_tty(
        "evidence",
        "verify",
        str(out),
        "--key",
        str(publisher.with_suffix(".pub")),
        "--allow-unsigned",
        columns=80,
    )
    ok(screen, "1 attestations in", "verify", "UNSIGNED")
    assert_fits(screen)
    refused = run_tty("evidence", "verify", str(out), "--key", str(publisher.with_suffix(".pub")), columns=80)
    assert refused.exit_code == 3 and "Traceback" not in refused.text, refused.text


def test_evidence_export_refuses_a_bundle_without_oscal_results_in_a_terminal(
    packed: Path, publisher: Path, tmp_path: Path
) -> None:
    """--bundle verifies the bundle, then needs the OSCAL results of its check: one line if absent."""
    out = tmp_path / "evidence.json"
    screen = run_tty(
        "evidence",
        "export",
        "--out",
        str(out),
        "--bundle",
        str(packed),
        "--key",
        str(publisher.with_suffix(".pub")),
        "--state-dir",
        str(tmp_path / "state"),
        columns=80,
    )
    assert screen.exit_code == 4 and "Traceback" not in screen.text, screen.text
    assert "carries no OSCAL assessment results" in " ".join(screen.text.split()), screen.text
    assert not out.exists()


def test_inventory_in_a_terminal(tmp_path: Path) -> None:
    out = tmp_path / "inventory.json"
    screen = run_tty("inventory", "--out", str(out), "--state-dir", str(tmp_path / "state"), columns=80)
    ok(screen, "inventory:", "blobs", "in the content store")
    assert json.loads(out.read_text())["format"] == "airgap.inventory/v1"


def test_verify_of_a_damaged_part_exits_3_with_one_line_in_a_terminal(
    packed: Path, publisher: Path, tmp_path: Path
) -> None:
    media = tmp_path / "media"
    shutil.copytree(packed.parent, media)
    part = sorted(media.glob("*.part-*"))[1]
    data = bytearray(part.read_bytes())
    data[100] ^= 1
    part.write_bytes(bytes(data))
    screen = run_tty(
        "verify",
        str(media / packed.name),
        "--key",
        str(publisher.with_suffix(".pub")),
        "--state-dir",
        str(tmp_path),
    )
    assert screen.exit_code == 3, screen.text
    assert "airgap: integrity:" in screen.text and "Traceback" not in screen.text
    assert re.search(r"✗ verify failed after", screen.text)


@pytest.mark.parametrize("columns", WIDTHS)
def test_inspect_in_a_terminal_shows_a_table(packed: Path, columns: int) -> None:
    screen = run_tty("inspect", str(packed), columns=columns)
    ok(screen, "demo 1.0.0", "unverified")
    assert "{" not in screen.text  # tables, not JSON
    assert_fits(screen)


def test_join_in_a_terminal(packed: Path, publisher: Path, tmp_path: Path) -> None:
    dest = tmp_path / "joined.airgap.tar"
    screen = run_tty(
        "join",
        str(packed),
        "-o",
        str(dest),
        "--key",
        str(publisher.with_suffix(".pub")),
        "--state-dir",
        str(tmp_path),
    )
    ok(screen, "joined", "airgap verify")
    assert dest.stat().st_size == sum(p.stat().st_size for p in packed.parent.glob("*.part-*"))


def test_split_in_a_terminal(packed: Path, publisher: Path, tmp_path: Path) -> None:
    out = tmp_path / "dvd"
    screen = run_tty(
        "split",
        str(packed),
        "--part-size",
        "3M",
        "--parity",
        "1",
        "--key",
        str(publisher.with_suffix(".key")),
        "--out",
        str(out),
        env=ENV,
        columns=120,
    )
    ok(screen, "parity part(s)", "unchanged")
    assert b"".join(p.read_bytes() for p in sorted(out.glob("*.part-*"))) == b"".join(
        p.read_bytes() for p in sorted(packed.parent.glob("*.part-*"))
    )


def test_copy_in_a_terminal_shows_bytes_and_keeps_intact_parts_the_second_time(
    packed: Path, publisher: Path, tmp_path: Path
) -> None:
    medium = tmp_path / "usb"
    args = ("copy", str(packed), str(medium), "--key", str(publisher.with_suffix(".pub")))
    first = run_tty(*args, "--state-dir", str(tmp_path / "s"), columns=120)
    ok(first, "written and read back")
    assert first.live_progress and re.search(r"[\d.]+ [kM]B", first.text), first.text
    parts = sorted(p.name for p in packed.parent.glob("*.part-*"))
    assert sorted(p.name for p in medium.glob("*.part-*")) == parts
    again = run_tty(*args, "--state-dir", str(tmp_path / "s"), columns=120)
    ok(again, f"{len(parts)} already there and intact")


# ------------------------------------------------------------------- bundle and install, end to end
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def tty_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example under its own name, so that its container and image tag are this module's."""
    dest = tmp_path_factory.mktemp("tty-project") / "tabular"
    shutil.copytree(ROOT / "examples" / "tabular", dest, ignore=shutil.ignore_patterns("build"))
    yaml = dest / "airgap.yaml"
    yaml.write_text(yaml.read_text().replace("name: tabular-classifier", "name: tty-classifier"))
    return dest


@pytest.fixture(scope="module")
def tty_bundle(tty_project: Path, cache: Path, publisher: Path, docker_client: Any):  # type: ignore[no-untyped-def]
    """`airgap bundle PROJECT/airgap.yaml --key K` in a 200-column terminal, end to end."""
    screen = run_tty(
        "bundle",
        str(tty_project / "airgap.yaml"),
        "--cache-dir",
        str(cache),
        "--key",
        str(publisher.with_suffix(".key")),
        env=ENV,
        columns=200,
        timeout=1200,
    )
    text = ok(screen, "bundle tty-classifier 1.0.0", "signed by key")
    bundle_file = re.search(r"bundle: (\S+\.airgap\.tar)", text)
    assert bundle_file is not None, text
    yield {
        "screen": screen,
        "bundle": Path(bundle_file.group(1)),
        "staging": tty_project / "build" / "tty-classifier-1.0.0",
    }
    for version in ("1.0.0", "1.1.0"):  # the images this module built
        with contextlib.suppress(Exception):
            docker_client.images.remove(f"airgap/tty-classifier:{version}")


@pytest.mark.docker
def test_bundle_end_to_end_in_a_terminal_shows_every_phase_live(tty_bundle: dict[str, Any]) -> None:
    screen: Screen = tty_bundle["screen"]
    assert screen.coloured and screen.live_progress
    for phase in (
        "project",
        "base image",
        "image wheelhouse",
        "model image",
        "model contract",
        "save image",
        "oci image",
        "manifests",
        "sbom",
        "compliance",
        "hash",
        "pack",
    ):
        assert re.search(rf"✓ {phase} done in \d+\.\ds", screen.text), (phase, screen.text[-4000:])
    # bytes with units and speed where the work is bytes
    assert re.search(r"✓ docker save done in [\d.]+s \([\d.]+ MB, [\d.]+ MB/s\)", screen.text), screen.text
    assert tty_bundle["bundle"].is_file()
    assert not list((tty_bundle["staging"].parent).glob(".*partial-*"))


@pytest.mark.docker
@pytest.mark.parametrize("columns", WIDTHS)
def test_inspect_renders_the_signed_checklist_as_a_table(tty_bundle: dict[str, Any], columns: int) -> None:
    screen = run_tty("inspect", str(tty_bundle["bundle"]), columns=columns)
    text = ok(screen, "tty-classifier 1.0.0", "PASS at --fail-on high", "not a finding", "medium")
    assert '{"' not in text and "summary" not in text
    assert re.search(r"not a finding\s+\d+\s+\d+\s+\d+\s+\d+", text), text
    assert_fits(screen)


@pytest.mark.docker
def test_check_in_a_terminal_under_no_color(tty_bundle: dict[str, Any], tmp_path: Path) -> None:
    screen = run_tty(
        "check", str(tty_bundle["staging"]), "-o", str(tmp_path / "c"), no_color=True, columns=200
    )
    ok(screen, "PASS at --fail-on high", "checklist.cklb")
    assert not screen.coloured


@pytest.fixture(scope="module")
def far_side(tty_bundle: dict[str, Any], publisher: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    state = tmp_path_factory.mktemp("tty-state")
    ok(run_tty("keys", "trust", str(publisher.with_suffix(".pub")), "--state-dir", str(state)))
    yield {"state": state, "port": _free_port()}
    rows = json.loads(run_airgap("--json", "status", "--state-dir", str(state)).stdout or "[]")
    for row in rows:
        run_airgap("uninstall", row["name"], "--to", row["target"], "--state-dir", str(state))


@pytest.mark.docker
def test_install_end_to_end_in_a_terminal(tty_bundle: dict[str, Any], far_side: dict[str, Any]) -> None:
    screen = run_tty(
        "install",
        str(tty_bundle["bundle"]),
        "--to",
        "docker",
        "--port",
        str(far_side["port"]),
        "--state-dir",
        str(far_side["state"]),
        columns=80,
        timeout=900,
    )
    ok(screen, "installed", "tty-classifier 1.0.0", "smoke test passed")
    assert screen.coloured and screen.live_progress
    assert re.search(r"✓ verify done in [\d.]+s \([\d.]+ MB, [\d.]+ [MG]B/s\)", screen.text), screen.text


@pytest.mark.docker
def test_smoke_in_a_terminal(far_side: dict[str, Any]) -> None:
    ok(
        run_tty("smoke", "tty-classifier", "--to", "docker", "--state-dir", str(far_side["state"])),
        "answers its golden inputs",
    )


@pytest.mark.docker
def test_accept_in_a_terminal_shows_the_load_live_and_a_table_that_fits(far_side: dict[str, Any]) -> None:
    screen = run_tty(
        "accept", "tty-classifier", "--to", "docker", "--state-dir", str(far_side["state"]), columns=80
    )
    text = ok(screen, "tty-classifier 1.0.0 on docker", "kept", "report:")
    assert "MISSED" not in text
    assert screen.coloured and screen.live_progress
    assert re.search(r"✓ load test done in [\d.]+s", text), text
    assert_fits(screen)


@pytest.mark.docker
@pytest.mark.parametrize("columns", WIDTHS)
def test_status_in_a_terminal_never_cuts_the_name(far_side: dict[str, Any], columns: int) -> None:
    screen = run_tty("status", "--state-dir", str(far_side["state"]), columns=columns)
    text = ok(screen, "tty-classifier", "docker")
    assert re.search(rf":{far_side['port']}", text.replace("\n", "")), text
    assert_fits(screen)


@pytest.mark.docker
def test_rollback_in_a_terminal(
    tty_project: Path, cache: Path, publisher: Path, far_side: dict[str, Any], tmp_path: Path
) -> None:
    v2 = tmp_path / "v2"
    shutil.copytree(tty_project, v2, ignore=shutil.ignore_patterns("build"))
    (v2 / "airgap.yaml").write_text(
        (v2 / "airgap.yaml").read_text().replace('version: "1.0.0"', 'version: "1.1.0"')
    )
    built = run_airgap(
        "--json",
        "bundle",
        str(v2),
        "--cache-dir",
        str(cache),
        "--key",
        str(publisher.with_suffix(".key")),
        env=ENV,
        timeout=900,
    )
    assert built.returncode == 0, built.stderr
    bundle_v2 = json.loads(built.stdout)["bundle"][0]
    up = run_airgap(
        "install",
        bundle_v2,
        "--to",
        "docker",
        "--port",
        str(far_side["port"]),
        "--state-dir",
        str(far_side["state"]),
        timeout=900,
    )
    assert up.returncode == 0, up.stderr
    screen = run_tty(
        "rollback", "tty-classifier", "--to", "docker", "--state-dir", str(far_side["state"]), timeout=900
    )
    ok(screen, "rolled back", "1.0.0", "smoke test passed")


@pytest.mark.docker
def test_compare_and_promote_in_a_terminal(tty_bundle: dict[str, Any], far_side: dict[str, Any]) -> None:
    state = str(far_side["state"])
    beside = run_tty(
        "install",
        str(tty_bundle["bundle"]),
        "--to",
        "docker",
        "--candidate",
        "--allow-downgrade",  # 1.1.0 was installed (and rolled back) before
        "--port",
        str(_free_port()),
        "--state-dir",
        state,
        columns=200,
        timeout=900,
    )
    ok(beside, "installed the candidate", "beside the current version")
    assert beside.coloured and beside.live_progress
    screen = run_tty(
        "compare", "tty-classifier", "--to", "docker", "--state-dir", state, columns=80, timeout=300
    )
    text = ok(screen, "candidate 1.0.0 against current", "agreement", "meets", "thresholds from")
    assert "MISSES" not in text and "differs:" not in text
    assert screen.coloured
    assert_fits(screen)
    # The candidate is the bundle that runs already: promote refuses in one line (the promote of
    # another version is proven in tests/test_promote.py).
    promoted = run_tty("promote", "tty-classifier", "--to", "docker", "--state-dir", state, timeout=300)
    assert promoted.exit_code == 4 and "Traceback" not in promoted.text, promoted.text
    assert "is the bundle that runs already" in " ".join(promoted.text.split()), promoted.text
    assert screen.coloured


@pytest.mark.docker
def test_uninstall_in_a_terminal(far_side: dict[str, Any]) -> None:
    ok(
        run_tty("uninstall", "tty-classifier", "--to", "docker", "--state-dir", str(far_side["state"])),
        "removed tty-classifier",
    )
    ok(run_tty("status", "--state-dir", str(far_side["state"])), "nothing is installed")


# ------------------------------------------------------------------------- the observer itself
def test_tasks_with_and_without_a_total_render_in_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    """The crash a terminal met: a task without a total. Both kinds draw, and leave a ✓ line."""
    import io

    from rich.console import Console

    from airgap.cli.rendering import ConsoleObserver
    from airgap.services.observer import BYTES

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100, color_system="256")
    with ConsoleObserver(console) as obs:
        obs.begin("docker build")  # indeterminate
        obs.advance("docker build", 0, "Step 3/9 : COPY wheels/ /tmp/airgap/wheels/")
        obs.begin("docker save", 3_000_000, BYTES)
        obs.advance("docker save", 1_500_000)
        obs.progress.refresh()  # type: ignore[union-attr]
        obs.advance("docker save", 1_500_000)
        obs.end("docker save")
        obs.begin("download host wheels", 4, "wheels")
        obs.advance("download host wheels", 4)
        obs.end("download host wheels")
        obs.end("docker build")
    text = Screen(screen.getvalue(), 0, 100).text
    drawn = strip_ansi(screen.getvalue())  # every frame, including the ones redrawn since
    assert "Step 3/9" in drawn and "1.5/3.0 MB" in drawn and "0/4 wheels" in drawn
    assert re.search(r"✓ docker save done in \d+\.\ds \(3\.0 MB, [\d.]+ [kMG]B/s\)", text), text
    assert "✓ download host wheels done in" in text and "(4/4 wheels)" in text
    assert "✓ docker build done in" in text


def test_outside_a_terminal_each_task_is_one_line_as_it_starts_and_ends(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import io

    from rich.console import Console

    from airgap.cli.rendering import ConsoleObserver
    from airgap.services.observer import BYTES

    with ConsoleObserver(Console(file=io.StringIO(), force_terminal=False)) as obs:
        obs.begin("save image")
        obs.begin("docker save", 2_000_000, BYTES)
        obs.advance("docker save", 2_000_000)
        obs.end("docker save")
        obs.end("save image")
        obs.begin("compliance")
        with contextlib.suppress(ValueError):
            try:
                raise ValueError("policy file broken")
            finally:
                obs.end("compliance")
    lines = capsys.readouterr().err.splitlines()
    assert [re.sub(r"^\[\s*[\d.]+s\] ", "", ln) for ln in lines] == [
        "save image ...",
        "  docker save (2.0 MB) ...",
        lines[2].split("] ", 1)[1],
        lines[3].split("] ", 1)[1],
        "compliance ...",
        lines[5].split("] ", 1)[1],
    ]
    assert re.search(r"  docker save: done in \d+\.\ds \(2\.0 MB, [\d.]+ [kMG]B/s\)$", lines[2])
    assert re.search(r"save image: done in \d+\.\ds$", lines[3])
    assert re.search(r"compliance: failed after \d+\.\ds$", lines[5])
