"""OSCAL documents of a policy evaluation: the model service's component definition and the
assessment results of ``airgap check``, with a Markdown summary for the ISSO.

An authorizing official's staff read evidence in NIST's Open Security Controls Assessment Language
(OSCAL 1.2): a *component definition* says which NIST SP 800-53 rev5 controls a component
implements and how; *assessment results* say what was checked, what was observed, and which
controls are satisfied. airgap's rules already cite their 800-53 controls (``policies/``), so
both documents are a mapping of the catalog and the evaluation, nothing more:

- one implemented requirement per 800-53 control the rules cite, naming every rule that
  implements it (automated rules) or that a person must review (manual rules);
- one observation per rule evaluated, with its outcome and findings;
- one finding per control, with the status the rules give it: any open rule makes it
  ``not-satisfied`` (reason ``fail``); a rule left to a person, or an open result accepted by a
  waiver, makes it ``not-satisfied`` (reason ``other``) with a remark that says so — a control
  is ``satisfied`` only when every rule that applied passed on its own. A control whose rules
  all found nothing to check gets no finding.

Pure: the evaluation and a context whose timestamp is passed in; UUIDs are uuid5 of stable names,
so the same inputs give the same bytes (bundles stay reproducible). The documents are plain JSON
built here, validated against NIST's OSCAL JSON schemas in the test suite (tests/data/oscal).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from airgap.core.checklist import ChecklistContext
from airgap.core.policy import Evaluation, Rule, RuleResult

OSCAL_VERSION = "1.2.1"
NS = "https://github.com/airgap/airgap/ns/oscal"
"""The namespace of airgap's own OSCAL properties (``rule-id``, ``severity``, ``cci`` ...)."""
CATALOG_800_53 = (
    "https://raw.githubusercontent.com/usnistgov/oscal-content/main/nist.gov/SP800-53/rev5/json/"
    "NIST_SP-800-53_rev5_catalog.json"
)
# uuid5(NAMESPACE_URL, "https://github.com/airgap/airgap#oscal"): every UUID of a document is derived
# from it and stable names (bundle, rule, control), so a re-run writes the same bytes.
OSCAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/airgap/airgap#oscal")
COMPONENT_FILE = "oscal-component-definition.json"
RESULTS_FILE = "oscal-assessment-results.json"
SUMMARY_FILE = "oscal-summary.md"
_CONTROL = re.compile(r"^([A-Z]{2})-([0-9]{1,2})(?:\(([0-9]{1,2})\))?$")


def oscal_uuid(*parts: str) -> str:
    """A UUID (version 5) of stable names: the same names give the same UUID in every run."""
    return str(uuid.uuid5(OSCAL_NAMESPACE, "/".join(parts)))


def control_id(nist: str) -> str:
    """``SI-7(6)`` as OSCAL's 800-53 catalog spells it: ``si-7.6``."""
    m = _CONTROL.match(nist)
    if m is None:
        raise ValueError(f"{nist!r} is not a NIST SP 800-53 control id")
    family, number, enhancement = m.groups()
    return f"{family.lower()}-{int(number)}" + (f".{int(enhancement)}" if enhancement else "")


def control_sort_key(cid: str) -> tuple[str, int, int]:
    """Catalog order: family, then control number, then enhancement (``ac-2`` before ``ac-10``)."""
    family, _, rest = cid.partition("-")
    number, _, enhancement = rest.partition(".")
    return family, int(number), int(enhancement or 0)


def control_label(cid: str) -> str:
    """``si-7.6`` as people write it: ``SI-7(6)``."""
    family, _, rest = cid.partition("-")
    number, _, enhancement = rest.partition(".")
    return f"{family.upper()}-{number}" + (f"({enhancement})" if enhancement else "")


def controls_of(rules: Iterable[Rule]) -> dict[str, list[Rule]]:
    """Every 800-53 control the rules cite, in catalog order, with the rules that cite it."""
    out: dict[str, list[Rule]] = {}
    for rule in rules:
        for nist in rule.references.nist:
            rules_of = out.setdefault(control_id(nist), [])
            if rule not in rules_of:
                rules_of.append(rule)
    return {cid: out[cid] for cid in sorted(out, key=control_sort_key)}


def prop(name: str, value: str, *, group: str | None = None, own: bool = True) -> dict[str, str]:
    """One OSCAL property; airgap's own are in airgap's namespace, OSCAL's core ones in none."""
    out = {"name": name, "value": value}
    if own:
        out["ns"] = NS
    if group:
        out["group"] = group
    return out


