"""Bundle format v1: the manifest, its file list, SHA256SUMS and the parts index, as values.

Nothing here touches the disk. ``Manifest.from_json`` either returns a manifest whose every field
is checked (types, sizes, digests, safe paths, no duplicates) or raises; the verifier uses it
only after the signature over the exact bytes has been checked.
See docs/bundle-format.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airgap.errors import IntegrityError, InvalidInputError

FORMAT = "airgap.bundle/v1"
ROOT = "bundle"
MANIFEST = f"{ROOT}/manifest.json"
MANIFEST_SIG = f"{ROOT}/manifest.json.sig"
SUMS = f"{ROOT}/SHA256SUMS"
SUMS_SIG = f"{ROOT}/SHA256SUMS.sig"
CONTROL = (MANIFEST, MANIFEST_SIG, SUMS, SUMS_SIG)
SIGNATURE_ALGORITHM = "ecdsa-p384-sha384"
MAX_MANIFEST = 4 << 20  # read before its signature is checked: bounds verify's memory
MAX_SIG = 1024
MAX_RATIO = 1000  # the most a compressed member may expand (decompression-bomb bound)
PARTS_INDEX_SUFFIX = ".parts.sha256"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SEGMENT = re.compile(r"^[A-Za-z0-9._+@=,-][A-Za-z0-9._+@=,~-]*$")


def canonical_json(value: object) -> bytes:
    """The one serialization that is signed: sorted keys, no spaces, UTF-8, trailing newline."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def check_member_path(path: str) -> str:
    """Refuses any path that could escape or confuse: absolute, ``..``, empty or odd segments.

    Paths are relative to the bundle root, ``/``-separated, made of plain segments only.
    """
    if not path or len(path) > 512 or path.startswith("/") or "\\" in path or "\x00" in path:
        raise IntegrityError(f"unsafe path in bundle: {path!r}")
    for seg in path.split("/"):
        if seg in ("", ".", "..") or not _SEGMENT.match(seg):
            raise IntegrityError(f"unsafe path in bundle: {path!r} (segment {seg!r})")
    return path


@dataclass(frozen=True)
class FileEntry:
    """One content file: how it is stored in the archive, and what it is once decompressed."""

    path: str  # stored member path, relative to bundle/
    size: int
    sha256: str
    compression: str | None = None  # "zstd" when stored compressed
    content_size: int | None = None
    content_sha256: str | None = None

    @property
    def content_path(self) -> str:
        return self.path[: -len(".zst")] if self.compression == "zstd" else self.path

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "size": self.size, "sha256": self.sha256}
        if self.compression:
            out["compression"] = self.compression
            out["content"] = {"size": self.content_size, "sha256": self.content_sha256}
        return out

    @classmethod
    def from_json(cls, data: object, where: str) -> FileEntry:
        if not isinstance(data, dict):
            raise InvalidInputError(f"manifest: {where} is not an object")
        path = check_member_path(_str(data, "path", where))
        size = _int(data, "size", where)
        sha = _digest(data, "sha256", where)
        comp = data.get("compression")
        if comp is None:
            return cls(path, size, sha)
        if comp != "zstd" or not path.endswith(".zst"):
            raise InvalidInputError(f"manifest: {where}: unsupported compression {comp!r} for {path}")
        content = data.get("content")
        if not isinstance(content, dict):
            raise InvalidInputError(f"manifest: {where}: compressed file without content size and hash")
        csize = _int(content, "size", where)
        if csize > max(size, 1) * MAX_RATIO:
            raise IntegrityError(
                f"{path} claims to expand {size} bytes into {csize} (over {MAX_RATIO}:1): "
                "refusing a decompression bomb"
            )
        return cls(path, size, sha, "zstd", csize, _digest(content, "sha256", where))


def _str(d: Mapping[str, Any], key: str, where: str) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v:
        raise InvalidInputError(f"manifest: {where}.{key} must be a non-empty string")
    return v


def _int(d: Mapping[str, Any], key: str, where: str) -> int:
    v = d.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v > 1 << 50:
        raise InvalidInputError(f"manifest: {where}.{key} must be a non-negative integer")
    return v


