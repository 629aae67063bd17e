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
# A drift index over few rows is noise: over 30 reference-like rows PSI exceeds 0.25 most of the time,
# so every restart would page. Half the server's 1000-row window keeps chance well below the line.
DRIFT_MIN_ROWS = 500
# The Google SRE workbook's multiwindow, multi-burn-rate alerts for a 30-day SLO: (name, burn rate,
# long window, short window, severity). 14.4x spends 2 % of the budget in an hour, 6x 5 % in six
# hours (both page); 1x over three days spends 10 % (a ticket). The short window ends the alert
# soon after the burn stops.
BURN_TIERS = (
    ("AirgapModelErrorBudgetBurnFast", 14.4, "1h", "5m", "critical"),
    ("AirgapModelErrorBudgetBurnMedium", 6.0, "6h", "30m", "critical"),
    ("AirgapModelErrorBudgetBurnSlow", 1.0, "3d", "6h", "warning"),
)
DISCONNECT_RATIO = 0.01  # clients that hung up before their answer: latency the server never records
INFER_PATHS = "/v1/predict|/v2/models/.+/infer"  # the inference routes an SLO is measured on


ERROR_RATIO = (  # 5xx answers over all answers of the selected requests, over the window w
    'sum(rate(airgap_requests_total{{{sel},code=~"5.."}}[{w}]))'
    " / sum(rate(airgap_requests_total{{{sel}}}[{w}]))"
)


def _quantile(q: str, selector: str) -> str:
    return f"histogram_quantile({q}, sum by (le) (rate(airgap_request_seconds_bucket{{{selector}}}[5m])))"


def _sel(name: str, extra: str = "") -> str:
    return f'job="{name}"' + (f",{extra}" if extra else "")


def _drift_rule(
    name: str, alert: str, metric: str, label: str, what: str, description: str
) -> dict[str, Any]:
    """A drift alert that fires only on a window holding enough rows to mean something."""
    sel = _sel(name)
    return {
        "alert": alert,
        "expr": (
            f"max by ({label}) ({metric}_psi{{{sel}}} > {DRIFT_PSI:g}"
            f" and on (instance, {label}) {metric}_window_rows{{{sel}}} >= {DRIFT_MIN_ROWS})"
        ),
        "for": "30m",
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": f"{name}: {what} {{{{ $labels.{label} }}}} have drifted",
            "description": description,
        },
    }


def alert_rules(name: str, slo: SloSpec | None, contract: bool, predictions: bool) -> dict[str, Any]:
    """A Prometheus rules file (``groups``) of the alerts that say the model is not keeping its promises."""
    predict = _sel(name, f'path=~"{INFER_PATHS}"')
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
        },
        {
            "alert": "AirgapModelTargetMissing",
            "expr": f"absent(up{{{_sel(name)}}})",
            "for": "10m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": f"{name}: Prometheus has no target to scrape",
                "description": (
                    f'No series up{{job="{name}"}} for 10 minutes: the Service, its endpoints or the '
                    "ServiceMonitor are gone, so no other alert of this model can fire."
                ),
            },
        },
        {
            "alert": "AirgapModelClientDisconnects",
            "expr": (
                f"sum(rate(airgap_client_disconnects_total{{{_sel(name)}}}[10m]))"
                f" / (sum(rate(airgap_requests_total{{{_sel(name)}}}[10m]))"
                f" + sum(rate(airgap_client_disconnects_total{{{_sel(name)}}}[10m])))"
                f" > {DISCONNECT_RATIO:g}"
            ),
            "for": "10m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": f"{name}: over {DISCONNECT_RATIO:.0%} of clients hang up before their answer",
                "description": (
                    "Callers time out or give up before the server answers: latency they see and "
                    "the server's own histograms do not."
                ),
            },
        },
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
            for alert, burn, long, short, severity in BURN_TIERS:
                expr = " and ".join(
                    f"({ratio.format(sel=predict, w=w)}) > {burn * budget:g}" for w in (long, short)
                )
                rules.append(
                    {
                        "alert": alert,
                        "expr": expr,
                        "labels": {"severity": severity, "slo": "max_error_rate"},
                        "annotations": {
                            "summary": (
                                f"{name}: error budget burning {burn:g}x as fast as the SLO allows "
                                f"({budget:.2%} errors) over {long} and {short}"
                            ),
                            "description": "5xx answers of the inference routes.",
                        },
                    }
                )
        else:
            rules.append(
                {
                    "alert": "AirgapModelErrors",
                    "expr": f"({ratio.format(sel=predict, w='5m')}) > 0",
                    "for": "2m",
                    "labels": {"severity": "critical", "slo": "max_error_rate"},
                    "annotations": {
                        "summary": f"{name}: requests are failing (SLO: none may)",
                        "description": "5xx answers of the inference routes.",
                    },
                }
            )
    if contract:
        rules += [
            _drift_rule(
                name,
                "AirgapModelFeatureDrift",
                "airgap_feature_drift",
                "feature",
                "the inputs of feature",
                f"Population stability index of the last 1000 rows against the reference, "
                f"over at least {DRIFT_MIN_ROWS} rows.",
            ),
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
            _drift_rule(
                name,
                "AirgapModelPredictionDrift",
                "airgap_prediction_drift",
                "output",
                "the answers of",
                "The model answers otherwise than on the reference data "
                f"(over at least {DRIFT_MIN_ROWS} answers).",
            )
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


def service_monitor(name: str, namespace: str) -> dict[str, Any]:
    """A Prometheus Operator ``ServiceMonitor`` that scrapes the model's Service as job ``NAME``,
    the label every rule and dashboard query selects on."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": "airgap"},
        },
        "spec": {
            "jobLabel": "app.kubernetes.io/name",
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "namespaceSelector": {"matchNames": [namespace]},
            "endpoints": [{"port": "http", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}],
        },
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
    sel, predict = _sel(name), _sel(name, f'path=~"{INFER_PATHS}"')
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
        _panel(1, "Latency of inference requests", "timeseries", latency, 0, 0, "s"),
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
        _panel(
            9,
            "Answered outside a warn-mode contract, and unseen categories",
            "timeseries",
            [
                (
                    f"sum by (feature, rule) (rate(airgap_contract_warnings_total{{{sel}}}[5m]))",
                    "{{feature}} {{rule}}",
                ),
                (
                    f"sum by (feature) (rate(airgap_unseen_categories_total{{{sel}}}[5m]))",
                    "{{feature}} unseen",
                ),
            ],
            0,
            32,
            "reqps",
        ),
        _panel(
            10,
            "Missing values (share of the drift window)",
            "timeseries",
            [(f"max by (feature) (airgap_feature_missing_ratio{{{sel}}})", "{{feature}}")],
            12,
            32,
            "percentunit",
        ),
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
