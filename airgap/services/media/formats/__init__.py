"""Bundle formats, one reader each, keyed by the signed manifest's ``format``.

Every format shares one frame, which the opener checks before any reader runs: a tar archive
whose first member is ``bundle/manifest.json`` and whose second is its signature, verified with a
trusted key over the exact bytes. What follows the signature — the manifest's fields, the other
control files, the order and headers of the members — belongs to the format. Adding a format is
one module here with a ``BundleFormat`` subclass, registered with ``register``; the opener never
branches on the version.
"""

from __future__ import annotations

from airgap.services.media.formats import v1, v2
from airgap.services.media.formats._registry import (
    BundleFormat,
    FormatResult,
    Keep,
    SignedFront,
    format_of,
    known_formats,
    next_named,
    reader_for,
    register,
    unregister,
)

__all__ = [
    "BundleFormat",
    "FormatResult",
    "Keep",
    "SignedFront",
    "format_of",
    "known_formats",
    "next_named",
    "reader_for",
    "register",
    "unregister",
]

register(v1.V1Format())
register(v2.V2Format())