def _digest(d: Mapping[str, Any], key: str, where: str) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not _HEX64.match(v):
        raise InvalidInputError(f"manifest: {where}.{key} must be 64 lowercase hex digits")
    return v


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    created: str
    expires: str | None
    tool: str
    key_id: str
    files: tuple[FileEntry, ...]
    target_profile_sha256: str | None = None
    images: tuple[Mapping[str, Any], ...] = ()
    locks: Mapping[str, str] = field(default_factory=dict)
    policy: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "expires": self.expires,
            "tool": self.tool,
            "signer": {"key_id": self.key_id, "algorithm": SIGNATURE_ALGORITHM},
            "target_profile_sha256": self.target_profile_sha256,
            "files": [f.to_json() for f in sorted(self.files, key=lambda f: f.path)],
            "images": list(self.images),
            "locks": dict(self.locks),
            "policy": dict(self.policy),
            **({"extra": dict(self.extra)} if self.extra else {}),
        }

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    def by_path(self) -> dict[str, FileEntry]:
        return {f.path: f for f in self.files}

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"manifest.json is not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InvalidInputError(f"manifest.json is not an {FORMAT} manifest")
        signer = data.get("signer")
        if not isinstance(signer, dict) or signer.get("algorithm") != SIGNATURE_ALGORITHM:
            raise IntegrityError(f"manifest: signer.algorithm must be {SIGNATURE_ALGORITHM}")
        files_raw = data.get("files")
        if not isinstance(files_raw, list):
            raise InvalidInputError("manifest: files must be a list")
        files = tuple(FileEntry.from_json(f, f"files[{i}]") for i, f in enumerate(files_raw))
        seen: set[str] = set()
        for f in files:
            key = f.path.lower()
            if key in seen or f.path in CONTROL or f.path.split("/", 1)[0] in ("manifest.json", "SHA256SUMS"):
                raise IntegrityError(f"manifest lists {f.path} twice or over a control file")
            seen.add(key)
        expires = data.get("expires")
        if expires is not None and not isinstance(expires, str):
            raise InvalidInputError("manifest: expires must be a timestamp or null")
        profile = data.get("target_profile_sha256")
        return cls(
            name=_str(data, "name", "manifest"),
            version=_str(data, "version", "manifest"),
            created=_str(data, "created", "manifest"),
            expires=expires,
            tool=_str(data, "tool", "manifest"),
            key_id=_digest(signer, "key_id", "signer"),
            files=files,
            target_profile_sha256=profile if isinstance(profile, str) else None,
            images=tuple(i for i in data.get("images", []) if isinstance(i, dict)),
            locks={k: v for k, v in (data.get("locks") or {}).items() if isinstance(v, str)},
            policy=_mapping(data.get("policy")),
            extra=_mapping(data.get("extra")),
        )


def _mapping(value: object) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def render_sums(entries: Sequence[tuple[str, str]]) -> bytes:
    """``sha256sum -c`` format, paths relative to the bundle/ directory, sorted."""
    return "".join(f"{sha}  {path}\n" for path, sha in sorted(entries)).encode()


def parse_sums(raw: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        m = re.match(r"^([0-9a-f]{64})  (\S.*)$", line)
        if not m:
            raise IntegrityError(f"SHA256SUMS has a malformed line: {line[:80]!r}")
        path = check_member_path(m.group(2))
        if path in out:
            raise IntegrityError(f"SHA256SUMS lists {path} twice")
        out[path] = m.group(1)
    return out


def part_name(bundle_name: str, index: int) -> str:
    return f"{bundle_name}.part-{index:03d}"


def parse_size(text: str) -> int:
    """A media size: ``4G``, ``4.7G``, ``700M`` are decimal, as media are sold (a 4.7G DVD holds
    4.7e9 bytes; 4G fits FAT32's 4 GiB − 1 limit); ``4GiB``/``4Gi`` are binary."""
    m = re.match(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?$", text.strip(), re.IGNORECASE)
    if not m:
        raise InvalidInputError(f"{text!r} is not a size such as 4G, 4.7G, 700M or 2GiB")
    power = " KMGT".index(m.group(2).upper() or " ")
    base = 1024 if m.group(3) else 1000
    size = int(float(m.group(1)) * base**power)
    if size < 1 << 20:
        raise InvalidInputError(f"part size {text!r} is below 1 MiB")
    return size
