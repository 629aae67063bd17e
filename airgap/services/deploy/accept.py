"""`airgap accept`: the installed model proves its deployment contract where it runs.

Three promises, each signed into the bundle at bundle time: the data contract (the server refuses a
row outside it and serves the contract it was given), the acceptance set (the model's answers on
the labelled rows meet the thresholds), and the SLO (latency percentiles and error rate under a
bounded, open-loop load at the promised rate). Every promise is measured against the running
installation through its target's endpoint, never against a copy of the model, and the outcome is
kept as a report in the state directory (JSON for machines, Markdown for the person who signs).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airgap.adapters.fs import atomic_write_bytes
from airgap.adapters.http import request_json
from airgap.adapters.loadgen import run_load
from airgap.core import acceptance as metrics
from airgap.core.acceptance import evaluate, predictions
from airgap.errors import InvalidInputError
from airgap.services.deploy import targets
from airgap.services.deploy.targets._base import Site
from airgap.services.media.extraction import read_record
from airgap.services.observer import NullObserver, Observer

REPORT_FORMAT = "airgap.acceptance-report/v1"
LOAD_TASK = "load test"


@dataclass(frozen=True)
class Promise:
    """One promise of the contract and what was measured against it."""

    section: str  # data, acceptance, slo
    what: str
    promised: str
    measured: str
    ok: bool

    def to_json(self) -> dict[str, Any]:
        """The row as the report writes it."""
        return {
            "section": self.section,
            "what": self.what,
            "promised": self.promised,
            "measured": self.measured,
            "ok": self.ok,
        }


@dataclass(frozen=True)
class AcceptReport:
    """Every promise checked, the raw figures, and where the report was written."""

    name: str
    version: str
    target: str
    manifest_sha256: str
    promises: tuple[Promise, ...]
    figures: dict[str, Any]
    report: Path
    markdown: Path

    @property
    def ok(self) -> bool:
        """Every promise kept."""
        return all(p.ok for p in self.promises)


def _read(content: Path, name: str) -> dict[str, Any] | None:
    path = content / "model" / name
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_bytes())
    except ValueError as exc:
        raise InvalidInputError(f"the installed bundle's model/{name} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"the installed bundle's model/{name} is not an object")
    return data


def accept(site: Site, name: str, target: str, observer: Observer | None = None) -> AcceptReport:
    """Measures every promise of the installed ``name`` on ``target``; the report says which held."""
    obs = observer or NullObserver()
    current, _ = site.installed.get(name, target)
    if current is None:
        raise InvalidInputError(
            f"{name} is not installed with --to {target}", hint="airgap status lists installs"
        )
    content = Path(current.content)
    data, acceptance, slo = (_read(content, f) for f in ("data-contract.json", "acceptance.json", "slo.json"))
    if data is None and acceptance is None and slo is None:
        raise InvalidInputError(
            f"{name} {current.version} was bundled without a deployment contract: nothing to accept",
            hint="declare data, slo and acceptance in airgap.yaml (docs/project-file.md) and bundle again",
        )
    max_batch = read_record(content).serving.max_batch or 64
    golden = json.loads((content / "model" / "golden.json").read_text())
    promises: list[Promise] = []
    figures: dict[str, Any] = {}
    with targets.get(target).endpoint(site, current) as port:
        if data is not None:
            promises += _data_promises(port, data)
        if acceptance is not None:
            found, values = _acceptance_promises(port, acceptance, max_batch)
            promises += found
            figures["acceptance"] = values
        if slo is not None:
            found, load = _slo_promises(port, slo, acceptance, golden, obs)
            promises += found
            figures["load"] = load
    report, markdown = _write(
        site, current.name, current.version, target, current.manifest_sha256, promises, figures
    )
    outcome = AcceptReport(
        current.name,
        current.version,
        target,
        current.manifest_sha256,
        tuple(promises),
        figures,
        report,
        markdown,
    )
    site.state.audit(
        {
            "action": f"accept --to {target}",
            "name": current.name,
            "version": current.version,
            "manifest_sha256": current.manifest_sha256,
            "result": "accepted" if outcome.ok else "refused",
            "missed": [f"{p.section}: {p.what}" for p in promises if not p.ok],
        }
    )
    return outcome


def _data_promises(port: int, data: dict[str, Any]) -> list[Promise]:
    out = []
    status, served = request_json(port, "/v1/contract", timeout=10)
    out.append(
        Promise(
            "data",
            "serves the signed contract",
            "GET /v1/contract = model/data-contract.json",
            "identical" if status == 200 and served == data else f"HTTP {status}, different",
            status == 200 and served == data,
        )
    )
    features = data.get("features") or []
    probe = _outside_row(features)
    if probe is not None:
        row, feature = probe
        status, body = request_json(port, "/v1/predict", {"inputs": {data["input"]: [row]}}, timeout=10)
        code = (body.get("error") or {}).get("code") if isinstance(body, dict) else None
        out.append(
            Promise(
                "data",
                f"refuses {feature} outside its range",
                "HTTP 400 out_of_contract",
                f"HTTP {status} {code or ''}".strip(),
                status == 400 and code == "out_of_contract",
            )
        )
    return out


def _outside_row(features: list[dict[str, Any]]) -> tuple[list[Any], str] | None:
    """A row inside the contract in every column but one, an enforced feature's, just above its maximum."""
    row: list[Any] = []
    target = None
    for f in features:
        low, high = f.get("min"), f.get("max")
        if f.get("type") == "category":
            allowed = f.get("allowed") or [0]
            row.append(float(allowed[0]) if _numeric(allowed[0]) else allowed[0])
            continue
        middle = (
            (low + high) / 2
            if low is not None and high is not None
            else (low if low is not None else high or 0)
        )
        if f.get("type") in ("int", "bool"):
            middle = round(middle)
        if target is None and high is not None and f.get("mode") != "warn":  # warn mode answers it
            target = f["name"]
            row.append(high + max(1.0, abs(high)))
        else:
            row.append(middle)
    return (row, target) if target is not None else None


