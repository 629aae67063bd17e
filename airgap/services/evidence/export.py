"""`airgap evidence export` and `airgap evidence verify`: the far side's attestations carried back.

The export gathers every envelope of ``STATE/attestations/`` into one file, signed as a whole by the
site key: its own manifest lists every record with its SHA-256, action and result and counts them,
so that a record dropped from the file (a failed install), one added, or all of them removed is
refused by `evidence verify` (exit 3) — not only a record changed, which each envelope's own
signature already shows. The writing of each attestation is ``attestations.py``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airgap.adapters import keys
from airgap.adapters.fs import MAX_KEY, atomic_write_bytes, read_bytes
from airgap.core import attestation as at
from airgap.core.bundle_format import canonical_json, strict_json
from airgap.core.json_budget import check_json_budget
from airgap.errors import InvalidInputError, SignatureError, TamperError
from airgap.ports import Signer
from airgap.services.attest import verify_envelope
from airgap.services.evidence.attestations import SUFFIX, attestations_dir, now, who
from airgap.services.state import State

EVIDENCE_FORMAT = "airgap.evidence/v2"
MAX_EVIDENCE = 256 << 20
# An exported envelope is some 2 KiB and a dozen values: one value per 64 bytes is far more than
# any export holds, and bounds what parsing a file at the cap can cost (core/json_budget.py).
MAX_EVIDENCE_VALUES = MAX_EVIDENCE // 64


# -- export and verify ---------------------------------------------------------------------------
EXPORT_MANIFEST_FORMAT = "airgap.evidence-manifest/v1"
_LEGACY_EVIDENCE_FORMAT = "airgap.evidence/v1"  # an export from before exports were signed whole
_EXPORT_FIELDS = frozenset(
    {"format", "exported", "exported_by", "site_keys", "attestations", "manifest", "manifest_signature"}
)
_MANIFEST_FIELDS = frozenset({"format", "exported", "site_key_id", "records", "counts", "files"})


@dataclass(frozen=True)
class Exported:
    """What `airgap evidence export` wrote: how many attestations, how many unsigned, which keys,
    and the site key that signed the export as a whole (None: exported without a site key)."""

    path: Path
    count: int
    unsigned: int
    site_key_ids: tuple[str, ...]
    oscal: tuple[Path, ...] = ()  # the OSCAL assessment results and their summary, beside ``path``
    signed_by: str | None = None


def _describe(statement: dict[str, Any]) -> tuple[str, str]:
    """(action, result) a statement records: ``verify``/``install``/... and PASSED/FAILED/...;
    a bundle's provenance is ("provenance", "built")."""
    predicate = statement["predicate"]
    extra = predicate.get("airgap") if isinstance(predicate.get("airgap"), dict) else {}
    action = str(
        extra.get("action") or ("provenance" if statement["predicateType"] == at.SLSA_PROVENANCE else "?")
    )
    result = str(predicate.get("result") or ("built" if action == "provenance" else "?"))
    return action, result


