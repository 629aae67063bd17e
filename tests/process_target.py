"""An install target that lives in tests: the bundled model server run as a plain process on
127.0.0.1:PORT, with the Python running the tests (which has onnxruntime).

It is written as a module of ``airgap.services.deploy.targets`` would be — one file, one ``TARGET`` — and
``tests/test_target_plugin.py`` drops it into that package's search path to show that a new
``--to`` needs that one file and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from typing import Any

from airgap.services.deploy.receipts import Receipt
from airgap.services.deploy.smoketest import wait_ready
from airgap.services.deploy.targets import BaseTarget, InstallContext, Site
from airgap.services.media.extraction import model_file


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # A child that exited but was not reaped yet is a zombie: not alive for our purposes.
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as fh:
        return fh.read().split(")")[-1].split()[0] != "Z"
    return True


def _stop(pid: object) -> None:
    if isinstance(pid, int) and _alive(pid):
        os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)


class ProcessTarget(BaseTarget):
    """The model server as a child process of whoever installed it (a test, here)."""

    name = "process"
    rank = 90
    host_port = True

    def deploy(self, ctx: InstallContext) -> None:
        r, content = ctx.receipt, ctx.content
        port = r.port or 8080
        env = {
            **os.environ,
            "AIRGAP_MODEL_PATH": str(content / model_file(ctx.record)),
            "AIRGAP_GOLDEN_PATH": str(content / "model" / "golden.json"),
            "AIRGAP_MODEL_NAME": r.name,
            "AIRGAP_MODEL_VERSION": r.version,
            "AIRGAP_HOST": "127.0.0.1",
            "AIRGAP_PORT": str(port),
        }
        if ctx.current:
            _stop(ctx.current.extra.get("pid"))
        ctx.journal.step("stopped-old")
        server = content / "server" / "airgap_server.py"
        proc = subprocess.Popen(
            [sys.executable, str(server), "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        r.extra = {"pid": proc.pid}
        ctx.journal.step("started", pid=proc.pid)
        wait_ready(port, lambda: proc.poll() is None, what="the model server process")

    def healthy(self, site: Site, receipt: Receipt) -> bool:
        return _alive(int(receipt.extra.get("pid", 0))) and super().healthy(site, receipt)

    def undo(self, site: Site, journal: dict[str, Any]) -> str:
        _stop(journal.get("pid"))
        return super().undo(site, journal)

    def remove(self, site: Site, receipt: Receipt) -> list[str]:
        pid = receipt.extra.get("pid")
        _stop(pid)
        return [f"process {pid}"]


TARGET = ProcessTarget()
