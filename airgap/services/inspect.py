"""`airgap inspect` and `airgap join`: read a bundle's front matter; reassemble split parts.

Inspect reads only the first members of the archive (the manifest and the control files) and
parses them without trusting them: it is for a quick look at the media, and says so. Join checks
every part against the signed parts index before writing the joined file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airgap.adapters import keys
from airgap.adapters.archive import TarReader, open_regular, read_small
from airgap.core.bundle_format import MANIFEST, MAX_MANIFEST, PARTS_INDEX_SUFFIX, ROOT, Manifest
from airgap.errors import IntegrityError, InvalidInputError
from airgap.services.observer import BYTES, NullObserver, Observer
from airgap.services.pack import join_parts
from airgap.services.verify import bundle_sources

CHUNK = 1 << 20


class _Unchecked:
    """Reads parts in order without checking them (inspect only; verify checks)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = list(paths)
        self.fh = open_regular(self.paths.pop(0))

    def read(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            data = self.fh.read(n - len(out))
            if data:
                out += data
                continue
            self.fh.close()
            if not self.paths:
                break
            self.fh = open_regular(self.paths.pop(0))
        return out


def inspect_bundle(path: Path) -> dict[str, Any]:
    src = bundle_sources(path)
    missing = [p.name for p in src.paths if not p.exists()]
    if missing:
        raise InvalidInputError(f"part {missing[0]} is missing", hint="copy it next to the parts index")
    stream = _Unchecked(src.paths)
    reader = TarReader(stream, ROOT, first=MANIFEST)  # type: ignore[arg-type]
    first = reader.next()
    if first is None or f"{ROOT}/{first.name}" != MANIFEST:
        raise InvalidInputError(f"not an airgap bundle: {path} does not start with {MANIFEST}")
    manifest = Manifest.from_json(reader.read(first, MAX_MANIFEST))
    stream.fh.close()
    paths = [f.content_path for f in manifest.files]
    parts = []
    if src.parts:
        parts = [{"name": n, "sha256": sha} for n, sha in src.parts]
    return {
        "name": manifest.name,
        "version": manifest.version,
        "created": manifest.created,
        "expires": manifest.expires,
        "tool": manifest.tool,
        "key_id": manifest.key_id,
        "target_profile_sha256": manifest.target_profile_sha256,
        "images": [image.to_json() for image in manifest.images],
        "locks": dict(manifest.locks),
        "policy": dict(manifest.policy),
        "wheels": sorted(p.rsplit("/", 1)[-1] for p in paths if p.endswith(".whl")),
        "model": sorted(p for p in paths if p.startswith("model/")),
        "files": [f.to_json() for f in manifest.files],
        "bytes": manifest.total_size,
        "parts": parts,
        "verified": False,
    }


def join_bundle(
    index: Path, output: Path | None, trusted: tuple[keys.TrustedKey, ...], observer: Observer | None = None
) -> Path:
    obs = observer or NullObserver()
    if not index.name.endswith(PARTS_INDEX_SUFFIX):
        raise InvalidInputError(f"{index} is not a parts index (*{PARTS_INDEX_SUFFIX})")
    src = bundle_sources(index)
    assert src.parts is not None and src.index is not None
    sig_path = index.parent / f"{index.name}.sig"
    if not sig_path.exists():
        raise IntegrityError(f"the parts index has no signature ({sig_path.name} is missing)")
    sig = read_small(sig_path, 1024, "a signature")
    if not trusted:
        raise IntegrityError("no trusted key to check the parts index with", hint="pass --key PUB")
    if not any(_ok(k, src.index, sig) for k in trusted):
        raise IntegrityError("the parts index is not signed by any trusted key")
    missing = [p.name for p in src.paths if not p.exists()]
    if missing:
        raise IntegrityError(
            f"part {missing[0]} is missing", hint="copy it from the original media and re-run"
        )
    sizes = [(n, p.stat().st_size, sha) for (n, sha), p in zip(src.parts, src.paths)]
    dest = output or index.parent / index.name[: -len(PARTS_INDEX_SUFFIX)]
    # One read: each part is hashed as it is copied, and the joined file appears only if every
    # part matched the signed index.
    obs.begin("join", sum(s for _, s, _ in sizes), BYTES)
    join_parts(src.paths, sizes, dest, on_bytes=lambda n: obs.advance("join", n))
    obs.end("join")
    return dest


def _ok(key: keys.TrustedKey, data: bytes, sig: bytes) -> bool:
    try:
        keys.verify(key.public, data, sig, "the parts index")
        return True
    except IntegrityError:
        return False
