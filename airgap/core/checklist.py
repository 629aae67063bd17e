"""The three renderings of a policy evaluation: results.json, checklist.md and checklist.cklb.

- ``results.json`` is for pipelines: every rule, every finding, stable ordering.
- ``checklist.md`` is for the engineer and the reviewer: counts first, then what is open and how
  to fix it, then what was waived and why, then what a person still has to review.
- ``checklist.cklb`` is for the assessor: a STIG Viewer 3 checklist (DISA's JSON schema, nothing
  but its fields). It is organised the way an assessor reads a STIG — one entry per STIG/SRG
  group (V-number), its status aggregated from every airgap rule that evaluates it, the rules and
  their findings in the finding details — plus an "airgap" benchmark for airgap's own rules.

All three are pure functions of the evaluation and a context whose timestamp is passed in: the
same inputs give the same bytes (UUIDs are uuid5 of rule and benchmark ids, never random).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from airgap.core.policy import (
    SEVERITY_RANK,
    STATUSES,
    Benchmark,
    Evaluation,
    Finding,
    Group,
    RuleResult,
)

# uuid5(NAMESPACE_URL, "https://github.com/airgap/airgap#checklist"): every UUID in a checklist is
# derived from it and a rule, benchmark or bundle id, so a re-run produces the same file.
CHECKLIST_NAMESPACE = uuid.UUID("5b6644fa-299c-5105-921f-620f20585222")
RESULTS_FORMAT = "airgap.check-results/v1"
AIRGAP_BENCHMARK = Benchmark(
    id="airgap",
    name="airgap bundle checks: supply chain, cluster hardening and target fit",
    display_name="airgap bundle checks",
    stig_id="airgap",
    release_info="Rules of this airgap release that map to no STIG or SRG group",
    groups=(),
)
# How the statuses of several airgap rules combine into one STIG group's status: any open
# finding makes the group open; otherwise anything left to a person makes it not reviewed; a
# group is not applicable only when none of its rules applied.
_AGGREGATE_ORDER = ("open", "not_reviewed", "not_a_finding", "not_applicable")
_STATUS_TITLES = {
    "open": "Open",
    "not_reviewed": "Not reviewed (manual)",
    "not_a_finding": "Not a finding",
    "not_applicable": "Not applicable",
}


@dataclass(frozen=True)
class ChecklistContext:
    """What the renderings say about the subject; the clock is read by the caller, never here."""

    name: str
    version: str
    evaluated_at: datetime
    tool: str
    fail_on: str = "high"
    target_host: str = ""

    @property
    def timestamp(self) -> str:
        """The evaluation instant in the one spelling all three renderings use (UTC, whole seconds, ``Z``); a
        naive datetime is taken as UTC rather than as local time, so output does not depend on the
        machine's zone."""
        ts = self.evaluated_at
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=timezone.utc)
        return ts.astimezone(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(CHECKLIST_NAMESPACE, "/".join(parts)))


def _finding_json(f: Finding) -> dict[str, Any]:
    return {
        "object": {
            "kind": f.object.kind,
            "namespace": f.object.namespace,
            "name": f.object.name,
            "source": f.object.source,
        },
        "field": f.field,
        "message": f.message,
        "fix": f.fix,
    }


def _references_json(r: RuleResult) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for ref in r.rule.references.benchmarks:
        entry: dict[str, Any] = {"group_id": ref.group_id}
        if ref.stig_id:
            entry["stig_id"] = ref.stig_id
        out.setdefault(ref.benchmark, []).append(entry)
    out["nist_800_53"] = list(r.rule.references.nist)
    out["cci"] = list(r.rule.references.cci)
    return out


