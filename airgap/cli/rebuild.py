"""``airgap rebuild``: the far side rebuilds a bundle's model image on its own approved base image."""

from pathlib import Path
from typing import Annotated, Optional

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
    app,
    out_console,
)


@app.command(epilog=EPILOG)
def rebuild(
    bundle_path: Annotated[
        Path, typer.Argument(metavar="BUNDLE", help="NAME-VERSION.airgap.tar, or its .parts.sha256 index.")
    ],
    base: Annotated[
        str,
        typer.Option(
            "--base",
            metavar="IMAGE",
            help="The site's approved base image, already in this engine or its registry "
            "(e.g. registry.site/approved/python:3.9 or repo@sha256:...). Nothing is pulled from outside.",
        ),
    ],
    key: Annotated[
        str,
        typer.Option(
            "--key",
            metavar="SITE_KEY_URI",
            help="The site's private key (file:PATH or a path, from `airgap keys generate`) that signs the "
            "rebuilt bundle; its passphrase comes from AIRGAP_KEY_PASSPHRASE or a prompt.",
        ),
    ],
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output",
            "-o",
            help="Where the rebuilt bundle is written (default: rebuilt/ beside BUNDLE; never BUNDLE's "
            "own directory, since the new bundle has the same name).",
        ),
    ] = None,
    state_dir: StateDirOption = None,
) -> None:
    """Rebuild a bundle's model image offline on the site's approved base, signed by the site key.

    For a site whose policy rejects the base image the bundle was built on. Steps, all offline:

      1. verify BUNDLE exactly as `install` does (signature, every hash, a publisher key in this
         site's trust store; no key on the command line: the result is signed by the site);
         nothing is extracted before that passes;
      2. probe --base inside itself with the network off: its Python, wheel tags and glibc;
      3. pick the bundle's wheelhouse that installs there (the image's, or one of the extra
         `targets` airgap.yaml listed); if none fits, stop in seconds (exit 4), naming the wheels
         that do not fit and what the publisher should bundle instead;
      4. build the model image from that wheelhouse, the bundled server and model on --base, with
         the network disabled;
      5. run the golden inputs in the new image and hold the answers to the signed contract
         (nothing is re-recorded: a difference beyond the tolerance is exit 1 and nothing is signed);
      6. re-run the policies, write the SBOM, and sign a new bundle with --key. Its build record
         and provenance name the original bundle (name, version, manifest hash, publisher key id)
         and the new base digest.

    Install the result like any bundle once the site key is trusted (`airgap keys trust site.pub`).

    Example: airgap rebuild tabular-classifier-1.0.0.airgap.tar --base registry.site/python:3.9 --key site.key
    """
    from airgap.adapters.docker_engine import DockerEngine
    from airgap.services.build.rebuild import RebuildOptions
    from airgap.services.build.rebuild import rebuild as run_rebuild
    from airgap.services.media.verify import VerifyOptions

    state = _state(state_dir)
    signer = _load_signing_key(key)
    options = RebuildOptions(
        bundle=bundle_path,
        base=base,
        signer=signer,
        verify=VerifyOptions(
            # The trust store only: a key named on the command line would let any bundle come out
            # signed by the site key, which every install here trusts.
            trusted=_trusted(state, None, None),
            blob_store=state.blob_store,
        ),
        output_dir=output or bundle_path.resolve().parent / "rebuilt",
    )
    STATE.on_interrupt = "nothing was signed and the partial rebuild was removed; run it again"
    with _progress() as progress:
        result = run_rebuild(options, state, DockerEngine(), RichObserver(progress))
    packed = result.packed
    if STATE.json:
        _emit_json(
            {
                "bundle": [str(p) for p in packed.files],
                "manifest_sha256": packed.manifest_sha256,
                "key_id": packed.manifest.key_id,
                "rebuilt_from": result.rebuilt_from,
                "base_image": result.base,
                "wheelhouse": result.wheelhouse,
                "onnxruntime": result.onnxruntime,
                "phases": result.phases,
                "seconds": result.seconds,
            }
        )
        return
    origin = result.rebuilt_from
    table = _Table(
        title=f"rebuilt {origin['name']} {origin['version']}", show_header=False, title_justify="left"
    )
    table.add_column(style="bold")
    table.add_column()
    table.add_row(
        "from",
        f"manifest sha256 {origin['manifest_sha256'][:16]}…, "
        f"publisher key {origin['publisher_key_id'][:16]}…",
    )
    table.add_row("base image", f"{result.base['resolved']} (Python {result.base['python']})")
    table.add_row("wheelhouse", f"{result.wheelhouse} (onnxruntime {result.onnxruntime})")
    table.add_row("golden outputs", "match the signed contract")
    table.add_row("phases", ", ".join(f"{k} {v:.1f}s" for k, v in result.phases.items()))
    out_console.print(table)
    for path in packed.files:
        out_console.print(f"bundle: {path}", markup=False)
    out_console.print(
        f"signed by site key {packed.manifest.key_id[:16]}…, manifest sha256 {packed.manifest_sha256[:16]}…, "
        f"rebuilt in {result.seconds:.0f} s"
    )
