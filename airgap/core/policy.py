"""The policy engine: declarative rules from ``policies/*.yaml`` evaluated over a bundle's facts.

Rules are data, not code, so that an assessor can read exactly what was checked (docs/policies.md
is the format reference) and a site can add its own without touching airgap. The engine is pure:
rule texts and one facts dict in, results out — no file, clock or network — so every rule is
tested on values and the same inputs always give the same checklist.

Four outcomes per rule, as in a STIG checklist: ``open`` (a finding), ``not_a_finding``,
``not_applicable`` (nothing the rule talks about is in the bundle) and ``not_reviewed`` (a manual
rule: no tool can decide it, so it is never reported as passed).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Union

import yaml

from airgap.core.project import Waiver
from airgap.errors import InvalidInputError

SEVERITIES = ("high", "medium", "low")
SEVERITY_RANK = {"high": 3, "medium": 2, "low": 1}
STATUSES = ("open", "not_reviewed", "not_a_finding", "not_applicable")
SELECTORS = ("objects", "pod_specs", "containers", "namespaces", "image", "bundle", "profile")

RULE_ID = re.compile(r"^AG-[A-Z0-9]+(-[A-Z0-9]+)*$")
GROUP_ID = re.compile(r"^V-\d{5,6}$")
STIG_ID = re.compile(r"^[A-Z0-9]+(-[A-Z0-9]+)+$")
NIST_CONTROL = re.compile(r"^[A-Z]{2}-\d{1,2}(\(\d{1,2}\))?$")
CCI = re.compile(r"^CCI-\d{6}$")
BENCHMARK_ID = re.compile(r"^[a-z][a-z0-9_]*$")

# Kinds that live outside any namespace: everything else is namespaced, and a namespaced object
# without metadata.namespace lands in the namespace of whoever applies it — normally "default".
CLUSTER_SCOPED = frozenset(
    {
        "APIService",
        "CSIDriver",
        "CSINode",
        "CertificateSigningRequest",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "FlowSchema",
        "IngressClass",
        "MutatingWebhookConfiguration",
        "Namespace",
        "Node",
        "PersistentVolume",
        "PodSecurityPolicy",
        "PriorityClass",
        "PriorityLevelConfiguration",
        "RuntimeClass",
        "StorageClass",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingWebhookConfiguration",
        "VolumeAttachment",
    }
)

# Where each workload kind keeps its pod spec and the pod template's metadata.
POD_SPEC_PATHS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Pod": (("spec",), ("metadata",)),
    "PodTemplate": (("template", "spec"), ("template", "metadata")),
    "Deployment": (("spec", "template", "spec"), ("spec", "template", "metadata")),
    "StatefulSet": (("spec", "template", "spec"), ("spec", "template", "metadata")),
    "DaemonSet": (("spec", "template", "spec"), ("spec", "template", "metadata")),
    "ReplicaSet": (("spec", "template", "spec"), ("spec", "template", "metadata")),
    "ReplicationController": (("spec", "template", "spec"), ("spec", "template", "metadata")),
    "Job": (("spec", "template", "spec"), ("spec", "template", "metadata")),
    "CronJob": (
        ("spec", "jobTemplate", "spec", "template", "spec"),
        ("spec", "jobTemplate", "spec", "template", "metadata"),
    ),
}
CONTAINER_TYPES = ("initContainers", "containers", "ephemeralContainers")
# Pod-level securityContext fields a container-level value overrides (the Kubernetes API rule).
INHERITED_SECURITY = (
    "runAsNonRoot",
    "runAsUser",
    "runAsGroup",
    "seccompProfile",
    "seLinuxOptions",
    "appArmorProfile",
)
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


# --------------------------------------------------------------------------------------------
# Paths: ``spec.containers[0].securityContext``, ``labels["pod-security.kubernetes.io/enforce"]``,
# ``env[*].valueFrom`` — keys, list indexes, quoted keys and the wildcard.


class _Wildcard:
    def __repr__(self) -> str:
        return "[*]"


class _Missing:
    """A value that is not there (absent key, index out of range, or null)."""

    def __repr__(self) -> str:
        return "MISSING"


WILDCARD = _Wildcard()
MISSING = _Missing()
Token = Union[str, int, _Wildcard]
PathTokens = tuple[Token, ...]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_BRACKET = re.compile(r'\[(\*|\d+|"((?:[^"\\]|\\.)*)")\]')


def parse_path(text: str) -> PathTokens:
    """Parses a dotted path; raises ``ValueError`` with the position of the first bad character."""
    if not isinstance(text, str) or not text:
        raise ValueError("a path must be a non-empty string")
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        if text[pos] == "[":
            m = _BRACKET.match(text, pos)
            if not m:
                raise ValueError(f"bad bracket at position {pos} of {text!r}")
            inner = m.group(1)
            if inner == "*":
                tokens.append(WILDCARD)
            elif m.group(2) is not None:
                tokens.append(json.loads(f'"{m.group(2)}"'))
            else:
                tokens.append(int(inner))
            pos = m.end()
            continue
        if tokens:
            if text[pos] != ".":
                raise ValueError(f"expected '.' or '[' at position {pos} of {text!r}")
            pos += 1
        m = _IDENT.match(text, pos)
        if not m:
            raise ValueError(f'expected a key at position {pos} of {text!r} (quote odd keys: ["a.b/c"])')
        tokens.append(m.group(0))
        pos = m.end()
    return tuple(tokens)


def format_path(tokens: Iterable[Token], prefix: str = "") -> str:
    """The inverse of ``parse_path``; ``prefix`` is an already formatted path to continue."""
    out = prefix
    for tok in tokens:
        if isinstance(tok, _Wildcard):
            out += "[*]"
        elif isinstance(tok, int):
            out += f"[{tok}]"
        elif _IDENT.fullmatch(tok):
            out += f".{tok}" if out else tok
        else:
            out += f"[{json.dumps(tok)}]"
    return out


def expand(root: Any, tokens: PathTokens) -> list[tuple[PathTokens, Any]]:
    """Every concrete path ``tokens`` reaches in ``root`` and its value (``MISSING`` if none).

    A wildcard over a list yields each element, over a mapping each value (keys sorted), over
    anything else nothing; so ``env[*].name`` of a container without ``env`` is an empty list.
    """
    current: list[tuple[PathTokens, Any]] = [((), root)]
    for tok in tokens:
        nxt: list[tuple[PathTokens, Any]] = []
        for path, value in current:
            if isinstance(tok, _Wildcard):
                if isinstance(value, list):
                    nxt.extend(((*path, i), v) for i, v in enumerate(value))
                elif isinstance(value, dict):
                    nxt.extend(((*path, str(k)), value[k]) for k in sorted(value, key=str))
            elif isinstance(tok, int):
                ok = isinstance(value, list) and 0 <= tok < len(value)
                nxt.append(((*path, tok), value[tok] if ok else MISSING))
            else:
                ok = isinstance(value, dict) and tok in value
                nxt.append(((*path, tok), value[tok] if ok else MISSING))
        current = nxt
    return [(p, MISSING if v is None else v) for p, v in current]


def mapping_of(value: object) -> dict[str, Any]:
    """``value`` if it is a mapping, else an empty one: facts come from untrusted YAML and JSON."""
    return value if isinstance(value, dict) else {}


def lookup(root: Any, tokens: PathTokens) -> Any:
    """The single value at a path without wildcards."""
    found = expand(root, tokens)
    return found[0][1] if len(found) == 1 else MISSING


# --------------------------------------------------------------------------------------------
# Conditions


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


@dataclass(frozen=True)
class AllOf:
    children: tuple[Condition, ...]
    message: str | None = None


@dataclass(frozen=True)
class AnyOf:
    children: tuple[Condition, ...]
    message: str | None = None


@dataclass(frozen=True)
class NotOf:
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


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


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
        if not (_is_number(value) and _is_number(operand)):
            return False
        return bool(value >= operand) if op == "gte" else bool(value <= operand)
    if op == "contains":
        if isinstance(value, list):
            return any(_same(v, operand) for v in value)
        return isinstance(value, str) and isinstance(operand, str) and operand in value
    if op == "keys_in":
        return isinstance(value, dict) and all(k in operand for k in value)
    raise AssertionError(op)  # pragma: no cover - the parser only admits known operators


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


def _test(leaf: Leaf, value: Any, root: Any) -> bool:
    if value is MISSING:
        return leaf.missing
    operand = lookup(root, parse_path(leaf.operand)) if leaf.op.endswith("_path") else leaf.operand
    if leaf.op.endswith("_path") and operand is MISSING:
        return leaf.missing
    base = _POSITIVE.get(leaf.op, leaf.op)
    result = _base_test(base, value, operand)
    return not result if OPERATORS[leaf.op][1] else result


def _render(value: Any, limit: int = 120) -> str:
    if value is MISSING:
        return "not set"
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def phrase(leaf: Leaf, negated: bool = False, root: Any = None) -> str:
    """``must equal false``, ``must not be set``, ... — the requirement in words."""
    verb, negative, _ = OPERATORS[leaf.op]
    if leaf.op in ("present", "absent"):
        operand = ""
    elif leaf.op.endswith("_path"):
        here = lookup(root, parse_path(leaf.operand)) if root is not None else MISSING
        operand = f" {leaf.operand}" + (f" ({_render(here)})" if here is not MISSING else "")
    elif leaf.op == "matches":
        operand = f" /{leaf.operand}/"
    else:
        operand = f" {_render(leaf.operand)}"
    must = "must not" if negative != negated else "must"
    return f"{must} {verb}{operand}"


def describe(cond: Condition) -> str:
    """The condition in words, for a checklist's check text."""
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
class _Hit:
    path: PathTokens
    detail: str
    label: str | None = None


