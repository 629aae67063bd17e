"""`airgap compare NAME`: the candidate and the current version answer the same inputs, over HTTP,
where they run; the answers, the labelled set's metrics and the latencies are judged against the
``promote`` thresholds of the site (``STATE/promote.json``), else of the current, approved bundle,
else airgap's defaults — never the candidate's own: a candidate does not set its own bar.

The inputs are the bundles' own: the golden cases, and the labelled acceptance rows (the reference
data the contract was measured on). A classifier agrees when it predicts the same class, a
regression when its value is within the thresholds' tolerance (not the golden 1e-4: a retrained
model never matches that, and need not). Metric drops come with bootstrap intervals and a
classifier's disagreements with McNemar's test. Latency is measured on the same single-row requests
over one keep-alive connection to each server, sent to the two in turn so that both see the same
load on the host, enough of them for a p95.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airgap.adapters.http import KeepAlive, request_json
from airgap.core import acceptance as metrics
from airgap.core.acceptance import evaluate, predictions
from airgap.core.contractspec import PROMOTE_BOUNDS, PromoteSpec
from airgap.core.promotion import (
    MIN_LATENCY_SAMPLES,
    RELATIVE_METRICS,
    Check,
    Labelled,
    disagreement,
    judge,
    spec_from_json,
)
from airgap.errors import EnvironmentFailure, InvalidInputError
from airgap.services.deploy import targets
from airgap.services.deploy.receipts import Receipt
from airgap.services.deploy.targets._base import Site
from airgap.services.media.extraction import read_contract
from airgap.services.state import State

LATENCY_REQUESTS = MIN_LATENCY_SAMPLES + 100  # single-row requests to each, on one keep-alive connection
WARM_UP = 20
SITE_THRESHOLDS = "promote.json"  # in the state directory: the site's own bar, above any bundle's
SHOWN_DISAGREEMENTS = 20


@dataclass(frozen=True)
class CompareReport:
    """What the two versions answered, and whether the candidate meets the thresholds."""

    name: str
    target: str
    current: str
    candidate: str
    spec: PromoteSpec
    spec_source: str
    checks: tuple[Check, ...]
    compared: int
    disagreements: tuple[dict[str, Any], ...]
    metrics: dict[str, dict[str, float]]
    latency: dict[str, dict[str, float]]

    @property
    def ok(self) -> bool:
        """Every threshold met."""
        return all(c.ok for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        """The report under ``--json``."""
        return {
            "name": self.name,
            "target": self.target,
            "current": self.current,
            "candidate": self.candidate,
            "ok": self.ok,
            "thresholds": {**self.spec.to_json(), "source": self.spec_source},
            "checks": [c.to_json() for c in self.checks],
            "compared": self.compared,
            "disagreements": list(self.disagreements),
            "metrics": self.metrics,
            "latency_ms": self.latency,
        }


def _model_doc(receipt: Receipt, name: str) -> dict[str, Any] | None:
    path = Path(receipt.content) / "model" / name
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_bytes())
    except ValueError as exc:
        raise InvalidInputError(f"the installed bundle's model/{name} is not JSON: {exc}") from None
    return doc if isinstance(doc, dict) else None


def _ask(
    send: Callable[[str, Any], tuple[int, Any]], port: int, who: str, receipt: Receipt, inputs: dict[str, Any]
) -> dict[str, Any] | str:
    """The outputs, or why there are none (a refusal is an answer that differs).

    Every answer must name the model and version the receipt says runs on that port: a compare
    that reached some other server (a stale process on the port, the other version) would judge
    the wrong model and could pass, so it stops instead."""
    try:
        status, body = send("/v1/predict", {"inputs": inputs})
    except (OSError, ValueError) as exc:
        raise EnvironmentFailure(
            f"the {who} model server on port {port} did not answer: {exc}",
            hint="see airgap status; airgap smoke NAME --to TARGET says more",
        ) from None
    if status == 200 and isinstance(body, dict) and isinstance(body.get("outputs"), dict):
        said = (body.get("model"), body.get("model_version"))
        if said != (receipt.name, receipt.version):
            raise EnvironmentFailure(
                f"the server on port {port} answers as {said[0]} {said[1]}, not as the {who} "
                f"{receipt.name} {receipt.version}: another server holds that port",
                hint="see airgap status; stop what holds the port, or install the version again",
            )
        return dict(body["outputs"])
    error = body.get("error") if isinstance(body, dict) else None
    return f"HTTP {status} {error.get('code') if isinstance(error, dict) else ''}".strip()


def _new_connection(port: int) -> Callable[[str, Any], tuple[int, Any]]:
    return lambda path, body: request_json(port, path, body, timeout=30)


def site_thresholds(state: State) -> dict[str, Any] | None:
    """The site's own ``promote`` thresholds (``STATE/promote.json``), checked like airgap.yaml's."""
    path = state.directory / SITE_THRESHOLDS
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_bytes())
    except ValueError as exc:
        raise InvalidInputError(f"{path} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInputError(f"{path} must be an object of thresholds")
    for key, value in doc.items():
        if key not in PROMOTE_BOUNDS:
            raise InvalidInputError(
                f"{path}: {key!r} is not a promote threshold", hint=f"use {', '.join(PROMOTE_BOUNDS)}"
            )
        low, high = PROMOTE_BOUNDS[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise InvalidInputError(f"{path}: {key} must be a number from {low:g} to {high:g}, got {value!r}")
    return doc


def _units(
    contract: dict[str, Any], acceptance: dict[str, Any] | None
) -> Iterator[tuple[str, dict[str, Any]]]:
    for case in contract.get("cases", []):
        yield f"golden {case.get('name')}", dict(case.get("inputs") or {})
    if acceptance is not None:
        for i, row in enumerate(acceptance["rows"]):
            yield f"acceptance row {i + 1}", {acceptance["input"]: [row]}


def compare(site: Site, name: str, target: str) -> CompareReport:
    """Asks the current version and the candidate of ``name`` the same inputs and judges the answers."""
    current, _ = site.installed.get(name, target)
    candidate = site.installed.candidate(name, target) if current is not None else None
    if current is None or candidate is None:
        raise InvalidInputError(
            f"{name} has no candidate to compare with --to {target}",
            hint=f"run one beside the current version first: airgap install BUNDLE --to {target} --candidate",
        )
    t = targets.get(target)
    contract = read_contract(Path(candidate.content))
    acceptance = _model_doc(candidate, "acceptance.json") or _model_doc(current, "acceptance.json")
    # The bar is the site's, else the approved (current) bundle's: never the candidate's own.
    recorded = site_thresholds(site.state)
    source = f"the site ({site.state.directory / SITE_THRESHOLDS})"
    if recorded is None:
        recorded = _model_doc(current, "promote.json")
        source = (
            f"the current bundle {current.version} (promote in its airgap.yaml)"
            if recorded
            else "airgap's defaults"
        )
    spec = spec_from_json(recorded)
    output = acceptance.get("output") if acceptance else None
    regression = acceptance is not None and any(m in RELATIVE_METRICS for m in acceptance["thresholds"])
    units = list(_units(contract, acceptance))
    answers: dict[str, list[Any]] = {"current": [], "candidate": []}
    timings: dict[str, list[float]] = {"current": [], "candidate": []}
    receipts = {"current": current, "candidate": candidate}
    with ExitStack() as stack:
        ports = {
            "current": stack.enter_context(t.endpoint(site, current)),
            "candidate": stack.enter_context(t.endpoint(site, candidate)),
        }
        for _, inputs in units:
            for who in ("current", "candidate"):
                answers[who].append(_ask(_new_connection(ports[who]), ports[who], who, receipts[who], inputs))
        singles = [inputs for _, inputs in units] or [{}]
        kept = {who: stack.enter_context(KeepAlive(ports[who], timeout=30)) for who in ports}
        for i in range(WARM_UP + LATENCY_REQUESTS):
            inputs = singles[i % len(singles)]
            order = ("current", "candidate") if i % 2 == 0 else ("candidate", "current")
            for who in order:
                start = time.perf_counter()
                _ask(kept[who].request_json, ports[who], who, receipts[who], inputs)
                if i >= WARM_UP:
                    timings[who].append((time.perf_counter() - start) * 1000)
    disagreements: list[dict[str, Any]] = []
    for (unit, _), a, b in zip(units, answers["current"], answers["candidate"]):
        why: str | None
        if isinstance(a, str) or isinstance(b, str):
            # A refusal is never agreement, even when both refuse alike: two servers that answer
            # nothing would otherwise agree completely.
            why = f"current: {a if isinstance(a, str) else 'answered'}, candidate: " + (
                b if isinstance(b, str) else "answered"
            )
        else:
            why = disagreement(
                unit, a, b, output, spec.output_rtol, spec.output_atol, by_class=not regression
            )
        if why is not None:
            disagreements.append(
                {
                    "input": unit,
                    "why": why,
                    "current": a.get(output) if output and isinstance(a, dict) else a,
                    "candidate": b.get(output) if output and isinstance(b, dict) else b,
                }
            )
    scored, labelled = _scores(acceptance, units, answers) if acceptance is not None else ({}, None)
    checks = judge(
        spec,
        len(units) - len(disagreements),
        len(units),
        scored.get("current", {}),
        scored.get("candidate", {}),
        timings["current"],
        timings["candidate"],
        labelled,
    )
    latency = {}
    for who, samples in timings.items():
        lat = metrics.latency(samples)
        latency[who] = {"p50": round(lat.p50_ms, 3), "p95": round(lat.p95_ms, 3), "count": lat.count}
    report = CompareReport(
        name,
        target,
        current.version,
        candidate.version,
        spec,
        source,
        tuple(checks),
        len(units),
        tuple(disagreements),
        scored,
        latency,
    )
    site.state.audit(
        {
            "action": f"compare --to {target}",
            "name": name,
            "current": current.version,
            "candidate": candidate.version,
            "result": "meets" if report.ok else "misses",
            "missed": [c.what for c in checks if not c.ok],
        }
    )
    return report


def _scores(
    acceptance: dict[str, Any], units: list[tuple[str, dict[str, Any]]], answers: dict[str, list[Any]]
) -> tuple[dict[str, dict[str, float]], Labelled | None]:
    """The acceptance metrics of each version on the labelled rows (a refused row scores as wrong),
    and both versions' answers row by row when both answered every row (for significance)."""
    first = next((i for i, (u, _) in enumerate(units) if u.startswith("acceptance ")), len(units))
    thresholds = {str(k): float(v) for k, v in acceptance["thresholds"].items()}
    out: dict[str, dict[str, float]] = {}
    rows: dict[str, tuple[list[Any], list[float]]] = {}
    for who, got in answers.items():
        answered = got[first:]
        if any(isinstance(r, str) for r in answered):
            out[who] = {m: (0.0 if metrics.HIGHER_IS_BETTER[m] else float("inf")) for m in thresholds}
            continue
        outputs: dict[str, list[Any]] = {}
        for r in answered:
            for key, value in r.items():
                outputs.setdefault(key, []).extend(value)
        predicted, scores = predictions(outputs, acceptance["output"], acceptance.get("scores"))
        out[who] = evaluate(thresholds, acceptance["labels"], predicted, scores)
        rows[who] = (predicted, scores)
    if set(rows) != {"current", "candidate"}:
        return out, None
    return out, Labelled(
        acceptance["labels"],
        rows["current"][0],
        rows["candidate"][0],
        rows["current"][1],
        rows["candidate"][1],
        tuple(thresholds),
    )
