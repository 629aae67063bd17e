"""`airgap install --candidate` and `airgap promote`: a new version runs beside the current one,
is compared with it (services/deploy/compare.py), and becomes current only when the engineer says so.

A candidate is verified and smoke-tested exactly like an install, but under names of its own (a
container or virtualenv with a ``-candidate`` suffix, another host port) and without stopping the
current version: it is recorded as the *candidate* of NAME, never as current. A candidate that
fails its smoke test is removed and the current version was never touched. Its install has a
journal of its own (``NAME--TARGET--candidate``, services/deploy/receipts.py), so a killed run is
undone by the next one; the installer's receipt, recovery and undo are the candidate's too.

Promote is a switch through the install journal, like a rollback: the candidate's version is
started on the current version's name and port, smoke-tested, and committed as current with the
old current as *previous*, so `airgap rollback NAME` undoes a promote the way it undoes an upgrade.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Protocol

from airgap.core.build_record import BuildRecord
from airgap.core.smoke import compare_contract, summary
from airgap.errors import AnswerIsNo, EnvironmentFailure, InvalidInputError, UsageError
from airgap.services.deploy import targets
from airgap.services.deploy.deploying import deploy_and_smoke
from airgap.services.deploy.receipts import CANDIDATE, Installed, Journal, Receipt, now
from airgap.services.deploy.reporting import InstallResult, Witness, repaired
from airgap.services.deploy.smoketest import curl_line, prediction
from airgap.services.deploy.targets import InstallContext, InstallOptions, Site, Target
from airgap.services.deploy.targets._base import quiet
from airgap.services.media.extraction import disk_error, read_contract, read_record
from airgap.services.media.verify import VerifiedBundle, VerifyOptions, verify_and_audit
from airgap.services.observer import Observer
from airgap.services.state import State

__all__ = ["CANDIDATE", "InstallSteps", "forget", "install_candidate", "promote"]


class InstallSteps(Protocol):
    """What a candidate uses of the installer (services/deploy/install.py): the far side's state,
    and the steps an install and a candidate share — admitted, recovered and undone alike."""

    state: State
    obs: Observer
    evidence: Witness | None
    installed: Installed
    site: Site
    content_root: Path

    @property
    def blobs(self) -> Path:
        """The shared OCI blob store of the content store."""
        ...

    def verify_options(self, options: InstallOptions) -> VerifyOptions:
        """How an install verifies: the site's trust and version history."""
        ...

    def admit(
        self, bundle: Path, options: InstallOptions, verified: VerifiedBundle, target: Target
    ) -> BuildRecord:
        """The checks between verification and the first step; returns the signed build record."""
        ...

    def new_receipt(self, bundle: Path, target: str, verified: VerifiedBundle, port: int) -> Receipt:
        """The receipt of a verified bundle about to be installed on ``target``."""
        ...

    def remove_extracted(self, content: Path, preexisting: bool, created: list[Path]) -> None:
        """Removes what a failed run extracted."""
        ...

    def recover(self, name: str, target: str, candidate: bool = False) -> tuple[str, ...]:
        """Finishes or undoes an interrupted install (or candidate install) of (name, target);
        says what it did."""
        ...

    def undo(self, journal: Journal) -> str:
        """Puts back what a journalled run changed; says what runs now."""
        ...


def _discard(installer: InstallSteps, target: Target | None, receipt: Receipt) -> list[str]:
    """What only ``receipt`` used, removed by its target (best effort: a clean-up)."""
    if target is None:
        return []
    with quiet():
        return list(target.discard(installer.site, receipt))
    return []


def install_candidate(installer: InstallSteps, bundle: Path, options: InstallOptions) -> InstallResult:
    """Verifies the bundle as `install` does, then runs it beside the current version of its name
    and smoke-tests it there; records it as the candidate when it passed. An older candidate gives
    way first (its name and port are the new one's) and is not put back if the new one fails.
    Nothing of the current version is stopped, changed or removed, whatever fails."""
    target = targets.get(options.target)
    if not target.candidates:
        raise UsageError(
            f"--to {options.target} cannot run a candidate beside the current version",
            hint="use --to docker, podman or venv (for Kubernetes the bundle's manifests render a "
            "-candidate Deployment: docs/install.md)",
        )
    verify_opts = installer.verify_options(options)
    # 1. Verify, as `airgap verify`; nothing is loaded before this returns.
    verified = verify_and_audit(
        bundle,
        installer.state,
        verify_opts,
        installer.obs,
        action=f"install --candidate --to {options.target}",
    )
    m = verified.manifest
    record = installer.admit(bundle, options, verified, target)
    current, _ = installer.installed.get(m.name, options.target)
    if current is None:
        raise InvalidInputError(
            f"{m.name} is not installed with --to {options.target}: "
            "a candidate runs beside the current version",
            hint=f"install it first: airgap install {bundle} --to {options.target}",
        )
    recovered = installer.recover(m.name, options.target, candidate=True)
    journal = Journal(installer.state, m.name, options.target, CANDIDATE)
    older = installer.installed.candidate(m.name, options.target)
    port = options.port or _free_port(installer, target, current, older)
    if target.host_port and not (older and older.port == port):
        installer.site.check_port(port)
    receipt = installer.new_receipt(bundle, options.target, verified, port)
    content = Path(receipt.content)
    content_preexisting = content.exists()
    created: list[Path] = []
    if older is not None:
        # The older candidate gives way first: its port and names are the new one's to take.
        installer.installed.put_candidate(m.name, options.target, None)
        _discard(installer, target, older)
    ctx = InstallContext(installer.site, options, receipt, None, record, content, journal, m)
    try:
        journal.step("verified", name=m.name, target=options.target, new=receipt.to_json(), old=None)
        contract, answers, mismatches = deploy_and_smoke(
            ctx, target, bundle, verified, installer.blobs, created, installer.obs
        )
        if mismatches:
            raise AnswerIsNo(
                f"the candidate {m.name} {m.version} failed its smoke test and was removed "
                f"({m.name} {current.version} still runs): {summary(mismatches)}",
                hint="the model does not answer here as it did at bundle time",
            )
        journal.step("smoke-passed")
        installer.installed.put_candidate(m.name, options.target, receipt)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        installer.undo(journal)
        installer.remove_extracted(content, content_preexisting, created)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise disk_error(installer.state.directory, exc) from None
        raise
    journal.clear()
    installer.state.audit(
        {
            "action": f"install --candidate --to {options.target}",
            "target": options.target,
            "result": "candidate",
            "name": m.name,
            "version": m.version,
            "manifest_sha256": verified.manifest_sha256,
        }
    )
    return InstallResult(
        receipt,
        False,
        recovered,
        (),
        prediction(contract, answers),
        curl_line(port, contract) if target.host_port else None,
        None,
        repaired(verified),
    )


