"""The one sequence by which a verified bundle becomes a running, smoke-tested version on a target:
an install and a candidate both run it, each inside its own journal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airgap.core.smoke import Mismatch, compare_contract
from airgap.services.deploy.targets import InstallContext, Target
from airgap.services.media.extraction import extract, read_contract
from airgap.services.media.verify import VerifiedBundle
from airgap.services.observer import Observer


def deploy_and_smoke(
    ctx: InstallContext,
    target: Target,
    bundle: Path,
    verified: VerifiedBundle,
    blobs: Path,
    created: list[Path],
    obs: Observer,
) -> tuple[dict[str, Any], dict[str, Any], list[Mismatch]]:
    """Streams what ``target`` needs out of the verified bundle (re-hashing every byte), deploys it
    and asks it the golden inputs: the contract, the answers and what differed from the contract."""
    obs.begin("extract", None)
    extract(bundle, verified, target.wants, ctx.content, blobs, created, root=ctx.site.content_root)
    obs.end("extract")
    ctx.journal.step("extracted")
    contract = read_contract(ctx.content)
    target.deploy(ctx)
    answers, failures = target.answers(ctx.site, ctx.receipt, contract)
    return contract, answers, compare_contract(contract, answers, failures)
