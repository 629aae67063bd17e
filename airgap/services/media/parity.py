"""Parity parts: media that survives a lost or damaged part.

Writing: ``ParitySink`` cuts the archive into data parts as ``PartSink`` does, then — before
anything is moved into place — reads the finished parts stripe by stripe and writes K parity
parts with zfec (adapters/erasure.py); ``write_parts_index`` signs the data parts index (the
``sha256sum`` file a reviewer checks by hand) and, beside it, the parity index
(core/parity.py) that names both the data and the parity parts, their sizes and hashes.

Repairing: ``repair`` finds the parts that are missing, of the wrong size, or (when asked to
scan) whose SHA-256 differs from the signed index; hashes k good parts against the index before
a byte of them is decoded; rebuilds the bad ones into a directory (temporary name, then rename);
and checks every rebuilt part's hash against the signed index before it is used. More bad parts
than parity parts is exit 3, naming them all.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from airgap.adapters import erasure
from airgap.adapters.archive import PartInfo, PartSink
from airgap.adapters.fs import atomic_write_bytes
from airgap.core.bundle_format import PARTS_INDEX_SUFFIX
from airgap.core.checksums import render_index
from airgap.core.parity import (
    PARITY_INDEX_SUFFIX,
    ParityIndex,
    Share,
    check_layout,
    parity_part_name,
    stripe_for,
)
from airgap.errors import EnvironmentFailure, TamperError
from airgap.ports import Signer
from airgap.services.observer import BYTES, NullObserver, Observer


def render_parts_index(parts: Iterable[PartInfo]) -> bytes:
    """``sha256sum -c`` format, one line per data part, in order: what a reviewer checks by hand,
    in the one spelling the verifier reads back (core/checksums.py)."""
    return render_index([(p.name, p.sha256) for p in parts])


class ParitySink(PartSink):
    """A ``PartSink`` that, once the last data part is written, encodes ``parity`` parity parts
    from the finished (still temporary) parts; ``commit`` moves parity and data into place."""

    def __init__(
        self,
        directory: Path,
        base_name: str,
        part_size: int | None,
        parity: int = 0,
        observer: Observer | None = None,
    ) -> None:
        super().__init__(directory, base_name, part_size)
        self.parity_count = parity
        self.parity: ParityIndex | None = None
        self.encode_seconds = 0.0
        self._obs = observer or NullObserver()
        self._parity_tmp: list[tuple[Path, Path]] = []

    def close(self) -> list[Path]:
        """Finishes the data parts, then encodes the parity parts from them (once)."""
        tmps = super().close()
        if self.parity_count and self.parity is None:
            self._encode(tmps)
        return tmps

    def _encode(self, tmps: list[Path]) -> None:
        started = time.monotonic()
        check_layout(len(self.parts), self.parity_count)
        share_size = max(p.size for p in self.parts)
        stripe = stripe_for(len(self.parts) + self.parity_count)
        names = [parity_part_name(self.base_name, i) for i in range(self.parity_count)]
        self._parity_tmp = [(self.directory / f".{n}.tmp", self.directory / n) for n in names]
        self._obs.begin("parity", share_size * len(tmps), BYTES)
        try:
            done = erasure.encode(
                tmps,
                share_size,
                [t for t, _ in self._parity_tmp],
                stripe,
                lambda n: self._obs.advance("parity", n),
            )
        finally:
            self._obs.end("parity")
        index = render_parts_index(self.parts)
        self.parity = ParityIndex(
            parts_index_sha256=hashlib.sha256(index).hexdigest(),
            share_size=share_size,
            stripe=stripe,
            data=tuple(Share(p.name, p.size, p.sha256) for p in self.parts),
            parity=tuple(Share(n, size, sha) for n, (size, sha) in zip(names, done)),
        )
        self.encode_seconds = time.monotonic() - started

    def commit(self) -> list[PartInfo]:
        """Parity parts first, then the data parts: a bundle appears only once all is on disk."""
        self.close()
        for tmp, final in self._parity_tmp:
            os.replace(tmp, final)
        return super().commit()

    def abort(self) -> None:
        """Removes every temporary file, parity included."""
        super().abort()
        for tmp, _ in self._parity_tmp:
            tmp.unlink(missing_ok=True)

    @property
    def parity_files(self) -> list[Path]:
        """The parity parts, once committed."""
        return [final for _, final in self._parity_tmp]

    @property
    def parity_parts(self) -> tuple[PartInfo, ...]:
        """The parity parts as the parity index lists them."""
        shares = self.parity.parity if self.parity is not None else ()
        return tuple(PartInfo(s.name, s.size, s.sha256) for s in shares)


def write_parts_index(
    out_dir: Path, base_name: str, parts: list[PartInfo], parity: ParityIndex | None, signer: Signer
) -> list[Path]:
    """Signs and writes ``BASE.parts.sha256`` (data parts, ``sha256sum`` lines) and, with parity,
    ``BASE.parity.json`` (data and parity parts, the code's parameters, and the hash of the
    parts index it belongs to), each with its ``.sig``; returns the files written."""
    index = render_parts_index(parts)
    docs = [(out_dir / f"{base_name}{PARTS_INDEX_SUFFIX}", index)]
    if parity is not None:
        docs.append((out_dir / f"{base_name}{PARITY_INDEX_SUFFIX}", parity.to_bytes()))
    written = []
    for path, data in docs:
        atomic_write_bytes(path, data)
        atomic_write_bytes(path.with_name(path.name + ".sig"), signer.sign(data))
        written += [path, path.with_name(path.name + ".sig")]
    return written


@dataclass(frozen=True)
class Repair:
    """One part rebuilt from parity: its name, why (missing or damaged), and where it is now."""

    part: str
    was: str
    path: Path

    def to_json(self) -> dict[str, str]:
        """For --json output and the audit log."""
        return {"part": self.part, "was": self.was, "path": str(self.path)}


@dataclass
class RepairSpace:
    """Where parts are rebuilt when the media must not be touched: a private temporary
    directory (under TMPDIR), removed when the command ends."""

    holder: tempfile.TemporaryDirectory[str] = field(
        default_factory=lambda: tempfile.TemporaryDirectory(prefix="airgap-repair-")
    )

    @property
    def path(self) -> Path:
        """The directory."""
        return Path(self.holder.name)


def _state(parity: ParityIndex, directory: Path, scan: bool) -> dict[int, str]:
    """Share number -> why it is bad: missing or of the wrong size (cheap), or — with ``scan`` —
    a SHA-256 that differs from the signed index."""
    bad: dict[int, str] = {}
    for i, share in enumerate(parity.shares):
        path = directory / share.name
        try:
            size = path.stat().st_size if path.is_file() else -1
        except OSError:
            size = -1
        if size < 0:
            bad[i] = "missing"
        elif size != share.size or (scan and erasure.file_digest(path) != (share.size, share.sha256)):
            bad[i] = "damaged"
    return bad


def repair(
    parity: ParityIndex,
    directory: Path,
    dest: Path,
    *,
    scan: bool = False,
    include_parity: bool = False,
    observer: Observer | None = None,
) -> list[Repair]:
    """Rebuilds the bad data parts (and, with ``include_parity``, bad parity parts) of the
    bundle in ``directory`` into ``dest``; returns what was rebuilt (empty if nothing was bad).

    Only parts whose SHA-256 matched the signed index are decoded from, and a rebuilt part is
    renamed into place only once its hash matches too. Raises TamperError (exit 3) naming every
    bad part when more are bad than there are parity parts.
    """
    obs = observer or NullObserver()
    bad = _state(parity, directory, scan)
    wanted = [i for i in bad if i < parity.k or include_parity]
    if not wanted:
        return []
    good: list[int] = []
    for i in range(parity.m):
        if len(good) == parity.k:
            break
        if i in bad:
            continue
        share = parity.shares[i]
        if scan or erasure.file_digest(directory / share.name) == (share.size, share.sha256):
            good.append(i)
        else:
            bad[i] = "damaged"
    if len(good) < parity.k:
        _too_many(parity, directory, bad)
    targets = [(i, parity.shares[i].size, dest / f".{parity.shares[i].name}.rebuild") for i in sorted(wanted)]
    obs.begin("repair", parity.share_size * parity.k, BYTES)
    try:
        results = erasure.rebuild(
            [(i, directory / parity.shares[i].name) for i in good],
            parity.k,
            parity.m,
            parity.share_size,
            targets,
            stripe_for(parity.m),
            lambda n: obs.advance("repair", n),
        )
        done = []
        for (i, _, tmp), got in zip(targets, results):
            share = parity.shares[i]
            if got != (share.size, share.sha256):
                raise TamperError(f"{share.name} rebuilt from parity does not match the signed index")
            final = dest / share.name
            os.replace(tmp, final)
            done.append(Repair(share.name, bad[i], final))
        return done
    except OSError as exc:
        raise EnvironmentFailure(f"cannot write a rebuilt part in {dest}: {exc.strerror}") from None
    finally:
        obs.end("repair")
        for _, _, tmp in targets:
            tmp.unlink(missing_ok=True)


def _too_many(parity: ParityIndex, directory: Path, bad: dict[int, str]) -> None:
    """Names every bad part (each remaining one hashed), then raises exit 3."""
    for i, share in enumerate(parity.shares):
        if i not in bad and erasure.file_digest(directory / share.name) != (share.size, share.sha256):
            bad[i] = "damaged"
    names = ", ".join(f"{parity.shares[i].name} ({why})" for i, why in sorted(bad.items()))
    raise TamperError(
        f"{len(bad)} parts are missing or damaged: {names}; {len(parity.parity)} parity part(s) "
        f"rebuild at most {len(parity.parity)}",
        hint="copy the named parts again from the original media, then re-run",
    )