def _numeric(x: Any) -> bool:
    try:
        float(x)
    except (TypeError, ValueError):
        return False
    return True


def _acceptance_promises(
    port: int, doc: dict[str, Any], max_batch: int
) -> tuple[list[Promise], dict[str, Any]]:
    rows, labels = doc["rows"], doc["labels"]
    outputs: dict[str, list[Any]] = {}
    for start in range(0, len(rows), max_batch):
        status, body = request_json(
            port, "/v1/predict", {"inputs": {doc["input"]: rows[start : start + max_batch]}}, timeout=30
        )
        if status != 200 or not isinstance(body, dict):
            error = (body or {}).get("error") if isinstance(body, dict) else None
            raise InvalidInputError(
                f"the installed server refused acceptance rows {start}+: HTTP {status} {error}"
            )
        for key, value in body["outputs"].items():
            outputs.setdefault(key, []).extend(value)
    predicted, scores = predictions(outputs, doc["output"], doc.get("scores"))
    thresholds = {str(k): float(v) for k, v in doc["thresholds"].items()}
    values = evaluate(thresholds, labels, predicted, scores)
    promises = []
    for metric, bound in thresholds.items():
        sign = "≥" if metrics.HIGHER_IS_BETTER[metric] else "≤"
        promises.append(
            Promise(
                "acceptance",
                f"{metric} on {len(rows)} labelled rows",
                f"{sign} {bound:g}",
                f"{values[metric]:.4f}",
                metrics.meets(metric, values[metric], bound),
            )
        )
    return promises, {
        "metrics": values,
        "workstation": doc.get("workstation", {}).get("metrics"),
        "rows": len(rows),
    }


