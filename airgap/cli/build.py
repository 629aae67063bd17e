"""``airgap bundle``, ``pack`` and ``check``: the workstation's side, from a project to a signed bundle."""

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from airgap.cli.common import (
    EPILOG,
    STATE,
    RichObserver,
    StateDirOption,
    _emit_json,
    _load_signing_key,
    _progress,
    _state,
    _Table,
    _trusted,
    _unsafe_warnings,
    app,
    err_console,
    out_console,
)
from airgap.cli.media import PARITY_HELP, parity_count
from airgap.errors import AnswerIsNo, UsageError
from airgap.services.media import format_options

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airgap.core.inventory import DeltaPlan
    from airgap.core.policy import RuleResult
    from airgap.services.build.check import CheckOutcome

# ----------------------------------------------------------------------------- bundle
UnsafeSignOption = Annotated[
    bool,
    typer.Option(
        "--unsafe-sign-failed-policy",
        help="UNSAFE: sign although the policy evaluation failed (recorded in the signed manifest).",
    ),
]
# The formats this airgap writes, the default first: the choices and help of --format (read
# from a list of names, so that the format modules are imported only by a command that uses one).
FormatOption = Annotated[
    str,
    typer.Option(
        "--format",
        metavar="|".join(format_options.OPTIONS),
        help="Bundle format: "
        + "; ".join(
            format_options.SUMMARIES[o] + (" (default)" if o == format_options.DEFAULT else "")
            for o in format_options.OPTIONS
        )
        + ".",
    ),
]


def _check_format(value: str) -> None:
    """Refuses an unknown --format before any key is unlocked or anything is built."""
    from airgap.services.media import formats

    known = sorted(formats.names(), key=lambda option: option != formats.DEFAULT)
    if value not in known:
        choices = " or ".join(o + (" (the default)" if o == formats.DEFAULT else "") for o in known)
        raise UsageError(f"--format {value!r}: choose {choices}")