@dataclass(frozen=True)
class _Outcome:
    holds: bool
    failures: tuple[_Hit, ...]  # why it does not hold
    witnesses: tuple[_Hit, ...]  # why it holds (used by ``not``)


def _label(hits: Iterable[_Hit], message: str | None) -> tuple[_Hit, ...]:
    return tuple(h if h.label or not message else replace(h, label=message) for h in hits)


def evaluate_condition(cond: Condition, root: Any) -> _Outcome:
    if isinstance(cond, Leaf):
        passes: list[_Hit] = []
        fails: list[_Hit] = []
        for path, value in expand(root, cond.tokens):
            shown = f"{format_path(path)} is {_render(value)}"
            if _test(cond, value, root):
                passes.append(_Hit(path, f"{shown}; {phrase(cond, negated=True, root=root)}"))
            else:
                fails.append(_Hit(path, f"{shown}; {phrase(cond, root=root)}"))
        if cond.quantifier == "all":
            holds = not fails
        else:
            holds = bool(passes)
            if not holds:
                found = ", ".join(h.detail.split(";", 1)[0] for h in fails) or "nothing"
                fails = [
                    _Hit(
                        cond.tokens,
                        f"no element of {cond.path} satisfies: {phrase(cond, root=root)} ({found})",
                    )
                ]
        return _Outcome(holds, _label(fails, cond.message), _label(passes, cond.message))
    if isinstance(cond, AllOf):
        outs = [evaluate_condition(c, root) for c in cond.children]
        failures = tuple(h for o in outs if not o.holds for h in o.failures)
        witnesses = tuple(h for o in outs for h in o.witnesses)
        return _Outcome(not failures, _label(failures, cond.message), witnesses)
    if isinstance(cond, AnyOf):
        outs = [evaluate_condition(c, root) for c in cond.children]
        if any(o.holds for o in outs):
            return _Outcome(True, (), tuple(h for o in outs if o.holds for h in o.witnesses))
        hits = [h for o in outs for h in o.failures]
        first = hits[0].path if hits else ()
        merged = _Hit(first, " — or — ".join(h.detail for h in hits))
        return _Outcome(False, _label((merged,), cond.message), ())
    inner = evaluate_condition(cond.child, root)
    if inner.holds:
        why = inner.witnesses or (_Hit((), f"{describe(cond.child)} holds"),)
        return _Outcome(False, _label(why, cond.message), ())
    return _Outcome(True, (), inner.failures)


