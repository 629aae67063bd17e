"""``airgap accept``: the installed model proves its deployment contract where it runs."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.text import Text

from airgap.cli.common import (
    EPILOG,
    STATE,
    RichObserver,
    StateDirOption,
    _emit_json,
    _progress,
    _state,
    _Table,
    app,
    err_console,
    out_console,
)
from airgap.cli.rendering import ConsoleObserver
from airgap.cli.wiring import real_adapters
from airgap.errors import AnswerIsNo, Inconclusive

if TYPE_CHECKING:
    from airgap.services.deploy.accept import AcceptReport


def run_accept(
    state_dir: Optional[Path], name: str, target: str, progress: Optional[ConsoleObserver]
) -> "AcceptReport":
    """Measures the contract of the installed ``name``; shared by ``accept`` and ``install --accept``."""
    from airgap.services.deploy.accept import accept as measure
    from airgap.services.deploy.install import Installer

    installer = Installer(_state(state_dir), RichObserver(progress), adapters=real_adapters())
    return measure(installer.site, name, target, RichObserver(progress))


def report_document(report: "AcceptReport") -> dict[str, object]:
    """The report under ``--json``."""
    return {
        "name": report.name,
        "version": report.version,
        "target": report.target,
        "accepted": report.ok,
        "outcome": report.outcome,
        "promises": [p.to_json() for p in report.promises],
        "figures": report.figures,
        "report": str(report.report),
        "markdown": str(report.markdown),
    }


def render(report: "AcceptReport") -> None:
    """The table of promised against measured, then where the report is."""
    table = _Table(title=f"{report.name} {report.version} on {report.target}", title_justify="left")
    table.add_column("", no_wrap=True, min_width=6)
    table.add_column("promise", ratio=3, min_width=20)
    table.add_column("promised", ratio=2)
    table.add_column("measured", ratio=2)
    for p in report.promises:
        style = "green" if p.ok else ("bold yellow" if p.inconclusive else "bold red")
        mark = Text(p.mark, style=style)
        table.add_row(mark, f"{p.section}: {p.what}", p.promised, p.measured)
    out_console.print(table)
    out_console.print(f"report: {report.markdown}", markup=False, highlight=False, soft_wrap=True)


def fail_if_missed(report: "AcceptReport") -> None:
    """Exit 1 naming the first promise missed, when any was; else exit 6 when the load generator
    fell behind and so a figure could not be judged (never a miss)."""
    missed = report.missed
    if missed:
        first = missed[0]
        more = f" (and {len(missed) - 1} more)" if len(missed) > 1 else ""
        raise AnswerIsNo(
            f"{report.name} {report.version} on {report.target} missed its contract: {first.section}: "
            f"{first.what}: promised {first.promised}, measured {first.measured}{more}",
            hint=f"the table and {report.markdown} show every promise",
        )
    if report.inconclusive:
        why = next(p.measured for p in report.promises if p.what == "the load generator kept up")
        raise Inconclusive(
            f"{report.name} {report.version} on {report.target}: the SLO could not be judged, nothing "
            f"was missed: {why}",
            hint="run airgap accept again where the generator keeps up (a less loaded host, no other "
            f"load on this one); {report.markdown} has the figures",
        )


@app.command(epilog=EPILOG)
def accept(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The installed bundle's name.")],
    to: Annotated[str, typer.Option("--to", help="Which installation.")] = "docker",
    state_dir: StateDirOption = None,
) -> None:
    """Prove the installed model keeps its deployment contract here: data, accuracy, latency.

    Everything comes from the signed bundle: the server must refuse a row outside the data contract
    and serve the contract it was given; its answers on the labelled acceptance set must meet the
    thresholds; under a bounded open-loop load at the promised rate (no external tool), its p95/p99
    latency and error rate must meet the SLO. Prints promised against measured, writes a JSON and
    a Markdown report under STATE/acceptance/ and an attestation of the outcome (signed by
    AIRGAP_SITE_KEY if set), and exits 1 when any promise is missed.

    Example: airgap accept tabular-classifier --to docker
    """
    from airgap.cli.evidence import far_side_evidence, report_evidence

    evidence = far_side_evidence(_state(state_dir))
    with _progress() as progress:
        report = run_accept(state_dir, name, to, progress)
    evidence.accepted(report)
    attested = report_evidence(evidence)
    if STATE.json:
        _emit_json({**report_document(report), **attested})
    else:
        render(report)
    if not report.ok and STATE.json:
        err_console.print(f"report: {report.markdown}", markup=False)
    fail_if_missed(report)
