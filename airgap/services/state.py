"""The far side's state directory: trust store, audit log, installed versions.

One directory (``--state-dir``; default ``/var/lib/airgap`` for root, ``~/.local/share/airgap``
otherwise) so that a site can back it up, audit it and reason about it as a unit.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import socket
from pathlib import Path
from typing import Any

from airgap.adapters.keys import TrustStore
from airgap.errors import EnvironmentFailure

_MISSING = object()  # installed.json does not exist yet: nothing was installed here


def default_state_dir() -> Path:
    """``AIRGAP_STATE_DIR``, else the system path for root or the per-user XDG data path."""
    if os.environ.get("AIRGAP_STATE_DIR"):
        return Path(os.environ["AIRGAP_STATE_DIR"])
    if os.getuid() == 0:
        return Path("/var/lib/airgap")
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "airgap"


class State:
    """One state directory, so trust, audit and install records are always read from the same place."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def trust(self) -> TrustStore:
        """The keys this site trusts to sign bundles."""
        return TrustStore(self.directory / "trust")

    @property
    def blob_store(self) -> Path:
        """The content store's shared blobs, each named by its SHA-256 (re-hashed before any use)."""
        return self.directory / "content" / "oci" / "blobs" / "sha256"

    @property
    def audit_log(self) -> Path:
        """The append-only JSON-lines log of every verify, install, rollback, uninstall and trust change."""
        return self.directory / "audit.log"

    def audit(self, record: dict[str, Any]) -> None:
        """Appends one JSON line; O_APPEND writes of one line are atomic, and the log only grows."""
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid())
        entry = {
            "when": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "who": {"user": user, "uid": os.getuid(), "host": socket.gethostname()},
            **record,
        }
        line = (json.dumps(entry, sort_keys=True) + "\n").encode()
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.audit_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise EnvironmentFailure(
                f"cannot append to the audit log {self.audit_log}: {exc.strerror}",
                hint="choose a writable --state-dir",
            ) from None

    def _installed_names(self, path: Path) -> Any:
        """The ``names`` object of installed.json as stored (unchecked), or ``_MISSING`` if none yet."""
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return _MISSING
        except (OSError, ValueError) as exc:
            raise EnvironmentFailure(f"the state file {path} is unreadable: {exc}") from None
        return data.get("names") if isinstance(data, dict) else None

    def installed_versions(self) -> dict[str, str]:
        """The newest version ever installed under each name: what rollback protection compares to."""
        path = self.directory / "installed.json"
        names = self._installed_names(path)
        if names is _MISSING:
            return {}
        if not isinstance(names, dict):
            raise EnvironmentFailure(
                f"the state file {path} is not airgap's (no names object)",
                hint="restore it from a backup of the state directory",
            )
        return {k: str(v.get("highest_version")) for k, v in names.items() if isinstance(v, dict)}

    def installed_manifests(self) -> dict[str, dict[str, str]]:
        """Every manifest hash installed under each name, with its version: a bundle with the same
        version as one of these but other content is not the same bundle."""
        path = self.directory / "installed.json"
        names = self._installed_names(path)
        if names is _MISSING:
            return {}
        out: dict[str, dict[str, str]] = {}
        for name, entry in (names if isinstance(names, dict) else {}).items():
            if not isinstance(entry, dict):
                continue
            known = out.setdefault(name, {})
            recorded = entry.get("manifests")
            if isinstance(recorded, dict):
                known.update({str(k): str(v) for k, v in recorded.items()})
            targets = entry.get("targets")
            for slot in targets.values() if isinstance(targets, dict) else []:
                for receipt in (
                    (slot.get(k) for k in ("current", "previous")) if isinstance(slot, dict) else []
                ):
                    if isinstance(receipt, dict) and "manifest_sha256" in receipt:
                        known[str(receipt["manifest_sha256"])] = str(receipt.get("version"))
        return out
