"""`airgap install`, `smoke`, `status`, `rollback`, `uninstall`: the far side.

An install is a journalled sequence of steps. Before any step the bundle is verified exactly as
`airgap verify` does; nothing is loaded or extracted before that passes. Content is then streamed
out of the bundle a second time into the state directory's content store, every file re-hashed
against the verified manifest on the way (the media may have changed in between). The journal
records what each step created, so a run killed at any point is undone cleanly by the next run
— the new container removed, the old one started again, a newly loaded image removed — before
that run does its own work. Only after the smoke test passes is the receipt committed; a failed
smoke test restores the previous version.

    verified → extracted → loaded → created → stopped-old → started → smoke-passed → committed

What each ``--to`` does is its target's business (``airgap.services.deploy.targets``); this module runs
the same sequence for all of them.
"""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

from airgap.adapters.runtimes import STATE_LABEL
from airgap.adapters.space import require_free
from airgap.core.build_record import BuildRecord
from airgap.core.bundle_format import Manifest
from airgap.core.smoke import Mismatch, compare_contract, summary
from airgap.errors import AnswerIsNo, EnvironmentFailure, InvalidInputError, UsageError
from airgap.ports import Adapters, ContainerRuntime
from airgap.services.deploy import targets
from airgap.services.deploy.candidate import forget, install_candidate
from airgap.services.deploy.deploying import deploy_and_smoke
from airgap.services.deploy.receipts import CANDIDATE, Installed, Journal, Receipt, now
from airgap.services.deploy.reporting import InstallResult, Witness, repaired
from airgap.services.deploy.smoketest import curl_line, prediction
from airgap.services.deploy.targets import InstallContext, InstallOptions, Site, Target
from airgap.services.deploy.targets._base import quiet as _quiet
from airgap.services.media.extraction import disk_error, read_contract, read_record
from airgap.services.media.verify import UnsafeOptionWarning, VerifiedBundle, VerifyOptions, verify_and_audit
from airgap.services.observer import NullObserver, Observer
from airgap.services.state import State

__all__ = ["InstallOptions", "InstallResult", "Installer", "Receipt", "check_policy_gate"]


def extracted_size(manifest: Manifest, blobs: Path) -> int:
    """At most how many bytes extracting ``manifest``'s files writes: every file's content, less the
    image blobs the shared store already holds (they are reused, not written again)."""
    total = 0
    for f in manifest.files:
        name = f.path.rpartition("/blobs/sha256/")[2]
        digest = f.content_sha256 if f.compression else f.sha256
        if "/blobs/sha256/" in f.path and name == digest and (blobs / name).is_file():
            continue
        total += f.content_size if f.content_size is not None else f.size
    return total


class _SmokeFailed(Exception):
    """The new version answered, but not as it did at bundle time (reported after the undo)."""

    def __init__(self, mismatches: list[Mismatch]) -> None:
        super().__init__(summary(mismatches))
        self.mismatches = mismatches


def check_policy_gate(manifest: Manifest, unsafe: bool) -> str | None:
    """The compliance gate of installing: the signed policy evaluation must have passed.

    Returns the UNSAFE note when ``--unsafe-install-failed-policy`` let a failed (or missing)
    evaluation through; raises AnswerIsNo (exit 1) otherwise.
    """
    failed = manifest.policy_failed
    if failed is False:
        return None
    if failed is None:
        what = "carries no signed policy evaluation"
    else:
        blocking = list(manifest.policy.get("blocking") or [])
        what = (
            f"failed its signed policy evaluation ({len(blocking)} open finding(s) at or above "
            f"{manifest.policy.get('fail_on')}"
            + (f": {', '.join(blocking[:3])}" if blocking else "")
            + ")"
            + (
                "; it was signed with --unsafe-sign-failed-policy"
                if manifest.policy.get("unsafe_signed_failed_policy")
                else ""
            )
        )
    if not unsafe:
        raise AnswerIsNo(
            f"{manifest.name} {manifest.version} {what}: refusing to install it",
            hint="ask the publisher for a bundle that passes its policies "
            "(or --unsafe-install-failed-policy, if the site accepts the risk in writing)",
        )
    return (
        f"UNSAFE: installing {manifest.name} {manifest.version}, which {what} "
        "(--unsafe-install-failed-policy)"
    )


