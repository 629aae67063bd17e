"""The install-target port: what every ``--to`` is, and the values the installer hands it.

A target deploys a verified, extracted bundle (load, start, wait for it), answers the smoke test,
says whether an installation is healthy, undoes a journalled run, rolls back, and removes. The
installer does the rest (verify, extract, journal, commit) the same way for all of them.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from airgap.adapters.runtimes import STATE_LABEL, port_in_use
from airgap.errors import EnvironmentFailure, UsageError
from airgap.services.deploy.smoketest import Answers, answers_on, healthz, wait_ready

if TYPE_CHECKING:  # the --to choices are listed at start-up: the heavy modules load when used
    from airgap.core.build_record import BuildRecord
    from airgap.core.bundle_format import Manifest
    from airgap.ports import Adapters, OciImage
    from airgap.services.deploy.receipts import Installed, Journal, Receipt
    from airgap.services.observer import Observer
    from airgap.services.state import State


@dataclass(frozen=True)
class InstallOptions:
    """What the engineer chose on the command line for one install (or rollback)."""

    target: str
    port: int | None = None
    registry: str | None = None
    insecure_registry: bool = False
    ca_bundle: Path | None = None
    kube_context: str | None = None
    namespace: str | None = None
    python: str | None = None
    allow_downgrade: bool = False
    allow_expired: bool = False
    trusted: tuple[Any, ...] = ()
    unsafe_install_failed_policy: bool = False
    candidate: bool = False  # beside the current version, under names of its own, without switching


@dataclass(frozen=True)
class Site:
    """The far side as every target sees it: its state directory, receipts, content store, progress,
    and the adapters (runtimes, registry, kubectl) a target makes what it drives with."""

    state: State
    observer: Observer
    installed: Installed
    content_root: Path
    state_label: str  # carried by every container this state directory starts
    find_target: Callable[[str], Target | None]  # the --to registry (targets.find): who holds a port
    adapters: Adapters

    @property
    def blobs(self) -> Path:
        """The one OCI blob store all bundles' images share."""
        return self.content_root / "oci" / "blobs" / "sha256"

    def labels(self, name: str, version: str, target: str) -> dict[str, str]:
        """The labels that let status and uninstall find a container when no receipt names it."""
        return {
            "io.airgap.name": name,
            "io.airgap.version": version,
            "io.airgap.target": target,
            STATE_LABEL: self.state_label,
        }

    def check_port(self, port: int) -> None:
        """Refuses a port something already listens on, naming it and the way out (exit 5)."""
        if not port_in_use(port):
            return
        holders = [
            f"{name} {r.version} (--to {target})"
            for name, target, r, _ in self.installed.all()
            if r.port == port and (t := self.find_target(target)) is not None and t.host_port
        ]
        by = f" by {', '.join(holders)}" if holders else " by another program"
        raise EnvironmentFailure(
            f"port {port} on 127.0.0.1 is already in use{by}",
            hint=f"stop what listens there, or install on a free port with --port N "
            f"(see what holds it: ss -ltnp 'sport = :{port}')",
        )


@dataclass(frozen=True)
class InstallContext:
    """One install (or rollback) in flight, as its target needs it.

    ``receipt`` is what is being made current; the target fills in what it created (container,
    image, ``extra``) before the smoke test. ``current`` is what runs now, if anything. ``manifest``
    is None on rollback: the image is already there.
    """

    site: Site
    options: InstallOptions
    receipt: Receipt
    current: Receipt | None
    record: BuildRecord  # the signed build.json
    content: Path  # this bundle's directory in the content store
    journal: Journal
    manifest: Manifest | None = None

    def deploy_dir(self) -> Path:
        """``deploy/`` of the installed tree, where a target writes what it renders for its
        runtime: a real directory this process owns, checked from the content store down, so a
        link planted there cannot send the write outside the state directory (the name is
        reserved, so no bundle file is there: docs/bundle-format.md, Names)."""
        from airgap.services.media.formats._extracting import private_dir

        root = self.site.content_root if self.content.is_relative_to(self.site.content_root) else self.content
        return private_dir(self.content / "deploy", root)

    def oci_image(self) -> OciImage:
        """The bundle's image in the content store's OCI layout."""
        from airgap.ports import OciImage

        if self.manifest is None or not self.manifest.images:
            raise UsageError(f"{self.receipt.name} {self.receipt.version}: no image to load here")
        img = self.manifest.images[0]  # validated: digests are sha256:<64 hex>, safe file names
        return OciImage(
            self.site.content_root / "oci", img.manifest_digest, img.config_digest, img.layers, img.name
        )


