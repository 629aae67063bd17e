"""Signing and checking DSSE envelopes: the one form every attestation airgap writes takes.

Build signs the provenance a bundle carries (services/build/provenance.py); the far side signs its
evidence of what it checked (services/evidence/attestations.py) and verifies exported evidence.
The signer port returns the cosign form of a signature; an envelope carries it without the newline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric import ec

from airgap.adapters import keys
from airgap.core import attestation as at
from airgap.errors import SignatureError

if TYPE_CHECKING:  # types only: the far side writes unsigned records without the signer port
    from airgap.ports import Signer


def sign_envelope(payload: bytes, signer: Signer | None) -> at.Envelope:
    """A DSSE envelope over ``payload``; without a signer it has no signature (stored unsigned)."""
    if signer is None:
        return at.Envelope(payload, at.PAYLOAD_TYPE, ())
    # The signer port returns the cosign form (base64 of DER and a newline): DSSE's sig is the same
    # base64 without the newline.
    sig = signer.sign(at.pae(at.PAYLOAD_TYPE, payload)).decode("ascii").strip()
    return at.Envelope(payload, at.PAYLOAD_TYPE, (at.Signature(signer.key_id, sig),))


def verify_envelope(envelope: at.Envelope, public: ec.EllipticCurvePublicKey, origin: str) -> None:
    """Returns only if a signature of ``envelope`` is ``public``'s over its PAE, with the low ``s``
    the signer writes; raises SignatureError (exit 3) otherwise, naming the key ids involved."""
    kid = keys.key_id(public)
    mine = [s for s in envelope.signatures if s.keyid == kid]
    if not envelope.signatures:
        raise SignatureError(f"{origin} is unsigned: it proves nothing about who wrote it")
    if not mine:
        others = ", ".join(s.keyid[:16] for s in envelope.signatures)
        raise SignatureError(f"{origin} is signed by key {others}, not by {kid[:16]}")
    for sig in mine:
        if not keys.is_low_s(sig.der):
            raise SignatureError(f"the signature of {origin} is not in its one canonical (low-s) form")
        keys.verify(public, envelope.pae, sig.sig.encode("ascii"), origin)
