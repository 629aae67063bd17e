"""Acceptance metrics and latency percentiles: the numbers a model's promises are checked against.

Pure Python on purpose: the far side computes them from the installed server's answers with
nothing but airgap itself (no scikit-learn there), and the same functions score the model on the
workstation, so both sides agree on what "accuracy 0.97" means. Definitions follow scikit-learn's
(``accuracy_score``, ``f1_score(average="macro")``, ``roc_auc_score`` for two classes,
``mean_absolute_error``, ``root_mean_squared_error``); the tests compare them with it.

The model's raw outputs are read into labels and scores here too (``predictions``), so the
workstation's acceptance set, `airgap accept` and `airgap compare` read them the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from airgap.errors import InvalidInputError

Label = Any  # an int, a string or a float, as the model answers it


def accuracy(labels: Sequence[Label], predicted: Sequence[Label]) -> float:
    """Share of exact matches."""
    return sum(1 for a, b in zip(labels, predicted) if _same(a, b)) / len(labels)


def f1_macro(labels: Sequence[Label], predicted: Sequence[Label]) -> float:
    """Unweighted mean of each class's F1 over the classes in the labels or the predictions."""
    classes = sorted({_key(x) for x in labels} | {_key(x) for x in predicted})
    scores = []
    for c in classes:
        tp = sum(1 for a, b in zip(labels, predicted) if _key(a) == c and _key(b) == c)
        fp = sum(1 for a, b in zip(labels, predicted) if _key(a) != c and _key(b) == c)
        fn = sum(1 for a, b in zip(labels, predicted) if _key(a) == c and _key(b) != c)
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


def roc_auc(labels: Sequence[Label], scores: Sequence[float]) -> float:
    """Area under the ROC curve of two classes (the larger label positive), ties counted half.

    The Mann-Whitney form: the chance a random positive scores above a random negative.
    """
    classes = sorted({_key(x) for x in labels})
    if len(classes) != 2:
        raise ValueError(f"roc_auc needs exactly two classes in the labels, found {len(classes)}")
    positive = classes[1]
    ranked = sorted(zip(scores, (_key(x) == positive for x in labels)), key=lambda t: t[0])
    rank_sum, n_pos, i = 0.0, 0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        average_rank = (i + 1 + j) / 2
        for k in range(i, j):
            if ranked[k][1]:
                rank_sum += average_rank
                n_pos += 1
        i = j
    n_neg = len(ranked) - n_pos
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def mae(labels: Sequence[float], predicted: Sequence[float]) -> float:
    """Mean absolute error."""
    return sum(abs(float(a) - float(b)) for a, b in zip(labels, predicted)) / len(labels)


def rmse(labels: Sequence[float], predicted: Sequence[float]) -> float:
    """Root mean squared error."""
    return math.sqrt(sum((float(a) - float(b)) ** 2 for a, b in zip(labels, predicted)) / len(labels))


def _key(x: Label) -> Any:
    if isinstance(x, float) and x.is_integer():
        return int(x)
    if isinstance(x, str):
        try:
            return int(x)
        except ValueError:
            return x
    return x


def _same(a: Label, b: Label) -> bool:
    return bool(_key(a) == _key(b))


HIGHER_IS_BETTER = {"accuracy": True, "f1": True, "roc_auc": True, "mae": False, "rmse": False}


def score(metric: str, labels: Sequence[Label], predicted: Sequence[Label], scores: Sequence[float]) -> float:
    """``metric`` of the answers against the labels (``scores``: positive-class scores, for roc_auc)."""
    if metric == "accuracy":
        return accuracy(labels, predicted)
    if metric == "f1":
        return f1_macro(labels, predicted)
    if metric == "roc_auc":
        return roc_auc(labels, scores)
    if metric == "mae":
        return mae(labels, predicted)
    if metric == "rmse":
        return rmse(labels, predicted)
    raise ValueError(f"unknown metric {metric}")


def meets(metric: str, value: float, bound: float) -> bool:
    """Whether ``value`` keeps the promise ``bound`` (at least, or at most for errors)."""
    return value >= bound if HIGHER_IS_BETTER[metric] else value <= bound


@dataclass(frozen=True)
class Latency:
    """Percentiles of a load run, in milliseconds."""

    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


def percentile(sorted_ms: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by the nearest-rank method: a value that was measured."""
    if not sorted_ms:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_ms)))
    return float(sorted_ms[rank - 1])


def latency(samples_ms: Sequence[float]) -> Latency:
    """The percentiles the SLO names, from every request's latency (the load generator counts a
    failed request too: an answer at its latency, no answer at the timeout)."""
    ordered = sorted(samples_ms)
    return Latency(
        count=len(ordered),
        p50_ms=percentile(ordered, 50),
        p95_ms=percentile(ordered, 95),
        p99_ms=percentile(ordered, 99),
        max_ms=float(ordered[-1]) if ordered else math.nan,
    )


def predictions(outputs: dict[str, Any], output: str, scores: str | None) -> tuple[list[Any], list[float]]:
    """The predicted labels (one per row) and, when named, the positive class's scores."""
    if output not in outputs:
        raise InvalidInputError(
            f"the model has no output {output!r} (acceptance.output); it has {', '.join(outputs)}"
        )
    labels = [_one(v) for v in outputs[output]]
    got: list[float] = []
    if scores is not None:
        if scores not in outputs:
            raise InvalidInputError(f"the model has no output {scores!r} (acceptance.scores)")
        for v in outputs[scores]:
            got.append(_positive_score(v))
    return labels, got


def _one(value: Any) -> Any:
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value


def _positive_score(value: Any) -> float:
    if isinstance(value, dict):  # ZipMap: {"0": p0, "1": p1}
        return float(value[sorted(value, key=lambda k: (len(str(k)), str(k)))[-1]])
    if isinstance(value, list):
        return float(value[-1])
    return float(value)


def evaluate(
    spec_thresholds: dict[str, float], labels: list[Any], predicted: list[Any], scores: list[float]
) -> dict[str, float]:
    """Each metric's value on the set."""
    return {m: round(score(m, labels, predicted, scores), 6) for m in spec_thresholds}
