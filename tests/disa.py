"""DISA's identifiers that airgap's policy catalog cites, as DISA publishes them.

Kubernetes STIG V1R9 (27 Apr 2023), Container Platform SRG V2R1 (24 Jul 2024) and DISA's CCI list
(2023-06-07): for each cited group its STIG or SRG id, DISA's severity and CCIs; for each cited CCI
its NIST SP 800-53 r5 mapping. Kept by hand, checked against those publications, and only for what
the catalog cites: the tests hold the catalog to this table, so an id cannot be invented or mistyped
in one place alone.
"""

from __future__ import annotations

from typing import Any

DISA: dict[str, Any] = {
    "cci": {
        "CCI-000196": {"nist_800_53_r5": []},
        "CCI-000225": {"nist_800_53_r5": ["AC-6"]},
        "CCI-000271": {"nist_800_53_r5": ["CA-6 c 2"]},
        "CCI-000333": {"nist_800_53_r5": ["CM-4"]},
        "CCI-000366": {"nist_800_53_r5": ["CM-6 b"]},
        "CCI-000382": {"nist_800_53_r5": ["CM-7 b"]},
        "CCI-000803": {"nist_800_53_r5": ["IA-7"]},
        "CCI-001054": {"nist_800_53_r5": ["RA-5 a"]},
        "CCI-001082": {"nist_800_53_r5": ["SC-2"]},
        "CCI-001090": {"nist_800_53_r5": ["SC-4"]},
        "CCI-001095": {"nist_800_53_r5": ["SC-5 (2)"]},
        "CCI-001368": {"nist_800_53_r5": ["AC-4"]},
        "CCI-001414": {"nist_800_53_r5": ["AC-4"]},
        "CCI-001762": {"nist_800_53_r5": ["CM-7 (1) (b)"]},
        "CCI-001764": {"nist_800_53_r5": ["CM-7 (2)"]},
        "CCI-001774": {"nist_800_53_r5": ["CM-7 (5) (b)"]},
        "CCI-001813": {"nist_800_53_r5": ["CM-5 (1) (a)"]},
        "CCI-002233": {"nist_800_53_r5": ["AC-6 (8)"]},
        "CCI-002235": {"nist_800_53_r5": ["AC-6 (10)"]},
        "CCI-002263": {"nist_800_53_r5": ["AC-16 a"]},
        "CCI-002385": {"nist_800_53_r5": ["SC-5 a"]},
        "CCI-002439": {"nist_800_53_r5": ["SC-12"]},
        "CCI-002440": {"nist_800_53_r5": ["SC-12"]},
        "CCI-002450": {"nist_800_53_r5": ["SC-13 b"]},
        "CCI-002476": {"nist_800_53_r5": ["SC-28 (1)"]},
        "CCI-002530": {"nist_800_53_r5": ["SC-39"]},
        "CCI-002617": {"nist_800_53_r5": ["SI-2 (6)"]},
        "CCI-002647": {"nist_800_53_r5": []},
        "CCI-002704": {"nist_800_53_r5": ["SI-7 a"]},
        "CCI-002824": {"nist_800_53_r5": ["SI-16"]},
        "CCI-003049": {"nist_800_53_r5": ["PL-2 a"]},
        "CCI-003962": {"nist_800_53_r5": ["CM-8 a 1"]},
        "CCI-003980": {"nist_800_53_r5": ["CM-11 (2)"]},
        "CCI-003992": {"nist_800_53_r5": ["CM-14"]},
        "CCI-004062": {"nist_800_53_r5": ["IA-5 (1) (d)"]},
        "CCI-004069": {"nist_800_53_r5": ["IA-5 (7)"]},
        "CCI-004217": {"nist_800_53_r5": ["MP-5 a"]},
        "CCI-004218": {"nist_800_53_r5": ["MP-5 a"]},
        "CCI-004909": {"nist_800_53_r5": ["SC-17 b"]},
        "CCI-004910": {"nist_800_53_r5": ["SC-28 (3)"]},
        "CCI-005096": {"nist_800_53_r5": ["SR-4"]},
    },
    "container_platform_srg": {
        "V-233029": {
            "ccis": ["CCI-001368"],
            "rule_version": "SRG-APP-000038-CTR-000105",
            "severity": "medium",
        },
        "V-233030": {
            "ccis": ["CCI-001414"],
            "rule_version": "SRG-APP-000039-CTR-000110",
            "severity": "medium",
        },
        "V-233064": {
            "ccis": ["CCI-003992"],
            "rule_version": "SRG-APP-000131-CTR-000280",
            "severity": "medium",
        },
        "V-233065": {
            "ccis": ["CCI-003992"],
            "rule_version": "SRG-APP-000131-CTR-000285",
            "severity": "medium",
        },
        "V-233073": {
            "ccis": ["CCI-000382"],
            "rule_version": "SRG-APP-000142-CTR-000325",
            "severity": "medium",
        },
        "V-233074": {
            "ccis": ["CCI-000382"],
            "rule_version": "SRG-APP-000142-CTR-000330",
            "severity": "medium",
        },
        "V-233095": {
            "ccis": ["CCI-004062"],
            "rule_version": "SRG-APP-000171-CTR-000435",
            "severity": "medium",
        },
        "V-233114": {
            "ccis": ["CCI-001082"],
            "rule_version": "SRG-APP-000211-CTR-000530",
            "severity": "medium",
        },
        "V-233127": {
            "ccis": ["CCI-001090"],
            "rule_version": "SRG-APP-000243-CTR-000595",
            "severity": "medium",
        },
        "V-233128": {
            "ccis": ["CCI-001090"],
            "rule_version": "SRG-APP-000243-CTR-000600",
            "severity": "medium",
        },
        "V-233162": {
            "ccis": ["CCI-002235"],
            "rule_version": "SRG-APP-000340-CTR-000770",
            "severity": "medium",
        },
        "V-233163": {
            "ccis": ["CCI-002233"],
            "rule_version": "SRG-APP-000342-CTR-000775",
            "severity": "medium",
        },
        "V-233185": {"ccis": ["CCI-003980"], "rule_version": "SRG-APP-000378-CTR-000885", "severity": "high"},
        "V-233190": {
            "ccis": ["CCI-001762"],
            "rule_version": "SRG-APP-000383-CTR-000910",
            "severity": "medium",
        },
        "V-233191": {
            "ccis": ["CCI-001764"],
            "rule_version": "SRG-APP-000384-CTR-000915",
            "severity": "medium",
        },
        "V-233192": {
            "ccis": ["CCI-001774"],
            "rule_version": "SRG-APP-000386-CTR-000920",
            "severity": "medium",
        },
        "V-233211": {
            "ccis": ["CCI-002450"],
            "rule_version": "SRG-APP-000416-CTR-001015",
            "severity": "medium",
        },
        "V-233220": {
            "ccis": ["CCI-002476"],
            "rule_version": "SRG-APP-000429-CTR-001060",
            "severity": "medium",
        },
        "V-233221": {
            "ccis": ["CCI-002530"],
            "rule_version": "SRG-APP-000431-CTR-001065",
            "severity": "medium",
        },
        "V-233222": {
            "ccis": ["CCI-002385"],
            "rule_version": "SRG-APP-000435-CTR-001070",
            "severity": "medium",
        },
        "V-233229": {
            "ccis": ["CCI-002824"],
            "rule_version": "SRG-APP-000450-CTR-001105",
            "severity": "medium",
        },
        "V-233230": {
            "ccis": ["CCI-002617"],
            "rule_version": "SRG-APP-000454-CTR-001110",
            "severity": "medium",
        },
        "V-233271": {
            "ccis": ["CCI-002450"],
            "rule_version": "SRG-APP-000514-CTR-001315",
            "severity": "medium",
        },
        "V-233275": {
            "ccis": ["CCI-000366"],
            "rule_version": "SRG-APP-000516-CTR-001335",
            "severity": "medium",
        },
        "V-233285": {
            "ccis": ["CCI-000803"],
            "rule_version": "SRG-APP-000610-CTR-001385",
            "severity": "medium",
        },
        "V-263599": {
            "ccis": ["CCI-004909"],
            "rule_version": "SRG-APP-000910-CTR-000300",
            "severity": "medium",
        },
        "V-263600": {
            "ccis": ["CCI-004910"],
            "rule_version": "SRG-APP-000915-CTR-000310",
            "severity": "medium",
        },
        "V-270875": {
            "ccis": ["CCI-001095"],
            "rule_version": "SRG-APP-000247-CTR-000330",
            "severity": "medium",
        },
        "V-270876": {
            "ccis": ["CCI-001813"],
            "rule_version": "SRG-APP-000380-CTR-000340",
            "severity": "medium",
        },
    },
    "kubernetes_stig": {
        "V-242383": {"ccis": ["CCI-000366"], "rule_version": "CNTR-K8-000290", "severity": "high"},
        "V-242414": {"ccis": ["CCI-000382"], "rule_version": "CNTR-K8-000960", "severity": "medium"},
        "V-242415": {"ccis": ["CCI-000196"], "rule_version": "CNTR-K8-001160", "severity": "high"},
        "V-242417": {"ccis": ["CCI-001082"], "rule_version": "CNTR-K8-001360", "severity": "medium"},
        "V-242437": {"ccis": ["CCI-002263"], "rule_version": "CNTR-K8-002010", "severity": "high"},
        "V-242442": {"ccis": ["CCI-002647"], "rule_version": "CNTR-K8-002700", "severity": "medium"},
        "V-254800": {"ccis": ["CCI-002263"], "rule_version": "CNTR-K8-002011", "severity": "high"},
    },
}