@app.command(epilog=EPILOG)
def bundle(
    project_dir: Annotated[
        Path,
        typer.Argument(
            metavar="PROJECT",
            help="The project directory holding airgap.yaml, or the airgap.yaml file itself.",
        ),
    ] = Path("."),
    profile: Annotated[
        Optional[Path],
        typer.Option(
            "--profile", help="The far-side target profile from `airgap probe` (overrides target.profile)."
        ),
    ] = None,
    host_wheelhouse: Annotated[
        bool,
        typer.Option(
            "--host-wheelhouse",
            help="Also resolve a wheelhouse for the profiled host's own Python (for `install --to venv`).",
        ),
    ] = False,
    host_python: Annotated[
        Optional[str],
        typer.Option("--python", metavar="X.Y|PATH", help="Which of the host's interpreters to target."),
    ] = None,
    output: Annotated[
        Optional[Path],
        typer.Option("--output", "-o", help="Where staging directories go (default: PROJECT/build)."),
    ] = None,
    index_url: Annotated[
        str, typer.Option("--index-url", help="The package index (a mirror behind a proxy works too).")
    ] = "https://pypi.org/simple",
    ca_bundle: Annotated[
        Optional[Path],
        typer.Option(
            "--ca-bundle",
            help="CA certificates for the index (TLS-inspecting proxies); default from PIP_CERT, "
            "REQUESTS_CA_BUNDLE, SSL_CERT_FILE or the system bundle.",
        ),
    ] = None,
    cache_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--cache-dir", help="Wheel store and lock cache (default ~/.cache/airgap or AIRGAP_CACHE_DIR)."
        ),
    ] = None,
    key: Annotated[
        Optional[str],
        typer.Option(
            "--key",
            metavar="KEY_URI",
            help="Sign and pack the bundle with this key: file:PATH or a plain path to a private key "
            "from `airgap keys generate`; its passphrase comes from AIRGAP_KEY_PASSPHRASE or a prompt. "
            "Without it, only staging is written.",
        ),
    ] = None,
    part_size: Annotated[
        Optional[str],
        typer.Option(
            "--part-size",
            metavar="SIZE",
            help="Split for media: 4G (FAT32), 4.7G (DVD), 25G (BD); decimal units.",
        ),
    ] = None,
    parity: Annotated[Optional[str], typer.Option("--parity", metavar="K", help=PARITY_HELP)] = None,
    expires: Annotated[
        Optional[str],
        typer.Option(
            "--expires",
            metavar="90d|DATE",
            help="The far side refuses the bundle after this (90d counts from signing).",
        ),
    ] = None,
    unsafe_sign_failed_policy: UnsafeSignOption = False,
    bundle_format: FormatOption = format_options.DEFAULT,
    keep_images: Annotated[
        bool,
        typer.Option(
            "--keep-images",
            help="Keep the images the build made and did not ship, and the one the tag named before "
            "(default: removed, so that re-bundling does not fill the disk).",
        ),
    ] = False,
    no_build_cache: Annotated[
        bool,
        typer.Option(
            "--no-build-cache",
            help="Run every step of the image build again instead of reusing the engine's cached "
            "steps (the image must come out the same; this proves it).",
        ),
    ] = False,
    have: Annotated[
        Optional[Path],
        typer.Option(
            "--have",
            metavar="INVENTORY",
            help="A delta: leave out every blob the far side's `airgap inventory` says it holds "
            "(still listed and signed; the far side checks each one). Default: a full bundle.",
        ),
    ] = None,
    since: Annotated[
        Optional[Path],
        typer.Option(
            "--since",
            metavar="PREVIOUS_BUNDLE",
            help="A delta: leave out every blob a previous bundle listed (the far side installed it); "
            "its signature is checked with --since-key or the trust store.",
        ),
    ] = None,
    since_key: Annotated[
        Optional[Path],
        typer.Option("--since-key", help="Trust exactly this public key for the --since bundle."),
    ] = None,
    state_dir: StateDirOption = None,
) -> None:
    """Build everything the far side needs, on a connected workstation with a Docker Engine.

    Resolves a hash-locked wheelhouse inside the base image (pinned by digest), builds the model
    image from it with the network disabled, runs the golden inputs inside that image to record
    the outputs the far side will be held to, and writes PROJECT/build/NAME-VERSION/.

    Proxy variables (HTTPS_PROXY, NO_PROXY) are passed to the resolver; SOURCE_DATE_EPOCH fixes
    the timestamps.

    Everything that can be checked without the engine (project, model, golden inputs against the
    model's inputs, profile, templates, the target's architecture) is checked first. Interrupted
    (Ctrl-C, SIGTERM, SIGHUP), it removes its partial work; the next run reclaims what a harder
    kill left behind, and images the build made but did not ship are removed (--keep-images).

    Examples:

      airgap bundle examples/tabular --profile site-a.json --host-wheelhouse

      airgap bundle examples/tabular/airgap.yaml --key publisher.key --part-size 4G --expires 90d

      airgap bundle examples/tabular --key publisher.key --have site-a.inventory.json
    """
    count = parity_count(parity, part_size)
    # What the far side holds is read (and a bad inventory refused) before anything else: it is
    # the one input that may come from the far side's media.
    held = _held(have, since, since_key, state_dir)
    from airgap.services.build.model_files import refuse_early

    refuse_early(project_dir)  # before the build's libraries (Docker SDK, onnxruntime, ...) load
    from airgap.adapters.docker_engine import DockerEngine
    from airgap.adapters.wheels import ResolverSettings, default_ca_bundle
    from airgap.core.build_record import BuildRecord
    from airgap.core.bundle_format import parse_size
    from airgap.services.build import bundle as svc
    from airgap.services.build.wheelhouse import default_cache_dir

    _check_format(bundle_format)
    size = parse_size(part_size) if part_size else None
    if held and key is None:
        raise UsageError("--have and --since shape the signed bundle: pass --key too")
    from airgap.services.media import formats

    if held and not formats.get(bundle_format).supports_external_blobs:
        raise UsageError("only a v2 bundle can leave out what the far side holds: drop --format v1")
    signer = _load_signing_key(key) if key else None
    options = svc.BundleOptions(
        project_dir=project_dir,
        output_dir=output,
        target_profile=profile,
        host_wheelhouse=host_wheelhouse,
        host_python=host_python,
        settings=ResolverSettings(index_url=index_url, ca_bundle=ca_bundle or default_ca_bundle()),
        cache_dir=cache_dir or default_cache_dir(),
        signer=signer,
        keep_images=keep_images,
        build_cache=not no_build_cache,
    )
    STATE.on_interrupt = (
        "nothing was written and partial work was removed (a run killed harder is cleaned up by the next)"
    )
    with _progress() as progress:
        result = svc.bundle(options, DockerEngine(), RichObserver(progress))
        for note in result.cleanup:
            err_console.print(note, soft_wrap=True, markup=False)
        if result.compliance.failed:
            _print_blocking(result.compliance)
        if signer is not None:
            STATE.on_interrupt = (
                f"{result.staging} is complete but no bundle was written; sign it with `airgap pack` "
                "or bundle again"
            )
        delta = _delta_plan(result.staging, held, RichObserver(progress)) if held else None
        with _unsafe_warnings():
            packed = svc.seal(
                result,
                signer,
                part_size=size,
                expires=expires,
                observer=RichObserver(progress),
                unsafe_sign_failed_policy=unsafe_sign_failed_policy,
                parity=count,
                bundle_format=bundle_format,
                external=delta.external if delta else frozenset(),
            )
    rec = result.record
    if STATE.json:
        _emit_json(
            {
                "staging": str(result.staging),
                "record": rec,
                "bundle": [str(p) for p in packed.files] if packed else None,
                "manifest_sha256": packed.manifest_sha256 if packed else None,
                "delta": delta.to_json() if delta else None,
                "open_below_gate": [
                    {"rule": r.rule.id, "severity": r.rule.severity, "findings": len(r.findings)}
                    for r in result.compliance.below_gate
                ],
            }
        )
        return
    # The writer's in-memory record: build.json's fields and this run's (downloads, phase timings).
    built_record = BuildRecord.from_mapping(rec)
    image = built_record.image
    table = _Table(
        title=f"bundle {built_record.name} {built_record.version}", show_header=False, title_justify="left"
    )
    table.add_column(style="bold")
    table.add_column()
    table.add_row("base image", built_record.base_image.resolved)
    table.add_row("model image", f"{image.tag} ({(image.id or '')[:19]}) user {image.user}")
    for kind, wh in built_record.wheelhouses.items():
        built = f", built offline: {', '.join(wh.built_from_sdist)}" if wh.built_from_sdist else ""
        table.add_row(
            f"{kind} wheelhouse",
            f"{len(wh.pins)} pins, {wh.downloaded} downloaded{built} · "
            f"lock sha256 {(wh.lock_sha256 or '')[:16]}…",
        )
    model = built_record.model
    table.add_row("model", f"{model.file} (onnxruntime {model.onnxruntime})")
    table.add_row("checklist", _summary_line(result.compliance))
    table.add_row("phases", ", ".join(f"{k} {v:.1f}s" for k, v in built_record.phases.items()))
    out_console.print(table)
    if result.compliance.below_gate:
        _print_findings(
            result.compliance.below_gate,
            f"open findings below --fail-on {result.compliance.fail_on} (not blocking: review them)",
        )
    out_console.print(f"staging directory: {result.staging}", markup=False)
    if packed is None:
        out_console.print("not signed: pass --key to write the signed bundle that crosses the gap")
    else:
        for path in packed.files:
            out_console.print(f"bundle: {path}", markup=False)
        out_console.print(
            f"signed by key {packed.manifest.key_id[:16]}…, manifest sha256 {packed.manifest_sha256[:16]}…, "
            f"{packed.total_size / 1e6:.1f} MB in {len(packed.parts)} file(s)"
        )
        if delta is not None:
            out_console.print(
                f"delta: left out {len(delta.external)} of {delta.blobs_total} blobs "
                f"({delta.bytes_left_out / 1e6:.1f} of {delta.bytes_total / 1e6:.1f} MB) the far side holds",
                markup=False,
            )


