"""The signature algorithms a bundle may carry: the one place their names are written.

The packer records the signer's algorithm in the signed manifest, and the verifier accepts only
the algorithms listed here, so a manifest that names a weaker or unknown scheme is refused (exit 3)
however it is signed. Adding an algorithm means one entry here and its implementation behind the
signer port (``airgap/ports.py``) in ``adapters/signers.py``.

A trusted key, its id and its algorithm are values here too, so that the port can name them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from airgap.errors import InvalidInputError, SignatureError

ECDSA_P384_SHA384 = "ecdsa-p384-sha384"
"""ECDSA on P-384 with SHA-384: FIPS 186-5 approved and required by NSA's CNSA suite."""

DEFAULT_ALGORITHM = ECDSA_P384_SHA384


@dataclass(frozen=True)
class SignatureAlgorithm:
    """What a reviewer needs to check a signature by hand: the curve, the hash, the key size."""

    name: str
    curve: str
    hash: str
    key_bits: int

    def describe(self) -> dict[str, object]:
        """The record a staging directory's ``signature.json`` carries for the checklist."""
        return {"algorithm": self.name, "curve": self.curve, "key_bits": self.key_bits, "hash": self.hash}


ALLOWED_ALGORITHMS: Mapping[str, SignatureAlgorithm] = MappingProxyType(
    {ECDSA_P384_SHA384: SignatureAlgorithm(ECDSA_P384_SHA384, "secp384r1", "sha384", 384)}
)


def allowed_algorithm(name: object) -> SignatureAlgorithm:
    """The algorithm ``name`` if the verifier accepts it; raises SignatureError (exit 3) otherwise."""
    found = ALLOWED_ALGORITHMS.get(name) if isinstance(name, str) else None
    if found is None:
        raise SignatureError(
            f"the signature algorithm {str(name)[:40]!r} is not one this verifier accepts "
            f"(allowed: {', '.join(sorted(ALLOWED_ALGORITHMS))})",
            hint="refuse this bundle; ask the publisher to sign with an allowed algorithm",
        )
    return found


def key_id(public: ec.EllipticCurvePublicKey) -> str:
    """The SHA-256 of the DER SubjectPublicKeyInfo: what a reviewer can recompute with openssl."""
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def key_algorithm(public: ec.EllipticCurvePublicKey) -> str:
    """The signature algorithm a public key verifies: only P-384 keys load, so ECDSA P-384/SHA-384."""
    if public.curve.name != "secp384r1":  # pragma: no cover - load_public refuses other curves
        raise InvalidInputError(f"key {key_id(public)[:16]} is not an ECDSA P-384 key")
    return ECDSA_P384_SHA384


@dataclass(frozen=True)
class TrustedKey:
    """A public key the far side trusts, with the id and algorithm a manifest must name."""

    key_id: str
    path: Path
    public: ec.EllipticCurvePublicKey

    @property
    def algorithm(self) -> str:
        """The algorithm of signatures this key verifies (checked against the manifest's)."""
        return key_algorithm(self.public)
