"""Parity parts: any K missing or damaged parts of a split bundle are rebuilt, named, and checked
against the signed index; more than K is exit 3 naming them; `airgap split` re-cuts a bundle
without touching its signed content.

A small real bundle (the synthetic staging directory, ~6 MB) is packed once per module into six
1 MiB parts, and copied for each test: every combination runs in well under a second.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from airgap.cli.media import parity_count
from airgap.core.parity import ParityIndex
from airgap.errors import UsageError
from airgap.services.media.verify import VerifiedBundle, VerifyOptions, verify_and_audit
from airgap.services.state import State
from tests.bundles import PASS, make_key, pack_demo, synthetic_staging
from tests.conftest import assert_one_line_error, run_airgap
from tests.test_bundle_by_hand import run_by_hand

BASE = "demo-1.0.0.airgap.tar"
MiB = 1 << 20


def _packed(root: Path, parity: int) -> dict[str, Any]:
    key, pub, kid = make_key(root, "publisher")
    staging = synthetic_staging(root / "staging")
    (staging / "model" / "more.bin").write_bytes(os_random(3_000_000))
    result = pack_demo(root, key, part_size=MiB, parity=parity)
    state = root / "state"
    assert run_airgap("keys", "trust", str(pub), "--state-dir", str(state)).returncode == 0
    return {"root": root, "key": key, "pub": pub, "kid": kid, "result": result, "state": state}


def os_random(n: int) -> bytes:
    """Incompressible, and the same in every run (a seeded generator, not the OS's)."""
    return random.Random(12).randbytes(n)


@pytest.fixture(scope="module")
def packed_k1(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _packed(tmp_path_factory.mktemp("k1"), 1)


@pytest.fixture(scope="module")
def packed_k2(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _packed(tmp_path_factory.mktemp("k2"), 2)


def media(packed: dict[str, Any], tmp_path: Path) -> Path:
    """A fresh copy of the parts and indexes (the USB stick); returns its directory."""
    stick = tmp_path / "stick"
    shutil.copytree(packed["root"] / "out", stick)
    return stick


def verify(packed: dict[str, Any], stick: Path) -> subprocess.CompletedProcess[str]:
    """`airgap --json verify` of the stick's parts index; asserts the stick was not written to."""
    before = {p.name: p.read_bytes() for p in stick.iterdir()}
    proc = run_airgap(
        "--json", "verify", str(stick / f"{BASE}.parts.sha256"), "--state-dir", str(packed["state"])
    )
    assert {p.name: p.read_bytes() for p in stick.iterdir()} == before, "verify changed the media"
    return proc


def parity_index(stick: Path) -> ParityIndex:
    return ParityIndex.from_bytes((stick / f"{BASE}.parity.json").read_bytes(), "parity index")


def test_pack_with_parity_writes_six_data_parts_one_parity_part_and_both_signed_indexes(
    packed_k1: dict[str, Any],
) -> None:
    result = packed_k1["result"]
    out = packed_k1["root"] / "out"
    assert len(result.parts) == 6 and len(result.parity_parts) == 1
    index = parity_index(out)
    assert (index.k, index.m, index.share_size) == (6, 7, MiB)
    assert [s.name for s in index.parity] == [f"{BASE}.parity-000"]
    # The by-hand path is unchanged: the parts index lists data parts only, and `cat` of them in
    # order is the single-file bundle.
    lines = (out / f"{BASE}.parts.sha256").read_text().splitlines()
    assert [line[66:] for line in lines] == [p.name for p in result.parts]
    assert index.parts_index_sha256 == hashlib.sha256((out / f"{BASE}.parts.sha256").read_bytes()).hexdigest()
    for sig in (f"{BASE}.parts.sha256.sig", f"{BASE}.parity.json.sig"):
        assert (out / sig).exists()


def verify_here(packed: dict[str, Any], stick: Path) -> VerifiedBundle:
    """The verify service, in this process, as `airgap verify` calls it (audit record included);
    asserts the stick was not written to."""
    before = {p.name: p.read_bytes() for p in stick.iterdir()}
    state = State(packed["state"])
    options = VerifyOptions(trusted=tuple(state.trust.keys()))
    result = verify_and_audit(stick / f"{BASE}.parts.sha256", state, options)
    assert {p.name: p.read_bytes() for p in stick.iterdir()} == before, "verify changed the media"
    return result


@pytest.mark.parametrize("lost", [*range(6), "parity-000"])
def test_any_one_missing_part_of_six_with_parity_one_is_rebuilt_and_verify_names_it(
    packed_k1: dict[str, Any], tmp_path: Path, lost: int | str
) -> None:
    stick = media(packed_k1, tmp_path)
    name = f"{BASE}.part-{lost:03d}" if isinstance(lost, int) else f"{BASE}.{lost}"
    (stick / name).unlink()
    result = verify_here(packed_k1, stick)
    # A lost data part is rebuilt and named; a lost parity part is not needed to verify.
    assert [(r.part, r.was) for r in result.handle.repaired] == (
        [(name, "missing")] if isinstance(lost, int) else []
    )
    audit = json.loads((packed_k1["state"] / "audit.log").read_text().splitlines()[-1])
    assert audit["result"] == "accepted"
    assert [r["part"] for r in audit["repaired"]] == [r.part for r in result.handle.repaired]


def test_the_cli_names_a_rebuilt_part_in_json(packed_k1: dict[str, Any], tmp_path: Path) -> None:
    stick = media(packed_k1, tmp_path)
    (stick / f"{BASE}.part-003").unlink()
    proc = verify(packed_k1, stick)
    assert proc.returncode == 0, proc.stderr
    assert [(r["part"], r["was"]) for r in json.loads(proc.stdout)["repaired"]] == [
        (f"{BASE}.part-003", "missing")
    ]


def test_a_part_with_one_flipped_byte_and_the_right_size_is_rebuilt_and_named_damaged(
    packed_k1: dict[str, Any], tmp_path: Path
) -> None:
    stick = media(packed_k1, tmp_path)
    part = stick / f"{BASE}.part-002"
    data = bytearray(part.read_bytes())
    data[123_456] ^= 0x01
    part.write_bytes(bytes(data))
    proc = run_airgap("verify", str(stick / f"{BASE}.parts.sha256"), "--state-dir", str(packed_k1["state"]))
    assert proc.returncode == 0, proc.stderr
    assert f"repaired {BASE}.part-002 from parity (damaged; the media is unchanged)" in proc.stdout
    assert part.read_bytes() == bytes(data), "verify must not repair the media"


def test_the_first_part_damaged_in_its_tar_header_is_rebuilt_before_the_manifest_is_trusted(
    packed_k1: dict[str, Any], tmp_path: Path
) -> None:
    stick = media(packed_k1, tmp_path)
    part = stick / f"{BASE}.part-000"
    data = bytearray(part.read_bytes())
    data[0:8] = b"garbage!"
    part.write_bytes(bytes(data))
    assert [r.part for r in verify_here(packed_k1, stick).handle.repaired] == [part.name]


def test_two_missing_parts_with_parity_one_is_exit_3_naming_both(
    packed_k1: dict[str, Any], tmp_path: Path
) -> None:
    stick = media(packed_k1, tmp_path)
    for n in (1, 4):
        (stick / f"{BASE}.part-{n:03d}").unlink()
    line = assert_one_line_error(verify(packed_k1, stick), 3)
    assert f"{BASE}.part-001" in line and f"{BASE}.part-004" in line


def test_two_damaged_parts_with_parity_one_is_exit_3_naming_both(
    packed_k1: dict[str, Any], tmp_path: Path
) -> None:
    stick = media(packed_k1, tmp_path)
    for name in (f"{BASE}.part-003", f"{BASE}.parity-000"):
        data = bytearray((stick / name).read_bytes())
        data[-1] ^= 0xFF
        (stick / name).write_bytes(bytes(data))
    line = assert_one_line_error(verify(packed_k1, stick), 3)
    assert f"{BASE}.part-003 (damaged)" in line and f"{BASE}.parity-000 (damaged)" in line


@pytest.mark.parametrize(
    "lost",
    [
        ("part-000", "part-005"),
        ("part-002", "parity-001"),
        ("parity-000", "parity-001"),
        ("part-003", "part-001"),
    ],
)
def test_parity_two_rebuilds_any_two_missing_parts(
    packed_k2: dict[str, Any], tmp_path: Path, lost: tuple[str, str]
) -> None:
    stick = media(packed_k2, tmp_path)
    for name in lost:
        (stick / f"{BASE}.{name}").unlink()
    assert sorted(r.part for r in verify_here(packed_k2, stick).handle.repaired) == sorted(
        f"{BASE}.{n}" for n in lost if n.startswith("part-")
    )


def test_join_repair_rewrites_every_bad_part_in_place_and_the_parts_check_by_hand(
    packed_k2: dict[str, Any], tmp_path: Path
) -> None:
    stick = media(packed_k2, tmp_path)
    original = {p.name: p.read_bytes() for p in stick.iterdir()}
    (stick / f"{BASE}.part-004").unlink()
    (stick / f"{BASE}.parity-001").write_bytes(b"not the parity part")
    proc = run_airgap(
        "--json",
        "join",
        str(stick / f"{BASE}.parts.sha256"),
        "--repair",
        "--state-dir",
        str(packed_k2["state"]),
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert sorted((r["part"], r["was"]) for r in doc["repaired"]) == [
        (f"{BASE}.parity-001", "damaged"),
        (f"{BASE}.part-004", "missing"),
    ]
    for name, data in original.items():
        assert (stick / name).read_bytes() == data, name
    assert not [p for p in stick.iterdir() if p.name.startswith(".")], "a temporary file was left"
    joined = Path(doc["joined"]).read_bytes()
    assert joined == b"".join(original[p.name] for p in packed_k2["result"].parts)
    check = subprocess.run(
        ["sha256sum", "-c", f"{BASE}.parts.sha256"], cwd=stick, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout


def test_the_documented_by_hand_verification_still_passes_on_a_bundle_with_parity(
    packed_k1: dict[str, Any], tmp_path: Path
) -> None:
    stick = media(packed_k1, tmp_path)
    work = tmp_path / "reviewer"
    work.mkdir()
    (work / "publisher.pub").write_bytes(packed_k1["pub"].read_bytes())
    proc = run_by_hand(work, stick / BASE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("Verified OK") == 4  # parts index, parity index, manifest, SHA256SUMS
    assert (stick / BASE).read_bytes() == b"".join(
        (stick / p.name).read_bytes() for p in packed_k1["result"].parts
    )


def split(source: Path, out: Path, key: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_airgap(
        "--json",
        "split",
        str(source),
        "--key",
        str(key),
        "--out",
        str(out),
        *args,
        env={"AIRGAP_KEY_PASSPHRASE": PASS.decode()},
    )


def test_split_re_cuts_a_single_file_bundle_with_the_same_manifest_and_bytes_and_it_verifies(
    tmp_path: Path,
) -> None:
    key, pub, _ = make_key(tmp_path, "publisher")
    single = pack_demo(tmp_path, key).files[0]
    proc = split(single, tmp_path / "dvd", tmp_path / "publisher.key", "--part-size", "2M", "--parity", "1")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["parts"] == 2 and doc["parity_parts"] == 1
    parts = sorted((tmp_path / "dvd").glob(f"{BASE}.part-*"))
    assert b"".join(p.read_bytes() for p in parts) == single.read_bytes()
    state = tmp_path / "state"
    assert run_airgap("keys", "trust", str(pub), "--state-dir", str(state)).returncode == 0
    (tmp_path / "dvd" / f"{BASE}.part-000").unlink()
    proc = run_airgap(
        "--json", "verify", str(tmp_path / "dvd" / f"{BASE}.parts.sha256"), "--state-dir", str(state)
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["manifest_sha256"] == doc["manifest_sha256"]
    assert doc["manifest_sha256"] == hashlib.sha256(_manifest_bytes(single)).hexdigest()


def test_split_re_cuts_a_split_bundle_into_other_sizes(packed_k1: dict[str, Any], tmp_path: Path) -> None:
    stick = media(packed_k1, tmp_path)
    (stick / f"{BASE}.part-001").unlink()  # rebuilt from parity on the way
    proc = split(
        stick / f"{BASE}.parts.sha256",
        tmp_path / "cd",
        packed_k1["root"] / "publisher.key",
        "--part-size",
        "3MiB",
    )
    assert proc.returncode == 0, proc.stderr
    assert [r["part"] for r in json.loads(proc.stdout)["repaired"]] == [f"{BASE}.part-001"]
    new = sorted((tmp_path / "cd").glob(f"{BASE}.part-*"))
    assert [p.stat().st_size for p in new[:-1]] == [3 * MiB] * (len(new) - 1)
    assert b"".join(p.read_bytes() for p in new) == b"".join(
        (packed_k1["root"] / "out" / p.name).read_bytes() for p in packed_k1["result"].parts
    )
    assert not (tmp_path / "cd" / f"{BASE}.parity.json").exists()
    proc = run_airgap(
        "verify", str(tmp_path / "cd" / f"{BASE}.parts.sha256"), "--state-dir", str(packed_k1["state"])
    )
    assert proc.returncode == 0, proc.stderr


def test_split_refuses_a_bundle_signed_by_another_key_and_writes_nothing(tmp_path: Path) -> None:
    key, _, _ = make_key(tmp_path, "publisher")
    make_key(tmp_path, "other")
    single = pack_demo(tmp_path, key).files[0]
    proc = split(single, tmp_path / "dvd", tmp_path / "other.key", "--part-size", "2M")
    line = assert_one_line_error(proc, 3)
    assert "not signed by any trusted key" in line or "not trusted" in line
    assert not list((tmp_path / "dvd").iterdir()) if (tmp_path / "dvd").exists() else True


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--part-size", "1M", "--parity", "0"], "--parity '0'"),
        (["--part-size", "1M", "--parity", "x"], "--parity 'x'"),
        (["--parity", "1"], "--parity needs --part-size"),
    ],
)
def test_bad_parity_values_are_one_line_exit_2(tmp_path: Path, args: list[str], match: str) -> None:
    proc = run_airgap("pack", str(tmp_path), "--key", str(tmp_path / "none.key"), *args)
    line = assert_one_line_error(proc, 2)
    assert match in line


@pytest.mark.parametrize("value", ["256", "-1", "1.5", ""])
def test_parity_counts_outside_1_to_255_are_usage_errors(value: str) -> None:
    with pytest.raises(UsageError, match="is not a number of parity parts"):
        parity_count(value, "1M")
    assert parity_count("255", "1M") == 255


def test_split_into_the_directory_of_its_own_parts_is_refused_exit_2(
    packed_k1: dict[str, Any], tmp_path: Path
) -> None:
    stick = media(packed_k1, tmp_path)
    proc = split(
        stick / f"{BASE}.parts.sha256", stick, packed_k1["root"] / "publisher.key", "--part-size", "2M"
    )
    assert "where the bundle lies" in assert_one_line_error(proc, 2)


def _manifest_bytes(bundle: Path) -> bytes:
    import tarfile

    with tarfile.open(bundle) as tf:
        member = tf.extractfile("bundle/manifest.json")
        assert member is not None
        return member.read()


def test_a_tampered_parity_index_is_refused_exit_3_before_any_part_is_read(
    packed_k1: dict[str, Any], tmp_path: Path
) -> None:
    stick = media(packed_k1, tmp_path)
    index = stick / f"{BASE}.parity.json"
    index.write_bytes(index.read_bytes().replace(b'"k":6', b'"k":5'))
    line = assert_one_line_error(verify(packed_k1, stick), 3)
    assert "the parity index is not signed by any trusted key" in line


@pytest.mark.parametrize("stripe", [4096, 65536, 1 << 20])
def test_the_code_is_bytewise_so_every_stripe_size_gives_the_same_parity_and_rebuilds(
    tmp_path: Path, stripe: int
) -> None:
    """The parity index records the encoder's stripe, but any decoder stripe rebuilds: the code
    works byte by byte across the shares (and the last, short share is padded with zeros)."""
    from airgap.adapters import erasure

    sizes = [300_000, 300_000, 123_457]
    data = [tmp_path / f"d{i}" for i in range(3)]
    for i, (path, n) in enumerate(zip(data, sizes)):
        path.write_bytes(random.Random(i).randbytes(n))
    reference = erasure.encode(data, 300_000, [tmp_path / "p-ref0", tmp_path / "p-ref1"], 300_000)
    got = erasure.encode(data, 300_000, [tmp_path / "p0", tmp_path / "p1"], stripe)
    assert got == reference
    rebuilt = tmp_path / "rebuilt"
    [(size, sha)] = erasure.rebuild(
        [(0, data[0]), (3, tmp_path / "p0"), (4, tmp_path / "p1")],
        3,
        5,
        300_000,
        [(2, sizes[2], rebuilt)],
        stripe,
    )
    assert rebuilt.read_bytes() == data[2].read_bytes()
    assert (size, sha) == (sizes[2], hashlib.sha256(data[2].read_bytes()).hexdigest())
