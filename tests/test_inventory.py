"""`airgap inventory` and the reading of an inventory on the workstation (no engine needed).

The inventory is signed by nobody, so the workstation reads it strictly: anything but a
well-formed ``airgap.inventory/v1`` is one line, exit 4, before a slow build starts.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from airgap.core.inventory import FORMAT, Blob, Inventory, plan_delta
from airgap.errors import InvalidInputError
from airgap.services.build.model_image import stable_layer_epoch
from airgap.services.deploy.inventory import blob_store
from airgap.services.state import State
from tests.conftest import assert_one_line_error, run_airgap


def _store_with(state_dir: Path, contents: list[bytes]) -> Path:
    store = blob_store(State(state_dir))
    store.mkdir(parents=True)
    for data in contents:
        (store / hashlib.sha256(data).hexdigest()).write_bytes(data)
    return store


def test_inventory_lists_every_blob_of_the_store_by_hash_and_size(tmp_path: Path) -> None:
    _store_with(tmp_path / "state", [b"alpha", b"beta" * 1000])
    out = tmp_path / "inv.json"
    proc = run_airgap("--json", "inventory", "--out", str(out), "--state-dir", str(tmp_path / "state"))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["blobs"] == 2 and summary["bytes"] == 5 + 4000
    raw = out.read_bytes()
    doc = json.loads(raw)
    assert doc["format"] == FORMAT and doc["signed_by"] is None
    assert {b["sha256"]: b["size"] for b in doc["store"]["blobs"]} == {
        hashlib.sha256(b"alpha").hexdigest(): 5,
        hashlib.sha256(b"beta" * 1000).hexdigest(): 4000,
    }
    # canonical JSON, and read back to the same holdings
    assert raw == Inventory.from_bytes(raw).to_bytes()
    # safe to carry back: no path of this host's state or user data
    assert str(tmp_path) not in raw.decode()


def test_inventory_does_not_claim_a_blob_that_no_longer_hashes_to_its_name(tmp_path: Path) -> None:
    store = _store_with(tmp_path / "state", [b"good", b"rotted"])
    rotted = store / hashlib.sha256(b"rotted").hexdigest()
    rotted.write_bytes(b"rotten")  # same size class, other bytes: a bad disk
    (store / ".partial.tmp").write_bytes(b"an extraction in flight")
    out = tmp_path / "inv.json"
    proc = run_airgap("--json", "inventory", "--out", str(out), "--state-dir", str(tmp_path / "state"))
    assert proc.returncode == 0, proc.stderr
    held = Inventory.from_bytes(out.read_bytes()).held()
    assert held == {hashlib.sha256(b"good").hexdigest(): 4}
    assert json.loads(proc.stdout)["skipped"] == {"not_matching_their_name": 1}


def test_inventory_into_an_unwritable_place_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    _store_with(tmp_path / "state", [b"x"])
    out = tmp_path / "missing-dir" / "inv.json"
    proc = run_airgap("inventory", "--out", str(out), "--state-dir", str(tmp_path / "state"))
    assert_one_line_error(proc, 5)
    assert not out.exists()


BAD = {
    "not JSON": b"{not json",
    "wrong format": json.dumps(
        {"format": "airgap.profile/v1", "created": "x", "store": {"blobs": []}}
    ).encode(),
    "digest not hex": json.dumps(
        {"format": FORMAT, "created": "x", "store": {"blobs": [{"sha256": "Z" * 64, "size": 1}]}}
    ).encode(),
    "digest too short": json.dumps(
        {"format": FORMAT, "created": "x", "store": {"blobs": [{"sha256": "ab" * 16, "size": 1}]}}
    ).encode(),
    "negative size": json.dumps(
        {"format": FORMAT, "created": "x", "store": {"blobs": [{"sha256": "a" * 64, "size": -1}]}}
    ).encode(),
    "duplicate key": b'{"format":"airgap.inventory/v1","format":"airgap.inventory/v1"}',
    "not an object": b"[]",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_inventory_is_invalid_input(case: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        Inventory.from_bytes(BAD[case])
    assert caught.value.exit_code == 4 and "inventory" in caught.value.one_line()


@pytest.mark.parametrize("case", ["not JSON", "wrong format", "digest not hex"])
def test_bundle_refuses_a_bad_inventory_in_one_line_before_building(tmp_path: Path, case: str) -> None:
    inv = tmp_path / "inv.json"
    inv.write_bytes(BAD[case])
    # The project does not even exist: the inventory is refused first, and nothing is built.
    proc = run_airgap(
        "bundle", str(tmp_path / "no-project"), "--have", str(inv), "--key", str(tmp_path / "no.key")
    )
    line = assert_one_line_error(proc, 4)
    assert "inventory" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inv.json"]


def test_bundle_refuses_a_missing_inventory_in_one_line(tmp_path: Path) -> None:
    proc = run_airgap("bundle", str(tmp_path), "--have", str(tmp_path / "nope.json"), "--key", "k")
    assert "nope.json" in assert_one_line_error(proc, 4)


def test_a_delta_leaves_out_only_blobs_held_with_the_same_size() -> None:
    content = {"a" * 64: 10, "b" * 64: 20, "c" * 64: 30}
    held = Inventory("t", {}, (Blob("a" * 64, 10), Blob("b" * 64, 21), Blob("d" * 64, 5))).held()
    plan = plan_delta(content, held)
    assert plan.external == frozenset({"a" * 64})  # b is claimed with another size: shipped
    assert (plan.bytes_left_out, plan.blobs_total, plan.bytes_total) == (10, 3, 60)


def test_layers_are_clamped_to_the_base_image_creation_not_to_each_release_epoch() -> None:
    base = "2024-05-01T10:00:00.123456789Z"
    # two releases with different SOURCE_DATE_EPOCH: the same clamp, so the same layers
    assert stable_layer_epoch(1_700_000_000, base) == stable_layer_epoch(1_800_000_000, base) == 1714557600
    # a base image that records no creation time: SOURCE_DATE_EPOCH, as before
    assert stable_layer_epoch(1_700_000_000, None) == 1_700_000_000
    assert stable_layer_epoch(1_700_000_000, "yesterday") == 1_700_000_000


def test_since_reads_the_previous_bundles_signed_list_of_content(tmp_path: Path) -> None:
    from airgap.adapters import keys
    from airgap.services.build.delta import held_since
    from tests.bundles import make_key, pack_demo

    signer, pub, _ = make_key(tmp_path, "publisher")
    trusted = (
        keys.TrustedKey(keys.key_id(public := keys.load_public(pub.read_bytes(), str(pub))), pub, public),
    )
    v2 = held_since(pack_demo(tmp_path, signer, bundle_format="v2").files[0], trusted)
    staging = tmp_path / "staging" / "demo-1.0.0"
    wheel = staging / "wheels" / "demo-1.0-py3-none-any.whl"
    layer = next(iter((staging / "image" / "oci" / "blobs" / "sha256").iterdir()))
    # v2: every content the far side was sent, by its hash
    assert v2[hashlib.sha256(wheel.read_bytes()).hexdigest()] == wheel.stat().st_size
    assert v2[layer.name] == layer.stat().st_size
    # v1: an install kept only the image's blobs in the store
    v1 = held_since(pack_demo(tmp_path, signer, bundle_format="v1").files[0], trusted)
    assert v1 == {layer.name: layer.stat().st_size}


def test_since_refuses_a_previous_bundle_signed_by_an_untrusted_key(tmp_path: Path) -> None:
    from tests.bundles import make_key, pack_demo

    signer, _, _ = make_key(tmp_path, "stranger")
    _, trusted_pub, _ = make_key(tmp_path, "publisher")
    previous = pack_demo(tmp_path, signer).files[0]
    proc = run_airgap(
        "bundle",
        str(tmp_path / "no-project"),
        "--since",
        str(previous),
        "--since-key",
        str(trusted_pub),
        "--key",
        "k",
    )
    line = assert_one_line_error(proc, 3)
    assert "demo-1.0.0.airgap.tar is not signed by any trusted key" in line


def test_inventory_names_the_wheels_of_installed_bundles(tmp_path: Path) -> None:
    from airgap.services.deploy.receipts import Installed, Receipt

    state = State(tmp_path / "state")
    wheel = b"PK\x03\x04 a wheel"
    store = _store_with(state.directory, [wheel])
    content = tmp_path / "state" / "content" / "bundles" / ("1" * 64)
    (content / "host" / "wheels").mkdir(parents=True)
    os.link(
        store / hashlib.sha256(wheel).hexdigest(), content / "host" / "wheels" / "demo-1.0-py3-none-any.whl"
    )
    (content / "wheels").mkdir()
    (content / "wheels" / "other-2.0-py3-none-any.whl").write_bytes(b"PK\x03\x04 another")
    receipt = Receipt("demo", "1.0.0", "venv", "1" * 64, "k" * 64, "b", "2026-01-01T00:00:00Z", str(content))
    Installed(state).put(receipt, None)
    out = tmp_path / "inv.json"
    assert run_airgap("inventory", "--out", str(out), "--state-dir", str(state.directory)).returncode == 0
    inv = Inventory.from_bytes(out.read_bytes())
    (installed,) = inv.installed
    assert (installed.name, installed.version, installed.target) == ("demo", "1.0.0", "venv")
    assert {name: blob.sha256 for name, blob in installed.wheels} == {
        "demo-1.0-py3-none-any.whl": hashlib.sha256(wheel).hexdigest(),
        "other-2.0-py3-none-any.whl": hashlib.sha256(b"PK\x03\x04 another").hexdigest(),
    }
    # Only the store decides what a delta leaves out: the wheel outside it is information.
    assert set(inv.held()) == {hashlib.sha256(wheel).hexdigest()}


def test_install_keeps_every_blob_a_bundle_carries_so_the_next_delta_can_leave_it_out(tmp_path: Path) -> None:
    """A target extracts only what it runs; the store keeps every blob, and the inventory lists it."""
    from airgap.adapters import keys
    from airgap.services.media.extraction import extract
    from airgap.services.media.verify import VerifyOptions, verify_bundle
    from tests.bundles import make_key, pack_demo

    signer, pub, _ = make_key(tmp_path, "publisher")
    bundle = pack_demo(tmp_path, signer, bundle_format="v2").files[0]
    public = keys.load_public(pub.read_bytes(), str(pub))
    verified = verify_bundle(
        bundle, VerifyOptions(trusted=(keys.TrustedKey(keys.key_id(public), pub, public),))
    )
    state = State(tmp_path / "state")
    extract(bundle, verified, lambda p: p.startswith("model/"), tmp_path / "content", state.blob_store)
    carried = {f.sha256: f.size for f in verified.manifest.files}
    out = tmp_path / "inv.json"
    assert run_airgap("inventory", "--out", str(out), "--state-dir", str(state.directory)).returncode == 0
    assert Inventory.from_bytes(out.read_bytes()).held() == carried
    assert not (tmp_path / "content" / "wheels").exists()  # the target still got only what it runs
