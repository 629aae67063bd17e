"""The smoke test's verdict: do the installed model's answers match the contract recorded at bundle time?

Pure values in, differences out. Both sides are the JSON the model server writes (see
``docs/serving.md``), so every output kind ONNX can express arrives as one of:

- a tensor: nested lists of numbers, booleans or strings;
- a sequence of tensors: a list of such nested lists;
- a map: an object whose keys are strings (JSON has no other key type: an ``int64`` key ``1`` is
  ``"1"``);
- a sequence of maps: a list of objects (skl2onnx's ZipMap classifier output);
- a non-finite float: the string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``.

The comparison walks both values together. Numbers compare with numpy's ``allclose`` rule,
|actual − expected| ≤ atol + rtol·|expected|, as soon as either side is a fraction; whole numbers
(integer tensors, int labels) compare exactly, as do booleans, strings (string labels, map keys) and
shapes. NaN equals NaN and an infinity equals the same infinity: a model that answered NaN when it
was bundled is consistent when it answers NaN again. Map keys are normalised to strings on both
sides, so a caller holding onnxruntime's own values (``{0: 0.25}``) compares equal to the JSON
(``{"0": 0.25}``).

A difference names the case, the output and the place inside it (``[0]["2"]``), what was expected
and what came, and how many values of that output differ.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
DEFAULT_RTOL = 1e-4
DEFAULT_ATOL = 1e-5


@dataclass(frozen=True)
class Mismatch:
    """One output of one golden case that differs: ``detail`` says where and how."""

    case: str
    output: str
    detail: str

    def line(self) -> str:
        """The difference as one self-contained line (case, output, where and how), for the smoke test's
        report and exit message."""
        return f"case {self.case!r}, output {self.output!r}: {self.detail}"


@dataclass(frozen=True)
class Tolerance:
    """How far a computed float may drift from the recorded one and still count as the same answer: different
    CPUs and onnxruntime builds round differently, so exact equality would fail correct installs."""

    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL

    def limit(self, expected: float) -> float:
        """The largest allowed |actual − expected| for one recorded value, numpy's ``allclose`` rule."""
        return self.atol + self.rtol * abs(expected)


@dataclass(frozen=True)
class _Difference:
    where: str  # ``[0]["2"]``, empty for the whole output
    text: str  # "got X, expected Y ..."


class _Walk:
    """Compares one output; collects the first difference and counts every differing value."""

    def __init__(self, tol: Tolerance) -> None:
        self.tol = tol
        self.first: _Difference | None = None
        self.count = 0  # differing values, or places whose structure differs

    def differ(self, where: str, text: str) -> None:
        self.count += 1
        if self.first is None:
            self.first = _Difference(where, text)

    def compare(self, expected: Any, actual: Any, where: str) -> None:
        if isinstance(expected, list) and isinstance(actual, list):
            if self._compare_arrays(expected, actual, where):
                return
            if len(expected) != len(actual):
                self.differ(where, f"{len(actual)} elements, expected {len(expected)}")
                return
            for i, (e, a) in enumerate(zip(expected, actual)):
                self.compare(e, a, f"{where}[{i}]")
            return
        if isinstance(expected, Mapping) and isinstance(actual, Mapping):
            want = {str(k): v for k, v in expected.items()}
            got = {str(k): v for k, v in actual.items()}
            missing = [k for k in want if k not in got]
            extra = [k for k in got if k not in want]
            if missing or extra:
                parts = []
                if missing:
                    parts.append("keys " + ", ".join(_show(k) for k in missing[:5]) + " missing")
                if extra:
                    parts.append("unexpected keys " + ", ".join(_show(k) for k in extra[:5]))
                self.differ(where, "; ".join(parts))
            for key in want:
                if key in got:
                    self.compare(want[key], got[key], f"{where}[{_show(key)}]")
            return
        problem = self._leaf(expected, actual)
        if problem:
            self.differ(where, problem)

    def _compare_arrays(self, expected: list[Any], actual: list[Any], where: str) -> bool:
        """A numeric tensor at once, with numpy; False when either side is not one (then walk it)."""
        exp, got = _numeric_array(expected), _numeric_array(actual)
        if exp is None or got is None:
            return False
        if exp.shape != got.shape:
            self.differ(where, f"shape {list(got.shape)}, expected {list(exp.shape)}")
            return True
        if exp.size == 0:
            return True
        if exp.dtype.kind == "b" or got.dtype.kind == "b":
            if exp.dtype.kind != got.dtype.kind:
                index = tuple(0 for _ in exp.shape)
                self.differ(
                    where + _index(index),
                    f"got {_show(got[index].item())}, expected {_show(exp[index].item())}",
                )
                self.count += exp.size - 1
                return True
            bad = exp != got
        elif exp.dtype.kind in "iu" and got.dtype.kind in "iu":
            bad = exp != got
        else:
            e, a = exp.astype(np.float64), got.astype(np.float64)
            with np.errstate(invalid="ignore"):
                limit = self.tol.atol + self.tol.rtol * np.abs(e)
                diff = np.abs(a - e)
                same_special = (np.isnan(e) & np.isnan(a)) | (np.isinf(e) & (e == a))
                bad = ~same_special & ~(diff <= limit)
        count = int(np.count_nonzero(bad))
        if count:
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            problem = self._leaf(exp[index].item(), got[index].item())
            self.count += count - 1
            self.differ(where + _index(index), problem or "differs")
        return True

    def _leaf(self, expected: Any, actual: Any) -> str | None:
        """None when equal; else what differs, in words."""
        e, a = _number(expected), _number(actual)
        if isinstance(expected, bool) or isinstance(actual, bool):
            if type(expected) is type(actual) and expected == actual:
                return None
            return f"got {_show(actual)}, expected {_show(expected)}"
        if e is not None and a is not None:
            whole = all(isinstance(x, int) for x in (expected, actual))
            if whole:
                return None if expected == actual else f"got {actual}, expected {expected}"
            if math.isnan(e) and math.isnan(a):
                return None
            if not (math.isfinite(e) and math.isfinite(a)):
                return None if e == a else f"got {_show(actual)}, expected {_show(expected)}"
            diff, limit = abs(a - e), self.tol.limit(e)
            if diff <= limit:
                return None
            return (
                f"got {a:.9g}, expected {e:.9g} (|diff| {diff:.3g} > {limit:.3g}, "
                f"rtol={self.tol.rtol:g}, atol={self.tol.atol:g})"
            )
        if type(expected) is type(actual) and expected == actual:
            return None
        return f"got {_show(actual)}, expected {_show(expected)}"


