"""Judging a candidate against the current version: do they answer alike, does the candidate score as
well on the labelled set, is it as fast. Pure: the answers and timings come in, checks go out."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from airgap.core import acceptance as metrics
from airgap.core.contractspec import PromoteSpec
from airgap.core.smoke import compare_case

PROMOTE_FORMAT = "airgap.promote/v1"
# Error metrics in the target's units: how much worse is relative to the current value (a 0.02 drop
# of an MAE in dollars means nothing; 2 % worse does). Shares (accuracy, F1, ROC AUC) drop absolutely.
RELATIVE_METRICS = frozenset({"mae", "rmse"})
ALPHA = 0.05  # McNemar's test: the candidate is significantly worse below this p-value
BOOTSTRAP_DRAWS = 400  # resamples of the labelled rows (paired) for a metric drop's 95 % interval
MIN_LATENCY_SAMPLES = 400  # per server, for a p95 comparison: 20 samples above the p95 at least


@dataclass(frozen=True)
class Check:
    """One threshold of the contract's ``promote`` section and what was measured against it."""

    what: str
    threshold: str
    measured: str
    ok: bool

    def to_json(self) -> dict[str, Any]:
        """The row as ``--json`` and the audit log show it."""
        return {"what": self.what, "threshold": self.threshold, "measured": self.measured, "ok": self.ok}


@dataclass(frozen=True)
class Labelled:
    """Both versions' answers on the labelled rows, row by row: what significance is computed on."""

    labels: Sequence[Any]
    current: Sequence[Any]
    candidate: Sequence[Any]
    current_scores: Sequence[float]
    candidate_scores: Sequence[float]
    metrics: Sequence[str]

    @property
    def regression(self) -> bool:
        """Judged by an error metric (MAE, RMSE): the predictions are numbers, not classes."""
        return any(m in RELATIVE_METRICS for m in self.metrics)


def spec_from_json(doc: Mapping[str, Any] | None) -> PromoteSpec:
    """The thresholds a bundle (``model/promote.json``) or the site (``STATE/promote.json``) records;
    the defaults for what it leaves out."""
    default = PromoteSpec()
    if not doc:
        return default
    return PromoteSpec(
        **{
            k: float(doc.get(k, getattr(default, k)))
            for k in ("min_agreement", "max_metric_drop", "max_p95_ratio", "output_rtol", "output_atol")
        }
    )


def disagreement(
    unit: str,
    current: Mapping[str, Any],
    candidate: Mapping[str, Any],
    output: str | None,
    rtol: float,
    atol: float,
    by_class: bool = True,
) -> str | None:
    """How the two answers to one input differ, or None when they agree: on ``output`` alone when
    the labelled set names the output that is the prediction (the same class; for a regression,
    ``by_class`` False, the same value within ``rtol``/``atol``), else on every output within
    ``rtol``/``atol``."""
    if output is not None and output in current and output in candidate:
        a, b = {output: current[output]}, {output: candidate[output]}
        if by_class:
            rtol, atol = 0.0, 0.0
    else:
        a, b = dict(current), dict(candidate)
    found = compare_case(unit, a, b, rtol, atol)
    if not found:
        return None
    return found[0].line()


def metric_drop(metric: str, current: float, candidate: float) -> float:
    """How much worse the candidate scores (negative: better): absolutely for a share (accuracy, F1,
    ROC AUC), relative to the current value for an error in the target's units (MAE, RMSE)."""
    if metric in RELATIVE_METRICS:
        if current > 0:
            return (candidate - current) / current
        return 0.0 if candidate <= current else math.inf
    return current - candidate if metrics.HIGHER_IS_BETTER[metric] else candidate - current


def _drop_text(metric: str, drop: float) -> str:
    return f"{drop:+.2%}" if metric in RELATIVE_METRICS else f"{drop:+.4f}"


