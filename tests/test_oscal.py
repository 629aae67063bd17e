"""OSCAL: the model service's component definition and the assessment results of `airgap check` and
of the far-side checks (`evidence export`), validated against NIST's OSCAL JSON schemas
(tests/data/oscal) and loaded into compliance-trestle's models; a failing rule becomes a
not-satisfied finding, and nothing left to a person is ever reported satisfied.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from airgap.core import oscal
from airgap.core.checklist import ChecklistContext
from airgap.core.oscal_evidence import Attested, control_findings, evidence_assessment_results
from tests.bundles import make_key
from tests.oscal_schema import assert_valid_oscal, oscal_errors
from tests.test_attestations import SITE, _member, _verify, far  # noqa: F401  (far: a synthetic far side)
from tests.test_checklist import WAIVER, WHEN, make_bundle, run_check


def _docs(outcome: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    cd = assert_valid_oscal(outcome.files[oscal.COMPONENT_FILE])
    ar = assert_valid_oscal(outcome.files[oscal.RESULTS_FILE])
    return cd, ar


def _findings(ar: dict[str, Any], result: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The findings of a document's one result (or of ``result``), by control id."""
    if result is None:
        [result] = ar["assessment-results"]["results"]
    return {f["target"]["target-id"].removesuffix("_smt"): f for f in result.get("findings", [])}


def _observation_of(ar: dict[str, Any], rule_id: str) -> dict[str, Any]:
    [result] = ar["assessment-results"]["results"]
    [obs] = [
        o
        for o in result["observations"]
        if {"name": "rule-id", "value": rule_id, "ns": oscal.NS} in o["props"]
    ]
    return dict(obs)


def test_control_ids_are_spelled_as_the_800_53_catalog_spells_them() -> None:
    assert [oscal.control_id(c) for c in ("AC-6", "SI-7(6)", "SC-28(1)", "CM-14")] == [
        "ac-6",
        "si-7.6",
        "sc-28.1",
        "cm-14",
    ]
    assert sorted(["ac-10", "ac-2", "ac-2.1"], key=oscal.control_sort_key) == ["ac-2", "ac-2.1", "ac-10"]
    assert oscal.control_label("si-7.15") == "SI-7(15)"
    with pytest.raises(ValueError, match="not a NIST SP 800-53 control id"):
        oscal.control_id("CCI-000366")


@pytest.mark.parametrize("bad", [None, "privileged", "writable-root", "workload-in-default"])
def test_check_writes_oscal_documents_that_validate_against_nists_schemas(
    tmp_path: Path, bad: str | None
) -> None:
    outcome = run_check(make_bundle(tmp_path / "b", bad), waivers=[WAIVER] if bad == "writable-root" else [])
    cd, ar = _docs(outcome)
    assert cd["component-definition"]["metadata"]["oscal-version"] == oscal.OSCAL_VERSION
    assert ar["assessment-results"]["results"][0]["observations"], "one observation per rule"
    summary = outcome.files[oscal.SUMMARY_FILE].decode()
    assert summary.startswith("# OSCAL summary: tabular-classifier 1.0.0")


def test_the_component_definition_maps_every_rule_to_its_800_53_controls(tmp_path: Path) -> None:
    outcome = run_check(make_bundle(tmp_path / "b"))
    cd, _ = _docs(outcome)
    [component] = cd["component-definition"]["components"]
    [impl] = component["control-implementations"]
    assert impl["source"].endswith("NIST_SP-800-53_rev5_catalog.json")
    by_control = {
        r["control-id"]: {p["value"] for p in r["props"] if p["name"] == "rule-id"}
        for r in impl["implemented-requirements"]
    }
    for result in outcome.evaluation.results:
        for nist in result.rule.references.nist:
            assert result.rule.id in by_control[oscal.control_id(nist)], (result.rule.id, nist)
    # The rules' CCIs and STIG groups travel with them, grouped by rule id.
    signed = {p["name"]: p["value"] for p in component["props"] if p.get("group") == "AG-SRG-IMAGE-SIGNED"}
    assert signed["cci"] == "CCI-003992" and signed["stig-group"].startswith("V-233065")
    # A control only manual rules cite is said to be the site's, not the component's.
    [ca6] = [r for r in impl["implemented-requirements"] if r["control-id"] == "ca-6"]
    assert "Left to the site" in ca6["description"] and "No automated check" in ca6["remarks"]


