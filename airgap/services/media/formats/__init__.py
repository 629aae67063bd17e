"""Bundle formats, one reader each, keyed by the signed manifest's ``format``.

Each format is one module: how the packer lays a staging directory out, how a bundle in it is
verified, how a verified one is extracted. Every format shares one frame, which the opener checks
before any reader runs: a tar archive
whose first member is ``bundle/manifest.json`` and whose second is its signature, verified with a
trusted key over the exact bytes. What follows the signature — the manifest's fields, the other
control files, the order and headers of the members — belongs to the format. Adding a format is
one module here with a ``BundleFormat`` subclass, registered with ``register``; nothing else
branches on the version: the packer and the CLI ask ``get`` and ``names``, the rest a capability.
"""

from __future__ import annotations

from airgap.services.media.formats import v1, v2
from airgap.services.media.formats._registry import (
    BundleFormat,
    FormatResult,
    Keep,
    Layout,
    OpenStream,
    SignedFront,
    format_named,
    format_of,
    get,
    known_formats,
    names,
    next_named,
    reader_for,
    register,
    unregister,
)

__all__ = [
    "DEFAULT",
    "BundleFormat",
    "FormatResult",
    "Keep",
    "Layout",
    "OpenStream",
    "SignedFront",
    "format_named",
    "format_of",
    "get",
    "known_formats",
    "names",
    "next_named",
    "reader_for",
    "register",
    "unregister",
]

register(v1.V1Format())
register(v2.V2Format())
DEFAULT = v2.V2Format.option  # what the packer writes unless another format is asked for
