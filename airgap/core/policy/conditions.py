"""Conditions: what must hold for a selected item, and why it does not.

A condition is a tree of leaves (one operator on the value(s) at a path) joined by ``all``,
``any`` and ``not``. Evaluating one returns not just true or false but the *hits* that decided it,
each with its concrete path and the requirement in words, because a finding must say which field
is wrong and what it should be — "AG-PSS-PRIVILEGED failed" alone sends a reviewer hunting.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Union

from airgap.core.policy.paths import MISSING, WILDCARD, PathTokens, expand, format_path, lookup, parse_path


@dataclass(frozen=True)
class Leaf:
    """One test of the value(s) at a path: ``{path: ..., <operator>: operand}``."""

    path: str
    tokens: PathTokens
    op: str
    operand: Any
    missing: bool  # whether a missing value passes
    quantifier: str  # "all" or "any": how the elements a wildcard reaches combine
    message: str | None = None
    redact: bool = False  # findings name the field but never show its value (a credential)


@dataclass(frozen=True)
class AllOf:
    """Every child holds; the findings are those of each child that fails."""

    children: tuple[Condition, ...]
    message: str | None = None


@dataclass(frozen=True)
class AnyOf:
    """At least one child holds; otherwise one finding joins why each failed."""

    children: tuple[Condition, ...]
    message: str | None = None


@dataclass(frozen=True)
class NotOf:
    """The child must not hold; the finding names what made it hold."""

    child: Condition
    message: str | None = None


Condition = Union[Leaf, AllOf, AnyOf, NotOf]

# operator -> (verb phrase, negative?, whether a missing value passes by default)
OPERATORS: Mapping[str, tuple[str, bool, bool]] = {
    "equals": ("equal", False, False),
    "not_equals": ("equal", True, True),
    "in": ("be one of", False, False),
    "not_in": ("be one of", True, True),
    "present": ("be set", False, False),
    "absent": ("be set", True, True),
    "matches": ("match", False, False),
    "gte": ("be >=", False, False),
    "lte": ("be <=", False, False),
    "contains": ("contain", False, False),
    "not_contains": ("contain", True, True),
    "keys_in": ("have only the keys", False, False),
    "equals_path": ("equal", False, False),
    "not_equals_path": ("equal", True, True),
    "gte_path": ("be >=", False, False),
    "lte_path": ("be <=", False, False),
}

# Each negative or path-comparing operator is the positive test below it, negated or fed the
# other field's value.
_POSITIVE = {
    "not_equals": "equals",
    "not_in": "in",
    "absent": "present",
    "not_contains": "contains",
    "equals_path": "equals",
    "not_equals_path": "equals",
    "gte_path": "gte",
    "lte_path": "lte",
}


def is_number(value: object) -> bool:
    """A YAML number that is not a boolean: ``true`` must never pass ``gte: 1``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same(a: object, b: object) -> bool:
    """Equality that does not let YAML's ``true`` equal ``1`` (Python's ``True == 1``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def _base_test(op: str, value: Any, operand: Any) -> bool:
    """The positive form of an operator on a present value."""
    if op == "equals":
        return _same(value, operand)
    if op == "in":
        return any(_same(value, o) for o in operand)
    if op == "present":
        return True
    if op == "matches":
        return isinstance(value, str) and re.search(operand, value) is not None
    if op in ("gte", "lte"):
        if not (is_number(value) and is_number(operand)):
            return False
        return bool(value >= operand) if op == "gte" else bool(value <= operand)
    if op == "contains":
        if isinstance(value, list):
            return any(_same(v, operand) for v in value)
        return isinstance(value, str) and isinstance(operand, str) and operand in value
    if op == "keys_in":
        return isinstance(value, dict) and all(k in operand for k in value)
    raise AssertionError(op)  # pragma: no cover - the parser only admits known operators


def _test(leaf: Leaf, value: Any, root: Any) -> bool:
    if value is MISSING:
        return leaf.missing
    operand = lookup(root, parse_path(leaf.operand)) if leaf.op.endswith("_path") else leaf.operand
    if leaf.op.endswith("_path") and operand is MISSING:
        return leaf.missing
    base = _POSITIVE.get(leaf.op, leaf.op)
    result = _base_test(base, value, operand)
    return not result if OPERATORS[leaf.op][1] else result


def _render(value: Any, limit: int = 120, redact: bool = False) -> str:
    if value is MISSING:
        return "not set"
    if redact:
        return "set (value withheld)"
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def phrase(leaf: Leaf, negated: bool = False, root: Any = None) -> str:
    """``must equal false``, ``must not be set``, ...: the requirement in a finding's words.

    ``negated`` words the opposite requirement, for the witnesses of a ``not``; ``root`` lets a
    path-comparing operator show the value it compared against.
    """
    verb, negative, _ = OPERATORS[leaf.op]
    if leaf.op in ("present", "absent"):
        operand = ""
    elif leaf.op.endswith("_path"):
        here = lookup(root, parse_path(leaf.operand)) if root is not None else MISSING
        shown = f" ({_render(here, redact=leaf.redact)})" if here is not MISSING else ""
        operand = f" {leaf.operand}{shown}"
    elif leaf.op == "matches":
        operand = f" /{leaf.operand}/"
    else:
        operand = f" {_render(leaf.operand)}"
    must = "must not" if negative != negated else "must"
    return f"{must} {verb}{operand}"


def describe(cond: Condition) -> str:
    """The condition in words, for a checklist's check text: the assessor reads this, not YAML."""
    if isinstance(cond, Leaf):
        scope = " (every element)" if WILDCARD in cond.tokens and cond.quantifier == "all" else ""
        if WILDCARD in cond.tokens and cond.quantifier == "any":
            scope = " (at least one element)"
        tail = " (or be unset)" if cond.missing and not OPERATORS[cond.op][2] else ""
        return f"{cond.path}{scope} {phrase(cond)}{tail}"
    if isinstance(cond, AllOf):
        return "; and ".join(describe(c) for c in cond.children)
    if isinstance(cond, AnyOf):
        return "either " + "; or ".join(describe(c) for c in cond.children)
    return f"not ({describe(cond.child)})"