def results_document(evaluation: Evaluation, ctx: ChecklistContext) -> dict[str, Any]:
    """The machine-readable results (the content of results.json)."""
    counts = evaluation.counts()
    summary = {s: {**counts[s], "total": sum(counts[s].values())} for s in STATUSES}
    blocking = evaluation.blocking(ctx.fail_on)
    return {
        "format": RESULTS_FORMAT,
        "tool": ctx.tool,
        "evaluated_at": ctx.timestamp,
        "subject": {"name": ctx.name, "version": ctx.version, "target_host": ctx.target_host or None},
        "fail_on": ctx.fail_on,
        "failed": bool(blocking),
        "blocking": [r.rule.id for r in blocking],
        "summary": summary,
        "unused_waivers": [
            {"rule": w.rule, "justification": w.justification} for w in evaluation.unused_waivers
        ],
        "rules": [
            {
                "id": r.rule.id,
                "title": r.rule.title,
                "severity": r.rule.severity,
                "status": r.status,
                "automated_status": r.automated_status,
                "reason": r.reason,
                "checked": r.checked,
                "manual": r.rule.manual,
                "references": _references_json(r),
                "waiver": {"justification": r.waiver.justification} if r.waived and r.waiver else None,
                "findings": [_finding_json(f) for f in r.findings],
                "source": r.rule.source,
            }
            for r in evaluation.results
        ],
    }


def render_results_json(evaluation: Evaluation, ctx: ChecklistContext) -> bytes:
    """results.json as bytes: indented, keys sorted and newline-terminated, so re-running on the same inputs
    gives identical bytes that can be signed and diffed."""
    return (json.dumps(results_document(evaluation, ctx), indent=2, sort_keys=True) + "\n").encode()


# ---------------------------------------------------------------------------------------- markdown


def _md(text: str) -> str:
    """Text safe inside a table cell or a list item (no stray pipes, no line breaks)."""
    return " ".join(text.split()).replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{text}`" if "`" not in text else f"``{text}``"


def _refs_md(r: RuleResult, benchmarks: Mapping[str, Benchmark]) -> str:
    parts = []
    for ref in r.rule.references.benchmarks:
        bench = benchmarks.get(ref.benchmark)
        label = bench.display_name if bench else ref.benchmark
        parts.append(f"{label} {ref.group_id}" + (f" ({ref.stig_id})" if ref.stig_id else ""))
    if r.rule.references.nist:
        parts.append("NIST 800-53 " + ", ".join(r.rule.references.nist))
    if r.rule.references.cci:
        parts.append(", ".join(r.rule.references.cci))
    return "; ".join(parts) or "airgap rule (no external reference)"


def render_markdown(
    evaluation: Evaluation, ctx: ChecklistContext, benchmarks: Sequence[Benchmark] = ()
) -> bytes:
    """checklist.md: the verdict at ``--fail-on`` first, then counts, then rules grouped open, waived, not
    reviewed, passed, not applicable (highest severity first), with the fix shown for open, unreviewed and
    waived rules: the ones a person still has to act on or answer for."""
    by_id = {b.id: b for b in benchmarks}
    counts = evaluation.counts()
    blocking = evaluation.blocking(ctx.fail_on)
    lines = [
        f"# Compliance checklist: {ctx.name} {ctx.version}",
        "",
        f"Evaluated {ctx.timestamp} by {ctx.tool} against {len(evaluation.results)} rules"
        + (f", for target {_md(ctx.target_host)}" if ctx.target_host else "")
        + ".",
        "",
        f"**Result: {'FAIL' if blocking else 'PASS'}** at `--fail-on {ctx.fail_on}`: "
        + (
            f"{len(blocking)} open rule(s) at or above {ctx.fail_on}: "
            + ", ".join(r.rule.id for r in blocking)
            + "."
            if blocking
            else f"no open rule at or above {ctx.fail_on}."
        ),
        "",
        "## Summary",
        "",
        "| status | high | medium | low | total |",
        "|---|---:|---:|---:|---:|",
    ]
    for status in STATUSES:
        row = counts[status]
        lines.append(f"| {status} | {row['high']} | {row['medium']} | {row['low']} | {sum(row.values())} |")
    waived = [r for r in evaluation.results if r.waived]
    lines += [
        "",
        f"{len(waived)} rule(s) waived (counted as not_a_finding, listed below with the justification).",
    ]
    if evaluation.unused_waivers:
        lines.append(
            "Waivers for rules that are not open (kept for the record, not applied): "
            + ", ".join(w.rule for w in evaluation.unused_waivers)
            + "."
        )

    def ordered(rs: Sequence[RuleResult]) -> list[RuleResult]:
        return sorted(rs, key=lambda r: (-SEVERITY_RANK[r.rule.severity], r.rule.id))

    sections: list[tuple[str, list[RuleResult]]] = [
        ("Open", [r for r in evaluation.results if r.status == "open"]),
        ("Waived (not a finding by override)", waived),
        ("Not reviewed (manual)", [r for r in evaluation.results if r.status == "not_reviewed"]),
        ("Not a finding", [r for r in evaluation.results if r.status == "not_a_finding" and not r.waived]),
        ("Not applicable", [r for r in evaluation.results if r.status == "not_applicable"]),
    ]
    for title, rs in sections:
        lines += ["", f"## {title} ({len(rs)})"]
        for r in ordered(rs):
            lines += [
                "",
                f"### {r.rule.id} — {_md(r.rule.title)}",
                "",
                f"- Severity: {r.rule.severity}; status: **{r.status}**"
                + (f" (automated result: {r.automated_status})" if r.automated_status != r.status else ""),
                f"- References: {_md(_refs_md(r, by_id))}",
                f"- Result: {_md(r.reason)}",
            ]
            if r.waived and r.waiver is not None:
                lines.append(f"- Override (waiver): {_md(r.waiver.justification)}")
            if r.findings:
                lines += ["", "| object | field | what is wrong |", "|---|---|---|"]
                for f in r.findings:
                    lines.append(f"| {_md(f.object.describe())} | {_code(_md(f.field))} | {_md(f.message)} |")
            if r.status in ("open", "not_reviewed") or r.waived:
                lines += ["", f"Fix: {_md(r.rule.fix)}"]
    return ("\n".join(lines) + "\n").encode()


