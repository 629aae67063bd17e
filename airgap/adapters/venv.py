"""Virtualenvs on the far side: created offline from the bundle's host wheelhouse, and the model
run inside one. Every subprocess goes through :func:`run`, which turns a failure into one line."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from airgap.errors import EnvironmentFailure


def run(argv: list[str], what: str, timeout: float = 1800) -> None:
    """Runs ``argv``; a non-zero exit becomes an EnvironmentFailure quoting its last line of output."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise EnvironmentFailure(f"{what} failed: {argv[0]} does not exist") from None
    except subprocess.TimeoutExpired:
        raise EnvironmentFailure(f"{what} did not finish within {timeout:.0f}s") from None
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
        raise EnvironmentFailure(f"{what} failed: {lines[-1][:300]}")


def create_offline(python: str, venv: Path, wheels: Path, lock: Path) -> Path:
    """A virtualenv with exactly the hash-locked wheels, installed without an index; returns its python.

    ``pip check`` afterwards: a wheelhouse that installs but does not fit together is refused here,
    not found out when the model first runs.
    """
    run([python, "-m", "venv", str(venv)], "creating the virtualenv")
    venv_python = venv / "bin" / "python"
    run(
        [
            str(venv_python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--require-hashes",
            "--no-cache-dir",
            "--find-links",
            str(wheels),
            "-r",
            str(lock),
        ],
        "installing the host wheelhouse offline",
    )
    run([str(venv_python), "-m", "pip", "check"], "checking the virtualenv")
    return venv_python


def model_answers(python: Path, server: Path, model: Path, golden: Path) -> dict[str, dict[str, Any]]:
    """The model's outputs for every golden case, computed by the bundled server's ``check`` command
    in the virtualenv (no server, no port): what ``--to venv`` smoke-tests."""
    try:
        proc = subprocess.run(
            [str(python), str(server), "check", "--model", str(model), "--golden", str(golden)],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "ORT_DISABLE_TELEMETRY": "1"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvironmentFailure(f"the model does not run in the virtualenv: {exc}") from None
    if proc.returncode != 0:
        raise EnvironmentFailure(f"the model does not run in the virtualenv: {proc.stderr.strip()[-300:]}")
    doc = json.loads(proc.stdout)
    return {str(c["name"]): dict(c["outputs"]) for c in doc.get("cases", [])}


@contextlib.contextmanager
def serving(python: Path, server: Path, env: dict[str, str], timeout: float = 120) -> Iterator[int]:
    """The model server run by ``python`` on a free loopback port (its "listening" log line says
    which), until the context closes; then stopped with SIGTERM, as an operator would."""
    import tempfile
    import time

    with tempfile.TemporaryFile() as log:
        full = {**os.environ, **env, "AIRGAP_HOST": "127.0.0.1", "AIRGAP_PORT": "0"}
        try:
            proc = subprocess.Popen(
                [str(python), str(server), "serve"], stdout=subprocess.DEVNULL, stderr=log, env=full
            )
        except OSError as exc:
            raise EnvironmentFailure(f"cannot start the model server with {python}: {exc}") from None
        try:
            port = None
            deadline = time.monotonic() + timeout
            while port is None:
                log.seek(0)
                for line in log.read().decode("utf-8", "replace").splitlines():
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(record, dict) and record.get("event") == "listening":
                        port = int(record["port"])
                if port is None:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        tail = log.read().decode("utf-8", "replace").strip().splitlines()[-1:] or [
                            "no output"
                        ]
                        raise EnvironmentFailure(f"the model server did not start: {tail[0][:300]}")
                    time.sleep(0.1)
            yield port
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
