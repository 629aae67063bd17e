"""A real install from media that lost a part: the example bundle, re-cut by `airgap split` with
one parity part, one data part deleted, installed to the real Docker Engine — the missing part is
rebuilt from parity, named, and the model answers its golden inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PASSPHRASE, run_airgap

pytestmark = [pytest.mark.docker]


def test_install_from_parity_parts_with_one_data_part_deleted_rebuilds_it_and_passes_the_smoke_test(
    built: dict[str, Any], signing_key: Path, tmp_path: Path
) -> None:
    bundle = Path(built["bundle"][0])
    stick = tmp_path / "stick"
    size = bundle.stat().st_size // 5 + 1  # six parts
    proc = run_airgap(
        "--json",
        "split",
        str(bundle),
        "--part-size",
        str(max(size, 1 << 20)),
        "--parity",
        "1",
        "--key",
        str(signing_key.with_suffix(".key")),
        "--out",
        str(stick),
        env={"AIRGAP_KEY_PASSPHRASE": PASSPHRASE},
    )
    assert proc.returncode == 0, proc.stderr
    name = bundle.name
    lost = stick / f"{name}.part-002"
    lost.unlink()
    state = tmp_path / "state"
    assert (
        run_airgap(
            "keys", "trust", str(signing_key.with_suffix(".pub")), "--state-dir", str(state)
        ).returncode
        == 0
    )
    try:
        proc = run_airgap(
            "--json",
            "install",
            str(stick / f"{name}.parts.sha256"),
            "--to",
            "docker",
            "--port",
            "18431",
            "--state-dir",
            str(state),
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["repaired"] == [f"{lost.name} (missing)"]
        assert doc["prediction"] is not None
        assert not lost.exists(), "install must not write to the media"
    finally:
        status = run_airgap("--json", "status", "--state-dir", str(state))
        for row in json.loads(status.stdout or "[]"):
            run_airgap("uninstall", row["name"], "--to", row["target"], "--state-dir", str(state))