# --------------------------------------------------------------------------------------------
# Rules and the benchmarks they reference


@dataclass(frozen=True)
class Group:
    """One rule of an external benchmark (a STIG or SRG group), as airgap references it."""

    group_id: str
    title: str
    stig_id: str | None = None
    severity: str | None = None


@dataclass(frozen=True)
class Benchmark:
    """An external benchmark (Kubernetes STIG, Container Platform SRG) and its known groups."""

    id: str
    name: str
    display_name: str
    stig_id: str
    release_info: str
    groups: tuple[Group, ...]

    def group(self, group_id: str) -> Group | None:
        return next((g for g in self.groups if g.group_id == group_id), None)


@dataclass(frozen=True)
class Reference:
    benchmark: str
    group_id: str
    stig_id: str | None = None


@dataclass(frozen=True)
class References:
    benchmarks: tuple[Reference, ...] = ()
    nist: tuple[str, ...] = ()
    cci: tuple[str, ...] = ()


@dataclass(frozen=True)
class Check:
    """An automated check: what to iterate over, which of those apply, and what must hold."""

    select: str
    assertion: Condition
    where: Condition | None = None
    not_applicable: str | None = None


@dataclass(frozen=True)
class ManualCheck:
    """A rule no tool can decide; always ``not_reviewed`` with this reason."""

    reason: str


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    severity: str
    references: References
    discussion: str
    check: Check | ManualCheck
    fix: str
    source: str = ""

    @property
    def manual(self) -> bool:
        return isinstance(self.check, ManualCheck)

    def check_text(self) -> str:
        """What the rule checks, in words: the checklist's check content."""
        if isinstance(self.check, ManualCheck):
            return f"Manual review: {self.check.reason}"
        text = f"For {SELECTOR_NOUNS[self.check.select]}"
        if self.check.where is not None:
            text += f" where {describe(self.check.where)}"
        return f"{text}: {describe(self.check.assertion)}."


SELECTOR_NOUNS = {
    "objects": "every Kubernetes object in the bundle",
    "pod_specs": "every pod spec (Pods and the templates of Deployments, StatefulSets, DaemonSets, "
    "ReplicaSets, Jobs and CronJobs)",
    "containers": "every container, init container and ephemeral container",
    "namespaces": "every namespace the bundle creates or uses",
    "image": "the model image",
    "bundle": "the bundle",
    "profile": "the target profile",
}


@dataclass(frozen=True)
class Catalog:
    benchmarks: tuple[Benchmark, ...]
    rules: tuple[Rule, ...]

    def rule(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)

    def benchmark(self, benchmark_id: str) -> Benchmark | None:
        return next((b for b in self.benchmarks if b.id == benchmark_id), None)