def _free_port(installer: InstallSteps, target: Target, current: Receipt, older: Receipt | None) -> int:
    """The older candidate's port, else the first port above the current one that nothing holds."""
    from airgap.adapters.runtimes import port_in_use

    if older is not None and older.port:
        return older.port
    port = (current.port or 8080) + 1
    while target.host_port and port_in_use(port) and port < 65535:
        port += 1
    return port


def promote(installer: InstallSteps, name: str, target_name: str, options: InstallOptions) -> InstallResult:
    """Makes the candidate current on the current version's name and port, smoke-tested before it is
    committed; the old current becomes previous (rollback brings it back). Journalled like an
    install: a failure, or a run killed half-way, puts the old current back."""
    target = targets.get(target_name)
    installer.recover(name, target_name)  # an interrupted install of NAME is finished or undone first
    current, _ = installer.installed.get(name, target_name)
    candidate = installer.installed.candidate(name, target_name)
    if current is None or candidate is None:
        raise InvalidInputError(
            f"{name} has no candidate to promote with --to {target_name}",
            hint="run one beside the current version first: "
            f"airgap install BUNDLE --to {target_name} --candidate",
        )
    if candidate.manifest_sha256 == current.manifest_sha256 and target_name != "kubernetes":
        # The same bundle shares its content and, once promoted, the current version's container
        # or virtualenv name: the switch would remove the running version before starting "the
        # new" one. (Kubernetes promotes by a rolling update of the current Deployment.)
        raise InvalidInputError(
            f"the candidate of {name} is the bundle that runs already ({current.version}, "
            f"manifest {current.manifest_sha256[:12]}…): there is nothing to promote",
            hint=f"install another version with --candidate, or remove this one: airgap uninstall {name}",
        )
    content = Path(candidate.content)
    if not content.exists():
        raise EnvironmentFailure(f"the content of the candidate {name} {candidate.version} is gone")
    new = target.as_current(candidate, current)
    new.installed_at = now()
    # Read before the journal starts: damaged content is refused with nothing to undo.
    contract = read_contract(content)
    record = read_record(content)
    journal = Journal(installer.state, name, target_name)
    journal.step("verified", name=name, target=target_name, new=new.to_json(), old=current.to_json())
    ctx = InstallContext(installer.site, options, new, current, record, content, journal)
    try:
        # Started in place of the current version (beside it first, where the target can) and asked
        # the golden cases itself.
        answers, failures = target.promote(ctx, contract)
    except BaseException:
        installer.undo(journal)
        raise
    mismatches = compare_contract(contract, answers, failures)
    if installer.evidence is not None:  # the smoke test of the promoted version, where it now runs
        installer.evidence.smoked(new, contract, mismatches)
    if mismatches:
        restored = installer.undo(journal)
        raise AnswerIsNo(
            f"the promoted {name} {new.version} fails its smoke test, {restored}: {summary(mismatches)}"
        )
    journal.step("smoke-passed")
    installer.installed.put(new, current)
    installer.installed.put_candidate(name, target_name, None)
    journal.step("committed")
    target.finish(installer.site, new.to_json(), current.to_json())
    _discard(installer, target, candidate)  # its own container; the image is current's now
    journal.clear()
    installer.state.audit(
        {
            "action": "promote",
            "target": target_name,
            "name": name,
            "from": current.version,
            "to": new.version,
            "manifest_sha256": new.manifest_sha256,
            "result": "promoted",
        }
    )
    return InstallResult(new, False, (), (), prediction(contract, answers), None, None)


def forget(installer: InstallSteps, name: str, target_name: str) -> list[str]:
    """Removes the candidate of (name, target) and what only it used (uninstall calls this first)."""
    removed: list[str] = []
    if installer.recover(name, target_name, candidate=True):
        removed.append("an interrupted candidate install")
    try:
        candidate = installer.installed.candidate(name, target_name)
    except EnvironmentFailure:
        return removed
    if candidate is None:
        return removed
    installer.installed.put_candidate(name, target_name, None)
    return removed + _discard(installer, targets.find(target_name), candidate)
