"""``airgap probe`` and ``airgap profile``: record a target's facts, and read them back on the workstation."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape

from airgap.cli.common import (
    EPILOG,
    STATE,
    RichObserver,
    _emit_json,
    _parse_hostport,
    _progress,
    _Table,
    app,
    err_console,
    out_console,
)

if TYPE_CHECKING:
    from airgap.services.build.probe import ProbeResult


# ----------------------------------------------------------------------------- probe
@app.command(epilog=EPILOG)
def probe(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the JSON target profile.")
    ] = Path("target-profile.json"),
    path: Annotated[
        Optional[list[str]],
        typer.Option("--path", help="Report free disk space at this path (repeatable)."),
    ] = None,
    egress_check: Annotated[
        str,
        typer.Option(
            "--egress-check",
            metavar="HOST:PORT",
            callback=_parse_hostport,
            help="Resolve HOST and open one TCP connection to it, to prove egress is blocked ('none' skips).",
        ),
    ] = "pypi.org:443",
    image: Annotated[
        Optional[str],
        typer.Option(
            "--image",
            metavar="REF",
            help="Probe a container image instead of this host (runs with no network and a read-only root).",
        ),
    ] = None,
    export_script: Annotated[
        Optional[Path],
        typer.Option(
            "--export-script",
            metavar="FILE",
            help="Write the probe as one stdlib-only Python 3.6+ file to audit and run on a bare host.",
        ),
    ] = None,
    budget: Annotated[
        float, typer.Option("--budget", min=1.0, max=60.0, help="Seconds the whole probe may take.")
    ] = 8.0,
) -> None:
    """Record every fact about this host (or an image) that decides whether a bundle will run there.

    Run it on the air-gapped target, as a normal user; it needs neither root nor network and
    finishes within the budget. Carry the profile to the workstation and pass it to `airgap bundle`.

    Examples:

      airgap probe -o site-a.json --path /var/lib/containers

      airgap probe --image registry.local/python:3.11-slim -o base.json

      airgap probe --export-script airgap-probe.py   # then: python3 airgap-probe.py -o site-a.json
    """
    from airgap.services.build import probe as svc

    if export_script is not None:
        svc.export_script(export_script)
        if STATE.json:
            _emit_json({"exported": str(export_script)})
        else:
            err_console.print(
                f"wrote {export_script}: read it, copy it to the target, run `python3 {export_script.name} "
                "-o target-profile.json`",
                markup=False,
            )
        return
    with _progress(log=False) as progress:
        observer = RichObserver(progress)
        if image:
            from airgap.adapters.docker_engine import DockerEngine

            result = svc.probe_image(DockerEngine(), image, observer)
        else:
            result = svc.probe_host(path, egress_check, budget, observer)
    svc.write_profile(result, output)
    if STATE.json:
        _emit_json(
            {
                "output": str(output),
                "sha256": result.profile.digest,
                "warnings": [{"code": w.code, "message": w.message} for w in result.warnings],
                "profile": result.profile.raw,
            }
        )
        return
    _render_profile(result, output)


@app.command("profile", epilog=EPILOG)
def profile_cmd(
    file: Annotated[
        Path,
        typer.Argument(
            metavar="PROFILE", help="A profile written by `airgap probe` or the exported probe script."
        ),
    ],
) -> None:
    """Validate a target profile and show what it says: its interpreters, wheel tags and warnings.

    Use it on the workstation to read the profile that crossed the gap before bundling for it.

    Example: airgap profile site-a.json
    """
    from airgap.adapters.fs import MAX_PROFILE, read_bytes
    from airgap.core.profile import Profile
    from airgap.core.profile_warnings import profile_warnings
    from airgap.core.tags import compute_tags, marker_environment
    from airgap.services.build.probe import ProbeResult

    data = read_bytes(file, "profile", MAX_PROFILE)
    prof = Profile.from_json(data, str(file))
    warnings = tuple(profile_warnings(prof))
    if STATE.json:
        _emit_json(
            {
                "profile": str(file),
                "sha256": prof.digest,
                "hostname": prof.hostname,
                "arch": prof.arch,
                "libc": prof.libc.label if prof.libc else None,
                "pythons": [
                    {
                        "path": py.path,
                        "version": py.version_str,
                        "markers": marker_environment(py),
                        "tags": [str(t) for t in compute_tags(py)],
                    }
                    for py in prof.pythons
                ],
                "warnings": [{"code": w.code, "message": w.message} for w in warnings],
            }
        )
        return
    _render_profile(ProbeResult(prof, warnings, data), file, wrote=False)


def _render_profile(result: "ProbeResult", output: Path, wrote: bool = True) -> None:
    from airgap.core.tags import compute_tags

    p = result.profile
    raw = p.raw
    table = _Table(title=f"target profile: {p.hostname}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    src = p.source.get("image") if p.source.get("kind") == "image" else "this host"
    table.add_row("source", str(src))
    table.add_row("os", f"{p.os_pretty_name or '?'} · kernel {raw['host'].get('kernel', '?')} · {p.arch}")
    table.add_row("libc", p.libc.label if p.libc else "unknown")
    for py in p.pythons:
        tags = compute_tags(py)
        table.add_row(
            "python", f"{py.path} {py.version_str} ({py.implementation}) · {len(tags)} tags · best {tags[0]}"
        )
    cpu = raw.get("cpu") or {}
    table.add_row("cpu", f"{cpu.get('model', '?')} × {cpu.get('count', '?')} · {cpu.get('x86_64_level', '')}")
    mem = raw.get("memory") or {}
    if isinstance(mem.get("total_bytes"), int):
        table.add_row(
            "memory",
            f"{mem['total_bytes'] / 2**30:.1f} GiB, {mem.get('available_bytes', 0) / 2**30:.1f} available",
        )
    for d in raw.get("disk") or []:
        if "free_bytes" in d:
            table.add_row("disk", f"{d['path']}: {d['free_bytes'] / 1024**3:.1f} GiB free")
    fips = raw.get("fips") or {}
    table.add_row(
        "fips",
        f"kernel {_fact(fips.get('kernel_fips_enabled'))} · "
        f"openssl providers {_fact(fips.get('openssl_providers'))}",
    )
    lsm = raw.get("security_modules") or {}
    table.add_row("lsm", f"selinux {_fact(lsm.get('selinux'))} · apparmor {_fact(lsm.get('apparmor'))}")
    for name, rt in sorted((raw.get("container_runtimes") or {}).items()):
        if isinstance(rt, dict) and rt.get("installed"):
            state = "usable" if rt.get("usable_by_user") else f"not usable: {rt.get('reason', '?')}"
            table.add_row(name, f"{rt.get('client_version') or '?'} · {state}")
    k8s = raw.get("kubernetes") or {}
    kc = k8s.get("kubectl") or {}
    server = _fact(k8s.get("server")) if "server" in k8s else "not checked"
    table.add_row("kubernetes", f"kubectl {_fact(kc.get('client_version', kc))} · server {server}")
    net = raw.get("network") or {}
    table.add_row(
        "egress", f"{net.get('egress_check')}: dns {_fact(net.get('dns'))} · tcp {_fact(net.get('tcp'))}"
    )
    table.add_row("took", f"{raw.get('duration_seconds', '?')} s")
    out_console.print(table)
    for w in result.warnings:
        out_console.print(f"[yellow]warning[/]: {escape(str(w.message))}")
    verb = "wrote" if wrote else "read"
    out_console.print(f"{verb} {output} (sha256 {p.digest[:16]}…)", markup=False)


def _fact(value: object) -> str:
    if isinstance(value, dict):
        if "unknown" in value:
            return f"unknown ({value['unknown']})"
        for key in ("resolves", "connects"):
            if key in value:
                return "yes" if value[key] else f"no ({value.get('error', '')})"
        if "version" in value:
            return str(value["version"])
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    if value is True:
        return "on"
    if value is False:
        return "off"
    return str(value)