def _counts(files: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for f in files:
        by_result = counts.setdefault(str(f["action"]), {})
        by_result[str(f["result"])] = by_result.get(str(f["result"]), 0) + 1
    return counts


def export(
    state: State,
    out: Path,
    bundle: Path | None = None,
    key: Path | None = None,
    signer: Signer | None = None,
) -> Exported:
    """Gathers every attestation of the state directory, and the site public keys that signed
    them, into one JSON file, with the OSCAL assessment results of the far-side checks and their
    Markdown summary beside it — and, given a ``bundle``, the results of the ``airgap check`` it
    carries (verified first, against the trust store or ``key``). Each envelope is read back
    strictly first: a damaged file is named and nothing is written.

    The export is signed as a whole by ``signer`` (the site key): its manifest lists every record
    file with its SHA-256, action and result, and the count of each, so that a record dropped from
    the file (a failed install, say), one added, or all of them removed is refused by
    `evidence verify` (exit 3), not just a record changed. Without a signer the manifest is written
    unsigned, and `evidence verify` refuses the export unless told ``--allow-unsigned``.
    """
    from airgap.services.evidence.oscal import bundle_check_results, write_far_side_oscal

    carried = bundle_check_results(bundle, state, key) if bundle is not None else []
    directory = attestations_dir(state)
    entries: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []
    site_keys: list[dict[str, str]] = []
    statements: list[tuple[str, dict[str, Any], str | None]] = []
    unsigned = 0
    paths = sorted(directory.glob(f"*{SUFFIX}")) if directory.is_dir() else []
    for path in paths:
        envelope = at.parse_envelope(
            read_bytes(path, "attestation", at.MAX_ENVELOPE), str(path), require_signature=False
        )
        unsigned += not envelope.signatures
        entries.append({"file": path.name, "envelope": envelope.to_json()})
        statement = envelope.statement()
        action, result = _describe(statement)
        files.append(
            {
                "file": path.name,
                "sha256": hashlib.sha256(envelope.to_bytes()).hexdigest(),
                "action": action,
                "result": result,
            }
        )
        if statement.get("predicateType") == at.TEST_RESULT:
            signer_id = envelope.signatures[0].keyid if envelope.signatures else None
            statements.append((path.name, statement, signer_id))
    for path in sorted(directory.glob("site-*.pub")) if directory.is_dir() else []:
        public = keys.load_public(read_bytes(path, "site key", MAX_KEY), str(path))
        site_keys.append({"key_id": keys.key_id(public), "pem": keys.public_pem(public).decode("ascii")})
    exported = now()
    manifest = canonical_json(
        {
            "format": EXPORT_MANIFEST_FORMAT,
            "exported": exported,
            "site_key_id": signer.key_id if signer is not None else None,
            "records": len(files),
            "counts": _counts(files),
            "files": files,
        }
    )
    signature = signer.sign(manifest).decode("ascii").strip() if signer is not None else None
    document = {
        "format": EVIDENCE_FORMAT,
        "exported": exported,
        "exported_by": who(),
        "site_keys": site_keys,
        "attestations": entries,
        "manifest": base64.b64encode(manifest).decode("ascii"),
        "manifest_signature": signature,
    }
    oscal = write_far_side_oscal(out, statements, carried)
    atomic_write_bytes(out, canonical_json(document))
    return Exported(
        out,
        len(entries),
        unsigned,
        tuple(k["key_id"] for k in site_keys),
        oscal,
        signer.key_id if signer is not None else None,
    )


@dataclass(frozen=True)
class Checked:
    """One envelope `airgap evidence verify` read: its file, what it says, and who signed it."""

    file: str
    action: str
    subject: str
    result: str
    signed_by: str | None


@dataclass(frozen=True)
class _Seal:
    """An export's own manifest: its exact bytes and their signature (None: exported unsigned).
    ``legacy``: an export from before exports were signed whole, which has neither."""

    manifest: bytes
    signature: str | None
    legacy: bool = False


def _entries(raw: bytes, origin: str) -> tuple[list[tuple[str, object]], _Seal | None]:
    """(file name, envelope JSON) of an evidence file, or of a single envelope file, and the
    export's seal (None for a single envelope file, which is no export)."""
    if len(raw) > MAX_EVIDENCE:
        raise InvalidInputError(f"{origin} is {len(raw)} bytes, over the {MAX_EVIDENCE} evidence may have")
    check_json_budget(raw, MAX_EVIDENCE_VALUES, origin)
    try:
        data = strict_json(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidInputError(f"{origin} is not strict UTF-8 JSON ({str(exc)[:80]})") from None
    if isinstance(data, dict) and "format" not in data:
        # One envelope file, as bundle/attestations/ and STATE/attestations/ hold them.
        return [(Path(origin).name, at.parse_envelope(raw, origin, require_signature=False).to_json())], None
    legacy = isinstance(data, dict) and data.get("format") == _LEGACY_EVIDENCE_FORMAT
    fields = (_EXPORT_FIELDS - {"manifest", "manifest_signature"}) if legacy else _EXPORT_FIELDS
    if (
        not isinstance(data, dict)
        or data.get("format") not in (EVIDENCE_FORMAT, _LEGACY_EVIDENCE_FORMAT)
        or set(data) != fields
        or not isinstance(data["attestations"], list)
        or not (legacy or isinstance(data["manifest"], str))
        or not (legacy or data["manifest_signature"] is None or isinstance(data["manifest_signature"], str))
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
    if legacy:
        return out, _Seal(b"", None, legacy=True)
    try:
        manifest = base64.b64decode(data["manifest"], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError(f"{origin}: its manifest is not base64") from None
    return out, _Seal(manifest, data["manifest_signature"])


def _claimed_key(manifest: bytes) -> str | None:
    """The site key id an export's manifest names, only to say whose it is when the signature does
    not verify with the key given; None unless it is exactly 64 hex digits."""
    try:
        claimed = strict_json(manifest).get("site_key_id")
    except (ValueError, UnicodeDecodeError, RecursionError, AttributeError):
        return None
    return claimed if isinstance(claimed, str) and re.fullmatch(r"[0-9a-f]{64}", claimed) else None


def _check_seal(
    seal: _Seal, entries: list[tuple[str, at.Envelope]], public: Any, origin: str, allow_unsigned: bool
) -> None:
    """Steps 1-4 of `evidence verify` on an export: its manifest is signed by the key given, and
    lists exactly the records the file carries — none missing, none added, each with its hash,
    action and result — and at least one. Raises SignatureError or TamperError (exit 3)."""
    kid = keys.key_id(public)
    # 1. The export is signed as a whole, by this key, in the one canonical (low-s) form.
    if seal.legacy or seal.signature is None:
        if not allow_unsigned:
            why = (
                "was written by an airgap that did not sign exports"
                if seal.legacy
                else "was exported without a site key"
            )
            raise SignatureError(
                f"{origin} is not signed as a whole: it {why}, so a record removed from it "
                "(a failed install) or added to it could not be seen",
                hint="export again on the far side with AIRGAP_SITE_KEY set; "
                "--allow-unsigned lists it without proving it",
            )
    else:
        try:
            der = base64.b64decode(seal.signature, validate=True)
        except (binascii.Error, ValueError):
            raise SignatureError(f"the manifest signature of {origin} is not base64") from None
        claimed = _claimed_key(seal.manifest)
        if claimed is not None and claimed != kid:
            raise SignatureError(
                f"{origin} is signed as a whole by key {claimed[:16]}, not by {kid[:16]}",
                hint="check it with the site key whose id the site confirmed out of band",
            )
        if not keys.is_low_s(der):
            raise SignatureError(
                f"the manifest signature of {origin} is not in its one canonical (low-s) form"
            )
        keys.verify(public, seal.manifest, seal.signature.encode("ascii"), f"the manifest of {origin}")
    if seal.legacy:
        if not entries:
            raise TamperError(f"{origin} holds no attestation at all: it proves nothing")
        return
    # 2. The manifest is airgap's, and names the key that signed it.
    try:
        manifest = strict_json(seal.manifest)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise TamperError(f"the manifest of {origin} is not strict JSON") from None
    if (
        not isinstance(manifest, dict)
        or set(manifest) != _MANIFEST_FIELDS
        or manifest["format"] != EXPORT_MANIFEST_FORMAT
        or not isinstance(manifest["files"], list)
        or not all(
            isinstance(f, dict)
            and set(f) == {"file", "sha256", "action", "result"}
            and all(isinstance(v, str) for v in f.values())
            for f in manifest["files"]
        )
    ):
        raise TamperError(f"the manifest of {origin} is not an {EXPORT_MANIFEST_FORMAT} manifest")
    if seal.signature is not None and manifest["site_key_id"] != kid:
        raise TamperError(
            f"the manifest of {origin} names key {str(manifest['site_key_id'])[:16]}, not {kid[:16]}"
        )
    files: list[dict[str, str]] = manifest["files"]
    if manifest["records"] != len(files) or manifest["counts"] != _counts(files):
        raise TamperError(f"the manifest of {origin} counts other records than it lists")
    # 3. At least one record: an export with none proves nothing about what happened here.
    if not files:
        raise TamperError(f"{origin} holds no attestation at all: it proves nothing about this site")
    # 4. Exactly the records listed, each as listed.
    listed = {f["file"]: f for f in files}
    carried: dict[str, at.Envelope] = {}
    for name, envelope in entries:
        if name in carried:
            raise TamperError(f"{origin} carries record {name} twice")
        carried[name] = envelope
    missing = [n for n in listed if n not in carried]
    if missing:
        f = listed[missing[0]]
        raise TamperError(
            f"{origin} is missing {len(missing)} of the {len(files)} records its signed manifest lists "
            f"(first: {missing[0]}, {f['action']} {f['result']})",
            hint="refuse this evidence; ask the site for its export again",
        )
    added = [n for n in carried if n not in listed]
    if added:
        raise TamperError(
            f"{origin} carries {len(added)} records its signed manifest does not list (first: {added[0]})",
            hint="refuse this evidence; ask the site for its export again",
        )
    for name, envelope in carried.items():
        f = listed[name]
        if hashlib.sha256(envelope.to_bytes()).hexdigest() != f["sha256"] or _describe(
            envelope.statement()
        ) != (f["action"], f["result"]):
            raise TamperError(f"record {name} of {origin} differs from its signed manifest")


_HEX64 = re.compile(r"[0-9a-f]{64}")


def _check_chain(entries: list[tuple[str, at.Envelope]], origin: str) -> None:
    """Step 5: the site's records form one unbroken chain. Each far-side record names its place
    (``sequence``, from 1) and the SHA-256 of the record written before it (``previous_sha256``),
    signed with it; a place missing, taken twice, or a record that does not follow the one before
    it means a record was removed from ``STATE/attestations/`` before the export — which the
    export's own manifest cannot show, since it lists what it found. Raises TamperError (exit 3).
    Records written before records were chained (no ``sequence``) are not part of it; the last
    records of the chain can still be removed unseen (nothing follows them)."""
    digests = {hashlib.sha256(env.to_bytes()).hexdigest() for _, env in entries}
    links: dict[int, tuple[str, str | None, str]] = {}
    for name, envelope in entries:
        predicate = envelope.statement()["predicate"]
        ours = predicate.get("airgap") if isinstance(predicate.get("airgap"), dict) else {}
        if "sequence" not in ours:
            continue
        sequence, previous = ours.get("sequence"), ours.get("previous_sha256")
        if (
            not isinstance(sequence, int)
            or isinstance(sequence, bool)
            or sequence < 1
            or not (previous is None or (isinstance(previous, str) and _HEX64.fullmatch(previous)))
        ):
            raise TamperError(f"record {name} of {origin} has no valid place in the site's chain of records")
        if sequence in links:
            raise TamperError(
                f"records {links[sequence][0]} and {name} of {origin} both claim place {sequence} "
                "in the site's chain of records"
            )
        links[sequence] = (name, previous, hashlib.sha256(envelope.to_bytes()).hexdigest())
    if not links:
        return
    last = max(links)
    missing = [k for k in range(1, last + 1) if k not in links]
    if missing:
        raise TamperError(
            f"{origin} lacks record {missing[0]} of the {last} the site wrote: "
            f"{len(missing)} removed from its state directory before the export",
            hint="refuse this evidence; the site's audit log lists every verify and install",
        )
    for sequence in range(1, last + 1):
        name, previous, _ = links[sequence]
        expected_ok = (
            previous is None or previous in digests if sequence == 1 else previous == links[sequence - 1][2]
        )
        if not expected_ok:
            raise TamperError(
                f"record {name} of {origin} does not follow the record before it in the site's chain "
                "(one was removed or replaced before the export)",
                hint="refuse this evidence; the site's audit log lists every verify and install",
            )


def verify_evidence(
    path: Path, public_pem: bytes, key_origin: str, *, allow_unsigned: bool = False
) -> list[Checked]:
    """Checks an evidence export (or one envelope file) against one public key.

    Returns only if the export is signed as a whole by that key and carries exactly the records
    its manifest lists (``_check_seal``), and every envelope is well formed and signed by that key
    (with ``allow_unsigned``, an unsigned export or envelope is listed, with ``signed_by`` None,
    instead); raises SignatureError or TamperError (exit 3) for the first that is not, naming it,
    and InvalidInputError (exit 4) for malformed input.
    """
    public = keys.load_public(public_pem, key_origin)
    kid = keys.key_id(public)
    origin = str(path)
    checked: list[Checked] = []
    unsigned: list[str] = []
    raw_entries, seal = _entries(read_bytes(path, "evidence file", MAX_EVIDENCE), origin)
    envelopes = [
        (name, at.envelope_from_json(data, f"{origin}: {name}", require_signature=False))
        for name, data in raw_entries
    ]
    if seal is not None:
        _check_seal(seal, envelopes, public, origin, allow_unsigned)
        _check_chain(envelopes, origin)
    for name, envelope in envelopes:
        where = f"{origin}: {name}"
        statement = envelope.statement()
        if not envelope.signatures:
            unsigned.append(name)
        else:
            verify_envelope(envelope, public, where)
        action, result = _describe(statement)
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
