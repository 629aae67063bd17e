"""`airgap verify`: prove a bundle is whole, unmodified and signed by a trusted key.

The proof itself is ``open_bundle`` (services/media/opening.py), which every reader of a bundle uses;
this module adds what the verbs around it need: the audit record of every verdict, and the
check port over a verified bundle that `airgap check` reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from airgap.core.signing import describe_scope
from airgap.errors import AirgapError, InvalidInputError, UntrustedKeyError
from airgap.services.media.locating import missing_bundle
from airgap.services.media.options import UnsafeOptionWarning, VerifyOptions
from airgap.services.observer import Observer

if TYPE_CHECKING:
    from airgap.services.media.opening import VerifiedBundle, locate_bundle, open_bundle
    from airgap.services.state import State

# The verifier itself (``opening``, with its archive, format and parity readers) is loaded when a
# bundle is there to read, not with this module: these names are handed out from it on first use.
_FROM_OPENING = frozenset({"VerifiedBundle", "locate_bundle", "open_bundle"})


def __getattr__(name: str) -> Any:
    if name in _FROM_OPENING:
        from airgap.services.media import opening

        return getattr(opening, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "UnsafeOptionWarning",
    "VerifiedBundle",
    "VerifiedReader",
    "VerifyOptions",
    "check_trust_scope",
    "locate_bundle",
    "open_bundle",
    "verify_and_audit",
    "verify_bundle",
]


def verify_bundle(path: Path, options: VerifyOptions, observer: Observer | None = None) -> VerifiedBundle:
    """Proves the bundle at ``path`` whole, unmodified, trusted for its name and fresh
    (``open_bundle``, ``check_trust_scope``); returns only on success, raises an IntegrityError
    subclass (exit 3) or InvalidInputError."""
    from airgap.services.media.opening import open_bundle

    result = open_bundle(path, options, observer)
    check_trust_scope(result, options)
    return result


def check_trust_scope(result: VerifiedBundle, options: VerifyOptions) -> None:
    """The key that signed the bundle is trusted for the name the signed manifest gives it.

    A key is trusted for names (``keys trust --for``), not for everything: without this, any one
    trusted publisher — or the site key ``rebuild`` signs with — could ship a bundle under another
    publisher's name, and raise that name's highest installed version to block its real updates.
    Raises UntrustedKeyError (exit 3).
    """
    name = result.manifest.name
    key = next((k for k in options.trusted if k.key_id == result.key_id), None)
    if key is None or not key.may_sign(name):
        scope = describe_scope(key.names) if key is not None else "nothing"
        raise UntrustedKeyError(
            f"the bundle {name} {result.manifest.version} is signed by key {result.key_id[:16]}, "
            f"which is trusted here only for {scope}, not for {name}",
            hint=f"if the site has decided this key may sign {name}: "
            f"`airgap keys trust KEY.pub --for {name},...` (listing every name it may sign)",
        )


def verify_and_audit(
    path: Path, state: State, options: VerifyOptions, observer: Observer | None = None, action: str = "verify"
) -> VerifiedBundle:
    """Verifies, then appends the outcome — accepted or rejected, with the reason — to the audit log."""
    try:
        # A name that is not there is refused, and audited, before the verifier is loaded.
        missing = missing_bundle(path)
        if missing is not None:
            raise missing
        result = verify_bundle(path, options, observer)
    except AirgapError as exc:
        try:
            state.audit(
                {
                    "action": action,
                    "bundle": str(path),
                    "result": "rejected",
                    "exit_code": exc.exit_code,
                    "reason": exc.one_line(),
                }
            )
        except AirgapError as audit_exc:
            # The verdict matters more than the record of it: an integrity failure stays exit 3,
            # and the line says the audit record is missing.
            exc.message = f"{exc.message} (and the audit record could not be written: {audit_exc.message})"
        raise
    state.audit(
        {
            "action": action,
            "bundle": str(path),
            "result": "accepted",
            "name": result.manifest.name,
            "version": result.manifest.version,
            "manifest_sha256": result.manifest_sha256,
            "key_id": result.key_id,
            "trusted_for": next((list(k.names) for k in options.trusted if k.key_id == result.key_id), []),
            "warnings": list(result.warnings),
            "repaired": [r.to_json() for r in result.handle.repaired],
        }
    )
    return result


class VerifiedReader:
    """The check port (``list``/``read``) over a bundle that has just been verified in full.

    Small members are handed back by the verifier itself, so nothing is read twice from media
    that could change in between, and nothing is extracted to disk.
    """

    SMALL_BLOB = 1 << 20

    def __init__(self, verified: VerifiedBundle) -> None:
        self.verified = verified

    @classmethod
    def keep(cls, path: str, size: int) -> bool:
        """Members the verifier hands back: metadata and small blobs, not layers, wheels or weights."""
        if "/blobs/" in path:
            return size <= cls.SMALL_BLOB  # image manifests and configs, not layers
        return (not path.endswith(".whl") and not path.startswith("model/")) or path.endswith(".json")

    def list(self) -> list[str]:
        """Every file the signed manifest names, as content paths."""
        return sorted(f.content_path for f in self.verified.manifest.files)

    def size(self, path: str) -> int:
        """The uncompressed size from the signed manifest, so no member is read to learn it."""
        for f in self.verified.manifest.files:
            if f.content_path == path:
                return f.content_size if f.content_size is not None else f.size
        raise InvalidInputError(f"{path} is not in the verified bundle")

    def read(self, path: str) -> bytes:
        """Only a member the verifier kept; anything else is refused rather than re-read from media."""
        try:
            return self.verified.kept[path]
        except KeyError:
            raise InvalidInputError(f"{path} is not readable from the verified bundle") from None