class _Doc:
    """Field access on one YAML document that names file and field in every error."""

    def __init__(self, source: str, where: str) -> None:
        self.source = source
        self.where = where

    def error(self, field: str, problem: str) -> InvalidInputError:
        place = f"{self.where}.{field}" if field else self.where
        return InvalidInputError(
            f"{self.source}: {place}: {problem}", hint="see docs/policies.md for the rule format"
        )

    def text(self, data: Mapping[str, Any], key: str, required: bool = True) -> str:
        value = data.get(key)
        if value is None and not required:
            return ""
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, "must be a non-empty string")
        return " ".join(value.split()) if key in ("title",) else value.strip()

    def only(self, data: Mapping[str, Any], allowed: set[str], where: str = "") -> None:
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise self.error(
                where or unknown[0], f"unknown field {unknown[0]!r} (allowed: {sorted(allowed)})"
            )


def _parse_condition(doc: _Doc, raw: Any, where: str) -> Condition:
    if isinstance(raw, list):
        raw = {"all": raw}
    if not isinstance(raw, dict) or not raw:
        raise doc.error(where, "a condition is a mapping: {path, <operator>} or {all|any|not: ...}")
    message = raw.get("message")
    if message is not None and not isinstance(message, str):
        raise doc.error(f"{where}.message", "must be a string")
    for key in ("all", "any"):
        if key in raw:
            doc.only(raw, {key, "message"}, where)
            items = raw[key]
            if not isinstance(items, list) or not items:
                raise doc.error(f"{where}.{key}", "must be a non-empty list of conditions")
            children = tuple(_parse_condition(doc, c, f"{where}.{key}[{i}]") for i, c in enumerate(items))
            return AllOf(children, message) if key == "all" else AnyOf(children, message)
    if "not" in raw:
        doc.only(raw, {"not", "message"}, where)
        return NotOf(_parse_condition(doc, raw["not"], f"{where}.not"), message)
    unknown = sorted(set(raw) - {"path", "missing", "quantifier", "message", *OPERATORS})
    if unknown:
        raise doc.error(
            where, f"unknown operator or field {unknown[0]!r} (operators: {', '.join(sorted(OPERATORS))})"
        )
    ops = [k for k in raw if k in OPERATORS]
    if len(ops) != 1:
        raise doc.error(where, f"a leaf needs exactly one operator of {sorted(OPERATORS)}, got {ops}")
    op = ops[0]
    operand = raw[op]
    path = raw.get("path")
    if not isinstance(path, str):
        raise doc.error(f"{where}.path", "is required: the dotted path the operator tests")
    try:
        tokens = parse_path(path)
    except ValueError as exc:
        raise doc.error(f"{where}.path", str(exc)) from None
    if op in ("present", "absent") and operand is not True:
        raise doc.error(f"{where}.{op}", "must be true (use the other operator for the opposite)")
    if op in ("in", "not_in", "keys_in") and not isinstance(operand, list):
        raise doc.error(f"{where}.{op}", "must be a list")
    if op in ("gte", "lte") and not _is_number(operand):
        raise doc.error(f"{where}.{op}", "must be a number")
    if op == "matches":
        try:
            re.compile(operand)
        except (re.error, TypeError) as exc:
            raise doc.error(f"{where}.matches", f"is not a regular expression: {exc}") from None
    if op.endswith("_path"):
        try:
            operand_tokens = parse_path(operand)
        except ValueError as exc:
            raise doc.error(f"{where}.{op}", str(exc)) from None
        if WILDCARD in operand_tokens:
            raise doc.error(f"{where}.{op}", "the compared path must name a single value (no [*])")
    missing = raw.get("missing", "pass" if OPERATORS[op][2] else "fail")
    if missing not in ("pass", "fail"):
        raise doc.error(f"{where}.missing", "must be pass or fail")
    quantifier = raw.get("quantifier", "all")
    if quantifier not in ("all", "any"):
        raise doc.error(f"{where}.quantifier", "must be all or any")
    return Leaf(path, tokens, op, operand, missing == "pass", quantifier, message)


def _parse_references(doc: _Doc, raw: Any, benchmarks: Mapping[str, Benchmark]) -> References:
    if raw is None:
        return References()
    if not isinstance(raw, dict):
        raise doc.error("references", "must be a mapping")
    refs: list[Reference] = []
    nist: list[str] = []
    cci: list[str] = []
    for key in raw:  # file order: the reader decides what comes first
        value = raw[key] or []
        if not isinstance(value, list):
            raise doc.error(f"references.{key}", "must be a list")
        if key in ("nist_800_53", "cci"):
            pattern, out = (NIST_CONTROL, nist) if key == "nist_800_53" else (CCI, cci)
            for item in value:
                if not isinstance(item, str) or not pattern.match(item):
                    raise doc.error(f"references.{key}", f"{item!r} is not a valid identifier")
                out.append(item)
            continue
        bench = benchmarks.get(key)
        if bench is None:
            raise doc.error(
                f"references.{key}",
                f"unknown benchmark (known: nist_800_53, cci, {', '.join(sorted(benchmarks))})",
            )
        for i, item in enumerate(value):
            if not isinstance(item, dict) or not isinstance(item.get("group_id"), str):
                raise doc.error(f"references.{key}[{i}]", "must be {group_id: V-..., stig_id: ...}")
            doc.only(item, {"group_id", "stig_id"}, f"references.{key}[{i}]")
            group = bench.group(item["group_id"])
            if group is None:
                raise doc.error(
                    f"references.{key}[{i}]",
                    f"{item['group_id']} is not a group of {bench.display_name} in the benchmark catalog "
                    "(airgap references only ids it can cite; add the group to the catalog first)",
                )
            stig_id = item.get("stig_id")
            if stig_id is not None and stig_id != group.stig_id:
                raise doc.error(
                    f"references.{key}[{i}]", f"{group.group_id} is {group.stig_id}, not {stig_id}"
                )
            refs.append(Reference(bench.id, group.group_id, group.stig_id))
    return References(tuple(refs), tuple(nist), tuple(cci))


