"""Evaluation: every rule of a catalog over one bundle's facts, then the waivers.

Four outcomes per rule, as in a STIG checklist: ``open`` (a finding), ``not_a_finding``,
``not_applicable`` (nothing the rule talks about is in the bundle) and ``not_reviewed`` (a manual
rule: no tool can decide it, so it is never reported as passed). Pure: the same catalog, facts and
waivers always give the same results, in rule-id order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from airgap.core.policy.catalog import SEVERITIES, SEVERITY_RANK, Catalog, ManualCheck, Rule
from airgap.core.policy.conditions import evaluate_condition
from airgap.core.policy.selectors import SELECTORS, ObjectRef, select
from airgap.core.project import Waiver
from airgap.errors import InvalidInputError

STATUSES = ("open", "not_reviewed", "not_a_finding", "not_applicable")


@dataclass(frozen=True)
class Finding:
    """One thing wrong: which object, which field, what is wrong and how to fix it."""

    rule_id: str
    object: ObjectRef
    field: str
    message: str
    fix: str


@dataclass(frozen=True)
class RuleResult:
    """A rule's result: the status after waivers next to what the check itself said, and why."""

    rule: Rule
    status: str  # after waivers
    automated_status: str  # what the check itself said
    findings: tuple[Finding, ...]
    reason: str
    checked: int = 0
    waiver: Waiver | None = None

    @property
    def waived(self) -> bool:
        """Passed only because a waiver accepted its open findings (reports show both)."""
        return self.waiver is not None and self.automated_status == "open" and self.status == "not_a_finding"


@dataclass(frozen=True)
class Evaluation:
    """Every rule's result for one bundle, and the waivers that had nothing open to waive."""

    results: tuple[RuleResult, ...]  # sorted by rule id
    unused_waivers: tuple[Waiver, ...] = ()

    def blocking(self, fail_on: str) -> tuple[RuleResult, ...]:
        """Open (unwaived) results at or above ``fail_on``: what makes ``--fail-on`` exit 1."""
        if fail_on not in SEVERITY_RANK:
            raise InvalidInputError(f"fail_on must be one of {', '.join(SEVERITIES)}, got {fail_on!r}")
        floor = SEVERITY_RANK[fail_on]
        return tuple(
            r for r in self.results if r.status == "open" and SEVERITY_RANK[r.rule.severity] >= floor
        )

    def fails(self, fail_on: str) -> bool:
        """Whether ``--fail-on`` turns this evaluation into exit code 1."""
        return bool(self.blocking(fail_on))

    def counts(self) -> dict[str, dict[str, int]]:
        """``{status: {severity: n}}`` with every status and severity present (zeros included)."""
        out = {s: dict.fromkeys(SEVERITIES, 0) for s in STATUSES}
        for r in self.results:
            out[r.status][r.rule.severity] += 1
        return out

    def result(self, rule_id: str) -> RuleResult:
        """One rule's result by id; a KeyError names a rule the catalog does not have."""
        for r in self.results:
            if r.rule.id == rule_id:
                return r
        raise KeyError(rule_id)


def evaluate_rule(rule: Rule, facts: Mapping[str, Any]) -> RuleResult:
    """One rule over the facts, before waivers.

    Findings are deduplicated by object, field and message: two wildcards reaching the same field
    through different paths are one thing for a reviewer to fix, not two.
    """
    if isinstance(rule.check, ManualCheck):
        return RuleResult(rule, "not_reviewed", "not_reviewed", (), rule.check.reason)
    check = rule.check
    items = select(check.select, facts)
    if check.where is not None:
        where = check.where
        items = [i for i in items if evaluate_condition(where, i.root).holds]
    if not items:
        lacking = SELECTORS[check.select].lacking
        reason = check.not_applicable or f"nothing to check: the bundle has no {lacking}"
        return RuleResult(rule, "not_applicable", "not_applicable", (), reason)
    findings: list[Finding] = []
    seen: set[tuple[ObjectRef, str, str]] = set()
    for item in items:
        outcome = evaluate_condition(check.assertion, item.root)
        if outcome.holds:
            continue
        for hit in outcome.failures:
            ref = item.ref_for(hit.path)
            fld = item.locate(hit.path)
            message = f"{hit.label}: {hit.detail}" if hit.label else hit.detail
            key = (ref, fld, message)
            if key not in seen:
                seen.add(key)
                findings.append(Finding(rule.id, ref, fld, message, rule.fix))
    noun = "item" if len(items) == 1 else "items"
    if findings:
        return RuleResult(
            rule,
            "open",
            "open",
            tuple(findings),
            f"{len(findings)} finding(s) in {len(items)} {noun}",
            len(items),
        )
    return RuleResult(rule, "not_a_finding", "not_a_finding", (), f"{len(items)} {noun} checked", len(items))


def evaluate(catalog: Catalog, facts: Mapping[str, Any], waivers: Sequence[Waiver] = ()) -> Evaluation:
    """Evaluates every rule, then applies waivers.

    A waiver turns an *open* result into ``not_a_finding`` and keeps its findings and justification,
    so the checklist shows what was accepted and why. It never turns ``not_reviewed`` into a pass:
    a manual rule needs a person, not a YAML line. A waiver naming a rule that does not exist is an
    error — it is most likely a typo that would otherwise leave a finding unwaived without notice.
    """
    by_rule: dict[str, Waiver] = {}
    for w in waivers:
        if catalog.rule(w.rule) is None:
            raise InvalidInputError(
                f"waiver for {w.rule}: no such rule", hint="waivers name rule ids from `airgap check` output"
            )
        by_rule.setdefault(w.rule, w)
    results: list[RuleResult] = []
    unused: list[Waiver] = []
    for rule in catalog.rules:
        result = evaluate_rule(rule, facts)
        waiver = by_rule.get(rule.id)
        if waiver is not None:
            if result.status == "open":
                result = replace(result, status="not_a_finding", waiver=waiver)
            else:
                unused.append(waiver)
        results.append(result)
    results.sort(key=lambda r: r.rule.id)
    return Evaluation(tuple(results), tuple(unused))
