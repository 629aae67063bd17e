"""Bundle format v1: the manifest, its file list, SHA256SUMS and the parts index, as values.

Nothing here touches the disk. ``Manifest.from_json`` either returns a manifest whose every field
is checked (types, sizes, digests, safe paths, no duplicates) or raises; the verifier uses it
only after the signature over the exact bytes has been checked.
See docs/bundle-format.md.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airgap.core import checksums, names, versions
from airgap.core.severity import SEVERITIES
from airgap.core.signing import DEFAULT_ALGORITHM, allowed_algorithm
from airgap.errors import IntegrityError, InvalidInputError

FORMAT = "airgap.bundle/v1"
FORMAT_V2 = "airgap.bundle/v2"  # content-addressed: core/bundle_v2.py
ROOT = "bundle"
MANIFEST = f"{ROOT}/manifest.json"
MANIFEST_SIG = f"{ROOT}/manifest.json.sig"
SUMS = f"{ROOT}/SHA256SUMS"
SUMS_SIG = f"{ROOT}/SHA256SUMS.sig"
CONTROL = (MANIFEST, MANIFEST_SIG, SUMS, SUMS_SIG)
_CONTROL_NAMES = frozenset(c.split("/", 1)[1] for c in CONTROL)
SIGNATURE_ALGORITHM = DEFAULT_ALGORITHM  # the name itself lives in core/signing.py
MAX_MANIFEST = 4 << 20  # read before its signature is checked: bounds verify's memory
MAX_SIG = 1024
MAX_RATIO = 1000  # the most a compressed member may expand (decompression-bomb bound)
# The largest zstd window a member may need (the packer's level 3 uses 2 MiB): a signed frame
# cannot make the verifier allocate more than this to decompress it.
MAX_ZSTD_WINDOW = 8 << 20
# The name of a split bundle's signed parts index: the bundle's file name and this suffix.
PARTS_INDEX_SUFFIX = checksums.PARTS_INDEX_SUFFIX
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def canonical_json(value: object) -> bytes:
    """The one serialization that is signed: sorted keys, no spaces, UTF-8, trailing newline."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def strict_json(raw: bytes) -> Any:
    """JSON as the packer writes it, and nothing a lenient reader would also take: UTF-8 only,
    no duplicate keys (one reader sees the first, another the last), no NaN or Infinity."""
    return json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key!r:.40} appears twice in one object")
        out[key] = value
    return out


def check_member_path(path: str) -> str:
    """Refuses any archive member or layout path that could escape or confuse (``core/names.py``:
    absolute, ``..``, odd characters, a leading dot or dash, a control file's name below the top)
    as tampering; the four control files themselves are the members they are.

    Paths are relative to the bundle root, ``/``-separated, made of plain segments only.
    """
    if path in _CONTROL_NAMES:
        return path
    try:
        return names.check_path(path, "path in bundle", top_reserved=())
    except names.UnsafeName as exc:
        raise IntegrityError(exc.message) from None


def check_file_path(path: str, where: str) -> str:
    """A ``files[]`` path of a signed manifest: one the far side can create (``core/names.py``);
    otherwise the publisher's tooling wrote an invalid bundle (exit 4, naming the entry)."""
    try:
        return names.check_path(path, f"path in {where}", top_reserved=())
    except names.UnsafeName as exc:
        raise _bad_name(exc) from None


def _bad_name(exc: names.UnsafeName) -> names.UnsafeName:
    return names.UnsafeName(
        exc.entry,
        f"the signed manifest is malformed: {exc.message}",
        hint="the publisher's tooling wrote a bundle the far side cannot lay out; "
        "refuse it and ask for a new one",
    )


