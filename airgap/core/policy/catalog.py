"""The rule catalog: benchmarks, rules and the parser of ``policies/*.yaml``.

Rules are data so that an assessor can read exactly what was checked and a site can add its own
without touching airgap (docs/policies.md is the format reference). The parser is strict — an
unknown field, an unknown operator, a rule id defined twice or a reference to a STIG group the
catalog does not list is an error naming the file and the rule — because a typo that is silently
ignored is a check that never runs, and an id airgap cannot back is a claim it cannot make.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from airgap.core.policy.conditions import OPERATORS, AllOf, AnyOf, Condition, Leaf, NotOf, describe, is_number
from airgap.core.policy.paths import WILDCARD, parse_path
from airgap.core.policy.selectors import SELECTORS
from airgap.core.severity import SEVERITIES as SEVERITIES
from airgap.errors import InvalidInputError

SEVERITY_RANK = {"high": 3, "medium": 2, "low": 1}
RULE_ID = re.compile(r"^AG-[A-Z0-9]+(-[A-Z0-9]+)*$")
GROUP_ID = re.compile(r"^V-[0-9]{5,6}$")
STIG_ID = re.compile(r"^[A-Z0-9]+(-[A-Z0-9]+)+$")
NIST_CONTROL = re.compile(r"^[A-Z]{2}-[0-9]{1,2}(\([0-9]{1,2}\))?$")
CCI = re.compile(r"^CCI-[0-9]{6}$")
BENCHMARK_ID = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Group:
    """One rule of an external benchmark (a STIG or SRG group), as airgap references it."""

    group_id: str
    title: str
    stig_id: str | None = None
    severity: str | None = None
    ccis: tuple[str, ...] = ()  # the CCIs DISA lists for the group


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
        """The catalog's entry for a V- id, or None: a rule may cite only groups listed here."""
        return next((g for g in self.groups if g.group_id == group_id), None)


@dataclass(frozen=True)
class Reference:
    """A rule's citation of one benchmark group, with the STIG id the catalog gives it."""

    benchmark: str
    group_id: str
    stig_id: str | None = None


@dataclass(frozen=True)
class References:
    """Everything a rule cites, in file order: benchmark groups, NIST 800-53 controls, CCIs."""

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
    """One parsed rule: its identity and references, its check, and the fix every finding carries."""

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
        """Whether a person must decide it (it is then never reported as passed)."""
        return isinstance(self.check, ManualCheck)

    def check_text(self) -> str:
        """What the rule checks, in words: the checklist's check content."""
        if isinstance(self.check, ManualCheck):
            return f"Manual review: {self.check.reason}"
        text = f"For {SELECTORS[self.check.select].noun}"
        if self.check.where is not None:
            text += f" where {describe(self.check.where)}"
        return f"{text}: {describe(self.check.assertion)}."


@dataclass(frozen=True)
class Catalog:
    """Every benchmark and rule read from the policy directories, each sorted by id."""

    benchmarks: tuple[Benchmark, ...]
    rules: tuple[Rule, ...]

    def rule(self, rule_id: str) -> Rule | None:
        """The rule with this id, or None (waivers are checked against it)."""
        return next((r for r in self.rules if r.id == rule_id), None)

    def benchmark(self, benchmark_id: str) -> Benchmark | None:
        """The benchmark with this id, or None (the checklist groups rules by it)."""
        return next((b for b in self.benchmarks if b.id == benchmark_id), None)


class _Doc:
    """Field access on one YAML document that names file and field in every error."""

    def __init__(self, source: str, where: str) -> None:
        self.source = source
        self.where = where

    def error(self, field: str, problem: str) -> InvalidInputError:
        """The one-line error for a bad field, naming the file and the rule it is in."""
        place = f"{self.where}.{field}" if field else self.where
        return InvalidInputError(
            f"{self.source}: {place}: {problem}", hint="see docs/policies.md for the rule format"
        )

    def text(self, data: Mapping[str, Any], key: str, required: bool = True) -> str:
        """A required non-empty string field; titles are folded to one line."""
        value = data.get(key)
        if value is None and not required:
            return ""
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, "must be a non-empty string")
        return " ".join(value.split()) if key in ("title",) else value.strip()

    def only(self, data: Mapping[str, Any], allowed: set[str], where: str = "") -> None:
        """Refuses unknown keys: a misspelt field would otherwise be a check that never runs."""
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
    unknown = sorted(set(raw) - {"path", "missing", "quantifier", "message", "redact", *OPERATORS})
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
    if op in ("gte", "lte") and not is_number(operand):
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
    redact = raw.get("redact", False)
    if not isinstance(redact, bool):
        raise doc.error(f"{where}.redact", "must be true or false")
    return Leaf(path, tokens, op, operand, missing == "pass", quantifier, message, redact)


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
            gdoc.only(g, {"group_id", "stig_id", "severity", "title", "ccis"})
            gid = gdoc.text(g, "group_id")
            if not GROUP_ID.match(gid):
                raise gdoc.error("group_id", f"{gid!r} is not a V- group id")
            stig_id = g.get("stig_id")
            if stig_id is not None and (not isinstance(stig_id, str) or not STIG_ID.match(stig_id)):
                raise gdoc.error("stig_id", f"{stig_id!r} is not a STIG id")
            sev = g.get("severity")
            if sev is not None and sev not in SEVERITIES:
                raise gdoc.error("severity", f"must be one of {SEVERITIES}")
            ccis = g.get("ccis") or []
            if not isinstance(ccis, list) or not all(isinstance(c, str) and CCI.match(c) for c in ccis):
                raise gdoc.error("ccis", "must be a list of CCI-000000 identifiers")
            groups.append(Group(gid, gdoc.text(g, "title"), stig_id, sev, tuple(ccis)))
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
        if not isinstance(select, str) or select not in SELECTORS:
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
