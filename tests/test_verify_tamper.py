"""The tamper suite: one test per attack on a signed bundle, each named after it.

Every bundle here is real: packed by airgap (or hand-crafted and signed with a real P-384 key when
the attack needs a signed lie), verified by the real CLI in a subprocess. Each attack must exit 3
(4 when the input is not a bundle at all) with one line, and verification writes nothing but its
audit record.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard

from airgap.errors import (
    ExpiredError,
    IntegrityError,
    InvalidInputError,
    RollbackError,
    SignatureError,
    TamperError,
    UntrustedKeyError,
)
from tests.bundles import (
    flip_byte_in,
    make_key,
    members,
    pack_demo,
    rejected,
    rewrite,
    signed_archive,
    signed_env,
    verify,
)
from tests.conftest import assert_one_line_error, run_airgap


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    return signed_env(tmp_path)


def test_an_untouched_bundle_verifies_and_is_audited(env: dict[str, Any]) -> None:
    proc = verify(env)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((env["state"] / "audit.log").read_text().splitlines()[-1])
    assert record["result"] == "accepted" and record["key_id"] == env["kid"] and record["version"] == "1.0.0"
    assert record["who"]["uid"] == os.getuid()


@pytest.mark.parametrize(
    ("member", "match", "error"),
    [
        ("bundle/wheels/demo-1.0-py3-none-any.whl", "has been modified", TamperError),
        ("bundle/model/model.onnx", "has been modified", TamperError),
        ("bundle/model/weights.bin.zst", "has been modified", TamperError),
        ("bundle/manifests/20-deployment.yaml", "has been modified", TamperError),
        ("bundle/requirements.lock", "has been modified", TamperError),
        ("bundle/build.json", "has been modified", TamperError),
        ("bundle/manifest.json", "not signed by any trusted key", UntrustedKeyError),
        ("bundle/SHA256SUMS", "signature of SHA256SUMS does not verify", SignatureError),
    ],
)
def test_flipped_byte_in_each_kind_of_file(
    env: dict[str, Any], member: str, match: str, error: type[IntegrityError]
) -> None:
    flip_byte_in(env["bundle"], member, offset=3)
    rejected(env, match, error=error)


def test_flipped_byte_in_an_image_layer(env: dict[str, Any]) -> None:
    layer = next(m for m in members(env["bundle"]) if "/blobs/sha256/" in m)
    flip_byte_in(env["bundle"], layer, offset=10)
    rejected(env, "has been modified", error=TamperError)


def test_truncated_bundle(env: dict[str, Any]) -> None:
    data = env["bundle"].read_bytes()
    info = members(env["bundle"])["bundle/model/model.onnx"]
    env["bundle"].write_bytes(data[: info.offset_data + 100])
    rejected(env, "truncated", error=TamperError)


def test_missing_file(env: dict[str, Any]) -> None:
    rewrite(env["bundle"], lambda m, d: [] if m.name.endswith("model.onnx") else [(m, d)])
    rejected(env, "listed in the manifest but missing", error=TamperError)


def test_extra_file(env: dict[str, Any]) -> None:
    def add(m: tarfile.TarInfo, d: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
        out = [(m, d)]
        if m.name == "bundle/build.json":
            extra = tarfile.TarInfo("bundle/wheels/backdoor-1.0-py3-none-any.whl")
            extra.size = 4
            out.append((extra, b"evil"))
        return out

    rewrite(env["bundle"], add)
    rejected(
        env,
        "backdoor-1.0-py3-none-any.whl is in the bundle but not in its signed manifest",
        error=TamperError,
    )


def test_data_appended_after_the_archive(env: dict[str, Any]) -> None:
    with open(env["bundle"], "ab") as fh:
        fh.write(b"appended payload")
    rejected(env, "appended", error=TamperError)


def test_renamed_file(env: dict[str, Any]) -> None:
    def rename(m: tarfile.TarInfo, d: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
        if m.name.endswith("model.onnx"):
            m.name = "bundle/model/model2.onnx"
        return [(m, d)]

    rewrite(env["bundle"], rename)
    rejected(env, "model2.onnx is in the bundle but not in its signed manifest", error=TamperError)


def test_edited_manifest_keeps_old_signature(env: dict[str, Any]) -> None:
    def edit(m: tarfile.TarInfo, d: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
        if m.name == "bundle/manifest.json":
            d = d.replace(b'"version":"1.0.0"', b'"version":"9.9.9"')
            m.size = len(d)
        return [(m, d)]

    rewrite(env["bundle"], edit)
    rejected(env, "not signed by any trusted key", error=UntrustedKeyError)


def test_swapped_signature_from_another_bundle(env: dict[str, Any]) -> None:
    other = pack_demo(env["tmp"] / "other", env["key"], version="1.0.1").files[0]
    with tarfile.open(other) as tf:
        foreign_sig = tf.extractfile("bundle/manifest.json.sig").read()  # type: ignore[union-attr]

    def swap(m: tarfile.TarInfo, d: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
        if m.name == "bundle/manifest.json.sig":
            m.size = len(foreign_sig)
            return [(m, foreign_sig)]
        return [(m, d)]

    rewrite(env["bundle"], swap)
    rejected(env, "not signed by any trusted key", error=UntrustedKeyError)


def test_signature_by_an_untrusted_key_names_the_key(env: dict[str, Any]) -> None:
    mallory, _, mallory_id = make_key(env["tmp"], "mallory")
    evil = pack_demo(env["tmp"] / "mallory", mallory).files[0]
    line = rejected(env, "not trusted here", 3, evil, error=UntrustedKeyError)
    assert mallory_id in line


def test_older_version_replayed_is_refused_unless_allowed_loudly(env: dict[str, Any]) -> None:
    (env["state"] / "installed.json").write_text(
        json.dumps({"names": {"demo": {"highest_version": "2.0.0"}}})
    )
    rejected(env, "older than 2.0.0", error=RollbackError)
    proc = verify(env, None, "--allow-downgrade")
    assert proc.returncode == 0 and "UNSAFE" in proc.stderr


def test_expired_bundle_is_refused_unless_allowed_loudly(env: dict[str, Any]) -> None:
    signed_long_ago = dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.timezone.utc)
    expired = pack_demo(env["tmp"] / "old", env["key"], expires="1d", now=signed_long_ago).files[0]
    rejected(env, "expired at 2023-11-15T22:13:20Z", 3, expired, error=ExpiredError)
    proc = verify(env, expired, "--allow-expired")
    assert proc.returncode == 0 and "UNSAFE" in proc.stderr


def _attack(env: dict[str, Any], member: tarfile.TarInfo) -> Path:
    path = env["tmp"] / "attack.airgap.tar"
    signed_archive(path, env["key"], {"model/model.onnx": b"onnx"}, extra_members=[member])
    return path


def test_member_with_dotdot_escaping(env: dict[str, Any]) -> None:
    ti = tarfile.TarInfo("bundle/../../etc/cron.d/evil")
    ti.size = 4
    rejected(env, "unsafe path", 3, _attack(env, ti))


def test_member_with_an_absolute_path(env: dict[str, Any]) -> None:
    ti = tarfile.TarInfo("/etc/passwd")
    ti.size = 4
    rejected(env, "outside bundle/", 3, _attack(env, ti), error=TamperError)


def test_symlink_escaping(env: dict[str, Any]) -> None:
    ti = tarfile.TarInfo("bundle/model/link")
    ti.type = tarfile.SYMTYPE
    ti.linkname = "/etc/shadow"
    rejected(env, "is a symbolic link", 3, _attack(env, ti), error=TamperError)


def test_hardlink_escaping(env: dict[str, Any]) -> None:
    ti = tarfile.TarInfo("bundle/model/hard")
    ti.type = tarfile.LNKTYPE
    ti.linkname = "../../../etc/shadow"
    rejected(env, "is a hard link", 3, _attack(env, ti), error=TamperError)


def test_device_node(env: dict[str, Any]) -> None:
    ti = tarfile.TarInfo("bundle/model/sda")
    ti.type = tarfile.BLKTYPE
    ti.devmajor, ti.devminor = 8, 0
    rejected(env, "is a block device", 3, _attack(env, ti), error=TamperError)


def test_signed_manifest_listing_a_path_that_escapes(env: dict[str, Any]) -> None:
    path = env["tmp"] / "escape.airgap.tar"
    signed_archive(path, env["key"], {}, manifest_files=[{"path": "../evil", "size": 1, "sha256": "0" * 64}])
    # Signed, so not tampering: the publisher's tooling wrote a name no far side may create.
    rejected(env, "unsafe path in files[0]: '../evil'", 4, path)


def test_decompression_bomb(env: dict[str, Any]) -> None:
    bomb = zstandard.ZstdCompressor(level=19).compress(b"\0" * (64 << 20))
    path = env["tmp"] / "bomb.airgap.tar"
    import hashlib

    entry = {
        "path": "model/weights.bin.zst",
        "size": len(bomb),
        "sha256": hashlib.sha256(bomb).hexdigest(),
        "compression": "zstd",
        "content": {"size": 64 << 20, "sha256": "0" * 64},
    }
    signed_archive(path, env["key"], {"model/weights.bin.zst": bomb}, manifest_files=[entry])
    rejected(env, "decompression bomb", 3, path)


def test_zstd_header_that_lies_about_its_size(env: dict[str, Any]) -> None:
    payload = zstandard.ZstdCompressor(write_content_size=True).compress(b"a" * 5000)
    import hashlib

    entry = {
        "path": "model/w.bin.zst",
        "size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "compression": "zstd",
        "content": {"size": 400, "sha256": "0" * 64},
    }
    path = env["tmp"] / "liar.airgap.tar"
    signed_archive(path, env["key"], {"model/w.bin.zst": payload}, manifest_files=[entry])
    rejected(env, "declares 5000 bytes", 3, path, error=TamperError)


def _split(env: dict[str, Any]) -> Any:
    return pack_demo(env["tmp"] / "split", env["key"], part_size=1 << 20)


def test_split_bundle_verifies_part_by_part(env: dict[str, Any]) -> None:
    result = _split(env)
    index = next(p for p in result.files if p.name.endswith(".parts.sha256"))
    assert len(result.parts) >= 2
    assert verify(env, index).returncode == 0


def test_bad_part_is_named(env: dict[str, Any]) -> None:
    result = _split(env)
    index = next(p for p in result.files if p.name.endswith(".parts.sha256"))
    part = result.files[1]
    with open(part, "r+b") as fh:
        fh.seek(4096)
        b = fh.read(1)
        fh.seek(4096)
        fh.write(bytes([b[0] ^ 0xFF]))
    line = rejected(
        env, f"part 2 of {len(result.parts)} ({part.name}) is damaged", 3, index, error=TamperError
    )
    assert "copy" in line


def test_missing_part_is_named(env: dict[str, Any]) -> None:
    result = _split(env)
    index = next(p for p in result.files if p.name.endswith(".parts.sha256"))
    result.files[0].unlink()
    rejected(env, f"part {result.files[0].name} is missing", 3, index)


def test_join_reassembles_after_the_bad_part_is_copied_again(env: dict[str, Any]) -> None:
    result = _split(env)
    index = next(p for p in result.files if p.name.endswith(".parts.sha256"))
    good = result.files[0].read_bytes()
    result.files[0].write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    bad = run_airgap("join", str(index), "--key", str(env["pub"]))
    assert bad.returncode == 3 and result.files[0].name in bad.stderr
    result.files[0].write_bytes(good)  # the part is copied again from the media
    ok = run_airgap("join", str(index), "--key", str(env["pub"]), "-o", str(env["tmp"] / "joined.tar"))
    assert ok.returncode == 0, ok.stderr
    assert verify(env, env["tmp"] / "joined.tar").returncode == 0


def test_a_random_file_is_not_a_bundle(env: dict[str, Any]) -> None:
    junk = env["tmp"] / "junk.tar"
    junk.write_bytes(os.urandom(4096))
    rejected(env, "not an airgap bundle", 4, junk, error=InvalidInputError)
    empty = env["tmp"] / "empty.tar"
    empty.write_bytes(b"")
    rejected(env, "empty", 4, empty)


def test_a_tar_without_a_manifest_is_not_a_bundle(env: dict[str, Any]) -> None:
    plain = env["tmp"] / "plain.tar"
    with tarfile.open(plain, "w") as tw:
        ti = tarfile.TarInfo("bundle/hello.txt")
        ti.size = 5
        tw.addfile(ti, io.BytesIO(b"hello"))
    rejected(env, "not an airgap bundle", 4, plain)


def test_no_trusted_key_at_all_says_how_to_add_one(env: dict[str, Any]) -> None:
    proc = run_airgap("verify", str(env["bundle"]), "--state-dir", str(env["tmp"] / "empty-state"))
    line = assert_one_line_error(proc, 3)
    assert "airgap keys trust" in line