class Installer:
    """One far side: its state directory, and the adapters it has (``adapters``: the runtimes,
    registry and kubectl its targets drive; the CLI passes the real ones)."""

    def __init__(
        self,
        state: State,
        observer: Observer | None = None,
        evidence: Witness | None = None,
        *,
        adapters: Adapters,
    ) -> None:
        self.state = state
        self.adapters = adapters
        self.obs = observer or NullObserver()
        self.evidence = evidence  # attests each smoke-tested install (services/evidence/attestations.py)
        self.installed = Installed(state)
        self.content_root = state.directory / "content"
        # Every container this state directory starts carries this label, so that status and
        # uninstall find it even when no receipt or journal names it (an install killed mid-step).
        self.state_label = hashlib.sha256(str(state.directory.resolve()).encode()).hexdigest()[:16]
        self.site = Site(
            state, self.obs, self.installed, self.content_root, self.state_label, targets.find, adapters
        )

    @property
    def blobs(self) -> Path:
        """The shared OCI blob store of the content store."""
        return self.site.blobs

    def _started_here(self, **labels: str) -> list[tuple[str, ContainerRuntime, str]]:
        """(target, runtime, container) of every container this state directory started that still
        exists, with ``labels`` too; runtimes that are not there have none."""
        found = []
        for runtime_target in ("docker", "podman"):
            try:
                rt = self.adapters.runtime(runtime_target)
                names = rt.containers({STATE_LABEL: self.state_label, **labels})
            except EnvironmentFailure:
                continue
            for container in names:
                target = rt.labels(container).get("io.airgap.target") or runtime_target
                found.append((target, rt, container))
        return found

    @staticmethod
    def default_target(adapters: Adapters) -> tuple[str, str]:
        """What this host can do, best first; and why it was chosen."""
        try:
            adapters.docker()
            return "docker", "the Docker Engine answers"
        except EnvironmentFailure:
            pass
        if shutil.which("podman"):
            return "podman", "podman is installed (no Docker Engine answered)"
        return "venv", "no container runtime is usable here"

    # -- install -------------------------------------------------------------------------------
    def verify_options(self, options: InstallOptions) -> VerifyOptions:
        """How an install (current or candidate) verifies: the site's trust and version history,
        and the small files the install reads handed back by the verifier."""
        return VerifyOptions(
            trusted=options.trusted,
            allow_downgrade=options.allow_downgrade,
            allow_expired=options.allow_expired,
            installed_versions=self.state.installed_versions(),
            installed_manifests=self.state.installed_manifests(),
            keep=lambda p, s: p in ("build.json", "model/contract.json") or p.startswith("manifests/"),
            blob_store=self.blobs,
        )

    def install(self, bundle: Path, options: InstallOptions) -> InstallResult:
        """Verifies the bundle, then extracts, deploys and smoke-tests it on ``options.target``, and
        commits its receipt only when the smoke test passed; anything failing after verification is
        undone (the previous version runs again) before the error is raised. With
        ``options.candidate`` the version runs beside the current one instead
        (services/deploy/candidate.py)."""
        if options.candidate:
            return install_candidate(self, bundle, options)
        target = targets.get(options.target)
        verify_opts = self.verify_options(options)
        # 1. Verify, as `airgap verify`; nothing is loaded before this returns.
        verified = verify_and_audit(
            bundle, self.state, verify_opts, self.obs, action=f"install --to {options.target}"
        )
        m = verified.manifest
        record = self.admit(bundle, options, verified, target)
        recovered = self.recover(m.name, options.target)
        current, previous = self.installed.get(m.name, options.target)
        if (
            current
            and current.manifest_sha256 == verified.manifest_sha256
            and target.healthy(self.site, current)
        ):
            return InstallResult(current, True, recovered, repaired=repaired(verified))
        journal = Journal(self.state, m.name, options.target)
        port = options.port or record.port
        if target.host_port and not (current and current.port == port and current.target == options.target):
            self.site.check_port(port)  # before any slow step; the version being replaced frees its own
        receipt = self.new_receipt(bundle, options.target, verified, port)
        content = Path(receipt.content)
        content_preexisting = content.exists()
        if not content_preexisting:
            require_free(self.site.content_root, extracted_size(m, self.blobs), "install")
        created: list[Path] = []
        ctx = InstallContext(self.site, options, receipt, current, record, content, journal, m)
        try:
            journal.step(
                "verified",
                name=m.name,
                target=options.target,
                new=receipt.to_json(),
                old=current.to_json() if current else None,
            )
            # 2. Stream what this target needs out of the bundle, re-hashing every byte, deploy it;
            # 3. the model must answer its golden inputs as it did at bundle time, here.
            contract, answers, mismatches = deploy_and_smoke(
                ctx, target, bundle, verified, self.blobs, created, self.obs
            )
            if mismatches:
                raise _SmokeFailed(mismatches)
            # 4. Commit: the receipt, then clean up what the old version used and the new one does not.
            journal.step("smoke-passed")
            self.installed.put(receipt, current or previous)
        except KeyboardInterrupt:
            raise  # the journal stays: the next run undoes what this one did
        except BaseException as exc:
            # Fail closed, whatever failed (the smoke test, the engine, a full disk, a bug): undo every
            # step (the previous version runs again) and remove what this run extracted.
            restored = self.undo(journal)
            self.remove_extracted(content, content_preexisting, created)
            if isinstance(exc, _SmokeFailed):
                if self.evidence is not None:
                    self.evidence.installed(receipt, verified, contract, exc.mismatches)
                raise AnswerIsNo(
                    f"smoke test failed, the new version removed and {restored}: {exc}",
                    hint="the model does not answer here as it did at bundle time: "
                    "check the bundle's model and golden outputs, and the target's CPU and libc",
                ) from None
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                raise disk_error(self.state.directory, exc) from None
            raise
        journal.step("committed")
        target.finish(self.site, receipt.to_json(), current.to_json() if current else {})
        journal.clear()
        self.state.audit(
            {
                "action": "install",
                "target": options.target,
                "result": "installed",
                "name": m.name,
                "version": m.version,
                "manifest_sha256": verified.manifest_sha256,
            }
        )
        if self.evidence is not None:
            self.evidence.installed(receipt, verified, contract, ())
        return InstallResult(
            receipt,
            False,
            recovered,
            (),
            prediction(contract, answers),
            curl_line(receipt.port or 8080, contract),
            target.serve_command(self.site, receipt, record, content),
            repaired(verified),
        )

    def admit(
        self, bundle: Path, options: InstallOptions, verified: VerifiedBundle, target: Target
    ) -> BuildRecord:
        """The checks between verification and the first step: the compliance gate, an image for a
        target that needs one, a signed build record; a refusal is audited. Returns the record."""
        m = verified.manifest
        # The compliance gate: the signed policy evaluation passed (or the site said otherwise).
        try:
            note = check_policy_gate(m, options.unsafe_install_failed_policy)
        except AnswerIsNo as exc:
            self._audit_refusal(bundle, options.target, m, exc)
            raise
        if note:
            warnings.warn(note, UnsafeOptionWarning, stacklevel=3)
        if target.needs_image and not m.images:
            raise InvalidInputError(
                f"{m.name} {m.version} carries no image", hint="install it with --to venv"
            )
        try:
            if "build.json" not in verified.kept:
                raise InvalidInputError(
                    f"{m.name} {m.version} has no signed build.json: it is not installable"
                )
            record = BuildRecord.from_json(verified.kept["build.json"])
            # The target's own look at the bundle, before anything is loaded (e.g. the cluster's
            # Kubernetes release against the one the manifests were rendered for).
            target.admit(self.site, options, record, verified.kept)
            return record
        except InvalidInputError as exc:
            self._audit_refusal(bundle, options.target, m, exc)
            raise

    def _audit_refusal(
        self, bundle: Path, target: str, m: Manifest, exc: AnswerIsNo | InvalidInputError
    ) -> None:
        record = {
            "action": f"install --to {target}",
            "bundle": str(bundle),
            "result": "refused",
            "exit_code": exc.exit_code,
            "name": m.name,
            "version": m.version,
            "reason": exc.one_line(),
        }
        try:
            self.state.audit(record)
        except EnvironmentFailure as audit_exc:
            exc.message = f"{exc.message} (and the audit record could not be written: {audit_exc.message})"

    def new_receipt(self, bundle: Path, target: str, verified: VerifiedBundle, port: int) -> Receipt:
        """The receipt of a verified bundle about to be installed on ``target`` (as the current
        version or as a candidate): what it is, who signed it, where its content goes, its port.
        The target fills in what it creates (container, image, ``extra``) as it deploys."""
        m = verified.manifest
        return Receipt(
            name=m.name,
            version=m.version,
            target=target,
            manifest_sha256=verified.manifest_sha256,
            key_id=verified.key_id,
            bundle=str(Path(bundle).resolve()),
            installed_at=now(),
            content=str(self.content_root / "bundles" / verified.manifest_sha256),
            port=port,
        )

    def remove_extracted(self, content: Path, preexisting: bool, created: list[Path]) -> None:
        """Removes what a failed run extracted: its content directory (unless an earlier install
        had it already) and the blobs it added to the shared store."""
        if not preexisting:
            shutil.rmtree(content, ignore_errors=True)
        for path in created:
            if path.is_relative_to(self.blobs):
                path.unlink(missing_ok=True)

    # -- recovery ------------------------------------------------------------------------------
    def recover(self, name: str, target: str, candidate: bool = False) -> tuple[str, ...]:
        """Finishes or undoes an interrupted install of (name, target), as its journal says; says
        what it did (nothing when no journal is left). With ``candidate``, the interrupted install
        of a candidate (its own journal): always undone, the current version never touched."""
        journal = Journal(self.state, name, target, CANDIDATE if candidate else None)
        if not journal.exists():
            return ()
        data = journal.load()
        if candidate:
            self.undo(journal)
            return (f"removed an interrupted candidate install of {name} ({target})",)
        if "committed" in data.get("steps", []):
            # The receipt was written: only the clean-up was cut short.
            new = data.get("new") or {}
            with _quiet():
                targets.get(target).finish(self.site, new, data.get("old") or {})
            journal.clear()
            return (f"completed the interrupted install of {name} {new.get('version')} ({target})",)
        self.undo(journal)
        return (
            f"rolled back an interrupted install of {name} {data.get('new', {}).get('version')} ({target})",
        )

    def undo(self, journal: Journal) -> str:
        """Puts back what the journalled run changed, newest first; safe to run twice. Says what
        runs now (the old version restored, or nothing), or that the undo failed too."""
        data = journal.data or (journal.load() if journal.exists() else {})
        if not data:
            return "nothing left installed"
        try:
            said = targets.get(data.get("target", "")).undo(self.site, data)
        except (AnswerIsNo, EnvironmentFailure, UsageError) as exc:
            said = f"undoing it failed too ({exc.one_line()})"
        except (OSError, subprocess.SubprocessError) as exc:
            said = f"undoing it failed too ({exc})"
        journal.clear()
        return said

    # -- smoke, status, rollback, uninstall ------------------------------------------------------
    def smoke(self, name: str, target: str) -> tuple[Receipt, list[Mismatch]]:
        """Sends the golden inputs to the installed model again, where its target runs it."""
        current, _ = self.installed.get(name, target)
        if current is None:
            raise InvalidInputError(f"{name} is not installed with --to {target}")
        contract = read_contract(Path(current.content))
        answers, failures = targets.get(target).answers(self.site, current, contract)
        return current, compare_contract(contract, answers, failures)

    def status(self) -> list[dict[str, Any]]:
        """Every installation, and everything else this state directory started: an install that was
        interrupted before its receipt was written, and containers no receipt or journal names (both
        ``healthy: false``; ``airgap uninstall NAME --to TARGET`` removes them)."""
        out = []
        known: set[str] = set()
        receipts = {(name, target) for name, target, _, _ in self.installed.all()}
        for name, target, cur, prev in self.installed.all():
            cand = self.installed.candidate(name, target)
            known |= {c for c in (cur.container, prev.container if prev else None) if c}
            known |= {cand.container} if cand and cand.container else set()
            t = targets.find(target)
            out.append(
                {
                    "name": name,
                    "target": target,
                    "version": cur.version,
                    "healthy": t is not None and t.healthy(self.site, cur),
                    "container": cur.container,
                    "port": cur.port,
                    "venv": (cur.extra or {}).get("venv"),
                    "installed_at": cur.installed_at,
                    "previous": prev.version if prev else None,
                    "candidate": {"version": cand.version, "port": cand.port, "container": cand.container}
                    if cand
                    else None,
                    "manifest_sha256": cur.manifest_sha256,
                    "interrupted": Journal(self.state, name, target).exists(),
                    "state": "installed",
                }
            )
        for path in sorted((self.state.directory / "journal").glob("*.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            new = data.get("new") or {}
            if data.get("container"):
                known.add(str(data["container"]))
            if (data.get("name"), data.get("target")) in receipts or not data.get("name"):
                continue
            out.append(
                _loose_row(
                    data["name"],
                    data.get("target", ""),
                    new.get("version"),
                    data.get("container"),
                    new.get("port"),
                    "interrupted",
                )
            )
        for target, rt, container in self._started_here():
            if container in known:
                continue
            labels = rt.labels(container)
            out.append(
                _loose_row(
                    labels.get("io.airgap.name", "?"),
                    target,
                    labels.get("io.airgap.version"),
                    container,
                    None,
                    "orphaned",
                )
            )
        return out

    def rollback(self, name: str, target: str, options: InstallOptions) -> InstallResult:
        """Makes the previous version current again, smoke-tested before its receipt is committed."""
        t = targets.get(target)
        current, previous = self.installed.get(name, target)
        if current is None or previous is None:
            raise UsageError(f"{name} ({target}) has no previous version to roll back to")
        content = Path(previous.content)
        if not content.exists():
            raise EnvironmentFailure(
                f"the content of {name} {previous.version} is gone from the state directory"
            )
        journal = Journal(self.state, name, target)
        journal.step("verified", name=name, target=target, new=previous.to_json(), old=current.to_json())
        contract = read_contract(content)
        record = read_record(content)
        ctx = InstallContext(self.site, options, previous, current, record, content, journal)
        try:
            t.rollback(ctx)
            answers, failures = t.answers(self.site, previous, contract)
        except BaseException:
            self.undo(journal)
            raise
        mismatches = compare_contract(contract, answers, failures)
        if mismatches:
            self.undo(journal)
            raise AnswerIsNo(f"the previous version fails its smoke test: {summary(mismatches)}")
        self.installed.put(previous, current)
        t.finish(self.site, previous.to_json(), current.to_json())
        journal.clear()
        self.state.audit(
            {
                "action": "rollback",
                "target": target,
                "name": name,
                "from": current.version,
                "to": previous.version,
                "result": "rolled back",
            }
        )
        return InstallResult(previous, False, ())

    def uninstall(self, name: str, target: str) -> list[str]:
        """Removes the installation, an interrupted install of it, and any container this state
        directory started for it that nothing else names. An image another installation still
        uses (to run, or to roll back to) stays."""
        current, previous = self.installed.get(name, target)
        journal = Journal(self.state, name, target)
        strays = self._started_here(**{"io.airgap.name": name, "io.airgap.target": target})
        if current is None and not journal.exists() and not strays:
            raise InvalidInputError(f"{name} is not installed with --to {target}")
        removed: list[str] = forget(self, name, target) if current is not None else []
        if journal.exists():
            version = (journal.load().get("new") or {}).get("version")
            self.undo(journal)
            removed.append(f"the interrupted install of {version}")
        t = targets.find(target)
        for r in (current, previous):
            if r is not None and t is not None:
                with _quiet():
                    removed += [x for x in t.remove(self.site, r) if x not in removed]
        for _, rt, container in self._started_here(**{"io.airgap.name": name, "io.airgap.target": target}):
            with _quiet():
                rt.remove(container)
                removed.append(f"container {container}")
        self.installed.drop(name, target)
        journal.clear()
        self.state.audit({"action": "uninstall", "target": target, "name": name, "result": "removed"})
        return removed


def _loose_row(
    name: str, target: str, version: str | None, container: str | None, port: int | None, state: str
) -> dict[str, Any]:
    """A status row for something this state directory started that no receipt names."""
    return {
        "name": name,
        "target": target,
        "version": version or "?",
        "healthy": False,
        "container": container,
        "port": port,
        "installed_at": "-",
        "previous": None,
        "candidate": None,
        "manifest_sha256": None,
        "interrupted": True,
        "state": state,
    }
