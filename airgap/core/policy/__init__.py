"""The policy engine: declarative rules from ``policies/*.yaml`` evaluated over a bundle's facts.

Rules are data, not code, so that an assessor can read exactly what was checked (docs/policies.md
is the format reference) and a site can add its own without touching airgap. The engine is pure:
rule texts and one facts dict in, results out — no file, clock or network — so every rule is
tested on values and the same inputs always give the same checklist.

The parts, each its own module:

- ``paths``: the dotted paths rules use to name fields, and walking them over untrusted facts;
- ``conditions``: leaves, ``all``/``any``/``not``, and the hits that become findings;
- ``selectors``: what a rule iterates over (Kubernetes objects, pod specs, containers,
  namespaces; the image, the bundle, the target profile) — one registry, ``SELECTORS``;
- ``catalog``: benchmarks, rules and the strict parser of rule files;
- ``evaluation``: rules over facts, waivers, and the four STIG statuses.

Callers import from ``airgap.core.policy``; the names below are the engine's public surface.
"""

from __future__ import annotations

from airgap.core.policy.catalog import (
    SEVERITIES,
    SEVERITY_RANK,
    Benchmark,
    Catalog,
    Check,
    Group,
    ManualCheck,
    Reference,
    References,
    Rule,
    parse_catalog,
)
from airgap.core.policy.conditions import (
    OPERATORS,
    AllOf,
    AnyOf,
    Condition,
    Leaf,
    NotOf,
    describe,
    evaluate_condition,
    phrase,
)
from airgap.core.policy.evaluation import STATUSES, Evaluation, Finding, RuleResult, evaluate, evaluate_rule
from airgap.core.policy.paths import MISSING, WILDCARD, expand, format_path, lookup, mapping_of, parse_path
from airgap.core.policy.selectors import SELECTORS, Item, ObjectRef, Selector, parse_image_reference, select

__all__ = [
    "MISSING",
    "OPERATORS",
    "SELECTORS",
    "SEVERITIES",
    "SEVERITY_RANK",
    "STATUSES",
    "WILDCARD",
    "AllOf",
    "AnyOf",
    "Benchmark",
    "Catalog",
    "Check",
    "Condition",
    "Evaluation",
    "Finding",
    "Group",
    "Item",
    "Leaf",
    "ManualCheck",
    "NotOf",
    "ObjectRef",
    "Reference",
    "References",
    "Rule",
    "RuleResult",
    "Selector",
    "describe",
    "evaluate",
    "evaluate_condition",
    "evaluate_rule",
    "expand",
    "format_path",
    "lookup",
    "mapping_of",
    "parse_catalog",
    "parse_image_reference",
    "parse_path",
    "phrase",
    "select",
]
