"""``airgap compare`` and ``promote``: a candidate installed beside the current version is judged
against it, then made current (``install --candidate`` runs it; ``rollback`` undoes a promote)."""

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
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
    out_console,
)
from airgap.cli.evidence import far_side_evidence, report_evidence
from airgap.cli.wiring import real_adapters
from airgap.errors import AnswerIsNo

if TYPE_CHECKING:
    from airgap.services.deploy.compare import CompareReport


def render(report: "CompareReport") -> None:
    """The table of measured against threshold, then the inputs the two answer differently."""
    table = _Table(
        title=f"{report.name}: candidate {report.candidate} against current {report.current} "
        f"({report.target})",
        title_justify="left",
    )
    table.add_column("", no_wrap=True, min_width=6)
    table.add_column("check", ratio=3, min_width=20)
    table.add_column("threshold", ratio=2)
    table.add_column("measured", ratio=2)
    for c in report.checks:
        mark = Text("meets", style="green") if c.ok else Text("MISSES", style="bold red")
        table.add_row(mark, c.what, c.threshold, c.measured)
    out_console.print(table)
    out_console.print(f"thresholds from {report.spec_source}", markup=False, highlight=False)
    shown = report.disagreements[:20]
    for d in shown:
        out_console.print(
            f"differs: {d['input']}: current {json.dumps(d['current'])}, "
            f"candidate {json.dumps(d['candidate'])}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if len(report.disagreements) > len(shown):
        out_console.print(f"... and {len(report.disagreements) - len(shown)} more (--json lists all)")


@app.command(epilog=EPILOG)
def compare(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The installed bundle's name.")],
    to: Annotated[str, typer.Option("--to", help="Which installation.")] = "docker",
    state_dir: StateDirOption = None,
) -> None:
    """Judge the candidate against the current version: same answers, metrics, latency.

    Sends the golden inputs and the labelled acceptance rows both bundles carry to the current
    version and to the candidate (`airgap install BUNDLE --candidate`) where they run, and measures
    the share of inputs both answer alike (the same class; a regression's value within the
    tolerance), each one's acceptance metrics with a bootstrap interval of the drop (relative for
    MAE and RMSE), McNemar's test of a classifier's disagreements, and each one's p50/p95 latency
    on keep-alive connections. The thresholds are the site's (STATE/promote.json), else the
    current bundle's `promote` section, else the defaults (95 % agreement, a metric may drop 0.02,
    p95 at most 1.5× the current's) — never the candidate's own. Exits 1, naming the inputs that
    differ, when the candidate misses one.

    Example: airgap compare tabular-classifier --to docker
    """
    from airgap.services.deploy.compare import compare as measure
    from airgap.services.deploy.install import Installer

    with _progress() as progress:
        installer = Installer(_state(state_dir), RichObserver(progress), adapters=real_adapters())
        progress_task = "compare"
        installer.obs.begin(progress_task, None)
        try:
            report = measure(installer.site, name, to)
        finally:
            installer.obs.end(progress_task)
    if STATE.json:
        _emit_json(report.to_json())
    else:
        render(report)
    missed = [c for c in report.checks if not c.ok]
    if missed:
        differs = ", ".join(d["input"] for d in report.disagreements[:3])
        raise AnswerIsNo(
            f"the candidate {name} {report.candidate} misses the promote thresholds: {missed[0].what}: "
            f"{missed[0].measured} (threshold {missed[0].threshold})"
            + (f"; differs on {differs}" if differs else ""),
            hint="fix the candidate, or promote it anyway if the difference is wanted: airgap promote NAME",
        )


@app.command(epilog=EPILOG)
def promote(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The installed bundle's name.")],
    to: Annotated[str, typer.Option("--to", help="Which installation.")] = "docker",
    state_dir: StateDirOption = None,
) -> None:
    """Make the candidate current, on the current version's name and port (rollback undoes it).

    The candidate's version is started in place of the current one through the install journal,
    smoke-tested before it is committed (a failure puts the current version back), and the old
    current becomes the previous version: `airgap rollback NAME` brings it back.

    Example: airgap promote tabular-classifier --to docker
    """
    from airgap.services.deploy.candidate import promote as switch
    from airgap.services.deploy.install import Installer, InstallOptions

    STATE.on_interrupt = "run `airgap status`: the next install, promote or rollback completes or undoes it"
    state = _state(state_dir)
    evidence = far_side_evidence(state)  # the promoted version's smoke test, attested like `smoke`
    try:
        with _progress() as progress:
            installer = Installer(state, RichObserver(progress), evidence, adapters=real_adapters())
            result = switch(installer, name, to, InstallOptions(target=to))
    finally:
        attested = report_evidence(evidence)
    r = result.receipt
    if STATE.json:
        _emit_json({"name": name, "version": r.version, "target": to, "port": r.port, **attested})
        return
    where = f" at http://127.0.0.1:{r.port}" if r.target != "venv" else ""
    if r.target == "kubernetes" and r.extra.get("deployment"):
        where = f" as deployment/{r.extra['deployment']} in namespace {r.extra.get('namespace')}"
    out_console.print(
        f"[green]promoted[/] {escape(f'{name} {r.version} ({to}){where}')}; smoke test passed; "
        f"`airgap rollback {escape(name)} --to {escape(to)}` undoes it"
    )
