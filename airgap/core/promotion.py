"""Judging a candidate against the current version: do they answer alike, does the candidate score as
well on the labelled set, is it as fast. Pure: the answers and timings come in, checks go out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airgap.core import acceptance as metrics
from airgap.core.contractspec import PromoteSpec
from airgap.core.smoke import compare_case

PROMOTE_FORMAT = "airgap.promote/v1"
# Below this, a p95 difference between two servers on one host is scheduling noise, not a
# regression: a candidate within it of the current p95 keeps the latency threshold whatever the ratio.
LATENCY_SLACK_MS = 2.0


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


def spec_from_json(doc: Mapping[str, Any] | None) -> PromoteSpec:
    """The thresholds a bundle records (``model/promote.json``); the defaults for a bundle without."""
    if not doc:
        return PromoteSpec()
    default = PromoteSpec()
    return PromoteSpec(
        **{
            k: float(doc.get(k, getattr(default, k)))
            for k in ("min_agreement", "max_metric_drop", "max_p95_ratio")
        }
    )


def disagreement(
    unit: str,
    current: Mapping[str, Any],
    candidate: Mapping[str, Any],
    output: str | None,
    rtol: float,
    atol: float,
) -> str | None:
    """How the two answers to one input differ, or None when they agree: on ``output`` alone when
    the labelled set names the output that is the prediction, else on every output within the
    golden tolerance."""
    if output is not None and output in current and output in candidate:
        a, b = {output: current[output]}, {output: candidate[output]}
    else:
        a, b = dict(current), dict(candidate)
    found = compare_case(unit, a, b, rtol, atol)
    if not found:
        return None
    return found[0].line()


def metric_drop(metric: str, current: float, candidate: float) -> float:
    """How much worse the candidate scores (negative: better), whichever way the metric points."""
    return current - candidate if metrics.HIGHER_IS_BETTER[metric] else candidate - current


def judge(
    spec: PromoteSpec,
    agreed: int,
    compared: int,
    current_metrics: Mapping[str, float],
    candidate_metrics: Mapping[str, float],
    current_ms: Sequence[float],
    candidate_ms: Sequence[float],
) -> list[Check]:
    """Every threshold of ``spec`` against what was measured; a check with nothing to measure is
    left out (a bundle without a labelled set has no metric to compare)."""
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
        checks.append(
            Check(
                f"{metric} drop (current {before:.4f}, candidate {after:.4f})",
                f"≤ {spec.max_metric_drop:g}",
                f"{drop:+.4f}",
                drop <= spec.max_metric_drop + 1e-12,
            )
        )
    if current_ms and candidate_ms:
        cur, cand = metrics.latency(current_ms), metrics.latency(candidate_ms)
        ratio = cand.p95_ms / cur.p95_ms if cur.p95_ms > 0 else 1.0
        checks.append(
            Check(
                f"p95 latency (current {cur.p95_ms:.1f} ms, candidate {cand.p95_ms:.1f} ms)",
                f"≤ {spec.max_p95_ratio:g}× current (or +{LATENCY_SLACK_MS:g} ms)",
                f"{ratio:.2f}×",
                ratio <= spec.max_p95_ratio or cand.p95_ms - cur.p95_ms <= LATENCY_SLACK_MS,
            )
        )
    return checks
