"""OSCAL assessment results of the far side: what ``verify``, ``install``, ``smoke`` and ``accept``
checked on the site, from the attestations they wrote, with a Markdown summary for the ISSO.

``airgap evidence export`` writes these beside the evidence file. Each attestation becomes one
observation (the checks that passed, warned and failed, who ran them, whether the record is
signed); each bundle version assessed on the site becomes one result; each NIST SP 800-53 rev5
control the far-side checks address gets one finding per result, concluded from the *latest*
attestation of every command that addresses it:

- ``verify``: SI-7, SI-7(6), SI-7(15), CM-14 — the signature by a trusted key and every file's
  hash: integrity, cryptographic protection, code authentication, signed components;
- ``install``: SI-7, SI-7(6), CM-14, CM-3(2) — the same verification, then the golden outputs
  tested on the site before the version is kept;
- ``smoke``: CM-3(2) — the golden outputs tested again on the running model;
- ``accept``: CM-3(2), CM-4(2) — the deployment contract measured on the site: the change tested,
  and the controls verified after it.

The integrity controls (SI-7, SI-7(6), SI-7(15), CM-14) are concluded from the verification:
``verify`` and ``install`` record one only for a bundle that verified, so they are ``satisfied``
unless an UNSAFE override was taken (``not-satisfied``, reason ``other``). The testing controls
(CM-3(2), CM-4(2)) are concluded from the golden and acceptance results: a failure in the latest
run of a command makes them ``not-satisfied`` (reason ``fail``). A control no command here addressed
is ``not-satisfied`` (reason ``other``) with the remark that it was not assessed — never omitted,
never satisfied. An unsigned attestation is kept, and said to prove nothing about who wrote it.
Pure: statements in, JSON values out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airgap.core.checklist import ChecklistContext
from airgap.core.oscal import (
    OSCAL_VERSION,
    control_id,
    control_label,
    control_sort_key,
    import_ap,
    local_definitions,
    metadata,
    oscal_uuid,
    prop,
    service_uuid,
    tool_uuid,
)

ACTION_CONTROLS: Mapping[str, tuple[str, ...]] = {
    "verify": ("SI-7", "SI-7(6)", "SI-7(15)", "CM-14"),
    "install": ("SI-7", "SI-7(6)", "CM-14", "CM-3(2)"),
    "smoke": ("CM-3(2)",),
    "accept": ("CM-3(2)", "CM-4(2)"),
}
ACTIONS = tuple(ACTION_CONTROLS)
INTEGRITY = frozenset(control_id(c) for c in ("SI-7", "SI-7(6)", "SI-7(15)", "CM-14"))
"""The controls of the verification itself: concluded from its overrides, not from golden tests."""


@dataclass(frozen=True)
class Attested:
    """One far-side attestation as the export read it: its file, its statement, and the key id
    of its signature (not verified here: ``airgap evidence verify`` does that), or None."""

    file: str
    statement: Mapping[str, Any]
    signed_by: str | None

    @property
    def predicate(self) -> Mapping[str, Any]:
        """The in-toto test-result predicate."""
        value = self.statement.get("predicate")
        return value if isinstance(value, Mapping) else {}

    @property
    def airgap(self) -> Mapping[str, Any]:
        """airgap's own part of the predicate: action, when, who, bundle, golden numbers."""
        value = self.predicate.get("airgap")
        return value if isinstance(value, Mapping) else {}

    @property
    def action(self) -> str:
        """verify, install, smoke or accept."""
        return str(self.airgap.get("action") or "?")

    @property
    def result(self) -> str:
        """PASSED, WARNED or FAILED."""
        return str(self.predicate.get("result") or "?")

    @property
    def when(self) -> str:
        """When the command ran (UTC, ``Z``)."""
        return str(self.airgap.get("when") or "")

    @property
    def bundle(self) -> tuple[str, str, str]:
        """(name, version, manifest SHA-256): which bundle the attestation is about."""
        a = self.airgap
        return str(a.get("bundle_name")), str(a.get("bundle_version")), str(a.get("manifest_sha256"))

    def tests(self, kind: str) -> list[str]:
        """``passedTests``, ``warnedTests`` or ``failedTests``, as strings."""
        value = self.predicate.get(kind)
        return [str(v) for v in value] if isinstance(value, list) else []


