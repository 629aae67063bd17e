"""The smoke test's verdict: do the installed model's answers match the contract recorded at bundle time?

Pure values in, differences out. The tolerance is numpy's ``allclose``: |actual − expected| ≤
atol + rtol·|expected|, element by element; shapes and integer outputs must match exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Mismatch:
    case: str
    output: str
    detail: str

    def line(self) -> str:
        return f"case {self.case!r}, output {self.output!r}: {self.detail}"


def compare_case(
    case: str, expected: Mapping[str, Any], actual: Mapping[str, Any], rtol: float, atol: float
) -> list[Mismatch]:
    out: list[Mismatch] = []
    for name, want in expected.items():
        if name not in actual:
            out.append(Mismatch(case, name, "missing from the answer"))
            continue
        try:
            exp = np.asarray(want)
            got = np.asarray(actual[name])
        except ValueError as exc:
            out.append(Mismatch(case, name, f"not an array: {exc}"))
            continue
        if exp.shape != got.shape:
            out.append(Mismatch(case, name, f"shape {list(got.shape)}, expected {list(exp.shape)}"))
            continue
        if exp.size == 0:
            continue
        if exp.dtype.kind in "iub" or (got.dtype.kind in "iub" and exp.dtype.kind != "f"):
            bad = np.argwhere(exp != got)
            if bad.size:
                idx = tuple(int(i) for i in bad[0])
                out.append(Mismatch(case, name, f"at {list(idx)}: got {got[idx]!r}, expected {exp[idx]!r}"))
            continue
        diff = np.abs(got.astype(np.float64) - exp.astype(np.float64))
        limit = atol + rtol * np.abs(exp.astype(np.float64))
        over = diff > limit
        if np.any(~np.isfinite(got.astype(np.float64))) or np.any(over):
            idx = tuple(int(i) for i in np.argwhere(over | ~np.isfinite(got.astype(np.float64)))[0])
            out.append(
                Mismatch(
                    case,
                    name,
                    f"at {list(idx)}: got {float(got[idx]):.9g}, expected {float(exp[idx]):.9g} "
                    f"(|diff| {float(diff[idx]):.3g} > {float(limit[idx]):.3g}); "
                    f"{int(over.sum())} of {exp.size} values outside rtol={rtol:g}, atol={atol:g}",
                )
            )
    return out


def compare_contract(contract: Mapping[str, Any], answers: Mapping[str, Mapping[str, Any]]) -> list[Mismatch]:
    """Every golden case of the contract against ``answers`` (case name → outputs)."""
    tol = contract.get("tolerance") or {}
    rtol, atol = float(tol.get("rtol", 1e-4)), float(tol.get("atol", 1e-5))
    out: list[Mismatch] = []
    for case in contract.get("cases", []):
        name = str(case.get("name"))
        if name not in answers:
            out.append(Mismatch(name, "*", "the installed model gave no answer"))
            continue
        out += compare_case(name, case.get("outputs", {}), answers[name], rtol, atol)
    return out