@dataclass(frozen=True)
class Hit:
    """One element that decided a condition: where it is (item path) and what it says."""

    path: PathTokens
    detail: str
    label: str | None = None


@dataclass(frozen=True)
class Outcome:
    """Whether a condition holds, with the hits that say why not and why so (``not`` needs both)."""

    holds: bool
    failures: tuple[Hit, ...]  # why it does not hold
    witnesses: tuple[Hit, ...]  # why it holds (used by ``not``)


def _label(hits: Iterable[Hit], message: str | None) -> tuple[Hit, ...]:
    return tuple(h if h.label or not message else replace(h, label=message) for h in hits)


def _leaf_outcome(cond: Leaf, root: Any) -> Outcome:
    passes: list[Hit] = []
    fails: list[Hit] = []
    for path, value in expand(root, cond.tokens):
        shown = f"{format_path(path)} is {_render(value, redact=cond.redact)}"
        if _test(cond, value, root):
            passes.append(Hit(path, f"{shown}; {phrase(cond, negated=True, root=root)}"))
        else:
            fails.append(Hit(path, f"{shown}; {phrase(cond, root=root)}"))
    if cond.quantifier == "all":
        holds = not fails
    else:
        holds = bool(passes)
        if not holds:
            found = ", ".join(h.detail.split(";", 1)[0] for h in fails) or "nothing"
            detail = f"no element of {cond.path} satisfies: {phrase(cond, root=root)} ({found})"
            fails = [Hit(cond.tokens, detail)]
    return Outcome(holds, _label(fails, cond.message), _label(passes, cond.message))


def evaluate_condition(cond: Condition, root: Any) -> Outcome:
    """Evaluates ``cond`` on one item's root, keeping the hits a finding is made of."""
    if isinstance(cond, Leaf):
        return _leaf_outcome(cond, root)
    if isinstance(cond, AllOf):
        outs = [evaluate_condition(c, root) for c in cond.children]
        failures = tuple(h for o in outs if not o.holds for h in o.failures)
        witnesses = tuple(h for o in outs for h in o.witnesses)
        return Outcome(not failures, _label(failures, cond.message), witnesses)
    if isinstance(cond, AnyOf):
        outs = [evaluate_condition(c, root) for c in cond.children]
        if any(o.holds for o in outs):
            return Outcome(True, (), tuple(h for o in outs if o.holds for h in o.witnesses))
        hits = [h for o in outs for h in o.failures]
        first = hits[0].path if hits else ()
        merged = Hit(first, " — or — ".join(h.detail for h in hits))
        return Outcome(False, _label((merged,), cond.message), ())
    inner = evaluate_condition(cond.child, root)
    if inner.holds:
        why = inner.witnesses or (Hit((), f"{describe(cond.child)} holds"),)
        return Outcome(False, _label(why, cond.message), ())
    return Outcome(True, (), inner.failures)
