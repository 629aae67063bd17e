"""`airgap split`: cut an existing bundle again, for other media, without re-signing its content.

The bundle's bytes — manifest, signatures, every member — are copied unchanged into new parts,
so ``cat`` of the new data parts is the same single-file bundle. What is new, and signed, is the
parts index (and the parity index): an index is a statement by the publisher, so split needs the
publisher's signing key. It signs only for a bundle that key signed: the bytes are verified
against the key's public half (steps 0 to 6 of verification) in the same pass that copies them,
and nothing appears in the output directory unless every byte verified.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from airgap.adapters.archive import PartInfo
from airgap.adapters.space import require_free
from airgap.core.bundle_format import PARTS_INDEX_SUFFIX
from airgap.core.parity import check_layout
from airgap.errors import UsageError
from airgap.ports import Signer
from airgap.services.media.opening import BundleHandle, locate_bundle, verify_stream
from airgap.services.media.parity import ParitySink, Repair, write_parts_index
from airgap.services.observer import BYTES, NullObserver, Observer


@dataclass(frozen=True)
class SplitResult:
    """The new parts and indexes, and the (unchanged) manifest they carry."""

    files: tuple[Path, ...]
    parts: tuple[PartInfo, ...]
    parity_parts: tuple[PartInfo, ...]
    manifest_sha256: str
    repaired: tuple[Repair, ...]


class _Tee:
    """The verifier's stream, every byte of which also goes to the new parts as it is read."""

    def __init__(self, stream: BinaryIO, sink: ParitySink, obs: Observer) -> None:
        self.stream = stream
        self.sink = sink
        self.obs = obs

    def read(self, n: int) -> bytes:
        data = self.stream.read(n)
        if data:
            self.sink.write(data)
            self.obs.advance("split", len(data))
        return data


def split_bundle(
    source: Path,
    out_dir: Path,
    part_size: int,
    signer: Signer,
    parity: int = 0,
    observer: Observer | None = None,
) -> SplitResult:
    """Writes ``source`` (a bundle file or a parts index) as parts of ``part_size`` bytes and
    ``parity`` parity parts into ``out_dir``, with a parts index signed by ``signer``.

    Raises UsageError (exit 2) when ``out_dir`` is where the source lies (its parts would be
    overwritten while being read), and the verifier's errors (exit 3) when the bundle is not
    this key's or not intact.
    """
    obs = observer or NullObserver()
    trusted = (signer.trusted_key(),)
    if parity:
        check_layout(1, parity)
    handle = locate_bundle(source)
    base_name = _base_name(handle)
    if out_dir.resolve() == handle.paths[0].parent.resolve():
        raise UsageError(
            f"--out {out_dir} is where the bundle lies: its parts would be overwritten as they are read",
            hint="choose another --out directory",
        )
    handle.check_index(trusted)
    handle = handle.with_repairs(trusted, obs)
    require_free(out_dir, handle.total_size() + parity * part_size, "split")
    out_dir.mkdir(parents=True, exist_ok=True)

    def copy(h: BundleHandle) -> tuple[ParitySink, str]:
        sink = ParitySink(out_dir, base_name, part_size, parity, obs)
        obs.begin("split", h.total_size(), BYTES)
        try:
            with h.stream() as stream:
                _, manifest_sha = verify_stream(_Tee(stream, sink, obs), trusted)  # type: ignore[arg-type]
            sink.close()
        except BaseException:
            sink.abort()
            raise
        finally:
            obs.end("split")
        return sink, manifest_sha

    handle, (sink, manifest_sha) = handle.read_repairing(trusted, obs, copy)
    try:
        for stale in out_dir.glob(f"{base_name}*"):
            if stale.is_file() and not stale.name.startswith("."):
                stale.unlink()
        parts = sink.commit()
    except BaseException:
        sink.abort()
        raise
    files = [out_dir / p.name for p in parts] + sink.parity_files
    files += write_parts_index(out_dir, base_name, parts, sink.parity, signer)
    parity_parts = (
        tuple(PartInfo(s.name, s.size, s.sha256) for s in sink.parity.parity) if sink.parity else ()
    )
    return SplitResult(tuple(files), tuple(parts), parity_parts, manifest_sha, handle.repaired)


def _base_name(handle: BundleHandle) -> str:
    """``NAME-VERSION.airgap.tar``: the bundle file's name, or its parts index's without the suffix."""
    if handle.index_path is not None:
        return handle.index_path.name[: -len(PARTS_INDEX_SUFFIX)]
    return handle.paths[0].name