def _observation(evidence_file: str, a: Attested, name: str) -> dict[str, Any]:
    passed, warned, failed = a.tests("passedTests"), a.tests("warnedTests"), a.tests("failedTests")
    parts = [f"airgap {a.action} on the site: {a.result}."]
    if passed:
        parts.append(f"Passed ({len(passed)}): " + "; ".join(passed) + ".")
    if warned:
        parts.append(f"UNSAFE overrides taken ({len(warned)}): " + "; ".join(warned) + ".")
    if failed:
        parts.append(f"Failed ({len(failed)}): " + "; ".join(failed) + ".")
    raw_who = a.airgap.get("who")
    who: Mapping[str, Any] = raw_who if isinstance(raw_who, Mapping) else {}
    props = [
        prop("action", a.action),
        prop("result", a.result),
        prop("manifest-sha256", a.bundle[2]),
        prop("signed-by", a.signed_by or "unsigned"),
        prop("host", str(who.get("host") or "?")),
        prop("user", str(who.get("user") or "?")),
    ]
    golden = a.airgap.get("golden")
    if isinstance(golden, Mapping):
        props += [prop(f"golden-{k}", str(golden.get(k))) for k in ("cases", "passed", "failed")]
    out: dict[str, Any] = {
        "uuid": oscal_uuid("observation", "far-side", a.file),
        "title": f"{a.action} of {a.bundle[0]} {a.bundle[1]}: {a.result}",
        "description": " ".join(parts),
        "props": props,
        "methods": ["TEST"],
        "origins": [{"actors": [{"type": "tool", "actor-uuid": tool_uuid()}]}],
        "subjects": [{"subject-uuid": service_uuid(name), "type": "component"}],
        "relevant-evidence": [
            {
                "href": f"{evidence_file}#{a.file}",
                "description": (
                    f"DSSE envelope {a.file}, signed by key {a.signed_by} (check with airgap evidence verify)"
                    if a.signed_by
                    else f"DSSE envelope {a.file}, UNSIGNED"
                ),
            }
        ],
        "collected": a.when,
    }
    if a.result == "FAILED":
        out["types"] = ["finding"]
    if not a.signed_by:
        out["remarks"] = (
            "Unsigned: no site key was configured when this was written, so the record proves "
            "nothing about who wrote it or whether it was changed since."
        )
    return out


def control_findings(attested: Sequence[Attested]) -> dict[str, tuple[str, str, str, list[Attested]]]:
    """Per 800-53 control (OSCAL id): ``(state, reason, remarks, latest attestations)`` from the
    latest attestation of each command that addresses it, for one bundle version."""
    latest: dict[str, Attested] = {}
    for a in sorted(attested, key=lambda a: (a.when, a.file)):
        latest[a.action] = a
    controls: dict[str, list[str]] = {}
    for action, nists in ACTION_CONTROLS.items():
        for nist in nists:
            controls.setdefault(control_id(nist), []).append(action)
    out: dict[str, tuple[str, str, str, list[Attested]]] = {}
    for cid in sorted(controls, key=control_sort_key):
        ran = [latest[act] for act in controls[cid] if act in latest]
        missing = [act for act in controls[cid] if act not in latest]
        if not ran:
            out[cid] = (
                "not-satisfied",
                "other",
                "Not assessed: no airgap "
                + " or ".join(missing)
                + " ran here"
                + (" for this bundle." if attested else "."),
                [],
            )
            continue
        if cid in INTEGRITY:
            # An attestation of verify or install exists only for a bundle that verified: what
            # failed in an install is its golden test (CM-3(2)), not the signature or the hashes.
            failed = []
            warned = [a for a in ran if a.tests("warnedTests")]
        else:
            failed = [a for a in ran if a.result == "FAILED"]
            warned = []
        unsigned = [a for a in ran if not a.signed_by]
        note = (
            f" Unsigned evidence ({', '.join(a.action for a in unsigned)}): "
            "it proves nothing about who wrote it."
            if unsigned
            else ""
        )
        if failed:
            what = "; ".join(f"{a.action} at {a.when}: " + "; ".join(a.tests("failedTests")) for a in failed)
            out[cid] = ("not-satisfied", "fail", f"Failed: {what}.{note}", ran)
        elif warned:
            what = "; ".join(f"{a.action}: " + "; ".join(a.tests("warnedTests")) for a in warned)
            out[cid] = ("not-satisfied", "other", f"Passed only with an UNSAFE override: {what}.{note}", ran)
        elif unsigned:
            # A record with no signature could have been written by anyone with the state
            # directory: it is reported, never counted as proof.
            what = ", ".join(f"{a.action} at {a.when}" for a in ran)
            out[cid] = (
                "not-satisfied",
                "other",
                f"Passed, but not proven: {what}.{note} Configure AIRGAP_SITE_KEY and run it again.",
                ran,
            )
        else:
            what = ", ".join(f"{a.action} at {a.when}" for a in ran)
            out[cid] = ("satisfied", "pass", f"Passed: {what}.", ran)
    return out


