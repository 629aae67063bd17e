"""The signed parity index of a split bundle: which erasure code, over which parts.

A bundle split into N data parts may carry K parity parts. Each data part is one share of a
systematic Reed-Solomon code over GF(2^8) (zfec, k = N, m = N + K), every share padded with zeros
to the length of the longest (``share_size``, the part size); the K parity parts are the shares
N .. N+K-1. The code works byte by byte across the shares, so any N of the N + K shares rebuild
the others, whatever stripe an encoder or decoder reads at a time.

The index is canonical JSON, signed like the parts index it names by hash, and parsed here
strictly — after its signature verified, never before. Pure: bytes in, values out.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from airgap.core import names
from airgap.core.bundle_format import PARTS_INDEX_SUFFIX, canonical_json, strict_json
from airgap.errors import TamperError, UsageError

PARITY_FORMAT = "airgap.parity/v1"
PARITY_INDEX_SUFFIX = ".parity.json"
CODEC = "zfec-rs-gf256"
MAX_SHARES = 256  # zfec's limit on m
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Share:
    """One part as the signed index lists it: its file name, exact size and SHA-256."""

    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ParityIndex:
    """The erasure code over a split bundle's parts: enough to rebuild any ``parity`` of them."""

    parts_index_sha256: str  # the data parts index this parity belongs to
    share_size: int  # every share's length once padded with zeros: the part size
    stripe: int  # bytes per share the encoder read at a time (informative: the code is bytewise)
    data: tuple[Share, ...]
    parity: tuple[Share, ...]

    @property
    def k(self) -> int:
        """Shares needed to rebuild: the data parts."""
        return len(self.data)

    @property
    def m(self) -> int:
        """All shares: data and parity parts."""
        return len(self.data) + len(self.parity)

    @property
    def shares(self) -> tuple[Share, ...]:
        """Data parts then parity parts, in share order (share i is zfec block number i)."""
        return self.data + self.parity

    def to_bytes(self) -> bytes:
        """The one spelling that is signed."""
        return canonical_json(
            {
                "format": PARITY_FORMAT,
                "codec": CODEC,
                "k": self.k,
                "m": self.m,
                "share_size": self.share_size,
                "stripe": self.stripe,
                "parts_index_sha256": self.parts_index_sha256,
                "data": [_share_json(s) for s in self.data],
                "parity": [_share_json(s) for s in self.parity],
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes, where: str) -> ParityIndex:
        """Parses a parity index whose signature verified; anything but the canonical document
        the packer writes is refused (exit 3), naming ``where``."""
        try:
            doc = strict_json(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise TamperError(f"{where} is not JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != PARITY_FORMAT or doc.get("codec") != CODEC:
            raise TamperError(f"{where} is not an {PARITY_FORMAT} index with codec {CODEC}")
        try:
            index = cls(
                parts_index_sha256=_hex(doc["parts_index_sha256"]),
                share_size=_int(doc["share_size"], 1),
                stripe=_int(doc["stripe"], 1),
                data=tuple(_share(s) for s in doc["data"]),
                parity=tuple(_share(s) for s in doc["parity"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TamperError(f"{where} is malformed ({exc})") from None
        if (doc.get("k"), doc.get("m")) != (index.k, index.m) or not 0 < index.k < index.m <= MAX_SHARES:
            raise TamperError(f"{where} has inconsistent k and m")
        if any(s.size > index.share_size for s in index.shares) or any(
            s.size != index.share_size for s in index.parity
        ):
            raise TamperError(f"{where} lists a part larger than its share size")
        if len({s.name for s in index.shares}) != index.m:
            raise TamperError(f"{where} names a part twice")
        if index.to_bytes() != raw:
            raise TamperError(f"{where} is not in its canonical spelling")
        return index

    def check_parts_index(self, parts_index: bytes, entries: list[tuple[str, str]], where: str) -> None:
        """The parity belongs to exactly these data parts: the same signed parts index, the same
        names and hashes in the same order (otherwise exit 3)."""
        if hashlib.sha256(parts_index).hexdigest() != self.parts_index_sha256:
            raise TamperError(f"{where} belongs to another parts index: the two were mixed")
        if [(s.name, s.sha256) for s in self.data] != entries:
            raise TamperError(f"{where} lists other data parts than the parts index")


def parity_index_name(parts_index_name: str) -> str:
    """``NAME.airgap.tar.parts.sha256`` → ``NAME.airgap.tar.parity.json``."""
    return parts_index_name[: -len(PARTS_INDEX_SUFFIX)] + PARITY_INDEX_SUFFIX


def parity_part_name(base_name: str, number: int) -> str:
    """Parity parts do not match ``BASE.part-*``: ``cat BASE.part-*`` stays the bundle."""
    return f"{base_name}.parity-{number:03d}"


def stripe_for(shares: int, budget: int = 32 << 20) -> int:
    """Bytes per share read at a time: all shares of one stripe (read, and rebuilt) fit in
    ``budget``, whatever the number of parts, so memory does not grow with the bundle."""
    per_share = budget // (2 * max(shares, 1))
    return max(64 << 10, min(1 << 20, per_share - per_share % 4096))


def check_layout(data_parts: int, parity: int) -> None:
    """zfec holds at most 256 shares: the caller says what to change when there are more."""
    if data_parts + parity > MAX_SHARES:
        raise UsageError(
            f"{data_parts} data parts and {parity} parity parts are more than the {MAX_SHARES} "
            "shares the erasure code holds",
            hint="choose a larger --part-size (fewer parts) or fewer --parity parts",
        )


def _share_json(s: Share) -> dict[str, object]:
    return {"name": s.name, "size": s.size, "sha256": s.sha256}


def _share(doc: object) -> Share:
    if not isinstance(doc, dict) or set(doc) != {"name", "size", "sha256"}:
        raise ValueError("a part entry must have exactly name, size and sha256")
    name = doc["name"]
    if not isinstance(name, str) or not names.is_file_name(name):
        raise ValueError(f"part name {name!r} is not a plain file name")
    return Share(name, _int(doc["size"], 0), _hex(doc["sha256"]))


def _int(value: object, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low or value >= 1 << 62:
        raise ValueError(f"{value!r} is not a size")
    return value


def _hex(value: object) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise ValueError(f"{value!r} is not a SHA-256")
    return value
