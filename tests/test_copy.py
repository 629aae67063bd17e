"""`airgap copy`: parts written to the medium, flushed, read back from it and checked against the
signed index; a second run keeps what is intact and rewrites only the rest."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from airgap.adapters import space
from tests.bundles import make_key, pack_demo
from tests.conftest import assert_one_line_error, run_airgap


@pytest.fixture
def split(tmp_path: Path) -> dict[str, Any]:
    key, pub, _ = make_key(tmp_path, "publisher")
    parts = pack_demo(tmp_path, key, part_size=1 << 20, parity=1)
    index = next(p for p in parts.files if p.name.endswith(".parts.sha256"))
    return {"tmp": tmp_path, "key": key, "pub": pub, "index": index, "parts": parts}


def copy(env: dict[str, Any], source: Path, dest: Path) -> Any:
    return run_airgap("--json", "copy", str(source), str(dest), "--key", str(env["pub"]))


def test_a_split_bundle_copied_to_a_medium_verifies_there(split: dict[str, Any]) -> None:
    usb = split["tmp"] / "usb"
    proc = copy(split, split["index"], usb)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    data = [p.name for p in split["parts"].files if ".part-" in p.name]
    assert set(data) <= set(doc["written"]) and doc["kept"] == []
    for name in doc["written"]:
        assert (usb / name).read_bytes() == (split["index"].parent / name).read_bytes()
    assert (usb / split["index"].name).exists() and (usb / f"{split['index'].name}.sig").exists()
    assert not [p for p in usb.iterdir() if p.name.startswith(".")], "no temporary file is left"
    verified = run_airgap("verify", str(usb / split["index"].name), "--key", str(split["pub"]))
    assert verified.returncode == 0, verified.stderr


def test_copying_again_keeps_the_intact_parts_and_rewrites_a_damaged_and_a_missing_one(
    split: dict[str, Any],
) -> None:
    usb = split["tmp"] / "usb"
    assert copy(split, split["index"], usb).returncode == 0
    parts = sorted(p for p in usb.iterdir() if ".part-" in p.name and not p.name.endswith(".json"))
    damaged, gone, intact = parts[0], parts[1], parts[2:]
    flip_byte = bytearray(damaged.read_bytes())
    flip_byte[100] ^= 0xFF
    damaged.write_bytes(bytes(flip_byte))
    gone.unlink()
    before = {p.name: os.stat(p).st_ino for p in intact}
    proc = copy(split, split["index"], usb)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert sorted(doc["written"]) == sorted([damaged.name, gone.name])
    assert set(before) <= set(doc["kept"])
    assert {p.name: os.stat(usb / p.name).st_ino for p in intact} == before, "intact parts are not rewritten"
    assert run_airgap("verify", str(usb / split["index"].name), "--key", str(split["pub"])).returncode == 0


def test_a_single_file_bundle_is_verified_on_the_medium_after_the_copy(tmp_path: Path) -> None:
    key, pub, _ = make_key(tmp_path, "publisher")
    bundle = pack_demo(tmp_path, key).files[0]
    proc = run_airgap("--json", "copy", str(bundle), str(tmp_path / "usb"), "--key", str(pub))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "usb" / bundle.name).read_bytes() == bundle.read_bytes()


def test_a_tampered_source_part_is_refused_and_not_left_on_the_medium(split: dict[str, Any]) -> None:
    data = sorted(p for p in split["parts"].files if ".part-" in p.name)
    flip_byte_in_file = bytearray(data[1].read_bytes())
    flip_byte_in_file[7] ^= 1
    data[1].write_bytes(bytes(flip_byte_in_file))
    usb = split["tmp"] / "usb"
    line = assert_one_line_error(copy(split, split["index"], usb), 3)
    assert data[1].name in line and "not the part the signed index lists" in line
    assert not (usb / data[1].name).exists()


def test_a_medium_too_small_is_refused_before_anything_is_written(
    split: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    usb = split["tmp"] / "usb"
    real = space.free_bytes
    monkeypatch.setattr(space, "free_bytes", lambda p: 1 << 20 if Path(p).is_relative_to(usb) else real(p))
    line = assert_one_line_error(copy(split, split["index"], usb), 5)
    assert "copy needs" in line and str(usb) in line and f"has {1 << 20} bytes" in line
    assert not any(usb.iterdir())
