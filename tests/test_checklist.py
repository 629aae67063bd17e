"""The three reports of `airgap check` — results.json, checklist.md, checklist.cklb — rendered by the
service from a staging-shaped directory: the CKLB validates against DISA's own schema, the bytes do
not change between runs or locations, waivers and manual rules show up where an assessor looks,
and checking never writes into the bundle it reads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from airgap.core.project import Waiver, parse_project
from airgap.errors import InvalidInputError
from airgap.services.build.check import (
    COMPLIANCE_FILES,
    CheckOutcome,
    DirectoryReader,
    build_facts,
    check_bundle,
    lock_facts,
    policy_directories,
    write_compliance,
)
from airgap.services.manifests import render_manifests
from tests.conftest import ROOT

DATA = ROOT / "tests" / "data"
SCHEMA = json.loads((DATA / "SV3_CKLB_1_0_JSON_SCHEMA.json").read_text())
GOOD = sorted((DATA / "manifests" / "good").glob("*.yaml"))
WHEN = datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)
DIGEST = "sha256:" + "b" * 64
LOCK = (
    "# airgap requirements.lock\n"
    "numpy==2.4.6 \\\n    --hash=sha256:" + "1" * 64 + "\n"
    "onnxruntime==1.32.0 \\\n    --hash=sha256:" + "2" * 64 + " \\\n    --hash=sha256:" + "3" * 64 + "\n"
)
WAIVER = Waiver(
    "AG-SRG-READ-ONLY-ROOT", "onnxruntime writes its cache under /opt; accepted by the ISSO on 2024-03-01"
)


def make_bundle(root: Path, bad: str | None = None, **extra: str) -> Path:
    """A staging-shaped directory: manifests, build record, lock, SBOM and signing facts."""
    (root / "manifests").mkdir(parents=True)
    for path in GOOD:
        if bad is not None and path.name == "20-deployment.yaml":
            continue
        shutil.copy(path, root / "manifests" / path.name)
    if bad is not None:
        shutil.copy(DATA / "manifests" / "bad" / f"{bad}.yaml", root / "manifests" / "20-deployment.yaml")
    record = {
        "format": "airgap.build-record/v1",
        "name": "tabular-classifier",
        "version": "1.0.0",
        "base_image": {
            "requested": "127.0.0.1:5000/airgap/python-base:bookworm",
            "resolved": f"127.0.0.1:5000/airgap/python-base@{DIGEST}",
        },
        "image": {
            "tag": "airgap/tabular-classifier:1.0.0",
            "id": "sha256:" + "a" * 64,
            "user": "10001:10001",
            "labels": {
                "org.opencontainers.image.title": "tabular-classifier",
                "org.opencontainers.image.version": "1.0.0",
                "org.opencontainers.image.created": "2023-11-14T22:13:20Z",
                "org.opencontainers.image.base.digest": DIGEST,
                "org.opencontainers.image.base.name": "127.0.0.1:5000/airgap/python-base:bookworm",
            },
        },
    }
    (root / "build.json").write_text(json.dumps(record, indent=2))
    (root / "requirements.lock").write_text(LOCK)
    sbom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "components": [{"type": "library", "name": "numpy"}],
    }
    (root / "sbom.cdx.json").write_text(json.dumps(sbom))
    signature = {"algorithm": "ecdsa-p384-sha384", "curve": "secp384r1", "key_bits": 384, "hash": "sha384"}
    (root / "signature.json").write_text(json.dumps(signature))
    for name, text in extra.items():
        (root / name).write_text(text)
    return root


def run_check(root: Path, **kwargs: Any) -> CheckOutcome:
    kwargs.setdefault("evaluated_at", WHEN)
    return check_bundle(DirectoryReader(root), **kwargs)


def cklb(outcome: CheckOutcome) -> dict[str, Any]:
    return dict(json.loads(outcome.files["checklist.cklb"]))


def group(doc: dict[str, Any], group_id: str) -> dict[str, Any]:
    for stig in doc["stigs"]:
        for rule in stig["rules"]:
            if rule["group_id"] == group_id:
                return dict(rule)
    raise KeyError(group_id)


def validate_cklb(data: bytes) -> None:
    validator = jsonschema.Draft201909Validator(
        SCHEMA, format_checker=jsonschema.Draft201909Validator.FORMAT_CHECKER
    )
    errors = sorted(validator.iter_errors(json.loads(data)), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]


@pytest.mark.parametrize("bad", [None, "privileged", "writable-root", "workload-in-default"])
def test_cklb_validates_against_disas_schema(tmp_path: Path, bad: str | None) -> None:
    outcome = run_check(make_bundle(tmp_path / "b", bad), waivers=[WAIVER] if bad == "writable-root" else [])
    validate_cklb(outcome.files["checklist.cklb"])


def test_cklb_carries_every_status_and_only_schema_fields(tmp_path: Path) -> None:
    doc = cklb(run_check(make_bundle(tmp_path / "b", "privileged")))
    statuses = {r["status"] for s in doc["stigs"] for r in s["rules"]}
    assert statuses == {"open", "not_reviewed", "not_a_finding", "not_applicable"}
    rule_fields = set(SCHEMA["$defs"]["stig_rule"]["properties"])
    for stig in doc["stigs"]:
        assert set(stig) <= set(SCHEMA["$defs"]["stig"]["properties"])
        assert stig["size"] == len(stig["rules"])
        for rule in stig["rules"]:
            assert set(rule) <= rule_fields
    assert [s["stig_id"] for s in doc["stigs"]] == ["Container_Platform_SRG", "Kubernetes_STIG", "airgap"]


def test_a_stig_group_is_open_when_any_of_its_rules_is(tmp_path: Path) -> None:
    doc = cklb(run_check(make_bundle(tmp_path / "b", "privileged")))
    psa = group(doc, "V-254800")
    assert (psa["status"], psa["rule_version"], psa["severity"]) == ("open", "CNTR-K8-002011", "high")
    assert "AG-PSS-PRIVILEGED" in psa["finding_details"]
    assert (
        "Deployment tabular/tabular-classifier (manifests/20-deployment.yaml): "
        "spec.template.spec.containers[0].securityContext.privileged"
    ) in psa["finding_details"]
    assert group(doc, "V-233185")["status"] == "open"
    secrets = group(doc, "V-242415")
    assert (secrets["status"], secrets["rule_version"]) == ("not_a_finding", "CNTR-K8-001160")


def test_group_with_a_manual_part_is_not_reviewed_not_passed(tmp_path: Path) -> None:
    """V-233271 asks for a FIPS-*validated* module: the algorithm check passes, the module is manual."""
    doc = cklb(run_check(make_bundle(tmp_path / "b")))
    fips = group(doc, "V-233271")
    assert fips["status"] == "not_reviewed"
    assert "[not_a_finding] AG-SRG-FIPS-HASH" in fips["finding_details"]
    assert "[not_reviewed] AG-MAN-FIPS-VALIDATED-MODULE" in fips["finding_details"]


def test_manual_rules_are_not_reviewed_in_every_output(tmp_path: Path) -> None:
    outcome = run_check(make_bundle(tmp_path / "b"))
    results = json.loads(outcome.files["results.json"])
    ato = next(r for r in results["rules"] if r["id"] == "AG-MAN-ATO")
    assert (ato["status"], ato["manual"]) == ("not_reviewed", True)
    assert "Authorizing Official" in ato["reason"]
    registry = group(cklb(outcome), "V-233192")
    assert registry["status"] == "not_reviewed"
    assert "registry allow-list belongs to the site" in registry["finding_details"]
    md = outcome.files["checklist.md"].decode()
    section = md.split("## Not reviewed (manual)")[1].split("\n## ")[0]
    assert "AG-MAN-ATO" in section and "Authorizing Official" in section


def test_waiver_shows_its_justification_in_markdown_and_as_a_cklb_override(tmp_path: Path) -> None:
    outcome = run_check(make_bundle(tmp_path / "b", "writable-root"), waivers=[WAIVER], fail_on="low")
    assert not outcome.failed
    md = outcome.files["checklist.md"].decode()
    section = md.split("## Waived (not a finding by override)")[1].split("\n## ")[0]
    assert "AG-SRG-READ-ONLY-ROOT" in section
    assert f"Override (waiver): {WAIVER.justification}" in section
    assert "automated result: open" in section
    rule = group(cklb(outcome), "V-270876")
    assert rule["status"] == "not_a_finding"
    assert rule["overrides"] == {
        "status": {"status": "not_a_finding", "reason": f"AG-SRG-READ-ONLY-ROOT: {WAIVER.justification}"}
    }
    assert WAIVER.justification in rule["comments"]
    result = next(r for r in json.loads(outcome.files["results.json"])["rules"] if r["id"] == WAIVER.rule)
    assert result["waiver"] == {"justification": WAIVER.justification}
    assert (result["status"], result["automated_status"]) == ("not_a_finding", "open")


@pytest.mark.parametrize(
    ("bad", "failing_levels"),
    [
        (None, ()),
        ("privileged", ("high", "medium", "low")),
        ("writable-root", ("medium", "low")),
        ("service-account-token", ("low",)),
    ],
)
def test_fail_on_levels(tmp_path: Path, bad: str | None, failing_levels: tuple[str, ...]) -> None:
    root = make_bundle(tmp_path / "b", bad)
    for level in ("high", "medium", "low"):
        outcome = run_check(root, fail_on=level)
        assert outcome.failed is (level in failing_levels), (bad, level)
        results = json.loads(outcome.files["results.json"])
        assert results["failed"] is outcome.failed
        assert results["blocking"] == [r.rule.id for r in outcome.blocking]
        assert ("**Result: FAIL**" in outcome.files["checklist.md"].decode()) is outcome.failed


def test_reports_are_the_same_bytes_wherever_and_whenever_the_bundle_is_checked(tmp_path: Path) -> None:
    first = run_check(make_bundle(tmp_path / "one", "privileged"))
    second = run_check(make_bundle(tmp_path / "elsewhere" / "two", "privileged"))
    assert first.files == second.files
    assert str(tmp_path) not in b"".join(first.files.values()).decode()


def test_the_timestamp_is_the_one_passed_in(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    later = run_check(root, evaluated_at=datetime(2030, 1, 1, tzinfo=timezone.utc))
    assert json.loads(later.files["results.json"])["evaluated_at"] == "2030-01-01T00:00:00Z"
    earlier = run_check(root)
    assert cklb(later)["id"] == cklb(earlier)["id"], "UUIDs come from ids, not from the clock"
    assert [r["uuid"] for s in cklb(later)["stigs"] for r in s["rules"]] == [
        r["uuid"] for s in cklb(earlier)["stigs"] for r in s["rules"]
    ]


def test_results_json_is_sorted_and_names_object_field_and_fix(tmp_path: Path) -> None:
    results = json.loads(run_check(make_bundle(tmp_path / "b", "secret-env")).files["results.json"])
    ids = [r["id"] for r in results["rules"]]
    assert ids == sorted(ids)
    rule = next(r for r in results["rules"] if r["id"] == "AG-K8S-SECRET-ENV")
    assert rule["references"]["kubernetes_stig"] == [{"group_id": "V-242415", "stig_id": "CNTR-K8-001160"}]
    assert rule["findings"] == [
        {
            "object": {
                "kind": "Deployment",
                "namespace": "tabular",
                "name": "tabular-classifier",
                "source": "manifests/20-deployment.yaml",
            },
            "field": "spec.template.spec.containers[0].env[1].valueFrom.secretKeyRef",
            "message": rule["findings"][0]["message"],
            "fix": rule["findings"][0]["fix"],
        }
    ]
    assert "Secret" in rule["findings"][0]["message"] and "secretKeyRef" in rule["findings"][0]["fix"]
    assert results["summary"]["open"]["high"] == 1


def test_markdown_summary_counts_match_the_results(tmp_path: Path) -> None:
    outcome = run_check(make_bundle(tmp_path / "b", "hostport-80"))
    counts = outcome.evaluation.counts()
    md = outcome.files["checklist.md"].decode()
    for status, row in counts.items():
        assert f"| {status} | {row['high']} | {row['medium']} | {row['low']} | {sum(row.values())} |" in md
    assert "`spec.template.spec.containers[0].ports[0].hostPort`" in md


def test_check_never_writes_into_the_bundle(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b", "privileged")

    def snapshot() -> dict[str, tuple[int, int]]:
        return {
            str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))
        }

    before = snapshot()
    run_check(root)
    assert snapshot() == before


def test_write_compliance_writes_the_three_files_and_nothing_else(tmp_path: Path) -> None:
    outcome = run_check(make_bundle(tmp_path / "b"))
    out = tmp_path / "out" / "compliance"
    written = write_compliance(outcome, out)
    assert [p.name for p in written] == list(COMPLIANCE_FILES)
    assert sorted(p.name for p in out.iterdir()) == sorted(COMPLIANCE_FILES), "no temporary file left behind"
    for name in COMPLIANCE_FILES:
        assert (out / name).read_bytes() == outcome.files[name]
    write_compliance(outcome, out)  # again, over the old files
    assert sorted(p.name for p in out.iterdir()) == sorted(COMPLIANCE_FILES)


def test_target_profile_in_the_bundle_is_checked(tmp_path: Path) -> None:
    profile = (DATA / "profiles" / "rocky8-aarch64-py310.json").read_text()
    outcome = run_check(make_bundle(tmp_path / "b", **{"target-profile.json": profile}))
    assert outcome.evaluation.result("AG-TGT-FIPS-ALGORITHMS").status == "not_a_finding"
    assert outcome.evaluation.result("AG-TGT-DISK").status == "not_a_finding"
    assert cklb(outcome)["target_data"]["host_name"] == "edge-a64-01"


def test_a_profile_that_is_not_one_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="target-profile.json"):
        run_check(make_bundle(tmp_path / "b", **{"target-profile.json": '{"schema": "something-else"}'}))


def test_malformed_manifest_is_invalid_input_naming_the_file(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b", **{"manifests/broken.yaml": "kind: Deployment\nmetadata: [unclosed\n"})
    with pytest.raises(InvalidInputError, match=r"manifests/broken\.yaml"):
        run_check(root)


def test_a_manifest_document_that_is_not_an_object_is_invalid_input(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b", **{"manifests/list.yaml": "- just\n- a list\n"})
    with pytest.raises(InvalidInputError, match="not a Kubernetes object"):
        run_check(root)


def test_directory_reader_refuses_paths_outside_the_bundle(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    os.symlink(secret, root / "escape.yaml")
    reader = DirectoryReader(root)
    assert "escape.yaml" not in reader.list(), "symlinks are not bundle files"
    for path in ("../secret.txt", "/etc/passwd", "escape.yaml", ""):
        with pytest.raises(InvalidInputError):
            reader.read(path)


def test_lock_facts_report_an_unhashed_pin_instead_of_refusing_the_lock() -> None:
    facts = lock_facts(LOCK + "packaging==26.3\nprotobuf==7.36.2 --hash=md5:" + "4" * 32 + "\n")
    assert facts == {
        "pins": 4,
        "all_hashed": False,
        "hash_algorithms": ["md5", "sha256"],
        "unhashed": ["packaging"],
    }


def test_facts_say_where_each_fact_came_from(tmp_path: Path) -> None:
    facts = build_facts(DirectoryReader(make_bundle(tmp_path / "b")))
    assert facts["sources"] == {
        "image": "build.json",
        "base_image": "build.json",
        "project": "build.json",
        "lock": "requirements.lock",
        "signature": "signature.json",
        "sbom": "sbom.cdx.json",
    }
    assert facts["base_image"]["pinned_by_digest"] is True
    assert facts["sbom"]["components"] == 1
    assert facts["lock"]["pins"] == 2 and facts["host_lock"] is None
    assert [m["source"] for m in facts["manifests"]] == [
        "manifests/00-namespace.yaml",
        "manifests/10-serviceaccount.yaml",
        "manifests/20-deployment.yaml",
        "manifests/30-service.yaml",
        "manifests/40-networkpolicy.yaml",
        "manifests/40-networkpolicy.yaml",
    ]
    assert facts["bundle"]["size_bytes"] == sum(
        p.stat().st_size for p in (tmp_path / "b").rglob("*") if p.is_file()
    )


EXAMPLE = ROOT / "examples" / "tabular"


def test_the_examples_checklist_cites_a_disa_group_for_at_least_30_entries(tmp_path: Path) -> None:
    """The example's own manifests, rendered as `airgap bundle` renders them (no engine needed)."""
    project = parse_project((EXAMPLE / "airgap.yaml").read_text())
    root = make_bundle(tmp_path / "b")
    shutil.rmtree(root / "manifests")
    (root / "manifests").mkdir()
    for f in render_manifests(project, EXAMPLE, f"airgap/{project.name}@sha256:{'c' * 64}"):
        (root / "manifests" / f.name).write_text(f.text)
    outcome = run_check(
        root,
        waivers=project.policies.waivers,
        fail_on=project.policies.fail_on,
        policy_dirs=policy_directories(EXAMPLE, project.policies),
    )
    validate_cklb(outcome.files["checklist.cklb"])
    entries = [rule for stig in cklb(outcome)["stigs"] for rule in stig["rules"]]
    disa = [e for e in entries if re.fullmatch(r"V-\d{5,6}", e["group_id"])]
    assert len(disa) >= 30, [e["group_id"] for e in entries]
    # each names its STIG or SRG id and DISA's CCIs; the rest are airgap's own rules, with CCIs too
    assert all(e["rule_version"] and e["ccis"] for e in disa)
    assert all(e["group_id"].startswith("AG-") and e["ccis"] for e in entries if e not in disa)
