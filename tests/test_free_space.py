"""A large write is refused before it starts when the disk cannot hold it.

pack, split and join ask the file system how much room is left (``statvfs``) before writing a byte:
too little is exit 5 on one line naming the path, the bytes needed and the bytes free, and
nothing is left behind. The disk is made "full" by answering that question for the tests' own
paths with a few kilobytes (``space.free_bytes``); everything else is real.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from airgap.adapters import space
from tests.bundles import PASS, make_key, pack_demo, pass_policy, synthetic_staging
from tests.conftest import assert_one_line_error, run_airgap

FREE = 4096


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Everything under ``tmp_path / "full"`` is on a disk with FREE bytes left."""
    full = tmp_path / "full"
    real = space.free_bytes

    def free(path: Path) -> int:
        return FREE if Path(path).is_relative_to(full) else real(path)

    monkeypatch.setattr(space, "free_bytes", free)
    return full


def refused(proc: Any, what: str, where: Path) -> None:
    line = assert_one_line_error(proc, 5)
    m = re.search(rf"{what} needs (\d+) bytes .* in (\S+), which has (\d+) bytes .* free", line)
    assert m, line
    assert int(m.group(1)) > FREE and m.group(2) == str(where) and int(m.group(3)) == FREE, line
    assert not where.exists() or not any(where.iterdir()), "nothing may be written"


def test_pack_onto_a_full_disk_is_refused_before_writing(tmp_path: Path, full_disk: Path) -> None:
    make_key(tmp_path, "publisher")
    staging = synthetic_staging(tmp_path / "staging")
    record = {"name": "demo", "version": "1.0.0", "source_date_epoch": 1}
    (staging / "build.json").write_text(json.dumps(record))
    pass_policy(staging)
    proc = run_airgap(
        "pack", str(staging), "--key", str(tmp_path / "publisher.key"), "-o", str(full_disk),
        env={"AIRGAP_KEY_PASSPHRASE": PASS.decode()},
    )  # fmt: skip
    refused(proc, "pack", full_disk)


def test_split_and_join_onto_a_full_disk_are_refused_before_writing(tmp_path: Path, full_disk: Path) -> None:
    key, pub, _ = make_key(tmp_path, "publisher")
    bundle = pack_demo(tmp_path, key).files[0]
    env = {"AIRGAP_KEY_PASSPHRASE": PASS.decode()}
    key_file = str(tmp_path / "publisher.key")
    split = run_airgap(
        "split", str(bundle), "--part-size", "1Mi", "--out", str(full_disk), "--key", key_file, env=env
    )  # fmt: skip
    refused(split, "split", full_disk)

    parts = pack_demo(tmp_path / "parts", key, part_size=1 << 20)
    index = next(p for p in parts.files if p.name.endswith(".parts.sha256"))
    join = run_airgap("join", str(index), "--key", str(pub), "-o", str(full_disk / "joined.airgap.tar"))
    refused(join, "join", full_disk)


def test_free_bytes_is_what_the_file_system_reports_for_the_nearest_existing_directory(
    tmp_path: Path,
) -> None:
    st = os.statvfs(tmp_path)
    assert abs(space.free_bytes(tmp_path / "not" / "yet") - st.f_bavail * st.f_frsize) < 64 << 20
