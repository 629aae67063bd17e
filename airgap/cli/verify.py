"""``airgap verify``, ``airgap inspect`` and ``airgap join``: reading a bundle that crossed the gap."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.markup import escape

if TYPE_CHECKING:
    from rich.table import Table

from airgap.cli.common import (
    EPILOG,
    STATE,
    RichObserver,
    StateDirOption,
    _emit_json,
    _progress,
    _state,
    _Table,
    _trusted,
    app,
    err_console,
    out_console,
)

# ----------------------------------------------------------------------------- verify / inspect / join


@app.command(epilog=EPILOG)
def verify(
    bundle_path: Annotated[
        Path, typer.Argument(metavar="BUNDLE", help="NAME-VERSION.airgap.tar, or its .parts.sha256 index.")
    ],
    key: Annotated[
        Optional[Path],
        typer.Option("--key", help="Trust exactly this public key instead of the trust store."),
    ] = None,
    trust_dir: Annotated[
        Optional[Path],
        typer.Option("--trust-dir", help="A directory of trusted public keys (KEYID.pem)."),
    ] = None,
    state_dir: StateDirOption = None,
    allow_downgrade: Annotated[
        bool, typer.Option("--allow-downgrade", help="UNSAFE: accept a version older than the one installed.")
    ] = False,
    allow_expired: Annotated[
        bool, typer.Option("--allow-expired", help="UNSAFE: accept an expired bundle.")
    ] = False,
) -> None:
    """Prove a bundle is whole, unmodified and signed by a trusted key — without unpacking it.

    Streams the archive once: signature over the manifest first, then every file's size and
    SHA-256, nothing unlisted, every member a plain file with a safe name, no decompression bomb,
    not expired, not older than what is installed. For split bundles, the signed parts index is
    checked first and a damaged part is named; with parity parts (`--parity K`), up to K missing
    or damaged parts are rebuilt in a temporary directory (the media is not touched), checked
    against the signed index, and named. The outcome is appended to the audit log, and an
    accepted bundle gets an attestation in the state directory (signed by AIRGAP_SITE_KEY if set).
    Exit 3 on any integrity or trust failure, 4 if it is not a bundle at all.

    Example: airgap verify tabular-classifier-1.0.0.airgap.tar.parts.sha256 --key publisher.pub
    """
    import warnings as _warnings

    from airgap.cli.evidence import far_side_evidence, report_evidence
    from airgap.services.media.verify import VerifyOptions, verify_and_audit

    state = _state(state_dir)
    evidence = far_side_evidence(state)
    options = VerifyOptions(
        trusted=_trusted(state, key, trust_dir),
        allow_downgrade=allow_downgrade,
        allow_expired=allow_expired,
        installed_versions=state.installed_versions(),
        installed_manifests=state.installed_manifests(),
        blob_store=state.blob_store,
    )
    with _progress() as progress, _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        result = verify_and_audit(bundle_path, state, options, RichObserver(progress))
    evidence.verified(bundle_path, result)
    attested = report_evidence(evidence)
    m = result.manifest
    if STATE.json:
        _emit_json(
            {
                "ok": True,
                "name": m.name,
                "version": m.version,
                "created": m.created,
                "expires": m.expires,
                "key_id": result.key_id,
                "manifest_sha256": result.manifest_sha256,
                "files": len(m.files),
                "bytes": m.total_size,
                "warnings": list(result.warnings),
                "repaired": [r.to_json() for r in result.handle.repaired],
                **attested,
            }
        )
        return
    for r in result.handle.repaired:
        out_console.print(f"repaired {r.part} from parity ({r.was}; the media is unchanged)", markup=False)
    for note in result.warnings:
        err_console.print(f"[bold yellow]{escape(note)}[/]")
    out_console.print(
        f"[green]verified[/] {escape(f'{m.name} {m.version}')}: {len(m.files)} files, "
        f"{m.total_size / 1e6:.1f} MB, "
        f"signed by {result.key_id[:16]}…, manifest sha256 {result.manifest_sha256[:16]}…"
    )


@app.command(epilog=EPILOG)
def inspect(
    bundle_path: Annotated[
        Path, typer.Argument(metavar="BUNDLE", help="NAME-VERSION.airgap.tar, or its .parts.sha256 index.")
    ],
) -> None:
    """Show what is inside a bundle — images, wheels, model, checklist, signer, parts — without extracting.

    Reads only the control files at the front of the archive. It proves nothing: run
    `airgap verify` for that.

    Example: airgap inspect tabular-classifier-1.0.0.airgap.tar
    """
    from airgap.services.media.inspect import inspect_bundle

    info = inspect_bundle(bundle_path)
    if STATE.json:
        _emit_json(info)
        return
    table = _Table(
        title=f"{info['name']} {info['version']} (unverified: run airgap verify)",
        show_header=False,
        title_justify="left",
    )
    table.add_column(style="bold")
    table.add_column()
    table.add_row("format", info["format"])
    table.add_row("created", f"{info['created']} · expires {info['expires'] or 'never'}")
    table.add_row("signer", f"key {info['key_id']}")
    table.add_row("tool", info["tool"])
    for img in info["images"]:
        table.add_row(
            "image", f"{img.get('name')} {img.get('manifest_digest')} ({len(img.get('layers', []))} layers)"
        )
    wheels = info["wheels"]
    table.add_row("wheels", f"{len(wheels)}: " + ", ".join(wheels[:8]) + (" …" if len(wheels) > 8 else ""))
    table.add_row("model", ", ".join(info["model"]))
    table.add_row("checklist", _checklist_table(info["policy"]) if info["policy"] else "not evaluated")
    stored = f", {len(info['blobs'])} blobs" if info["blobs"] else ""
    if info["external"]:
        stored += f", {len(info['external'])} left out (external: from the far side's blob store)"
    table.add_row("size", f"{info['bytes'] / 1e6:.1f} MB in {len(info['files'])} files{stored}")
    for part in info["parts"]:
        table.add_row("part", f"{part['name']} {part['sha256'][:16]}…")
    out_console.print(table)


def _checklist_table(policy: dict[str, Any]) -> "Table":
    """The signed checklist summary as a table: one row per status, one column per severity."""
    summary = policy.get("summary") or {}
    verdict = "FAIL" if policy.get("failed") else "PASS"
    inner = _Table(
        title=f"{verdict} at --fail-on {policy.get('fail_on', '?')}",
        title_justify="left",
        box=None,
        pad_edge=False,
    )
    inner.add_column("status")
    for severity in ("high", "medium", "low", "total"):
        inner.add_column(severity, justify="right")
    for status, counts in summary.items():
        if isinstance(counts, dict):
            inner.add_row(
                status.replace("_", " "), *(str(counts.get(k, 0)) for k in ("high", "medium", "low", "total"))
            )
    return inner


@app.command(epilog=EPILOG)
def join(
    index: Annotated[
        Path, typer.Argument(metavar="INDEX", help="The bundle's .parts.sha256 index (its parts beside it).")
    ],
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output", "-o", help="The joined bundle (default: the index name without .parts.sha256)."
        ),
    ] = None,
    key: Annotated[Optional[Path], typer.Option("--key", help="Trust exactly this public key.")] = None,
    state_dir: StateDirOption = None,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Hash every part, data and parity, and rebuild the bad ones from parity in place "
            "(beside the index), so the set of parts is whole again.",
        ),
    ] = False,
) -> None:
    """Reassemble a split bundle into one file, after every part is checked against the signed index.

    With parity parts, up to K missing or damaged parts are rebuilt (checked against the signed
    index) and named; otherwise a damaged or missing part is named: copy that one part again from
    the media, then re-run.

    Example: airgap join tabular-classifier-1.0.0.airgap.tar.parts.sha256 --repair
    """
    from airgap.services.media.inspect import join_bundle

    state = _state(state_dir)
    with _progress() as progress:
        joined = join_bundle(index, output, _trusted(state, key, None), RichObserver(progress), repair)
    if STATE.json:
        _emit_json({"joined": str(joined.path), "repaired": [r.to_json() for r in joined.repaired]})
        return
    for r in joined.repaired:
        where = f"rewritten as {r.path}" if repair else "the media is unchanged"
        out_console.print(f"repaired {r.part} from parity ({r.was}; {where})", markup=False)
    out_console.print(f"joined {joined.path}; now run: airgap verify {joined.path}", markup=False)
