"""Far-side attestations: what `verify`, `install` and `smoke` checked here, and what came out.

Each accepted verification, each install (passed or failed at its smoke test) and each smoke test
appends one file to ``STATE/attestations/``: an in-toto Statement v1 in a DSSE envelope whose
subject is the bundle (its manifest's SHA-256) and whose predicate is an in-toto test result —
the checks made, which passed and which failed, with the golden-case numbers — signed by the
site key when one is configured (``AIRGAP_SITE_KEY``), and otherwise stored with no signature,
which is how an unsigned one is marked. ``airgap evidence export`` gathers them into one file to
carry back; ``airgap evidence verify`` checks it with the site's public key.

Writing an attestation never changes the outcome of the command it records: a failure to write
one is reported (a warning line, a field of the JSON document) and appended to the audit log,
and the command keeps its exit code. The site key itself is loaded before the command starts, so
a site key that cannot be used stops the command before it does anything.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airgap import __version__
from airgap.adapters import keys
from airgap.adapters.fs import atomic_write_bytes, read_bytes
from airgap.core import attestation as at
from airgap.core.bundle_format import canonical_json, strict_json
from airgap.errors import AirgapError, EnvironmentFailure, InvalidInputError, SignatureError
from airgap.ports import Signer
from airgap.services.attest import sign_envelope, verify_envelope
from airgap.services.state import State

if TYPE_CHECKING:  # types only: `verify` must not pay for numpy (core.smoke) to write its record
    from airgap.core.smoke import Mismatch
    from airgap.services.deploy.receipts import Receipt
    from airgap.services.media.opening import VerifiedBundle

EVIDENCE_FORMAT = "airgap.evidence/v1"
MAX_EVIDENCE = 256 << 20
SUFFIX = ".intoto.json"

if TYPE_CHECKING:
    from airgap.services.deploy.accept import AcceptReport


def attestations_dir(state: State) -> Path:
    """``STATE/attestations``: one envelope per file, named so that sorting them is their order."""
    return state.directory / "attestations"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _who() -> dict[str, Any]:
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
        passed = [f"manifest signature by trusted key {verified.key_id}", "every file's SHA-256", *passed]
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
        predicate = {
            "result": "FAILED" if failed else ("WARNED" if warned else "PASSED"),
            "configuration": [
                {"name": f"airgap {__version__}", "annotations": {"command": f"airgap {action}"}}
            ],
            "passedTests": passed,
            "warnedTests": warned,
            "failedTests": failed,
            "airgap": {
                "action": action,
                "when": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "who": _who(),
                "bundle_name": name,
                "bundle_version": version,
                "manifest_sha256": manifest_sha256,
                "site_key_id": self.signer.key_id if self.signer else None,
                **details,
            },
        }
        subject = at.Subject(f"{name}-{version}.airgap.tar:bundle/manifest.json", manifest_sha256)
        directory = attestations_dir(self.state)
        path = (
            directory / f"{when.strftime('%Y%m%dT%H%M%S%fZ')}-{action}-{name}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        )
        try:
            envelope = sign_envelope(at.statement([subject], at.TEST_RESULT, predicate), self.signer)
            try:
                directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as exc:
                raise EnvironmentFailure(f"cannot create {directory}: {exc.strerror}") from None
            if self.signer is not None:
                self._keep_site_key(directory)
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


# -- export and verify ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Exported:
    """What `airgap evidence export` wrote: how many attestations, how many unsigned, which keys."""

    path: Path
    count: int
    unsigned: int
    site_key_ids: tuple[str, ...]
    oscal: tuple[Path, ...] = ()  # the OSCAL assessment results and their summary, beside ``path``


def export(state: State, out: Path, bundle: Path | None = None, key: Path | None = None) -> Exported:
    """Gathers every attestation of the state directory, and the site public keys that signed
    them, into one JSON file, with the OSCAL assessment results of the far-side checks and their
    Markdown summary beside it — and, given a ``bundle``, the results of the ``airgap check`` it
    carries (verified first, against the trust store or ``key``). Each envelope is read back
    strictly first: a damaged file is named and nothing is written."""
    from airgap.services.evidence.oscal import bundle_check_results, write_far_side_oscal

    carried = bundle_check_results(bundle, state, key) if bundle is not None else []
    directory = attestations_dir(state)
    entries: list[dict[str, Any]] = []
    site_keys: list[dict[str, str]] = []
    statements: list[tuple[str, dict[str, Any], str | None]] = []
    unsigned = 0
    paths = sorted(directory.glob(f"*{SUFFIX}")) if directory.is_dir() else []
    for path in paths:
        envelope = at.parse_envelope(read_bytes(path, "attestation"), str(path), require_signature=False)
        unsigned += not envelope.signatures
        entries.append({"file": path.name, "envelope": envelope.to_json()})
        statement = envelope.statement()
        if statement.get("predicateType") == at.TEST_RESULT:
            signer = envelope.signatures[0].keyid if envelope.signatures else None
            statements.append((path.name, statement, signer))
    for path in sorted(directory.glob("site-*.pub")) if directory.is_dir() else []:
        public = keys.load_public(read_bytes(path, "site key"), str(path))
        site_keys.append({"key_id": keys.key_id(public), "pem": keys.public_pem(public).decode("ascii")})
    document = {
        "format": EVIDENCE_FORMAT,
        "exported": _now(),
        "exported_by": _who(),
        "site_keys": site_keys,
        "attestations": entries,
    }
    oscal = write_far_side_oscal(out, statements, carried)
    atomic_write_bytes(out, canonical_json(document))
    return Exported(out, len(entries), unsigned, tuple(k["key_id"] for k in site_keys), oscal)


@dataclass(frozen=True)
class Checked:
    """One envelope `airgap evidence verify` read: its file, what it says, and who signed it."""

    file: str
    action: str
    subject: str
    result: str
    signed_by: str | None


def _entries(raw: bytes, origin: str) -> list[tuple[str, object]]:
    """(file name, envelope JSON) of an evidence file, or of a single envelope file."""
    if len(raw) > MAX_EVIDENCE:
        raise InvalidInputError(f"{origin} is {len(raw)} bytes, over the {MAX_EVIDENCE} evidence may have")
    try:
        data = strict_json(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidInputError(f"{origin} is not strict UTF-8 JSON ({str(exc)[:80]})") from None
    if isinstance(data, dict) and "format" not in data:
        # One envelope file, as bundle/attestations/ and STATE/attestations/ hold them.
        return [(Path(origin).name, at.parse_envelope(raw, origin, require_signature=False).to_json())]
    if (
        not isinstance(data, dict)
        or data.get("format") != EVIDENCE_FORMAT
        or set(data) != {"format", "exported", "exported_by", "site_keys", "attestations"}
        or not isinstance(data["attestations"], list)
    ):
        raise InvalidInputError(
            f"{origin} is neither an attestation nor an {EVIDENCE_FORMAT} file",
            hint="pass the file `airgap evidence export` wrote, or one .intoto.json envelope",
        )
    out: list[tuple[str, object]] = []
    for i, entry in enumerate(data["attestations"]):
        if (
            not isinstance(entry, dict)
            or set(entry) != {"file", "envelope"}
            or not isinstance(entry["file"], str)
        ):
            raise InvalidInputError(f"{origin}: attestations[{i}] must have exactly a file and an envelope")
        out.append((entry["file"][:200], entry["envelope"]))
    return out


def verify_evidence(
    path: Path, public_pem: bytes, key_origin: str, *, allow_unsigned: bool = False
) -> list[Checked]:
    """Checks every envelope of an evidence file (or one envelope file) against one public key.

    Returns only if every envelope is well formed and signed by that key (with ``allow_unsigned``,
    unsigned ones are listed with ``signed_by`` None instead); raises SignatureError (exit 3) for
    the first that is not, naming it, and InvalidInputError (exit 4) for malformed input.
    """
    public = keys.load_public(public_pem, key_origin)
    kid = keys.key_id(public)
    origin = str(path)
    checked: list[Checked] = []
    unsigned: list[str] = []
    for name, data in _entries(read_bytes(path, "evidence file"), origin):
        where = f"{origin}: {name}"
        envelope = at.envelope_from_json(data, where, require_signature=False)
        statement = envelope.statement()
        if not envelope.signatures:
            unsigned.append(name)
        else:
            verify_envelope(envelope, public, where)
        predicate = statement["predicate"]
        extra = predicate.get("airgap") if isinstance(predicate.get("airgap"), dict) else {}
        action = str(
            extra.get("action") or ("provenance" if statement["predicateType"] == at.SLSA_PROVENANCE else "?")
        )
        result = str(predicate.get("result") or ("built" if action == "provenance" else "?"))
        subject = ", ".join(
            f"{n} sha256:{d[:16]}" for n, d in list(at.subject_digests(statement).items())[:3]
        )
        checked.append(Checked(name, action, subject, result, kid if envelope.signatures else None))
    if unsigned and not allow_unsigned:
        raise SignatureError(
            f"{len(unsigned)} of {len(checked)} attestations in {origin} are unsigned "
            f"(first: {unsigned[0]}): no site key was configured when they were written, "
            "so they prove nothing",
            hint="configure AIRGAP_SITE_KEY on the far side; "
            "--allow-unsigned lists them without proving them",
        )
    return checked