def _held(
    have: Optional[Path], since: Optional[Path], since_key: Optional[Path], state_dir: Optional[Path]
) -> "list[dict[str, int]]":
    """What the far side holds, from its inventory and a previous bundle (checked first)."""
    from airgap.services.build import delta as svc

    held = []
    if have is not None:
        held.append(svc.load_inventory(have).held())
    if since is not None:
        held.append(svc.held_since(since, _trusted(_state(state_dir), since_key, None)))
    return held


def _delta_plan(staging: Path, held: "list[dict[str, int]]", observer: RichObserver) -> "DeltaPlan":
    from airgap.services.build import delta as svc

    return svc.plan(svc.content_hashes(svc.bundle_files(staging), observer), *held)


@app.command(epilog=EPILOG)
def pack(
    staging: Annotated[
        Path,
        typer.Argument(
            metavar="STAGING", help="A staging directory written by `airgap bundle` (build/NAME-VERSION)."
        ),
    ],
    key: Annotated[
        str,
        typer.Option(
            "--key",
            metavar="KEY_URI",
            help="The signing key: file:PATH or a plain path (passphrase: AIRGAP_KEY_PASSPHRASE).",
        ),
    ],
    output: Annotated[
        Optional[Path],
        typer.Option("--output", "-o", help="Where the bundle goes (default: beside the staging directory)."),
    ] = None,
    part_size: Annotated[
        Optional[str],
        typer.Option(
            "--part-size", metavar="SIZE", help="Split for media: 4G (FAT32), 4.7G (DVD); decimal units."
        ),
    ] = None,
    parity: Annotated[Optional[str], typer.Option("--parity", metavar="K", help=PARITY_HELP)] = None,
    expires: Annotated[
        Optional[str],
        typer.Option(
            "--expires", metavar="90d|DATE", help="The far side refuses the bundle after this (90d from now)."
        ),
    ] = None,
    unsafe_sign_failed_policy: UnsafeSignOption = False,
    bundle_format: FormatOption = format_options.DEFAULT,
) -> None:
    """Sign and pack an existing staging directory (what `airgap bundle --key` does as its last step).

    Refuses (exit 1) a staging directory whose policy evaluation failed.

    Example: airgap pack examples/tabular/build/tabular-classifier-1.0.0 --key publisher.key --part-size 4G
    """
    count = parity_count(parity, part_size)
    from airgap.core.bundle_format import parse_size
    from airgap.services.build import bundle as svc

    _check_format(bundle_format)
    size = parse_size(part_size) if part_size else None
    signer = _load_signing_key(key)
    with _progress() as progress, _unsafe_warnings():
        packed = svc.pack_staging(
            staging,
            output or staging.parent,
            signer,
            part_size=size,
            expires=expires,
            observer=RichObserver(progress),
            unsafe_sign_failed_policy=unsafe_sign_failed_policy,
            parity=count,
            bundle_format=bundle_format,
        )
    if STATE.json:
        _emit_json({"bundle": [str(p) for p in packed.files], "manifest_sha256": packed.manifest_sha256})
        return
    for path in packed.files:
        out_console.print(f"bundle: {path}", markup=False)


