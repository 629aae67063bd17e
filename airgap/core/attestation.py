"""DSSE envelopes around in-toto Statements v1: the encoding, with no keys and no I/O.

An attestation is three layers (in-toto Attestation Framework v1): a DSSE envelope that carries
the signature, an in-toto Statement that names the subjects by digest, and a predicate that says
something about them (SLSA provenance for a bundle, a test result for a far-side check). The
signature is ECDSA P-384/SHA-384 over the DSSE pre-authentication encoding (PAE) of the payload
type and the payload, so that a signature over one type can never be replayed as another;
``openssl dgst -sha384 -verify`` checks it once PAE is written out (docs/attestations.md).

Reading is strict: an envelope airgap did not write the way airgap writes it is refused in one
line (exit 4), before any signature is checked or any field is trusted. DSSE lets consumers ignore
unknown fields; this reader refuses them, because it reads only airgap's own envelopes, and a field
that a reader ignores is a field an attacker may fill.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airgap.errors import InvalidInputError

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
TEST_RESULT = "https://in-toto.io/attestation/test-result/v0.1"
BUILD_TYPE = "urn:airgap:bundle-build:v1"
"""The SLSA buildType of ``airgap bundle``; its parameters are described in docs/attestations.md."""

MAX_ENVELOPE = 1 << 20  # an envelope file, and a decoded payload: far more than any airgap writes
MAX_SIGNATURES = 4
MAX_SUBJECTS = 1000
MAX_SIG_DER = 128  # a DER ECDSA P-384 signature is at most 104 bytes
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DIGEST_ALG = re.compile(r"[a-z0-9_-]{1,32}")
_DIGEST_VALUE = re.compile(r"[0-9a-f]{32,128}")


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding, the bytes a signature covers:
    ``"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body``, lengths as ASCII decimal byte counts."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


@dataclass(frozen=True)
class Subject:
    """What a statement is about: a name and its SHA-256 (the only digest this build writes)."""

    name: str
    sha256: str

    def to_json(self) -> dict[str, Any]:
        """The in-toto ResourceDescriptor: ``{"name", "digest": {"sha256"}}``."""
        return {"name": self.name, "digest": {"sha256": self.sha256}}


def statement(subjects: Sequence[Subject], predicate_type: str, predicate: Mapping[str, Any]) -> bytes:
    """The canonical bytes of an in-toto Statement v1: what an envelope's payload carries."""
    if not subjects:
        raise ValueError("an in-toto statement needs at least one subject")
    for s in subjects:
        if not _HEX64.fullmatch(s.sha256):
            raise ValueError(f"subject {s.name!r} has no SHA-256 digest")
    # The manifest's JSON rules, loaded when an attestation is made or read: `verify` of a bundle
    # that is not there makes none.
    from airgap.core.bundle_format import canonical_json

    return canonical_json(
        {
            "_type": STATEMENT_TYPE,
            "subject": [s.to_json() for s in subjects],
            "predicateType": predicate_type,
            "predicate": dict(predicate),
        }
    )


@dataclass(frozen=True)
class Signature:
    """One DSSE signature: the signer's key id (docs/bundle-format.md) and the base64 DER value."""

    keyid: str
    sig: str

    @property
    def der(self) -> bytes:
        """The DER ECDSA-Sig-Value, as ``openssl dgst -signature`` reads it."""
        return base64.b64decode(self.sig, validate=True)


@dataclass(frozen=True)
class Envelope:
    """A parsed DSSE envelope: the payload's bytes, and its signatures (none: stored unsigned)."""

    payload: bytes
    payload_type: str
    signatures: tuple[Signature, ...]

    @property
    def pae(self) -> bytes:
        """The bytes every signature of this envelope covers."""
        return pae(self.payload_type, self.payload)

    def to_bytes(self) -> bytes:
        """The envelope file: canonical JSON, as the reader requires it."""
        from airgap.core.bundle_format import canonical_json

        return canonical_json(self.to_json())

    def to_json(self) -> dict[str, Any]:
        """The standard DSSE JSON envelope."""
        return {
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "payloadType": self.payload_type,
            "signatures": [{"keyid": s.keyid, "sig": s.sig} for s in self.signatures],
        }

    def statement(self) -> dict[str, Any]:
        """The in-toto Statement the payload holds, checked (``parse_statement``)."""
        return parse_statement(self.payload)


def _bad(origin: str, why: str) -> InvalidInputError:
    return InvalidInputError(
        f"{origin} is not an airgap attestation: {why}",
        hint="it was not written by airgap, or was changed since: do not rely on it",
    )


def _b64(value: object, origin: str, field: str, limit: int) -> bytes:
    """Standard base64 in its one canonical spelling (padding, no whitespace, no URL alphabet)."""
    if not isinstance(value, str) or not value.isascii():
        raise _bad(origin, f"{field} is not a base64 string")
    if len(value) > (limit + 2) // 3 * 4:
        raise _bad(origin, f"{field} is over {limit} bytes")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(origin, f"{field} is not base64") from None
    if base64.b64encode(raw).decode("ascii") != value:
        raise _bad(origin, f"{field} is not canonical base64")
    return raw


