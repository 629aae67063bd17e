"""The one version order (core/versions.py): SemVer 2.0.0 precedence, as semver.org states it."""

from __future__ import annotations

import itertools

import pytest

from airgap.core import versions

# semver.org, item 11: each is lower than the next.
SPEC_ORDER = [
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.1.0",
    "2.0.0",
    "10.0.0",
]


def test_the_example_order_of_the_specification() -> None:
    for lower, higher in itertools.combinations(SPEC_ORDER, 2):
        assert versions.compare(lower, higher) == -1, (lower, higher)
        assert versions.compare(higher, lower) == 1, (higher, lower)
        assert versions.older(lower, higher) and not versions.older(higher, lower)


def test_a_pre_release_is_older_than_its_release() -> None:
    assert versions.older("1.0.0-rc1", "1.0.0")
    assert not versions.older("1.0.0", "1.0.0-rc1")
    assert versions.parse("1.0.0-rc1").is_prerelease and not versions.parse("1.0.0").is_prerelease


def test_build_metadata_is_ignored() -> None:
    assert versions.compare("1.0.0+build.1", "1.0.0+build.2") == 0
    assert versions.compare("1.0.0-rc.1+x", "1.0.0-rc.1") == 0
    assert not versions.older("1.0.0+a", "1.0.0+b") and not versions.older("1.0.0+b", "1.0.0+a")
    assert versions.highest("1.0.0+a", "1.0.0+b") == "1.0.0+a"


def test_numeric_identifiers_compare_numerically_and_below_alphanumeric_ones() -> None:
    assert versions.older("1.0.0-rc.2", "1.0.0-rc.10")
    assert versions.older("1.0.0-2", "1.0.0-10")
    assert versions.older("1.0.0-999", "1.0.0-a")
    assert versions.older("1.0.0-alpha", "1.0.0-alpha.0")  # a longer list is higher
    assert versions.older("1.0.0-Z", "1.0.0-a")  # ASCII order


def test_numbers_are_not_compared_as_text() -> None:
    assert versions.older("1.9.0", "1.10.0")
    assert versions.older("9.0.0", "10.0.0")


def test_highest_picks_by_precedence() -> None:
    assert versions.highest("1.0.0", "1.0.0-rc1") == "1.0.0"
    assert versions.highest("1.0.0-rc1", "1.0.0") == "1.0.0"
    assert versions.highest("2.0.0", "10.0.0") == "10.0.0"


def test_str_round_trips() -> None:
    for text in [*SPEC_ORDER, "1.2.3-x.7.z.92+exp.sha.5114f85"]:
        assert str(versions.parse(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1",
        "1.0",
        "v1.0.0",
        "01.0.0",
        "1.01.0",
        "1.0.0-",
        "1.0.0-01",
        "1.0.0+",
        "1.0.0-a..b",
        "1.0.0 ",
        "1.0.0\n",
        "1.0.0-rc1\n",
        "x/../../y",
        "1.0.0+a/b",
        "1." + "1" * 200 + ".0",
    ],
)
def test_what_is_not_semver_is_refused(text: str) -> None:
    assert not versions.is_valid(text)
    with pytest.raises(versions.InvalidVersion):
        versions.parse(text)
