"""Rules the command line used to hold, proven on the services that now hold them.

Which keys a verification trusts, which inputs ``check`` is evaluated with, and the compliance
gate at the end of ``bundle``: each is called here as a library user would, with real keys and a
real policy evaluation.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from airgap.core.project import Waiver
from airgap.errors import AirgapError, AnswerIsNo
from airgap.services.build.bundle import BundleResult, seal
from airgap.services.build.check import DirectoryReader, check_bundle, check_inputs, open_target
from airgap.services.state import State
from airgap.services.trust import trusted_keys
from tests.bundles import make_key
from tests.test_cli_json import PRIVILEGED

ROOT = Path(__file__).resolve().parent.parent


def staging_with(tmp_path: Path, record: dict[str, object], manifest: str = PRIVILEGED) -> Path:
    staging = tmp_path / "demo-1.0.0"
    (staging / "manifests").mkdir(parents=True)
    (staging / "build.json").write_text(json.dumps({"name": "demo", "version": "1.0.0", **record}))
    (staging / "manifests" / "20-deployment.yaml").write_text(manifest)
    return staging


# ------------------------------------------------------------------------------------ trusted keys
def test_an_explicit_key_replaces_the_trust_store_instead_of_adding_to_it(tmp_path: Path) -> None:
    _, stored_pub, stored_id = make_key(tmp_path, "stored")
    _, named_pub, named_id = make_key(tmp_path, "named")
    state = State(tmp_path / "state")
    state.trust.trust(stored_pub.read_bytes(), str(stored_pub))
    assert [k.key_id for k in trusted_keys(state)] == [stored_id]
    assert [k.key_id for k in trusted_keys(state, key=named_pub)] == [named_id]


def test_a_trust_directory_replaces_the_state_directorys_store(tmp_path: Path) -> None:
    _, stored_pub, _ = make_key(tmp_path, "stored")
    _, other_pub, other_id = make_key(tmp_path, "other")
    state = State(tmp_path / "state")
    state.trust.trust(stored_pub.read_bytes(), str(stored_pub))
    other = State(tmp_path / "other-state")
    other.trust.trust(other_pub.read_bytes(), str(other_pub))
    assert [k.key_id for k in trusted_keys(state, trust_dir=other.trust.directory)] == [other_id]


# ------------------------------------------------------------------------------------ check inputs
def test_check_reads_waivers_fail_on_and_time_from_the_bundles_build_record(tmp_path: Path) -> None:
    policy = {"fail_on": "medium", "waivers": [{"rule": "AG-X", "justification": "reviewed by the ISSO"}]}
    staging = staging_with(tmp_path, {"source_date_epoch": 1700000000, "policy": policy})
    inputs = check_inputs(DirectoryReader(staging))
    assert inputs.waivers == (Waiver("AG-X", "reviewed by the ISSO"),)
    assert inputs.fail_on == "medium"
    assert inputs.evaluated_at == dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.timezone.utc)
    assert inputs.policy_dirs is None


def test_an_explicit_fail_on_wins_and_high_is_the_default(tmp_path: Path) -> None:
    staging = staging_with(tmp_path, {"policy": {"fail_on": "medium"}})
    assert check_inputs(DirectoryReader(staging), fail_on="low").fail_on == "low"
    bare = staging_with(tmp_path / "bare", {})
    assert check_inputs(DirectoryReader(bare)).fail_on == "high"


def test_a_project_replaces_the_records_waivers_and_brings_its_policy_directories(tmp_path: Path) -> None:
    policy = {"fail_on": "low", "waivers": [{"rule": "AG-X", "justification": "from the bundle"}]}
    staging = staging_with(tmp_path, {"policy": policy})
    inputs = check_inputs(DirectoryReader(staging), project_dir=ROOT / "examples" / "tabular")
    assert inputs.fail_on == "high"  # the example project's fail_on
    assert all(w.rule != "AG-X" for w in inputs.waivers)
    assert inputs.policy_dirs is not None and inputs.policy_dirs[0].name == "policies"


def test_a_staging_directory_is_read_in_place_and_its_reports_go_into_it(tmp_path: Path) -> None:
    staging = staging_with(tmp_path, {})
    opened = open_target(staging, State(tmp_path / "state"))
    assert isinstance(opened.reader, DirectoryReader)
    assert opened.default_output == staging / "compliance"


def test_a_bundle_for_check_is_verified_first(tmp_path: Path) -> None:
    """Anything that is not a directory is a bundle, and nothing is evaluated before it verifies."""
    not_a_bundle = tmp_path / "x.airgap.tar"
    not_a_bundle.write_bytes(b"not a tar")
    state = State(tmp_path / "state")
    with pytest.raises(AirgapError) as caught:
        open_target(not_a_bundle, state)
    assert caught.value.exit_code in (3, 4)
    assert json.loads(state.audit_log.read_text().splitlines()[-1])["action"] == "check"


# ------------------------------------------------------------------------------------ sign gate
def test_bundle_without_a_key_still_fails_on_a_failed_policy_evaluation(tmp_path: Path) -> None:
    staging = staging_with(tmp_path, {})
    outcome = check_bundle(DirectoryReader(staging), evaluated_at=dt.datetime.now(dt.timezone.utc))
    assert outcome.failed
    with pytest.raises(AnswerIsNo, match=r"open policy finding\(s\) at or above high"):
        seal(BundleResult(staging, {}, outcome), None)


def test_bundle_without_a_key_and_a_passing_evaluation_writes_only_staging(tmp_path: Path) -> None:
    staging = staging_with(tmp_path, {})
    outcome = check_bundle(
        DirectoryReader(staging), evaluated_at=dt.datetime.now(dt.timezone.utc), fail_on="high"
    )
    waived = check_bundle(
        DirectoryReader(staging),
        evaluated_at=dt.datetime.now(dt.timezone.utc),
        waivers=tuple(Waiver(r.rule.id, "accepted for the test") for r in outcome.blocking),
    )
    assert not waived.failed
    assert seal(BundleResult(staging, {}, waived), None) is None
    assert not any(p.name.endswith(".airgap.tar") for p in tmp_path.iterdir())


# ------------------------------------------------------------------------- findings below the gate
def test_open_medium_findings_below_the_gate_are_listed_for_the_summary(tmp_path: Path) -> None:
    staging = staging_with(tmp_path, {})
    now = dt.datetime.now(dt.timezone.utc)
    high = check_bundle(DirectoryReader(staging), evaluated_at=now, fail_on="high")
    below = high.below_gate
    assert below, "the privileged manifest has open medium findings"
    assert {r.rule.severity for r in below} == {"medium"}
    assert all(r.status == "open" for r in below)
    assert not {r.rule.id for r in below} & {r.rule.id for r in high.blocking}
    # At --fail-on medium the same findings block, so nothing is left below the gate.
    medium = check_bundle(DirectoryReader(staging), evaluated_at=now, fail_on="medium")
    assert medium.below_gate == ()
    assert {r.rule.id for r in below} <= {r.rule.id for r in medium.blocking}
