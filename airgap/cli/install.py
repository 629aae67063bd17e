"""``airgap install``, ``smoke``, ``status``, ``rollback``, ``uninstall``: the model on the far side."""

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape
from rich.text import Text

from airgap.cli.accept import fail_if_missed, render, report_document, run_accept
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
    _unsafe_warnings,
    app,
    err_console,
    out_console,
)
from airgap.cli.evidence import far_side_evidence, report_evidence
from airgap.cli.rendering import ConsoleObserver
from airgap.cli.wiring import real_adapters
from airgap.errors import AnswerIsNo, UsageError

if TYPE_CHECKING:
    from airgap.services.deploy.install import Installer
    from airgap.services.evidence.attestations import Evidence
    from airgap.services.state import State


def target_modules() -> list[str]:
    """The built-in ``--to`` names, read from the file names of the target modules (``podman_kube.py``
    is ``--to podman-kube``) so that the help does not import every target and its adapters; the
    registry (``targets.names()``) is what ``--to`` is checked against when a command runs."""
    import airgap

    folder = Path(airgap.__file__).parent / "services" / "deploy" / "targets"
    return sorted(p.stem.replace("_", "-") for p in folder.glob("*.py") if not p.name.startswith("_"))


# ----------------------------------------------------------------------------- install and after
TargetOption = Annotated[
    Optional[str],
    typer.Option(
        "--to",
        metavar="|".join(target_modules()),
        help="Where to install (default: what this host has, and said).",
    ),
]


def _installer(
    state_dir: Optional[Path],
    progress: Optional[ConsoleObserver] = None,
    evidence: "Optional[Evidence]" = None,
) -> "Installer":
    from airgap.services.deploy.install import Installer

    return Installer(_state(state_dir), RichObserver(progress), evidence, adapters=real_adapters())


def _enable_unit(state: "State", name: str) -> Path:
    """Installs and enables the unit the venv install wrote (the real systemctl)."""
    from airgap.adapters.systemd import Systemctl
    from airgap.services.deploy.serve import enable_unit

    return enable_unit(state, name, Systemctl())


def _resolve_target(to: Optional[str]) -> str:
    from airgap.services.deploy.install import Installer

    if to:
        return to
    target, why = Installer.default_target(real_adapters())
    err_console.print(f"installing with --to {target}: {why}", markup=False)
    return target


