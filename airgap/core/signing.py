"""The signature algorithms a bundle may carry: the one place their names are written.

The packer records the signer's algorithm in the signed manifest, and the verifier accepts only
the algorithms listed here, so a manifest that names a weaker or unknown scheme is refused (exit 3)
however it is signed. Adding an algorithm means one entry here and its implementation behind the
signer port in ``adapters/signers.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from airgap.errors import SignatureError

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