@dataclass(frozen=True)
class FileEntry:
    """One content file: how it is stored in the archive, and what it is once decompressed."""

    path: str  # stored member path, relative to bundle/
    size: int
    sha256: str
    compression: str | None = None  # "zstd" when stored compressed
    content_size: int | None = None
    content_sha256: str | None = None
    external: bool = False  # v2 only: the blob is left out; the far side's blob store holds it

    @property
    def content_path(self) -> str:
        """The path this file is extracted to: the stored path without ``.zst`` when the member is compressed.
        Duplicate checks compare these, since two stored names must not land on one file."""
        return self.path[: -len(".zst")] if self.compression == "zstd" else self.path

    def to_json(self) -> dict[str, Any]:
        """The entry as the signed manifest spells it; ``content`` is written only for a compressed member, so
        its decompressed size and hash are signed too."""
        out: dict[str, Any] = {"path": self.path, "size": self.size, "sha256": self.sha256}
        if self.compression:
            out["compression"] = self.compression
            out["content"] = {"size": self.content_size, "sha256": self.content_sha256}
        if self.external:
            out["external"] = True
        return out

    @classmethod
    def from_json(cls, data: object, where: str) -> FileEntry:
        """One ``files[]`` entry, refused before any byte of the member is read if its path is unsafe, its
        compression unknown, a compressed member has no content size and hash, or it claims to expand more
        than ``MAX_RATIO`` times (a decompression bomb)."""
        if not isinstance(data, dict):
            raise InvalidInputError(f"manifest: {where} is not an object")
        _object(data, where, frozenset({"path", "size", "sha256", "compression", "content"}))
        path = check_file_path(_str(data, "path", where), where)
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
        _object(content, f"{where}.content", frozenset({"size", "sha256"}))
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
    if not isinstance(v, str) or not _HEX64.fullmatch(v):
        raise InvalidInputError(f"manifest: {where}.{key} must be 64 lowercase hex digits")
    return v


