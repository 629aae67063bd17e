"""Regenerates tests/data/disa/reference.json from DISA's own files.

The tests check every STIG/SRG id, severity and CCI the policy catalog cites against this file, so
it must come from DISA's publications, not from memory. Usage (paths to the downloaded files):

    .venv/bin/python scripts/disa_reference.py U_Kubernetes_STIG_V1R9_Manual-xccdf.xml \
        U_Container_Platform_SRG_V2R1_Manual-xccdf.xml U_CCI_List.xml

The CCIs kept are those of every group of both benchmarks and those the shipped rules cite.
DISA's XCCDF files are mirrored in github.com/mitre/inspec-profile-update-action
(benchmarks/DISA/); DISA's CCI list (U_CCI_List.xml, 2023-06-07) is embedded in
github.com/mitre/heimdall2 (libs/hdf-converters/src/utils/CCI_List.ts).
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from airgap.resources import policies_dir
from airgap.services.check import load_catalog

XCCDF = "{http://checklists.nist.gov/xccdf/1.1}"
CCI = "{http://iase.disa.mil/cci}"
OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "disa" / "reference.json"
# Groups added to the Container Platform SRG after V2R1 (SV-270875r1050646_rule,
# SV-270876r1050649_rule), as published in MITRE SAF InSpec stubs of that release.
LATER_SRG_GROUPS = {
    "V-270875": {
        "rule_version": "SRG-APP-000247-CTR-000330",
        "severity": "medium",
        "group_title": "SRG-APP-000247",
        "ccis": ["CCI-001095"],
        "title": "The container must have resource request limits set.",
    },
    "V-270876": {
        "rule_version": "SRG-APP-000380-CTR-000340",
        "severity": "medium",
        "group_title": "SRG-APP-000380",
        "ccis": ["CCI-001813"],
        "title": "The container root filesystem must be mounted as read-only.",
    },
}


def groups(path: str) -> tuple[dict[str, Any], str]:
    root = ET.parse(path).getroot()
    out: dict[str, Any] = {}
    for g in root.findall(XCCDF + "Group"):
        rule = g.find(XCCDF + "Rule")
        assert rule is not None
        idents = [i.text or "" for i in rule.findall(XCCDF + "ident")]
        out[g.get("id") or "?"] = {
            "rule_version": rule.findtext(XCCDF + "version"),
            "severity": rule.get("severity"),
            "group_title": g.findtext(XCCDF + "title"),
            "ccis": sorted(i for i in idents if i.startswith("CCI-")),
            "title": " ".join((rule.findtext(XCCDF + "title") or "").split()),
        }
    release = next(p.text for p in root.findall(XCCDF + "plain-text") if p.get("id") == "release-info")
    about = f"{root.findtext(XCCDF + 'title')}, Version {root.findtext(XCCDF + 'version')}, {release}"
    return out, about


def ccis(path: str) -> tuple[dict[str, Any], str]:
    root = ET.parse(path).getroot()
    out: dict[str, Any] = {}
    for item in root.iter(CCI + "cci_item"):
        refs = list(item.iter(CCI + "reference"))
        out[item.get("id") or "?"] = {
            "definition": " ".join((item.findtext(CCI + "definition") or "").split()),
            "nist_800_53_r5": [r.get("index") for r in refs if r.get("title") == "NIST SP 800-53 Revision 5"],
            "nist_800_53_r4": [r.get("index") for r in refs if r.get("title") == "NIST SP 800-53 Revision 4"],
        }
    return out, root.findtext(f"{CCI}metadata/{CCI}version") or "?"


def main(stig: str, srg: str, cci_list: str) -> None:
    k8s, k8s_about = groups(stig)
    platform, srg_about = groups(srg)
    platform.update(LATER_SRG_GROUPS)
    all_ccis, cci_version = ccis(cci_list)
    catalog = load_catalog([policies_dir()])
    wanted = {c for g in [*k8s.values(), *platform.values()] for c in g["ccis"]}
    wanted |= {c for r in catalog.rules for c in r.references.cci}
    doc: dict[str, Any] = {
        "about": "Identifiers airgap may cite, extracted from DISA publications so that tests can prove no "
        "rule carries an invented id. Regenerate with scripts/disa_reference.py; do not edit by hand.",
        "sources": {
            "kubernetes_stig": f"{k8s_about}: DISA {Path(stig).name}",
            "container_platform_srg": f"{srg_about}: DISA {Path(srg).name}; V-270875 and V-270876 were "
            "added in a later release and are taken from MITRE SAF InSpec stubs of that release",
            "cci": f"DISA CCI list ({Path(cci_list).name}) version {cci_version}; only the CCIs the groups "
            "below or airgap's rules cite",
        },
        "kubernetes_stig": k8s,
        "container_platform_srg": platform,
        "cci": {c: all_ccis[c] for c in sorted(wanted) if c in all_ccis},
    }
    lines = ["{"]
    for i, key in enumerate(sorted(doc)):
        value = doc[key]
        comma = "," if i < len(doc) - 1 else ""
        if key in ("kubernetes_stig", "container_platform_srg", "cci"):
            inner = [f"  {json.dumps(k)}: {json.dumps(value[k], sort_keys=True)}" for k in sorted(value)]
            lines += [f" {json.dumps(key)}: {{", ",\n".join(inner), " }" + comma]
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value, sort_keys=True)}{comma}")
    OUT.write_text("\n".join([*lines, "}"]) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:4])