def metadata(title: str, ctx: ChecklistContext, remarks: str = "") -> dict[str, Any]:
    """The metadata every OSCAL document carries; ``version`` is the subject's, so two documents
    about the same bundle version say so."""
    out: dict[str, Any] = {
        "title": title,
        "last-modified": ctx.timestamp,
        "version": ctx.version,
        "oscal-version": OSCAL_VERSION,
        "props": [prop("tool", ctx.tool)],
    }
    if remarks:
        out["remarks"] = remarks
    return out


def _rule_props(rule: Rule) -> list[dict[str, str]]:
    props = [
        prop("rule-id", rule.id, group=rule.id),
        prop("rule-title", rule.title, group=rule.id),
        prop("severity", rule.severity, group=rule.id),
        prop("method", "manual" if rule.manual else "automated", group=rule.id),
    ]
    props += [prop("cci", c, group=rule.id) for c in rule.references.cci]
    props += [
        prop("stig-group", f"{ref.group_id}" + (f" {ref.stig_id}" if ref.stig_id else ""), group=rule.id)
        for ref in rule.references.benchmarks
    ]
    return props


def _service_component(ctx: ChecklistContext, rules: Sequence[Rule]) -> dict[str, Any]:
    controls = controls_of(rules)
    requirements = []
    for cid, rules_of in controls.items():
        automated = [r for r in rules_of if not r.manual]
        manual = [r for r in rules_of if r.manual]
        parts = []
        if automated:
            parts.append(
                "Checked on every bundle by airgap's rules: "
                + "; ".join(f"{r.id} ({r.title})" for r in automated)
                + "."
            )
        if manual:
            parts.append(
                "Left to the site, never reported as met by a tool: "
                + "; ".join(f"{r.id} ({r.title})" for r in manual)
                + "."
            )
        requirement: dict[str, Any] = {
            "uuid": oscal_uuid("component", ctx.name, "requirement", cid),
            "control-id": cid,
            "description": " ".join(parts),
            "props": [prop("rule-id", r.id) for r in rules_of],
        }
        if not automated:
            requirement["remarks"] = (
                "No automated check: the rules citing this control need a person's review "
                "(site documents and procedures)."
            )
        requirements.append(requirement)
    props = [prop("model-service", ctx.name), prop("model-service-version", ctx.version)]
    for rule in rules:
        props += _rule_props(rule)
    return {
        "uuid": service_uuid(ctx.name),
        "type": "service",
        "title": f"{ctx.name} model service",
        "description": (
            f"The model {ctx.name} {ctx.version} served by airgap's hardened model server from a "
            "signed bundle: its container image, Kubernetes manifests and supply chain, as airgap's "
            "rules (policies/) check them."
        ),
        "purpose": "Serve the bundled ML model inside an air-gapped network.",
        "props": props,
        "control-implementations": [
            {
                "uuid": oscal_uuid("component", ctx.name, "control-implementation"),
                "source": CATALOG_800_53,
                "description": (
                    "NIST SP 800-53 rev5 controls cited by airgap's rules, each with the rules that "
                    "implement or require it (rule details are the component's props, grouped by rule id)."
                ),
                "implemented-requirements": requirements,
            }
        ]
        if requirements
        else [],
    }


def service_uuid(name: str) -> str:
    """The model service component's UUID: the same in the component definition and every
    assessment result about it, so a reader can join them."""
    return oscal_uuid("component", name)


def tool_uuid() -> str:
    """The airgap tool as an assessment component (the actor of every observation)."""
    return oscal_uuid("tool", "airgap")


def component_definition(ctx: ChecklistContext, rules: Sequence[Rule]) -> dict[str, Any]:
    """The model service's component definition: every 800-53 control the rules cite."""
    component = _service_component(ctx, rules)
    if not component["control-implementations"]:
        del component["control-implementations"]
    return {
        "component-definition": {
            "uuid": oscal_uuid("component-definition", ctx.name, ctx.version),
            "metadata": metadata(f"Component definition: {ctx.name} {ctx.version} model service", ctx),
            "components": [component],
        }
    }


# ------------------------------------------------------------------------------ assessment results


def local_definitions(name: str, version: str, tool: str) -> dict[str, Any]:
    """A result's assessed service and assessing tool, for observations to name as subject and actor."""
    return {
        "components": [
            {
                "uuid": service_uuid(name),
                "type": "service",
                "title": f"{name} model service",
                "description": f"The model {name} {version} delivered in a signed airgap bundle.",
                "status": {"state": "operational"},
            },
            {
                "uuid": tool_uuid(),
                "type": "software",
                "title": tool,
                "description": (
                    "airgap: bundle, check, verify, install and accept an ML model for an air-gapped network."
                ),
                "status": {"state": "operational"},
            },
        ],
        "assessment-assets": {
            "assessment-platforms": [
                {
                    "uuid": oscal_uuid("platform", "airgap"),
                    "title": tool,
                    "uses-components": [{"component-uuid": tool_uuid()}],
                }
            ]
        },
    }


