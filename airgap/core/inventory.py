"""The far side's inventory (``airgap.inventory/v1``): what it already holds, by hash only.

`airgap inventory` writes it on the far side; it crosses back to the workstation like a target
profile, and `airgap bundle --have INVENTORY.json` leaves out of the new bundle every blob the far
side can materialise from its own shared content store. The document is signed by nobody: a lie
in it can only make a bundle larger (a blob the far side claims but does not have) or make verify
fail there with exit 3 naming the missing blob — never make the far side accept a byte it did not
check, because every external blob is re-hashed against the signed manifest on the far side.

Only ``store.blobs`` decides what is left out. ``installed`` (the wheels of installed bundles)
and ``informational`` (image layers in the local engines, blobs in a registry an installation
pushed to) tell the publisher what is there, but install cannot materialise a bundle file from
them, so they are never counted as held.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airgap.core.bundle_format import canonical_json, strict_json
from airgap.core.json_budget import json_values
from airgap.errors import InvalidInputError

FORMAT = "airgap.inventory/v1"
MAX_INVENTORY = 64 << 20  # a store of a million blobs fits in well under this
# A blob is listed in some 90 bytes and 5 values: one value per 16 bytes bounds what parsing a
# file at the cap can cost (core/json_budget.py).
MAX_INVENTORY_VALUES = MAX_INVENTORY // 16
HEX64 = re.compile(r"[0-9a-f]{64}")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_TEXT = re.compile(r"[\x20-\x7e]{0,200}")


def _bad(what: str) -> InvalidInputError:
    return InvalidInputError(
        f"the inventory is not valid: {what}",
        hint="write it again on the far side with `airgap inventory --out FILE` and carry that file",
    )


@dataclass(frozen=True)
class Blob:
    """One content file the far side holds, named by the SHA-256 of its bytes."""

    sha256: str
    size: int

    def to_json(self) -> dict[str, Any]:
        """As written in the inventory."""
        return {"sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class InstalledBundle:
    """One installed bundle (from a receipt) and the wheels its installation holds."""

    name: str
    version: str
    target: str
    manifest_sha256: str
    wheels: tuple[tuple[str, Blob], ...] = ()  # (file name, blob)

    def to_json(self) -> dict[str, Any]:
        """As written in the inventory."""
        return {
            "name": self.name,
            "version": self.version,
            "target": self.target,
            "manifest_sha256": self.manifest_sha256,
            "wheels": [{"file": n, **b.to_json()} for n, b in self.wheels],
        }


@dataclass(frozen=True)
class Inventory:
    """What the far side holds. ``blobs`` are what `bundle --have` may leave out; the rest is for
    the publisher to read."""

    created: str
    host: Mapping[str, str]
    blobs: tuple[Blob, ...]
    store_check: str = "rehashed"
    installed: tuple[InstalledBundle, ...] = ()
    engine_layers: tuple[Mapping[str, Any], ...] = ()
    registry_blobs: tuple[Mapping[str, Any], ...] = ()
    skipped: Mapping[str, int] = field(default_factory=dict)

    def held(self) -> dict[str, int]:
        """sha256 hex -> size of every blob the far side's store holds (what may be left out)."""
        return {b.sha256: b.size for b in self.blobs}

    def to_json(self) -> dict[str, Any]:
        """The document, with every list sorted so that the same holdings give the same bytes."""
        return {
            "format": FORMAT,
            "created": self.created,
            "signed_by": None,
            "host": dict(sorted(self.host.items())),
            "store": {
                "check": self.store_check,
                "blobs": [b.to_json() for b in sorted(self.blobs, key=lambda b: b.sha256)],
                "skipped": dict(sorted(self.skipped.items())),
            },
            "installed": [
                i.to_json() for i in sorted(self.installed, key=lambda i: (i.name, i.target, i.version))
            ],
            "informational": {
                "engine_layers": list(self.engine_layers),
                "registry_blobs": list(self.registry_blobs),
            },
        }

    def to_bytes(self) -> bytes:
        """Canonical JSON (sorted keys, no spaces, UTF-8, one trailing newline)."""
        return canonical_json(self.to_json())

    @classmethod
    def from_bytes(cls, raw: bytes) -> Inventory:
        """Reads an inventory strictly: anything but a well-formed ``airgap.inventory/v1`` is one
        line, exit 4 — the workstation decides what to leave out of a signed bundle from it."""
        if len(raw) > MAX_INVENTORY:
            raise _bad(f"it is {len(raw)} bytes, over the {MAX_INVENTORY} an inventory may be")
        if json_values(raw) > MAX_INVENTORY_VALUES:
            raise _bad(f"it has more than the {MAX_INVENTORY_VALUES} JSON values an inventory may have")
        try:
            data = strict_json(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise _bad(f"it is not JSON ({str(exc)[:100]})") from None
        if not isinstance(data, dict):
            raise _bad("it is not a JSON object")
        if data.get("format") != FORMAT:
            raise _bad(f"its format is {str(data.get('format'))[:60]!r}, not {FORMAT!r}")
        created = _string(data.get("created"), "created")
        host = _obj(data.get("host", {}), "host")
        store = _obj(data.get("store"), "store")
        check = _string(store.get("check", "rehashed"), "store.check")
        blobs = tuple(
            _blob(b, f"store.blobs[{i}]") for i, b in enumerate(_list(store.get("blobs"), "store.blobs"))
        )
        installed = tuple(
            _installed(x, f"installed[{i}]")
            for i, x in enumerate(_list(data.get("installed", []), "installed"))
        )
        info = _obj(data.get("informational", {}), "informational")
        layers = tuple(
            _obj(x, "informational.engine_layers[]")
            for x in _list(info.get("engine_layers", []), "informational.engine_layers")
        )
        for i, layer in enumerate(layers):
            for d in _list(layer.get("diff_ids", []), f"informational.engine_layers[{i}].diff_ids"):
                _digest(d, f"informational.engine_layers[{i}].diff_ids[]")
        registry = tuple(
            _obj(x, "informational.registry_blobs[]")
            for x in _list(info.get("registry_blobs", []), "informational.registry_blobs")
        )
        for i, entry in enumerate(registry):
            for d in _list(entry.get("digests", []), f"informational.registry_blobs[{i}].digests"):
                _digest(d, f"informational.registry_blobs[{i}].digests[]")
        return cls(
            created=created,
            host={str(k): _string(v, f"host.{k}") for k, v in host.items()},
            blobs=blobs,
            store_check=check,
            installed=installed,
            engine_layers=layers,
            registry_blobs=registry,
        )


def _string(value: object, name: str) -> str:
    if not isinstance(value, str) or not _TEXT.fullmatch(value):
        raise _bad(f"{name} must be a short printable string")
    return value


def _obj(value: object, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(f"{name} must be an object")
    return value


def _list(value: object, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise _bad(f"{name} must be a list")
    return value


def _hex(value: object, name: str) -> str:
    if not isinstance(value, str) or not HEX64.fullmatch(value):
        raise _bad(f"{name} must be 64 lowercase hex digits, not {str(value)[:70]!r}")
    return value


def _digest(value: object, name: str) -> str:
    if not isinstance(value, str) or not DIGEST.fullmatch(value):
        raise _bad(f"{name} must be sha256: and 64 lowercase hex digits, not {str(value)[:70]!r}")
    return value


def _size(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _bad(f"{name} must be a non-negative integer")
    return value


def _blob(value: object, name: str) -> Blob:
    obj = _obj(value, name)
    return Blob(_hex(obj.get("sha256"), f"{name}.sha256"), _size(obj.get("size"), f"{name}.size"))


def _installed(value: object, name: str) -> InstalledBundle:
    obj = _obj(value, name)
    wheels = []
    for i, w in enumerate(_list(obj.get("wheels", []), f"{name}.wheels")):
        wheels.append(
            (
                _string(_obj(w, f"{name}.wheels[{i}]").get("file"), f"{name}.wheels[{i}].file"),
                _blob(w, f"{name}.wheels[{i}]"),
            )
        )
    return InstalledBundle(
        _string(obj.get("name"), f"{name}.name"),
        _string(obj.get("version"), f"{name}.version"),
        _string(obj.get("target"), f"{name}.target"),
        _hex(obj.get("manifest_sha256"), f"{name}.manifest_sha256"),
        tuple(wheels),
    )


@dataclass(frozen=True)
class DeltaPlan:
    """Which of a new bundle's blobs the far side already holds: left out, still signed."""

    external: frozenset[str]
    bytes_left_out: int
    blobs_total: int
    bytes_total: int

    def to_json(self) -> dict[str, Any]:
        """For the bundle summary and ``--json``."""
        return {
            "blobs_left_out": len(self.external),
            "bytes_left_out": self.bytes_left_out,
            "blobs_total": self.blobs_total,
            "bytes_total": self.bytes_total,
        }


def plan_delta(content: Mapping[str, int], held: Mapping[str, int]) -> DeltaPlan:
    """The blobs of ``content`` (sha256 hex -> size) that ``held`` names with the same size.

    A claimed blob of another size cannot be the same bytes: it is shipped, not left out.
    """
    external = frozenset(h for h, size in content.items() if held.get(h) == size)
    return DeltaPlan(
        external,
        sum(content[h] for h in external),
        len(content),
        sum(content.values()),
    )


def merge_held(sources: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """One held set from several (``--have`` and ``--since`` together)."""
    out: dict[str, int] = {}
    for source in sources:
        out.update(source)
    return out