def _parse_benchmarks(doc: _Doc, raw: Any) -> list[Benchmark]:
    if not isinstance(raw, list):
        raise doc.error("benchmarks", "must be a list")
    out: list[Benchmark] = []
    for i, b in enumerate(raw):
        bdoc = _Doc(doc.source, f"benchmarks[{i}]")
        if not isinstance(b, dict):
            raise bdoc.error("", "must be a mapping")
        bdoc.only(b, {"id", "name", "display_name", "stig_id", "release_info", "groups"})
        bid = bdoc.text(b, "id")
        if not BENCHMARK_ID.match(bid):
            raise bdoc.error("id", "must be lowercase letters, digits and _")
        groups: list[Group] = []
        for j, g in enumerate(b.get("groups") or []):
            gdoc = _Doc(doc.source, f"benchmarks[{i}].groups[{j}]")
            if not isinstance(g, dict):
                raise gdoc.error("", "must be a mapping")
            gdoc.only(g, {"group_id", "stig_id", "severity", "title"})
            gid = gdoc.text(g, "group_id")
            if not GROUP_ID.match(gid):
                raise gdoc.error("group_id", f"{gid!r} is not a V- group id")
            stig_id = g.get("stig_id")
            if stig_id is not None and (not isinstance(stig_id, str) or not STIG_ID.match(stig_id)):
                raise gdoc.error("stig_id", f"{stig_id!r} is not a STIG id")
            sev = g.get("severity")
            if sev is not None and sev not in SEVERITIES:
                raise gdoc.error("severity", f"must be one of {SEVERITIES}")
            groups.append(Group(gid, gdoc.text(g, "title"), stig_id, sev))
        out.append(
            Benchmark(
                id=bid,
                name=bdoc.text(b, "name"),
                display_name=bdoc.text(b, "display_name"),
                stig_id=bdoc.text(b, "stig_id"),
                release_info=bdoc.text(b, "release_info"),
                groups=tuple(groups),
            )
        )
    return out


def _parse_rule(doc: _Doc, raw: Any, benchmarks: Mapping[str, Benchmark]) -> Rule:
    if not isinstance(raw, dict):
        raise doc.error("", "a rule must be a mapping")
    doc.only(raw, {"id", "title", "severity", "references", "discussion", "check", "fix"})
    rid = doc.text(raw, "id")
    if not RULE_ID.match(rid):
        raise doc.error("id", f"{rid!r} must look like AG-AREA-NAME (capitals, digits, dashes)")
    doc = _Doc(doc.source, rid)
    severity = raw.get("severity")
    if severity not in SEVERITIES:
        raise doc.error("severity", f"must be one of {', '.join(SEVERITIES)}")
    check_raw = raw.get("check")
    if not isinstance(check_raw, dict):
        raise doc.error("check", "must be a mapping: {select, assert} or {manual: reason}")
    check: Check | ManualCheck
    if "manual" in check_raw:
        doc.only(check_raw, {"manual"}, "check")
        reason = check_raw["manual"]
        if not isinstance(reason, str) or len(reason.strip()) < 10:
            raise doc.error("check.manual", "must say why no tool can decide this rule")
        check = ManualCheck(" ".join(reason.split()))
    else:
        doc.only(check_raw, {"select", "where", "assert", "not_applicable"}, "check")
        select = check_raw.get("select")
        if select not in SELECTORS:
            raise doc.error("check.select", f"must be one of {', '.join(SELECTORS)}")
        if "assert" not in check_raw:
            raise doc.error("check.assert", "is required")
        where = check_raw.get("where")
        na = check_raw.get("not_applicable")
        if na is not None and not isinstance(na, str):
            raise doc.error("check.not_applicable", "must be a string")
        check = Check(
            select=select,
            assertion=_parse_condition(doc, check_raw["assert"], "check.assert"),
            where=_parse_condition(doc, where, "check.where") if where is not None else None,
            not_applicable=" ".join(na.split()) if na else None,
        )
    return Rule(
        id=rid,
        title=doc.text(raw, "title"),
        severity=severity,
        references=_parse_references(doc, raw.get("references"), benchmarks),
        discussion=doc.text(raw, "discussion"),
        check=check,
        fix=doc.text(raw, "fix"),
        source=doc.source,
    )


