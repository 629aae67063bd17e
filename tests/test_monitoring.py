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

from airgap.core import monitoring
from airgap.core.contractspec import SloSpec
from airgap.core.project import parse_project
from airgap.services.build.datacontract import model_documents
from airgap.services.manifests import render_manifests

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
    assert "SUCCESS: 9 rules found" in proc.stdout
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
        {"series": f'airgap_feature_drift_window_rows{{{JOB},feature="pressure"}}', "values": "1000x60"},
        {"series": f'airgap_prediction_drift_psi{{{JOB},output="label"}}', "values": "0.01x60"},
        {"series": f'airgap_prediction_drift_window_rows{{{JOB},output="label"}}', "values": "1000x60"},
        {"series": f"airgap_client_disconnects_total{{{JOB}}}", "values": "0x60"},
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
                    {
                        "series": f'airgap_feature_drift_window_rows{{{JOB},feature="pressure"}}',
                        "values": "1000x60",
                    },
                    {"series": f'airgap_prediction_drift_psi{{{JOB},output="label"}}', "values": "0.5x60"},
                    {
                        "series": f'airgap_prediction_drift_window_rows{{{JOB},output="label"}}',
                        "values": "600x60",
                    },
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
                        "alertname": "AirgapModelErrors",
                        "exp_alerts": [_expected(rules["AirgapModelErrors"])],
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
    run_promtool_tests(yaml.safe_load((assets / "alerts.rules.yaml").read_text()), tests["tests"], tmp_path)


def run_promtool_tests(rules: dict[str, Any], tests: list[dict[str, Any]], tmp_path: Path) -> None:
    """Writes the rules and the unit tests and runs ``promtool test rules`` on them; fails with its output."""
    (tmp_path / "alerts.rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    document = {"rule_files": ["alerts.rules.yaml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    proc = subprocess.run(
        [promtool(), "test", "rules", "tests.yaml"], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


BUDGET = 0.001  # a 99.9 % availability SLO
SLO = SloSpec(p95_ms=None, p99_ms=None, rps=10, concurrency=1, duration_s=5, max_error_rate=BUDGET)
TIERS = (
    "AirgapModelErrorBudgetBurnFast",
    "AirgapModelErrorBudgetBurnMedium",
    "AirgapModelErrorBudgetBurnSlow",
)


def _traffic(errors_per_1000: int, minutes: int = 100) -> list[dict[str, str]]:
    return [
        {"series": f'airgap_requests_total{{{PREDICT},code="200"}}', "values": f"0+1000x{minutes}"},
        {
            "series": f'airgap_requests_total{{{PREDICT},code="500"}}',
            "values": f"0+{errors_per_1000}x{minutes}",
        },
    ]


def _burn_case(errors_per_1000: int, firing: set[str], rules: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "interval": "1m",
        "input_series": _traffic(errors_per_1000),
        "alert_rule_test": [
            {
                "eval_time": "40m",
                "alertname": tier,
                "exp_alerts": [_expected(rules[tier])] if tier in firing else [],
            }
            for tier in TIERS
        ],
    }


def test_each_burn_rate_tier_fires_at_its_rate_and_no_faster_tier_does(tmp_path: Path) -> None:
    """The SRE workbook's three tiers for a 99.9 % SLO: 14.4x (1h/5m) and 6x (6h/30m) page, 1x (3d/6h)
    is a ticket; a 2x burn raises only the ticket, so a slow burn is no longer silent."""
    doc = monitoring.alert_rules(NAME, SLO, contract=False, predictions=False)
    rules = {r["alert"]: r for g in doc["groups"] for r in g["rules"]}
    assert [rules[t]["labels"]["severity"] for t in TIERS] == ["critical", "critical", "warning"]
    tests = [
        _burn_case(20, set(TIERS), rules),  # 2 % errors: 20x the budget
        _burn_case(8, {TIERS[1], TIERS[2]}, rules),  # 0.8 %: 8x
        _burn_case(2, {TIERS[2]}, rules),  # 0.2 %: 2x
        _burn_case(0, set(), rules),
    ]
    run_promtool_tests(doc, tests, tmp_path)


def test_a_fast_burn_that_stopped_stops_paging_within_the_short_window(tmp_path: Path) -> None:
    doc = monitoring.alert_rules(NAME, SLO, contract=False, predictions=False)
    rules = {r["alert"]: r for g in doc["groups"] for r in g["rules"]}
    burst = [  # 5 % errors for 30 minutes, then none: the 1 h ratio stays high for another half hour
        {"series": f'airgap_requests_total{{{PREDICT},code="200"}}', "values": "0+1000x90"},
        {"series": f'airgap_requests_total{{{PREDICT},code="500"}}', "values": "0+50x30 1500+0x60"},
    ]
    tests = [
        {
            "interval": "1m",
            "input_series": burst,
            "alert_rule_test": [
                {"eval_time": "20m", "alertname": TIERS[0], "exp_alerts": [_expected(rules[TIERS[0]])]},
                {"eval_time": "45m", "alertname": TIERS[0], "exp_alerts": []},
            ],
        }
    ]
    run_promtool_tests(doc, tests, tmp_path)


def test_drift_alerts_wait_for_a_window_with_enough_rows(tmp_path: Path) -> None:
    """A drift index over 30 rows is noise (a restart would page); over 1000 it is a shifted population."""
    doc = monitoring.alert_rules(NAME, None, contract=True, predictions=True)
    rules = {r["alert"]: r for g in doc["groups"] for r in g["rules"]}

    def case(rows: int, fires: bool) -> dict[str, Any]:
        return {
            "interval": "1m",
            "input_series": [
                {"series": f'airgap_feature_drift_psi{{{JOB},feature="pressure"}}', "values": "0.6x60"},
                {
                    "series": f'airgap_feature_drift_window_rows{{{JOB},feature="pressure"}}',
                    "values": f"{rows}x60",
                },
                {"series": f'airgap_prediction_drift_psi{{{JOB},output="label"}}', "values": "0.6x60"},
                {
                    "series": f'airgap_prediction_drift_window_rows{{{JOB},output="label"}}',
                    "values": f"{rows}x60",
                },
            ],
            "alert_rule_test": [
                {
                    "eval_time": "45m",
                    "alertname": "AirgapModelFeatureDrift",
                    "exp_alerts": [_expected(rules["AirgapModelFeatureDrift"], feature="pressure")]
                    if fires
                    else [],
                },
                {
                    "eval_time": "45m",
                    "alertname": "AirgapModelPredictionDrift",
                    "exp_alerts": [_expected(rules["AirgapModelPredictionDrift"], output="label")]
                    if fires
                    else [],
                },
            ],
        }

    run_promtool_tests(
        doc, [case(30, False), case(monitoring.DRIFT_MIN_ROWS - 1, False), case(1000, True)], tmp_path
    )


def test_a_vanished_target_alerts_through_absent(tmp_path: Path) -> None:
    """When the Service or its ServiceMonitor disappears there is no ``up`` series at all, and
    ``up == 0`` never fires; ``absent()`` does."""
    doc = monitoring.alert_rules(NAME, None, contract=False, predictions=False)
    rules = {r["alert"]: r for g in doc["groups"] for r in g["rules"]}
    tests = [
        {
            "interval": "1m",
            "input_series": [{"series": 'up{job="some-other-model"}', "values": "1x30"}],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "AirgapModelTargetMissing", "exp_alerts": []},
                {
                    "eval_time": "15m",
                    "alertname": "AirgapModelTargetMissing",
                    "exp_alerts": [_expected(rules["AirgapModelTargetMissing"], job=NAME)],
                },
                {"eval_time": "15m", "alertname": "AirgapModelNotReady", "exp_alerts": []},
            ],
        },
        {
            "interval": "1m",
            "input_series": [{"series": f"up{{{JOB}}}", "values": "1x30"}],
            "alert_rule_test": [
                {"eval_time": "20m", "alertname": "AirgapModelTargetMissing", "exp_alerts": []}
            ],
        },
    ]
    run_promtool_tests(doc, tests, tmp_path)


