"""The deployment contract in ``airgap.yaml``: the data the model may be asked (``data``), the
latency it must keep under load (``slo``), and the labelled set it must score on (``acceptance``).

Each is a promise the far side checks (`airgap accept`); documented in docs/project-file.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airgap.core.datacontract import MODES, TYPES, Feature
from airgap.core.yamlfields import Lines, expect, mapping, relative_path

METRICS = {
    # name: (higher is better, needs scores)
    "accuracy": (True, False),
    "f1": (True, False),
    "roc_auc": (True, True),
    "mae": (False, False),
    "rmse": (False, False),
}


@dataclass(frozen=True)
class DataSpec:
    """The project's data contract: the input it describes, the reference data, hand-written features."""

    input: str | None = None
    reference: str | None = None
    features: tuple[Feature, ...] = ()
    modes: tuple[tuple[str, str], ...] = ()  # {name, mode} entries: the derived feature, in that mode


@dataclass(frozen=True)
class SloSpec:
    """Latency and errors at a load: what `airgap accept` measures on the far side."""

    p95_ms: float | None
    p99_ms: float | None
    rps: float
    concurrency: int
    duration_s: float
    max_error_rate: float

    def to_json(self) -> dict[str, Any]:
        """The promise as the bundle records it."""
        return {
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "rps": self.rps,
            "concurrency": self.concurrency,
            "duration_s": self.duration_s,
            "max_error_rate": self.max_error_rate,
        }


@dataclass(frozen=True)
class AcceptanceSpec:
    """A labelled set and the thresholds the model's answers must meet on it."""

    data: str
    label: str
    output: str
    scores: str | None
    thresholds: tuple[tuple[str, float], ...]


def parse_data(lines: Lines, data: Mapping[str, Any]) -> DataSpec:
    """``data``: the input the data contract describes, its reference data and hand-written features."""
    block = mapping(lines, data, "data", "")
    expect(lines, block, "data", {"input", "reference", "features"})
    input_name = block.get("input")
    if input_name is not None and (not isinstance(input_name, str) or not input_name):
        raise lines.error("data.input", "must be the name of one of the model's inputs")
    reference = block.get("reference")
    ref = relative_path(lines, "data.reference", reference) if reference is not None else None
    if ref is not None and not ref.endswith(".csv"):
        raise lines.error("data.reference", f"{ref!r} must be a .csv file with a header row")
    raw_features = block.get("features", []) or []
    if not isinstance(raw_features, list):
        raise lines.error(
            "data.features", "must be a list of {name, type, min, max, allowed, nullable, mode}"
        )
    features: list[Feature] = []
    modes: list[tuple[str, str]] = []
    for i, item in enumerate(raw_features):
        feature = _feature(lines, f"data.features[{i}]", item)
        if ref is not None and isinstance(item, dict) and set(item) == {"name", "mode"}:
            modes.append((feature.name, feature.mode))  # keeps the derived type, range and values
        else:
            features.append(feature)
    names = [f.name for f in features] + [n for n, _ in modes]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise lines.error(f"data.features[{i}].name", f"{n!r} is given twice")
    if ref is None and not features:
        raise lines.error(
            "data", "needs a reference (a CSV file) or a list of features", "see docs/project-file.md"
        )
    return DataSpec(input=input_name, reference=ref, features=tuple(features), modes=tuple(modes))


def _number(lines: Lines, where: str, value: object) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
        raise lines.error(where, f"must be a number, got {value!r}")
    return float(value)


