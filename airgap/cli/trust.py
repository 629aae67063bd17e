"""``airgap keys``: signing keys on the workstation, the trust store on the far side."""

from pathlib import Path
from typing import Annotated

import typer

from airgap.cli.common import (
    EPILOG,
    STATE,
    StateDirOption,
    _emit_json,
    _passphrase,
    _state,
    app,
    out_console,
)

# ----------------------------------------------------------------------------- keys
keys_app = typer.Typer(
    help="Signing keys (workstation) and the trust store (far side). ECDSA P-384 / SHA-384.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(keys_app, name="keys")


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
    from airgap.adapters.fs import MAX_KEY, read_bytes

    state = _state(state_dir)
    kid = state.trust.trust(read_bytes(public_key, "public key", MAX_KEY), str(public_key))
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