def test_clients_hanging_up_before_their_answer_alert(tmp_path: Path) -> None:
    doc = monitoring.alert_rules(NAME, None, contract=False, predictions=False)
    rules = {r["alert"]: r for g in doc["groups"] for r in g["rules"]}

    def case(disconnects_per_minute: int, fires: bool) -> dict[str, Any]:
        return {
            "interval": "1m",
            "input_series": [
                {"series": f'airgap_requests_total{{{PREDICT},code="200"}}', "values": "0+1000x60"},
                {
                    "series": f"airgap_client_disconnects_total{{{JOB}}}",
                    "values": f"0+{disconnects_per_minute}x60",
                },
            ],
            "alert_rule_test": [
                {
                    "eval_time": "30m",
                    "alertname": "AirgapModelClientDisconnects",
                    "exp_alerts": [_expected(rules["AirgapModelClientDisconnects"])] if fires else [],
                }
            ],
        }

    run_promtool_tests(doc, [case(30, True), case(5, False), case(0, False)], tmp_path)


def test_the_service_monitor_scrapes_the_models_service_as_the_job_the_rules_select(assets: Path) -> None:
    monitor = yaml.safe_load((assets / "servicemonitor.yaml").read_text())
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "ServiceMonitor")
    project = parse_project((EXAMPLE / "airgap.yaml").read_text(), "airgap.yaml")
    services = [
        o
        for f in render_manifests(project, EXAMPLE, "registry.example/m:1")
        for o in f.objects
        if o["kind"] == "Service"
    ]
    [service] = [s for s in services if s["metadata"]["name"] == NAME]
    namespace = service["metadata"]["namespace"]
    assert monitor["metadata"]["namespace"] == namespace
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [namespace]}
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    # the job label comes from the Service's label, so it is the name every rule selects on
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == NAME
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


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
