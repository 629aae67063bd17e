"""A far side for attacks on names and on the blob store: a publisher key it trusts, signed v1
and v2 bundles written directly (so a manifest can say what no packer writes), and an install
target that runs nothing (``tests.fakes.InertTarget``), so the whole installer runs in-process.

Every command is the real CLI (``run_airgap``); ``outside_unchanged`` is the witness that nothing
outside the state directory was written.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airgap.core.bundle_format import SIGNATURE_ALGORITHM, canonical_json, render_sums
from airgap.services.deploy import targets
from tests.bundles import EPOCH, make_key
from tests.conftest import run_airgap
from tests.fakes import InertTarget

PASSED_POLICY = {"blocking": [], "fail_on": "high", "failed": False, "summary": {}}
CONTRACT = b'{"cases": []}\n'
RECORD = b'{"model": {"file": "model/model.onnx"}, "name": "demo", "version": "1.0.0"}\n'
# What an installable bundle needs besides its payload: the signed build record and contract.
INSTALLABLE = {"build.json": RECORD, "model/contract.json": CONTRACT, "model/model.onnx": b"onnx"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class FarSide:
    """A publisher key the far side's state directory trusts, and a place outside that state."""

    root: Path
    key: Any
    pub: Path
    state: Path
    outside: Path  # a directory the far side must never write: planted links point here
    made: int = field(default=0)

    @property
    def store(self) -> Path:
        return self.state / "content" / "oci" / "blobs" / "sha256"

    def _doc(self, fmt: str, files: list[dict[str, Any]], version: str) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "format": fmt,
            "name": "demo",
            "version": version,
            "created": "2023-11-14T22:13:20Z",
            "expires": None,
            "tool": "airgap test",
            "target_profile_sha256": None,
            "images": [],
            "locks": {},
            "policy": PASSED_POLICY,
            "files": sorted(files, key=lambda f: f["path"]),
            "signer": {"key_id": self.key.key_id, "algorithm": SIGNATURE_ALGORITHM},
        }
        if fmt == "airgap.bundle/v2":
            doc["blobs"] = []
        return doc

    def _write(self, doc: dict[str, Any], members: list[tuple[str, bytes]]) -> Path:
        manifest = canonical_json(doc)
        msig = self.key.sign(manifest)
        sums = render_sums(
            [(name, sha(data)) for name, data in members]
            + [("manifest.json", sha(manifest)), ("manifest.json.sig", sha(msig))]
        )
        self.made += 1
        path = self.root / "media" / f"b{self.made}" / "demo-1.0.0.airgap.tar"
        path.parent.mkdir(parents=True)
        control = [
            ("manifest.json", manifest),
            ("manifest.json.sig", msig),
            ("SHA256SUMS", sums),
            ("SHA256SUMS.sig", self.key.sign(sums)),
        ]
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tw:
            for name, data in [*control, *sorted(members)]:
                info = tarfile.TarInfo(f"bundle/{name}")
                info.size = len(data)
                info.mtime = EPOCH
                tw.addfile(info, io.BytesIO(data))
        return path

    def v1(self, files: Mapping[str, bytes], version: str = "1.0.0") -> Path:
        """A v1 bundle of ``files`` (path → content), signed, every member as the manifest says."""
        listed = [{"path": p, "size": len(d), "sha256": sha(d)} for p, d in files.items()]
        return self._write(self._doc("airgap.bundle/v1", listed, version), list(files.items()))

    def v2(
        self,
        files: Mapping[str, bytes],
        external: frozenset[str] = frozenset(),
        sizes: Mapping[str, int] | None = None,
        version: str = "1.0.0",
    ) -> Path:
        """A v2 bundle of ``files``: each distinct content one blob, stored unless a path of it is
        in ``external``; ``sizes`` overrides the size the map gives a path (a lie, signed)."""
        left_out = {sha(files[p]) for p in external}
        listed = []
        for p, d in files.items():
            entry: dict[str, Any] = {"path": p, "size": (sizes or {}).get(p, len(d)), "sha256": sha(d)}
            if sha(d) in left_out:
                entry["external"] = True
            listed.append(entry)
        blobs = {sha(d): d for d in files.values() if sha(d) not in left_out}
        members = [(f"blobs/sha256/{h}", d) for h, d in blobs.items()]
        return self._write(self._doc("airgap.bundle/v2", listed, version), members)

    def verify(self, bundle: Path, *extra: str) -> Any:
        return run_airgap("verify", str(bundle), "--state-dir", str(self.state), *extra, timeout=120)

    def install(self, bundle: Path, *extra: str) -> Any:
        return run_airgap(
            "install", str(bundle), "--to", "inert", "--state-dir", str(self.state), *extra, timeout=120
        )


def far_side(root: Path) -> FarSide:
    key, pub, _ = make_key(root, "publisher")
    state = root / "state"
    assert run_airgap("keys", "trust", str(pub), "--state-dir", str(state)).returncode == 0
    outside = root / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"the user's own file\n")
    return FarSide(root, key, pub, state, outside)


@contextmanager
def inert_target() -> Iterator[None]:
    """``--to inert`` for the duration."""
    targets.register(InertTarget(), replace=True)  # type: ignore[arg-type]
    try:
        yield
    finally:
        targets.unregister("inert")


def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """Every entry below ``root`` but ``skip``'s: kind, size, mode and (for a file) content hash,
    never following a link."""
    out: dict[str, tuple[int, int, int, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        if here == skip or skip in here.parents:
            dirnames[:] = []
            continue
        for name in [*dirnames, *filenames]:
            p = here / name
            if p == skip:
                continue
            st = os.lstat(p)
            digest = b""
            if stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(p.read_bytes()).digest()
            elif stat.S_ISLNK(st.st_mode):
                digest = os.readlink(p).encode()
            out[str(p)] = (stat.S_IFMT(st.st_mode), st.st_size, stat.S_IMODE(st.st_mode), digest)
    return out


@contextmanager
def outside_unchanged(far: FarSide) -> Iterator[None]:
    """Asserts that nothing outside the state directory (the media, the planted targets of links,
    the keys) was created, changed or removed inside the block."""
    before = snapshot(far.root, far.state)
    yield
    after = snapshot(far.root, far.state)
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    assert not changed, f"written outside the state directory: {changed[:5]}"


def audit(far: FarSide) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (far.state / "audit.log").read_text().splitlines()]