@app.command(epilog=EPILOG)
def install(
    bundle_path: Annotated[
        Path, typer.Argument(metavar="BUNDLE", help="NAME-VERSION.airgap.tar, or its .parts.sha256 index.")
    ],
    to: TargetOption = None,
    port: Annotated[
        Optional[int],
        typer.Option("--port", min=1024, max=65535, help="Serve on this host port (default: the bundle's)."),
    ] = None,
    registry: Annotated[
        Optional[str],
        typer.Option(
            "--registry", metavar="HOST:PORT", help="The far side's registry (registry, kubernetes)."
        ),
    ] = None,
    insecure_registry: Annotated[
        bool, typer.Option("--insecure-registry", help="UNSAFE outside a lab: plain HTTP to the registry.")
    ] = False,
    ca_bundle: Annotated[
        Optional[Path],
        typer.Option("--ca-bundle", help="CA certificates of the registry."),
    ] = None,
    context: Annotated[
        Optional[str],
        typer.Option("--context", help="kubectl context (kubernetes)."),
    ] = None,
    namespace: Annotated[Optional[str], typer.Option("--namespace", help="Kubernetes namespace.")] = None,
    python: Annotated[
        Optional[str],
        typer.Option("--python", help="The interpreter for --to venv (default: the one running airgap)."),
    ] = None,
    key: Annotated[Optional[Path], typer.Option("--key", help="Trust exactly this public key.")] = None,
    state_dir: StateDirOption = None,
    allow_downgrade: Annotated[
        bool,
        typer.Option("--allow-downgrade", help="UNSAFE: install a version older than the one installed."),
    ] = False,
    allow_expired: Annotated[
        bool, typer.Option("--allow-expired", help="UNSAFE: install an expired bundle.")
    ] = False,
    unsafe_install_failed_policy: Annotated[
        bool,
        typer.Option(
            "--unsafe-install-failed-policy",
            help="UNSAFE: install a bundle whose signed policy evaluation failed (or is missing).",
        ),
    ] = False,
    accept: Annotated[
        bool,
        typer.Option(
            "--accept",
            help="Then prove the deployment contract here, as `airgap accept` does (exit 1 if missed).",
        ),
    ] = False,
    systemd: Annotated[
        bool,
        typer.Option(
            "--systemd",
            help="With --to venv: also install and enable the systemd unit that serves it "
            "(`airgap serve NAME`); without it the unit is only written to STATE/systemd/.",
        ),
    ] = False,
    candidate: Annotated[
        bool,
        typer.Option(
            "--candidate",
            help="Run it beside the current version (own name and port), without switching: "
            "then `airgap compare` and `airgap promote`.",
        ),
    ] = False,
) -> None:
    """Verify, load, run and prove the model answers — on this host, offline.

    Runs the same verification as `airgap verify` first and loads nothing before it passes. Then
    streams what the target needs out of the bundle (every byte re-hashed), loads the image, runs
    it hardened (read-only root, no capabilities, non-root, limits), waits for readiness and sends
    the golden inputs: a mismatch exits 1 and restores the previous version. Installing the same
    bundle twice does nothing; an install killed at any point is undone or completed by the next.

    Example: airgap install tabular-classifier-1.0.0.airgap.tar --to docker --port 8080
    """
    from airgap.services.deploy.install import InstallOptions

    if candidate and accept:
        raise UsageError(
            "--accept proves the current version; a candidate is judged with `airgap compare NAME`",
            hint="drop --accept, or accept the candidate after `airgap promote NAME`",
        )
    target = _resolve_target(to)
    if systemd and (target != "venv" or candidate):
        raise UsageError(
            "--systemd is for the current version of a --to venv install: the container targets "
            "run under their runtime's own restart policy",
            hint="drop --systemd, or install with --to venv",
        )
    state = _state(state_dir)
    options = InstallOptions(
        target=target,
        port=port,
        registry=registry,
        insecure_registry=insecure_registry,
        ca_bundle=ca_bundle,
        kube_context=context,
        namespace=namespace,
        python=python,
        allow_downgrade=allow_downgrade,
        allow_expired=allow_expired,
        trusted=_trusted(state, key, None),
        unsafe_install_failed_policy=unsafe_install_failed_policy,
        candidate=candidate,
    )
    evidence = far_side_evidence(state)
    STATE.on_interrupt = "run the same `airgap install` again: it completes or undoes what was started"
    try:
        with _progress() as progress, _unsafe_warnings():
            result = _installer(state_dir, progress, evidence).install(bundle_path, options)
            unit = _enable_unit(state, result.receipt.name) if systemd else None
            report = run_accept(state_dir, result.receipt.name, target, progress) if accept else None
            if report is not None:
                evidence.accepted(report)
    finally:
        attested = report_evidence(evidence)
    r = result.receipt
    if STATE.json:
        _emit_json(
            {
                "acceptance": report_document(report) if report is not None else None,
                "name": r.name,
                "version": r.version,
                "target": r.target,
                "candidate": candidate,
                "nothing_to_do": result.nothing_to_do,
                "recovered": list(result.recovered),
                "receipt": r.to_json(),
                "prediction": result.prediction,
                "curl": result.curl,
                "serve": result.serve,
                "systemd_unit": str(unit) if unit else None,
                "repaired": list(result.repaired),
                **attested,
            }
        )
        if report is not None:
            fail_if_missed(report)
        return
    for part in result.repaired:
        out_console.print(f"repaired {part} from parity", markup=False)
    for note in result.recovered:
        err_console.print(f"[yellow]{escape(note)}[/]")
    if result.nothing_to_do:
        out_console.print(
            f"{r.name} {r.version} is already installed with --to {r.target} and healthy: nothing to do",
            markup=False,
        )
        if report is not None:
            render(report)
            fail_if_missed(report)
        return
    where = f"http://127.0.0.1:{r.port}" if r.target != "venv" else r.extra.get("venv")
    if r.target == "kubernetes" and r.extra.get("deployment"):
        where = f"deployment/{r.extra['deployment']} in namespace {r.extra.get('namespace')}"
    what = "installed the candidate" if candidate else "installed"
    out_console.print(
        f"[green]{what}[/] {escape(f'{r.name} {r.version} --to {r.target} at {where}')}: smoke test passed"
    )
    if candidate:
        out_console.print(
            f"beside the current version; next: airgap compare {r.name} --to {r.target}, "
            f"then airgap promote {r.name} --to {r.target}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    # Commands to paste: printed whole on one line each, never wrapped or styled.
    if result.serve:
        out_console.print(f"serve it: {result.serve}", markup=False, highlight=False, soft_wrap=True)
    if unit is not None:
        out_console.print(
            f"enabled and started the systemd unit {unit}", markup=False, highlight=False, soft_wrap=True
        )
    elif r.target == "venv" and not candidate:
        from airgap.services.deploy.serve import unit_path

        out_console.print(
            f"as a service: {unit_path(state, r.name)} (install --systemd installs and enables it)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if result.curl:
        out_console.print(f"try it: {result.curl}", markup=False, highlight=False, soft_wrap=True)
    if result.prediction:
        answered = json.dumps(result.prediction["outputs"])
        out_console.print(f"it answers: {answered}", markup=False, highlight=False, soft_wrap=True)
    if report is not None:
        render(report)
        fail_if_missed(report)


@app.command(epilog=EPILOG)
def smoke(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The installed bundle's name.")],
    to: Annotated[str, typer.Option("--to", help="Which installation.")] = "docker",
    state_dir: StateDirOption = None,
) -> None:
    """Send the golden inputs to an installed model again and compare with the recorded outputs.

    The outcome, with the number of golden cases passed and failed, is kept as an attestation in
    the state directory (signed by AIRGAP_SITE_KEY if set; `airgap evidence export` carries it).

    Example: airgap smoke tabular-classifier --to docker
    """
    from airgap.services.media.extraction import read_contract

    evidence = far_side_evidence(_state(state_dir))
    current, mismatches = _installer(state_dir).smoke(name, to)
    evidence.smoked(current, read_contract(Path(current.content)), mismatches)
    attested = report_evidence(evidence)
    if STATE.json:
        _emit_json(
            {
                "name": name,
                "version": current.version,
                "ok": not mismatches,
                "mismatches": [m.line() for m in mismatches],
                **attested,
            }
        )
    if mismatches:
        for m in mismatches[1:]:
            err_console.print(m.line(), markup=False)
        raise AnswerIsNo(f"smoke test of {name} {current.version} ({to}) failed: {mismatches[0].line()}")
    if not STATE.json:
        out_console.print(
            f"[green]ok[/] {escape(f'{name} {current.version} ({to})')} answers its golden inputs"
        )


@app.command(epilog=EPILOG)
def status(state_dir: StateDirOption = None) -> None:
    """What is installed where, which version, whether it is healthy, and what rollback would restore.

    Example: airgap status
    """
    rows = _installer(state_dir).status()
    if STATE.json:
        _emit_json(rows)
        return
    if not rows:
        out_console.print("nothing is installed")
        return
    table = _Table(title="installed", title_justify="left")
    # The name is what every other command takes: never cut; the rest folds onto more lines.
    table.add_column("name", no_wrap=True, min_width=max(len(r["name"]) for r in rows))
    for col in ("target", "version", "healthy", "where", "previous", "installed at"):
        table.add_column(col, overflow="fold")
    for r in rows:
        health = Text("yes", style="green") if r["healthy"] else Text("no", style="red")
        if r["interrupted"]:
            health.append(" (an install was interrupted: re-run it)")
        where = r["container"] or ""
        if r["target"] == "venv":
            where = r.get("venv") or where
        elif r["port"]:
            where += f" :{r['port']}"
        version = r["version"]
        if r.get("candidate"):
            beside = r["candidate"]
            version += f" (candidate {beside['version']}" + (
                f" :{beside['port']})" if r["target"] != "venv" and beside.get("port") else ")"
            )
        table.add_row(r["name"], r["target"], version, health, where, r["previous"] or "-", r["installed_at"])
    out_console.print(table)


@app.command(epilog=EPILOG)
def rollback(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The installed bundle's name.")],
    to: Annotated[str, typer.Option("--to", help="Which installation.")] = "docker",
    state_dir: StateDirOption = None,
) -> None:
    """Go back to the previously installed version (smoke-tested before it is committed).

    Example: airgap rollback tabular-classifier --to docker
    """
    from airgap.services.deploy.install import InstallOptions

    with _progress() as progress:
        result = _installer(state_dir, progress).rollback(name, to, InstallOptions(target=to))
    if STATE.json:
        _emit_json({"name": name, "version": result.receipt.version, "target": to})
    else:
        out_console.print(
            f"[green]rolled back[/] {escape(f'{name} to {result.receipt.version} ({to})')}; smoke test passed"
        )


@app.command(epilog=EPILOG)
def uninstall(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The installed bundle's name.")],
    to: Annotated[str, typer.Option("--to", help="Which installation.")] = "docker",
    state_dir: StateDirOption = None,
) -> None:
    """Remove an installation: containers, images, virtualenvs. The audit log is kept.

    Example: airgap uninstall tabular-classifier --to docker
    """
    removed = _installer(state_dir).uninstall(name, to)
    if STATE.json:
        _emit_json({"removed": removed})
    else:
        out_console.print(
            f"removed {name} ({to}): " + (", ".join(removed) or "nothing was running"), markup=False
        )