def test_the_schemas_refuse_what_oscal_does_not_allow(tmp_path: Path) -> None:
    """The validation is not vacuous: a state OSCAL does not define, a missing UUID, a property name
    that is not a token and an unknown field are each refused."""
    _, ar = _docs(run_check(make_bundle(tmp_path / "b", "privileged")))
    for path, value in (
        (("findings", 0, "target", "status", "state"), "mostly-satisfied"),
        (("observations", 0, "uuid"), None),
        (("observations", 0, "props", 0, "name"), "rule id"),
        (("observations", 0, "verdict"), "ok"),
    ):
        bad = copy.deepcopy(ar)
        node: Any = bad["assessment-results"]["results"][0]
        for key in path[:-1]:
            node = node[key]
        if value is None:
            del node[path[-1]]
        else:
            node[path[-1]] = value
        assert oscal_errors(bad), path


def test_a_failing_rule_becomes_a_not_satisfied_finding_tied_to_its_observation(tmp_path: Path) -> None:
    outcome = run_check(make_bundle(tmp_path / "b", "privileged"))
    _, ar = _docs(outcome)
    assert outcome.evaluation.result("AG-PSS-PRIVILEGED").status == "open"
    obs = _observation_of(ar, "AG-PSS-PRIVILEGED")
    assert obs["types"] == ["finding"] and "Outcome: open" in obs["description"]
    controls = [
        oscal.control_id(c) for c in outcome.evaluation.result("AG-PSS-PRIVILEGED").rule.references.nist
    ]
    findings = _findings(ar)
    for cid in controls:
        status = findings[cid]["target"]["status"]
        assert (status["state"], status["reason"]) == ("not-satisfied", "fail"), (cid, status)
        assert "AG-PSS-PRIVILEGED" in status["remarks"]
        assert {"observation-uuid": obs["uuid"]} in findings[cid]["related-observations"]
    assert "**AG-PSS-PRIVILEGED** (high)" in outcome.files[oscal.SUMMARY_FILE].decode()


def test_a_not_reviewed_rule_is_never_reported_satisfied(tmp_path: Path) -> None:
    outcome = run_check(make_bundle(tmp_path / "b"))
    _, ar = _docs(outcome)
    assert outcome.evaluation.result("AG-MAN-ATO").status == "not_reviewed"
    obs = _observation_of(ar, "AG-MAN-ATO")
    assert obs["remarks"].startswith("Not assessed") and obs["methods"] == ["EXAMINE"]
    ca6 = _findings(ar)["ca-6"]["target"]["status"]
    assert (ca6["state"], ca6["reason"]) == ("not-satisfied", "other") and "not assessed" in ca6["remarks"]
    # And in general: no satisfied finding rests on an unreviewed, open or waived rule.
    unsure = {
        r.rule.id for r in outcome.evaluation.results if r.status in ("not_reviewed", "open") or r.waived
    }
    for finding in _findings(ar).values():
        rules = {p["value"] for p in finding["props"] if p["name"] == "rule-id"}
        if rules & unsure:
            assert finding["target"]["status"]["state"] == "not-satisfied", finding


def test_a_waived_rule_keeps_its_control_not_satisfied_with_the_justification(tmp_path: Path) -> None:
    outcome = run_check(make_bundle(tmp_path / "b", "writable-root"), waivers=[WAIVER])
    _, ar = _docs(outcome)
    assert outcome.evaluation.result(WAIVER.rule).waived
    for nist in outcome.evaluation.result(WAIVER.rule).rule.references.nist:
        status = _findings(ar)[oscal.control_id(nist)]["target"]["status"]
        assert status["state"] == "not-satisfied" and WAIVER.justification in status["remarks"], status


def test_the_oscal_files_are_the_same_bytes_on_every_run(tmp_path: Path) -> None:
    a = run_check(make_bundle(tmp_path / "a", "privileged"))
    b = run_check(make_bundle(tmp_path / "b", "privileged"))
    for name in (oscal.COMPONENT_FILE, oscal.RESULTS_FILE, oscal.SUMMARY_FILE):
        assert a.files[name] == b.files[name], name


def test_compliance_trestles_models_load_the_documents(tmp_path: Path) -> None:
    from trestle.oscal.assessment_results import AssessmentResults
    from trestle.oscal.component import ComponentDefinition

    cd, ar = _docs(run_check(make_bundle(tmp_path / "b", "privileged")))
    loaded = ComponentDefinition.model_validate(cd["component-definition"])
    assert loaded.components and loaded.components[0].control_implementations
    results = AssessmentResults.model_validate(ar["assessment-results"])
    assert results.results[0].findings
    far_side = evidence_assessment_results(
        CTX, "e.json", [_attested("verify", "PASSED", "2023-11-14T22:00:00Z")]
    )
    loaded_far = AssessmentResults.model_validate(far_side["assessment-results"])
    assert loaded_far.results[0].observations


