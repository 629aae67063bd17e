"""Whether a name given as a bundle names anything at all: a bundle file, a parts index, or a
bundle whose parts index lies beside it.

The one rule ``locate_bundle`` (``opening``) applies before it reads a byte; it is here, apart
from the verifier, so that ``airgap verify`` of a path that is not there fails in the time it
takes to start, not after loading the archive, format and parity readers.
"""

from __future__ import annotations

from pathlib import Path

from airgap.core.checksums import PARTS_INDEX_SUFFIX
from airgap.errors import InvalidInputError


def names_parts_index(path: Path) -> bool:
    """``path`` is read as a parts index: it is named as one, or it does not exist and its index
    lies beside it (``NAME.airgap.tar`` for ``NAME.airgap.tar.parts.sha256``)."""
    path = Path(path)
    return path.name.endswith(PARTS_INDEX_SUFFIX) or (
        not path.exists() and (path.parent / f"{path.name}{PARTS_INDEX_SUFFIX}").exists()
    )


def missing_bundle(path: Path) -> InvalidInputError | None:
    """The error (exit 4) for a name that is neither a parts index nor an existing file, or None."""
    path = Path(path)
    if names_parts_index(path) or path.exists():
        return None
    return InvalidInputError(
        f"{path} does not exist", hint="name the .airgap.tar file or its .parts.sha256 index"
    )
