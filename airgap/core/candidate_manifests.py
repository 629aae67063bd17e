"""A candidate on Kubernetes: the bundle's Deployment and Service again, as a second Deployment
with its own Service beside the current ones (names suffixed ``-candidate``).

The candidate's pods carry their own ``app.kubernetes.io/name`` (``NAME-candidate``): the current
Service never sends them traffic and the two Deployments' selectors never overlap. The ingress
NetworkPolicy is copied for them the same way (the namespace's default deny covers them already);
the namespace, service account, disruption budget and autoscaler stay the current version's. One
replica: a candidate is compared, not scaled.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

SUFFIX = "-candidate"
NAME_LABEL = "app.kubernetes.io/name"
TRACK_LABEL = "airgap.io/track"


def _relabel(labels: Any, old: str) -> dict[str, Any]:
    out = dict(labels or {})
    if out.get(NAME_LABEL) == old:
        out[NAME_LABEL] = old + SUFFIX
    out[TRACK_LABEL] = "candidate"
    return out


def _selects(selector: Any, name: str) -> bool:
    return isinstance(selector, dict) and selector.get(NAME_LABEL) == name


def candidate_objects(objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The candidate's Deployment, Service and ingress policy, made from the bundle's objects."""
    items = [o for o in objects if isinstance(o, dict)]
    deployment = next((o for o in items if o.get("kind") == "Deployment"), None)
    if deployment is None:
        return []
    app = str(
        ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels", {}).get(NAME_LABEL, "")
    )
    out: list[dict[str, Any]] = []
    for obj in items:
        kind = obj.get("kind")
        spec = obj.get("spec") or {}
        if kind == "Deployment" and obj is deployment:
            new = copy.deepcopy(obj)
            new["spec"]["replicas"] = 1
            new["spec"]["selector"]["matchLabels"] = _relabel(spec["selector"]["matchLabels"], app)
            template = new["spec"]["template"]
            template["metadata"]["labels"] = _relabel(template["metadata"].get("labels"), app)
        elif kind == "Service" and _selects(spec.get("selector"), app):
            new = copy.deepcopy(obj)
            new["spec"]["selector"] = _relabel(spec["selector"], app)
        elif kind == "NetworkPolicy" and _selects((spec.get("podSelector") or {}).get("matchLabels"), app):
            new = copy.deepcopy(obj)
            new["spec"]["podSelector"]["matchLabels"] = _relabel(spec["podSelector"]["matchLabels"], app)
        else:
            continue
        new["metadata"]["name"] = f"{obj['metadata']['name']}{SUFFIX}"
        new["metadata"]["labels"] = _relabel(obj["metadata"].get("labels"), app)
        out.append(new)
    return out
