"""Monitoring assets for the bundled model: Prometheus alert rules and a Grafana dashboard, rendered
from the project's SLO and data contract at bundle time.

On an air-gapped network nobody can download a dashboard or a rules pack afterwards, so the
bundle carries them, signed, for the metrics the model server exposes (docs/serving.md#metrics).
Every series is selected by ``job="NAME"``: the job label Prometheus gives the scrape of the
model's Service (a ServiceMonitor's default) or of a static target named after the model.
Pure: values in, documents out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airgap.core.contractspec import SloSpec

DRIFT_PSI = 0.25  # the customary line between "moderate shift" and "the population has changed"
FAST_BURN = 14.4  # a 30-day error budget gone in 2 days: page (Google SRE workbook, multiwindow)


ERROR_RATIO = (  # 5xx answers over all answers of the selected requests, over the window w
    'sum(rate(airgap_requests_total{{{sel},code=~"5.."}}[{w}]))'
    " / sum(rate(airgap_requests_total{{{sel}}}[{w}]))"
)


def _quantile(q: str, selector: str) -> str:
    return f"histogram_quantile({q}, sum by (le) (rate(airgap_request_seconds_bucket{{{selector}}}[5m])))"


def _sel(name: str, extra: str = "") -> str:
    return f'job="{name}"' + (f",{extra}" if extra else "")


def alert_rules(name: str, slo: SloSpec | None, contract: bool, predictions: bool) -> dict[str, Any]:
    """A Prometheus rules file (``groups``) of the alerts that say the model is not keeping its promises."""
    predict = _sel(name, 'path="/v1/predict"')
    rules: list[dict[str, Any]] = [
        {
            "alert": "AirgapModelNotReady",
            "expr": f"max by (instance) (airgap_ready{{{_sel(name)}}}) == 0 or up{{{_sel(name)}}} == 0",
            "for": "5m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": f"{name} is not ready or not scraped",
                "description": "The model server has not answered its readiness check for 5 minutes.",
            },
        }
    ]
    if slo is not None:
        for q, bound in (("0.95", slo.p95_ms), ("0.99", slo.p99_ms)):
            if bound is None:
                continue
            rules.append(
                {
                    "alert": f"AirgapModelLatencyP{q[2:]}",
                    "expr": f"{_quantile(q, predict)} > {bound / 1000:g}",
                    "for": "10m",
                    "labels": {"severity": "warning", "slo": f"p{q[2:]}_ms"},
                    "annotations": {
                        "summary": f"{name}: p{q[2:]} latency above the promised {bound:g} ms",
                        "description": "Measured over 5 minutes of /v1/predict requests, for 10 minutes.",
                    },
                }
            )
        budget = slo.max_error_rate
        ratio = ERROR_RATIO
        if budget > 0:
            expr = " and ".join(
                f"({ratio.format(sel=predict, w=w)}) > {FAST_BURN * budget:g}" for w in ("1h", "5m")
            )
            summary = f"{name}: error budget burning {FAST_BURN:g}x too fast (SLO {budget:.2%} errors)"
        else:
            expr = f"({ratio.format(sel=predict, w='5m')}) > 0"
            summary = f"{name}: requests are failing (SLO: none may)"
        rules.append(
            {
                "alert": "AirgapModelErrorBudgetBurn",
                "expr": expr,
                "for": "2m",
                "labels": {"severity": "critical", "slo": "max_error_rate"},
                "annotations": {"summary": summary, "description": "5xx answers of /v1/predict."},
            }
        )
    if contract:
        rules += [
            {
                "alert": "AirgapModelFeatureDrift",
                "expr": f"max by (feature) (airgap_feature_drift_psi{{{_sel(name)}}}) > {DRIFT_PSI:g}",
                "for": "30m",
                "labels": {"severity": "warning"},
                "annotations": {
                    "summary": f"{name}: the inputs of feature {{{{ $labels.feature }}}} have drifted",
                    "description": "Population stability index of the last 1000 rows against the reference.",
                },
            },
            {
                "alert": "AirgapModelOutOfContract",
                "expr": (
                    f"sum(rate(airgap_out_of_contract_total{{{_sel(name)}}}[10m])) "
                    f"/ sum(rate(airgap_requests_total{{{predict}}}[10m])) > 0.05"
                ),
                "for": "10m",
                "labels": {"severity": "warning"},
                "annotations": {
                    "summary": f"{name}: over 5 % of requests fall outside the data contract",
                    "description": "Callers send data the model was not built for (out_of_contract).",
                },
            },
        ]
    if predictions:
        rules.append(
            {
                "alert": "AirgapModelPredictionDrift",
                "expr": f"max by (output) (airgap_prediction_drift_psi{{{_sel(name)}}}) > {DRIFT_PSI:g}",
                "for": "30m",
                "labels": {"severity": "warning"},
                "annotations": {
                    "summary": f"{name}: the answers of {{{{ $labels.output }}}} have drifted",
                    "description": "The model answers otherwise than on the reference data.",
                },
            }
        )
    for rule in rules:
        rule["labels"]["model"] = name
    return {"groups": [{"name": f"airgap-{name}", "rules": rules}]}


def prometheus_rule(name: str, namespace: str, rules: dict[str, Any]) -> dict[str, Any]:
    """The same rules as a Prometheus Operator ``PrometheusRule`` for the model's namespace."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": f"{name}-alerts",
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": "airgap"},
        },
        "spec": rules,
    }


