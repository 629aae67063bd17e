"""The monitoring assets in the bundle: alert rules that Prometheus's own `promtool` checks and
unit-tests (each alert fires on the series that should fire it, and nothing fires on a healthy
model), the same rules as a PrometheusRule, and a Grafana dashboard whose every query parses and
names only metrics the model server exposes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from airgap.core.project import parse_project
from airgap.services.build.datacontract import model_documents

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "tabular"
NAME = "tabular-classifier"
JOB = f'job="{NAME}"'
PREDICT = f'{JOB},path="/v1/predict"'


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: scripts/setup-env.sh installs it (Debian package prometheus)")
    return path


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("monitoring")
    project = parse_project((EXAMPLE / "airgap.yaml").read_text(), "airgap.yaml")
    for rel, data in model_documents(project, EXAMPLE, EXAMPLE / "model" / "classifier.onnx").items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    return out / "monitoring"


def rules_of(assets: Path) -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load((assets / "alerts.rules.yaml").read_text())
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"]}


def test_promtool_accepts_the_rules_and_the_prometheusrule_holds_the_same(
    assets: Path, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [promtool(), "check", "rules", str(assets / "alerts.rules.yaml")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 7 rules found" in proc.stdout
    resource = yaml.safe_load((assets / "prometheusrule.yaml").read_text())
    assert (resource["apiVersion"], resource["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert resource["metadata"]["namespace"] == "tabular"
    assert resource["spec"] == yaml.safe_load((assets / "alerts.rules.yaml").read_text())


def _expected(rule: dict[str, Any], **labels: str) -> dict[str, Any]:
    annotations = {
        k: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], v)
        for k, v in rule["annotations"].items()
    }
    return {"exp_labels": {**rule["labels"], **labels}, "exp_annotations": annotations}


def test_each_alert_fires_on_its_series_and_none_on_a_healthy_model(assets: Path, tmp_path: Path) -> None:
    rules = rules_of(assets)
    bucket = "airgap_request_seconds_bucket{" + PREDICT + ',le="%s"}'
    slow = [  # 100 requests a minute, every one between 75 and 100 ms: p95 above 50 ms, p99 below 100 ms
        {"series": bucket % le, "values": "0+0x40"}
        for le in ("0.001", "0.005", "0.01", "0.025", "0.05", "0.075")
    ] + [{"series": bucket % le, "values": "0+100x40"} for le in ("0.1", "0.25", "+Inf")]
    fast = [{"series": bucket % le, "values": "0+100x40"} for le in ("0.001", "0.1", "+Inf")]
    healthy = [
        {"series": f"airgap_ready{{{JOB}}}", "values": "1x60"},
        {"series": f"up{{{JOB}}}", "values": "1x60"},
        {"series": f'airgap_requests_total{{{PREDICT},code="200"}}', "values": "0+100x60"},
        {"series": f'airgap_feature_drift_psi{{{JOB},feature="pressure"}}', "values": "0.02x60"},
        {"series": f'airgap_prediction_drift_psi{{{JOB},output="label"}}', "values": "0.01x60"},
    ]
    tests = {
        "rule_files": ["alerts.rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    *slow,
                    {"series": f'airgap_feature_drift_psi{{{JOB},feature="pressure"}}', "values": "0.4x60"},
                    {"series": f'airgap_prediction_drift_psi{{{JOB},output="label"}}', "values": "0.5x60"},
                    {"series": f'airgap_requests_total{{{PREDICT},code="200"}}', "values": "0+100x60"},
                    {"series": f'airgap_requests_total{{{PREDICT},code="500"}}', "values": "0+5x60"},
                    {"series": f"airgap_ready{{{JOB}}}", "values": "0x60"},
                    {"series": f"up{{{JOB}}}", "values": "1x60"},
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "35m",
                        "alertname": "AirgapModelLatencyP95",
                        "exp_alerts": [_expected(rules["AirgapModelLatencyP95"])],
                    },
                    {"eval_time": "35m", "alertname": "AirgapModelLatencyP99", "exp_alerts": []},
                    {
                        "eval_time": "35m",
                        "alertname": "AirgapModelFeatureDrift",
                        "exp_alerts": [_expected(rules["AirgapModelFeatureDrift"], feature="pressure")],
                    },
                    {
                        "eval_time": "35m",
                        "alertname": "AirgapModelPredictionDrift",
                        "exp_alerts": [_expected(rules["AirgapModelPredictionDrift"], output="label")],
                    },
                    {
                        "eval_time": "10m",
                        "alertname": "AirgapModelErrorBudgetBurn",
                        "exp_alerts": [_expected(rules["AirgapModelErrorBudgetBurn"])],
                    },
                    {
                        "eval_time": "10m",
                        "alertname": "AirgapModelNotReady",
                        "exp_alerts": [_expected(rules["AirgapModelNotReady"])],
                    },
                ],
            },
            {
                "interval": "1m",
                "input_series": [*fast, *healthy],
                "alert_rule_test": [
                    {"eval_time": "45m", "alertname": a, "exp_alerts": []} for a in sorted(rules)
                ],
            },
        ],
    }
    (tmp_path / "alerts.rules.yaml").write_bytes((assets / "alerts.rules.yaml").read_bytes())
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    proc = subprocess.run(
        [promtool(), "test", "rules", "tests.yaml"], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def _documented_metrics() -> set[str]:
    text = (ROOT / "docs" / "serving.md").read_text()
    return set(re.findall(r"^\| `(airgap_[a-z_]+)` \|", text, re.M))


def test_every_dashboard_query_parses_and_names_only_metrics_the_server_exposes(
    assets: Path, tmp_path: Path
) -> None:
    board = json.loads((assets / "dashboard.json").read_text())
    assert board["uid"] and board["schemaVersion"] >= 36 and board["title"].startswith(NAME)
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    exprs = []
    for panel in board["panels"]:
        assert (
            set(panel["gridPos"]) == {"h", "w", "x", "y"}
            and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        )
        assert panel["datasource"]["uid"] == "${datasource}"
        exprs += [t["expr"] for t in panel["targets"]]
    # promtool parses PromQL only inside rules: each query becomes a recording rule
    recording = {
        "groups": [
            {"name": "dashboard", "rules": [{"record": f"q:{i}", "expr": e} for i, e in enumerate(exprs)]}
        ]
    }
    (tmp_path / "queries.yaml").write_text(yaml.safe_dump(recording))
    proc = subprocess.run(
        [promtool(), "check", "rules", str(tmp_path / "queries.yaml")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    named = {m.removesuffix("_bucket") for e in exprs for m in re.findall(r"\b(airgap_[a-z_]+)", e)}
    assert named <= _documented_metrics(), named - _documented_metrics()
    assert {"airgap_request_seconds", "airgap_feature_drift_psi", "airgap_predictions_total"} <= named


@pytest.mark.docker
def test_the_bundle_carries_the_monitoring_assets(built: dict[str, Any]) -> None:
    """Everything in the staging directory is packed and signed; these are there, as rendered."""
    staging = Path(built["staging"])
    rules = yaml.safe_load((staging / "monitoring" / "alerts.rules.yaml").read_text())
    assert rules["groups"][0]["name"] == f"airgap-{NAME}"
    assert json.loads((staging / "monitoring" / "dashboard.json").read_text())["uid"] == f"airgap-{NAME}"
    assert yaml.safe_load((staging / "monitoring" / "prometheusrule.yaml").read_text())["spec"] == rules
