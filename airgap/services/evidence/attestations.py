"""Far-side attestations: what `verify`, `install` and `smoke` checked here, and what came out.

Each accepted verification, each install (passed or failed at its smoke test) and each smoke test
appends one file to ``STATE/attestations/``: an in-toto Statement v1 in a DSSE envelope whose
subject is the bundle (its manifest's SHA-256) and whose predicate is an in-toto test result —
the checks made, which passed and which failed, with the golden-case numbers — signed by the
site key when one is configured (``AIRGAP_SITE_KEY``), and otherwise stored with no signature,
which is how an unsigned one is marked. ``airgap evidence export`` gathers them into one file to
carry back, signed as a whole, and ``airgap evidence verify`` checks it with the site's public key
(``export.py``).

Writing an attestation never changes the outcome of the command it records: a failure to write
one is reported (a warning line, a field of the JSON document) and appended to the audit log,
and the command keeps its exit code. The site key itself is loaded before the command starts, so
a site key that cannot be used stops the command before it does anything.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import getpass
import hashlib
import os
import socket
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airgap import __version__
from airgap.adapters.fs import atomic_write_bytes, read_bytes
from airgap.core import attestation as at
from airgap.errors import AirgapError, EnvironmentFailure
from airgap.services.attest import sign_envelope
from airgap.services.state import State

if TYPE_CHECKING:  # types only: `verify` must not pay for numpy (core.smoke) to write its record
    from airgap.core.smoke import Mismatch
    from airgap.ports import Signer
    from airgap.services.deploy.receipts import Receipt
    from airgap.services.media.opening import VerifiedBundle

SUFFIX = ".intoto.json"

if TYPE_CHECKING:
    from airgap.services.deploy.accept import AcceptReport


def attestations_dir(state: State) -> Path:
    """``STATE/attestations``: one envelope per file, named so that sorting them is their order."""
    return state.directory / "attestations"


def now() -> str:
    """The time an attestation or an export records, in UTC to the second."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def who() -> dict[str, Any]:
    """Who ran the command: user (or uid), uid and host, as the audit log records them."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return {"user": user, "uid": os.getuid(), "host": socket.gethostname()}


def _golden(
    contract: dict[str, Any] | None, mismatches: Sequence[Mismatch]
) -> tuple[list[str], list[str], dict[str, Any]]:
    """(passed, failed, numbers) of the golden cases: a case passes when none of its outputs differs."""
    cases = [str(c.get("name")) for c in (contract or {}).get("cases", []) if isinstance(c, dict)]
    bad = {m.case for m in mismatches}
    passed = [f"golden case {c!r}" for c in cases if c not in bad]
    failed = [m.line() for m in mismatches]
    numbers = {
        "cases": len(cases),
        "passed": len(cases) - len(bad & set(cases)),
        "failed": len(bad & set(cases)),
        "mismatches": len(mismatches),
        "tolerance": (contract or {}).get("tolerance") or {},
    }
    return passed, failed, numbers


class Evidence:
    """The attestations of one far-side command. ``written`` and ``problems`` say what happened,
    for the command to report: a problem is never an exception, so the command's own outcome
    stands."""

    def __init__(self, state: State, signer: Signer | None) -> None:
        self.state = state
        self.signer = signer
        self.written: list[Path] = []
        self.problems: list[str] = []

    # -- the three far-side checks -------------------------------------------------------------
    def verified(self, bundle: Path, verified: VerifiedBundle) -> None:
        """`airgap verify` accepted ``bundle``: what it proved, and any UNSAFE override it took."""
        m = verified.manifest
        passed = [
            f"manifest signature by trusted key {verified.key_id}",
            f"that key trusted here for the name {m.name}",
            "the archive byte-exact to the signed manifest: nothing unlisted, nothing after the end",
            f"every file's size and SHA-256 ({len(m.files)} files, {m.total_size} bytes)",
            "not expired",
            "not older than what is installed here",
        ]
        warned = list(verified.warnings)
        self._write(
            "verify",
            m.name,
            m.version,
            verified.manifest_sha256,
            passed,
            warned,
            [],
            {"bundle": str(bundle), "publisher_key_id": verified.key_id, "files": len(m.files)},
        )

    def installed(
        self,
        receipt: Receipt,
        verified: VerifiedBundle,
        contract: dict[str, Any] | None,
        mismatches: Sequence[Mismatch],
    ) -> None:
        """An install ran its smoke test: committed when ``mismatches`` is empty, undone otherwise."""
        passed, failed, numbers = _golden(contract, mismatches)
        passed = [
            f"manifest signature by trusted key {verified.key_id}",
            f"that key trusted here for the name {verified.manifest.name}",
            "every file's SHA-256",
            *passed,
        ]
        self._write(
            "install",
            receipt.name,
            receipt.version,
            receipt.manifest_sha256,
            passed,
            list(verified.warnings),
            failed,
            {
                "bundle": receipt.bundle,
                "target": receipt.target,
                "publisher_key_id": verified.key_id,
                "outcome": "installed" if not failed else "smoke test failed; the previous version restored",
                "golden": numbers,
            },
        )

    def smoked(self, receipt: Receipt, contract: dict[str, Any], mismatches: Sequence[Mismatch]) -> None:
        """`airgap smoke` sent the golden inputs to an installed model again."""
        passed, failed, numbers = _golden(contract, mismatches)
        self._write(
            "smoke",
            receipt.name,
            receipt.version,
            receipt.manifest_sha256,
            passed,
            [],
            failed,
            {"target": receipt.target, "golden": numbers},
        )

    def accepted(self, report: AcceptReport) -> None:
        """`airgap accept` measured the deployment contract: every promise, kept or missed, with its
        numbers, so the record carried back shows what was proven here and what was not."""
        passed = [
            f"{p.section}: {p.what}: promised {p.promised}, measured {p.measured}"
            for p in report.promises
            if p.ok
        ]
        failed = [
            f"{p.section}: {p.what}: promised {p.promised}, measured {p.measured}"
            for p in report.promises
            if p.missed
        ]
        # Not judged (the load generator fell behind): neither passed nor failed.
        unjudged = [
            f"{p.section}: {p.what}: promised {p.promised}, measured {p.measured} (inconclusive)"
            for p in report.promises
            if p.inconclusive
        ]
        self._write(
            "accept",
            report.name,
            report.version,
            report.manifest_sha256,
            passed,
            unjudged,
            failed,
            {"target": report.target, "figures": report.figures, "report": str(report.report)},
        )

    # -- writing ---------------------------------------------------------------------------------
    def _write(
        self,
        action: str,
        name: str,
        version: str,
        manifest_sha256: str,
        passed: list[str],
        warned: list[str],
        failed: list[str],
        details: dict[str, Any],
    ) -> None:
        when = dt.datetime.now(dt.timezone.utc)
        ours: dict[str, Any] = {
            "action": action,
            "when": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "who": who(),
            "bundle_name": name,
            "bundle_version": version,
            "manifest_sha256": manifest_sha256,
            "site_key_id": self.signer.key_id if self.signer else None,
            **details,
        }
        predicate = {
            "result": "FAILED" if failed else ("WARNED" if warned else "PASSED"),
            "configuration": [
                {"name": f"airgap {__version__}", "annotations": {"command": f"airgap {action}"}}
            ],
            "passedTests": passed,
            "warnedTests": warned,
            "failedTests": failed,
            "airgap": ours,
        }
        subject = at.Subject(f"{name}-{version}.airgap.tar:bundle/manifest.json", manifest_sha256)
        directory = attestations_dir(self.state)
        path = (
            directory / f"{when.strftime('%Y%m%dT%H%M%S%fZ')}-{action}-{name}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        )
        try:
            try:
                directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as exc:
                raise EnvironmentFailure(f"cannot create {directory}: {exc.strerror}") from None
            if self.signer is not None:
                self._keep_site_key(directory)
            with _chain_lock(directory):
                # Each record names its place and the hash of the one before it (signed with it),
                # so that a record removed from this directory leaves a gap the export shows.
                sequence, previous = _last_link(directory)
                ours.update({"sequence": sequence, "previous_sha256": previous})
                envelope = sign_envelope(at.statement([subject], at.TEST_RESULT, predicate), self.signer)
                atomic_write_bytes(path, envelope.to_bytes(), mode=0o600)
            self.written.append(path)
        except (AirgapError, OSError, ValueError) as exc:
            reason = exc.one_line() if isinstance(exc, AirgapError) else str(exc)
            problem = f"the {action} attestation of {name} {version} was not written: {reason}"
            try:
                self.state.audit(
                    {
                        "action": f"attest {action}",
                        "name": name,
                        "version": version,
                        "result": "not written",
                        "reason": reason,
                    }
                )
            except AirgapError as audit_exc:
                problem += f" (nor its audit record: {audit_exc.message})"
            self.problems.append(problem)

    def _keep_site_key(self, directory: Path) -> None:
        """The site's public key beside what it signed, once, for `evidence export` to carry."""
        pem = self.signer.public_pem() if self.signer else None
        if pem is None or self.signer is None:
            return
        path = directory / f"site-{self.signer.key_id}.pub"
        if not path.exists():
            atomic_write_bytes(path, pem)


CHAIN_LOCK = ".chain.lock"


@contextlib.contextmanager
def _chain_lock(directory: Path) -> Iterator[None]:
    """One writer at a time appends to the chain of records (two far-side commands at once must
    not both take the same place)."""
    fd = os.open(directory / CHAIN_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _last_link(directory: Path) -> tuple[int, str | None]:
    """The place of the next record and the SHA-256 of the last one written (None for the first).

    The last record is the last by name (names start with the time, and writers take turns under
    the lock). One that cannot be read as a chained record starts the chain again at 1, after it.
    """
    records = sorted(directory.glob(f"*{SUFFIX}"))
    if not records:
        return 1, None
    raw = read_bytes(records[-1], "attestation", at.MAX_ENVELOPE)
    previous = hashlib.sha256(raw).hexdigest()
    try:
        extra = at.parse_envelope(raw, str(records[-1]), require_signature=False).statement()["predicate"]
        sequence = extra.get("airgap", {}).get("sequence")
    except (AirgapError, AttributeError):
        sequence = None
    return (sequence + 1 if isinstance(sequence, int) and sequence > 0 else 1), previous