# ---------------------------------------------------------------------------------------- cklb


def _finding_details(results: Sequence[RuleResult]) -> str:
    out = []
    for r in results:
        head = f"[{r.status}] {r.rule.id}: {r.rule.title} — {r.reason}"
        if r.waived:
            head += f" (automated result open, waived: {r.waiver.justification if r.waiver else ''})"
        out.append(head)
        for f in r.findings:
            out.append(f"  - {f.object.describe()}: {f.field}: {f.message}")
    return "\n".join(out)


def _aggregate(statuses: Sequence[str]) -> str:
    return next(s for s in _AGGREGATE_ORDER if s in statuses)


def _cklb_rule(
    bench: Benchmark,
    stig_uuid: str,
    group: Group,
    results: Sequence[RuleResult],
    ctx: ChecklistContext,
) -> dict[str, Any]:
    status = _aggregate([r.status for r in results])
    severity = group.severity or max((r.rule.severity for r in results), key=lambda s: SEVERITY_RANK[s])
    waived = [r for r in results if r.waived]
    overrides: dict[str, Any] = {}
    if waived and status == "not_a_finding" and _aggregate([r.automated_status for r in results]) == "open":
        # The group passes only because of waivers: STIG Viewer keeps the reason as an override.
        overrides["status"] = {
            "status": "not_a_finding",
            "reason": " ".join(f"{r.rule.id}: {r.waiver.justification}" for r in waived if r.waiver),
        }
    comments = (
        f"Evaluated by {ctx.tool} on {ctx.timestamp} through "
        + ", ".join(f"{r.rule.id} ({r.status})" for r in results)
        + "."
    )
    for r in waived:
        if r.waiver is not None:
            comments += f" Waived {r.rule.id}: {r.waiver.justification}"
    return {
        "uuid": _uuid("rule", bench.id, group.group_id),
        "stig_uuid": stig_uuid,
        "target_key": None,
        "stig_ref": None,
        "group_id": group.group_id,
        "group_id_src": group.group_id,
        "rule_id": group.group_id if bench.id == AIRGAP_BENCHMARK.id else "",
        "rule_id_src": group.group_id if bench.id == AIRGAP_BENCHMARK.id else "",
        "weight": "10.0",
        "classification": "Unclassified",
        "severity": severity,
        "rule_version": group.stig_id or "",
        "rule_title": group.title,
        "group_title": group.title,
        "fix_text": "\n\n".join(f"{r.rule.id}: {r.rule.fix}" for r in results),
        "discussion": "\n\n".join(f"{r.rule.id}: {r.rule.discussion}" for r in results),
        "check_content": "\n\n".join(f"{r.rule.id}: {r.rule.check_text()}" for r in results),
        "false_positives": "",
        "false_negatives": "",
        "documentable": "false",
        "mitigations": "",
        "potential_impacts": "",
        "third_party_tools": "",
        "mitigation_control": "",
        "responsibility": "",
        "security_override_guidance": "",
        "ia_controls": "",
        "check_content_ref": None,
        "legacy_ids": [],
        "ccis": sorted(set(group.ccis) or {c for r in results for c in r.rule.references.cci}),
        "group_tree": [{"id": group.group_id, "title": group.title, "description": ""}],
        "status": status,
        "overrides": overrides,
        "comments": comments,
        "finding_details": _finding_details(results),
    }


