"""What an install reports, and to whom: the result the CLI shows, and the witness that attests it.

Shared by the installer (services/deploy/install.py) and candidates (services/deploy/candidate.py).
The witness is a port: the far side's evidence (services/evidence/attestations.py) implements it
and the CLI passes it in, so that deploying never depends on how evidence is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from airgap.core.smoke import Mismatch
from airgap.services.deploy.receipts import Receipt
from airgap.services.media.verify import VerifiedBundle


@dataclass(frozen=True)
class InstallResult:
    """What an install (or rollback) did, for the CLI to report."""

    receipt: Receipt
    nothing_to_do: bool
    recovered: tuple[str, ...]
    smoke: tuple[Mismatch, ...] = ()
    prediction: dict[str, Any] | None = None
    curl: str | None = None  # a shell command that sends the first golden input: paste it to try
    serve: str | None = None  # --to venv: the shell command that serves the model on the port
    repaired: tuple[str, ...] = ()  # parts rebuilt from parity while verifying ("NAME (missing)")


def repaired(verified: VerifiedBundle) -> tuple[str, ...]:
    """The parts parity rebuilt while verifying, as the result names them: ``NAME (missing)``."""
    return tuple(f"{r.part} ({r.was})" for r in verified.handle.repaired)


class Witness(Protocol):
    """Attests each smoke test the far side ran: after an install (committed or undone) and after
    a promote. Optional: an installer without one attests nothing."""

    def installed(
        self,
        receipt: Receipt,
        verified: VerifiedBundle,
        contract: dict[str, Any] | None,
        mismatches: Sequence[Mismatch],
    ) -> None:
        """An install ran its smoke test: committed when ``mismatches`` is empty, undone otherwise."""
        ...

    def smoked(self, receipt: Receipt, contract: dict[str, Any], mismatches: Sequence[Mismatch]) -> None:
        """The golden inputs were sent to an installed model again (``airgap smoke``, a promote)."""
        ...
