"""The data contract: what each input feature of the model may be, and what the reference data looked like.

A model is trusted for the inputs it was built and tested on. The contract says, per feature of
one input tensor, its type, its range or allowed values and whether it may be missing; the model
server refuses a request outside it (HTTP 400 naming the feature, the value and the rule) instead
of answering with confidence about data it has never seen. The reference statistics (decile bin
edges and their shares, the missing rate) are the baseline the server measures drift against.

Pure: rows in, documents out. Reading the reference file is the caller's business.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from airgap.errors import InvalidInputError

FORMAT = "airgap.data-contract/v1"
TYPES = ("float", "int", "bool", "category")
MODES = ("enforce", "warn")  # refuse a value outside the contract, or answer and count it
BINS = 10  # deciles: enough resolution for a population stability index, few enough to stay stable
MARGIN = 0.10  # a derived range is the observed one widened by this share of its span on each side
MAX_CATEGORIES = 64  # a text column with more distinct values is an identifier, not a category
MISSING = ("", "NA", "NaN", "nan", "null", "None")


@dataclass(frozen=True)
class Feature:
    """One column of the contract's input tensor; ``None`` bounds mean unbounded."""

    name: str
    type: str
    minimum: float | None = None
    maximum: float | None = None
    allowed: tuple[str, ...] | None = None
    nullable: bool = False
    mode: str = "enforce"

    def to_json(self) -> dict[str, Any]:
        """The contract entry as the server reads it; absent bounds are left out, not null."""
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "nullable": self.nullable,
            "mode": self.mode,
        }
        if self.minimum is not None:
            out["min"] = self.minimum
        if self.maximum is not None:
            out["max"] = self.maximum
        if self.allowed is not None:
            out["allowed"] = list(self.allowed)
        return out

    def violation(self, value: object) -> str | None:
        """The rule ``value`` breaks, as a phrase for an error message, or ``None`` when it conforms."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None if self.nullable else "is missing, and the contract does not allow missing values"
        if self.type == "category":
            text = value if isinstance(value, str) else _number_text(value)
            if self.allowed is not None and text not in self.allowed:
                return f"is not one of the allowed values ({', '.join(self.allowed[:8])})"
            return None
        if isinstance(value, bool) and self.type != "bool":
            return f"is a boolean, the contract says {self.type}"
        if not isinstance(value, (int, float)):
            return f"is not a number (the contract says {self.type})"
        if not math.isfinite(value):
            return "is not a finite number"
        if self.type == "bool" and value not in (0, 1):
            return "is not true or false (the contract says bool)"
        if self.type == "int" and not float(value).is_integer():
            return "is not a whole number (the contract says int)"
        if self.minimum is not None and value < self.minimum:
            return f"is below the contract's minimum {_number_text(self.minimum)}"
        if self.maximum is not None and value > self.maximum:
            return f"is above the contract's maximum {_number_text(self.maximum)}"
        return None


def _number_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class DataContract:
    """The features of one input tensor, in column order, with the reference statistics."""

    input: str
    features: tuple[Feature, ...]
    reference_rows: int
    stats: tuple[dict[str, Any], ...]

    def to_json(self) -> dict[str, Any]:
        """The signed ``model/data-contract.json``: enforced by the server, read by the drift monitor."""
        return {
            "format": FORMAT,
            "input": self.input,
            "features": [f.to_json() for f in self.features],
            "reference_rows": self.reference_rows,
            "baseline": list(self.stats),
        }

    def check_row(self, row: Sequence[object]) -> tuple[int, str] | None:
        """The first column of ``row`` that breaks the contract and why, or ``None``."""
        if len(row) != len(self.features):
            return (-1, f"has {len(row)} values, the contract names {len(self.features)} features")
        for i, (feature, value) in enumerate(zip(self.features, row)):
            why = feature.violation(value)
            if why is not None:
                return (i, why)
        return None


def read_csv(text: str, source: str) -> tuple[list[str], list[list[str]]]:
    """A header and rows of text cells; refuses ragged or empty files naming the line."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise InvalidInputError(
            f"{source}: the reference data is empty", hint="a header row, then one row per sample"
        ) from None
    header = [h.strip() for h in header]
    if not header or any(not h for h in header) or len(set(header)) != len(header):
        raise InvalidInputError(
            f"{source}:1: the header must name every column once", hint="e.g. temperature,pressure"
        )
    rows: list[list[str]] = []
    for row in reader:
        if not row:
            continue
        if len(row) != len(header):
            raise InvalidInputError(
                f"{source}:{reader.line_num}: {len(row)} values for {len(header)} columns",
                hint="every row needs one value per header column",
            )
        rows.append([cell.strip() for cell in row])
    if not rows:
        raise InvalidInputError(f"{source}: the reference data has a header but no rows")
    return header, rows


def _as_number(cell: str) -> float | None:
    if cell in MISSING:
        return None
    try:
        value = float(cell)
    except ValueError:
        return math.nan  # marks "not a number" for the type inference below
    return value