def import_ap(what: str) -> dict[str, str]:
    """OSCAL requires a reference to an assessment plan; airgap's plan is its rule catalog."""
    return {
        "href": f"#{oscal_uuid('assessment-plan', what)}",
        "remarks": (
            "No separate OSCAL assessment plan exists: the plan is airgap's rule catalog (policies/, "
            "listed rule by rule in the component definition) and the checks of airgap verify, "
            "install, smoke and accept, as airgap's documentation describes them."
        ),
    }


def _outcome(r: RuleResult) -> str:
    if r.waived and r.waiver is not None:
        return f"open, waived: {r.waiver.justification}"
    return {
        "open": "open (a finding)",
        "not_reviewed": "not reviewed: a person must decide it",
        "not_a_finding": "not a finding (passed)",
        "not_applicable": "not applicable",
    }[r.status]


def _observation(ctx: ChecklistContext, r: RuleResult) -> dict[str, Any]:
    lines = [f"{r.rule.id} — {r.rule.title}. Outcome: {_outcome(r)}. {r.reason}."]
    for f in r.findings:
        lines.append(f"Finding: {f.object.describe()} field {f.field}: {f.message}.")
    out: dict[str, Any] = {
        "uuid": oscal_uuid("observation", ctx.name, ctx.version, r.rule.id),
        "title": f"{r.rule.id}: {r.rule.title}",
        "description": " ".join(lines),
        "props": [
            prop("rule-id", r.rule.id),
            prop("severity", r.rule.severity),
            prop("status", r.status),
            prop("automated-status", r.automated_status),
            prop("checked", str(r.checked)),
        ],
        "methods": ["EXAMINE"] if r.rule.manual else ["TEST"],
        "origins": [{"actors": [{"type": "tool", "actor-uuid": tool_uuid()}]}],
        "subjects": [{"subject-uuid": service_uuid(ctx.name), "type": "component"}],
        "collected": ctx.timestamp,
    }
    if r.status == "open" or r.waived:
        out["types"] = ["finding"]
    if r.rule.manual:
        out["remarks"] = (
            "Not assessed: no tool can decide this rule; it stays open for a person's review "
            "and is never reported as met."
        )
    return out


def control_status(results: Sequence[RuleResult]) -> tuple[str, str, str] | None:
    """``(state, reason, remarks)`` of a control from the results of the rules citing it, or None
    when none of them applied. Never ``satisfied`` while a rule is open, waived or unreviewed."""
    opened = [r for r in results if r.status == "open"]
    waived = [r for r in results if r.waived]
    unreviewed = [r for r in results if r.status == "not_reviewed"]
    passed = [r for r in results if r.status == "not_a_finding" and not r.waived]
    if opened:
        return "not-satisfied", "fail", "Open: " + ", ".join(r.rule.id for r in opened) + "."
    if waived or unreviewed:
        parts = []
        if waived:
            parts.append(
                "open findings accepted by a waiver, not fixed: "
                + "; ".join(f"{r.rule.id} ({r.waiver.justification if r.waiver else ''})" for r in waived)
            )
        if unreviewed:
            parts.append("not assessed, a person must review: " + ", ".join(r.rule.id for r in unreviewed))
        return "not-satisfied", "other", "Not satisfied by a tool: " + "; ".join(parts) + "."
    if passed:
        return "satisfied", "pass", "Passed: " + ", ".join(r.rule.id for r in passed) + "."
    return None


def check_assessment_results(ctx: ChecklistContext, evaluation: Evaluation) -> dict[str, Any]:
    """The assessment results of ``airgap check``: one observation per rule, one finding per
    control that any applicable rule concludes on."""
    by_rule = {r.rule.id: r for r in evaluation.results}
    observations = [_observation(ctx, r) for r in evaluation.results]
    controls = controls_of(r.rule for r in evaluation.results)
    findings = []
    for cid, rules_of in controls.items():
        results = [by_rule[r.id] for r in rules_of]
        status = control_status(results)
        if status is None:
            continue
        state, reason, remarks = status
        findings.append(
            {
                "uuid": oscal_uuid("finding", ctx.name, ctx.version, cid),
                "title": f"{control_label(cid)}: {state}",
                "description": f"{control_label(cid)} as the airgap rules citing it concluded: {remarks}",
                "props": [prop("rule-id", r.rule.id) for r in results],
                "target": {
                    "type": "statement-id",
                    "target-id": f"{cid}_smt",
                    "status": {"state": state, "reason": reason, "remarks": remarks},
                },
                "related-observations": [
                    {"observation-uuid": oscal_uuid("observation", ctx.name, ctx.version, r.rule.id)}
                    for r in results
                ],
            }
        )
    result: dict[str, Any] = {
        "uuid": oscal_uuid("result", "check", ctx.name, ctx.version),
        "title": f"airgap check of {ctx.name} {ctx.version}",
        "description": (
            f"{len(evaluation.results)} airgap rules evaluated on the bundle by {ctx.tool}"
            + (f" for target {ctx.target_host}" if ctx.target_host else "")
            + f"; the gate is --fail-on {ctx.fail_on}."
        ),
        "start": ctx.timestamp,
        "end": ctx.timestamp,
        "props": [prop("fail-on", ctx.fail_on), prop("failed", str(evaluation.fails(ctx.fail_on)).lower())],
        "local-definitions": local_definitions(ctx.name, ctx.version, ctx.tool),
        "reviewed-controls": {
            "control-selections": [{"include-controls": [{"control-id": cid} for cid in controls]}]
        },
        "observations": observations,
    }
    if findings:
        result["findings"] = findings
    return {
        "assessment-results": {
            "uuid": oscal_uuid("assessment-results", "check", ctx.name, ctx.version),
            "metadata": metadata(f"Assessment results: airgap check of {ctx.name} {ctx.version}", ctx),
            "import-ap": import_ap("check"),
            "results": [result],
        }
    }


