"""`core/smoke.py`: the installed model's answers against the recorded contract, for every output kind
ONNX can express, as the model server writes them in JSON. Pure values; no engine."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airgap.core.smoke import Mismatch, Tolerance, compare_case, compare_contract, compare_output, summary

TOL = Tolerance(rtol=1e-4, atol=1e-5)


def diff(expected: Any, actual: Any, tol: Tolerance = TOL) -> str | None:
    """The detail of the difference, or None; both sides go through JSON as they do in real life."""
    mismatch = compare_output("out", json.loads(json.dumps(expected)), json.loads(json.dumps(actual)), tol)
    return None if mismatch is None else mismatch.detail


# ------------------------------------------------------------------------------------------ tensors


def test_float_tensor_within_tolerance_matches() -> None:
    assert diff([[0.5, 0.25]], [[0.50004, 0.250001]]) is None


def test_float_tensor_outside_tolerance_names_the_index_and_both_values() -> None:
    detail = diff([[0.5, 0.25], [0.1, 0.9]], [[0.5, 0.25], [0.2, 0.8]])
    assert detail is not None
    assert detail.startswith("at [1][0]: got 0.2, expected 0.1")
    assert "2 of 4 values differ" in detail


def test_integer_tensor_compares_exactly() -> None:
    assert diff([1, 2, 3], [1, 2, 3]) is None
    assert diff([1, 2, 3], [1, 2, 4]) == "at [2]: got 4, expected 3"


def test_huge_integers_compare_exactly_not_through_floats() -> None:
    assert diff([2**62 + 1], [2**62]) == f"at [0]: got {2**62}, expected {2**62 + 1}"


def test_bool_tensor_compares_exactly_and_a_number_is_not_a_bool() -> None:
    assert diff([[True, False]], [[True, False]]) is None
    assert diff([[True, False]], [[True, True]]) == "at [0][1]: got true, expected false"
    assert diff([True], [1]) is not None


def test_string_tensor_compares_exactly() -> None:
    assert diff([["cat"], ["dog"]], [["cat"], ["dog"]]) is None
    assert diff([["cat"], ["dog"]], [["cat"], ["Dog"]]) == 'at [1][0]: got "Dog", expected "dog"'


def test_a_different_shape_is_a_difference_not_a_crash() -> None:
    assert diff([[1.0, 2.0]], [[1.0], [2.0]]) == "shape [2, 1], expected [1, 2]"
    assert diff([1, 2], [1, 2, 3]) == "shape [3], expected [2]"


def test_scalar_outputs_compare() -> None:
    assert diff(3, 3) is None
    assert diff(0.5, 0.5000001) is None
    assert diff("a", "b") == 'got "b", expected "a"'


def test_empty_tensor_matches_empty_tensor() -> None:
    assert diff([], []) is None
    assert diff([[]], [[]]) is None


def test_non_finite_floats_as_the_server_writes_them_match_themselves() -> None:
    assert diff([1.0, "NaN", "Infinity", "-Infinity"], [1.0, "NaN", "Infinity", "-Infinity"]) is None
    assert diff([1.0, "NaN"], [1.0, 0.5]) == 'at [1]: got 0.5, expected "NaN"'
    assert diff(["Infinity"], ["-Infinity"]) == 'at [0]: got "-Infinity", expected "Infinity"'


def test_tolerance_is_relative_plus_absolute() -> None:
    loose = Tolerance(rtol=0.1, atol=0.0)
    assert diff([100.0], [109.0], loose) is None
    assert diff([100.0], [111.0], loose) is not None
    assert diff([0.0], [1e-6], Tolerance(rtol=0.0, atol=1e-5)) is None


# -------------------------------------------------------------------- sequences, maps, sequence of maps


def test_sequence_of_tensors_compares_each_tensor() -> None:
    expected = [[[1.0, 2.0]], [[3.0]]]
    assert diff(expected, [[[1.0, 2.0]], [[3.00001]]]) is None
    assert diff(expected, [[[1.0, 2.0]], [[4.0]]]) == (
        "at [1][0][0]: got 4, expected 3 (|diff| 1 > 0.00031, rtol=0.0001, atol=1e-05)"
    )
    assert diff(expected, [[[1.0, 2.0]]]) == "1 elements, expected 2"


def test_map_with_int_keys_matches_its_json_form_with_string_keys() -> None:
    ort_value = {0: 0.25, 1: 0.75}  # what onnxruntime returns in Python
    json_value = {"0": 0.25, "1": 0.75}  # what the server answers
    assert compare_output("p", json_value, ort_value, TOL) is None
    assert compare_output("p", ort_value, json_value, TOL) is None


def test_map_value_difference_names_the_key() -> None:
    assert diff({"cat": 0.2, "dog": 0.8}, {"cat": 0.3, "dog": 0.7}) == (
        'at ["cat"]: got 0.3, expected 0.2 (|diff| 0.1 > 3e-05, rtol=0.0001, atol=1e-05); '
        "2 of 2 values differ"
    )


def test_map_with_other_keys_names_the_missing_and_unexpected_keys() -> None:
    detail = diff({"0": 0.5, "1": 0.5}, {"0": 0.5, "2": 0.5})
    assert detail == 'keys "1" missing; unexpected keys "2"'


def test_sequence_of_maps_zipmap_classifier_output() -> None:
    expected = [{"0": 0.1, "1": 0.2, "2": 0.7}, {"0": 0.6, "1": 0.3, "2": 0.1}]
    assert diff(expected, [{"0": 0.100001, "1": 0.2, "2": 0.7}, {"0": 0.6, "1": 0.3, "2": 0.1}]) is None
    detail = diff(expected, [{"0": 0.1, "1": 0.2, "2": 0.7}, {"0": 0.1, "1": 0.3, "2": 0.6}])
    assert detail is not None and detail.startswith('at [1]["0"]: got 0.1, expected 0.6')
    assert diff(expected, expected[:1]) == "1 elements, expected 2"


def test_sequence_of_maps_with_string_labels() -> None:
    expected = [{"cat": 0.9, "dog": 0.1}]
    assert diff(expected, [{"dog": 0.1, "cat": 0.9}]) is None  # key order is not a difference


def test_a_map_where_a_tensor_was_recorded_is_a_difference() -> None:
    assert diff([[0.1, 0.9]], [{"0": 0.1, "1": 0.9}]) == "at [0]: got an object of 2, expected a list of 2"
    assert diff({"a": 1}, [1]) == "got a list of 1, expected an object of 1"
    assert diff([1.0], [None]) == "at [0]: got null, expected 1"


# ---------------------------------------------------------------------------------- cases, contract


CONTRACT: dict[str, Any] = {
    "tolerance": {"rtol": 1e-4, "atol": 1e-5},
    "cases": [
        {
            "name": "one",
            "inputs": {"X": [[1.0]]},
            "outputs": {"output_label": [2], "output_probability": [{"0": 0.1, "1": 0.2, "2": 0.7}]},
        },
        {
            "name": "strings",
            "inputs": {"X": [[1.0]]},
            "outputs": {"label": ["cat"], "probabilities": [[0.9, 0.1]]},
        },
    ],
}


def test_contract_matches_the_same_answers() -> None:
    answers = {c["name"]: c["outputs"] for c in CONTRACT["cases"]}
    assert compare_contract(CONTRACT, answers) == []


def test_contract_reports_every_case_output_with_its_names() -> None:
    answers = {
        "one": {"output_label": [1], "output_probability": [{"0": 0.1, "1": 0.7, "2": 0.2}]},
        "strings": {"label": ["dog"], "probabilities": [[0.9, 0.1]]},
    }
    mismatches = compare_contract(CONTRACT, answers)
    assert [(m.case, m.output) for m in mismatches] == [
        ("one", "output_label"),
        ("one", "output_probability"),
        ("strings", "label"),
    ]
    assert mismatches[0].line() == "case 'one', output 'output_label': at [0]: got 1, expected 2"
    assert summary(mismatches).endswith("(+2 more)")


def test_a_case_without_an_answer_says_why_when_known() -> None:
    answers = {"one": CONTRACT["cases"][0]["outputs"]}
    mismatches = compare_contract(CONTRACT, answers, {"strings": "HTTP 400 bad_shape: input 'X' ..."})
    assert mismatches == [Mismatch("strings", "*", "HTTP 400 bad_shape: input 'X' ...")]
    assert compare_contract(CONTRACT, answers)[0].detail == "the installed model gave no answer"


def test_an_output_missing_or_unknown_is_a_difference() -> None:
    outputs = CONTRACT["cases"][1]["outputs"]
    missing = compare_case("s", outputs, {"label": ["cat"]}, 1e-4, 1e-5)
    assert missing == [Mismatch("s", "probabilities", "missing from the answer")]
    extra = compare_case("s", outputs, {**outputs, "logits": [1.0]}, 1e-4, 1e-5)
    assert extra == [Mismatch("s", "logits", "in the answer but not in the recorded contract")]


@pytest.mark.parametrize(
    "answer",
    [None, 3, "x", [], {}, [[1, 2], [3]], [{"a": [1, {"b": None}]}], [[["deep"]]], {"0": {"1": {"2": []}}}],
    ids=lambda a: json.dumps(a),
)
def test_any_json_answer_is_compared_without_crashing(answer: Any) -> None:
    """Whatever a broken or hostile server answers, the verdict is a difference, never an exception."""
    for expected in CONTRACT["cases"][0]["outputs"].values():
        assert compare_output("o", expected, answer, TOL) is not None
