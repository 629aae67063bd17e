"""The signature algorithms a bundle may carry: the one place their names are written.

The packer records the signer's algorithm in the signed manifest, and the verifier accepts only
the algorithms listed here, so a manifest that names a weaker or unknown scheme is refused (exit 3)
however it is signed. Adding an algorithm means one entry here and its implementation behind the
signer port (``airgap/ports.py``) in ``adapters/signers.py``.

A trusted key, its id and its algorithm are values here too, so that the port can name them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from airgap.errors import InvalidInputError, SignatureError, UsageError

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
    """The SHA-256 of the canonical DER SubjectPublicKeyInfo — named curve, uncompressed point —
    whatever encoding the key was read from (explicit curve parameters, a compressed point), so one
    key has one id. A reviewer recomputes it with ``openssl ec -pubin -in key.pub -param_enc
    named_curve -conv_form uncompressed -outform DER | sha256sum`` (docs/bundle-format.md)."""
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def key_algorithm(public: ec.EllipticCurvePublicKey) -> str:
    """The signature algorithm a public key verifies: only P-384 keys load, so ECDSA P-384/SHA-384."""
    if public.curve.name != "secp384r1":  # pragma: no cover - load_public refuses other curves
        raise InvalidInputError(f"key {key_id(public)[:16]} is not an ECDSA P-384 key")
    return ECDSA_P384_SHA384


EVERY_NAME = "*"
"""The trust scope of a key that may sign bundles of any name."""

# A bundle name, as the manifest requires it (``core/bundle_format.py``): a lowercase DNS label.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
MAX_SCOPE_NAMES = 256


def parse_scope(text: str) -> tuple[str, ...]:
    """The names of ``--for NAME[,NAME]`` (sorted, each once), or ``("*",)`` for every name.

    A name is what a signed manifest may call a bundle; ``*`` stands alone, so that a list can
    never mean more than it spells out.
    """
    names = sorted({n.strip() for n in text.split(",") if n.strip()})
    if not names:
        raise UsageError("--for needs at least one bundle name (or '*' for every name)")
    if EVERY_NAME in names:
        if len(names) > 1:
            raise UsageError("--for '*' already means every name: give '*' alone, or only names")
        return (EVERY_NAME,)
    bad = [n for n in names if not _NAME.fullmatch(n)]
    if bad:
        raise UsageError(
            f"--for {bad[0][:80]!r} is not a bundle name (a lowercase DNS label: a-z, 0-9, '-', at most 63)"
        )
    if len(names) > MAX_SCOPE_NAMES:
        raise UsageError(f"--for names {len(names)} bundles; at most {MAX_SCOPE_NAMES}, or '*'")
    return tuple(names)


def describe_scope(names: tuple[str, ...]) -> str:
    """``every name (*)`` or the names, as the CLI says them."""
    return "every name (*)" if EVERY_NAME in names else ", ".join(names)


@dataclass(frozen=True)
class TrustedKey:
    """A public key the far side trusts, with the id and algorithm a manifest must name, and the
    bundle names it may sign (``names``; ``*`` for any). ``scope_recorded`` is false for a trust
    entry written before trust had a scope: it is read as ``*`` and said so at ``keys list``."""

    key_id: str
    path: Path
    public: ec.EllipticCurvePublicKey
    names: tuple[str, ...] = (EVERY_NAME,)
    scope_recorded: bool = True

    def may_sign(self, name: str) -> bool:
        """Whether a bundle called ``name`` signed by this key is trusted here."""
        return EVERY_NAME in self.names or name in self.names

    @property
    def algorithm(self) -> str:
        """The algorithm of signatures this key verifies (checked against the manifest's)."""
        return key_algorithm(self.public)
