"""The four rules a wheelhouse must pass before it is trusted, each broken on purpose."""

from __future__ import annotations

import json

import pytest

from airgap.core.profile import Profile
from airgap.core.tags import compute_tags
from airgap.core.wheelhouse import Lock, Pin, WheelFile, parse_lock, verify_wheelhouse
from airgap.errors import IntegrityError, InvalidInputError
from tests.conftest import ROOT

PROFILE = Profile.from_json((ROOT / "tests" / "data" / "profiles" / "rocky8-aarch64-py310.json").read_bytes())
PY = PROFILE.primary_python()
TAGS = compute_tags(PY)
H = {n: (c * 64) for n, c in (("a", "a"), ("b", "b"), ("c", "c"), ("d", "d"))}

APP = WheelFile(
    "app-1.0-py3-none-any.whl",
    H["a"],
    ("lib>=2", "winonly; sys_platform == 'win32'", "x86lib; platform_machine == 'x86_64'"),
)
LIB = WheelFile("lib-2.1-cp310-cp310-manylinux_2_17_aarch64.manylinux2014_aarch64.whl", H["b"], ())
LOCK = Lock((Pin("app", "1.0", frozenset({H["a"]})), Pin("lib", "2.1", frozenset({H["b"]}))))


def test_a_consistent_wheelhouse_passes_and_reports_the_best_tag() -> None:
    report = verify_wheelhouse(LOCK, [APP, LIB], TAGS, PY, roots=["app"])
    assert (
        report.best_tags["lib"] == "cp310-cp310-manylinux_2_28_aarch64"
        or "aarch64" in report.best_tags["lib"]
    )


def test_an_extra_file_is_rejected() -> None:
    stray = WheelFile("evil-0.1-py3-none-any.whl", H["c"])
    with pytest.raises(IntegrityError, match="evil-0.1-py3-none-any.whl, which no pin"):
        verify_wheelhouse(LOCK, [APP, LIB, stray], TAGS, PY)


def test_two_files_for_one_pin_are_rejected() -> None:
    other = WheelFile("lib-2.1-py3-none-any.whl", H["b"])
    with pytest.raises(IntegrityError, match="two files for lib"):
        verify_wheelhouse(LOCK, [APP, LIB, other], TAGS, PY)


def test_a_file_whose_hash_is_not_locked_is_rejected() -> None:
    swapped = WheelFile(LIB.filename, H["d"])
    with pytest.raises(IntegrityError, match="which the lock does not list"):
        verify_wheelhouse(LOCK, [APP, swapped], TAGS, PY)


def test_a_wheel_for_another_platform_is_rejected() -> None:
    x86 = WheelFile("lib-2.1-cp310-cp310-manylinux_2_17_x86_64.whl", H["b"])
    with pytest.raises(IntegrityError, match="does not run on the target"):
        verify_wheelhouse(LOCK, [APP, x86], TAGS, PY)


def test_a_dependency_missing_under_the_targets_markers_is_rejected() -> None:
    app = WheelFile(APP.filename, H["a"], ("lib>=2", "armlib; platform_machine == 'aarch64'"))
    with pytest.raises(IntegrityError, match="armlib"):
        verify_wheelhouse(LOCK, [app, LIB], TAGS, PY)


def test_a_pin_outside_the_required_range_is_rejected() -> None:
    app = WheelFile(APP.filename, H["a"], ("lib>=3",))
    with pytest.raises(IntegrityError, match="requires lib>=3"):
        verify_wheelhouse(LOCK, [app, LIB], TAGS, PY)


def test_a_missing_file_is_rejected() -> None:
    with pytest.raises(IntegrityError, match="no file for lib"):
        verify_wheelhouse(LOCK, [APP], TAGS, PY)


def test_lock_round_trips_and_refuses_unhashed_pins() -> None:
    text = LOCK.render()
    assert parse_lock(text) == LOCK
    with pytest.raises(InvalidInputError, match="has no --hash"):
        parse_lock("numpy==2.0.0\n")
    with pytest.raises(InvalidInputError, match="not a pinned requirement"):
        parse_lock("numpy>=2 --hash=sha256:" + "a" * 64 + "\n")
    assert json.dumps(sorted(p.name for p in parse_lock(text).pins)) == '["app", "lib"]'
