"""Attacks on the archive around the signed content: every byte of a bundle is determined by its
signed manifest and the format rules, so any byte changed, added or removed is refused.

Each attack edits the raw bytes of a real bundle packed by airgap (fixing the header checksum
where a naive verifier would check it), then runs the real CLI: the exit code, the one-line
message naming the member and the offset, and that verification wrote nothing but its audit
record. The property tests at the end run the verify service in-process over thousands of
mutations of a small real bundle.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airgap.adapters import keys
from airgap.adapters.archive import TimedReader
from airgap.core.tar_format import member_header
from airgap.errors import AirgapError, EnvironmentFailure
from airgap.services.media.verify import VerifyOptions, verify_bundle
from tests.bundles import (
    EPOCH,
    LONG_LICENSE,
    fix_checksum,
    header_at,
    locate,
    make_key,
    pack_demo,
    pax_block,
    record,
    rejected,
    rewrite,
    set_field,
    signed_env,
    verify,
)
from tests.conftest import assert_one_line_error, run_airgap

BUILD = "bundle/build.json"  # 36 bytes: its data is followed by 476 bytes of zero padding
LONG = f"bundle/licenses/{LONG_LICENSE}.txt"  # over 100 bytes: carried by a PAX header
MODEL = "bundle/model/model.onnx"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    return signed_env(tmp_path)


def edit(env: dict[str, Any]) -> bytearray:
    return bytearray(env["bundle"].read_bytes())


def save(env: dict[str, Any], data: bytes | bytearray) -> None:
    env["bundle"].write_bytes(bytes(data))


def test_the_packer_writes_exactly_the_shared_header(env: dict[str, Any]) -> None:
    """The verifier's reference is the packer's own output: every member of a fresh bundle starts
    with ``member_header(name, size, created)``, and tar reads it back with the same name."""
    data = env["bundle"].read_bytes()
    with tarfile.open(env["bundle"]) as tf:
        infos = tf.getmembers()
    assert any(i.pax_headers for i in infos), "the demo bundle must exercise a PAX header"
    for info in infos:
        header = member_header(info.name, info.size, EPOCH)
        assert data[info.offset : info.offset_data] == header, info.name
        assert info.mode == 0o644 and info.uid == info.gid == 0 and info.mtime == EPOCH
    assert verify(env).returncode == 0


# ------------------------------------------------------------------------------ padding
def test_padding_byte_changed_is_rejected(env: dict[str, Any]) -> None:
    info = locate(env["bundle"], BUILD)
    data = edit(env)
    at = info.offset_data + info.size + 100
    assert data[at] == 0
    data[at] = 0x41
    save(env, data)
    line = rejected(env, f"byte {at} in the zero padding after the data of {BUILD} is not zero")
    assert "integrity" in line


def test_pax_padding_byte_changed_is_rejected(env: dict[str, Any]) -> None:
    info = locate(env["bundle"], LONG)
    data = edit(env)
    records = len(record("path", LONG))
    at = info.offset + 512 + records + 3
    assert data[at] == 0
    data[at] = 0x20
    save(env, data)
    rejected(env, f"byte {at} in the zero padding after the PAX header at byte {info.offset} is not zero")


def test_end_of_archive_padding_byte_changed_is_rejected(env: dict[str, Any]) -> None:
    data = edit(env)
    at = len(data) - 700
    assert data[at] == 0
    data[at] = 1
    save(env, data)
    rejected(env, f"byte {at} in the end-of-archive padding is not zero")


def test_zero_block_inserted_between_members_is_rejected(env: dict[str, Any]) -> None:
    info = locate(env["bundle"], MODEL)
    data = edit(env)
    save(env, data[: info.offset] + bytes(512) + data[info.offset :])
    rejected(env, "in the end-of-archive padding is not zero")


# ------------------------------------------------------------------------------ header fields
@pytest.mark.parametrize(
    "spelling",
    [b"%07o\0", b"%06o  ", b"%06o\0\0", b"%o\0  "],
    ids=["seven-digits", "space-terminated", "double-nul", "no-leading-zeros"],
)
def test_header_checksum_equivalent_spelling_is_rejected(env: dict[str, Any], spelling: bytes) -> None:
    data = edit(env)
    block = header_at(data, MODEL)
    value = int(data[block + 148 : block + 154], 8)
    field = (spelling % value).ljust(8, b" ")[:8]
    assert field != data[block + 148 : block + 156]
    data[block + 148 : block + 156] = field
    save(env, data)
    canonical = b"%06o\0 " % value
    rejected(env, f"{MODEL}: byte {block + 148 + _first_diff(field, canonical)} of the archive differs")


def _first_diff(a: bytes, b: bytes) -> int:
    return next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)


def _field_attack(env: dict[str, Any], member: str, start: int, value: bytes) -> str:
    data = edit(env)
    block = header_at(data, member)
    original = bytes(data[block : block + 512])
    assert original[start : start + len(value)] != value
    set_field(data, block, start, value)
    save(env, data)
    at = block + _first_diff(bytes(data[block : block + 512]), original)  # the field, or the checksum
    return rejected(env, f"{member}: byte {at} of the archive differs from the header the signed manifest")


def test_header_mode_changed_is_rejected(env: dict[str, Any]) -> None:
    line = _field_attack(env, MODEL, 100, b"0000755\0")
    assert "field mode" in line


def test_header_uid_changed_is_rejected(env: dict[str, Any]) -> None:
    assert "field uid" in _field_attack(env, MODEL, 108, b"0001750\0")


def test_header_gid_changed_is_rejected(env: dict[str, Any]) -> None:
    assert "field gid" in _field_attack(env, MODEL, 116, b"0001750\0")


def test_header_mtime_changed_is_rejected(env: dict[str, Any]) -> None:
    assert "field mtime" in _field_attack(env, MODEL, 136, b"%011o\0" % (EPOCH + 1))


def test_header_linkname_changed_is_rejected(env: dict[str, Any]) -> None:
    assert "field linkname" in _field_attack(env, MODEL, 157, b"/etc/shadow")


def test_header_owner_names_added_are_rejected(env: dict[str, Any]) -> None:
    assert "field uname" in _field_attack(env, MODEL, 265, b"root")


def test_control_member_header_mtime_changed_is_rejected(env: dict[str, Any]) -> None:
    """The control files' headers are the packer's too: manifest.json's is checked once the
    manifest it depends on is verified."""
    line = _field_attack(env, "bundle/manifest.json", 136, b"%011o\0" % 0)
    assert "field mtime" in line


def test_signature_control_member_header_mode_changed_is_rejected(env: dict[str, Any]) -> None:
    assert "field mode" in _field_attack(env, "bundle/SHA256SUMS.sig", 100, b"0000600\0")


def test_pax_header_mtime_changed_is_rejected(env: dict[str, Any]) -> None:
    info = locate(env["bundle"], LONG)
    data = edit(env)
    value = b"%011o\0" % EPOCH
    at = info.offset + 136 + _first_diff(value, bytes(data[info.offset + 136 : info.offset + 148]))
    set_field(data, info.offset, 136, value)
    save(env, data)
    line = rejected(env, f"{LONG}: byte {at} ")
    assert "PAX header field mtime" in line


def test_signature_respelled_is_rejected(env: dict[str, Any]) -> None:
    """SHA256SUMS.sig is the one member no hash covers; base64 decoders ignore its final newline's
    spelling, the verifier does not."""
    info = locate(env["bundle"], "bundle/SHA256SUMS.sig")
    data = edit(env)
    at = info.offset_data + info.size - 1
    assert data[at] == 0x0A
    data[at] = 0x20
    save(env, data)
    rejected(env, "bundle/SHA256SUMS.sig is not spelled as the packer writes it")


# ------------------------------------------------------------------------------ PAX records
def _insert_pax(env: dict[str, Any], member: str, records: bytes) -> int:
    info = locate(env["bundle"], member)
    data = edit(env)
    save(env, data[: info.offset] + pax_block(records) + data[info.offset :])
    return int(info.offset)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("comment", "built by mallory"),
        ("SCHILY.xattr.security.capability", "\x01\x00\x00\x02"),
        ("GNU.sparse.map", "0,0"),
        ("linkpath", "/etc/shadow"),
        ("hdrcharset", "BINARY"),
        ("mtime", "1700000000.5"),
    ],
)
def test_extra_pax_record_is_rejected(env: dict[str, Any], key: str, value: str) -> None:
    at = _insert_pax(env, MODEL, record(key, value))
    rejected(env, f"the PAX header at byte {at}: PAX record {key!r} is not allowed")


def test_extra_pax_record_beside_a_needed_path_is_rejected(env: dict[str, Any]) -> None:
    info = locate(env["bundle"], LONG)
    data = edit(env)
    records = record("path", LONG) + record("comment", "x")
    old = 512 + len(record("path", LONG)) + (-len(record("path", LONG)) % 512)
    save(env, data[: info.offset] + pax_block(records) + data[info.offset + old :])
    rejected(env, "PAX record 'comment' is not allowed")


def test_pax_size_with_underscore_is_rejected(env: dict[str, Any]) -> None:
    """Python's int() reads 7_274 as 7274; tar does not. A bundle's numbers are digits only."""
    at = _insert_pax(env, BUILD, record("size", "7_274"))
    rejected(env, f"the PAX header at byte {at}: PAX size b'7_274' is not a decimal size")


def test_pax_size_not_a_number_is_rejected(env: dict[str, Any]) -> None:
    _insert_pax(env, BUILD, record("size", "abc"))
    line = rejected(env, "PAX size b'abc' is not a decimal size")
    assert "internal error" not in line


@pytest.mark.parametrize("value", ["-1", "+36", " 36", "036", "0x24", "", "99999999999999999999"])
def test_pax_size_malformed_is_rejected(env: dict[str, Any], value: str) -> None:
    _insert_pax(env, BUILD, record("size", value))
    rejected(env, "PAX size")


def test_pax_size_restating_the_header_is_rejected(env: dict[str, Any]) -> None:
    """A well-formed but unneeded record: the packer writes a size record only at 8 GiB."""
    at = _insert_pax(env, BUILD, record("size", "36"))
    line = rejected(env, f"{BUILD}: byte {at} of the archive differs from the header")
    assert "(header field name, " in line


def test_pax_record_length_lying_is_rejected(env: dict[str, Any]) -> None:
    _insert_pax(env, BUILD, b"99 comment=x\n")
    rejected(env, "a PAX record does not end where its length says")


def test_dangling_pax_header_is_rejected(env: dict[str, Any]) -> None:
    """A PAX header right before the end of the archive applies to nothing."""
    data = edit(env)
    end = _end_offset(env["bundle"])
    save(env, data[:end] + pax_block(record("comment", "x")) + data[end:])
    rejected(env, f"the PAX header at byte {end}")


def test_dangling_pax_header_with_allowed_record_is_rejected(env: dict[str, Any]) -> None:
    data = edit(env)
    end = _end_offset(env["bundle"])
    save(env, data[:end] + pax_block(record("path", "bundle/x")) + data[end:])
    rejected(env, f"the PAX header at byte {end} is dangling: no member follows it")


def test_two_pax_headers_in_a_row_are_rejected(env: dict[str, Any]) -> None:
    info = locate(env["bundle"], LONG)
    data = edit(env)
    save(env, data[: info.offset] + pax_block(record("path", LONG)) + data[info.offset :])
    rejected(env, f"the PAX header at byte {info.offset} is followed by another PAX header")


def _end_offset(bundle: Path) -> int:
    with tarfile.open(bundle) as tf:
        last = tf.getmembers()[-1]
    return int(last.offset_data + last.size + (-last.size % 512))


# ------------------------------------------------------------------------------ other tar dialects
def test_gnu_magic_with_prefix_field_is_rejected(env: dict[str, Any]) -> None:
    """GNU tar reads the prefix field of a GNU-magic header as times, so it names the member
    differently from a POSIX reader: the two would disagree about what the bundle holds."""
    data = edit(env)
    block = header_at(data, MODEL)
    data[block + 257 : block + 265] = b"ustar  \0"
    data[block + 345 : block + 356] = b"bundle/evil"
    fix_checksum(data, block)
    save(env, data)
    rejected(env, f"the header at byte {block} is not a POSIX ustar header")


def test_ustar_prefix_field_is_rejected(env: dict[str, Any]) -> None:
    data = edit(env)
    block = header_at(data, MODEL)
    data[block + 345 : block + 351] = b"bundle"
    fix_checksum(data, block)
    save(env, data)
    rejected(env, f"the header at byte {block} fills the ustar prefix field")


def test_old_style_regular_file_typeflag_is_rejected(env: dict[str, Any]) -> None:
    data = edit(env)
    block = header_at(data, MODEL)
    set_field(data, block, 156, b"\0")
    save(env, data)
    rejected(env, "bundles hold regular files only")


# ------------------------------------------------------------------------------ truncation, appending
def test_truncated_inside_the_final_record_padding_is_rejected(env: dict[str, Any]) -> None:
    data = edit(env)
    save(env, data[:-2048])
    rejected(env, "truncated at byte")


def test_truncated_by_one_byte_is_rejected(env: dict[str, Any]) -> None:
    data = edit(env)
    save(env, data[:-1])
    line = rejected(
        env, f"the bundle is truncated at byte {len(data) - 1}, inside the end-of-archive padding"
    )
    assert "1 bytes missing" in line


def test_truncated_after_the_end_blocks_is_rejected(env: dict[str, Any]) -> None:
    """Two zero blocks end a tar for GNU tar; a bundle ends where its record padding ends."""
    data = edit(env)
    save(env, data[: _end_offset(env["bundle"]) + 1024])
    rejected(env, "inside the end-of-archive padding")


@pytest.mark.parametrize(
    "tail", [b"garbage appended", b"\0", b"\0" * 10240], ids=["text", "one-zero", "record"]
)
def test_garbage_appended_is_rejected(env: dict[str, Any], tail: bytes) -> None:
    data = edit(env)
    save(env, data + tail)
    rejected(env, f"data follows the end of the archive at byte {len(data)}: something was appended")


# ------------------------------------------------------------------------------ crafted sizes, memory
def _rss_of_verify(env: dict[str, Any], target: Path) -> tuple[subprocess.CompletedProcess[str], int]:
    """Runs ``airgap verify`` in a child and returns its peak resident set size, in bytes."""
    probe = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stdout.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024))\n"
        "sys.stderr.write(p.stderr)\n"
        "sys.exit(p.returncode)\n"
    )
    before = _snapshot(env["tmp"])
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            probe,
            sys.executable,
            "-m",
            "airgap",
            "verify",
            str(target),
            "--state-dir",
            str(env["state"]),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    after = _snapshot(env["tmp"])
    changed = {p for p in after.keys() | before.keys() if after.get(p) != before.get(p)}
    # Besides the audit record, an accepted bundle (and only one) gets its attestation.
    attested = {p for p in changed if Path(p).parent == env["state"] / "attestations"}
    assert not attested or proc.returncode == 0, attested
    assert changed - attested <= {str(env["state"] / "audit.log")}, changed
    return proc, int(proc.stdout)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _sparse_bundle_with(env: dict[str, Any], member: str, offset_in_header: int, value: bytes) -> Path:
    """The real bundle with one header field crafted, grown to 300 MB with a sparse tail (cheap
    on disk, but a reader that trusts the field would read all of it)."""
    data = edit(env)
    block = header_at(data, member)
    set_field(data, block, offset_in_header, value)
    path = env["tmp"] / "crafted.airgap.tar"
    path.write_bytes(bytes(data))
    with open(path, "r+b") as fh:
        fh.truncate(300 << 20)
    return path


@pytest.mark.parametrize(
    ("member", "value", "match"),
    [
        ("bundle/manifest.json", b"-1".ljust(12, b"\0"), "is not an octal number: b'-1'"),
        ("bundle/manifest.json", b"77777777777\0", "bundle/manifest.json is 8589934591 bytes, over the"),
        ("bundle/manifest.json", b"\x80" + b"\0" * 7 + b"\x20\0\0\0", "is not an octal number"),
        ("bundle/manifest.json.sig", b"00001000000\0", "over the 1024 allowed"),
        ("bundle/SHA256SUMS", b"00770000000\0", "bundle/SHA256SUMS: byte"),
        (MODEL, b"77777777777\0", "model/model.onnx is 8589934591 bytes; the manifest says 16384"),
    ],
    ids=["manifest-minus-one", "manifest-max", "manifest-base256", "sig-large", "sums-large", "content-max"],
)
def test_crafted_header_size_is_rejected_in_bounded_memory(
    env: dict[str, Any], member: str, value: bytes, match: str
) -> None:
    path = _sparse_bundle_with(env, member, 124, value)
    proc, rss = _rss_of_verify(env, path)
    line = assert_one_line_error(proc, 3)
    assert match in line, line
    assert rss < 64 << 20, f"verify peaked at {rss >> 20} MiB on a crafted header"


def test_crafted_pax_header_size_is_rejected_in_bounded_memory(env: dict[str, Any]) -> None:
    info = locate(env["bundle"], LONG)
    data = edit(env)
    set_field(data, info.offset, 124, b"%011o\0" % (200 << 20))
    path = env["tmp"] / "crafted.airgap.tar"
    path.write_bytes(bytes(data))
    with open(path, "r+b") as fh:
        fh.truncate(300 << 20)
    proc, rss = _rss_of_verify(env, path)
    line = assert_one_line_error(proc, 3)
    assert f"the PAX header at byte {info.offset} is 209715200 bytes" in line
    assert rss < 64 << 20


def test_untouched_bundle_verifies_in_bounded_memory(env: dict[str, Any]) -> None:
    proc, rss = _rss_of_verify(env, env["bundle"])
    assert proc.returncode == 0, proc.stderr
    assert rss < 64 << 20


# ------------------------------------------------------------------------------ not a bundle at all
def test_text_file_is_not_a_bundle(env: dict[str, Any]) -> None:
    text = env["tmp"] / "notes.txt"
    text.write_bytes(b"these are release notes, not a bundle.\n" * 2 + b"x" * 22)
    assert text.stat().st_size == 100
    rejected(env, "not an airgap bundle", 4, text)


def test_large_text_file_is_not_a_bundle(env: dict[str, Any]) -> None:
    text = env["tmp"] / "notes.txt"
    text.write_bytes(b"lorem ipsum\n" * 1000)
    rejected(env, "not an airgap bundle: the file is not a POSIX tar archive", 4, text)


def test_plain_tar_is_not_a_bundle(env: dict[str, Any]) -> None:
    plain = env["tmp"] / "plain.tar"
    with tarfile.open(plain, "w") as tw:
        ti = tarfile.TarInfo("docs/readme.txt")
        ti.size = 5
        tw.addfile(ti, io.BytesIO(b"hello"))
    rejected(env, "not an airgap bundle: the archive does not start with bundle/manifest.json", 4, plain)


@pytest.mark.parametrize("fmt", ["pax", "gnu", "ustar"])
def test_tar_of_another_format_is_not_a_bundle(env: dict[str, Any], fmt: str) -> None:
    (env["tmp"] / "d").mkdir()
    (env["tmp"] / "d" / "f").write_text("x")
    other = env["tmp"] / f"{fmt}.tar"
    subprocess.run(["tar", f"--format={fmt}", "-cf", str(other), "-C", str(env["tmp"]), "d"], check=True)
    rejected(env, "not an airgap bundle", 4, other)


def test_tar_starting_with_a_global_header_is_not_a_bundle(env: dict[str, Any]) -> None:
    """What `git archive` writes: a global PAX header first."""
    other = env["tmp"] / "git.tar"
    with tarfile.open(other, "w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "abc"}) as tw:
        info = tarfile.TarInfo("bundle/manifest.json")
        tw.addfile(info, io.BytesIO(b""))
    rejected(env, "not an airgap bundle: the archive does not start with bundle/manifest.json", 4, other)


def test_gzip_file_is_not_a_bundle(env: dict[str, Any]) -> None:
    gz = env["tmp"] / "bundle.tar.gz"
    gz.write_bytes(gzip.compress(env["bundle"].read_bytes()[:20000]))
    rejected(env, "not an airgap bundle: the file is not a POSIX tar archive", 4, gz)


def test_all_zero_file_is_not_a_bundle(env: dict[str, Any]) -> None:
    zeros = env["tmp"] / "zeros.tar"
    zeros.write_bytes(bytes(10240))
    rejected(env, "not an airgap bundle", 4, zeros)


# ------------------------------------------------------------------------------ not a regular file
def _baseline_seconds(env: dict[str, Any]) -> float:
    """What starting the CLI costs here, so the device tests measure only the time spent on it."""
    t = time.monotonic()
    run_airgap("verify", str(env["tmp"] / "nothing-here"), "--state-dir", str(env["state"]))
    return time.monotonic() - t


def _refused_quickly(env: dict[str, Any], target: Path, kind: str) -> None:
    baseline = _baseline_seconds(env)
    t = time.monotonic()
    proc = verify(env, target)  # asserts nothing was written but the audit record
    elapsed = time.monotonic() - t
    line = assert_one_line_error(proc, 4)
    assert f"is {kind}, not a bundle" in line, line
    assert elapsed < baseline + 1.0, (elapsed, baseline)
    # in-process: the refusal itself takes well under a second
    t = time.monotonic()
    with pytest.raises(AirgapError) as err:
        verify_bundle(target, VerifyOptions(trusted=()))
    assert err.value.exit_code == 4 and time.monotonic() - t < 1.0


def test_dev_zero_is_refused_within_a_second(env: dict[str, Any]) -> None:
    _refused_quickly(env, Path("/dev/zero"), "a character device")


def test_dev_null_is_refused_within_a_second(env: dict[str, Any]) -> None:
    _refused_quickly(env, Path("/dev/null"), "a character device")


def test_fifo_without_a_writer_is_refused_within_a_second(env: dict[str, Any]) -> None:
    fifo = env["tmp"] / "bundle.fifo"
    os.mkfifo(fifo)
    _refused_quickly(env, fifo, "a FIFO")


def test_symlink_to_a_device_is_refused(env: dict[str, Any]) -> None:
    link = env["tmp"] / "demo-9.airgap.tar"
    link.symlink_to("/dev/zero")
    _refused_quickly(env, link, "a character device")


def test_socket_is_refused_within_a_second(env: dict[str, Any]) -> None:
    path = env["tmp"] / "s.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        _refused_quickly(env, path, "a socket")


def test_file_that_fails_to_read_is_one_line_exit_5(env: dict[str, Any]) -> None:
    """A regular file whose read fails (here /proc/self/mem: EIO at offset 0) is the environment's
    failure, reported in one line, not an internal error."""
    line = rejected(env, "reading the bundle failed at byte 0: Input/output error", 5, Path("/proc/self/mem"))
    assert "internal error" not in line


def test_directory_is_refused_with_one_line(env: dict[str, Any]) -> None:
    line = rejected(env, "is a directory, not a bundle", 4, env["tmp"] / "out")
    assert "Usage" not in line


def test_missing_file_is_refused_with_one_line(env: dict[str, Any]) -> None:
    rejected(env, "does not exist", 4, env["tmp"] / "nothing-here.airgap.tar")


def test_path_through_a_file_is_refused_with_one_line(env: dict[str, Any]) -> None:
    rejected(env, "does not exist", 4, env["bundle"] / "inside")


def test_parts_index_that_is_a_fifo_is_refused(env: dict[str, Any]) -> None:
    fifo = env["tmp"] / "demo-1.0.0.airgap.tar.parts.sha256"
    os.mkfifo(fifo)
    rejected(env, "is a FIFO, not a parts index", 4, fifo)


# ------------------------------------------------------------------------------ split bundles
def test_split_bundle_with_parts_cut_inside_headers_verifies(env: dict[str, Any]) -> None:
    """Byte-exactness holds for the concatenated parts, wherever the cuts fall."""
    result = pack_demo(env["tmp"] / "split", env["key"], part_size=1_000_003)
    index = next(p for p in result.files if p.name.endswith(".parts.sha256"))
    assert len(result.parts) >= 3
    assert verify(env, index).returncode == 0
    joined = b"".join(p.read_bytes() for p in result.files if ".part-" in p.name)
    assert joined == env["bundle"].read_bytes()


def test_joined_bundle_with_a_padding_byte_changed_is_rejected(env: dict[str, Any]) -> None:
    result = pack_demo(env["tmp"] / "split", env["key"], part_size=1 << 20)
    index = next(p for p in result.files if p.name.endswith(".parts.sha256"))
    joined = env["tmp"] / "joined.airgap.tar"
    ok = run_airgap("join", str(index), "--key", str(env["pub"]), "-o", str(joined))
    assert ok.returncode == 0, ok.stderr
    info = locate(joined, BUILD)
    data = bytearray(joined.read_bytes())
    data[info.offset_data + info.size + 1] = 7
    joined.write_bytes(bytes(data))
    rejected(env, f"in the zero padding after the data of {BUILD}", 3, joined)


# ------------------------------------------------------------------------------ property tests
class _Small(dict):  # type: ignore[type-arg]
    """The small bundle's facts; its repr stays short in a falsifying example."""

    def __repr__(self) -> str:
        return f"<small bundle {self['bundle']}>"


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small real bundle, packed by airgap and signed: control files, a PAX member, an empty
    member, a zstd member and plain ones, in about 20 KB — cheap enough for thousands of runs."""
    root = tmp_path_factory.mktemp("small")
    key, pub, kid = make_key(root, "publisher")
    st_dir = root / "staging"
    (st_dir / "model").mkdir(parents=True)
    noise = bytes((i * 7919) % 251 for i in range(600))
    (st_dir / "model" / "weights.bin").write_bytes(noise + b"a" * (256 << 10))  # stored as .zst
    (st_dir / "model" / "contract.json").write_text(json.dumps({"cases": [1, 2, 3]}))
    (st_dir / "licenses").mkdir()
    (st_dir / "licenses" / f"{LONG_LICENSE}.txt").write_text("MIT\n")
    (st_dir / "empty.txt").write_bytes(b"")
    (st_dir / "build.json").write_text(json.dumps({"name": "demo"}))
    from airgap.services.build.pack import pack

    bundle = pack(st_dir, root / "out", key, EPOCH, name="demo", version="1.0.0", bundle_format="v1").files[0]
    trusted = (keys.TrustedKey(kid, pub, keys.load_public(pub.read_bytes(), str(pub))),)
    data = bundle.read_bytes()
    assert len(data) < 40_000
    with tarfile.open(bundle) as tf:
        infos = tf.getmembers()
    assert any(i.pax_headers for i in infos) and any(i.name.endswith(".zst") for i in infos)
    assert any(i.size == 0 for i in infos)
    blocks = sorted({i.offset for i in infos} | {i.offset_data - 512 for i in infos})
    verify_bundle(bundle, VerifyOptions(trusted=trusted))  # the untouched bundle verifies
    return _Small(root=root, data=data, trusted=trusted, bundle=bundle, blocks=blocks)


def _must_reject(small: dict[str, Any], mutated: bytes) -> None:
    path = small["root"] / "mutated.airgap.tar"
    path.write_bytes(mutated)
    try:
        verify_bundle(path, VerifyOptions(trusted=small["trusted"]))
    except AirgapError as exc:
        assert exc.exit_code in (3, 4), exc.one_line()
        assert "\n" not in exc.one_line()
        return
    raise AssertionError("a mutated bundle verified")


PROPERTY = settings(
    max_examples=2000,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


@PROPERTY
@given(where=st.integers(0, 2**32), flip=st.integers(1, 255))
def test_any_single_byte_change_is_rejected(small: dict[str, Any], where: int, flip: int) -> None:
    data = bytearray(small["data"])
    at = where % len(data)
    data[at] ^= flip
    _must_reject(small, bytes(data))


@settings(PROPERTY, max_examples=1000)
@given(choice=st.data())
def test_any_header_byte_changed_with_the_checksum_fixed_is_rejected(
    small: dict[str, Any], choice: st.DataObject
) -> None:
    """What an attacker who knows tar does: edit any header field and recompute the checksum."""
    block = choice.draw(st.sampled_from(small["blocks"]), label="block")
    at = choice.draw(st.integers(0, 511).filter(lambda i: not 148 <= i < 156), label="offset")
    data = bytearray(small["data"])
    value = choice.draw(st.integers(0, 255).filter(lambda v: v != data[block + at]), label="value")
    data[block + at] = value
    fix_checksum(data, block)
    _must_reject(small, bytes(data))


@settings(PROPERTY, max_examples=500)
@given(where=st.integers(0, 2**32))
def test_any_truncation_is_rejected(small: dict[str, Any], where: int) -> None:
    data = small["data"]
    _must_reject(small, data[: where % len(data)])


@settings(PROPERTY, max_examples=500)
@given(tail=st.binary(min_size=1, max_size=1100))
def test_anything_appended_is_rejected(small: dict[str, Any], tail: bytes) -> None:
    _must_reject(small, small["data"] + tail)


def test_every_header_byte_changed_is_rejected(small: dict[str, Any]) -> None:
    """Exhaustive over the header bytes (where a lenient parser hides): each flipped in turn."""
    data = small["data"]
    with tarfile.open(small["bundle"]) as tf:
        spans = [(m.offset, m.offset_data) for m in tf.getmembers()]
    count = 0
    for start, end in spans:
        for at in range(start, end):
            mutated = bytearray(data)
            mutated[at] ^= 0x01
            _must_reject(small, bytes(mutated))
            count += 1
    assert count >= 8 * 512


@pytest.mark.parametrize("mutation", ["flip", "truncate", "append"])
def test_mutations_are_rejected_by_the_cli(small: dict[str, Any], tmp_path: Path, mutation: str) -> None:
    data = bytearray(small["data"])
    if mutation == "flip":
        data[len(data) // 2] ^= 0x10
    elif mutation == "truncate":
        del data[-513:]
    else:
        data += b"\x01"
    path = tmp_path / "m.airgap.tar"
    path.write_bytes(bytes(data))
    pub = small["trusted"][0].path
    proc = run_airgap("verify", str(path), "--key", str(pub), "--state-dir", str(tmp_path / "state"))
    assert_one_line_error(proc, 3)


# ------------------------------------------------------------------------------ stalled media
def test_stalled_read_fails_with_exit_5_instead_of_hanging() -> None:
    """A read that never returns (a pipe stands in for media that stopped answering) becomes an
    environment failure after the timeout; the stalled helper thread is abandoned."""
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb", buffering=0) as fh:
        timed = TimedReader(fh, 0.3, "demo.airgap.tar")
        started = time.monotonic()
        with pytest.raises(EnvironmentFailure, match="reading demo.airgap.tar stalled") as err:
            timed.read(512)
        assert err.value.exit_code == 5
        assert time.monotonic() - started < 2
        os.close(write_end)  # lets the abandoned read return
        timed.close()


def test_timed_reads_pass_data_and_errors_through(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc" * 1000)
    with open(path, "rb") as fh:
        timed = TimedReader(fh, 5, "f")
        assert timed.read(3) == b"abc"
        view = memoryview(bytearray(10))
        assert timed.readinto(view) == 10 and bytes(view) == b"abcabcabca"
        timed.close()
    broken = TimedReader(open(path, "rb"), 5, "f")  # noqa: SIM115 - closed below to force an error
    broken.stream.close()
    with pytest.raises(ValueError):
        broken.read(1)
    broken.close()


# ------------------------------------------------------------------------------ the rule itself
@pytest.mark.parametrize("name_len", [1, 93, 100, 101, 300, 519])
@pytest.mark.parametrize("size", [0, 1, 511, 512, 8**11 - 1, 8**11, 5 * 10**12])
def test_shared_header_is_what_tar_writes(name_len: int, size: int) -> None:
    """``member_header`` is byte for byte what Python's tarfile writes in PAX format, and tar
    reads back the same name, size, mode, owner and mtime: any tar can list a bundle."""
    name = ("bundle/" + "n" * 600)[:name_len] if name_len > 7 else "b"
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid = size, EPOCH, 0o644, 0, 0
    expected = info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")
    header = member_header(name, size, EPOCH)
    assert header == expected
    back = tarfile.TarInfo.frombuf(header[-512:], "utf-8", "strict")
    assert (back.mode, back.uid, back.gid, back.mtime, back.uname) == (0o644, 0, 0, EPOCH, "")
    assert (len(header) > 512) == (name_len > 100 or size >= 8**11)


@pytest.mark.parametrize(
    "field", [b"-1", b" 17\0", b"0x1f\0", b"1_0\0", b"\x80\0\0\0", b"", b"\0\0\0", b"12 34\0", b"9\0"]
)
def test_header_numbers_are_parsed_strictly(field: bytes) -> None:
    from airgap.core.tar_format import parse_octal
    from airgap.errors import IntegrityError

    with pytest.raises(IntegrityError, match="is not an octal number"):
        parse_octal(field, "the size")
    assert parse_octal(b"00000000017\0", "the size") == 15
    assert parse_octal(b"017 \0", "the size") == 15


def test_end_of_archive_fills_the_record() -> None:
    from airgap.core.tar_format import end_of_archive_length

    assert end_of_archive_length(0) == 10240
    assert end_of_archive_length(9216) == 1024
    assert end_of_archive_length(9728) == 1024 + 10240 - 512
    assert all((o + end_of_archive_length(o)) % 10240 == 0 for o in range(0, 40960, 512))


@pytest.mark.parametrize("member", ["bundle/SHA256SUMS.sig", "bundle/manifest.json.sig"])
def test_signature_replaced_by_its_valid_twin_is_rejected(env: dict[str, Any], member: str) -> None:
    """ECDSA's (r, n - s) verifies as well as (r, s): without one required form, anyone could
    change those bytes of a signed bundle. The packer writes the low s; the verifier insists."""
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

    signed = "bundle/SHA256SUMS" if member.endswith("SUMS.sig") else "bundle/manifest.json"
    with tarfile.open(env["bundle"]) as tf:
        data = tf.extractfile(signed).read()  # type: ignore[union-attr]
        sig = tf.extractfile(member).read()  # type: ignore[union-attr]
    r, s = decode_dss_signature(base64.b64decode(sig))
    assert s <= keys.P384_ORDER // 2, "the packer writes the low s"
    twin = encode_dss_signature(r, keys.P384_ORDER - s)
    public = keys.load_public(env["pub"].read_bytes(), "publisher.pub")
    public.verify(twin, data, ec.ECDSA(hashes.SHA384()))  # the twin is valid
    twin_b64 = base64.b64encode(twin) + b"\n"

    def swap(m: tarfile.TarInfo, d: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
        if m.name == member:
            m.size = len(twin_b64)
            return [(m, twin_b64)]
        return [(m, d)]

    rewrite(env["bundle"], swap)
    rejected(env, f"{member} is not in the low-s form the packer writes")


@pytest.mark.parametrize("target", ["/dev/zero", "fifo"])
def test_inspect_refuses_what_is_not_a_regular_file(tmp_path: Path, target: str) -> None:
    path = Path(target)
    if target == "fifo":
        path = tmp_path / "b.airgap.tar"
        os.mkfifo(path)
    t = time.monotonic()
    line = assert_one_line_error(run_airgap("inspect", str(path), timeout=30), 4)
    assert "only regular files are read" in line and time.monotonic() - t < 10


def test_inspect_of_a_crafted_manifest_size_reads_nothing_large(env: dict[str, Any]) -> None:
    data = edit(env)
    set_field(data, header_at(data, "bundle/manifest.json"), 124, b"-1".ljust(12, b"\0"))
    save(env, data)
    line = assert_one_line_error(run_airgap("inspect", str(env["bundle"])), 3)
    assert "is not an octal number" in line


# ------------------------------------------------------------------------------ hostile text, hostile size
def _crafted(env: dict[str, Any], name: str, members: list[tuple[str, bytes]]) -> Path:
    """An archive written by airgap's own tar writer, holding exactly ``members`` under bundle/."""
    from airgap.adapters.archive import PartSink, TarWriter

    out = env["tmp"] / "media"
    out.mkdir(exist_ok=True)
    sink = PartSink(out, name, None)
    writer = TarWriter(sink, EPOCH, "bundle")
    for member, data in members:
        writer.add_bytes(member, data)
    writer.close()
    sink.commit()
    return out / name


