"""``airgap keys``: signing keys on the workstation, the trust store on the far side."""

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from airgap.cli.common import (
    EPILOG,
    STATE,
    StateDirOption,
    _emit_json,
    _passphrase,
    _state,
    app,
    err_console,
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
    names: Annotated[
        Optional[str],
        typer.Option(
            "--for",
            metavar="NAME[,NAME]",
            help="The bundle names this key may sign (comma-separated), added to those it has; "
            "'*' for every name. Without it a new key is trusted for every name (a warning says so) "
            "and a trusted one keeps its names.",
        ),
    ] = None,
    state_dir: StateDirOption = None,
) -> None:
    """Trust a publisher's key on the far side, for the bundle names it may sign.

    A bundle verifies only if its signed name is one the key is trusted for: a key trusted
    `--for tabular-classifier` cannot sign, install or raise the highest version of any other
    name. `--for '*'` trusts the key for every name (a site key that rebuilds every model, say).
    Trusting a key again adds names and never removes any: to narrow a key's names, `airgap keys
    remove` it and trust it again.

    Example: airgap keys trust publisher.pub --for tabular-classifier,fraud-model
    """
    from airgap.adapters.fs import MAX_KEY, read_bytes
    from airgap.core.signing import EVERY_NAME, describe_scope, parse_scope

    scope = parse_scope(names) if names is not None else None
    state = _state(state_dir)
    done = state.trust.trust(read_bytes(public_key, "public key", MAX_KEY), str(public_key), scope)
    kid = done.key_id
    if done.changed:
        state.audit({"action": "keys trust", "key_id": kid, "names": list(done.names), "result": "accepted"})
    if names is None and done.changed and EVERY_NAME in done.names:
        err_console.print(
            f"[bold yellow]warning: key {kid[:16]} is trusted for every bundle name; "
            "limit it with --for NAME[,NAME][/]",
            soft_wrap=True,
        )
    if STATE.json:
        _emit_json(
            {
                "key_id": kid,
                "names": list(done.names),
                "changed": done.changed,
                "trust_store": str(state.trust.directory),
            }
        )
    elif done.changed:
        out_console.print(
            f"trusted key {kid} for {describe_scope(done.names)} in {state.trust.directory}", markup=False
        )
    else:
        out_console.print(
            f"key {kid} is already trusted for {describe_scope(done.names)}; nothing changed", markup=False
        )


@keys_app.command("list", epilog=EPILOG)
def keys_list(state_dir: StateDirOption = None) -> None:
    """List the keys this far side trusts, and the bundle names each may sign.

    A key trusted before trust had names is trusted for every name, as it was then; a warning
    line names it until it is trusted again with `--for`.

    Example: airgap keys list
    """
    from airgap.core.signing import describe_scope

    state = _state(state_dir)
    found = state.trust.keys()
    for k in found:
        if not k.scope_recorded:
            err_console.print(
                f"[bold yellow]warning: key {k.key_id[:16]} was trusted without names and is trusted for "
                f"every name; limit it with `airgap keys trust {escape(str(k.path))} --for NAME[,NAME]`[/]",
                soft_wrap=True,
                markup=True,
            )
    if STATE.json:
        _emit_json(
            [
                {
                    "key_id": k.key_id,
                    "file": str(k.path),
                    "names": list(k.names),
                    "scope_recorded": k.scope_recorded,
                }
                for k in found
            ]
        )
        return
    if not found:
        out_console.print(f"no trusted keys in {state.trust.directory}", markup=False)
    for k in found:
        out_console.print(f"{k.key_id}  for {describe_scope(k.names)}", markup=False)


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
