"""The engine lease: image removal waits until no other build holds the engine (in-process, real
file locks; no engine needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from airgap.adapters.engine_lease import EngineLease
from airgap.errors import EnvironmentFailure

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


class Remover:
    """Stands for the engine's image removal: records what it was asked to remove."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, ids: Sequence[str]) -> tuple[int, int]:
        self.calls.append(list(ids))
        return len(ids), 1000 * len(ids)


def test_a_build_that_is_not_alone_defers_removal_to_the_last_one_to_finish(tmp_path: Path) -> None:
    remove = Remover()
    with EngineLease(tmp_path) as first:
        with EngineLease(tmp_path):
            assert first.remove_when_alone([A], remove) is None
            assert remove.calls == []  # the second build may be copying from A right now
        # the second one finished; the first is alone now and removes both runs' leftovers
        assert first.remove_when_alone([B], remove) == (2, 2000)
    assert remove.calls == [[A, B]]


def test_removal_is_only_ever_asked_for_full_image_ids(tmp_path: Path) -> None:
    """A short id is a prefix: removal by prefix could select images that are not this run's."""
    remove = Remover()
    with EngineLease(tmp_path) as lease:
        assert lease.remove_when_alone(["0", "a", "sha256:abc", A[:19]], remove) == (0, 0)
        assert remove.calls == []
        lease.remove_when_alone([A, "f"], remove)
    assert remove.calls == [[A]]


def test_what_was_removed_is_not_asked_for_again(tmp_path: Path) -> None:
    remove = Remover()
    with EngineLease(tmp_path) as lease:
        lease.remove_when_alone([A], remove)
        assert lease.remove_when_alone([], remove) == (0, 0)
    assert remove.calls == [[A]]


def test_a_planted_link_in_place_of_the_lock_file_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    leases = tmp_path / "leases"
    leases.mkdir()
    EngineLease(leases).lock_path.symlink_to(victim)
    with pytest.raises(EnvironmentFailure, match="cannot take the image engine lease"), EngineLease(leases):
        pass
    assert victim.read_text() == "keep me"
