"""The ``airgap`` command line: parse, build adapters, call one service, render, map errors to exit codes.

No logic a library user would need lives here. Every expected failure is an ``AirgapError`` and is
printed as one line; anything else is a bug, printed as one line too (with the traceback only
under ``--verbose``) and exit code 70.
"""

import contextlib
import json
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from airgap import __version__
from airgap.adapters.keys import PASSPHRASE_ENV
from airgap.errors import EXIT_CODES, AirgapError, AnswerIsNo, Interrupted
from airgap.services.targets import names as install_targets
from airgap.terminal import ConsoleObserver, ignore_signals, signals_interrupt

EPILOG = "Exit codes: " + "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items()) + "."

app = typer.Typer(
    name="airgap",
    help=(
        "Get a machine-learning model running inside a network with no internet.\n\n"
        "On the air-gapped target: `airgap probe` records the facts that decide whether a deployment "
        "runs there. On a connected workstation: `airgap bundle` builds one signed bundle for that "
        "target. On the far side: `airgap verify` and `airgap install`."
    ),
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


@dataclass
class State:
    json: bool = False
    verbose: bool = False
    quiet: bool = False
    # What an interrupt leaves behind, said in the one line printed when a signal stops a command.
    on_interrupt: str = "nothing half-written was left in place"


STATE = State()


def _plain_help() -> None:
    """Help in click's plain words: no `<bool>` after a flag, no `{BUNDLE}` in the usage line.

    A flag takes no value, so it shows none; a value shows its metavar (TEXT, PATH, or the one
    the option names, such as HOST:PORT).
    """
    import typer.core

    words = {"str": "TEXT", "path": "PATH", "int": "INTEGER", "float": "NUMBER", "bool": ""}

    def option_type(self: Any, ctx: Any) -> Optional[str]:
        if self.is_flag or self.count:
            return None
        if self.metavar:
            return str(self.metavar)
        label = str(self.display_type(ctx)).strip("<>").removeprefix("list[").removesuffix("]")
        return words.get(label.removesuffix(" range"), label.upper()) or None

    def argument_type(self: Any, ctx: Any) -> Optional[str]:
        return None  # the name column already shows the argument's metavar

    def usage_name(self: Any) -> str:
        name = str(self.display_name_raw)
        name = name if self.required else f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")

    for cls, attr, fn in (
        (typer.core.TyperOption, "display_type_rich", option_type),
        (typer.core.TyperArgument, "display_type_rich", argument_type),
        (typer.core.TyperArgument, "_usage_display_name", usage_name),
    ):
        if hasattr(cls, attr):  # a typer without these hooks prints its own style, which still works
            setattr(cls, attr, fn)


_plain_help()
err_console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False, soft_wrap=True)


class _Table(Table):
    """A table whose string title and cells are shown as written: they quote bundle, profile and
    user text, which must not be read as rich markup (``[conceal]`` would hide the rest)."""

    def __init__(self, *args: Any, title: Optional[str] = None, **kw: Any) -> None:
        super().__init__(*args, title=escape(title) if title is not None else None, **kw)

    def add_row(self, *cells: Any, **kw: Any) -> None:
        super().add_row(*(escape(c) if isinstance(c, str) else c for c in cells), **kw)


StateDirOption = Annotated[
    Optional[Path],
    typer.Option(
        "--state-dir",
        help="Far-side state: trust store, audit log, installed versions "
        "(default /var/lib/airgap as root, else ~/.local/share/airgap; or AIRGAP_STATE_DIR).",
    ),
]


def _version(value: bool) -> None:
    if value:
        print(f"airgap {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    json_out: Annotated[
        bool, typer.Option("--json", help="Machine-readable JSON on stdout instead of tables.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show details, and tracebacks of internal errors.")
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="No progress: neither live bars in a terminal nor phase lines in a log."
        ),
    ] = False,
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    STATE.json = json_out
    STATE.verbose = verbose
    STATE.quiet = quiet


class RichObserver:
    """The observer a service gets: the command's ``_progress()``, or nothing when there is none."""

    def __init__(self, progress: Optional[ConsoleObserver]) -> None:
        self.progress = progress

    def begin(self, task: str, total: Optional[float] = None, unit: str = "") -> None:
        if self.progress is not None:
            self.progress.begin(task, total, unit)

    def advance(self, task: str, amount: float = 1, detail: str = "") -> None:
        if self.progress is not None:
            self.progress.advance(task, amount, detail)

    def end(self, task: str) -> None:
        if self.progress is not None:
            self.progress.end(task)