# ------------------------------------------------------------------------------------- far side
def _attested(
    action: str, result: str, when: str, failed: tuple[str, ...] = (), signed: bool = True
) -> Attested:
    statement = {
        "predicate": {
            "result": result,
            "passedTests": ["manifest signature by trusted key abc"],
            "warnedTests": [],
            "failedTests": list(failed),
            "airgap": {
                "action": action,
                "when": when,
                "who": {"user": "isso", "uid": 1000, "host": "enclave-1"},
                "bundle_name": "demo",
                "bundle_version": "1.0.0",
                "manifest_sha256": "a" * 64,
            },
        }
    }
    return Attested(f"{when}-{action}.intoto.json", statement, "b" * 64 if signed else None)


CTX = ChecklistContext(name="site", version="2023-11-14T22:13:20Z", evaluated_at=WHEN, tool="airgap test")


def test_a_failed_install_makes_its_controls_not_satisfied_and_a_missing_check_is_not_assessed() -> None:
    attested = [
        _attested("verify", "PASSED", "2023-11-14T22:00:00Z"),
        _attested("install", "FAILED", "2023-11-14T22:05:00Z", ("golden case 'a': label 1 != 0",)),
    ]
    ar = assert_valid_oscal(evidence_assessment_results(CTX, "evidence.json", attested))
    findings = _findings(ar)
    cm32 = findings["cm-3.2"]["target"]["status"]
    assert (cm32["state"], cm32["reason"]) == ("not-satisfied", "fail") and "golden case 'a'" in cm32[
        "remarks"
    ]
    # The install verified the bundle before its golden test failed: integrity stays satisfied.
    for cid in ("si-7", "si-7.6", "si-7.15", "cm-14"):
        assert findings[cid]["target"]["status"]["state"] == "satisfied", cid
    accept = findings["cm-4.2"]["target"]["status"]
    assert (accept["state"], accept["reason"]) == ("not-satisfied", "other")
    assert "Not assessed: no airgap accept ran here" in accept["remarks"]
    # A later passing install is what counts now, but unsigned it proves nothing: not satisfied.
    attested.append(_attested("install", "PASSED", "2023-11-14T23:00:00Z", signed=False))
    status = control_findings(attested)["cm-3.2"]
    assert status[:2] == ("not-satisfied", "other") and "Unsigned evidence (install)" in status[2]
    # Signed, the same passing install satisfies it.
    attested[-1] = _attested("install", "PASSED", "2023-11-14T23:00:00Z")
    assert control_findings(attested)["cm-3.2"][0] == "satisfied"
    # An UNSAFE override taken by verify leaves the integrity controls not satisfied.
    overridden = _attested("verify", "WARNED", "2023-11-15T00:00:00Z")
    overridden.statement["predicate"]["warnedTests"].append("UNSAFE: expired bundle accepted")
    si7 = control_findings([*attested, overridden])["si-7"]
    assert (si7[0], si7[1]) == ("not-satisfied", "other") and "UNSAFE: expired" in si7[2]


def test_a_site_with_no_record_has_valid_results_with_every_control_not_assessed() -> None:
    ar = assert_valid_oscal(evidence_assessment_results(CTX, "evidence.json", []))
    findings = _findings(ar)
    assert set(findings) == {"si-7", "si-7.6", "si-7.15", "cm-14", "cm-3.2", "cm-4.2"}
    for finding in findings.values():
        status = finding["target"]["status"]
        assert status["state"] == "not-satisfied" and status["remarks"].startswith("Not assessed"), status


