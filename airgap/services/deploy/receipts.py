"""What the far side remembers about installs: receipts (``installed.json``) and the journal of the
install in flight (``journal/NAME--TARGET.json``; a candidate's, ``journal/NAME--TARGET--candidate.json``).

A receipt is written only after the smoke test passed; the journal is written before every step,
so that a run killed at any point is undone (or finished) by the next one.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from airgap.adapters.fs import write_json
from airgap.core import versions
from airgap.errors import EnvironmentFailure, InvalidInputError
from airgap.services.state import State

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")

# A plugin point, empty in production: each hook is called with the name of every journalled step
# right after it is written. The crash-recovery tests add one that kills the process at a chosen step.
STEP_HOOKS: list[Callable[[str], None]] = []

CANDIDATE = "candidate"  # the kind of journal a candidate's install keeps beside the install journal


def now() -> str:
    """The time a receipt is made, as receipts record it (UTC, to the second)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Receipt:
    """What is installed for one (name, target): enough to check it, roll back to it, remove it."""

    name: str
    version: str
    target: str
    manifest_sha256: str
    key_id: str
    bundle: str
    installed_at: str
    content: str  # directory in the content store
    image_id: str | None = None
    container: str | None = None
    port: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The receipt as stored in installed.json and in the journal."""
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Receipt:
        """A receipt from installed.json or the journal; unknown keys are ignored, missing ones None."""
        receipt = cls(**{k: data.get(k) for k in cls.__dataclass_fields__})  # type: ignore[arg-type]
        receipt.extra = dict(receipt.extra or {})
        return receipt


class Installed:
    """``installed.json``: receipts per name and target, current and previous."""

    def __init__(self, state: State) -> None:
        self.path = state.directory / "installed.json"

    def load(self) -> dict[str, Any]:
        """The whole file; an empty record when nothing was ever installed here."""
        try:
            return dict(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return {"names": {}}
        except (OSError, ValueError) as exc:
            raise EnvironmentFailure(f"the state file {self.path} is unreadable: {exc}") from None

    def get(self, name: str, target: str) -> tuple[Receipt | None, Receipt | None]:
        """The current and previous receipts of one (name, target)."""
        entry = self.load()["names"].get(name, {}).get("targets", {}).get(target, {})
        cur, prev = entry.get("current"), entry.get("previous")
        return (Receipt.from_json(cur) if cur else None, Receipt.from_json(prev) if prev else None)

    def put(self, receipt: Receipt, previous: Receipt | None) -> None:
        """Commits ``receipt`` as current (atomically), and raises the highest version ever seen."""
        data = self.load()
        entry = data["names"].setdefault(receipt.name, {"highest_version": receipt.version, "targets": {}})
        entry["highest_version"] = _highest(entry.get("highest_version"), receipt.version)
        entry.setdefault("manifests", {})[receipt.manifest_sha256] = receipt.version
        candidate = (entry["targets"].get(receipt.target) or {}).get("candidate")
        entry["targets"][receipt.target] = {
            "current": receipt.to_json(),
            "previous": previous.to_json() if previous else None,
        }
        if candidate:  # a candidate runs beside whatever is current: a new current keeps it
            entry["targets"][receipt.target]["candidate"] = candidate
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, data)

    def candidate(self, name: str, target: str) -> Receipt | None:
        """The candidate of one (name, target): a version running beside the current one."""
        entry = self.load()["names"].get(name, {}).get("targets", {}).get(target, {})
        return Receipt.from_json(entry["candidate"]) if entry.get("candidate") else None

    def put_candidate(self, name: str, target: str, receipt: Receipt | None) -> None:
        """Records ``receipt`` as the candidate of (name, target), replacing any older one
        (atomically); None forgets the candidate. The current and previous stay as they are."""
        data = self.load()
        entry = data["names"].get(name, {}).get("targets", {}).get(target)
        if entry is None:
            raise InvalidInputError(f"{name} is not installed with --to {target}")
        if receipt is None:
            entry.pop("candidate", None)
        else:
            entry["candidate"] = receipt.to_json()
            versions_seen = data["names"][name].setdefault("manifests", {})
            versions_seen[receipt.manifest_sha256] = receipt.version
        write_json(self.path, data)

    def drop(self, name: str, target: str) -> None:
        """Forgets one (name, target); the highest version stays, so rollback protection holds."""
        data = self.load()
        targets = data["names"].get(name, {}).get("targets", {})
        targets.pop(target, None)
        write_json(self.path, data)

    def all(self) -> list[tuple[str, str, Receipt, Receipt | None]]:
        """(name, target, current, previous) of every installation, sorted."""
        out = []
        for name, entry in sorted(self.load()["names"].items()):
            for target, t in sorted(entry.get("targets", {}).items()):
                if t.get("current"):
                    prev = Receipt.from_json(t["previous"]) if t.get("previous") else None
                    out.append((name, target, Receipt.from_json(t["current"]), prev))
        return out

    def receipts(self) -> list[Receipt]:
        """Every receipt recorded here: current, previous and candidate of every installation."""
        out: list[Receipt] = []
        for name, target, cur, prev in self.all():
            out += [r for r in (cur, prev, self.candidate(name, target)) if r is not None]
        return out

    def images_in_use(self, targets: Collection[str], besides: tuple[str, str] | None = None) -> set[str]:
        """Image ids that receipts (current or previous) of ``targets`` still name, leaving out the
        (name, target) ``besides``: an image one of them needs, to run or to roll back to, stays."""
        used: set[str] = set()
        for name, target, cur, prev in self.all():
            if target in targets and (name, target) != besides:
                cand = self.candidate(name, target)
                used |= {r.image_id for r in (cur, prev, cand) if r is not None and r.image_id}
        return used


def _highest(recorded: object, new: str) -> str:
    """The highest version ever installed, in the one order (SemVer precedence) that rollback
    protection uses; a recorded value that is not SemVer is replaced by the new, valid one."""
    if not isinstance(recorded, str) or not versions.is_valid(recorded):
        return new
    return versions.highest(recorded, new)


class Journal:
    """The in-flight install of one (name, target); its presence means the last run did not finish."""

    def __init__(self, state: State, name: str, target: str, kind: str | None = None) -> None:
        """The journal of (name, target); ``kind`` CANDIDATE is a candidate's install, kept beside
        the install journal (``NAME--TARGET--candidate.json``) and never mistaken for it."""
        # The file is named from these: only DNS-label names may name it.
        if not DNS_LABEL.fullmatch(name) or not DNS_LABEL.fullmatch(target):
            raise InvalidInputError(f"no installation is named {name!r} --to {target!r}")
        if kind not in (None, CANDIDATE):
            raise ValueError(f"no journal kind {kind!r}")
        suffix = f"--{kind}" if kind else ""
        self.path = state.directory / "journal" / f"{name}--{target}{suffix}.json"
        self.candidate = kind == CANDIDATE
        self.data: dict[str, Any] = {}

    def exists(self) -> bool:
        """Whether an install of this (name, target) was interrupted (or is running)."""
        return self.path.exists()

    def load(self) -> dict[str, Any]:
        """The journal as the interrupted run left it."""
        self.data = json.loads(self.path.read_text())
        return self.data

    def step(self, step: str, **facts: Any) -> None:
        """Records that ``step`` is done and what it created, durably, before the next step starts."""
        self.data.setdefault("steps", []).append(step)
        self.data.update(facts)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, self.data)
        for hook in STEP_HOOKS:
            hook(step)

    def clear(self) -> None:
        """The run finished (or was undone): nothing is in flight."""
        self.path.unlink(missing_ok=True)
        self.data = {}