class Target(Protocol):
    """One ``--to``. Register an instance as ``TARGET`` in a module of ``airgap.services.deploy.targets``."""

    name: str  # the --to value; a DNS label (it names journal files)
    rank: int  # where it is listed among the --to choices
    needs_image: bool  # False: installs from the host wheelhouse instead
    host_port: bool  # listens on 127.0.0.1:PORT of this host: the port is checked before anything starts
    candidates: bool  # can run a candidate beside the current version (services/deploy/candidate.py)

    def wants(self, path: str) -> bool:
        """Whether the bundle file at ``path`` (its content path) is extracted for this target."""
        ...

    def admit(self, site: Site, options: InstallOptions, record: BuildRecord, kept: dict[str, bytes]) -> None:
        """Refuses (InvalidInputError) a verified bundle this target cannot run, before any step;
        ``kept`` holds the bundle's build.json and manifests."""
        ...

    def deploy(self, ctx: InstallContext) -> None:
        """Loads and starts the new version, journalling each step, and waits until it is ready."""
        ...

    def answers(self, site: Site, receipt: Receipt, contract: dict[str, Any]) -> Answers:
        """The installed model's outputs for the golden cases, asked where this target runs it."""
        ...

    def healthy(self, site: Site, receipt: Receipt) -> bool:
        """Whether the installation is running and answering now (never raises: False)."""
        ...

    def endpoint(self, site: Site, receipt: Receipt) -> AbstractContextManager[int]:
        """A loopback port where the installed server answers, for as long as the context is open."""
        ...

    def undo(self, site: Site, journal: dict[str, Any]) -> str:
        """Puts back what a journalled run changed, newest first; says what runs now."""
        ...

    def finish(self, site: Site, new: dict[str, Any], old: dict[str, Any]) -> None:
        """After the commit: removes what the old version used and the new one does not."""
        ...

    def rollback(self, ctx: InstallContext) -> None:
        """Makes ``ctx.receipt`` (the previous version) run again in place of ``ctx.current``."""
        ...

    def promote(self, ctx: InstallContext, contract: dict[str, Any]) -> Answers:
        """Makes ``ctx.receipt`` (the candidate's version) run in place of ``ctx.current`` and returns
        its answers to the golden cases, asked of the new version itself. A target that can run the
        two side by side stops the current one only once those answers match ``contract``; the caller
        judges them, and undoes the journal when they do not."""
        ...

    def remove(self, site: Site, receipt: Receipt) -> list[str]:
        """Removes an installed version; says what was removed."""
        ...

    def as_current(self, candidate: Receipt, current: Receipt) -> Receipt:
        """The receipt a promoted candidate runs under: its version, in the current one's place."""
        ...

    def discard(self, site: Site, receipt: Receipt) -> list[str]:
        """Removes what ``receipt`` used that no receipt in the state directory names any more (a
        replaced or promoted candidate); says what was removed."""
        ...

    def serve_command(self, site: Site, receipt: Receipt, record: BuildRecord, content: Path) -> str | None:
        """For a target that runs no server: the shell command that serves the installed model."""
        ...


class BaseTarget:
    """Defaults for a target that serves HTTP on ``127.0.0.1:PORT`` and cannot roll back in place."""

    name = ""
    rank = 100
    needs_image = True
    host_port = False
    candidates = False  # can run a candidate beside the current version (services/deploy/candidate.py)

    def admit(self, site: Site, options: InstallOptions, record: BuildRecord, kept: dict[str, bytes]) -> None:
        """Every bundle that verified is admitted unless the target says otherwise."""

    def wants(self, path: str) -> bool:
        """The model, contract, manifests, build record and server; the image, or the host wheelhouse."""
        if path.startswith(("model/", "manifests/")) or path in ("build.json", "server/airgap_server.py"):
            return True
        return path.startswith("image/oci/" if self.needs_image else "host/")

    def answers(self, site: Site, receipt: Receipt, contract: dict[str, Any]) -> Answers:
        """The golden cases sent to the server on ``127.0.0.1:PORT`` once it is ready."""
        return answers_on(receipt.port or 8080, contract)

    def healthy(self, site: Site, receipt: Receipt) -> bool:
        """Healthy while the server on the port answers ``/healthz``."""
        return healthz(receipt.port or 8080)

    @contextlib.contextmanager
    def endpoint(self, site: Site, receipt: Receipt) -> Iterator[int]:
        """The published port on ``127.0.0.1``, once the server is ready."""
        port = receipt.port or 8080
        wait_ready(port, lambda: True, timeout=30)
        yield port

    def undo(self, site: Site, journal: dict[str, Any]) -> str:
        """Nothing of its own to put back: says what runs now."""
        return restored(journal)

    def finish(self, site: Site, new: dict[str, Any], old: dict[str, Any]) -> None:
        """Nothing of the old version to clean up."""
        return None

    def rollback(self, ctx: InstallContext) -> None:
        """Refused: this target cannot bring the previous version back in place."""
        raise UsageError(f"rollback of --to {self.name}: install the previous bundle again")

    def promote(self, ctx: InstallContext, contract: dict[str, Any]) -> Answers:
        """The rollback switch (the current version stops, the new one starts), then the smoke test."""
        self.rollback(ctx)
        return self.answers(ctx.site, ctx.receipt, contract)

    def remove(self, site: Site, receipt: Receipt) -> list[str]:
        """Nothing of its own to remove."""
        return []

    def as_current(self, candidate: Receipt, current: Receipt) -> Receipt:
        """The receipt a promoted candidate runs under: its version, on the current one's port."""
        from airgap.services.deploy.receipts import Receipt

        promoted = Receipt.from_json(candidate.to_json())
        promoted.port = current.port
        return promoted

    def discard(self, site: Site, receipt: Receipt) -> list[str]:
        """Removes what ``receipt`` used that no receipt in the state directory names any more (a
        replaced or promoted candidate); says what was removed."""
        return []

    def serve_command(self, site: Site, receipt: Receipt, record: BuildRecord, content: Path) -> str | None:
        """None: the target runs a server of its own."""
        return None


def restored(journal: dict[str, Any]) -> str:
    """What runs after an undo that put everything back: the old version, or nothing."""
    old = journal.get("old") or {}
    return f"{old.get('version')} restored" if old else "nothing left installed"


class quiet:
    """Best-effort clean-up: an error while undoing must not hide the error being handled."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        return kind is not None and issubclass(
            kind, (EnvironmentFailure, OSError, subprocess.SubprocessError)
        )
