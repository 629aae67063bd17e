"""``--json``: every command prints exactly one JSON document on stdout, whatever the outcome.

A pipeline reads stdout with one ``json.loads``. Each command is run here, through the real command
line, in a way that fails before it needs an engine, and its whole stdout must be one document
that carries the exit code; a command that has a result to report with its failure (``check``
with open findings) puts that result in the same document.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from airgap.errors import Interrupted
from tests.conftest import run_airgap
from tests.test_tty import COMMANDS

PASSPHRASE_ENV = {"AIRGAP_KEY_PASSPHRASE": "correct horse battery staple"}


def one_failure_document(proc: Any, code: int) -> dict[str, Any]:
    """The whole of stdout is one JSON document in the documented failure shape, with ``code``."""
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    doc = json.loads(proc.stdout)  # raises on a second document ("Extra data")
    assert isinstance(doc, dict), doc
    assert doc["ok"] is False and doc["exit_code"] == code, doc
    assert isinstance(doc["kind"], str) and doc["kind"], doc
    assert isinstance(doc["error"], str) and doc["error"] and "\n" not in doc["error"], doc
    return doc


def failing_runs(tmp: Path) -> dict[str, tuple[list[str], int]]:
    """One failing command line per command, and the exit code it must carry (``tmp`` exists)."""
    state = str(tmp / "state")
    missing = str(tmp / "missing")
    (tmp / "not-a-dir").write_text("a file where a directory must be\n")
    broken_state = tmp / "broken-state"
    (broken_state / "installed.json").mkdir(parents=True)  # a directory: unreadable as the state file
    bad_trust = tmp / "bad-trust"
    (bad_trust / "trust").mkdir(parents=True)
    (bad_trust / "trust" / ("0" * 64 + ".pem")).write_text("not a key\n")
    return {
        "probe": (["probe", "--export-script", str(tmp / "not-a-dir" / "probe.py")], 5),
        "profile": (["profile", missing + ".json"], 4),
        "bundle": (["bundle", missing], 4),
        "pack": (["pack", missing, "--key", missing + ".key"], 4),
        "check": (["check", missing + ".airgap.tar", "--state-dir", state], 4),
        "keys generate": (["keys", "generate", "-o", str(tmp / "not-a-dir" / "k")], 5),
        "keys trust": (["keys", "trust", missing + ".pub", "--state-dir", state], 4),
        "keys list": (["keys", "list", "--state-dir", str(bad_trust)], 4),
        "keys remove": (["keys", "remove", "abc", "--state-dir", state], 2),
        "verify": (["verify", missing + ".airgap.tar", "--state-dir", state], 4),
        "inspect": (["inspect", missing + ".airgap.tar"], 4),
        "join": (["join", missing + ".parts.sha256", "--state-dir", state], 4),
        "split": (["split", missing + ".airgap.tar", "--part-size", "2M", "--key", missing + ".key"], 4),
        "install": (["install", missing + ".airgap.tar", "--to", "docker", "--state-dir", state], 4),
        "rebuild": (
            [
                "rebuild",
                missing + ".airgap.tar",
                "--base",
                "x:1",
                "--key",
                missing + ".key",
                "--state-dir",
                state,
            ],
            4,
        ),
        "smoke": (["smoke", "nothing", "--to", "docker", "--state-dir", state], 4),
        "accept": (["accept", "nothing", "--to", "docker", "--state-dir", state], 4),
        "serve": (["serve", "nothing", "--state-dir", state], 4),
        "copy": (["copy", missing + ".airgap.tar", str(tmp / "medium"), "--state-dir", state], 4),
        "compare": (["compare", "nothing", "--to", "docker", "--state-dir", state], 4),
        "promote": (["promote", "nothing", "--to", "venv", "--state-dir", state], 4),
        "status": (["status", "--state-dir", str(broken_state)], 5),
        "rollback": (["rollback", "nothing", "--to", "docker", "--state-dir", state], 2),
        "uninstall": (["uninstall", "nothing", "--to", "docker", "--state-dir", state], 4),
        "evidence export": (
            ["evidence", "export", "--out", str(tmp / "not-a-dir" / "e.json"), "--state-dir", state],
            5,
        ),
        "evidence verify": (["evidence", "verify", missing + ".json", "--key", missing + ".pub"], 4),
        "inventory": (["inventory", "--out", str(tmp / "not-a-dir" / "inv.json"), "--state-dir", state], 5),
    }


def test_every_command_is_covered(tmp_path: Path) -> None:
    """A new command needs a failing run here, so that its --json failure is proven too."""
    assert set(failing_runs(tmp_path)) == COMMANDS


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_failing_command_prints_exactly_one_json_document_with_its_exit_code(
    command: str, tmp_path: Path
) -> None:
    args, code = failing_runs(tmp_path)[command]
    proc = run_airgap("--json", *args, env=PASSPHRASE_ENV)
    doc = one_failure_document(proc, code)
    assert set(doc) == {"ok", "exit_code", "kind", "error"}, doc
    # The same line is on stderr for a person reading the log.
    assert doc["error"] in " ".join(proc.stderr.split()), proc.stderr


def test_a_usage_error_under_json_is_one_document_with_exit_code_2(tmp_path: Path) -> None:
    proc = run_airgap("--json", "probe", "--budget", "0")
    doc = one_failure_document(proc, 2)
    assert doc["kind"] == "usage" and "--budget" in doc["error"]


def test_an_unknown_command_under_json_is_one_document_with_exit_code_2() -> None:
    doc = one_failure_document(run_airgap("--json", "no-such-command"), 2)
    assert doc["kind"] == "usage" and "no-such-command" in doc["error"]


PRIVILEGED = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: demo}
spec:
  selector: {matchLabels: {app: demo}}
  template:
    metadata: {labels: {app: demo}}
    spec:
      containers:
        - {name: demo, image: "demo:1.0.0", securityContext: {privileged: true}}
"""


