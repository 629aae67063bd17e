"""Terminal escapes: a name the far side did not choose never reaches a terminal or a log raw.

Every name airgap prints — a path on the media, a part named by an unsigned parts index, a record
file of an evidence export, a FIFO on the media, the subject of a signed attestation, a bundle
file's name — may carry ESC (an OSC that retitles the window, a CSI that clears the screen), CR
(overwrite the line just printed), BEL, C1 controls and bidi overrides (``evil`` shown reversed).
Each must be shown escaped (``\\x1b``, ``\\u202e``), in a pipe and in a pseudo-terminal, and
``--json`` must stay one valid document that carries the raw value, escaped by JSON itself.

The sweep runs every command of the CLI with such a name where it takes one; the scenarios after
it put the name where an attacker would: inside a parts index, an evidence export, the media.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer.main

from airgap.cli import app
from airgap.cli.rendering import printable
from airgap.core import attestation as at
from airgap.services.attest import sign_envelope
from tests.bundles import PASS, make_key, pack_demo
from tests.conftest import PASSPHRASE, message_lines, run_airgap
from tests.tty import Screen, run_tty

# OSC 0 (set the window title) ended by BEL, CSI 2J (clear the screen), CR, then right-to-left
# override, left-to-right isolate, left-to-right mark, NEL (C1) and DEL.
HOSTILE = "x\x1b]0;pwned\x07\x1b[2J\r\u202eevil\u2066\u200e\x85\x7fz"
# A name that a parts index can carry (its lines end at CR and NEL, as sha256sum's do not).
HOSTILE_LINE = "x\x1b]0;pwned\x07\x1b[2J\u202eevil\u2066\u200e\x7fz"
RAW = ("\x1b]0;pwned", "\x1b[2J", "\x07", "\u202e", "\u2066", "\u200e", "\x85", "\x7f")
SHOWN = "\\x1b]0;pwned\\x07\\x1b[2J"  # what the terminal shows instead
ENV = {"AIRGAP_KEY_PASSPHRASE": PASSPHRASE}


def assert_piped_safe(proc: subprocess.CompletedProcess[str], *, shown: bool = True) -> None:
    """No control character of the name in stdout or stderr, no traceback, and the name shown."""
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text, text
    for raw in (*RAW, "\x1b", "\r"):
        assert raw not in text, (raw, text)
    if shown:
        assert "\\x1b" in text, text  # a table may wrap the rest of SHOWN over lines


def assert_tty_safe(screen: Screen, *, shown: bool = True) -> None:
    """In a terminal rich writes its own escape sequences (colour, cursor); the name's must not be
    among them, and the name must be on the screen in its escaped form."""
    assert "Traceback" not in screen.text, screen.text
    for raw in RAW:
        assert raw not in screen.raw, (raw, screen.raw[-2000:])
    if shown:
        assert "\\x1b" in screen.text, screen.text


def assert_json_safe(proc: subprocess.CompletedProcess[str], raw_value: str) -> dict[str, Any]:
    """stdout is one JSON document, ASCII-escaped by JSON, which still carries the raw name (or,
    where the message quotes it as Python would, its repr)."""
    assert "\x1b" not in proc.stdout and "\u202e" not in proc.stdout, proc.stdout
    doc = json.loads(proc.stdout)
    assert any(raw_value in text or SHOWN in text for text in _strings(doc)), doc
    return doc  # type: ignore[no-any-return]


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


# ------------------------------------------------------------------------------ every command
def _commands(work: Path) -> dict[str, tuple[list[str], int]]:
    """Each command, run so that it prints a name the user did not type by accident — a path, a
    key prefix, an installation name, all HOSTILE — with the exit code it documents for that: most
    stop at a one-line error naming it (4 not found, 5 cannot write there, 2 a usage mistake)."""
    p = str(work / HOSTILE)
    state = str(work / "state")
    venv = ["--to", "venv", "--state-dir", state]
    return {
        "probe": (["probe", "--output", f"{p}/nodir/profile.json"], 5),
        "profile": (["profile", p], 4),
        "bundle": (["bundle", p], 4),
        "pack": (["pack", p, "--key", p], 4),
        "check": (["check", p], 4),
        "keys generate": (["keys", "generate", "-o", f"{p}/nodir/k"], 5),
        "keys trust": (["keys", "trust", p, "--state-dir", state], 4),
        "keys list": (["keys", "list", "--state-dir", p], 0),
        "keys remove": (["keys", "remove", HOSTILE, "--state-dir", state], 2),
        "verify": (["verify", p, "--state-dir", state], 4),
        "inspect": (["inspect", p], 4),
        "join": (["join", p, "-o", str(work / "joined.tar")], 4),
        "split": (["split", p, "--part-size", "2M", "--key", p], 4),
        "copy": (["copy", p, str(work / "medium")], 4),
        "inventory": (["inventory", "--state-dir", state, "--out", f"{p}/nodir/inventory.json"], 5),
        "evidence export": (["evidence", "export", "--state-dir", state, "--out", f"{p}/nodir/e.json"], 5),
        "evidence verify": (["evidence", "verify", p, "--key", p], 4),
        "install": (["install", p, *venv], 4),
        "rebuild": (["rebuild", p, "--base", "x", "--key", p, "--state-dir", state], 4),
        "smoke": (["smoke", HOSTILE, *venv], 4),
        "accept": (["accept", HOSTILE, *venv], 4),
        "serve": (["serve", HOSTILE, "--state-dir", state], 4),
        "compare": (["compare", HOSTILE, *venv], 4),
        "promote": (["promote", HOSTILE, *venv], 4),
        "status": (["status", "--state-dir", p], 0),  # installed names are signed DNS labels: none to show
        "rollback": (["rollback", HOSTILE, *venv], 2),
        "uninstall": (["uninstall", HOSTILE, *venv], 4),
    }


def _command_tree() -> set[str]:
    root = typer.main.get_command(app)
    found = set()
    for name, cmd in root.commands.items():  # type: ignore[attr-defined]
        subs = getattr(cmd, "commands", None)
        found |= {f"{name} {sub}" for sub in subs} if subs else {name}
    return found


def test_the_sweep_covers_every_command(tmp_path: Path) -> None:
    assert set(_commands(tmp_path)) == _command_tree()


@pytest.mark.parametrize("command", sorted(_commands(Path("/"))))
def test_terminal_escapes_in_a_name_are_shown_escaped_by_every_command_in_a_pipe(
    command: str, tmp_path: Path
) -> None:
    args, code = _commands(tmp_path)[command]
    proc = run_airgap(*args, env=ENV, timeout=120)
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert_piped_safe(proc, shown=command != "status")
    if code:
        assert len(message_lines(proc.stderr)) == 1, proc.stderr
    failed = run_airgap("--json", *args, env=ENV, timeout=120)
    if failed.returncode != 0:
        doc = assert_json_safe(failed, "x\x1b]0;pwned\x07\x1b[2J")
        assert doc["ok"] is False and doc["exit_code"] == code
    # Nothing was written anywhere but the state directory.
    assert {p.name for p in tmp_path.iterdir()} <= {"state"}


@pytest.mark.parametrize("command", sorted(_commands(Path("/"))))
def test_terminal_escapes_in_a_name_are_shown_escaped_by_every_command_in_a_terminal(
    command: str, tmp_path: Path
) -> None:
    args, code = _commands(tmp_path)[command]
    screen = run_tty(*args, env=ENV, timeout=120)
    assert screen.exit_code == code, screen.text
    assert_tty_safe(screen, shown=command != "status")


def test_printable_escapes_every_control_and_format_character_and_keeps_text() -> None:
    assert printable(HOSTILE) == "x\\x1b]0;pwned\\x07\\x1b[2J\\x0d\\u202eevil\\u2066\\u200e\\x85\\x7fz"
    assert printable("a\u2028b\u2029c\ufeffd\U000e0001e\u061cf") == (
        "a\\u2028b\\u2029c\\ufeffd\\U000e0001e\\u061cf"
    )
    for ch in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f":
        assert printable(ch) == f"\\u{ord(ch):04x}"
    assert printable("naïve 模型 [bold]\tx\ny") == "naïve 模型 [bold]\tx\ny"  # markup is the caller's
    assert printable("a\nb\tc", keep_newlines=False) == "a\\x0ab\\x09c"


# ------------------------------------------------------------------------------ hostile media
@pytest.fixture
def signed(tmp_path: Path) -> dict[str, Any]:
    """A signed demo bundle, its publisher trusted, and a site key for attestations."""
    publisher, pub, _ = make_key(tmp_path, "publisher")
    site, site_pub, _ = make_key(tmp_path, "site")
    result = pack_demo(tmp_path, publisher)
    state = tmp_path / "state"
    assert run_airgap("keys", "trust", str(pub), "--for", "demo", "--state-dir", str(state)).returncode == 0
    return {
        "bundle": result.files[0],
        "pub": pub,
        "state": state,
        "site": site,
        "site_pub": site_pub,
        "site_env": {
            "AIRGAP_SITE_KEY": f"file:{tmp_path / 'site.key'}",
            "AIRGAP_SITE_KEY_PASSPHRASE": PASS.decode(),
        },
    }


def test_terminal_escapes_in_part_names_of_an_unsigned_parts_index_are_shown_escaped(tmp_path: Path) -> None:
    index = tmp_path / "demo-1.0.0.parts.sha256"
    index.write_text(f"{'0' * 64}  {HOSTILE_LINE}.part001\n")
    proc = run_airgap("inspect", str(index))
    assert proc.returncode == 3  # a name a part cannot have: the index is malformed
    assert_piped_safe(proc, shown=False)
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\u202eevil" in proc.stderr, proc.stderr
    assert_json_safe(run_airgap("--json", "inspect", str(index)), HOSTILE_LINE)
    screen = run_tty("inspect", str(index))
    assert screen.exit_code == 3
    assert_tty_safe(screen, shown=False)
    assert "\\x1b]0;pwned" in screen.text


def test_terminal_escapes_in_a_fifo_name_on_the_media_are_shown_escaped(signed: dict[str, Any]) -> None:
    fifo = signed["bundle"].parent / f"{HOSTILE}.airgap.tar"
    os.mkfifo(fifo)
    args = ("verify", str(fifo), "--state-dir", str(signed["state"]))
    proc = run_airgap(*args, timeout=30)
    assert proc.returncode == 4
    assert_piped_safe(proc)
    assert_json_safe(run_airgap("--json", *args, timeout=30), "\x1b]0;pwned")
    screen = run_tty(*args, timeout=30)
    assert screen.exit_code == 4
    assert_tty_safe(screen)


def test_terminal_escapes_in_a_bundle_file_name_are_shown_escaped(
    signed: dict[str, Any], tmp_path: Path
) -> None:
    renamed = signed["bundle"].parent / f"{HOSTILE}.airgap.tar"
    signed["bundle"].rename(renamed)
    key = str(tmp_path / "publisher.key")

    def split(into: str, *json_flag: str) -> subprocess.CompletedProcess[str]:
        return run_airgap(
            *json_flag,
            "split",
            str(renamed),
            "--part-size",
            "2M",
            "--key",
            key,
            "-o",
            str(tmp_path / into),
            env=ENV,
        )

    proc = split("piped")
    assert proc.returncode == 0, proc.stderr
    assert_piped_safe(proc)
    doc = assert_json_safe(split("json", "--json"), f"{HOSTILE}.airgap.tar")
    assert doc["parts"] == 2, doc
    screen = run_tty(
        "split", str(renamed), "--part-size", "2M", "--key", key, "-o", str(tmp_path / "tty"), env=ENV
    )
    assert screen.exit_code == 0, screen.text
    assert_tty_safe(screen)


def test_terminal_escapes_in_evidence_export_file_names_are_shown_escaped(
    signed: dict[str, Any], tmp_path: Path
) -> None:
    verified = run_airgap(
        "--json", "verify", str(signed["bundle"]), "--state-dir", str(signed["state"]), env=signed["site_env"]
    )
    assert verified.returncode == 0, verified.stderr
    [written] = json.loads(verified.stdout)["attestations"]
    Path(written).rename(Path(written).with_name(f"{HOSTILE}.intoto.json"))
    out = tmp_path / "evidence.json"
    exported = run_airgap(
        "evidence", "export", "-o", str(out), "--state-dir", str(signed["state"]), env=signed["site_env"]
    )
    assert exported.returncode == 0, exported.stderr
    args = ("evidence", "verify", str(out), "--key", str(signed["site_pub"]))
    proc = run_airgap(*args)
    assert proc.returncode == 0, proc.stderr
    assert_piped_safe(proc)
    assert_json_safe(run_airgap("--json", *args), f"{HOSTILE}.intoto.json")
    screen = run_tty(*args, columns=200)
    assert screen.exit_code == 0, screen.text
    assert_tty_safe(screen)
    # The same name in the one line that says the record is missing.
    data = json.loads(out.read_text())
    data["attestations"] = []
    out.write_text(json.dumps(data))
    refused = run_airgap(*args)
    assert refused.returncode == 3
    assert_piped_safe(refused)


def test_terminal_escapes_in_signed_subject_fields_are_shown_escaped(
    signed: dict[str, Any], tmp_path: Path
) -> None:
    statement = at.statement(
        [at.Subject(f"{HOSTILE}.airgap.tar:bundle/manifest.json", "a" * 64)],
        at.TEST_RESULT,
        {"result": f"PASSED{HOSTILE}", "airgap": {"action": f"verify{HOSTILE}"}},
    )
    envelope = tmp_path / "signed.intoto.json"
    envelope.write_bytes(sign_envelope(statement, signed["site"]).to_bytes())
    args = ("evidence", "verify", str(envelope), "--key", str(signed["site_pub"]))
    proc = run_airgap(*args)
    assert proc.returncode == 0, proc.stderr
    assert_piped_safe(proc)
    doc = assert_json_safe(run_airgap("--json", *args), f"{HOSTILE}.airgap.tar")
    assert doc["attestations"][0]["action"] == f"verify{HOSTILE}"
    screen = run_tty(*args, columns=200)
    assert screen.exit_code == 0, screen.text
    assert_tty_safe(screen)


def test_terminal_escapes_in_progress_task_names_are_shown_escaped_in_a_log(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import io

    from rich.console import Console

    from airgap.cli.rendering import ConsoleObserver

    with ConsoleObserver(Console(file=io.StringIO(), force_terminal=False)) as obs:
        obs.begin(f"copy {HOSTILE}")
        obs.end(f"copy {HOSTILE}")
    err = capsys.readouterr().err
    for raw in (*RAW, "\x1b", "\r"):
        assert raw not in err, (raw, err)
    assert err.count(SHOWN) == 2, err


def test_every_console_airgap_prints_with_is_the_sanitising_one() -> None:
    """One place, not every call site: the two consoles are SafeConsole, no module makes another,
    and nothing but the JSON document (ASCII-escaped by ``json.dumps``), ``--version`` and a kept
    help screen (typer's own screen, read back only from a file of this user's that no one else
    may write: ``helpcache``) writes to stdout or stderr around them."""
    from airgap.cli import common
    from airgap.cli.rendering import SafeConsole

    assert isinstance(common.out_console, SafeConsole) and isinstance(common.err_console, SafeConsole)
    root = Path(common.__file__).resolve().parent.parent
    made, writes = [], []
    for path in root.rglob("*.py"):
        if path.name == "probe_script.py":  # the stand-alone collector: no rich, prints JSON only
            continue
        text = path.read_text()
        made += [path.name for line in text.splitlines() if "Console(" in line and "SafeConsole(" not in line]
        writes += [
            f"{path.name}: {line.strip()}"
            for line in text.splitlines()
            if (
                "sys.stdout.write(" in line
                or "sys.stderr.write(" in line
                or line.strip().startswith("print(")
            )
        ]
    assert made == [], made
    assert sorted(writes) == sorted(
        [
            'common.py: print(f"airgap {__version__}")',
            'common.py: sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True) + "\\n")',
            "helpcache.py: sys.stdout.write(text)",
            "rendering.py: sys.stderr.write(",
        ]
    ), writes


def test_rich_markup_in_a_name_with_controls_is_still_shown_as_written(tmp_path: Path) -> None:
    """The sanitiser and markup escaping compose: a name that is both markup and control
    characters is shown literally, neither styled nor hidden nor acted on."""
    name = "[conceal]a\x1b[bold]b\x07[/]\\[red]c"
    proc = run_airgap("profile", str(tmp_path / name))
    assert proc.returncode == 4
    assert "[conceal]a\\x1b[bold]b\\x07[/]\\[red]c" in proc.stderr, proc.stderr
    assert "\x1b" not in proc.stderr and "\x07" not in proc.stderr
