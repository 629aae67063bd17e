"""The signers behind the ``Signer`` port (``airgap/ports.py``), chosen by a key URI.

``--key`` names a signer by URI, as securesystemslib does: ``file:PATH`` (or a plain path) is an
encrypted PKCS#8 key file on the workstation; other schemes (``pkcs11:`` for an HSM) get their own
class registered in ``SIGNER_FOR_URI_SCHEME``, and no caller changes. Services receive a
``Signer`` and never see key material.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from urllib.parse import unquote

from airgap.adapters import keys
from airgap.core.signing import ECDSA_P384_SHA384
from airgap.errors import UsageError
from airgap.ports import Signer as Signer

Passphrase = Callable[[], bytes]
"""Asked only by a signer that needs one, and only once (a prompt or AIRGAP_KEY_PASSPHRASE)."""


class FileSigner(Signer):
    """An encrypted ECDSA P-384 key file from `airgap keys generate`."""

    scheme = "file"

    def __init__(self, path: Path, passphrase: Passphrase) -> None:
        self.path = path
        self._private = keys.load_private(path, passphrase())
        self._key_id = keys.key_id(self._private.public_key())

    @classmethod
    def from_uri(cls, uri: str, passphrase: Passphrase) -> FileSigner:
        """``file:/abs``, ``file:///abs``, ``file:relative`` or a plain path."""
        rest = uri[len("file:") :] if uri.startswith("file:") else uri
        if rest.startswith("//"):
            authority, _, rest = rest[2:].partition("/")
            if authority not in ("", "localhost"):
                raise UsageError(f"--key {uri}: a file: key must be on this host, not on {authority!r}")
            rest = "/" + rest
        if not rest:
            raise UsageError(f"--key {uri} names no file", hint="use --key file:/path/to/publisher.key")
        return cls(Path(unquote(rest)), passphrase)

    @property
    def key_id(self) -> str:
        """See ``Signer.key_id``."""
        return self._key_id

    @property
    def algorithm(self) -> str:
        """Always ECDSA P-384/SHA-384: ``keys.load_private`` refuses any other key."""
        return ECDSA_P384_SHA384

    def sign(self, data: bytes) -> bytes:
        """See ``Signer.sign``; RFC 6979 and low-s normalisation happen in ``keys.sign``."""
        return keys.sign(self._private, data)

    def trusted_key(self) -> keys.TrustedKey:
        """See ``Signer.trusted_key``."""
        return keys.TrustedKey(self._key_id, self.path, self._private.public_key())

    def public_pem(self) -> bytes:
        """The public half of the key file."""
        return keys.public_pem(self._private.public_key())


SignerFactory = Callable[[str, Passphrase], Signer]

SIGNER_FOR_URI_SCHEME: Mapping[str, SignerFactory] = MappingProxyType({"file": FileSigner.from_uri})
"""The signers this build has, by URI scheme. A new key store is one class and one entry here."""

# Schemes a user may reasonably try that this build knows of but does not carry.
_NOT_IN_THIS_BUILD = {"pkcs11": "an HSM or smart card", "sigstore": "keyless signing", "kms": "a cloud KMS"}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


def signer_from_uri(
    uri: str,
    passphrase: Passphrase,
    registry: Mapping[str, SignerFactory] = SIGNER_FOR_URI_SCHEME,
) -> Signer:
    """The signer ``--key`` names. A plain path is a ``file:`` key, so existing command lines keep
    working; an unknown scheme is refused before any passphrase is asked for (exit 2)."""
    match = _SCHEME.match(uri)
    scheme = match.group(1).lower() if match else None
    if scheme is None or (scheme not in registry and Path(uri).exists()):
        return registry["file"](uri, passphrase)
    factory = registry.get(scheme)
    if factory is None:
        what = _NOT_IN_THIS_BUILD.get(scheme)
        raise UsageError(
            f"--key {scheme}: keys are not supported in this build"
            + (f" ({what})" if what else f" (known schemes: {', '.join(sorted(registry))})"),
            hint="sign with a key file: --key file:/path/to/publisher.key",
        )
    return factory(uri, passphrase)