def test_check_with_open_findings_reports_them_and_the_failure_in_one_document(tmp_path: Path) -> None:
    """The findings and the exit code travel together: no results document followed by an error one."""
    staging = tmp_path / "demo-1.0.0"
    (staging / "manifests").mkdir(parents=True)
    (staging / "build.json").write_text(json.dumps({"name": "demo", "version": "1.0.0"}))
    (staging / "manifests" / "20-deployment.yaml").write_text(PRIVILEGED)
    proc = run_airgap("--json", "check", str(staging), "-o", str(tmp_path / "out"))
    doc = one_failure_document(proc, 1)
    assert doc["kind"] == "failed" and "open finding(s) at or above high" in doc["error"]
    # The results.json fields, in the same document.
    assert doc["failed"] is True and "AG-PSS-PRIVILEGE-ESCALATION" in doc["blocking"], doc
    reports = (
        "results.json",
        "checklist.md",
        "checklist.cklb",
        "oscal-component-definition.json",
        "oscal-assessment-results.json",
        "oscal-summary.md",
    )
    assert doc["written"] == [str(tmp_path / "out" / n) for n in reports]


def test_evidence_export_with_a_bundle_that_is_not_there_fails_in_one_document(tmp_path: Path) -> None:
    """--bundle is verified before anything is written: a missing one is one failure document."""
    out = tmp_path / "e.json"
    proc = run_airgap(
        "--json",
        "evidence",
        "export",
        "--out",
        str(out),
        "--bundle",
        str(tmp_path / "missing.airgap.tar"),
        "--state-dir",
        str(tmp_path / "state"),
    )
    doc = one_failure_document(proc, 4)
    assert "missing.airgap.tar" in doc["error"], doc
    assert list(tmp_path.glob("e.*")) == []


def test_a_successful_command_prints_exactly_one_json_document(tmp_path: Path) -> None:
    proc = run_airgap("--json", "keys", "list", "--state-dir", str(tmp_path / "state"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


@pytest.mark.parametrize(
    ("raised", "code", "kind"),
    [(RuntimeError("an unexpected state"), 70, "internal error"), (Interrupted(15), 143, "interrupted")],
)
def test_a_bug_or_a_signal_under_json_is_one_document_too(
    raised: BaseException, code: int, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Outcomes that do not come from an AirgapError still end in the one failure document."""
    from airgap import cli
    from airgap.services.media import verify as verify_service

    def stop(*_: object, **__: object) -> None:
        raise raised

    monkeypatch.setattr(verify_service, "verify_and_audit", stop)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        returned = cli.main(["--json", "verify", str(tmp_path / "b.tar"), "--state-dir", str(tmp_path)])
    finally:  # after a signal, main ignores further ones: give pytest its handlers back
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    out = capsys.readouterr().out
    doc = json.loads(out)
    assert (returned, doc["exit_code"], doc["kind"], doc["ok"]) == (code, code, kind, False), doc