def cklb_document(
    evaluation: Evaluation, ctx: ChecklistContext, benchmarks: Sequence[Benchmark]
) -> dict[str, Any]:
    """The STIG Viewer 3 checklist as a dict (only fields of DISA's schema)."""
    stigs = []
    for bench in [*sorted(benchmarks, key=lambda b: b.id), AIRGAP_BENCHMARK]:
        stig_uuid = _uuid("stig", bench.id)
        rules = []
        if bench.id == AIRGAP_BENCHMARK.id:
            for r in evaluation.results:
                if not r.rule.references.benchmarks:
                    group = Group(r.rule.id, r.rule.title, r.rule.id, r.rule.severity)
                    rules.append(_cklb_rule(bench, stig_uuid, group, [r], ctx))
        else:
            for group in sorted(bench.groups, key=lambda g: g.group_id):
                contributing = [
                    r
                    for r in evaluation.results
                    if any(
                        ref.benchmark == bench.id and ref.group_id == group.group_id
                        for ref in r.rule.references.benchmarks
                    )
                ]
                if contributing:
                    rules.append(_cklb_rule(bench, stig_uuid, group, contributing, ctx))
        if not rules:
            continue
        stigs.append(
            {
                "stig_name": bench.name,
                "display_name": bench.display_name,
                "stig_id": bench.stig_id,
                "release_info": bench.release_info,
                "uuid": stig_uuid,
                "reference_identifier": None,
                "size": len(rules),
                "rules": rules,
            }
        )
    return {
        "title": f"{ctx.name}-{ctx.version} checklist",
        "id": _uuid("checklist", ctx.name, ctx.version),
        "cklb_version": "1.0",
        "active": False,
        "mode": 1,
        "has_path": True,
        "target_data": {
            "target_type": "Non-Computing",
            "host_name": ctx.target_host,
            "ip_address": "",
            "mac_address": "",
            "fqdn": "",
            "comments": f"Model bundle {ctx.name} {ctx.version}, evaluated by {ctx.tool} on {ctx.timestamp}",
            "role": "None",
            "is_web_database": False,
            "technology_area": "",
            "web_db_site": "",
            "web_db_instance": "",
        },
        "stigs": stigs,
    }


def render_cklb(evaluation: Evaluation, ctx: ChecklistContext, benchmarks: Sequence[Benchmark]) -> bytes:
    """checklist.cklb as bytes, serialized with sorted keys so the same evaluation gives the same file for the
    assessor and the signature."""
    return (json.dumps(cklb_document(evaluation, ctx, benchmarks), indent=2, sort_keys=True) + "\n").encode()


def render_all(
    evaluation: Evaluation, ctx: ChecklistContext, benchmarks: Sequence[Benchmark]
) -> dict[str, bytes]:
    """``{"results.json": ..., "checklist.md": ..., "checklist.cklb": ...}``."""
    return {
        "results.json": render_results_json(evaluation, ctx),
        "checklist.md": render_markdown(evaluation, ctx, benchmarks),
        "checklist.cklb": render_cklb(evaluation, ctx, benchmarks),
    }


__all__ = [
    "AIRGAP_BENCHMARK",
    "ChecklistContext",
    "cklb_document",
    "render_all",
    "render_cklb",
    "render_markdown",
    "render_results_json",
    "results_document",
]
