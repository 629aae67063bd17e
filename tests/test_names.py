"""The rule for names the far side creates (airgap/core/names.py), as values: strings in,
the same strings or one refusal naming the entry out."""

from __future__ import annotations

import pytest

from airgap.core import names


@pytest.mark.parametrize(
    "path",
    [
        "build.json",
        "image/oci/manifest.json",
        "image/oci/blobs/sha256/" + "a" * 64,
        "wheels/numpy-2.1.0+cpu-cp311-cp311-manylinux_2_17_x86_64.whl",
        "licenses/a,b=c@d~e.txt",
        "model/_private",
        "x" * 255,
        "/".join(["d"] * 32),
    ],
)
def test_names_a_bundle_really_has_are_allowed(path: str) -> None:
    assert names.check_path(path) == path


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("", "an empty name"),
        ("/etc/passwd", "absolute"),
        ("a//b", "an empty segment"),
        ("a/", "an empty segment"),
        ("a/../b", "the segment '..'"),
        ("./a", "the segment '.'"),
        (".a", "starting with '.'"),
        ("a/-b", "starting with '-'"),
        ("a\\b", "the character '\\\\'"),
        ("a\x00b", "U+0000"),
        ("caf\u00e9", "U+00E9"),
        ("x" * 256, "over 255 bytes"),
        ("/".join(["d"] * 33), "deeper than 32"),
        ("/".join(["d" * 200] * 3), "longer than 512 bytes"),
        ("model/sha256sums", "the reserved name"),
        ("a/b/Manifest.Json.Sig", "the reserved name"),
        ("MANIFEST.json", "reserved at the top"),
    ],
)
def test_a_refused_name_says_why(path: str, why: str) -> None:
    with pytest.raises(names.UnsafeName) as caught:
        names.check_path(path)
    assert caught.value.exit_code == 4 and why in caught.value.message, caught.value.message
    assert caught.value.entry == path


@pytest.mark.parametrize(
    ("paths", "why"),
    [
        (["a", "a"], "is listed twice"),
        (["a/B", "a/b"], "the same file once extracted"),
        (["a", "a/b"], "needs it to be a directory"),
        (["a/b/c", "A"], "needs it to be a directory"),
        (["x/y/z", "x/y"], "needs it to be a directory"),
    ],
)
def test_paths_that_cannot_be_one_tree_are_refused(paths: list[str], why: str) -> None:
    with pytest.raises(names.UnsafeName, match=why):
        names.check_tree(paths)


def test_paths_that_share_directories_are_one_tree() -> None:
    names.check_tree(["a/b", "a/c", "a/d/e", "ab", "a.b/c"])


def test_twins_by_case_or_unicode_normalisation_share_a_key() -> None:
    assert names.twin_key("Model.ONNX") == names.twin_key("model.onnx")
    assert names.twin_key("caf\u00e9") == names.twin_key("cafe\u0301")  # NFC and NFD
    assert names.twin_key("\ufb01le") == names.twin_key("file")  # NFKC
    assert names.twin_key("\u212a") == names.twin_key("k")  # KELVIN SIGN


def test_top_level_reservations_are_the_callers_and_ignore_case() -> None:
    with pytest.raises(names.UnsafeName, match="'Blobs' is reserved"):
        names.check_path("Blobs/x", top_reserved=("blobs",))
    assert names.check_path("model/blobs/x", top_reserved=("blobs",)) == "model/blobs/x"
