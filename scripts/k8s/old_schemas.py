"""Extract the strict OpenAPI schemas of Kubernetes 1.20–1.24 from a kubernetes-validate wheel.

kubernetes-validate ships schemas for the releases of the last few years only (1.25 onwards in the
version airgap depends on); enclaves run older clusters. Its 1.28.0 wheel still holds 1.20–1.24. This
script turns those into one small file per release under bundle_templates/k8s-schemas/: every kind's
entry point and the shared definitions, descriptions dropped (they are most of the bytes and
validate nothing). airgap.services.manifests validates against these where kubernetes-validate has
no schema of its own.

    python -m pip download --no-deps kubernetes-validate==1.28.0 -d /tmp/kv
    python scripts/k8s/old_schemas.py /tmp/kv/kubernetes_validate-1.28.0-py3-none-any.whl

The wheel's sha256 is checked against WHEEL_SHA256 so the committed files can be made again exactly.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

WHEEL_SHA256 = "a248ff8e00f92c655b2b42aa259e663aee78d2061e2d7b96da51b678ee9b08d6"
VERSIONS = ("1.20.0", "1.21.0", "1.22.0", "1.23.0", "1.24.0")
OUT = Path(__file__).resolve().parent.parent.parent / "bundle_templates" / "k8s-schemas"


def strip(node: Any) -> Any:
    """The schema without its prose."""
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def main(wheel: Path) -> None:
    """Writes one gzip'd JSON per release: {"kinds": {file stem: schema}, "definitions": {...}}."""
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        sys.exit(f"{wheel} has sha256 {digest}, expected {WHEEL_SHA256}")
    OUT.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        for version in VERSIONS:
            prefix = f"kubernetes_validate/kubernetes-json-schema/v{version}-local-strict/"
            kinds: dict[str, Any] = {}
            definitions: dict[str, Any] = {}
            for name in sorted(z.namelist()):
                if not name.startswith(prefix) or not name.endswith(".json"):
                    continue
                stem = name[len(prefix) : -len(".json")]
                doc = strip(json.loads(z.read(name)))
                if stem == "_definitions":
                    definitions = doc["definitions"]
                elif "$ref" in doc:  # a kind's entry point; the rest are copies of definitions
                    kinds[stem] = doc
            doc = {"version": version, "kinds": kinds, "definitions": definitions}
            text = json.dumps(doc, sort_keys=True)
            buf = io.BytesIO()
            with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0) as gz:
                gz.write(text.encode())
            (OUT / f"v{version}.json.gz").write_bytes(buf.getvalue())
            print(f"v{version}: {len(kinds)} kinds, {len(buf.getvalue())} bytes")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