def parse_catalog(documents: Sequence[tuple[str, str]]) -> Catalog:
    """Parses rule files given as ``(name, text)``: benchmarks first (any file), then rules.

    A rule id defined twice, a reference to a group the catalog does not know, or an unknown
    field is an error naming the file: a silently ignored rule is a check that never runs.
    """
    parsed: list[tuple[str, dict[str, Any]]] = []
    for name, text in documents:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InvalidInputError(f"{name}: not valid YAML: {exc}", hint="see docs/policies.md") from None
        if data is None:
            continue
        doc = _Doc(name, "(top)")
        if not isinstance(data, dict):
            raise doc.error("", "a policy file is a mapping with rules: and/or benchmarks:")
        doc.only(data, {"rules", "benchmarks"})
        parsed.append((name, data))
    benchmarks: dict[str, Benchmark] = {}
    for name, data in parsed:
        if "benchmarks" in data:
            for bench in _parse_benchmarks(_Doc(name, "(top)"), data["benchmarks"]):
                if bench.id in benchmarks:
                    raise InvalidInputError(f"{name}: benchmark {bench.id} is defined twice")
                benchmarks[bench.id] = bench
    rules: dict[str, Rule] = {}
    for name, data in parsed:
        raw_rules = data.get("rules") or []
        if not isinstance(raw_rules, list):
            raise _Doc(name, "(top)").error("rules", "must be a list")
        for i, raw in enumerate(raw_rules):
            rule = _parse_rule(_Doc(name, f"rules[{i}]"), raw, benchmarks)
            if rule.id in rules:
                raise InvalidInputError(
                    f"{name}: rule {rule.id} is already defined in {rules[rule.id].source}",
                    hint="rule ids are unique; give a site rule its own id",
                )
            rules[rule.id] = rule
    return Catalog(tuple(benchmarks[k] for k in sorted(benchmarks)), tuple(rules[k] for k in sorted(rules)))


# --------------------------------------------------------------------------------------------
# What rules iterate over


@dataclass(frozen=True)
class ObjectRef:
    """The thing a finding is about: a Kubernetes object, the image, the bundle or the profile."""

    kind: str
    name: str
    namespace: str | None = None
    source: str | None = None

    def describe(self) -> str:
        name = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {name}" + (f" ({self.source})" if self.source else "")


@dataclass(frozen=True)
class Item:
    """One selected thing: the root the rule's paths are read from, and how to name its fields.

    ``anchors`` map an item path prefix (``container``) to where it lives in the real object
    (``spec.template.spec.containers[0]``), so a finding names the field a reviewer must edit. A
    target ending in ``!`` is a derived value (``image_ref.*`` is computed from ``image``): every
    path under its prefix names that one field.
    """

    root: Mapping[str, Any]
    ref: ObjectRef
    anchors: tuple[tuple[PathTokens, str], ...] = ()
    sources: Mapping[str, str] | None = None

    def locate(self, path: PathTokens) -> str:
        best: tuple[PathTokens, str] | None = None
        for prefix, target in self.anchors:
            if path[: len(prefix)] == prefix and (best is None or len(prefix) > len(best[0])):
                best = (prefix, target)
        if best is None:
            return format_path(path)
        if best[1].endswith("!"):  # a derived value: every path under it names that one field
            return best[1][:-1]
        return format_path(path[len(best[0]) :], best[1])

    def ref_for(self, path: PathTokens) -> ObjectRef:
        if self.sources and path and isinstance(path[0], str) and path[0] in self.sources:
            return replace(self.ref, source=self.sources[path[0]])
        return self.ref


@dataclass(frozen=True)
class _Manifest:
    obj: Mapping[str, Any]
    source: str | None
    kind: str
    name: str
    namespace: str | None  # effective: "default" for a namespaced object without one
    namespaced: bool


def _manifests(facts: Mapping[str, Any]) -> list[_Manifest]:
    out: list[_Manifest] = []

    def add(obj: Any, source: str | None) -> None:
        if not isinstance(obj, dict):
            return
        kind = obj.get("kind")
        kind = kind if isinstance(kind, str) else "(no kind)"
        if kind == "List" or (kind.endswith("List") and isinstance(obj.get("items"), list)):
            for item in obj.get("items") or []:
                add(item, source)
            return
        meta = mapping_of(obj.get("metadata"))
        name = meta.get("name") or meta.get("generateName") or "(unnamed)"
        namespaced = kind not in CLUSTER_SCOPED
        ns = meta.get("namespace") if namespaced else None
        if namespaced and not ns:
            ns = "default"
        out.append(_Manifest(obj, source, kind, str(name), str(ns) if ns else None, namespaced))

    for entry in facts.get("manifests") or []:
        if isinstance(entry, dict) and "object" in entry:
            add(entry["object"], entry.get("source"))
        else:
            add(entry, None)
    return out


def _ref(m: _Manifest) -> ObjectRef:
    return ObjectRef(m.kind, m.name, m.namespace, m.source)