def _summary_line(outcome: "CheckOutcome") -> str:
    counts: dict[str, int] = {}
    for r in outcome.evaluation.results:
        counts[r.status] = counts.get(r.status, 0) + 1
    verdict = "FAIL" if outcome.failed else "PASS"
    return f"{verdict} at --fail-on {outcome.fail_on}: " + ", ".join(
        f"{v} {k}" for k, v in sorted(counts.items())
    )


def _print_blocking(outcome: "CheckOutcome") -> None:
    _print_findings(outcome.blocking, "open findings")


def _print_findings(results: "Sequence[RuleResult]", title: str) -> None:
    table = _Table(title=title, title_justify="left")
    for col in ("rule", "severity", "object", "field", "fix"):
        table.add_column(col)
    for r in results:
        for f in r.findings or (None,):
            table.add_row(
                r.rule.id,
                r.rule.severity,
                f.object.describe() if f else "",
                getattr(f, "field", "") if f else "",
                r.rule.fix.splitlines()[0] if r.rule.fix else "",
            )
    err_console.print(table)


@app.command(epilog=EPILOG)
def check(
    target: Annotated[
        Path,
        typer.Argument(metavar="STAGING|BUNDLE", help="A staging directory, or a bundle (verified first)."),
    ],
    fail_on: Annotated[
        Optional[str],
        typer.Option(
            "--fail-on", metavar="high|medium|low", help="Exit 1 when open findings at or above remain."
        ),
    ] = None,
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output", "-o", help="Where compliance/ files go (default: STAGING/compliance, ./compliance)."
        ),
    ] = None,
    project_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--project", help="Take waivers and extra policy directories from this project's airgap.yaml."
        ),
    ] = None,
    key: Annotated[Optional[Path], typer.Option("--key", help="Trust exactly this public key.")] = None,
    state_dir: StateDirOption = None,
) -> None:
    """Evaluate the STIG / Pod Security / FIPS / supply-chain policies on a staging directory or bundle.

    Writes results.json, checklist.md and checklist.cklb (STIG Viewer 3), and the OSCAL component
    definition and assessment results with their summary (oscal-*). A rule no tool can
    decide is `not_reviewed`, with the reason. Waivers (with their written justification) come
    from the bundle's build record, or from --project; they appear in the checklist as overrides.

    Example: airgap check examples/tabular/build/tabular-classifier-1.0.0 --fail-on medium
    """
    from airgap.services.build import check as svc

    with _progress() as progress:
        opened = svc.open_target(target, _state(state_dir), key, RichObserver(progress))
    reader, default_out = opened.reader, opened.default_output
    inputs = svc.check_inputs(reader, project_dir, fail_on)
    outcome = svc.check_bundle(
        reader,
        evaluated_at=inputs.evaluated_at,
        waivers=inputs.waivers,
        fail_on=inputs.fail_on,
        policy_dirs=inputs.policy_dirs,
    )
    written = svc.write_compliance(outcome, output or default_out)
    if STATE.json:
        _emit_json(json.loads(outcome.files["results.json"]) | {"written": [str(p) for p in written]})
    else:
        table = _Table(title=f"policy results ({_summary_line(outcome)})", title_justify="left")
        for col in ("rule", "severity", "status", "references", "detail"):
            table.add_column(col)
        for r in outcome.evaluation.results:
            if r.status != "open" and not r.waived:
                continue
            refs = ", ".join(b.group_id for b in r.rule.references.benchmarks if b.group_id)
            detail = f"{r.findings[0].object.describe()}: {r.findings[0].message}" if r.findings else r.reason
            status = r.status + (" (waived)" if r.waived else "")
            table.add_row(r.rule.id, r.rule.severity, status, refs, detail)
        if table.row_count:
            out_console.print(table)
        out_console.print(_summary_line(outcome), markup=False)
        out_console.print(f"wrote {', '.join(str(p) for p in written)}", markup=False)
    if outcome.failed:
        raise AnswerIsNo(
            f"{len(outcome.blocking)} open finding(s) at or above {outcome.fail_on}",
            hint=f"see {(output or default_out) / 'checklist.md'}",
        )
