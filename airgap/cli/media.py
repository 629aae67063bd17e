"""``airgap split`` and ``copy``, and the ``--parity`` option of ``bundle`` and ``pack``: media parts."""

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
    _trusted,
    app,
    out_console,
)
from airgap.errors import UsageError

PARITY_HELP = (
    "Also write K parity parts (Reed-Solomon, zfec): any K missing or damaged parts, data or "
    "parity, are rebuilt by verify, install and join. Needs --part-size."
)


def parity_count(parity: Optional[str], part_size: Optional[str]) -> int:
    """``--parity K`` as a number of parity parts, refused in one line (exit 2) when it is not a
    whole number from 1 to 255 or comes without ``--part-size``."""
    if parity is None:
        return 0
    if not parity.isdigit() or not 1 <= int(parity) <= 255:
        raise UsageError(
            f"--parity {parity!r} is not a number of parity parts", hint="give a whole number from 1 to 255"
        )
    if part_size is None:
        raise UsageError("--parity needs --part-size: parity parts protect a bundle split into parts")
    return int(parity)


@app.command(epilog=EPILOG)
def split(
    bundle_path: Annotated[
        Path,
        typer.Argument(metavar="BUNDLE", help="NAME-VERSION.airgap.tar, or its .parts.sha256 index."),
    ],
    part_size: Annotated[
        str,
        typer.Option("--part-size", metavar="SIZE", help="The new part size: 4G (FAT32), 4.7G (DVD), 700M."),
    ],
    key: Annotated[
        str,
        typer.Option(
            "--key",
            metavar="KEY_URI",
            help="The publisher's signing key (file:PATH or a plain path, as `pack` takes it): it "
            "signs the new parts index; the bundle must be signed by it.",
        ),
    ],
    parity: Annotated[Optional[str], typer.Option("--parity", metavar="K", help=PARITY_HELP)] = None,
    output: Annotated[
        Optional[Path],
        typer.Option("--out", "-o", help="Where the new parts go (default: split-SIZE beside the bundle)."),
    ] = None,
) -> None:
    """Re-split a signed bundle (one file or parts) for other media, without re-signing its content.

    The manifest and its signature are untouched: the new data parts, joined, are byte for byte
    the same bundle. The new parts index (and parity index) is signed, so split needs the
    publisher's signing key, --key, as `pack` takes it (passphrase: AIRGAP_KEY_PASSPHRASE). It
    first proves the bundle is signed by that key and intact, in the same pass that copies it.

    Example: airgap split tabular-classifier-1.0.0.airgap.tar --part-size 4.7G --parity 1 --key publisher.key
    """
    from airgap.core.bundle_format import parse_size
    from airgap.services.media.split import split_bundle

    count = parity_count(parity, part_size)
    size = parse_size(part_size)
    dest = output or bundle_path.parent / f"split-{part_size}"
    signer = _load_signing_key(key)
    with _progress() as progress:
        result = split_bundle(bundle_path, dest, size, signer, count, RichObserver(progress))
    if STATE.json:
        _emit_json(
            {
                "bundle": [str(p) for p in result.files],
                "manifest_sha256": result.manifest_sha256,
                "parts": len(result.parts),
                "parity_parts": len(result.parity_parts),
                "repaired": [r.to_json() for r in result.repaired],
            }
        )
        return
    for r in result.repaired:
        out_console.print(f"repaired {r.part} from parity ({r.was}; the source is unchanged)", markup=False)
    for path in result.files:
        out_console.print(f"bundle: {path}", markup=False)
    out_console.print(
        f"{len(result.parts)} part(s) and {len(result.parity_parts)} parity part(s); "
        f"manifest sha256 {result.manifest_sha256[:16]}… unchanged",
        markup=False,
    )


@app.command(epilog=EPILOG)
def copy(
    bundle_path: Annotated[
        Path,
        typer.Argument(metavar="BUNDLE", help="NAME-VERSION.airgap.tar, or its .parts.sha256 index."),
    ],
    dest: Annotated[Path, typer.Argument(metavar="DEST", help="The directory on the medium.")],
    key: Annotated[
        Optional[Path],
        typer.Option("--key", help="Trust exactly this public key instead of the trust store."),
    ] = None,
    trust_dir: Annotated[
        Optional[Path],
        typer.Option("--trust-dir", help="A directory of trusted public keys (KEYID.pem)."),
    ] = None,
    state_dir: StateDirOption = None,
) -> None:
    """Copy a bundle onto removable media and prove the medium reads it back.

    Each part is written, flushed to the medium, dropped from memory and read back from the
    medium against the signed parts index (a single-file bundle: the copy is verified against its
    signed manifest), so a bad USB stick is caught here rather than at the far side. Run it again
    after an interruption: parts already on the medium that read back right are kept. Progress in
    bytes, with the time left. Exit 5 when the medium is too small or reads back other bytes.

    Example: airgap copy tabular-classifier-1.0.0.airgap.tar.parts.sha256 /media/usb --key publisher.pub
    """
    from airgap.services.media.copy import copy_bundle

    state = _state(state_dir)
    trusted = _trusted(state, key, trust_dir)
    with _progress() as progress:
        result = copy_bundle(bundle_path, dest, trusted, RichObserver(progress))
    if STATE.json:
        _emit_json(
            {
                "dest": str(result.dest),
                "written": list(result.written),
                "kept": list(result.kept),
                "bytes_written": result.bytes_written,
            }
        )
        return
    out_console.print(
        f"{dest}: {len(result.written)} file(s) written and read back "
        f"({result.bytes_written / 1e6:.1f} MB), {len(result.kept)} already there and intact",
        markup=False,
    )