def _panel(
    pid: int, title: str, kind: str, exprs: Sequence[tuple[str, str]], x: int, y: int, unit: str
) -> dict[str, Any]:
    return {
        "id": pid,
        "type": kind,
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "expr": expr,
                "legendFormat": legend,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
            }
            for i, (expr, legend) in enumerate(exprs)
        ],
    }


def dashboard(name: str, version: str, slo: SloSpec | None) -> dict[str, Any]:
    """A Grafana dashboard (JSON model, schemaVersion 39) of latency, errors, throughput and drift."""
    sel, predict = _sel(name), _sel(name, 'path="/v1/predict"')
    latency = [
        (
            f"histogram_quantile({q}, sum by (le) (rate(airgap_request_seconds_bucket{{{predict}}}[5m])))",
            f"p{q[2:]}",
        )
        for q in ("0.5", "0.95", "0.99")
    ]
    if slo is not None:
        latency += [
            (f"vector({b / 1000:g})", f"SLO p{k}")
            for k, b in (("95", slo.p95_ms), ("99", slo.p99_ms))
            if b is not None
        ]
    panels = [
        _panel(1, "Latency of /v1/predict", "timeseries", latency, 0, 0, "s"),
        _panel(
            2,
            "Throughput by status",
            "timeseries",
            [(f"sum by (code) (rate(airgap_requests_total{{{predict}}}[5m]))", "{{code}}")],
            12,
            0,
            "reqps",
        ),
        _panel(
            3,
            "Error ratio (5xx)",
            "timeseries",
            [(ERROR_RATIO.format(sel=predict, w="5m"), "5xx")],
            0,
            8,
            "percentunit",
        ),
        _panel(
            4,
            "Out-of-contract requests by feature",
            "timeseries",
            [
                (
                    f"sum by (feature, rule) (rate(airgap_out_of_contract_total{{{sel}}}[5m]))",
                    "{{feature}} {{rule}}",
                )
            ],
            12,
            8,
            "reqps",
        ),
        _panel(
            5,
            "Feature drift (PSI; above 0.25: shifted)",
            "timeseries",
            [(f"airgap_feature_drift_psi{{{sel}}}", "{{feature}}")],
            0,
            16,
            "none",
        ),
        _panel(
            6,
            "Prediction distribution",
            "timeseries",
            [
                (
                    f"sum by (output, value) (rate(airgap_predictions_total{{{sel}}}[5m]))",
                    "{{output}}={{value}}",
                )
            ],
            12,
            16,
            "reqps",
        ),
        _panel(
            7,
            "Prediction drift (PSI)",
            "timeseries",
            [(f"airgap_prediction_drift_psi{{{sel}}}", "{{output}}")],
            0,
            24,
            "none",
        ),
        _panel(8, "Ready", "stat", [(f"min(airgap_ready{{{sel}}})", "ready")], 12, 24, "none"),
    ]
    return {
        "uid": f"airgap-{name}"[:40],
        "title": f"{name} (airgap)",
        "tags": ["airgap", name],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "annotations": {"list": []},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Prometheus",
                    "current": {},
                }
            ]
        },
        "description": f'{name} {version}: the metrics of docs/serving.md, selected by job="{name}"',
        "panels": panels,
    }