def test_rich_markup_in_a_member_name_is_printed_as_text(env: dict[str, Any]) -> None:
    """A member named ``[/x]`` is quoted in the error: it must be shown, not parsed as markup."""
    target = _crafted(env, "markup.airgap.tar", [("manifest.json", b"{}\n"), ("[/x]", b"x")])
    line = rejected(env, "unsafe path in bundle: '[/x]'", 3, target)
    assert "MarkupError" not in line
    proc = run_airgap("--json", "verify", str(target), "--state-dir", str(env["state"]))
    assert proc.returncode == 3 and json.loads(proc.stdout)["exit_code"] == 3, proc


def test_rich_markup_in_a_claimed_key_id_is_not_shown(env: dict[str, Any]) -> None:
    """An unverified manifest's key id is named only when it is 64 hex digits."""
    claimed = json.dumps({"format": "airgap.bundle/v1", "signer": {"key_id": "[/]" + "a" * 61}}).encode()
    target = _crafted(env, "kid.airgap.tar", [("manifest.json", claimed), ("manifest.json.sig", b"AAAA\n")])
    line = rejected(env, "the manifest is not signed by any trusted key", 3, target)
    assert "[/]" not in line


def test_huge_unsigned_manifest_is_rejected_without_parsing_it(env: dict[str, Any]) -> None:
    """4 MiB of ``[{},{},…]`` before a bad signature: refused without decoding the JSON, whose
    objects would cost forty times the bytes."""
    body = b"[" + b"{}," * ((4 << 20) // 3 - 2) + b"{}]"
    assert len(body) <= 4 << 20
    target = _crafted(env, "big.airgap.tar", [("manifest.json", body), ("manifest.json.sig", b"AAAA\n")])
    tiny = _crafted(env, "tiny.airgap.tar", [("manifest.json", b"[{}]"), ("manifest.json.sig", b"AAAA\n")])
    proc, rss = _rss_of_verify(env, target)
    line = assert_one_line_error(proc, 3)
    assert "the manifest is not signed by any trusted key" in line
    # Measured against the same refusal of a 4-byte manifest, so that what airgap imports at start
    # does not count: decoding the 4 MiB would add some 160 MiB, reading it adds its size.
    _, baseline = _rss_of_verify(env, tiny)
    assert rss - baseline < 24 << 20, (
        f"verify peaked at {(rss - baseline) >> 20} MiB more on a 4 MiB unsigned manifest than on a tiny one"
    )


def test_stalled_read_of_a_buffered_file_reaches_exit_5_and_does_not_hang_on_close() -> None:
    """Media that stops answering (a pipe that never gets data): the read gives up after the
    timeout, and closing the reader afterwards does not wait for the stalled read. Runs in a child
    so that a regression hangs the child, not the test run."""
    child = (
        "import os, sys, time\n"
        "from airgap.adapters.archive import TimedReader\n"
        "from airgap.errors import EnvironmentFailure\n"
        "r, w = os.pipe()\n"
        "timed = TimedReader(os.fdopen(r, 'rb'), 1.0, 'stalled media', owns=True)\n"
        "started = time.monotonic()\n"
        "try:\n"
        "    timed.read(512)\n"
        "except EnvironmentFailure as exc:\n"
        "    print(exc.exit_code, f'{time.monotonic() - started:.2f}', exc.message)\n"
        "timed.close()\n"
        "print('closed', f'{time.monotonic() - started:.2f}')\n"
    )
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=30)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    code, took, message = first.split(" ", 2)
    assert code == "5" and message == "reading stalled media stalled: no data for 1 s"
    assert 1.0 <= float(took) < 1.5 and float(second.split()[1]) < 1.5
    assert elapsed < 5, f"the child took {elapsed:.1f} s to exit"


def test_verify_reads_the_bundle_unbuffered_and_closes_it(env: dict[str, Any]) -> None:
    """The timed path reads the raw file (no buffer lock a stalled read could hold) and still
    closes it when verification ends."""
    from airgap.adapters.archive import open_regular

    with open_regular(env["bundle"], buffered=False) as fh:
        assert isinstance(fh, io.FileIO)
    before = set(os.listdir("/proc/self/fd"))
    trusted = (keys.TrustedKey(env["kid"], env["pub"], keys.load_public(env["pub"].read_bytes(), "k")),)
    verify_bundle(env["bundle"], VerifyOptions(trusted=trusted, read_timeout=5))
    assert set(os.listdir("/proc/self/fd")) == before