def _feature(lines: Lines, where: str, item: object) -> Feature:
    if not isinstance(item, dict):
        raise lines.error(where, "must be a mapping with name and type")
    expect(lines, item, where, {"name", "type", "min", "max", "allowed", "nullable", "mode"})
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise lines.error(f"{where}.name", "must be the feature's column name")
    kind = item.get("type", "float")
    if kind not in TYPES:
        raise lines.error(f"{where}.type", f"must be one of {', '.join(TYPES)}, got {kind!r}")
    low, high = (
        _number(lines, f"{where}.min", item.get("min")),
        _number(lines, f"{where}.max", item.get("max")),
    )
    if low is not None and high is not None and low > high:
        raise lines.error(f"{where}.min", f"min {low:g} is above max {high:g}")
    allowed = item.get("allowed")
    if allowed is not None:
        if kind != "category" or not isinstance(allowed, list) or not allowed:
            raise lines.error(f"{where}.allowed", "a non-empty list, for a feature of type category")
        allowed = tuple(str(a) for a in allowed)
    elif kind == "category":
        raise lines.error(where, "a category feature needs its allowed values")
    if kind == "category" and (low is not None or high is not None):
        raise lines.error(where, "a category feature has allowed values, not min and max")
    nullable = item.get("nullable", False)
    if not isinstance(nullable, bool):
        raise lines.error(f"{where}.nullable", f"must be true or false, got {nullable!r}")
    mode = item.get("mode", "enforce")
    if mode not in MODES:
        raise lines.error(f"{where}.mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    return Feature(name, kind, low, high, allowed, nullable, mode)


def _positive(
    lines: Lines, block: Mapping[str, Any], key: str, where: str, default: float | None, top: float
) -> float | None:
    value = block.get(key, default)
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= top:
        raise lines.error(f"{where}.{key}", f"must be a number above 0 and at most {top:g}, got {value!r}")
    return float(value)


def parse_slo(lines: Lines, data: Mapping[str, Any]) -> SloSpec:
    """``slo``: percentiles in milliseconds at a request rate, a concurrency and a duration."""
    block = mapping(lines, data, "slo", "")
    expect(lines, block, "slo", {"p95_ms", "p99_ms", "rps", "concurrency", "duration_s", "max_error_rate"})
    p95, p99 = (
        _positive(lines, block, "p95_ms", "slo", None, 600_000),
        _positive(lines, block, "p99_ms", "slo", None, 600_000),
    )
    if p95 is None and p99 is None:
        raise lines.error("slo", "promises nothing: give p95_ms, p99_ms or both")
    if p95 is not None and p99 is not None and p95 > p99:
        raise lines.error("slo.p95_ms", f"{p95:g} ms is above p99_ms {p99:g} ms")
    concurrency = block.get("concurrency", 4)
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or not 1 <= concurrency <= 256:
        raise lines.error("slo.concurrency", f"must be an integer from 1 to 256, got {concurrency!r}")
    error_rate = block.get("max_error_rate", 0.0)
    if not isinstance(error_rate, (int, float)) or isinstance(error_rate, bool) or not 0 <= error_rate < 1:
        raise lines.error("slo.max_error_rate", f"must be a share from 0 to below 1, got {error_rate!r}")
    return SloSpec(
        p95_ms=p95,
        p99_ms=p99,
        rps=float(_positive(lines, block, "rps", "slo", 20, 10_000) or 20),
        concurrency=concurrency,
        duration_s=float(_positive(lines, block, "duration_s", "slo", 10, 600) or 10),
        max_error_rate=float(error_rate),
    )


def parse_acceptance(lines: Lines, data: Mapping[str, Any]) -> AcceptanceSpec:
    """``acceptance``: a labelled CSV, the output compared with its label column, thresholds."""
    block = mapping(lines, data, "acceptance", "")
    expect(lines, block, "acceptance", {"data", "label", "output", "scores", "thresholds"})
    path = relative_path(lines, "acceptance.data", block.get("data"))
    if not path.endswith(".csv"):
        raise lines.error("acceptance.data", f"{path!r} must be a .csv file with a header row")
    names = {}
    for key in ("label", "output", "scores"):
        value = block.get(key, "label" if key != "scores" else None)
        if value is not None and (not isinstance(value, str) or not value):
            raise lines.error(f"acceptance.{key}", "must be a name")
        names[key] = value
    thresholds = mapping(lines, block, "thresholds", "acceptance")
    if not thresholds:
        raise lines.error("acceptance.thresholds", "is required: e.g. {accuracy: 0.9}")
    out = []
    for metric, bound in thresholds.items():
        where = f"acceptance.thresholds.{metric}"
        if metric not in METRICS:
            raise lines.error(where, "is not a metric this build computes", f"one of {', '.join(METRICS)}")
        if not isinstance(bound, (int, float)) or isinstance(bound, bool) or bound < 0:
            raise lines.error(where, f"must be a number from 0, got {bound!r}")
        if METRICS[metric][0] and bound > 1:
            raise lines.error(where, f"{metric} is a share from 0 to 1, got {bound!r}")
        if METRICS[metric][1] and names["scores"] is None:
            raise lines.error(where, f"{metric} needs acceptance.scores: the output with the scores")
        out.append((str(metric), float(bound)))
    return AcceptanceSpec(path, str(names["label"]), str(names["output"]), names["scores"], tuple(out))


@dataclass(frozen=True)
class PromoteSpec:
    """What a candidate must show against the current version before it is promoted (`airgap compare`):
    the share of inputs both answer alike, the most an acceptance metric may fall, and the most the
    candidate's p95 latency may grow, as a multiple of the current version's."""

    min_agreement: float = 0.95
    max_metric_drop: float = 0.02
    max_p95_ratio: float = 1.5

    def to_json(self) -> dict[str, Any]:
        """The thresholds as the bundle records them (``model/promote.json``)."""
        return {
            "min_agreement": self.min_agreement,
            "max_metric_drop": self.max_metric_drop,
            "max_p95_ratio": self.max_p95_ratio,
        }


def parse_promote(lines: Lines, data: Mapping[str, Any]) -> PromoteSpec:
    """``promote``: the thresholds `airgap compare` judges a candidate by; each has a default."""
    block = mapping(lines, data, "promote", "")
    expect(lines, block, "promote", {"min_agreement", "max_metric_drop", "max_p95_ratio"})
    default = PromoteSpec()
    values: dict[str, float] = {}
    for key, low, high in (
        ("min_agreement", 0.0, 1.0),
        ("max_metric_drop", 0.0, 1e9),
        ("max_p95_ratio", 1.0, 1000.0),
    ):
        value = block.get(key, getattr(default, key))
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or value != value
            or not low <= value <= high
        ):
            raise lines.error(f"promote.{key}", f"must be a number from {low:g} to {high:g}, got {value!r}")
        values[key] = float(value)
    return PromoteSpec(**values)
