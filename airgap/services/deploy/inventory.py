"""`airgap inventory`: the far side's holdings, written as a hash-only document that crosses back.

Every blob in the shared content store is re-hashed, not only size-checked: the store keeps no
record of sizes to check against, and a blob that no longer hashes to its name (a bad disk, a
hand edit) is not held — claiming it would send a delta across the gap whose verification then
fails here with exit 3. Reading the store costs one sequential pass at disk speed; such blobs are
left out and counted under ``store.skipped``.

Facts about the host are only those a target profile already carries (hostname, OS, machine,
Python, airgap's version): no user names, no paths, no environment.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from airgap import __version__
from airgap.adapters import holdings
from airgap.adapters.fs import atomic_write_bytes
from airgap.core.bundle_format import format_timestamp
from airgap.core.inventory import HEX64, Blob, InstalledBundle, Inventory
from airgap.services.deploy.receipts import Installed, Receipt
from airgap.services.observer import BYTES, NullObserver, Observer
from airgap.services.state import State

CHUNK = 1 << 20


def blob_store(state: State) -> Path:
    """The shared content store install materialises from and verify checks external blobs in."""
    return state.blob_store


def _store_files(store: Path) -> Iterator[tuple[str, Path, int]]:
    """(hex name, path, size) of every regular file in the store named like a blob."""
    try:
        entries = sorted(os.scandir(store), key=lambda e: e.name)
    except FileNotFoundError:
        return
    for entry in entries:
        if not HEX64.fullmatch(entry.name):
            continue  # a temporary file of an extraction in flight, or not ours
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            yield entry.name, Path(entry.path), st.st_size


def _sha256(path: Path, obs: Observer, task: str) -> tuple[str, int] | None:
    h = hashlib.sha256()
    n = 0
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(CHUNK), b""):
                h.update(block)
                n += len(block)
                obs.advance(task, len(block))
    except OSError:
        return None
    return h.hexdigest(), n


Inodes = dict[tuple[int, int], Blob]


def store_blobs(store: Path, obs: Observer) -> tuple[list[Blob], int, Inodes]:
    """Every blob of the store that still hashes to its name; how many did not; and the blob
    each checked file is (by device and inode), so a hard link to it need not be read again."""
    files = list(_store_files(store))
    obs.begin("hash store", sum(size for _, _, size in files), BYTES)
    held: list[Blob] = []
    inodes: Inodes = {}
    bad = 0
    try:
        for name, path, _ in files:
            got = _sha256(path, obs, "hash store")
            if got is None or got[0] != name:
                bad += 1
                continue
            held.append(Blob(name, got[1]))
            st = path.stat()
            inodes[(st.st_dev, st.st_ino)] = held[-1]
    finally:
        obs.end("hash store")
    return held, bad, inodes


def _receipts(state: State) -> list[Receipt]:
    out = []
    for _, _, current, previous in Installed(state).all():
        out += [r for r in (current, previous) if r is not None]
    return out


def _wheels_of(receipt: Receipt, inodes: Inodes, obs: Observer) -> tuple[tuple[str, Blob], ...]:
    content = Path(receipt.content or "")
    if not receipt.content or not content.is_dir():
        return ()
    wheels = []
    for path in sorted(content.rglob("*.whl")):
        if path.is_symlink() or not path.is_file():
            continue
        st = path.stat()
        linked = inodes.get((st.st_dev, st.st_ino))  # install links the store's blob here
        if linked is not None:
            wheels.append((path.name, linked))
            continue
        got = _sha256(path, obs, "hash wheels")
        if got is not None:
            wheels.append((path.name, Blob(*got)))
    return tuple(wheels)


def _record(receipt: Receipt) -> dict[str, Any]:
    try:
        data = json.loads((Path(receipt.content) / "build.json").read_text())
    except (OSError, ValueError, TypeError):
        return {}
    return data if isinstance(data, dict) else {}


def _engine_layers(receipts: list[Receipt]) -> list[dict[str, Any]]:
    seen: set[tuple[str, str]] = set()
    out = []
    for r in receipts:
        if not r.image_id:
            continue
        engine = "podman" if r.target.startswith("podman") else "docker"
        if (engine, r.image_id) in seen:
            continue
        seen.add((engine, r.image_id))
        diff_ids = holdings.engine_diff_ids(engine, r.image_id)
        if diff_ids is not None:
            out.append({"engine": engine, "image_id": r.image_id, "diff_ids": diff_ids})
    return out


def _registry_blobs(receipts: list[Receipt]) -> list[dict[str, Any]]:
    out = []
    for r in receipts:
        ref = str((r.extra or {}).get("registry_ref") or "")
        if "/" not in ref or "@" not in ref:
            continue
        host, _, rest = ref.partition("/")
        repo = rest.split("@", 1)[0]
        image = _record(r).get("image") or {}
        digests = [str(image.get("config_digest") or "")] + [
            str(layer.get("digest")) for layer in image.get("layers") or [] if isinstance(layer, dict)
        ]
        held = holdings.registry_holds(host, repo, [d for d in digests if d.startswith("sha256:")])
        if held is not None:
            out.append({"registry": host, "repository": repo, "digests": sorted(held)})
    return out


def host_facts() -> dict[str, str]:
    """The few facts about this host that are safe to carry back and help the publisher."""
    return {
        "hostname": socket.gethostname()[:200],
        "system": platform.system(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "airgap": __version__,
    }


def take_inventory(
    state: State, observer: Observer | None = None, now: dt.datetime | None = None
) -> Inventory:
    """What the far side holds: the shared store (re-hashed), the wheels of installed bundles, and
    — for the publisher's information only — image layers in the engines and blobs in registries
    that installations pushed to."""
    obs = observer or NullObserver()
    blobs, bad, inodes = store_blobs(blob_store(state), obs)
    receipts = _receipts(state)
    obs.begin("hash wheels", None, BYTES)
    try:
        installed = tuple(
            InstalledBundle(r.name, r.version, r.target, r.manifest_sha256, _wheels_of(r, inodes, obs))
            for r in receipts
            if r.manifest_sha256 and HEX64.fullmatch(r.manifest_sha256)
        )
    finally:
        obs.end("hash wheels")
    obs.begin("engines", None)
    try:
        layers = _engine_layers(receipts)
        registry = _registry_blobs(receipts)
    finally:
        obs.end("engines")
    return Inventory(
        created=format_timestamp(now or dt.datetime.now(dt.timezone.utc)),
        host=host_facts(),
        blobs=tuple(blobs),
        installed=installed,
        engine_layers=tuple(layers),
        registry_blobs=tuple(registry),
        skipped={"not_matching_their_name": bad} if bad else {},
    )


def write_inventory(inventory: Inventory, out: Path) -> None:
    """Atomically: a reader (or a copy to media) sees the old file or the whole new one."""
    atomic_write_bytes(out, inventory.to_bytes())