def parse_envelope(raw: bytes, origin: str, *, require_signature: bool = True) -> Envelope:
    """An envelope exactly as airgap writes it, or InvalidInputError naming what is wrong.

    Checked, in order: the size; strict UTF-8 JSON (no duplicate keys, no NaN); exactly the fields
    ``payload``, ``payloadType``, ``signatures``; the in-toto payload type; canonical base64; each
    signature exactly ``keyid`` (64 hex) and ``sig`` (base64 DER, bounded); the payload an in-toto
    Statement v1. ``require_signature``: an envelope with no signature is refused.
    """
    if len(raw) > MAX_ENVELOPE:
        raise _bad(origin, f"it is {len(raw)} bytes, over the {MAX_ENVELOPE} an envelope may have")
    data = _json(raw, origin, "the envelope")
    return envelope_from_json(data, origin, require_signature=require_signature)


def envelope_from_json(data: object, origin: str, *, require_signature: bool = True) -> Envelope:
    """``parse_envelope`` of an already parsed JSON value (an entry of an evidence file)."""
    if not isinstance(data, dict):
        raise _bad(origin, "the envelope is not a JSON object")
    fields = set(data)
    if fields != {"payload", "payloadType", "signatures"}:
        extra = sorted(fields - {"payload", "payloadType", "signatures"})
        missing = sorted({"payload", "payloadType", "signatures"} - fields)
        raise _bad(
            origin,
            f"unexpected field {extra[0][:40]!r}" if extra else f"the field {missing[0]!r} is missing",
        )
    if data["payloadType"] != PAYLOAD_TYPE:
        raise _bad(origin, f"payloadType {str(data['payloadType'])[:60]!r} is not {PAYLOAD_TYPE}")
    payload = _b64(data["payload"], origin, "payload", MAX_ENVELOPE)
    sigs = data["signatures"]
    if not isinstance(sigs, list):
        raise _bad(origin, "signatures is not a list")
    if len(sigs) > MAX_SIGNATURES:
        raise _bad(origin, f"it has {len(sigs)} signatures, over {MAX_SIGNATURES}")
    if require_signature and not sigs:
        raise _bad(origin, "it carries no signature")
    signatures = []
    for i, sig in enumerate(sigs):
        if not isinstance(sig, dict) or set(sig) != {"keyid", "sig"}:
            raise _bad(origin, f"signatures[{i}] must have exactly the fields keyid and sig")
        keyid = sig["keyid"]
        if not isinstance(keyid, str) or not _HEX64.fullmatch(keyid):
            raise _bad(origin, f"signatures[{i}].keyid is not a key id (64 lowercase hex digits)")
        _b64(sig["sig"], origin, f"signatures[{i}].sig", MAX_SIG_DER)
        signatures.append(Signature(keyid, sig["sig"]))
    parse_statement(payload, origin)
    return Envelope(payload, PAYLOAD_TYPE, tuple(signatures))


def _json(raw: bytes, origin: str, what: str) -> Any:
    from airgap.core.bundle_format import strict_json

    try:
        return strict_json(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise _bad(origin, f"{what} is not strict UTF-8 JSON ({str(exc)[:80]})") from None


def parse_statement(payload: bytes, origin: str = "the payload") -> dict[str, Any]:
    """An in-toto Statement v1 with exactly its four fields and well-formed subjects."""
    if len(payload) > MAX_ENVELOPE:
        raise _bad(origin, f"the payload is over {MAX_ENVELOPE} bytes")
    data = _json(payload, origin, "the payload")
    if not isinstance(data, dict) or set(data) != {"_type", "subject", "predicateType", "predicate"}:
        raise _bad(
            origin, "the payload is not an in-toto Statement (_type, subject, predicateType, predicate)"
        )
    if data["_type"] != STATEMENT_TYPE:
        raise _bad(origin, f"the statement's _type {str(data['_type'])[:60]!r} is not {STATEMENT_TYPE}")
    subjects = data["subject"]
    if not isinstance(subjects, list) or not 0 < len(subjects) <= MAX_SUBJECTS:
        raise _bad(origin, f"the statement needs 1 to {MAX_SUBJECTS} subjects")
    for i, s in enumerate(subjects):
        if not isinstance(s, dict) or set(s) != {"name", "digest"} or not isinstance(s["name"], str):
            raise _bad(origin, f"subject[{i}] must have exactly a name and a digest")
        digest = s["digest"]
        if (
            not isinstance(digest, dict)
            or not digest
            or not all(
                isinstance(v, str) and _DIGEST_ALG.fullmatch(k) and _DIGEST_VALUE.fullmatch(v)
                for k, v in digest.items()
            )
        ):
            raise _bad(origin, f"subject[{i}].digest is not a set of lowercase hex digests")
    if not isinstance(data["predicateType"], str) or not isinstance(data["predicate"], dict):
        raise _bad(origin, "predicateType must be a string and predicate an object")
    return data


def subject_digests(statement_json: Mapping[str, Any]) -> dict[str, str]:
    """Subject name to SHA-256, for the checks a reader makes against the files it holds."""
    return {
        str(s["name"]): str(s["digest"].get("sha256", ""))
        for s in statement_json.get("subject", [])
        if isinstance(s, dict) and isinstance(s.get("digest"), dict)
    }
