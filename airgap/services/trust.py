"""Which public keys a verification trusts.

One rule for every command that checks a signature (``verify``, ``check``, ``join``,
``install``): a key named on the command line is trusted alone, instead of any store; otherwise a
trust directory named on the command line; otherwise the state directory's trust store.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from airgap.adapters import keys
from airgap.adapters.fs import MAX_KEY, read_bytes

if TYPE_CHECKING:
    from airgap.services.state import State


def trusted_keys(
    state: State, key: Path | None = None, trust_dir: Path | None = None
) -> tuple[keys.TrustedKey, ...]:
    """The keys a bundle may be signed by. An explicit key replaces the store rather than adding
    to it, so that ``--key publisher.pub`` proves the bundle came from that publisher and no other."""
    if key is not None:
        public = keys.load_public(read_bytes(key, "public key", MAX_KEY), str(key))
        return (keys.TrustedKey(keys.key_id(public), key, public),)
    store = keys.TrustStore(trust_dir) if trust_dir else state.trust
    return tuple(store.keys())