def _interval(found: list[float]) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of ``found`` (NaN for none)."""
    if not found:
        return (math.nan, math.nan)
    found = sorted(found)
    return found[int(0.025 * (len(found) - 1))], found[math.ceil(0.975 * (len(found) - 1))]


def _scored(metric: str, labels: list[Any], predicted: list[Any], scores: list[float]) -> float:
    try:
        return metrics.score(metric, labels, predicted, scores)
    except (ValueError, ZeroDivisionError):  # e.g. ROC AUC of a resample with one class
        return math.nan


def bootstrap_drop(
    metric: str, rows: Labelled, draws: int = BOOTSTRAP_DRAWS, seed: int = 0
) -> tuple[float, float]:
    """The 95 % interval of the metric's drop, from ``draws`` paired resamples of the labelled rows
    (both versions scored on the same rows each time); seeded, so a compare is repeatable."""
    rng = random.Random(seed)
    n = len(rows.labels)
    found: list[float] = []
    for _ in range(draws):
        pick = [rng.randrange(n) for _ in range(n)]
        labels = [rows.labels[i] for i in pick]
        before = _scored(
            metric,
            labels,
            [rows.current[i] for i in pick],
            [rows.current_scores[i] for i in pick] if rows.current_scores else [],
        )
        after = _scored(
            metric,
            labels,
            [rows.candidate[i] for i in pick],
            [rows.candidate_scores[i] for i in pick] if rows.candidate_scores else [],
        )
        drop = metric_drop(metric, before, after)
        if not math.isnan(drop):
            found.append(drop)
    return _interval(found)


def mcnemar(
    labels: Sequence[Any], current: Sequence[Any], candidate: Sequence[Any]
) -> tuple[int, int, float]:
    """McNemar's exact test on the labelled rows the two classifiers answer differently: ``b`` rows
    only the current one gets right, ``c`` only the candidate; the two-sided p-value that a
    difference this large is chance."""
    b = c = 0
    for y, x, z in zip(labels, current, candidate):
        right_x, right_z = metrics.accuracy([y], [x]) == 1.0, metrics.accuracy([y], [z]) == 1.0
        b += right_x and not right_z
        c += right_z and not right_x
    n = b + c
    if n == 0:
        return b, c, 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return b, c, float(min(Fraction(1), Fraction(2 * tail, 2**n)))


def _p95(samples: Sequence[float]) -> float:
    return metrics.latency(samples).p95_ms


def p95_ratio_interval(
    current_ms: Sequence[float], candidate_ms: Sequence[float], draws: int = 200
) -> tuple[float, float]:
    """The 95 % interval of the candidate's p95 over the current one's, by resampling each."""
    rng = random.Random(1)
    found = []
    for _ in range(draws):
        a = _p95([current_ms[rng.randrange(len(current_ms))] for _ in current_ms])
        b = _p95([candidate_ms[rng.randrange(len(candidate_ms))] for _ in candidate_ms])
        if a > 0:
            found.append(b / a)
    return _interval(found)


def judge(
    spec: PromoteSpec,
    agreed: int,
    compared: int,
    current_metrics: Mapping[str, float],
    candidate_metrics: Mapping[str, float],
    current_ms: Sequence[float],
    candidate_ms: Sequence[float],
    labelled: Labelled | None = None,
) -> list[Check]:
    """Every threshold of ``spec`` against what was measured; a check with nothing to measure is
    left out (a bundle without a labelled set has no metric to compare).

    A metric is judged on its drop (relative for an error metric), with the 95 % bootstrap interval
    shown; a classifier's disagreements on the labelled rows must not be significantly worse by
    McNemar's test; the p95 latency ratio needs ``MIN_LATENCY_SAMPLES`` samples on each side."""
    checks: list[Check] = []
    rate = agreed / compared if compared else 1.0
    checks.append(
        Check(
            f"agreement on {compared} inputs",
            f"≥ {spec.min_agreement:.2%}",
            f"{rate:.2%} ({compared - agreed} differ)",
            rate >= spec.min_agreement,
        )
    )
    for metric, before in current_metrics.items():
        if metric not in candidate_metrics:
            continue
        after = candidate_metrics[metric]
        drop = metric_drop(metric, before, after)
        measured = _drop_text(metric, drop)
        if labelled is not None and len(labelled.labels) > 1:
            low, high = bootstrap_drop(metric, labelled)
            if not math.isnan(low):
                measured += f" (95 % CI {_drop_text(metric, low)} to {_drop_text(metric, high)})"
        relative = metric in RELATIVE_METRICS
        bound = f"{spec.max_metric_drop:.2%} relative" if relative else f"{spec.max_metric_drop:g}"
        checks.append(
            Check(
                f"{metric} drop (current {before:.4f}, candidate {after:.4f})",
                f"≤ {bound}",
                measured,
                drop <= spec.max_metric_drop + 1e-12,
            )
        )
    if labelled is not None and labelled.labels and not labelled.regression:
        b, c, p = mcnemar(labelled.labels, labelled.current, labelled.candidate)
        checks.append(
            Check(
                f"McNemar on {len(labelled.labels)} labelled rows ({b} only current right, "
                f"{c} only candidate right)",
                f"not significantly worse (p ≥ {ALPHA:g})",
                f"p = {p:.3g}",
                not (b > c and p < ALPHA),
            )
        )
    if current_ms and candidate_ms:
        cur, cand = metrics.latency(current_ms), metrics.latency(candidate_ms)
        ratio = cand.p95_ms / cur.p95_ms if cur.p95_ms > 0 else 1.0
        enough = min(len(current_ms), len(candidate_ms)) >= MIN_LATENCY_SAMPLES
        low, high = p95_ratio_interval(current_ms, candidate_ms) if enough else (math.nan, math.nan)
        checks.append(
            Check(
                f"p95 latency (current {cur.p95_ms:.2f} ms, candidate {cand.p95_ms:.2f} ms, "
                f"{min(len(current_ms), len(candidate_ms))} keep-alive samples each)",
                f"≤ {spec.max_p95_ratio:g}× current",
                f"{ratio:.2f}× (95 % CI {low:.2f}–{high:.2f}×)"
                if enough
                else f"{ratio:.2f}×, too few samples (< {MIN_LATENCY_SAMPLES})",
                enough and ratio <= spec.max_p95_ratio,
            )
        )
    return checks