def _group(attested: Sequence[Attested]) -> dict[tuple[str, str, str], list[Attested]]:
    groups: dict[tuple[str, str, str], list[Attested]] = {}
    for a in sorted(attested, key=lambda a: (a.when, a.file)):
        if a.action in ACTION_CONTROLS:
            groups.setdefault(a.bundle, []).append(a)
    return groups


def evidence_assessment_results(
    ctx: ChecklistContext,
    evidence_file: str,
    attested: Sequence[Attested],
    carried: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The far side's assessment results: one result per bundle version assessed here, then the
    ``carried`` results of the ``airgap check`` a verified bundle holds, as they are."""
    results = []
    for (name, version, sha), items in _group(attested).items():
        observations = [_observation(evidence_file, a, name) for a in items]
        findings = []
        for cid, (state, reason, remarks, ran) in control_findings(items).items():
            finding: dict[str, Any] = {
                "uuid": oscal_uuid("finding", "far-side", name, version, sha, cid),
                "title": f"{control_label(cid)}: {state}",
                "description": f"{control_label(cid)} on the site for {name} {version}: {remarks}",
                "target": {
                    "type": "statement-id",
                    "target-id": f"{cid}_smt",
                    "status": {"state": state, "reason": reason, "remarks": remarks},
                },
            }
            if ran:
                finding["related-observations"] = [
                    {"observation-uuid": oscal_uuid("observation", "far-side", a.file)} for a in ran
                ]
            findings.append(finding)
        results.append(
            {
                "uuid": oscal_uuid("result", "far-side", name, version, sha),
                "title": f"Far-side checks of {name} {version}",
                "description": (
                    f"What airgap {', '.join(sorted({a.action for a in items}))} checked on the site for "
                    f"{name} {version} (manifest SHA-256 {sha}), from {len(items)} attestation(s)."
                ),
                "start": items[0].when,
                "end": items[-1].when,
                "props": [prop("manifest-sha256", sha)],
                "local-definitions": local_definitions(name, version, ctx.tool),
                "reviewed-controls": {
                    "control-selections": [
                        {"include-controls": [{"control-id": cid} for cid in control_findings(items)]}
                    ]
                },
                "observations": observations,
                "findings": findings,
            }
        )
    nothing = control_findings([])  # every control "not assessed", for a site with no record
    document: dict[str, Any] = {
        "uuid": oscal_uuid("assessment-results", "far-side", evidence_file, ctx.timestamp),
        "metadata": metadata(
            f"Assessment results: far-side checks exported {ctx.timestamp}",
            ctx,
            remarks=(
                f"From the attestations of {evidence_file}; "
                "check their signatures with airgap evidence verify."
            ),
        ),
        "import-ap": import_ap("far-side"),
        "results": [*results, *(dict(r) for r in carried)]
        or [
            {
                "uuid": oscal_uuid("result", "far-side", "none", ctx.timestamp),
                "title": "No far-side checks recorded",
                "description": (
                    "The state directory holds no attestation of verify, install, smoke or accept."
                ),
                "start": ctx.timestamp,
                "reviewed-controls": {
                    "control-selections": [{"include-controls": [{"control-id": c} for c in nothing]}]
                },
                "findings": [
                    {
                        "uuid": oscal_uuid("finding", "far-side", "none", ctx.timestamp, cid),
                        "title": f"{control_label(cid)}: not-satisfied",
                        "description": f"{control_label(cid)} on this site: {remarks}",
                        "target": {
                            "type": "statement-id",
                            "target-id": f"{cid}_smt",
                            "status": {"state": state, "reason": reason, "remarks": remarks},
                        },
                    }
                    for cid, (state, reason, remarks, _) in nothing.items()
                ],
                "remarks": "Nothing was assessed on this site.",
            }
        ],
    }
    return {"assessment-results": document}


def _md(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _carried_md(result: Mapping[str, Any]) -> list[str]:
    findings = [f for f in result.get("findings", []) if isinstance(f, Mapping)]

    def state(f: Mapping[str, Any]) -> str:
        return str(f.get("target", {}).get("status", {}).get("state", "?"))

    unsatisfied = [f for f in findings if state(f) != "satisfied"]
    lines = [
        f"## {_md(str(result.get('title', 'airgap check')))} (carried in the bundle)",
        "",
        f"Evaluated {result.get('start', '?')} where the bundle was built; signed with the bundle, "
        "verified before it was read. "
        f"**Controls: {len(findings) - len(unsatisfied)} satisfied, {len(unsatisfied)} not satisfied.**",
        "",
    ]
    if unsatisfied:
        lines += ["| control | why not satisfied |", "|---|---|"]
        for f in unsatisfied:
            remarks = str(f.get("target", {}).get("status", {}).get("remarks", ""))
            lines.append(f"| {_md(str(f.get('title', '?')))} | {_md(remarks)} |")
        lines.append("")
    return lines


def evidence_summary(
    ctx: ChecklistContext,
    evidence_file: str,
    results_file: str,
    attested: Sequence[Attested],
    carried: Sequence[Mapping[str, Any]] = (),
) -> bytes:
    """The ISSO's page beside the far-side assessment results."""
    groups = _group(attested)
    unsigned = [a for items in groups.values() for a in items if not a.signed_by]
    lines = [
        f"# OSCAL summary: far-side checks, exported {ctx.timestamp}",
        "",
        f"From {sum(len(v) for v in groups.values())} attestation(s) in `{evidence_file}`, written by "
        f"{ctx.tool} on the site. The assessment results are `{results_file}` (OSCAL {OSCAL_VERSION}).",
        "Check the attestations' signatures before relying on them: "
        f"`airgap evidence verify {evidence_file} --key site.pub`.",
        "",
    ]
    if unsigned:
        lines += [
            f"**{len(unsigned)} attestation(s) are UNSIGNED** (no site key was configured): they prove "
            "nothing about who wrote them or whether they were changed since.",
            "",
        ]
    if not groups:
        lines += ["Nothing was checked on this site: no verify, install, smoke or accept is recorded.", ""]
    for (name, version, sha), items in groups.items():
        findings = control_findings(items)
        open_ = {cid: f for cid, f in findings.items() if f[0] != "satisfied"}
        lines += [
            f"## {name} {version}",
            "",
            f"Manifest SHA-256 `{sha}`; {len(items)} check(s) from {items[0].when} to {items[-1].when}.",
            "",
            "| when | command | result | signed by | failed or overridden |",
            "|---|---|---|---|---|",
        ]
        for a in items:
            bad = a.tests("failedTests") + a.tests("warnedTests")
            lines.append(
                f"| {a.when} | {a.action} | {a.result} | {(a.signed_by or 'UNSIGNED')[:16]} | "
                f"{_md('; '.join(bad)) or '—'} |"
            )
        lines += [
            "",
            f"**Controls: {len(findings) - len(open_)} satisfied, {len(open_)} not satisfied.**",
            "",
            "| control | status | why |",
            "|---|---|---|",
        ]
        lines += [f"| {control_label(cid)} | {f[0]} | {_md(f[2])} |" for cid, f in findings.items()]
        lines.append("")
    for result in carried:
        lines += _carried_md(result)
    return "\n".join(lines).encode()
