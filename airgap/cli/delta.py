"""``airgap inventory``: the far side says what it already holds, so the next bundle can leave it out."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from airgap.cli.common import (
    EPILOG,
    STATE,
    RichObserver,
    StateDirOption,
    _emit_json,
    _progress,
    _state,
    app,
    out_console,
)


@app.command(epilog=EPILOG)
def inventory(
    out: Annotated[
        Optional[Path],
        typer.Option("--out", "-o", help="Write the inventory here (default: inventory.json)."),
    ] = None,
    state_dir: StateDirOption = None,
) -> None:
    """Write what this far side already holds, by hash only, for `airgap bundle --have`.

    Lists every blob of the shared content store (each one re-hashed: a blob that does not hash
    to its name is not held), the wheels of installed bundles, and — for the publisher's
    information only — the image layers the local engines hold and the blobs a registry holds
    for an installation pushed there. Hashes, sizes and a few host facts (hostname, OS, machine,
    Python, airgap's version); no user names, no paths, no secrets. It is signed by nobody: a
    wrong claim makes the next bundle fail verification here (exit 3), never pass unchecked.
    Carry the file back to the workstation like a target profile.

    Example: airgap inventory --out site-a.inventory.json --state-dir /var/lib/airgap
    """
    from airgap.services.deploy.inventory import take_inventory, write_inventory

    state = _state(state_dir)
    target = out or Path("inventory.json")
    with _progress() as progress:
        inv = take_inventory(state, RichObserver(progress))
    write_inventory(inv, target)
    held = inv.held()
    total = sum(held.values())
    summary = {
        "written": str(target),
        "blobs": len(held),
        "bytes": total,
        "installed": len(inv.installed),
        "engine_images": len(inv.engine_layers),
        "registry_repositories": len(inv.registry_blobs),
        "skipped": dict(inv.skipped),
    }
    if STATE.json:
        _emit_json(summary)
        return
    out_console.print(
        f"inventory: {len(held)} blobs ({total / 1e6:.1f} MB) in the content store, "
        f"{len(inv.installed)} installed bundle(s), {len(inv.engine_layers)} image(s) in the engines "
        f"(informational) → {target}",
        markup=False,
    )
    for why, count in inv.skipped.items():
        out_console.print(f"left out: {count} blob(s) {why.replace('_', ' ')}", markup=False)
