"""``python -m tests.faultrun STEP ARG...``: the airgap command line, killed with SIGKILL right
after it journals STEP — a pulled plug at a known point, for the crash-recovery tests.

The hook is installed here, in the test's process, through the journal's plugin point
(``airgap.services.deploy.receipts.STEP_HOOKS``); airgap itself reads no fault-injection setting.
"""

from __future__ import annotations

import os
import signal
import sys

from airgap.cli import main
from airgap.services.deploy.receipts import STEP_HOOKS


def kill_at(step: str) -> None:
    """Adds a hook that kills this process as soon as ``step`` has been journalled."""

    def hook(reached: str) -> None:
        if reached == step:
            os.kill(os.getpid(), signal.SIGKILL)

    STEP_HOOKS.append(hook)


if __name__ == "__main__":
    kill_at(sys.argv[1])
    raise SystemExit(main(sys.argv[2:]))