def _object_items(manifests: list[_Manifest]) -> list[Item]:
    return [
        Item(
            root={
                "object": m.obj,
                "kind": m.kind,
                "name": m.name,
                "namespace": m.namespace,
                "namespaced": m.namespaced,
            },
            ref=_ref(m),
            anchors=((("object",), ""), (("namespace",), "metadata.namespace"), (("name",), "metadata.name")),
        )
        for m in manifests
    ]


def _pod_specs(
    manifests: list[_Manifest],
) -> list[tuple[_Manifest, dict[str, Any], dict[str, Any], str, str]]:
    out = []
    for m in manifests:
        paths = POD_SPEC_PATHS.get(m.kind)
        if paths is None:
            continue
        spec = lookup(m.obj, paths[0])
        if not isinstance(spec, dict):
            continue
        meta = lookup(m.obj, paths[1])
        out.append((m, spec, mapping_of(meta), format_path(paths[0]), format_path(paths[1])))
    return out


def parse_image_reference(ref: str) -> tuple[str, str | None, str | None]:
    """``(repository, tag, digest)`` with Docker Hub short names spelled out, for comparison."""
    digest = None
    if "@" in ref:
        ref, digest = ref.split("@", 1)
    tag = None
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        ref, tag = ref.rsplit(":", 1)
    parts = ref.split("/")
    if len(parts) == 1:
        ref = f"docker.io/library/{ref}"
    elif not ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        ref = f"docker.io/{ref}"
    return ref, tag, digest


def _pod_items(manifests: list[_Manifest]) -> list[Item]:
    items = []
    for m, spec, meta, spec_path, meta_path in _pod_specs(manifests):
        items.append(
            Item(
                root={
                    "object": m.obj,
                    "kind": m.kind,
                    "name": m.name,
                    "namespace": m.namespace,
                    "pod": spec,
                    "pod_metadata": meta,
                },
                ref=_ref(m),
                anchors=(
                    (("object",), ""),
                    (("namespace",), "metadata.namespace"),
                    (("pod",), spec_path),
                    (("pod_metadata",), meta_path),
                ),
            )
        )
    return items


def _container_items(manifests: list[_Manifest]) -> list[Item]:
    pods = _pod_specs(manifests)
    versions: dict[str, set[str]] = defaultdict(set)
    for _, spec, _, _, _ in pods:
        for ctype in CONTAINER_TYPES:
            for c in spec.get(ctype) or []:
                if isinstance(c, dict) and isinstance(c.get("image"), str):
                    repo, tag, digest = parse_image_reference(c["image"])
                    versions[repo].add(digest or tag or "latest")
    items = []
    for m, spec, meta, spec_path, meta_path in pods:
        pod_sc = mapping_of(spec.get("securityContext"))
        annotations = mapping_of(meta.get("annotations"))
        for ctype in CONTAINER_TYPES:
            containers = spec.get(ctype)
            if not isinstance(containers, list):
                continue
            for i, c in enumerate(containers):
                if not isinstance(c, dict):
                    continue
                cpath = f"{spec_path}.{ctype}[{i}]"
                sc = mapping_of(c.get("securityContext"))
                effective: dict[str, Any] = {}
                anchors: list[tuple[PathTokens, str]] = [
                    (("object",), ""),
                    (("namespace",), "metadata.namespace"),
                    (("pod",), spec_path),
                    (("pod_metadata",), meta_path),
                    (("container",), cpath),
                    (("image_ref",), f"{cpath}.image!"),
                ]
                for key in INHERITED_SECURITY:
                    if sc.get(key) is not None:
                        effective[key] = sc[key]
                        anchors.append((("effective", key), f"{cpath}.securityContext.{key}"))
                    elif pod_sc.get(key) is not None:
                        effective[key] = pod_sc[key]
                        anchors.append((("effective", key), f"{spec_path}.securityContext.{key}"))
                    else:
                        anchors.append((("effective", key), f"{cpath}.securityContext.{key}"))
                name = str(c.get("name", f"#{i}"))
                annotation_key = APPARMOR_ANNOTATION + name
                anchors.append(
                    (("apparmor_annotation",), format_path(("annotations", annotation_key), meta_path))
                )
                image = c.get("image") if isinstance(c.get("image"), str) else None
                image_ref: dict[str, Any] | None = None
                if image:
                    repo, tag, digest = parse_image_reference(image)
                    image_ref = {
                        "reference": image,
                        "repository": repo,
                        "tag": tag,
                        "digest": digest,
                        "versions_in_bundle": len(versions[repo]),
                        "all_versions": sorted(versions[repo]),
                    }
                root = {
                    "object": m.obj,
                    "kind": m.kind,
                    "name": m.name,
                    "namespace": m.namespace,
                    "pod": spec,
                    "pod_metadata": meta,
                    "container": c,
                    "container_type": ctype,
                    "container_name": name,
                    "effective": effective,
                    "apparmor_annotation": annotations.get(annotation_key),
                    "image_ref": image_ref,
                }
                items.append(Item(root=root, ref=_ref(m), anchors=tuple(anchors)))
    return items


