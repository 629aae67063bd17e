"""Talking to an installed model server: waiting for it to be ready, sending the golden inputs,
and what to show the engineer afterwards (a curl line to paste, what the model answered)."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from typing import Any

from airgap.adapters.http import KeepAlive, request_json
from airgap.errors import EnvironmentFailure

READY_TIMEOUT = 180.0
LOG_LINES = 20  # of a model server that failed before it was ready, quoted in the error
Answers = tuple[dict[str, dict[str, Any]], dict[str, str]]  # outputs by case; why a case has none


def log_tail(text: str, lines: int = LOG_LINES) -> str:
    """The last lines of a model server's log on one line: each JSON record as its event and message
    (the timestamp dropped), repeats of one line counted rather than repeated."""
    shown: list[str] = []
    for raw in text.strip().splitlines()[-lines:]:
        line = raw.strip()
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and "event" in record:
            rest = {k: v for k, v in record.items() if k not in ("ts", "event", "message", "traceback")}
            line = str(record["event"])
            if record.get("message"):
                line += f": {record['message']}"
            elif rest:
                line += " " + " ".join(f"{k}={v}" for k, v in rest.items())
        if not line:
            continue
        if shown and shown[-1].split(" (x")[0] == line:
            count = int(shown[-1].rsplit(" (x", 1)[1][:-1]) if " (x" in shown[-1] else 1
            shown[-1] = f"{line} (x{count + 1})"
        else:
            shown.append(line)
    return " | ".join(shown)


def wait_ready(
    port: int,
    alive: Callable[[], bool],
    timeout: float = READY_TIMEOUT,
    logs: Callable[[], str] | None = None,
    what: str = "the model server",
) -> None:
    """Polls /readyz; when the server dies or never gets ready, the error quotes its last log lines
    (they are gone once the failed container is removed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if request_json(port, "/readyz", timeout=2)[0] == 200:
                return
        except (OSError, ValueError):
            pass
        if not alive():
            raise EnvironmentFailure(
                f"{what} stopped before it was ready on port {port}{_with_logs(logs)}",
                hint="fix what the log says, then install again",
            )
        time.sleep(0.5)
    raise EnvironmentFailure(f"{what} on port {port} was not ready within {timeout:.0f}s{_with_logs(logs)}")


def _with_logs(logs: Callable[[], str] | None) -> str:
    if logs is None:
        return ""
    try:
        tail = log_tail(logs())
    except (EnvironmentFailure, OSError):
        tail = ""
    return f"; its last log lines: {tail}" if tail else "; it wrote no log lines"


def instance_on(port: int) -> str | None:
    """The instance id a ready server on ``port`` reports in /readyz, on a new connection; None when
    nothing ready answers, or the server is of a version that reports none (and so does not share
    its port: it binds without SO_REUSEPORT)."""
    try:
        status, body = request_json(port, "/readyz", timeout=3)
    except (OSError, ValueError):
        return None
    instance = body.get("instance") if status == 200 and isinstance(body, dict) else None
    return instance if isinstance(instance, str) and instance else None


def pin_new_instance(
    port: int,
    other_than: set[str],
    alive: Callable[[], bool],
    timeout: float = READY_TIMEOUT,
    logs: Callable[[], str] | None = None,
    what: str = "the model server",
) -> KeepAlive:
    """A keep-alive connection to a ready server on ``port`` that is none of ``other_than``: while
    two servers share the port, the kernel spreads new connections over both, so each try is a new
    connection until one reaches the new server, and every request after it stays on that one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = KeepAlive(port, timeout=30)
        try:
            status, body = conn.request_json("/readyz")
        except (OSError, ValueError):
            status, body = 0, None
        instance = body.get("instance") if status == 200 and isinstance(body, dict) else None
        if isinstance(instance, str) and instance and instance not in other_than:
            return conn
        conn.close()
        if not alive():
            raise EnvironmentFailure(
                f"{what} stopped before it was ready on port {port}{_with_logs(logs)}",
                hint="fix what the log says, then promote again",
            )
        time.sleep(0.1)
    raise EnvironmentFailure(f"{what} on port {port} was not ready within {timeout:.0f}s{_with_logs(logs)}")


def answers_on(port: int, contract: dict[str, Any], ready_timeout: float = 30) -> Answers:
    """Waits for the server on loopback ``port`` to be ready, then asks it every golden case."""
    wait_ready(port, lambda: True, timeout=ready_timeout)
    return http_answers(port, contract)


def http_answers(port: int, contract: dict[str, Any]) -> Answers:
    """The server's outputs for every golden case; and, for a case it refused, why."""
    return answers_via(lambda path, body: request_json(port, path, body, timeout=30), contract)


def answers_via(ask: Callable[[str, Any], tuple[int, Any]], contract: dict[str, Any]) -> Answers:
    """The outputs for every golden case, asked through ``ask(path, body)`` (one connection, or a
    new one each time); and, for a case the server refused, why."""
    answers: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    for case in contract.get("cases", []):
        name = str(case["name"])
        try:
            status, body = ask("/v1/predict", {"inputs": case["inputs"]})
        except (OSError, ValueError) as exc:
            failures[name] = f"no answer from the model server: {exc}"
            continue
        if status == 200 and isinstance(body, dict) and isinstance(body.get("outputs"), dict):
            answers[name] = dict(body["outputs"])
        else:
            error = body.get("error") if isinstance(body, dict) else None
            said = f": {error.get('code')}: {error.get('message')}" if isinstance(error, dict) else ""
            failures[name] = f"the model server answered HTTP {status}{said}"
    return answers, failures


def healthz(port: int) -> bool:
    """Whether the server on loopback ``port`` says it is alive (any failure to ask is a no)."""
    try:
        return request_json(port, "/healthz", timeout=3)[0] == 200
    except (OSError, ValueError):
        return False


def curl_line(port: int, contract: dict[str, Any]) -> str | None:
    """A curl command, ready to paste into a POSIX shell, that sends the first golden input."""
    cases = contract.get("cases") or []
    if not cases:
        return None
    body = json.dumps({"inputs": cases[0]["inputs"]}, separators=(",", ":"))
    return (
        f"curl -sS -X POST http://127.0.0.1:{port}/v1/predict "
        f"-H 'Content-Type: application/json' -d {shlex.quote(body)}"
    )


def prediction(contract: dict[str, Any], answers: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The first golden case and what the installed model answered to it in the smoke test."""
    cases = contract.get("cases") or []
    if not cases:
        return None
    return {"inputs": cases[0]["inputs"], "outputs": answers.get(str(cases[0]["name"]))}