def test_export_writes_valid_assessment_results_and_a_summary_beside_the_evidence(
    far: dict[str, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    from tests.conftest import run_airgap

    assert _verify(far, far["site"]).returncode == 0
    assert _verify(far).returncode == 0  # a second, unsigned
    out = tmp_path / "site-a.json"
    proc = run_airgap("--json", "evidence", "export", "--out", str(out), "--state-dir", str(far["state"]))
    assert proc.returncode == 0, proc.stderr
    results, summary = tmp_path / "site-a.oscal-assessment-results.json", tmp_path / "site-a.oscal-summary.md"
    assert json.loads(proc.stdout)["oscal"] == [str(results), str(summary)]
    ar = assert_valid_oscal(results.read_bytes())
    [result] = ar["assessment-results"]["results"]
    assert [o["title"] for o in result["observations"]] == ["verify of demo 1.0.0: PASSED"] * 2
    assert result["observations"][1]["remarks"].startswith("Unsigned")
    findings = _findings(ar)
    # The latest verify is unsigned: reported, but it proves nothing.
    si76 = findings["si-7.6"]["target"]["status"]
    assert (si76["state"], si76["reason"]) == ("not-satisfied", "other"), si76
    assert "Unsigned evidence (verify)" in si76["remarks"]
    assert findings["cm-3.2"]["target"]["status"]["state"] == "not-satisfied"
    text = summary.read_text()
    assert "**1 attestation(s) are UNSIGNED**" in text and "| CM-3(2) | not-satisfied |" in text
    assert f"airgap evidence verify {out.name} --key site.pub" in text


def test_export_with_a_bundle_that_carries_no_oscal_results_is_refused_and_writes_nothing(
    far: dict[str, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    from tests.conftest import assert_one_line_error, run_airgap

    assert _verify(far, far["site"]).returncode == 0
    out = tmp_path / "e.json"
    export = ("evidence", "export", "--out", str(out), "--bundle", str(far["bundle"]))
    line = assert_one_line_error(run_airgap(*export, "--state-dir", str(far["state"])), 4)
    assert "carries no OSCAL assessment results" in line, line
    assert list(tmp_path.glob("e.*")) == []
    # A bundle that does not verify against the key given is refused before anything is read.
    _, other, _ = make_key(tmp_path, "other")
    line = assert_one_line_error(
        run_airgap(*export, "--key", str(other), "--state-dir", str(far["state"])), 3
    )
    assert list(tmp_path.glob("e.*")) == []
    # --key without --bundle is a usage error, not a key silently ignored.
    line = assert_one_line_error(
        run_airgap(
            "evidence", "export", "--out", str(out), "--key", str(other), "--state-dir", str(far["state"])
        ),
        2,
    )
    assert "--bundle" in line and not out.exists()


# ----------------------------------------------------------------------------- the real example
@pytest.mark.docker
def test_the_example_bundles_oscal_and_the_far_sides_after_a_real_install_and_accept_validate(
    built: dict[str, Any], signing_key: Path, tmp_path: Path
) -> None:
    from tests.conftest import run_airgap

    staging = Path(built["staging"])
    # In the signed bundle, listed in the manifest with their hashes like every content file.
    manifest = json.loads(_member(Path(built["bundle"][0]), "bundle/manifest.json"))
    listed = {f["path"]: f["sha256"] for f in manifest["files"]}
    for name in (oscal.COMPONENT_FILE, oscal.RESULTS_FILE, oscal.SUMMARY_FILE):
        raw = (staging / "compliance" / name).read_bytes()
        assert listed[f"compliance/{name}"] == hashlib.sha256(raw).hexdigest(), name
        assert _member(Path(built["bundle"][0]), f"bundle/compliance/{name}") == raw
    cd = assert_valid_oscal((staging / "compliance" / oscal.COMPONENT_FILE).read_bytes())
    assert cd["component-definition"]["components"][0]["title"] == "tabular-classifier model service"
    ar = assert_valid_oscal((staging / "compliance" / oscal.RESULTS_FILE).read_bytes())
    assert all(
        f["target"]["status"]["state"] in ("satisfied", "not-satisfied") for f in _findings(ar).values()
    )
    assert (staging / "compliance" / oscal.SUMMARY_FILE).is_file()

    state = tmp_path / "state"
    trust = run_airgap("keys", "trust", str(signing_key.with_suffix(".pub")), "--state-dir", str(state))
    assert trust.returncode == 0, trust.stderr
    at_site = ("--state-dir", str(state))
    bundle = built["bundle"][0]
    # The site signs what it checked: only signed evidence satisfies a control.
    make_key(tmp_path, "site")
    site = {**SITE, "AIRGAP_SITE_KEY": f"file:{tmp_path / 'site.key'}"}
    try:
        assert run_airgap("verify", bundle, *at_site, env=site).returncode == 0
        installed = run_airgap(
            "install",
            bundle,
            "--to",
            "docker",
            "--port",
            "18347",
            "--accept",
            *at_site,
            env=site,
            timeout=600,
        )
        assert installed.returncode == 0, installed.stdout + installed.stderr
    finally:
        run_airgap("uninstall", "tabular-classifier", "--to", "docker", *at_site)
    out = tmp_path / "evidence.json"
    exported = run_airgap("evidence", "export", "-o", str(out), "--bundle", bundle, *at_site)
    assert exported.returncode == 0, exported.stderr
    ar = assert_valid_oscal((tmp_path / "evidence.oscal-assessment-results.json").read_bytes())
    result, carried = ar["assessment-results"]["results"]
    assert carried["title"] == "airgap check of tabular-classifier 1.0.0" and carried["findings"]
    actions = [next(p["value"] for p in o["props"] if p["name"] == "action") for o in result["observations"]]
    assert set(actions) == {"verify", "install", "accept"}, actions
    findings = _findings(ar, result)
    for cid in ("si-7", "si-7.6", "cm-14", "cm-3.2", "cm-4.2"):
        assert findings[cid]["target"]["status"]["state"] == "satisfied", findings[cid]
    summary = (tmp_path / "evidence.oscal-summary.md").read_text()
    assert "## tabular-classifier 1.0.0" in summary
    assert "airgap check of tabular-classifier 1.0.0 (carried in the bundle)" in summary
