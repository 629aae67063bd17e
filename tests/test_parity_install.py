"""Real installs from media that lost parts: the example bundle, re-cut by `airgap split` into six
data parts and one parity part, installed to the real Docker Engine with each part in turn deleted
— the lost part is rebuilt from parity, named, and the model answers its golden inputs — and with
two parts deleted, one more than the parity can rebuild: exit 3 naming both, nothing installed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PASSPHRASE, run_airgap

pytestmark = [pytest.mark.docker]
PARTS = [f"part-{i:03d}" for i in range(6)] + ["parity-000"]


@pytest.fixture(scope="module")
def stick(built: dict[str, Any], signing_key: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example split for media: six data parts and one parity part."""
    bundle = Path(built["bundle"][0])
    out = tmp_path_factory.mktemp("parity") / "stick"
    size = bundle.stat().st_size // 6 + 1
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
        str(out),
        env={"AIRGAP_KEY_PASSPHRASE": PASSPHRASE},
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name.rsplit(".", 1)[-1] for p in out.glob("*.part-*")) == PARTS[:6]
    return out


def _without(stick: Path, lost: list[str], dest: Path) -> Path:
    """A copy of the media (hard links: the parts are large) without the ``lost`` parts."""
    dest.mkdir()
    for f in stick.iterdir():
        if not any(f.name.endswith("." + part) for part in lost):
            os.link(f, dest / f.name)
    return dest


def _install(media: Path, state: Path, signing_key: Path) -> Any:
    trust = run_airgap("keys", "trust", str(signing_key.with_suffix(".pub")), "--state-dir", str(state))
    assert trust.returncode == 0, trust.stderr
    index = next(media.glob("*.parts.sha256"))
    return run_airgap(
        "--json",
        "install",
        str(index),
        "--to",
        "docker",
        "--port",
        "18433",
        "--state-dir",
        str(state),
        timeout=600,
    )


def _uninstall(state: Path) -> None:
    status = run_airgap("--json", "status", "--state-dir", str(state))
    for row in json.loads(status.stdout or "[]"):
        run_airgap("uninstall", row["name"], "--to", row["target"], "--state-dir", str(state))


@pytest.mark.parametrize("lost", PARTS)
def test_install_with_any_one_part_deleted_rebuilds_it_and_passes_the_smoke_test(
    lost: str, stick: Path, signing_key: Path, tmp_path: Path
) -> None:
    media = _without(stick, [lost], tmp_path / "media")
    state = tmp_path / "state"
    try:
        proc = _install(media, state, signing_key)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        doc = json.loads(proc.stdout)
        if lost.startswith("parity"):  # every data part is there: nothing to rebuild, nothing said
            assert doc["repaired"] == [], doc["repaired"]
        else:
            assert [r.split(" ")[0].rsplit(".", 1)[-1] for r in doc["repaired"]] == [lost], doc["repaired"]
            assert doc["repaired"][0].endswith("(missing)")
        assert doc["prediction"] is not None
        assert not any(f.name.endswith("." + lost) for f in media.iterdir()), (
            "install must not write to the media"
        )
    finally:
        _uninstall(state)


def test_install_with_one_part_more_lost_than_parity_rebuilds_is_exit_3_naming_both(
    stick: Path, signing_key: Path, tmp_path: Path
) -> None:
    media = _without(stick, ["part-001", "part-004"], tmp_path / "media")
    state = tmp_path / "state"
    try:
        proc = _install(media, state, signing_key)
        assert proc.returncode == 3, proc.stdout + proc.stderr
        error = json.loads(proc.stdout)["error"]
        assert "part-001" in error and "part-004" in error, error
        assert json.loads(run_airgap("--json", "status", "--state-dir", str(state)).stdout or "[]") == []
    finally:
        _uninstall(state)