def _progress(log: bool = True) -> ConsoleObserver:
    """Live progress on stderr in a terminal; elsewhere one line per task start and end (``log``)."""
    return ConsoleObserver(err_console, log=log, enabled=not STATE.quiet)


def _emit_json(payload: object) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _parse_hostport(value: str) -> str:
    if value in ("", "none"):
        return "none"
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise typer.BadParameter("must be HOST:PORT (e.g. pypi.org:443) or 'none'")
    return value


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
    from airgap.services import probe as svc

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
    from airgap.adapters.fs import read_bytes
    from airgap.core.profile import Profile
    from airgap.core.profile_warnings import profile_warnings
    from airgap.core.tags import compute_tags, marker_environment
    from airgap.services.probe import ProbeResult

    data = read_bytes(file, "profile")
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


def _render_profile(result: Any, output: Path, wrote: bool = True) -> None:
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


# ----------------------------------------------------------------------------- bundle
UnsafeSignOption = Annotated[
    bool,
    typer.Option(
        "--unsafe-sign-failed-policy",
        help="UNSAFE: sign although the policy evaluation failed (recorded in the signed manifest).",
    ),
]


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
        Optional[Path],
        typer.Option(
            "--key",
            help="Sign and pack the bundle with this private key (from `airgap keys generate`); its "
            "passphrase comes from AIRGAP_KEY_PASSPHRASE or a prompt. Without it, only staging is written.",
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
    expires: Annotated[
        Optional[str],
        typer.Option(
            "--expires",
            metavar="90d|DATE",
            help="The far side refuses the bundle after this (90d counts from signing).",
        ),
    ] = None,
    unsafe_sign_failed_policy: UnsafeSignOption = False,
    keep_images: Annotated[
        bool,
        typer.Option(
            "--keep-images",
            help="Keep the images the build made and did not ship, and the one the tag named before "
            "(default: removed, so that re-bundling does not fill the disk).",
        ),
    ] = False,
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
    """
    from airgap.adapters.docker_engine import DockerEngine
    from airgap.adapters.keys import key_id
    from airgap.adapters.wheels import ResolverSettings, default_ca_bundle
    from airgap.core.bundle_format import parse_size
    from airgap.services import bundle as svc
    from airgap.services.wheelhouse import default_cache_dir

    size = parse_size(part_size) if part_size else None
    private = _load_signing_key(key) if key else None
    options = svc.BundleOptions(
        project_dir=project_dir,
        output_dir=output,
        target_profile=profile,
        host_wheelhouse=host_wheelhouse,
        host_python=host_python,
        settings=ResolverSettings(index_url=index_url, ca_bundle=ca_bundle or default_ca_bundle()),
        cache_dir=cache_dir or default_cache_dir(),
        signer_key_id=key_id(private.public_key()) if private is not None else None,
        keep_images=keep_images,
    )
    STATE.on_interrupt = (
        "nothing was written and partial work was removed (a run killed harder is cleaned up by the next)"
    )
    with _progress() as progress:
        result = svc.bundle(options, DockerEngine(), RichObserver(progress))
        for note in result.cleanup:
            err_console.print(note, soft_wrap=True, markup=False)
        packed = None
        if result.compliance.failed:
            _print_blocking(result.compliance)
        if private is not None:
            STATE.on_interrupt = (
                f"{result.staging} is complete but no bundle was written; sign it with `airgap pack` "
                "or bundle again"
            )
            with _unsafe_warnings():
                packed = svc.pack_staging(
                    result.staging,
                    result.staging.parent,
                    private,
                    part_size=size,
                    expires=expires,
                    observer=RichObserver(progress),
                    unsafe_sign_failed_policy=unsafe_sign_failed_policy,
                )
        elif result.compliance.failed:
            raise AnswerIsNo(
                f"{len(result.compliance.blocking)} open policy finding(s) at or above "
                f"{result.compliance.fail_on}",
                hint=f"see {result.staging / 'compliance' / 'checklist.md'}; fix them, or waive each in "
                "airgap.yaml with a written justification",
            )
    rec = result.record
    if STATE.json:
        _emit_json(
            {
                "staging": str(result.staging),
                "record": rec,
                "bundle": [str(p) for p in packed.files] if packed else None,
                "manifest_sha256": packed.manifest_sha256 if packed else None,
            }
        )
        return
    table = _Table(title=f"bundle {rec['name']} {rec['version']}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("base image", rec["base_image"]["resolved"])
    table.add_row(
        "model image", f"{rec['image']['tag']} ({rec['image']['id'][:19]}) user {rec['image']['user']}"
    )
    for kind, wh in rec["wheelhouses"].items():
        built = f", built offline: {', '.join(wh['built_from_sdist'])}" if wh["built_from_sdist"] else ""
        table.add_row(
            f"{kind} wheelhouse",
            f"{len(wh['pins'])} pins, {wh['downloaded']} downloaded{built} · "
            f"lock sha256 {wh['lock_sha256'][:16]}…",
        )
    table.add_row("model", f"{rec['model']['file']} (onnxruntime {rec['model']['onnxruntime']})")
    table.add_row("checklist", _summary_line(result.compliance))
    table.add_row("phases", ", ".join(f"{k} {v:.1f}s" for k, v in rec["phases"].items()))
    out_console.print(table)
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


@contextlib.contextmanager
def _unsafe_warnings() -> Iterator[None]:
    """Shows the UNSAFE warnings a service raises (a switched-off check), one line each."""
    import warnings as _warnings

    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in caught:
                if w.category.__module__.startswith("airgap."):
                    err_console.print(f"[bold yellow]{escape(str(w.message))}[/]", soft_wrap=True)


def _passphrase(confirm: bool) -> bytes:
    import os

    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value.encode()
    if not sys.stdin.isatty():
        from airgap.errors import UsageError

        raise UsageError(f"no key passphrase: set {PASSPHRASE_ENV} or run in a terminal")
    return str(typer.prompt("key passphrase", hide_input=True, confirmation_prompt=confirm)).encode()


def _load_signing_key(path: Path) -> Any:
    from airgap.adapters import keys

    return keys.load_private(path, _passphrase(confirm=False))


@app.command(epilog=EPILOG)
def pack(
    staging: Annotated[
        Path,
        typer.Argument(
            metavar="STAGING", help="A staging directory written by `airgap bundle` (build/NAME-VERSION)."
        ),
    ],
    key: Annotated[
        Path, typer.Option("--key", help="The private signing key (passphrase: AIRGAP_KEY_PASSPHRASE).")
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
    expires: Annotated[
        Optional[str],
        typer.Option(
            "--expires", metavar="90d|DATE", help="The far side refuses the bundle after this (90d from now)."
        ),
    ] = None,
    unsafe_sign_failed_policy: UnsafeSignOption = False,
) -> None:
    """Sign and pack an existing staging directory (what `airgap bundle --key` does as its last step).

    Refuses (exit 1) a staging directory whose policy evaluation failed.

    Example: airgap pack examples/tabular/build/tabular-classifier-1.0.0 --key publisher.key --part-size 4G
    """
    from airgap.core.bundle_format import parse_size
    from airgap.services import bundle as svc

    size = parse_size(part_size) if part_size else None
    private = _load_signing_key(key)
    with _progress() as progress, _unsafe_warnings():
        packed = svc.pack_staging(
            staging,
            output or staging.parent,
            private,
            part_size=size,
            expires=expires,
            observer=RichObserver(progress),
            unsafe_sign_failed_policy=unsafe_sign_failed_policy,
        )
    if STATE.json:
        _emit_json({"bundle": [str(p) for p in packed.files], "manifest_sha256": packed.manifest_sha256})
        return
    for path in packed.files:
        out_console.print(f"bundle: {path}", markup=False)


def _summary_line(outcome: Any) -> str:
    counts: dict[str, int] = {}
    for r in outcome.evaluation.results:
        counts[r.status] = counts.get(r.status, 0) + 1
    verdict = "FAIL" if outcome.failed else "PASS"
    return f"{verdict} at --fail-on {outcome.fail_on}: " + ", ".join(
        f"{v} {k}" for k, v in sorted(counts.items())
    )


def _print_blocking(outcome: Any) -> None:
    table = _Table(title="open findings", title_justify="left")
    for col in ("rule", "severity", "object", "field", "fix"):
        table.add_column(col)
    for r in outcome.blocking:
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

    Writes results.json, checklist.md and checklist.cklb (STIG Viewer 3). A rule no tool can
    decide is `not_reviewed`, with the reason. Waivers (with their written justification) come
    from the bundle's build record, or from --project; they appear in the checklist as overrides.

    Example: airgap check examples/tabular/build/tabular-classifier-1.0.0 --fail-on medium
    """
    import datetime as dt

    from airgap.core.project import Waiver
    from airgap.services import check as svc
    from airgap.services.bundle import load_project

    reader: Any
    if target.is_dir():
        reader = svc.DirectoryReader(target)
        default_out = target / "compliance"
    else:
        from airgap.services.verify import VerifiedReader, VerifyOptions, verify_and_audit

        state = _state(state_dir)
        options = VerifyOptions(trusted=_trusted(state, key, None), keep=VerifiedReader.keep)
        with _progress() as progress:
            verified = verify_and_audit(target, state, options, RichObserver(progress), action="check")
        reader = VerifiedReader(verified)
        default_out = Path("compliance")
    record = json.loads(reader.read("build.json")) if "build.json" in reader.list() else {}
    policy = record.get("policy") or {}
    waivers = tuple(Waiver(w["rule"], w["justification"]) for w in policy.get("waivers", []))
    dirs = None
    if project_dir is not None:
        project, _ = load_project(project_dir)
        waivers = project.policies.waivers
        dirs = svc.policy_directories(project_dir, project.policies)
        policy = {"fail_on": project.policies.fail_on}
    epoch = int(record.get("source_date_epoch") or 0)
    outcome = svc.check_bundle(
        reader,
        evaluated_at=dt.datetime.fromtimestamp(epoch, dt.timezone.utc),
        waivers=waivers,
        fail_on=fail_on or policy.get("fail_on") or "high",
        policy_dirs=dirs,
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


# ----------------------------------------------------------------------------- keys
keys_app = typer.Typer(
    help="Signing keys (workstation) and the trust store (far side). ECDSA P-384 / SHA-384.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(keys_app, name="keys")


def _state(state_dir: Optional[Path]) -> Any:
    from airgap.services.state import State, default_state_dir

    return State(state_dir or default_state_dir())


@keys_app.command("generate", epilog=EPILOG)
def keys_generate(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Writes OUT.key (encrypted, 0600) and OUT.pub.")
    ] = Path("airgap-signing"),
) -> None:
    """Create a signing key pair. Keep OUT.key on the workstation; carry OUT.pub to the far side.

    The private key is PKCS#8, encrypted with a passphrase of at least 12 characters, from
    AIRGAP_KEY_PASSPHRASE or a prompt. The key id (printed) is the SHA-256 of the public key's DER
    encoding; confirm it out of band.

    Example: airgap keys generate -o publisher   # writes publisher.key and publisher.pub
    """
    from airgap.adapters import keys

    kid = keys.generate(out.with_suffix(".key"), out.with_suffix(".pub"), _passphrase(confirm=True))
    if STATE.json:
        _emit_json(
            {"key_id": kid, "private": str(out.with_suffix(".key")), "public": str(out.with_suffix(".pub"))}
        )
    else:
        out_console.print(
            f"key id {kid}\nwrote {out.with_suffix('.key')} (private, 0600) and {out.with_suffix('.pub')}",
            markup=False,
        )


@keys_app.command("trust", epilog=EPILOG)
def keys_trust(
    public_key: Annotated[
        Path,
        typer.Argument(
            metavar="PUBLIC_KEY", help="A public key (PEM) whose id you have confirmed out of band."
        ),
    ],
    state_dir: StateDirOption = None,
) -> None:
    """Trust a publisher's key on the far side: bundles signed by it will verify.

    Example: airgap keys trust publisher.pub
    """
    from airgap.adapters.fs import read_bytes

    state = _state(state_dir)
    kid = state.trust.trust(read_bytes(public_key, "public key"), str(public_key))
    state.audit({"action": "keys trust", "key_id": kid, "result": "accepted"})
    if STATE.json:
        _emit_json({"key_id": kid, "trust_store": str(state.trust.directory)})
    else:
        out_console.print(f"trusted key {kid} in {state.trust.directory}", markup=False)


@keys_app.command("list", epilog=EPILOG)
def keys_list(state_dir: StateDirOption = None) -> None:
    """List the keys this far side trusts.

    Example: airgap keys list
    """
    state = _state(state_dir)
    found = state.trust.keys()
    if STATE.json:
        _emit_json([{"key_id": k.key_id, "file": str(k.path)} for k in found])
        return
    if not found:
        out_console.print(f"no trusted keys in {state.trust.directory}", markup=False)
    for k in found:
        out_console.print(k.key_id, markup=False)


@keys_app.command("remove", epilog=EPILOG)
def keys_remove(
    key_id: Annotated[
        str, typer.Argument(metavar="KEY_ID", help="The key id, or enough of its beginning to be unique.")
    ],
    state_dir: StateDirOption = None,
) -> None:
    """Stop trusting a key.

    Example: airgap keys remove 3f2a9c
    """
    state = _state(state_dir)
    kid = state.trust.remove(key_id)
    state.audit({"action": "keys remove", "key_id": kid, "result": "accepted"})
    if STATE.json:
        _emit_json({"removed": kid})
    else:
        out_console.print(f"removed key {kid}", markup=False)


# ----------------------------------------------------------------------------- verify / inspect / join
def _trusted(state: Any, key: Optional[Path], trust_dir: Optional[Path]) -> tuple[Any, ...]:
    from airgap.adapters import keys
    from airgap.adapters.fs import read_bytes

    if key is not None:
        public = keys.load_public(read_bytes(key, "public key"), str(key))
        return (keys.TrustedKey(keys.key_id(public), key, public),)
    store = keys.TrustStore(trust_dir) if trust_dir else state.trust
    return tuple(store.keys())


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
    checked first and a damaged part is named. The outcome is appended to the audit log.
    Exit 3 on any integrity or trust failure, 4 if it is not a bundle at all.

    Example: airgap verify tabular-classifier-1.0.0.airgap.tar.parts.sha256 --key publisher.pub
    """
    import warnings as _warnings

    from airgap.services.verify import VerifyOptions, verify_and_audit

    state = _state(state_dir)
    options = VerifyOptions(
        trusted=_trusted(state, key, trust_dir),
        allow_downgrade=allow_downgrade,
        allow_expired=allow_expired,
        installed_versions=state.installed_versions(),
        installed_manifests=state.installed_manifests(),
    )
    with _progress() as progress, _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        result = verify_and_audit(bundle_path, state, options, RichObserver(progress))
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
            }
        )
        return
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
    from airgap.services.inspect import inspect_bundle

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
    table.add_row("size", f"{info['bytes'] / 1e6:.1f} MB in {len(info['files'])} files")
    for part in info["parts"]:
        table.add_row("part", f"{part['name']} {part['sha256'][:16]}…")
    out_console.print(table)


def _checklist_table(policy: dict[str, Any]) -> Any:
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
) -> None:
    """Reassemble a split bundle into one file, after every part is checked against the signed index.

    A damaged or missing part is named: copy that one part again from the media, then re-run.

    Example: airgap join tabular-classifier-1.0.0.airgap.tar.parts.sha256
    """
    from airgap.services.inspect import join_bundle

    state = _state(state_dir)
    with _progress() as progress:
        dest = join_bundle(index, output, _trusted(state, key, None), RichObserver(progress))
    if STATE.json:
        _emit_json({"joined": str(dest)})
    else:
        out_console.print(f"joined {dest}; now run: airgap verify {dest}", markup=False)


# ----------------------------------------------------------------------------- install and after
TargetOption = Annotated[
    Optional[str],
    typer.Option(
        "--to",
        metavar="|".join(install_targets()),
        help="Where to install (default: what this host has, and said).",
    ),
]


def _installer(state_dir: Optional[Path], progress: Any = None) -> Any:
    from airgap.services.install import Installer

    return Installer(_state(state_dir), RichObserver(progress))


def _resolve_target(to: Optional[str]) -> str:
    from airgap.services.install import Installer

    if to:
        return to
    target, why = Installer.default_target()
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
) -> None:
    """Verify, load, run and prove the model answers — on this host, offline.

    Runs the same verification as `airgap verify` first and loads nothing before it passes. Then
    streams what the target needs out of the bundle (every byte re-hashed), loads the image, runs
    it hardened (read-only root, no capabilities, non-root, limits), waits for readiness and sends
    the golden inputs: a mismatch exits 1 and restores the previous version. Installing the same
    bundle twice does nothing; an install killed at any point is undone or completed by the next.

    Example: airgap install tabular-classifier-1.0.0.airgap.tar --to docker --port 8080
    """
    from airgap.services.install import InstallOptions

    target = _resolve_target(to)
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
    )
    STATE.on_interrupt = "run the same `airgap install` again: it completes or undoes what was started"
    with _progress() as progress, _unsafe_warnings():
        result = _installer(state_dir, progress).install(bundle_path, options)
    r = result.receipt
    if STATE.json:
        _emit_json(
            {
                "name": r.name,
                "version": r.version,
                "target": r.target,
                "nothing_to_do": result.nothing_to_do,
                "recovered": list(result.recovered),
                "receipt": r.to_json(),
                "prediction": result.prediction,
                "curl": result.curl,
                "serve": result.serve,
            }
        )
        return
    for note in result.recovered:
        err_console.print(f"[yellow]{escape(note)}[/]")
    if result.nothing_to_do:
        out_console.print(
            f"{r.name} {r.version} is already installed with --to {r.target} and healthy: nothing to do",
            markup=False,
        )
        return
    where = f"http://127.0.0.1:{r.port}" if r.target != "venv" else r.extra.get("venv")
    out_console.print(
        f"[green]installed[/] {escape(f'{r.name} {r.version} --to {r.target} at {where}')}: smoke test passed"
    )
    # Commands to paste: printed whole on one line each, never wrapped or styled.
    if result.serve:
        out_console.print(f"serve it: {result.serve}", markup=False, highlight=False, soft_wrap=True)
    if result.curl:
        out_console.print(f"try it: {result.curl}", markup=False, highlight=False, soft_wrap=True)
    if result.prediction:
        answered = json.dumps(result.prediction["outputs"])
        out_console.print(f"it answers: {answered}", markup=False, highlight=False, soft_wrap=True)


@app.command(epilog=EPILOG)
def smoke(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The installed bundle's name.")],
    to: Annotated[str, typer.Option("--to", help="Which installation.")] = "docker",
    state_dir: StateDirOption = None,
) -> None:
    """Send the golden inputs to an installed model again and compare with the recorded outputs.

    Example: airgap smoke tabular-classifier --to docker
    """
    current, mismatches = _installer(state_dir).smoke(name, to)
    if STATE.json:
        _emit_json(
            {
                "name": name,
                "version": current.version,
                "ok": not mismatches,
                "mismatches": [m.line() for m in mismatches],
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
        table.add_row(
            r["name"], r["target"], r["version"], health, where, r["previous"] or "-", r["installed_at"]
        )
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
    from airgap.services.install import InstallOptions

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


# ----------------------------------------------------------------------------- entry point
def _report(exc: AirgapError) -> int:
    if STATE.json:
        _emit_json({"ok": False, "exit_code": exc.exit_code, "kind": exc.kind, "error": exc.one_line()})
    err_console.print(f"[bold red]airgap: {escape(exc.kind)}:[/] {escape(exc.one_line())}", soft_wrap=True)
    return exc.exit_code


def main(argv: Optional[list[str]] = None) -> int:
    """Console-script entry point: the one place where errors and signals become exit codes."""
    command = typer.main.get_command(app)
    STATE.json = STATE.verbose = STATE.quiet = False
    STATE.on_interrupt = State.on_interrupt
    try:
        with signals_interrupt():
            # Standalone mode lets typer print usage errors (exit 2) and --help; our own errors
            # (and Interrupted, a BaseException typer does not catch) come through to be reported here.
            command.main(args=argv, prog_name="airgap", standalone_mode=True)
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except AirgapError as exc:
        if STATE.verbose:
            traceback.print_exc()
        return _report(exc)
    except (Interrupted, KeyboardInterrupt) as exc:
        ignore_signals()
        stopped = exc if isinstance(exc, Interrupted) else Interrupted(2)
        if STATE.verbose:
            traceback.print_exc()
        with contextlib.suppress(OSError, ValueError):  # SIGHUP: the terminal may be gone
            err_console.print(
                f"airgap: interrupted by {stopped.signal_name}; {STATE.on_interrupt}", soft_wrap=True
            )
        return stopped.exit_code
    except Exception as exc:
        if STATE.verbose:
            traceback.print_exc()
        return _report(
            # The kind ("internal error") is printed before the message: do not repeat it here.
            _Internal(f"{type(exc).__name__}: {exc}", hint="re-run with --verbose and report it")
        )


class _Internal(AirgapError):
    exit_code = 70
    kind = "internal error"
