"""Real signed bundles for tests: packed by airgap from a small synthetic staging directory, and
hand-crafted archives that carry an attack, signed with real keys."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from airgap.adapters import keys
from airgap.adapters.signers import FileSigner, Signer
from airgap.core.bundle_format import SIGNATURE_ALGORITHM, canonical_json, render_sums
from airgap.errors import AirgapError
from airgap.services.build.pack import PackResult, pack
from airgap.services.media.verify import VerifyOptions, verify_bundle
from airgap.services.state import State
from tests.conftest import assert_one_line_error, run_airgap

PASS = b"correct horse battery staple"
EPOCH = 1700000000
LONG_LICENSE = "third-party-license-text-of-the-" + "very-long-named-dependency-" * 4 + "1.0"


def make_key(directory: Path, name: str) -> tuple[FileSigner, Path, str]:
    """A real key pair on disk, and the signer the CLI's ``--key file:...`` would give."""
    kid = keys.generate(directory / f"{name}.key", directory / f"{name}.pub", PASS)
    return FileSigner(directory / f"{name}.key", lambda: PASS), directory / f"{name}.pub", kid


def synthetic_staging(root: Path, version: str = "1.0.0") -> Path:
    """Every kind of file a staging directory holds, small, with one large compressible file."""
    st = root / f"demo-{version}"
    (st / "wheels").mkdir(parents=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in (("demo/__init__.py", "x = 1\n"), ("demo-1.0.dist-info/METADATA", "Name: demo\n")):
            zf.writestr(zipfile.ZipInfo(name, date_time=(2023, 11, 14, 22, 13, 20)), text)
    (st / "wheels" / "demo-1.0-py3-none-any.whl").write_bytes(buf.getvalue())
    (st / "requirements.lock").write_text("demo==1.0 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    (st / "model").mkdir()
    (st / "model" / "model.onnx").write_bytes(bytes(range(256)) * 64)
    (st / "model" / "contract.json").write_text(json.dumps({"cases": []}))
    # large and compressible: packed as .zst
    import random

    rng = random.Random(7)
    (st / "model" / "weights.bin").write_bytes(bytes(rng.choice(b"0123456789abcdef") for _ in range(640000)))
    (st / "model" / "tensors.bin").write_bytes(rng.randbytes(2_600_000))  # incompressible: stored raw
    blobs = st / "image" / "oci" / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    layer = gzip.compress(b"layer" * 1000, mtime=0)
    (blobs / hashlib.sha256(layer).hexdigest()).write_bytes(layer)
    (st / "image" / "oci" / "index.json").write_text("{}")
    (st / "manifests").mkdir()
    (st / "manifests" / "20-deployment.yaml").write_text("apiVersion: apps/v1\nkind: Deployment\n")
    (st / "build.json").write_text(json.dumps({"name": "demo", "version": version}))
    # a path over 100 bytes: its member needs a PAX header
    (st / "licenses").mkdir()
    (st / "licenses" / f"{LONG_LICENSE}.txt").write_text("Apache-2.0\n")
    for p in [st, *st.rglob("*")]:
        os.utime(p, (EPOCH, EPOCH))
    return st


def pass_policy(staging: Path) -> None:
    """Leaves a passing policy evaluation, as `airgap bundle` does: `pack` signs nothing without one."""
    (staging / "compliance").mkdir(exist_ok=True)
    (staging / "compliance" / "results.json").write_text(
        json.dumps({"failed": False, "fail_on": "high", "summary": {}, "blocking": []})
    )


def pack_demo(root: Path, key: Any, version: str = "1.0.0", **kw: Any) -> PackResult:
    """The synthetic staging directory packed; in format v1 unless ``bundle_format`` says otherwise,
    since the tamper suites edit v1 members by their paths (v2 has its own: test_attack_v2.py)."""
    kw.setdefault("bundle_format", "v1")
    st = (
        synthetic_staging(root / "staging", version)
        if not (root / "staging" / f"demo-{version}").exists()
        else (root / "staging" / f"demo-{version}")
    )
    return pack(st, root / "out", key, EPOCH, name="demo", version=version, **kw)


def members(bundle: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(bundle) as tf:
        return {m.name: m for m in tf.getmembers()}


def flip_byte_in(bundle: Path, member: str, offset: int = 0) -> None:
    info = members(bundle)[member]
    with open(bundle, "r+b") as fh:
        fh.seek(info.offset_data + offset)
        b = fh.read(1)
        fh.seek(info.offset_data + offset)
        fh.write(bytes([b[0] ^ 0x01]))


def rewrite(bundle: Path, edit: Any) -> None:
    """Rebuilds the archive member by member through ``edit(name, data) -> [(name, data, info)]``."""
    with tarfile.open(bundle) as tf:
        items = [(m, tf.extractfile(m).read() if m.isfile() else b"") for m in tf.getmembers()]  # type: ignore[union-attr]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tw:
        for m, data in items:
            for info, payload in edit(m, data):
                tw.addfile(info, io.BytesIO(payload) if payload is not None else None)
    bundle.write_bytes(out.getvalue())


def signed_archive(
    path: Path,
    key: Signer,
    files: dict[str, bytes],
    manifest_files: list[dict[str, Any]] | None = None,
    extra_members: list[tarfile.TarInfo] | None = None,
    **manifest_fields: Any,
) -> None:
    """A bundle whose manifest (signed by ``key``) says whatever the attack needs."""
    listed = (
        manifest_files
        if manifest_files is not None
        else [
            {"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
            for p, d in sorted(files.items())
        ]
    )
    doc = {
        "format": "airgap.bundle/v1",
        "name": "demo",
        "version": "1.0.0",
        "created": "2023-11-14T22:13:20Z",
        "expires": None,
        "tool": "airgap test",
        "target_profile_sha256": None,
        "images": [],
        "locks": {},
        "policy": {},
        "files": listed,
        "signer": {"key_id": key.key_id, "algorithm": SIGNATURE_ALGORITHM},
        **manifest_fields,
    }
    manifest = canonical_json(doc)
    msig = key.sign(manifest)
    sums = render_sums(
        [(f["path"], f["sha256"]) for f in listed]
        + [
            ("manifest.json", hashlib.sha256(manifest).hexdigest()),
            ("manifest.json.sig", hashlib.sha256(msig).hexdigest()),
        ]
    )
    control = [
        ("manifest.json", manifest),
        ("manifest.json.sig", msig),
        ("SHA256SUMS", sums),
        ("SHA256SUMS.sig", key.sign(sums)),
    ]
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tw:
        for name, data in [*control, *sorted(files.items())]:
            ti = tarfile.TarInfo(f"bundle/{name}")
            ti.size = len(data)
            ti.mtime = EPOCH  # the manifest's "created": the one mtime a bundle's headers carry
            tw.addfile(ti, io.BytesIO(data))
        for ti in extra_members or []:
            tw.addfile(ti, io.BytesIO(b"x" * ti.size) if ti.isfile() else None)


# ------------------------------------------------------------------ raw archive surgery (attacks)
def locate(bundle: Path, member: str) -> tarfile.TarInfo:
    """The member as ``tarfile`` sees it: ``offset`` is its first header block (its PAX header when
    it has one), ``offset_data`` its data."""
    return members(bundle)[member]


def header_at(data: bytes | bytearray, member: str) -> int:
    """Offset of the ustar header block of ``member`` (after its PAX header, if any)."""
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tf:
        info = tf.getmember(member)
    return info.offset_data - 512


def fix_checksum(data: bytearray, block: int) -> None:
    """Rewrites the header checksum at ``block`` as the packer spells it, so that only the edited
    field differs from the canonical header."""
    data[block + 148 : block + 156] = b" " * 8
    data[block + 148 : block + 156] = b"%06o\0 " % sum(data[block : block + 512])


def set_field(data: bytearray, block: int, start: int, value: bytes) -> None:
    """Overwrites a header field (``start`` within the block) and fixes the checksum."""
    data[block + start : block + start + len(value)] = value
    fix_checksum(data, block)


def pax_block(records: bytes, name: bytes = b"././@PaxHeader") -> bytes:
    """A PAX ``x`` header carrying ``records`` as given, padded, with a correct checksum."""
    block = bytearray(512)
    block[0 : len(name)] = name
    block[100:108] = b"0000000\0"
    block[108:116] = b"0000000\0"
    block[116:124] = b"0000000\0"
    block[124:136] = b"%011o\0" % len(records)
    block[136:148] = b"00000000000\0"
    block[156:157] = b"x"
    block[257:265] = b"ustar\x0000"
    fix_checksum(block, 0)
    return bytes(block) + records + b"\0" * (-len(records) % 512)


def record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    length = len(body)
    while len(body) + len(str(length)) != length:
        length = len(body) + len(str(length))
    return str(length).encode() + body


# ------------------------------------------------------------------ a signed bundle, verified by the CLI
def signed_env(tmp_path: Path) -> dict[str, Any]:
    """A publisher key, the demo bundle packed with it, and a far-side state that trusts the key."""
    key, pub, kid = make_key(tmp_path, "publisher")
    result = pack_demo(tmp_path, key)
    state = tmp_path / "state"
    assert run_airgap("keys", "trust", str(pub), "--state-dir", str(state)).returncode == 0
    return {"tmp": tmp_path, "key": key, "pub": pub, "kid": kid, "bundle": result.files[0], "state": state}


def verify(env: dict[str, Any], target: Path | None = None, *extra: str) -> Any:
    """``airgap verify`` in a subprocess; asserts it wrote nothing but its audit record and, only
    for a bundle it accepted, its attestation."""
    before = _tree(env["tmp"])
    proc = run_airgap("verify", str(target or env["bundle"]), "--state-dir", str(env["state"]), *extra)
    after = _tree(env["tmp"])
    changed = {p for p in after.keys() | before.keys() if after.get(p) != before.get(p)}
    attested = {p for p in changed if Path(p).parent == env["state"] / "attestations"}
    assert not attested or proc.returncode == 0, f"a bundle verify refused was attested: {attested}"
    assert changed - attested <= {str(env["state"] / "audit.log")}, (
        f"verify wrote outside its audit log: {changed}"
    )
    return proc


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def rejected(
    env: dict[str, Any],
    match: str,
    code: int = 3,
    target: Path | None = None,
    *extra: str,
    error: type[AirgapError] | None = None,
) -> str:
    """The attack is refused: ``code``, one line containing ``match``, and a 'rejected' audit record.

    With ``error``, the verify service itself, called as a library user would with the same
    trust store and installed versions, raises exactly that class of error."""
    line = assert_one_line_error(verify(env, target, *extra), code)
    assert match in line, line
    audit = [json.loads(x) for x in (env["state"] / "audit.log").read_text().splitlines()]
    assert audit[-1]["result"] == "rejected" and audit[-1]["exit_code"] == code
    if error is not None:
        state = State(env["state"])
        options = VerifyOptions(
            trusted=tuple(state.trust.keys()),
            installed_versions=state.installed_versions(),
            installed_manifests=state.installed_manifests(),
        )
        with pytest.raises(error) as caught:
            verify_bundle(target or env["bundle"], options)
        assert caught.value.exit_code == code and match in caught.value.one_line()
    return line
