"""Signing keys and the far side's trust store.

ECDSA P-384 with SHA-384: approved by FIPS 186-5 and required by NSA's CNSA suite. Signatures are
the cosign blob format — base64 of the ASN.1 DER signature over the exact bytes — so a reviewer can
check one with ``openssl dgst -sha384 -verify key.pub -signature <(base64 -d f.sig) f``.
A key id is the SHA-256 of the canonical DER SubjectPublicKeyInfo (named curve, uncompressed
point): ``openssl ec -pubin -in key.pub -param_enc named_curve -conv_form uncompressed -outform DER
| sha256sum`` prints it for every encoding airgap accepts.

A key file holds one key and nothing else: a PEM with a second block, or anything after the
first, is refused rather than trusted by its first key alone.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from airgap.adapters.fs import MAX_KEY, atomic_write_bytes, read_bytes
from airgap.core.signing import EVERY_NAME, parse_scope
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
    _one_pem_block(data, str(path))
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


_PEM_PUBLIC = re.compile(
    rb"\A\s*-----BEGIN PUBLIC KEY-----\r?\n([A-Za-z0-9+/=\r\n]{1,4096})-----END PUBLIC KEY-----\s*\Z"
)


_PEM_BEGIN = re.compile(rb"-----BEGIN [A-Z0-9 ]{1,40}-----")
_PEM_END = re.compile(rb"-----END [A-Z0-9 ]{1,40}-----")


def _one_pem_block(data: bytes, origin: str) -> None:
    """Exactly one PEM block, and nothing but whitespace before or after it: a second key would
    otherwise sit unseen behind the first, which is the one the PEM reader takes."""
    blocks = len(_PEM_BEGIN.findall(data))
    if blocks > 1:
        raise InvalidInputError(
            f"{origin} holds {blocks} PEM blocks: a key file must hold exactly one key",
            hint="split it, confirm each key id out of band, and use the one you mean",
        )
    end = _PEM_END.search(data)
    begin = _PEM_BEGIN.search(data)
    if begin is not None and (
        data[: begin.start()].strip() or (end is not None and data[end.end() :].strip())
    ):
        raise InvalidInputError(
            f"{origin} has data before or after its key: a key file holds one key and nothing else"
        )


def load_public(data: bytes, origin: str) -> ec.EllipticCurvePublicKey:
    """A P-384 public key from PEM bytes; ``origin`` names where they came from in errors.

    Exactly one ``PUBLIC KEY`` block and nothing else around it but whitespace: a file with a second
    key (or any other data) would otherwise be trusted by its first key while a reviewer reading
    it may see, and confirm, another.
    """
    _one_pem_block(data, origin)
    match = _PEM_PUBLIC.fullmatch(data)
    if match is None:
        raise InvalidInputError(
            f"{origin} is not one PEM public key and nothing else (no BEGIN/END PUBLIC KEY block, "
            "or other data around it)",
            hint="pass the .pub file `airgap keys generate` wrote, one key per file",
        )
    try:
        der = base64.b64decode(re.sub(rb"\s", b"", match.group(1)), validate=True)
        key = serialization.load_der_public_key(der)
    except (ValueError, binascii.Error):
        raise InvalidInputError(f"{origin} is not a PEM public key") from None
    except Exception as exc:  # cryptography's UnsupportedAlgorithm: a key type it does not read
        raise InvalidInputError(f"{origin} is not an ECDSA P-384 public key ({type(exc).__name__})") from None
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


SCOPE_FORMAT = "airgap.trust-scope/v1"


@dataclass(frozen=True)
class Trusted:
    """What ``TrustStore.trust`` did: the key, the names it is now trusted for, and whether that
    changed (trusting a key again for names it already has changes nothing)."""

    key_id: str
    names: tuple[str, ...]
    changed: bool


class TrustStore:
    """Public keys the far side trusts, in ``<state>/trust``: one PEM file per key id, and beside
    it ``<id>.scope.json`` naming the bundles that key may sign (``{"format", "key_id", "names"}``,
    ``names`` a list of bundle names or ``["*"]``). ``trust`` only adds names (see there).

    A key file with no scope file was trusted before trust had a scope; it is read as trusted for
    every name, as it was then (``TrustedKey.scope_recorded`` false), and ``keys list`` says so on
    a warning line until it is trusted again with ``--for``. A scope file that is not airgap's, or
    names another key, is refused (exit 3) rather than read as any scope.
    """

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
            scope = self._scope(kid)
            if scope is None:
                out.append(TrustedKey(kid, path, public, (EVERY_NAME,), scope_recorded=False))
            else:
                out.append(TrustedKey(kid, path, public, scope))
        return out

    def _scope_path(self, kid: str) -> Path:
        return self.directory / f"{kid}.scope.json"

    def _scope(self, kid: str) -> tuple[str, ...] | None:
        path = self._scope_path(kid)
        if not os.path.lexists(path):
            return None
        damaged = IntegrityError(
            f"trust store file {path.name} is not a scope airgap wrote for key {kid[:16]}",
            hint=f"trust the key again with `airgap keys trust KEY.pub --for NAME` (or remove {path})",
        )
        try:
            doc = json.loads(read_bytes(path, "trust scope", MAX_KEY))
        except (ValueError, UnicodeDecodeError):
            raise damaged from None
        if (
            not isinstance(doc, dict)
            or set(doc) != {"format", "key_id", "names"}
            or doc["format"] != SCOPE_FORMAT
            or doc["key_id"] != kid
            or not isinstance(doc["names"], list)
            or not all(isinstance(n, str) for n in doc["names"])
        ):
            raise damaged
        try:
            names = parse_scope(",".join(doc["names"]))
        except UsageError:
            raise damaged from None
        if list(names) != doc["names"]:
            raise damaged
        return names

    def trust(self, pem: bytes, origin: str, names: tuple[str, ...] | None = None) -> Trusted:
        """Adds a public key (atomically, named by its id) trusted for ``names``; says what it did.

        Trust only grows through this: ``names`` are added to those a key is already trusted for
        (``*`` absorbs every name), and without ``names`` a key that is already trusted keeps its
        names while a new one is trusted for every name. Narrowing is ``remove`` then ``trust``.
        So a script that trusts the key it was handed (the bundled ``install.sh``) never widens,
        nor narrows, what the site decided. A key trusted before scopes existed, or whose scope
        file is damaged, takes ``names`` as given: that is how it is scoped.

        The scope is written before the key, so an interrupted trust never leaves a key that reads
        as trusted for every name.
        """
        public = load_public(pem, origin)
        kid = key_id(public)
        before: tuple[str, ...] | None = None
        if (self.directory / f"{kid}.pem").exists():
            with contextlib.suppress(IntegrityError):
                before = self._scope(kid)
        if names is None:
            after = before if before is not None else (EVERY_NAME,)
        elif before is None:
            after = names
        else:
            combined = sorted({*before, *names})
            after = (EVERY_NAME,) if EVERY_NAME in combined else parse_scope(",".join(combined))
        if after == before:
            return Trusted(kid, after, changed=False)
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise EnvironmentFailure(
                f"cannot create the trust store {self.directory}: {exc.strerror}"
            ) from None
        scope = {"format": SCOPE_FORMAT, "key_id": kid, "names": list(after)}
        atomic_write_bytes(self._scope_path(kid), (json.dumps(scope, sort_keys=True) + "\n").encode())
        atomic_write_bytes(self.directory / f"{kid}.pem", public_pem(public))
        return Trusted(kid, after, changed=True)

    def remove(self, prefix: str) -> str:
        """Removes the one key whose id starts with ``prefix``, and its scope; an ambiguous prefix
        removes none. Read by file name only, so that an entry whose scope file is damaged (which
        ``keys`` refuses) can still be removed."""
        found = sorted(self.directory.glob("*.pem")) if self.directory.is_dir() else []
        matches = [p for p in found if p.stem.startswith(prefix.lower())]
        if len(matches) != 1 or not prefix:
            raise UsageError(f"{len(matches)} trusted keys match {prefix!r}; give more of the key id")
        os.unlink(matches[0])
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._scope_path(matches[0].stem))
        return matches[0].stem
