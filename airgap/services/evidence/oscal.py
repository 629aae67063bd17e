"""OSCAL for ``airgap evidence export``: the far side's assessment results and their summary,
written beside the evidence file, with the ``airgap check`` results a verified bundle carries.

The documents themselves are pure mappings (``core/oscal.py``, ``core/oscal_evidence.py``); this
module reads what they are made of — the attestations the export already parsed, and a bundle's
own ``compliance/oscal-assessment-results.json`` — and writes the two files. A bundle is verified
in full (signature by a trusted key, every hash, audited) before one byte of it is read, exactly
as ``airgap check`` verifies one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airgap import __version__
from airgap.adapters.fs import atomic_write_bytes
from airgap.core import oscal
from airgap.core.bundle_format import strict_json
from airgap.core.checklist import ChecklistContext
from airgap.core.oscal_evidence import Attested, evidence_assessment_results, evidence_summary
from airgap.errors import InvalidInputError
from airgap.services.state import State


def oscal_paths(out: Path) -> tuple[Path, Path]:
    """Where the OSCAL assessment results and their Markdown summary go: beside the evidence file,
    named after it, so that the three travel together."""
    stem = out.name[: -len(".json")] if out.name.endswith(".json") else out.name
    return out.with_name(f"{stem}.oscal-assessment-results.json"), out.with_name(f"{stem}.oscal-summary.md")


def bundle_check_results(bundle: Path, state: State, key: Path | None = None) -> list[dict[str, Any]]:
    """The results of the ``airgap check`` a bundle carries (``compliance/``), read only after the
    bundle verified against the trust store (or ``key``); exit 3 if it does not, 4 if it carries
    no OSCAL assessment results."""
    from airgap.services.media.verify import VerifiedReader, VerifyOptions, verify_and_audit
    from airgap.services.trust import trusted_keys

    options = VerifyOptions(
        trusted=trusted_keys(state, key), keep=VerifiedReader.keep, blob_store=state.blob_store
    )
    verified = verify_and_audit(bundle, state, options, action="evidence export --bundle")
    reader = VerifiedReader(verified)
    member = f"compliance/{oscal.RESULTS_FILE}"
    if member not in reader.list():
        raise InvalidInputError(
            f"{bundle} carries no OSCAL assessment results ({member}): it was built by an airgap "
            "that did not write them",
            hint="export without --bundle, and carry the bundle's compliance/ reports beside the evidence",
        )
    try:
        document = strict_json(reader.read(member))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidInputError(f"{bundle}: {member} is not strict JSON ({str(exc)[:80]})") from None
    body = document.get("assessment-results") if isinstance(document, dict) else None
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise InvalidInputError(f"{bundle}: {member} is not OSCAL assessment results")
    return results


def write_far_side_oscal(
    out: Path,
    statements: Sequence[tuple[str, dict[str, Any], str | None]],
    carried: Sequence[dict[str, Any]] = (),
) -> tuple[Path, Path]:
    """Writes the far side's assessment results (with the ``carried`` check results appended)
    and their summary beside ``out``; returns their paths."""
    ctx = ChecklistContext(
        name="site",
        version=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        evaluated_at=dt.datetime.now(dt.timezone.utc),
        tool=f"airgap {__version__}",
    )
    attested = [Attested(f, s, k) for f, s, k in statements]
    results_path, summary_path = oscal_paths(out)
    document = evidence_assessment_results(ctx, out.name, attested, carried)
    atomic_write_bytes(results_path, oscal.render_json(document))
    atomic_write_bytes(summary_path, evidence_summary(ctx, out.name, results_path.name, attested, carried))
    return results_path, summary_path
