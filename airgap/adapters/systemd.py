"""The host's service manager: systemd's ``systemctl``, for the system or the user's instance."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from airgap.errors import EnvironmentFailure


class Systemctl:
    """``systemctl`` for root's system units (``/etc/systemd/system``) or, for another user, the
    user's own (``~/.config/systemd/user``, ``systemctl --user``)."""

    def __init__(self, user: bool | None = None) -> None:
        self.user = os.geteuid() != 0 if user is None else user

    def unit_directory(self) -> Path:
        """Where a unit file is installed."""
        if self.user:
            config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
            return Path(config) / "systemd" / "user"
        return Path("/etc/systemd/system")

    def enable(self, unit: str) -> None:
        """Reloads the units, then enables and starts ``unit``."""
        exe = shutil.which("systemctl")
        if exe is None:
            raise EnvironmentFailure(
                "systemctl is not on this host: the unit cannot be enabled here",
                hint="the unit is in STATE/systemd/; install it by hand, or run `airgap serve NAME`",
            )
        scope = ["--user"] if self.user else []
        for args in (["daemon-reload"], ["enable", "--now", unit]):
            try:
                proc = subprocess.run([exe, *scope, *args], capture_output=True, text=True, timeout=120)
            except (OSError, subprocess.SubprocessError) as exc:
                raise EnvironmentFailure(f"systemctl {' '.join(args)} failed: {exc}") from None
            if proc.returncode != 0:
                said = " ".join((proc.stderr or proc.stdout).split())[-300:]
                raise EnvironmentFailure(
                    f"systemctl {' '.join([*scope, *args])} failed: {said}",
                    hint="see `journalctl -xe`; the unit file itself is in STATE/systemd/",
                )
