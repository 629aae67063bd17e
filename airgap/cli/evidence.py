"""``airgap evidence export`` and ``verify``: the far side's attestations, carried back.

The far-side commands (``verify``, ``install``, ``smoke``) record what they checked through
``far_side_evidence``; the site key that signs those records is named by ``AIRGAP_SITE_KEY``.
"""

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.markup import escape

from airgap.cli.common import (
    EPILOG,
    STATE,
    StateDirOption,
    _emit_json,
    _state,
    _Table,
    app,
    err_console,
    out_console,
)

if TYPE_CHECKING:
    from airgap.services.evidence.attestations import Evidence
    from airgap.services.state import State as StateDir

SITE_KEY_ENV = "AIRGAP_SITE_KEY"
SITE_PASSPHRASE_ENV = "AIRGAP_SITE_KEY_PASSPHRASE"

evidence_app = typer.Typer(
    help="Far-side attestations: what verify, install and smoke checked here, and their results.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(evidence_app, name="evidence")


def _site_passphrase() -> bytes:
    value = os.environ.get(SITE_PASSPHRASE_ENV)
    if value:
        return value.encode()
    if not sys.stdin.isatty():
        from airgap.errors import UsageError

        raise UsageError(
            f"{SITE_KEY_ENV} is set but the site key has no passphrase: set {SITE_PASSPHRASE_ENV}",
            hint=f"or unset {SITE_KEY_ENV} to store attestations unsigned",
        )
    return str(typer.prompt("site key passphrase", hide_input=True)).encode()


def far_side_evidence(state: "StateDir") -> "Evidence":
    """The attestation writer of a far-side command, with the site key ``AIRGAP_SITE_KEY`` names
    (a key URI, as ``--key`` takes). Loaded before the command does anything: a site key that
    cannot be used stops the command here, never halfway."""
    from airgap.errors import AirgapError
    from airgap.services.evidence.attestations import Evidence

    uri = os.environ.get(SITE_KEY_ENV)
    if not uri:
        return Evidence(state, None)
    from airgap.adapters.signers import signer_from_uri  # only for a site key: its URI schemes

    try:
        signer = signer_from_uri(uri, _site_passphrase)
    except AirgapError as exc:
        exc.message = f"the site key ({SITE_KEY_ENV}={uri}): {exc.message}"
        raise
    return Evidence(state, signer)


def report_evidence(evidence: "Evidence") -> dict[str, Any]:
    """Says on stderr which attestation could not be written (the command's outcome stands), and
    returns the fields a ``--json`` document carries about them."""
    for problem in evidence.problems:
        err_console.print(f"[bold yellow]warning: {escape(problem)}[/]", soft_wrap=True)
    return {
        "attestations": [str(p) for p in evidence.written],
        "attestation_problems": list(evidence.problems),
    }


@evidence_app.command("export", epilog=EPILOG)
def evidence_export(
    out: Annotated[Path, typer.Option("--out", "-o", help="The evidence file to write.")] = Path(
        "airgap-evidence.json"
    ),
    state_dir: StateDirOption = None,
    bundle: Annotated[
        Optional[Path],
        typer.Option(
            "--bundle",
            help="Also carry the `airgap check` results this bundle holds into the OSCAL assessment "
            "results (the bundle is verified first).",
        ),
    ] = None,
    key: Annotated[
        Optional[Path],
        typer.Option("--key", help="With --bundle: the publisher's public key, instead of the trust store."),
    ] = None,
) -> None:
    """Write every far-side attestation of the state directory, and the site public keys that
    signed them, into one file to carry back across the gap, signed as a whole by the site key
    (AIRGAP_SITE_KEY: its manifest lists every record with its SHA-256, so a record dropped or
    added is refused by `airgap evidence verify`), with the OSCAL assessment results
    of those checks (`OUT-stem.oscal-assessment-results.json`) and an ISSO's summary
    (`OUT-stem.oscal-summary.md`) beside it.

    With `--bundle`, the bundle is verified in full (exit 3 if it does not verify) and the
    results of the `airgap check` it carries join the far side's in the OSCAL document.
    Every attestation is read back strictly first; a damaged one is named (exit 4) and nothing
    is written. Check the file on the other side with `airgap evidence verify`.

    Example: airgap evidence export --out site-a-evidence.json --bundle model-1.0.0.airgap.tar
    """
    from airgap.services.evidence.export import export

    if key is not None and bundle is None:
        from airgap.errors import UsageError

        raise UsageError("--key names the key of a --bundle, and no --bundle was given")
    state = _state(state_dir)
    result = export(state, out, bundle, key, far_side_evidence(state).signer)
    if result.signed_by is None:
        err_console.print(
            f"[bold yellow]warning: the export is not signed: {SITE_KEY_ENV} is not set, so "
            "`airgap evidence verify` will refuse it (a record removed from it could not be seen)[/]",
            soft_wrap=True,
        )
    if STATE.json:
        _emit_json(
            {
                "out": str(result.path),
                "attestations": result.count,
                "unsigned": result.unsigned,
                "site_key_ids": list(result.site_key_ids),
                "signed_by": result.signed_by,
                "oscal": [str(p) for p in result.oscal],
            }
        )
        return
    keys = ", ".join(k[:16] for k in result.site_key_ids) or "none"
    sealed = f"signed by site key {result.signed_by[:16]}" if result.signed_by else "NOT signed"
    out_console.print(
        f"wrote {result.path}: {result.count} attestations ({result.unsigned} unsigned), site keys: {keys}; "
        f"the export {sealed}",
        markup=False,
    )
    for path in result.oscal:
        out_console.print(f"wrote {path}", markup=False)


@evidence_app.command("verify", epilog=EPILOG)
def evidence_verify(
    evidence_file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE",
            help="An evidence file from `airgap evidence export`, or one .intoto.json envelope.",
        ),
    ],
    key: Annotated[
        Path,
        typer.Option("--key", help="The public key (PEM) that must have signed every attestation."),
    ],
    allow_unsigned: Annotated[
        bool,
        typer.Option("--allow-unsigned", help="List unsigned attestations instead of failing on them."),
    ] = False,
) -> None:
    """Check that FILE is signed as a whole by KEY, carries exactly the records its signed
    manifest lists (none missing, none added, at least one), and that every attestation in it is
    well formed and signed by KEY (exit 3 if not).

    Works on the far side's evidence (site key) and on a bundle's own
    `bundle/attestations/provenance.intoto.json` (publisher key). Keys carried inside the file
    are never trusted: confirm KEY's id out of band.

    Example: airgap evidence verify site-a-evidence.json --key site.pub
    """
    from airgap.adapters.fs import MAX_KEY, read_bytes
    from airgap.services.evidence.export import verify_evidence

    checked = verify_evidence(
        evidence_file, read_bytes(key, "public key", MAX_KEY), str(key), allow_unsigned=allow_unsigned
    )
    rows = [
        {
            "file": c.file,
            "action": c.action,
            "result": c.result,
            "subject": c.subject,
            "signed_by": c.signed_by,
        }
        for c in checked
    ]
    if STATE.json:
        _emit_json({"ok": True, "verified": sum(1 for c in checked if c.signed_by), "attestations": rows})
        return
    table = _Table(title=f"{len(checked)} attestations in {evidence_file}", title_justify="left")
    for col in ("file", "action", "result", "subject", "signed by"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["file"], r["action"], r["result"], r["subject"], (r["signed_by"] or "UNSIGNED")[:16])
    out_console.print(table)
