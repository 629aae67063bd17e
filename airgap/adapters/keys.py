"""Signing keys and the far side's trust store.

ECDSA P-384 with SHA-384: approved by FIPS 186-5 and required by NSA's CNSA suite. Signatures are
the cosign blob format — base64 of the ASN.1 DER signature over the exact bytes — so a reviewer can
check one with ``openssl dgst -sha384 -verify key.pub -signature <(base64 -d f.sig) f``.
A key id is the SHA-256 of the DER SubjectPublicKeyInfo: ``openssl pkey -pubin -in key.pub
-outform DER | sha256sum`` prints it.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from airgap.adapters.fs import MAX_KEY, atomic_write_bytes, read_bytes
from airgap.core.signing import TrustedKey as TrustedKey
from airgap.core.signing import key_algorithm as key_algorithm
from airgap.core.signing import key_id as key_id
from airgap.errors import EnvironmentFailure, IntegrityError, InvalidInputError, SignatureError, UsageError

PASSPHRASE_ENV = "AIRGAP_KEY_PASSPHRASE"
# The order of the P-384 group (FIPS 186-5 / SEC 2): (r, s) and (r, n - s) are both valid.
P384_ORDER = (
    0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973
)


def public_pem(public: ec.EllipticCurvePublicKey) -> bytes:
    """The PEM form the trust store keeps, so a file there is exactly one canonical key."""
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def generate(private_path: Path, public_path: Path, passphrase: bytes) -> str:
    """Writes an encrypted PKCS#8 private key (mode 0600) and its public key; returns the key id."""
    if len(passphrase) < 12:
        raise UsageError("the key passphrase must have at least 12 characters")
    for path in (private_path, public_path):
        if path.exists():
            raise UsageError(f"{path} already exists; refusing to overwrite a key")
    private = ec.generate_private_key(ec.SECP384R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )
    atomic_write_bytes(private_path, pem, mode=0o600)
    atomic_write_bytes(public_path, public_pem(private.public_key()), mode=0o644)
    return key_id(private.public_key())


def load_private(path: Path, passphrase: bytes | None) -> ec.EllipticCurvePrivateKey:
    """The P-384 private key in ``path``; any other key, or a wrong passphrase, is one clear line."""
    data = read_bytes(path, "signing key", MAX_KEY)
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError:
        raise UsageError(
            f"{path} is encrypted and no passphrase was given",
            hint=f"set {PASSPHRASE_ENV} or answer the prompt",
        ) from None
    except ValueError:
        raise InvalidInputError(f"{path} is not a PEM private key, or the passphrase is wrong") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp384r1":
        raise InvalidInputError(
            f"{path} is not an ECDSA P-384 key", hint="create one with `airgap keys generate`"
        )
    return key


def load_public(data: bytes, origin: str) -> ec.EllipticCurvePublicKey:
    """A P-384 public key from PEM bytes; ``origin`` names where they came from in errors."""
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise InvalidInputError(f"{origin} is not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise InvalidInputError(f"{origin} is not an ECDSA P-384 public key")
    return key


def sign(private: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """The cosign blob signature: base64 of DER, with a trailing newline.

    Deterministic ECDSA (RFC 6979, allowed by FIPS 186-5) makes the same bytes sign the same way,
    so a rebuilt bundle is byte-identical, signatures included. ``s`` is normalized to the lower
    of its two valid values, so that the signature has one form a verifier can insist on.
    """
    try:
        algorithm = ec.ECDSA(hashes.SHA384(), deterministic_signing=True)
    except TypeError:  # cryptography < 44, or an OpenSSL without RFC 6979
        algorithm = ec.ECDSA(hashes.SHA384())
    r, s = decode_dss_signature(private.sign(data, algorithm))
    return base64.b64encode(encode_dss_signature(r, min(s, P384_ORDER - s))) + b"\n"


def is_low_s(der: bytes) -> bool:
    """Whether a DER ECDSA P-384 signature has the low ``s`` that ``sign`` writes."""
    try:
        _, s = decode_dss_signature(der)
    except ValueError:
        return False
    return s <= P384_ORDER // 2


def verify(public: ec.EllipticCurvePublicKey, data: bytes, signature_b64: bytes, what: str) -> None:
    """Raises SignatureError (exit 3) unless ``signature_b64`` is this key's signature over ``data``."""
    try:
        der = base64.b64decode(signature_b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"the signature of {what} is not base64") from None
    try:
        public.verify(der, data, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise SignatureError(
            f"the signature of {what} does not verify with key {key_id(public)[:16]}"
        ) from None


class TrustStore:
    """Public keys the far side trusts, one PEM file per key id, in ``<state>/trust``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def keys(self) -> list[TrustedKey]:
        """Every trusted key; a file whose name is not its key's id is refused, not skipped."""
        if not self.directory.is_dir():
            return []
        out = []
        for path in sorted(self.directory.glob("*.pem")):
            public = load_public(read_bytes(path, "trusted key", MAX_KEY), str(path))
            kid = key_id(public)
            if path.stem != kid:
                raise IntegrityError(f"trust store file {path.name} does not hold key {path.stem[:16]}")
            out.append(TrustedKey(kid, path, public))
        return out

    def trust(self, pem: bytes, origin: str) -> str:
        """Adds a public key (atomically, named by its id) and returns the id."""
        public = load_public(pem, origin)
        kid = key_id(public)
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise EnvironmentFailure(
                f"cannot create the trust store {self.directory}: {exc.strerror}"
            ) from None
        atomic_write_bytes(self.directory / f"{kid}.pem", public_pem(public))
        return kid

    def remove(self, prefix: str) -> str:
        """Removes the one key whose id starts with ``prefix``; an ambiguous prefix removes none."""
        matches = [k for k in self.keys() if k.key_id.startswith(prefix.lower())]
        if len(matches) != 1:
            raise UsageError(f"{len(matches)} trusted keys match {prefix!r}; give more of the key id")
        os.unlink(matches[0].path)
        return matches[0].key_id