def _slo_promises(
    port: int, slo: dict[str, Any], acceptance: dict[str, Any] | None, golden: dict[str, Any], obs: Observer
) -> tuple[list[Promise], dict[str, Any]]:
    if acceptance is not None:
        bodies = [
            json.dumps({"inputs": {acceptance["input"]: [row]}}).encode() for row in acceptance["rows"][:500]
        ]
    else:
        bodies = [json.dumps({"inputs": case["inputs"]}).encode() for case in golden.get("cases", [])]
    rps, concurrency, duration = float(slo["rps"]), int(slo["concurrency"]), float(slo["duration_s"])
    planned = max(1, int(rps * duration))
    obs.begin(LOAD_TASK, planned, "requests")
    last = [0]

    def progress(done: int, total: int) -> None:
        if done - last[0] >= max(1, total // 100) or done == total:
            obs.advance(LOAD_TASK, done - last[0])
            last[0] = done

    try:
        result = run_load(port, bodies, rps, concurrency, duration, progress=progress)
    finally:
        obs.end(LOAD_TASK)
    lat = metrics.latency(result.latencies_ms)
    error_rate = result.errors / max(result.sent, 1)
    achieved = result.sent / result.elapsed_s
    promises = []
    for key, value in (("p95_ms", lat.p95_ms), ("p99_ms", lat.p99_ms)):
        if slo.get(key) is not None:
            bound = float(slo[key])
            promises.append(
                Promise(
                    "slo",
                    f"{key[:3]} latency at {rps:g} req/s, {concurrency} connections",
                    f"≤ {bound:g} ms",
                    f"{value:.1f} ms",
                    value <= bound,
                )
            )
    promises.append(
        Promise(
            "slo",
            "error rate",
            f"≤ {float(slo['max_error_rate']):.2%}",
            f"{error_rate:.2%} of {result.sent}",
            error_rate <= float(slo["max_error_rate"]),
        )
    )
    promises.append(
        Promise(
            "slo",
            "throughput",
            f"≥ {0.95 * rps:.1f} req/s (95 % of the rate)",
            f"{achieved:.1f} req/s",
            achieved >= 0.95 * rps,
        )
    )
    load = {
        "planned": result.planned,
        "sent": result.sent,
        "errors": result.errors,
        "statuses": result.statuses,
        "elapsed_s": round(result.elapsed_s, 3),
        "achieved_rps": round(achieved, 2),
        "latency_ms": {
            "p50": round(lat.p50_ms, 3),
            "p95": round(lat.p95_ms, 3),
            "p99": round(lat.p99_ms, 3),
            "max": round(lat.max_ms, 3),
        },
    }
    return promises, load


def _write(
    site: Site,
    name: str,
    version: str,
    target: str,
    manifest: str,
    promises: list[Promise],
    figures: dict[str, Any],
) -> tuple[Path, Path]:
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    directory = site.state.directory / "acceptance"
    directory.mkdir(parents=True, exist_ok=True)
    base = directory / f"{name}-{version}-{target}-{stamp}"
    doc = {
        "format": REPORT_FORMAT,
        "name": name,
        "version": version,
        "target": target,
        "manifest_sha256": manifest,
        "at": now.isoformat().replace("+00:00", "Z"),
        "accepted": all(p.ok for p in promises),
        "promises": [p.to_json() for p in promises],
        "figures": figures,
    }
    report = base.parent / f"{base.name}.json"  # the version's dots are not a suffix
    atomic_write_bytes(
        report, (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
    )
    lines = [
        f"# Acceptance of {name} {version} on {target}",
        "",
        f"- bundle manifest SHA-256: `{manifest}`",
        f"- measured: {doc['at']}",
        f"- outcome: **{'ACCEPTED' if doc['accepted'] else 'NOT ACCEPTED'}**",
        "",
        "| | promise | promised | measured |",
        "|---|---|---|---|",
        *(
            f"| {'kept' if p.ok else '**MISSED**'} | {p.section}: {p.what} | {p.promised} | {p.measured} |"
            for p in promises
        ),
        "",
    ]
    markdown = base.parent / f"{base.name}.md"
    atomic_write_bytes(markdown, "\n".join(lines).encode())
    return report, markdown