def _number(x: Any) -> float | None:
    """The float a JSON number (or the server's spelling of a non-finite float) stands for."""
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, float, np.integer, np.floating)):
        return float(x)
    if isinstance(x, str) and x in NON_FINITE:
        return NON_FINITE[x]
    return None


def _numeric_array(value: list[Any]) -> np.ndarray | None:
    """``value`` as a rectangular array of numbers or booleans, or None (strings, maps, ragged)."""
    try:
        arr = np.asarray(value)
    except ValueError:  # ragged
        return None
    if arr.dtype.kind not in "biuf" or arr.ndim == 0:
        return None
    return arr


def _leaves(value: Any) -> int:
    """How many values (tensor elements, map values) a JSON value holds."""
    if isinstance(value, list):
        return sum(_leaves(v) for v in value)
    if isinstance(value, Mapping):
        return sum(_leaves(v) for v in value.values())
    return 1


def _index(index: Sequence[int]) -> str:
    return "".join(f"[{i}]" for i in index)


def _show(x: Any) -> str:
    """A value as it would appear in JSON, shortened."""
    if isinstance(x, bool):
        return "true" if x else "false"
    if x is None:
        return "null"
    if isinstance(x, str):
        text = '"' + x.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return text if len(text) <= 60 else text[:57] + '..."'
    if isinstance(x, float):
        return f"{x:.9g}" if math.isfinite(x) else {"nan": "NaN", "inf": "Infinity"}.get(repr(x), "-Infinity")
    if isinstance(x, (list, dict)):
        kind = "a list" if isinstance(x, list) else "an object"
        return f"{kind} of {len(x)}"
    return repr(x)


def compare_output(name: str, expected: Any, actual: Any, tol: Tolerance, case: str = "") -> Mismatch | None:
    """One output of one case; None when it matches."""
    walk = _Walk(tol)
    walk.compare(expected, actual, "")
    if walk.first is None:
        return None
    where = f"at {walk.first.where}: " if walk.first.where else ""
    detail = where + walk.first.text
    if walk.count > 1:
        detail += f"; {walk.count} of {max(_leaves(expected), walk.count)} values differ"
    return Mismatch(case, name, detail)


def compare_case(
    case: str, expected: Mapping[str, Any], actual: Mapping[str, Any], rtol: float, atol: float
) -> list[Mismatch]:
    """Every recorded output of one golden case against the answer; an output the contract does not
    know is a difference too (the installed model is not the recorded one)."""
    tol = Tolerance(rtol, atol)
    out: list[Mismatch] = []
    for name, want in expected.items():
        if name not in actual:
            out.append(Mismatch(case, name, "missing from the answer"))
            continue
        mismatch = compare_output(name, want, actual[name], tol, case)
        if mismatch:
            out.append(mismatch)
    for name in actual:
        if name not in expected:
            out.append(Mismatch(case, name, "in the answer but not in the recorded contract"))
    return out


def compare_contract(
    contract: Mapping[str, Any],
    answers: Mapping[str, Mapping[str, Any]],
    failures: Mapping[str, str] | None = None,
) -> list[Mismatch]:
    """Every golden case of the contract against ``answers`` (case name → outputs); ``failures``
    (case name → why) says why a case has no answer, when that is known."""
    tol = contract.get("tolerance") or {}
    rtol = float(tol.get("rtol", DEFAULT_RTOL))
    atol = float(tol.get("atol", DEFAULT_ATOL))
    out: list[Mismatch] = []
    for case in contract.get("cases", []):
        name = str(case.get("name"))
        if name not in answers:
            why = (failures or {}).get(name)
            out.append(Mismatch(name, "*", why or "the installed model gave no answer"))
            continue
        out += compare_case(name, case.get("outputs", {}), answers[name], rtol, atol)
    return out


def summary(mismatches: Sequence[Mismatch]) -> str:
    """The first difference, and how many more there are: the smoke test's one line."""
    if not mismatches:
        return "no differences"
    more = f" (+{len(mismatches) - 1} more)" if len(mismatches) > 1 else ""
    return mismatches[0].line() + more