_DIGEST_REF = re.compile(r"^sha256:[0-9a-f]{64}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_RFC3339 = re.compile(
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_IMAGE_NAME = re.compile(r"^[a-z0-9][a-zA-Z0-9._/:+-]{0,254}$")
# A name as the manifests use it: optionally pinned by digest.
_IMAGE_REF = re.compile(r"^[a-z0-9][a-zA-Z0-9._/:+-]{0,254}(@sha256:[0-9a-f]{64})?$")
_USER = re.compile(r"^[A-Za-z0-9._:-]{0,64}$")
_RULE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
MAX_TEXT = 256
MAX_LIST = 100_000
_TOP_LEVEL = frozenset(
    {
        "format",
        "name",
        "version",
        "created",
        "expires",
        "tool",
        "signer",
        "target_profile_sha256",
        "files",
        "images",
        "locks",
        "policy",
        "extra",
    }
)


def _bad(field_name: str, why: str) -> InvalidInputError:
    return InvalidInputError(
        f"the signed manifest is malformed: {field_name} {why}",
        hint="the publisher's tooling wrote an invalid bundle; refuse it and ask for a new one",
    )


def parse_timestamp(text: object, field_name: str) -> dt.datetime:
    """An RFC 3339 timestamp with an explicit zone (``Z`` or ``±HH:MM``), as an aware datetime."""
    m = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise _bad(
            field_name,
            f"is not an RFC 3339 timestamp with a zone (such as 2027-01-31T00:00:00Z): {text!r:.80}",
        )
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    frac = m.group(7) or ""
    zone = m.group(8)
    try:
        if zone in ("Z", "z"):
            tz = dt.timezone.utc
        else:
            sign = -1 if zone[0] == "-" else 1
            hours, minutes = int(zone[1:3]), int(zone[4:6])
            if hours > 23 or minutes > 59:
                raise ValueError("zone offset out of range")
            tz = dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
        micro = int((frac[1:] + "000000")[:6]) if frac else 0
        # A leap second (60) is valid RFC 3339; it is taken as the last instant of its minute.
        return dt.datetime(year, month, day, hour, minute, min(second, 59), micro, tzinfo=tz)
    except ValueError as exc:
        raise _bad(field_name, f"is not a valid instant ({exc}): {text!r:.80}") from None


def format_timestamp(when: dt.datetime) -> str:
    """The one spelling airgap writes: UTC, whole seconds, ``Z``."""
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(
    value: object, field_name: str, pattern: re.Pattern[str] | None = None, limit: int = MAX_TEXT
) -> str:
    if not isinstance(value, str) or not value or len(value) > limit or not value.isprintable():
        raise _bad(field_name, f"must be a printable string of at most {limit} characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise _bad(field_name, f"has a value that is not allowed: {value!r:.80}")
    return value


def _object(value: object, field_name: str, allowed: frozenset[str] | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(field_name, f"must be an object, not {type(value).__name__}")
    if allowed is not None:
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise _bad(f"{field_name}.{unknown[0]}", "is not a field this format has")
    return value


def _list(value: object, field_name: str) -> list[Any]:
    if not isinstance(value, list):
        raise _bad(field_name, f"must be a list, not {type(value).__name__}")
    if len(value) > MAX_LIST:
        raise _bad(field_name, f"has more than {MAX_LIST} entries")
    return value


def _count(value: object, field_name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value > 1 << 50:
        raise _bad(field_name, "must be a non-negative integer")
    return value


@dataclass(frozen=True)
class ImageEntry:
    """One image the bundle carries as an OCI layout; its digests name the blobs on disk."""

    name: str
    layout: str
    manifest_digest: str
    config_digest: str
    layers: tuple[tuple[str, int], ...]
    user: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The entry as the signed manifest spells it, layers as ``{digest, size}`` objects."""
        return {
            "name": self.name,
            "layout": self.layout,
            "manifest_digest": self.manifest_digest,
            "config_digest": self.config_digest,
            "layers": [{"digest": d, "size": s} for d, s in self.layers],
            "user": self.user,
        }

    @classmethod
    def from_json(cls, data: object, where: str) -> ImageEntry:
        """One ``images[]`` entry: unknown fields, a layout path that could leave the bundle, digests that are
        not ``sha256:`` and a user that is not a name or uid[:gid] are refused, since the name and user
        reach the container runtime."""
        obj = _object(
            data, where, frozenset({"name", "layout", "manifest_digest", "config_digest", "layers", "user"})
        )
        layout = _text(obj.get("layout"), f"{where}.layout")
        try:
            check_member_path(layout)
        except IntegrityError:
            raise _bad(f"{where}.layout", f"is not a safe relative path: {layout!r:.80}") from None
        layers = []
        for i, layer in enumerate(_list(obj.get("layers"), f"{where}.layers")):
            lobj = _object(layer, f"{where}.layers[{i}]", frozenset({"digest", "size"}))
            layers.append(
                (
                    _text(lobj.get("digest"), f"{where}.layers[{i}].digest", _DIGEST_REF),
                    _count(lobj.get("size"), f"{where}.layers[{i}].size"),
                )
            )
        user = obj.get("user")
        if user is not None and (not isinstance(user, str) or not _USER.fullmatch(user)):
            raise _bad(f"{where}.user", "must be a user name or uid[:gid], or null")
        return cls(
            name=_text(obj.get("name"), f"{where}.name", _IMAGE_NAME),
            layout=layout,
            manifest_digest=_text(obj.get("manifest_digest"), f"{where}.manifest_digest", _DIGEST_REF),
            config_digest=_text(obj.get("config_digest"), f"{where}.config_digest", _DIGEST_REF),
            layers=tuple(layers),
            user=user,
        )


def check_policy(value: object) -> dict[str, Any]:
    """The signed compliance verdict: ``{}`` (not evaluated) or ``fail_on``, ``failed``,
    ``summary`` (counts by status and severity), ``blocking`` rule ids and, when the publisher
    signed a failed evaluation anyway, ``unsafe_signed_failed_policy``."""
    obj = _object(
        value,
        "policy",
        frozenset({"fail_on", "failed", "summary", "blocking", "unsafe_signed_failed_policy"}),
    )
    if not obj:
        return {}
    if not isinstance(obj.get("failed"), bool):
        raise _bad("policy.failed", "must be true or false")
    if obj.get("fail_on") not in SEVERITIES:
        raise _bad("policy.fail_on", f"must be one of {', '.join(SEVERITIES)}")
    summary = _object(obj.get("summary", {}), "policy.summary")
    for status, counts in summary.items():
        _text(status, "policy.summary key", _RULE_ID)
        for severity, n in _object(counts, f"policy.summary.{status}").items():
            _text(severity, f"policy.summary.{status} key", _RULE_ID)
            _count(n, f"policy.summary.{status}.{severity}")
    for i, rule in enumerate(_list(obj.get("blocking", []), "policy.blocking")):
        _text(rule, f"policy.blocking[{i}]", _RULE_ID)
    unsafe = obj.get("unsafe_signed_failed_policy", False)
    if not isinstance(unsafe, bool):
        raise _bad("policy.unsafe_signed_failed_policy", "must be true or false")
    return dict(obj)


@dataclass(frozen=True)
class Manifest:
    """The signed description of a bundle. Built by the packer; parsed from bytes only after the
    signature over those bytes verified, and then every field is checked before anything uses it:
    the name and version become directory, container and image names on the far side."""

    name: str
    version: str
    created: str
    expires: str | None
    tool: str
    key_id: str
    files: tuple[FileEntry, ...]
    target_profile_sha256: str | None = None
    images: tuple[ImageEntry, ...] = ()
    locks: Mapping[str, str] = field(default_factory=dict)
    policy: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    algorithm: str = DEFAULT_ALGORITHM  # the signer's, from the verifier's allow-list
    format: str = FORMAT
    # The stored members when a format stores them apart from the files (v2: each content once,
    # named by it, listed as the manifest's ``blobs``); None when each file is its own member.
    blobs: tuple[FileEntry, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        """The manifest as a JSON value. Files are sorted by path and the format and algorithm come from the
        constants, so the same contents always give the same signed bytes."""
        return {
            "format": self.format,
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "expires": self.expires,
            "tool": self.tool,
            "signer": {"key_id": self.key_id, "algorithm": self.algorithm},
            "target_profile_sha256": self.target_profile_sha256,
            "files": [f.to_json() for f in sorted(self.files, key=lambda f: f.path)],
            "images": [i.to_json() for i in self.images],
            "locks": dict(self.locks),
            "policy": dict(self.policy),
            **({"extra": dict(self.extra)} if self.extra else {}),
            **(
                {"blobs": [b.to_json() for b in sorted(self.blobs, key=lambda b: b.path) if b.compression]}
                if self.blobs is not None
                else {}
            ),
        }

    def to_bytes(self) -> bytes:
        """The exact bytes that are signed and shipped as ``manifest.json``."""
        return canonical_json(self.to_json())

    def by_path(self) -> dict[str, FileEntry]:
        """Files keyed by stored path, for looking up each member as the archive streams past."""
        return {f.path: f for f in self.files}

    @property
    def stored(self) -> tuple[FileEntry, ...]:
        """The archive's members after the control files: the blobs where the format lists them,
        else the files."""
        return self.files if self.blobs is None else self.blobs

    @property
    def total_size(self) -> int:
        """Bytes the stored files take in the archive (compressed sizes), for progress and size reports:
        in v2 the blobs, each once, and nothing for the files whose blob is external."""
        return sum(f.size for f in self.stored)

    @property
    def expires_at(self) -> dt.datetime | None:
        """The expiry as an aware datetime, or None when the publisher set none."""
        return parse_timestamp(self.expires, "expires") if self.expires is not None else None

    @property
    def policy_failed(self) -> bool | None:
        """True or False as the signed evaluation failed or passed; None when none was signed."""
        failed = self.policy.get("failed")
        return failed if isinstance(failed, bool) else None

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        """Parses manifest bytes; call it only after the signature over exactly these bytes verified. It
        refuses what a lenient reader would take: another format or signing algorithm, unknown fields, a
        file listed twice (case-insensitively, over a control file, or as two names that extract to one
        path), a name or version unsafe as a directory or image name, and malformed timestamps, images,
        locks or policy."""
        data = load_manifest(raw, FORMAT, _TOP_LEVEL)
        algorithm = signer_algorithm(data)
        files_raw = _list(data.get("files"), "files")
        files = tuple(FileEntry.from_json(f, f"files[{i}]") for i, f in enumerate(files_raw))
        check_distinct(files, ())
        return cls(files=files, algorithm=algorithm, **common_fields(data))


def load_manifest(raw: bytes, fmt: str, top_level: frozenset[str]) -> dict[str, Any]:
    """The manifest's JSON object, read strictly, of format ``fmt`` and with no unknown field."""
    try:
        data = strict_json(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidInputError(f"manifest.json is not JSON: {str(exc)[:120]}") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise InvalidInputError(f"manifest.json is not an {fmt} manifest")
    unknown = sorted(set(data) - top_level)
    if unknown:
        raise _bad(unknown[0], "is not a field this format has")
    return data


def signer_algorithm(data: Mapping[str, Any]) -> str:
    """The signer's algorithm, which must be on the verifier's allow-list."""
    signer = _object(data.get("signer"), "signer", frozenset({"key_id", "algorithm"}))
    return allowed_algorithm(signer.get("algorithm")).name


def check_distinct(files: Sequence[FileEntry], reserved: Sequence[str]) -> None:
    """The files can all be laid out as one tree, both as stored (what ``tar -x`` makes) and as
    extracted (what install makes, ``.zst`` removed): no name twice or twice ignoring case and
    Unicode normalisation, no control file's name, nothing under a name ``reserved`` at the top
    (compared ignoring case), no file that is also another's directory (``core/names.py``).
    Refused as invalid input (exit 4) naming the entry, at verify time: install never meets it."""
    top = (*names.CONTROL_NAMES, *names.INSTALLER_NAMES, *reserved)
    try:
        names.check_tree((f.path for f in files), "file", top)
    except names.UnsafeName as exc:
        raise _bad_name(exc) from None
    if not any(f.compression for f in files):
        return
    # model/a.json and model/a.json.zst (or A.json) would both be written to one file.
    content: dict[str, str] = {}
    for f in files:
        other = content.setdefault(names.twin_key(f.content_path), f.path)
        if other != f.path:
            raise _bad("files", f"list {other} and {f.path}, which are the same file once extracted")
    try:
        names.check_tree((f.content_path for f in files), "extracted file", top)
    except names.UnsafeName as exc:
        raise _bad_name(exc) from None


def common_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """Every field but the file lists and the algorithm, checked: the part all formats share."""
    name = data.get("name")
    if not isinstance(name, str) or not _DNS_LABEL.fullmatch(name):
        raise _bad("name", f"must be a lowercase DNS label (a-z, 0-9, '-', at most 63): {name!r:.80}")
    version = data.get("version")
    if not isinstance(version, str) or not versions.is_valid(version):
        raise _bad("version", f"must be a semantic version (such as 1.2.0): {version!r:.80}")
    created = data.get("created")
    parse_timestamp(created, "created")
    expires = data.get("expires")
    if expires is not None:
        parse_timestamp(expires, "expires")
    profile = data.get("target_profile_sha256")
    if profile is not None and not (isinstance(profile, str) and _HEX64.fullmatch(profile)):
        raise _bad("target_profile_sha256", "must be 64 lowercase hex digits or null")
    images = tuple(
        ImageEntry.from_json(img, f"images[{i}]")
        for i, img in enumerate(_list(data.get("images", []), "images"))
    )
    locks: dict[str, str] = {}
    for kind, digest in _object(data.get("locks", {}), "locks").items():
        _text(kind, "locks key", _RULE_ID)
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise _bad(f"locks.{kind}", "must be 64 lowercase hex digits")
        locks[kind] = digest
    return {
        "name": name,
        "version": version,
        "created": str(created),
        "expires": expires,
        "tool": _text(data.get("tool"), "tool"),
        "key_id": _digest(data["signer"], "key_id", "signer"),
        "target_profile_sha256": profile,
        "images": images,
        "locks": locks,
        "policy": check_policy(data.get("policy", {})),
        "extra": dict(_object(data.get("extra", {}), "extra")),
    }


BUILD_RECORD = "build.json"
MAX_BUILD_RECORD = 4 << 20
_CPU = re.compile(r"^(?:[0-9]{1,6}m|[0-9]{1,4}(?:\.[0-9]{1,3})?)$")
_MEMORY = re.compile(r"^[0-9]{1,12}(?:\.[0-9]{1,3})?(?:Ki|Mi|Gi|Ti|K|M|G)?$")


def build_record_error(field_name: str, why: str) -> InvalidInputError:
    """The refusal of a malformed build.json, naming the field (core/build_record.py uses it too)."""
    return InvalidInputError(
        f"build.json is malformed: {field_name} {why}",
        hint="a bundle carrying it is refused; rebuild it with `airgap bundle`",
    )


def check_build_record(raw: bytes) -> dict[str, Any]:
    """The signed build record, with every field the far side acts on checked for its type: the
    port it serves on, the resource limits, the Kubernetes image and namespace, the model file.
    Called at verify time, so install never meets a record it cannot use."""
    try:
        data = strict_json(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise build_record_error("the document", f"is not UTF-8 JSON ({str(exc)[:80]})") from None
    if not isinstance(data, dict):
        raise build_record_error("the document", f"must be an object, not {type(data).__name__}")
    serving = data.get("serving")
    if serving is not None:
        _build_object(serving, "serving")
        port = serving.get("port")
        if port is not None and (
            not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535
        ):
            raise build_record_error("serving.port", f"must be a TCP port (1-65535): {port!r:.40}")
    resources = data.get("resources")
    if resources is not None:
        _build_object(resources, "resources")
        limits = resources.get("limits")
        if limits:
            _build_object(limits, "resources.limits")
            for key, pattern in (("cpu", _CPU), ("memory", _MEMORY)):
                value = limits.get(key)
                if not isinstance(value, str) or not pattern.fullmatch(value):
                    raise build_record_error(f"resources.limits.{key}", f"is not a quantity: {value!r:.40}")
    manifests = data.get("manifests")
    if manifests is not None:
        _build_object(manifests, "manifests")
        image = manifests.get("image")
        if image is not None and (not isinstance(image, str) or not _IMAGE_REF.fullmatch(image)):
            raise build_record_error("manifests.image", f"is not an image reference: {image!r:.80}")
        namespace = manifests.get("namespace")
        if namespace is not None and (not isinstance(namespace, str) or not _DNS_LABEL.fullmatch(namespace)):
            raise build_record_error("manifests.namespace", f"is not a DNS label: {namespace!r:.80}")
    model = data.get("model")
    if model is not None:
        _build_object(model, "model")
        file = model.get("file")
        try:
            check_member_path(file if isinstance(file, str) else "")
        except IntegrityError:
            raise build_record_error("model.file", f"is not a safe relative path: {file!r:.80}") from None
    image_section = data.get("image")
    if isinstance(image_section, dict) and image_section.get("model_image") is not None:
        _check_model_image(image_section["model_image"])
    return data


def _check_model_image(section: object) -> None:
    """The model image's digests name blobs and its settings reach a container runtime: both are
    refused unless they are exactly what they claim to be."""
    from airgap.core.model_layer import check_env

    where = "image.model_image"
    _build_object(section, where)
    assert isinstance(section, dict)
    layer = section.get("layer")
    _build_object(layer, f"{where}.layer")
    assert isinstance(layer, dict)
    for name, value in (
        ("manifest_digest", section.get("manifest_digest")),
        ("config_digest", section.get("config_digest")),
        ("layer.digest", layer.get("digest")),
    ):
        if not isinstance(value, str) or not _DIGEST_REF.fullmatch(value):
            raise build_record_error(f"{where}.{name}", f"is not a sha256 digest: {value!r:.80}")
    size = layer.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 < size < 1 << 50:
        raise build_record_error(f"{where}.layer.size", f"is not a size: {size!r:.40}")
    try:
        check_env(section.get("env"), f"{where}.env")
    except IntegrityError as exc:
        raise build_record_error(f"{where}.env", str(exc)) from None


def _build_object(value: object, field_name: str) -> None:
    if not isinstance(value, dict):
        raise build_record_error(field_name, f"must be an object, not {type(value).__name__}")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def render_sums(entries: Sequence[tuple[str, str]]) -> bytes:
    """``sha256sum -c`` format, paths relative to the bundle/ directory, sorted."""
    return "".join(f"{sha}  {path}\n" for path, sha in sorted(entries)).encode()


def parse_size(text: str) -> int:
    """A media size: ``4G``, ``4.7G``, ``700M`` are decimal, as media are sold (a 4.7G DVD holds
    4.7e9 bytes; 4G fits FAT32's 4 GiB − 1 limit); ``4GiB``/``4Gi`` are binary."""
    m = re.match(r"^([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(i?)B?$", text.strip(), re.IGNORECASE)
    if not m:
        raise InvalidInputError(f"{text!r} is not a size such as 4G, 4.7G, 700M or 2GiB")
    power = " KMGT".index(m.group(2).upper() or " ")
    base = 1024 if m.group(3) else 1000
    size = int(float(m.group(1)) * base**power)
    if size < 1 << 20:
        raise InvalidInputError(f"part size {text!r} is below 1 MiB")
    return size