def derive(header: Sequence[str], rows: Sequence[Sequence[str]], input_name: str) -> DataContract:
    """The contract the reference data implies: each column's type, widened range or categories."""
    features: list[Feature] = []
    stats: list[dict[str, Any]] = []
    for col, name in enumerate(header):
        cells = [row[col] for row in rows]
        present = [c for c in cells if c not in MISSING]
        nullable = len(present) < len(cells)
        numbers = [_as_number(c) for c in present]
        if present and all(n is not None and not math.isnan(n) for n in numbers):
            values = [float(n) for n in numbers if n is not None]
            if set(present) <= {"0", "1"} and len(set(present)) == 2:
                features.append(Feature(name, "bool", 0.0, 1.0, None, nullable))
            else:
                is_int = all(v.is_integer() for v in values) and all(
                    "." not in c and "e" not in c.lower() for c in present
                )
                lo, hi = min(values), max(values)
                pad = (hi - lo) * MARGIN
                low, high = (
                    (lo - pad, hi + pad) if not is_int else (math.floor(lo - pad), math.ceil(hi + pad))
                )
                step = _step(hi - lo, lo, hi)
                features.append(
                    Feature(
                        name,
                        "int" if is_int else "float",
                        _round_down(low, step),
                        _round_up(high, step),
                        None,
                        nullable,
                    )
                )
            stats.append(_numeric_stats(name, values, len(cells)))
        else:
            categories = sorted(set(present))
            if len(categories) > MAX_CATEGORIES:
                raise InvalidInputError(
                    f"reference column {name!r} has {len(categories)} distinct text values",
                    hint=f"a category has at most {MAX_CATEGORIES} values; leave identifier columns out",
                )
            features.append(Feature(name, "category", None, None, tuple(categories), nullable))
            stats.append(_category_stats(name, present, len(cells)))
    return DataContract(input_name, tuple(features), len(rows), tuple(stats))


def _step(span: float, *values: float) -> float:
    """The rounding step of a column: six significant digits of its span (of its magnitude when it
    has no span), so that nearby large values (Unix timestamps) keep distinct bounds and edges."""
    scale = span if span > 0 else max((abs(v) for v in values), default=0.0)
    if scale == 0 or not math.isfinite(scale):
        return 1e-6
    return float(10 ** (math.floor(math.log10(scale)) - 5))


def _tidy(value: float) -> float:
    return float(f"{value:.12g}")


def _steps(value: float, step: float) -> float:
    """``value`` in steps; a quotient within float noise of a whole number is that number (18.4 / 1e-5
    is 1839999.9999999998), so that a bound already on the grid stays where it is."""
    q = value / step
    return round(q) if abs(q - round(q)) < 1e-6 else q


def _round_down(value: float, step: float) -> float:
    """``value`` rounded towards minus infinity to ``step``: a lower bound never excludes what it bounds."""
    out = _tidy(math.floor(_steps(value, step)) * step)
    if out > value:
        out = _tidy(out - step)
    return out if out <= value else value  # a step below what 12 digits resolve: the value itself


def _round_up(value: float, step: float) -> float:
    out = _tidy(math.ceil(_steps(value, step)) * step)
    if out < value:
        out = _tidy(out + step)
    return out if out >= value else value


def _round(value: float, step: float) -> float:
    return _tidy(round(value / step) * step)


def quantile_edges(values: Sequence[float], bins: int = BINS) -> list[float]:
    """Inner bin edges at the reference's quantiles (distinct, sorted): ``bins - 1`` at most."""
    ordered = sorted(values)
    n = len(ordered)
    step = _step(ordered[-1] - ordered[0], ordered[0], ordered[-1]) if ordered else 1e-6
    edges: list[float] = []
    for k in range(1, bins):
        pos = k * (n - 1) / bins
        low = math.floor(pos)
        frac = pos - low
        high = min(low + 1, n - 1)
        edge = _round(ordered[low] + (ordered[high] - ordered[low]) * frac, step)
        if not edges or edge > edges[-1]:
            edges.append(edge)
    return edges


def bin_index(edges: Sequence[float], value: float) -> int:
    """The bin of ``value``: 0 below the first edge, ``len(edges)`` at or above the last."""
    lo, hi = 0, len(edges)
    while lo < hi:
        mid = (lo + hi) // 2
        if value < edges[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _numeric_stats(name: str, values: Sequence[float], total: int) -> dict[str, Any]:
    edges = quantile_edges(values)
    counts = [0] * (len(edges) + 1)
    for v in values:
        counts[bin_index(edges, v)] += 1
    return {
        "name": name,
        "kind": "numeric",
        "edges": edges,
        "shares": [round(c / len(values), 6) for c in counts],
        "missing_rate": round((total - len(values)) / total, 6),
    }


def _category_stats(name: str, present: Sequence[str], total: int) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for c in present:
        counts[c] = counts.get(c, 0) + 1
    return {
        "name": name,
        "kind": "category",
        "categories": sorted(counts),
        "shares": [round(counts[c] / max(len(present), 1), 6) for c in sorted(counts)],
        "missing_rate": round((total - len(present)) / total, 6),
    }


def psi(expected: Sequence[float], observed_counts: Sequence[int]) -> float:
    """Population stability index of observed counts against expected shares (0: same; > 0.25: drifted).

    Empty bins get a small floor share so that one unseen bin gives a large but finite index.
    """
    total = sum(observed_counts)
    if total == 0:
        return 0.0
    floor = 1e-4
    out = 0.0
    for e, c in zip(expected, observed_counts):
        a = max(c / total, floor)
        e = max(e, floor)
        out += (a - e) * math.log(a / e)
    return out


def override(
    contract: DataContract, hand: Mapping[str, Feature], modes: Mapping[str, str] | None = None
) -> DataContract:
    """The derived contract with the project file's hand-written features in place of derived ones,
    and the derived features named in ``modes`` switched to that mode (``warn``: answer and count)."""
    modes = modes or {}
    unknown = sorted((set(hand) | set(modes)) - {f.name for f in contract.features})
    if unknown:
        raise InvalidInputError(
            f"data.features names {unknown[0]!r}, which is not a column of the reference data",
            hint=f"columns: {', '.join(f.name for f in contract.features)}",
        )
    features = tuple(
        replace(hand.get(f.name, f), mode=modes[f.name]) if f.name in modes else hand.get(f.name, f)
        for f in contract.features
    )
    return DataContract(contract.input, features, contract.reference_rows, contract.stats)