def _denies_by_default(policy: Mapping[str, Any], direction: str) -> bool:
    """A NetworkPolicy selecting every pod that names ``direction`` and allows nothing wide open."""
    spec = mapping_of(policy.get("spec"))
    if spec.get("podSelector") not in ({}, None) and spec.get("podSelector") != {"matchLabels": {}}:
        return False
    types = spec.get("policyTypes") or (["Ingress"] if direction == "Ingress" else [])
    if direction not in types:
        return False
    rules = spec.get(direction.lower()) or []
    return isinstance(rules, list) and all(isinstance(r, dict) and r for r in rules)


def _namespace_items(manifests: list[_Manifest]) -> list[Item]:
    declared = {m.name: m for m in manifests if m.kind == "Namespace"}
    used: dict[str, int] = defaultdict(int)
    for m in manifests:
        if m.namespace:
            used.setdefault(m.namespace, 0)
    for m, *_ in _pod_specs(manifests):
        if m.namespace:
            used[m.namespace] += 1
    items = []
    for ns in sorted(set(declared) | set(used)):
        decl = declared.get(ns)
        obj = decl.obj if decl else {}
        meta = mapping_of(obj.get("metadata"))
        labels = mapping_of(meta.get("labels"))
        policies = [m.obj for m in manifests if m.kind == "NetworkPolicy" and m.namespace == ns]
        root = {
            "name": ns,
            "declared": decl is not None,
            "object": obj,
            "labels": labels,
            "workloads": used.get(ns, 0),
            "default_deny": {
                "ingress": any(_denies_by_default(p, "Ingress") for p in policies),
                "egress": any(_denies_by_default(p, "Egress") for p in policies),
            },
        }
        source = decl.source if decl else None
        items.append(
            Item(
                root=root,
                ref=ObjectRef("Namespace", ns, None, source if decl else "not created by the bundle"),
                anchors=((("object",), ""), (("labels",), "metadata.labels")),
            )
        )
    return items


def select(selector: str, facts: Mapping[str, Any]) -> list[Item]:
    """The items a selector yields for these facts (empty: the rule is not applicable)."""
    sources = mapping_of(facts.get("sources"))
    project = mapping_of(facts.get("project"))
    bundle_name = f"{project.get('name', '(unnamed)')}@{project.get('version', '?')}"
    if selector == "bundle":
        return [Item(root=facts, ref=ObjectRef("Bundle", bundle_name), sources=sources)]
    if selector == "image":
        image = facts.get("image")
        if not isinstance(image, dict):
            return []
        ref = ObjectRef(
            "Image", str(image.get("ref") or image.get("id") or "(model image)"), source=sources.get("image")
        )
        return [Item(root=facts, ref=ref, sources=sources)]
    if selector == "profile":
        profile = facts.get("profile")
        if not isinstance(profile, dict):
            return []
        host = mapping_of(profile.get("host"))
        ref = ObjectRef(
            "TargetProfile", str(host.get("hostname") or "(target)"), source=sources.get("profile")
        )
        return [Item(root=facts, ref=ref, sources=sources)]
    manifests = _manifests(facts)
    if selector == "objects":
        return _object_items(manifests)
    if selector == "pod_specs":
        return _pod_items(manifests)
    if selector == "containers":
        return _container_items(manifests)
    if selector == "namespaces":
        return _namespace_items(manifests)
    raise AssertionError(selector)  # pragma: no cover - the parser only admits known selectors


# --------------------------------------------------------------------------------------------
# Evaluation


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
    rule: Rule
    status: str  # after waivers
    automated_status: str  # what the check itself said
    findings: tuple[Finding, ...]
    reason: str
    checked: int = 0
    waiver: Waiver | None = None

    @property
    def waived(self) -> bool:
        return self.waiver is not None and self.automated_status == "open" and self.status == "not_a_finding"


@dataclass(frozen=True)
class Evaluation:
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
        return bool(self.blocking(fail_on))

    def counts(self) -> dict[str, dict[str, int]]:
        """``{status: {severity: n}}`` with every status and severity present (zeros included)."""
        out = {s: dict.fromkeys(SEVERITIES, 0) for s in STATUSES}
        for r in self.results:
            out[r.status][r.rule.severity] += 1
        return out

    def result(self, rule_id: str) -> RuleResult:
        for r in self.results:
            if r.rule.id == rule_id:
                return r
        raise KeyError(rule_id)


def evaluate_rule(rule: Rule, facts: Mapping[str, Any]) -> RuleResult:
    if isinstance(rule.check, ManualCheck):
        return RuleResult(rule, "not_reviewed", "not_reviewed", (), rule.check.reason)
    check = rule.check
    items = select(check.select, facts)
    if check.where is not None:
        where = check.where
        items = [i for i in items if evaluate_condition(where, i.root).holds]
    if not items:
        reason = check.not_applicable or f"nothing to check: the bundle has no {_EMPTY[check.select]}"
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


_EMPTY = {
    "objects": "Kubernetes manifests",
    "pod_specs": "workloads (pod specs)",
    "containers": "containers",
    "namespaces": "namespaces",
    "image": "model image facts",
    "bundle": "facts",
    "profile": "target profile (pass one with --profile to check the target)",
}


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