def _md(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def check_summary(ctx: ChecklistContext, evaluation: Evaluation) -> bytes:
    """The ISSO's page beside the two OSCAL documents: what was assessed, by what, each control's
    status, and what is still open or left to a person."""
    by_rule = {r.rule.id: r for r in evaluation.results}
    controls = controls_of(r.rule for r in evaluation.results)
    rows = []
    tally = {"satisfied": 0, "not-satisfied": 0, "no finding": 0}
    for cid, rules_of in controls.items():
        status = control_status([by_rule[r.id] for r in rules_of])
        state = status[0] if status else "no finding"
        tally[state] += 1
        remarks = status[2] if status else "no rule citing it applied to this bundle"
        rows.append(f"| {control_label(cid)} | {state} | {_md(remarks)} |")
    opened = [r for r in evaluation.results if r.status == "open"]
    unreviewed = [r for r in evaluation.results if r.status == "not_reviewed"]
    waived = [r for r in evaluation.results if r.waived]
    lines = [
        f"# OSCAL summary: {ctx.name} {ctx.version}",
        "",
        f"Assessed {ctx.timestamp} by {ctx.tool}: {len(evaluation.results)} rules of `policies/` "
        f"on the bundle, mapped to {len(controls)} NIST SP 800-53 rev5 controls.",
        "",
        f"- `{COMPONENT_FILE}`: the model service's component definition (controls and the rules "
        "that implement them).",
        f"- `{RESULTS_FILE}`: the assessment results (one observation per rule, one finding per control).",
        "- `checklist.md` / `checklist.cklb`: the same evaluation as a STIG checklist.",
        "",
        f"**Controls: {tally['satisfied']} satisfied, {tally['not-satisfied']} not satisfied, "
        f"{tally['no finding']} with no applicable rule.** A control is satisfied only when every rule "
        "citing it that applied passed by itself: an open, waived or unreviewed rule keeps it not satisfied.",
        "",
        f"## Open findings ({len(opened)})",
        "",
    ]
    for r in opened:
        lines.append(
            f"- **{r.rule.id}** ({r.rule.severity}) {_md(r.rule.title)}: {_md(r.reason)}. "
            f"Fix: {_md(r.rule.fix)}"
        )
    if not opened:
        lines.append("None.")
    lines += ["", f"## Waived — accepted, not fixed ({len(waived)})", ""]
    lines += [f"- **{r.rule.id}**: {_md(r.waiver.justification if r.waiver else '')}" for r in waived] or [
        "None."
    ]
    lines += ["", f"## Not assessed — a person must review ({len(unreviewed)})", ""]
    lines += [f"- **{r.rule.id}** {_md(r.rule.title)}: {_md(r.reason)}" for r in unreviewed] or ["None."]
    lines += ["", "## Controls", "", "| control | status | why |", "|---|---|---|", *rows, ""]
    return "\n".join(lines).encode()


def render_json(document: Mapping[str, Any]) -> bytes:
    """An OSCAL document as bytes: indented, keys sorted, newline-terminated (same input, same bytes)."""
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def render_check(ctx: ChecklistContext, evaluation: Evaluation) -> dict[str, bytes]:
    """The three OSCAL files ``airgap check`` writes beside results.json."""
    return {
        COMPONENT_FILE: render_json(component_definition(ctx, [r.rule for r in evaluation.results])),
        RESULTS_FILE: render_json(check_assessment_results(ctx, evaluation)),
        SUMMARY_FILE: check_summary(ctx, evaluation),
    }
