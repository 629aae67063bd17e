"""What a verification is asked: the keys to trust, what is installed, the loud overrides.

Apart from the verifier (``opening``) so that a command can say what it asks, and fail on a
bundle that is not there at all (``locating``), before the verifier and its archive, format and
parity readers are loaded.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airgap.core.signing import TrustedKey


@dataclass(frozen=True)
class VerifyOptions:
    """What the far side trusts and has installed, and which loud overrides the user chose."""

    trusted: tuple[TrustedKey, ...]
    allow_downgrade: bool = False
    allow_expired: bool = False
    installed_versions: dict[str, str] = field(default_factory=dict)
    installed_manifests: dict[str, dict[str, str]] = field(default_factory=dict)  # name: {sha: version}
    keep: Callable[[str, int], bool] = field(default=lambda path, size: False)  # members to hand back
    keep_limit: int = 32 << 20
    now: dt.datetime | None = None
    read_timeout: float | None = 120.0  # seconds one read of the media may take before exit 5
    blob_store: Path | None = None  # the far side's shared blob store, for blobs a bundle leaves out


class UnsafeOptionWarning(UserWarning):
    """Raised as a warning when a check is switched off (--allow-downgrade, --allow-expired)."""
