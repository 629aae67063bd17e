"""The data contract: derived from reference data, refused when it contradicts the model or the golden
inputs, enforced by the running server (400 naming feature, value and rule) and watched for drift."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from airgap.core import datacontract as dc
from airgap.core.project import parse_project
from airgap.errors import InvalidInputError
from airgap.services.build.datacontract import prepare_data_contract
from airgap.services.build.model_image import server_module
from tests.test_server import Server, serving, wait_until_ready

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "tabular"

CSV = """temperature,line,ok,count,pressure
20.5,A,1,3,1.0
22.0,B,0,5,
19.0,A,1,4,2.0
25.0,C,0,7,3.0
"""


def test_derived_contract_types_ranges_categories_and_missing_values() -> None:
    header, rows = dc.read_csv(CSV, "ref.csv")
    contract = dc.derive(header, rows, "features")
    by_name = {f.name: f for f in contract.features}
    temp = by_name["temperature"]
    assert (temp.type, temp.minimum, temp.maximum, temp.nullable) == ("float", 18.4, 25.6, False)
    assert by_name["line"].type == "category" and by_name["line"].allowed == ("A", "B", "C")
    assert by_name["ok"].type == "bool"
    count = by_name["count"]
    assert (count.type, count.minimum, count.maximum) == ("int", 2, 8)
    assert by_name["pressure"].nullable is True
    assert [f.name for f in contract.features] == header  # column order is the tensor's order
    stats = {s["name"]: s for s in contract.stats}
    assert stats["pressure"]["missing_rate"] == 0.25
    assert math.isclose(sum(stats["temperature"]["shares"]), 1.0, abs_tol=1e-5)


def test_each_rule_names_what_is_broken() -> None:
    header, rows = dc.read_csv(CSV, "ref.csv")
    contract = dc.derive(header, rows, "features")
    assert contract.check_row([20.0, "A", 1, 3, 1.0]) is None
    assert contract.check_row([30.0, "A", 1, 3, 1.0]) == (0, "is above the contract's maximum 25.6")
    assert contract.check_row([20.0, "Z", 1, 3, 1.0]) == (1, "is not one of the allowed values (A, B, C)")
    assert contract.check_row([20.0, "A", 1, 3.5, 1.0]) == (
        3,
        "is not a whole number (the contract says int)",
    )
    assert contract.check_row([None, "A", 1, 3, 1.0]) == (
        0,
        "is missing, and the contract does not allow missing values",
    )
    assert contract.check_row([20.0, "A", 1, 3, None]) is None


def test_a_ragged_reference_is_refused_naming_its_line() -> None:
    with pytest.raises(InvalidInputError, match=r"^ref\.csv:3: 2 values for 3 columns"):
        dc.read_csv("a,b,c\n1,2,3\n1,2\n", "ref.csv")
    with pytest.raises(InvalidInputError, match="header must name every column once"):
        dc.read_csv("a,a\n1,2\n", "ref.csv")
    with pytest.raises(InvalidInputError, match="no rows"):
        dc.read_csv("a,b\n", "ref.csv")


def test_psi_is_zero_for_the_reference_and_large_for_a_shifted_population() -> None:
    values = [i / 100 for i in range(1000)]
    edges = dc.quantile_edges(values)
    shares = [0.1] * (len(edges) + 1)
    same = [0] * len(shares)
    shifted = [0] * len(shares)
    for v in values:
        same[dc.bin_index(edges, v)] += 1
        shifted[dc.bin_index(edges, v + 5.0)] += 1
    assert dc.psi(shares, same) < 0.01
    assert dc.psi(shares, shifted) > 1.0


def _project(extra: str) -> str:
    text = (EXAMPLE / "airgap.yaml").read_text()
    head = text.split("\ndata:", 1)[0]
    return head + extra


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            "\ndata:\n  features:\n    - {name: t, type: decimal}\n",
            r"airgap\.yaml:\d+: data\.features\[0\]\.type: must be one of",
        ),
        (
            "\ndata:\n  features:\n    - {name: t, min: 3, max: 1}\n",
            r"data\.features\[0\]\.min: min 3 is above max 1",
        ),
        (
            "\ndata:\n  reference: ../outside.csv\n",
            r"data\.reference: '\.\./outside\.csv' leaves the project",
        ),
        ("\ndata:\n  input: features\n", r"data: needs a reference"),
        ("\ndata:\n  features:\n    - {name: c, type: category}\n", r"needs its allowed values"),
        ("\ndata:\n  refrence: r.csv\n", r"data\.refrence: is not a known field"),
    ],
)
def test_a_bad_data_section_names_the_field_and_its_line(data: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_project(_project(data), "airgap.yaml")


def _example(tmp_path: Path, data: str) -> tuple[Path, object]:
    dest = tmp_path / "p"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("build"))
    text = _project(data)
    (dest / "airgap.yaml").write_text(text)
    return dest, parse_project(text, "airgap.yaml")


def test_the_example_contract_is_derived_and_admits_every_golden_input(tmp_path: Path) -> None:
    project_dir, project = _example(tmp_path, "\ndata:\n  reference: model/reference.csv\n")
    doc = prepare_data_contract(project, project_dir, project_dir / "model" / "classifier.onnx")  # type: ignore[arg-type]
    assert doc is not None
    assert doc["input"] == "features"
    assert [f["name"] for f in doc["features"]] == ["temperature", "pressure", "vibration", "current"]
    assert doc["reference_rows"] == 400


def test_a_golden_input_outside_the_contract_is_refused_before_any_slow_phase(tmp_path: Path) -> None:
    data = (
        "\ndata:\n  reference: model/reference.csv\n"
        "  features:\n    - {name: pressure, min: -0.5, max: 0.5}\n"
    )
    project_dir, project = _example(tmp_path, data)
    with pytest.raises(
        InvalidInputError,
        match=r"golden case 'single_row': features\[0\]\[1\] \(pressure\) = -1 is below"
        r" the contract's minimum -0\.5",
    ):
        prepare_data_contract(project, project_dir, project_dir / "model" / "classifier.onnx")  # type: ignore[arg-type]


def test_a_contract_with_the_wrong_number_of_features_is_refused(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    data = "\ndata:\n  features:\n    - {name: a}\n    - {name: b}\n"
    project_dir, project = _example(tmp_path / "x", data)
    with pytest.raises(
        InvalidInputError,
        match=r"data: the data contract has 2 features but input 'features' is \[batch, 4\]",
    ):
        prepare_data_contract(project, project_dir, project_dir / "model" / "classifier.onnx")  # type: ignore[arg-type]


def test_a_data_input_the_model_lacks_is_refused(tmp_path: Path) -> None:
    project_dir, project = _example(tmp_path, "\ndata:\n  input: pixels\n  reference: model/reference.csv\n")
    with pytest.raises(
        InvalidInputError, match=r"data\.input names 'pixels'; the model's inputs are features"
    ):
        prepare_data_contract(project, project_dir, project_dir / "model" / "classifier.onnx")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ the running server
@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    directory = tmp_path_factory.mktemp("guarded")
    _, rows = dc.read_csv((EXAMPLE / "model" / "reference.csv").read_text(), "reference.csv")
    project = parse_project((EXAMPLE / "airgap.yaml").read_text(), "airgap.yaml")
    doc = prepare_data_contract(project, EXAMPLE, EXAMPLE / "model" / "classifier.onnx")
    contract = directory / "data-contract.json"
    contract.write_text(json.dumps(doc))
    with serving(directory, contract=contract) as running:
        wait_until_ready(running)
        yield running, rows
        assert running.stop() == 0


def test_the_server_refuses_a_row_outside_the_contract_naming_feature_value_and_rule(guarded) -> None:  # type: ignore[no-untyped-def]
    server: Server = guarded[0]
    status, answer = server.predict({"inputs": {"features": [[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 99.0, 0.1]]}})
    assert status == 400
    assert answer["error"]["code"] == "out_of_contract"
    assert answer["error"]["message"].startswith(
        "features[1][2] (vibration) = 99 is above the contract's maximum "
    ), answer
    status, _ = server.predict({"inputs": {"features": [[0.1, 0.2, 0.3, 0.4]]}})
    assert status == 200
    metrics = server.metrics()
    assert metrics['airgap_out_of_contract_total{feature="vibration",rule="max"}'] >= 1


def test_the_contract_is_served_as_signed(guarded) -> None:  # type: ignore[no-untyped-def]
    server: Server = guarded[0]
    status, doc = server.get_json("/v1/contract")
    assert status == 200 and doc["format"] == "airgap.data-contract/v1"
    assert [f["name"] for f in doc["features"]] == ["temperature", "pressure", "vibration", "current"]


def test_drift_stays_low_for_reference_rows_and_rises_for_a_shifted_population(guarded) -> None:  # type: ignore[no-untyped-def]
    server: Server = guarded[0]
    rows = [[float(v) for v in row] for row in guarded[1]]
    for start in range(0, 320, 8):  # the window then holds reference-like rows only
        assert server.predict({"inputs": {"features": rows[start : start + 8]}})[0] == 200
    calm = server.metrics()
    assert calm['airgap_feature_drift_psi{feature="pressure"}'] < 0.1
    shifted = [[r[0], min(r[1] + 1.5, 3.0), r[2], r[3]] for r in rows[:320]]
    for start in range(0, 320, 8):
        assert server.predict({"inputs": {"features": shifted[start : start + 8]}})[0] == 200
    drifted = server.metrics()
    assert drifted['airgap_feature_drift_psi{feature="pressure"}'] > 0.25
    assert drifted['airgap_feature_drift_psi{feature="temperature"}'] < 0.1
    # the answers are counted per value, and their distribution is compared with the reference's
    answered = sum(v for k, v in drifted.items() if k.startswith('airgap_predictions_total{output="label"'))
    assert answered >= 640
    assert drifted['airgap_prediction_drift_window_rows{output="label"}'] == min(answered, 1000)
    assert calm['airgap_prediction_drift_psi{output="label"}'] < 0.05


def test_the_bundle_records_what_the_model_answers_on_the_reference() -> None:
    project = parse_project((EXAMPLE / "airgap.yaml").read_text(), "airgap.yaml")
    doc = prepare_data_contract(project, EXAMPLE, EXAMPLE / "model" / "classifier.onnx")
    assert doc is not None
    (label,) = doc["predictions"]
    assert label["output"] == "label" and sorted(label["values"]) == ["0", "1", "2"]
    assert sum(label["shares"]) == pytest.approx(1.0)


def test_unix_timestamp_bounds_are_rounded_outward_and_admit_every_reference_row() -> None:
    """Six significant digits rounded to nearest made an hour of timestamps one value (1.7e9), refusing
    every row, and rounded a lower bound of 1013.25733 up to 1013.26, above the smallest reading."""
    stamps = [1_700_000_123 + 14 * i for i in range(258)]
    readings = [round(1013.2599 + i * 1e-4, 4) for i in range(len(stamps))]
    text = "ts,reading\n" + "".join(f"{t},{r!r}\n" for t, r in zip(stamps, readings))
    header, rows = dc.read_csv(text, "ref.csv")
    contract = dc.derive(header, rows, "features")
    ts, reading = contract.features
    assert ts.minimum is not None and ts.maximum is not None
    assert ts.minimum <= min(stamps) and ts.maximum >= max(stamps) and ts.maximum - ts.minimum > 3_500
    assert reading.minimum is not None and reading.maximum is not None
    assert reading.minimum <= min(readings) and reading.maximum >= max(readings)
    assert all(contract.check_row([float(c) for c in row]) is None for row in rows)
    edges = contract.stats[0]["edges"]
    assert len(edges) == dc.BINS - 1  # the decile edges stay distinct too


def test_a_feature_named_with_only_a_mode_keeps_its_derived_range() -> None:
    header, rows = dc.read_csv(CSV, "ref.csv")
    derived = dc.derive(header, rows, "features")
    warned = dc.override(derived, {}, {"temperature": "warn"})
    temp = warned.features[0]
    assert (temp.mode, temp.minimum, temp.maximum) == ("warn", 18.4, 25.6)
    assert warned.to_json()["features"][1]["mode"] == "enforce"
    with pytest.raises(InvalidInputError, match="'humidity', which is not a column"):
        dc.override(derived, {}, {"humidity": "warn"})


def test_a_mode_other_than_enforce_or_warn_is_refused_naming_its_line() -> None:
    data = "\ndata:\n  reference: model/reference.csv\n  features:\n    - {name: pressure, mode: log}\n"
    with pytest.raises(InvalidInputError, match=r"data\.features\[0\]\.mode: must be one of enforce, warn"):
        parse_project(_project(data), "airgap.yaml")
    spec = parse_project(
        _project(
            "\ndata:\n  reference: model/reference.csv\n  features:\n    - {name: pressure, mode: warn}\n"
        ),
        "airgap.yaml",
    ).data
    assert spec is not None and spec.modes == (("pressure", "warn"),) and spec.features == ()


# ------------------------------------------------------------------------------ the contract as documented
# The server's own TensorSpec and DataGuard, in-process: what a request's "inputs" becomes, and what the
# guard refuses, warns about and counts, without a socket. (docs/serving.md#the-data-contract-on-the-wire)

SERVER = server_module()
MODEL = EXAMPLE / "model" / "classifier.onnx"


def _doc(
    features: list[dict[str, object]],
    baseline: Sequence[dict[str, object]] = (),
    input_name: str = "features",
) -> dict[str, object]:
    return {"format": dc.FORMAT, "input": input_name, "features": features, "baseline": list(baseline)}


MIXED = [  # the example model's four float32 columns, declared as each kind of feature
    {"name": "level", "type": "float", "min": -1.0, "max": 1.0, "nullable": True},
    {"name": "count", "type": "int", "min": 0, "max": 10},
    {"name": "flag", "type": "bool"},
    {"name": "line", "type": "category", "allowed": ["1", "2", "3"]},
]
MIXED_BASELINE = [
    {"name": "level", "kind": "numeric", "edges": [0.0], "shares": [0.5, 0.5], "missing_rate": 0.0},
    {"name": "line", "kind": "category", "categories": ["1", "2"], "shares": [0.5, 0.5], "missing_rate": 0.0},
]


def _guarded(
    features: list[dict[str, object]] = MIXED,
    model: Path = MODEL,
    baseline: list[dict[str, object]] = MIXED_BASELINE,
    input_name: str = "features",
) -> tuple[object, object]:
    loaded = SERVER.Model(str(model), 1)
    guard = SERVER.DataGuard(_doc(features, baseline, input_name), loaded)
    return loaded, guard


def _check(loaded: object, guard: object, rows: object, name: str = "features") -> list[tuple[str, str]]:
    feeds = loaded.prepare({name: rows}, 64)
    warnings = guard.check(feeds)
    guard.observe(feeds)
    return warnings


def _refusal(loaded: object, guard: object, rows: object, name: str = "features") -> object:
    with pytest.raises(SERVER.ApiError) as caught:
        _check(loaded, guard, rows, name)
    assert caught.value.status == 400
    return caught.value


def _metrics(guard: object) -> dict[str, float]:
    from tests.test_server import parse_metrics

    return parse_metrics("\n".join(guard.render()) + "\n")


def _text_model(directory: Path) -> Path:
    """A model with one string tensor [batch, 2] (color, size) that casts size to a float: the shape
    of a pipeline fed a table with a text column; onnxruntime fails on a size that is no number."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node(
                "Constant", [], ["one"], value=helper.make_tensor("one", TensorProto.INT64, [], [1])
            ),
            helper.make_node(
                "Constant", [], ["zero"], value=helper.make_tensor("zero", TensorProto.INT64, [], [0])
            ),
            helper.make_node("Gather", ["row", "one"], ["size_text"], axis=1),
            helper.make_node("Cast", ["size_text"], ["size"], to=TensorProto.FLOAT),
            helper.make_node("Gather", ["row", "zero"], ["color"], axis=1),
        ],
        "text_table",
        [helper.make_tensor_value_info("row", TensorProto.STRING, ["batch", 2])],
        [
            helper.make_tensor_value_info("size", TensorProto.FLOAT, ["batch"]),
            helper.make_tensor_value_info("color", TensorProto.STRING, ["batch"]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = directory / "text.onnx"
    onnx.save(model, str(path))
    return path


TEXT_FEATURES = [
    {"name": "color", "type": "category", "allowed": ["red", "blue"]},
    {"name": "size", "type": "float", "min": 0.0, "max": 10.0, "nullable": True},
]


def test_a_text_column_does_not_turn_off_the_numeric_checks_of_the_others(tmp_path: Path) -> None:
    loaded, guard = _guarded(TEXT_FEATURES, _text_model(tmp_path), [], "row")
    assert _check(loaded, guard, [["red", 2.5], ["blue", "7"]], "row") == []
    for size in (999999, "999999"):
        refused = _refusal(loaded, guard, [["red", 2.5], ["blue", size]], "row")
        assert refused.code == "out_of_contract"
        assert refused.message.startswith("row[1][1] (size) = 999999 is above the contract's maximum 10")
    refused = _refusal(loaded, guard, [["green", 1.0]], "row")
    assert refused.cells[0]["rule"] == "allowed"


def test_a_text_that_is_no_number_in_a_numeric_feature_is_a_400_before_inference(tmp_path: Path) -> None:
    loaded, guard = _guarded(TEXT_FEATURES, _text_model(tmp_path), [], "row")
    feeds = loaded.prepare({"row": [["red", "abc"]]}, 64)
    with pytest.raises(
        Exception, match="(?i)cast|parse|convert|stof|invalid"
    ):  # what reaching the model does
        loaded.run(feeds)
    refused = _refusal(loaded, guard, [["red", "abc"]], "row")
    assert refused.code == "out_of_contract"
    assert refused.message.startswith('row[0][1] (size) = "abc" is not a number (the contract says float)')
    assert _metrics(guard)['airgap_out_of_contract_total{feature="size",rule="type"}'] == 1
    refused = _refusal(loaded, guard, [["red", {"size": 1}]], "row")  # not a value the column takes
    assert refused.code == "bad_dtype" and "row[0][1] (size) is an object" in refused.message


def test_bool_accepts_only_true_false_0_or_1() -> None:
    loaded, guard = _guarded()
    for flag in (True, False, 0, 1, 0.0, 1.0):
        assert _check(loaded, guard, [[0.5, 3, flag, 1]]) == []
    for flag in (0.5, 2, -1):
        refused = _refusal(loaded, guard, [[0.5, 3, flag, 1]])
        assert refused.cells[0]["rule"] == "bool", refused.message
    assert _refusal(loaded, guard, [[0.5, 3, "true", 1]]).code == "bad_dtype"


def test_null_is_accepted_where_nullable_and_tracked_as_the_missing_rate() -> None:
    loaded, guard = _guarded()
    feeds = loaded.prepare({"features": [[None, 3, 1, 1], [0.5, 3, 1, 2]]}, 64)
    assert np.isnan(feeds["features"][0, 0])  # the model receives NaN, which imputers read as missing
    assert guard.check(feeds) == []
    guard.observe(feeds)
    metrics = _metrics(guard)
    assert metrics['airgap_feature_missing_ratio{feature="level"}'] == 0.5
    # the reference had no missing level: half the window missing is drift
    assert metrics['airgap_feature_drift_psi{feature="level"}'] > 0.25


def test_null_is_refused_where_the_feature_is_not_nullable(tmp_path: Path) -> None:
    loaded, guard = _guarded()
    refused = _refusal(loaded, guard, [[0.5, None, 1, 1], [0.5, 3, 1, None]])
    assert refused.code == "out_of_contract"
    assert [(c["row"], c["feature"], c["value"], c["rule"]) for c in refused.cells] == [
        (0, "count", "null", "missing"),
        (1, "line", "null", "missing"),
    ]
    assert refused.message.startswith(
        "features[0][1] (count) = null is missing, and the contract does not allow missing values; "
    )
    assert _metrics(guard)['airgap_out_of_contract_total{feature="count",rule="missing"}'] == 1
    loaded, guard = _guarded(TEXT_FEATURES, _text_model(tmp_path), [], "row")
    for color in (None, ""):  # JSON null, or the text tensor's own way to say missing
        refused = _refusal(loaded, guard, [[color, 1.0]], "row")
        assert refused.cells[0]["rule"] == "missing"
    assert _check(loaded, guard, [["red", None]], "row") == []  # size is nullable


def test_infinity_nan_and_1e400_are_refused(tmp_path: Path) -> None:
    loaded, guard = _guarded()
    big = json.loads('{"features": [[1e400, 3, 1, 1]]}')["features"]  # JSON reads 1e400 as infinity
    refused = _refusal(loaded, guard, big)
    assert refused.code == "bad_dtype" and "features[0][0] is beyond its range" in refused.message
    refused = _refusal(loaded, guard, [[1e39, 3, 1, 1]])  # finite in JSON, infinite in float32
    assert refused.code == "bad_dtype"
    with pytest.raises(ValueError, match="NaN is not a JSON number"):
        json.loads('{"features": [[NaN, 3, 1, 1]]}', parse_constant=SERVER._reject_constant)
    loaded, guard = _guarded(TEXT_FEATURES, _text_model(tmp_path), [], "row")
    for size in ("1e400", "inf", "nan", 1e400):
        refused = _refusal(loaded, guard, [["red", size]], "row")
        assert refused.cells[0]["rule"] == "finite", (size, refused.message)


def test_a_nullable_feature_of_an_integer_input_is_refused_when_the_contract_loads(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["counts"], ["as_float"], to=TensorProto.FLOAT)],
        "counts",
        [helper.make_tensor_value_info("counts", TensorProto.INT64, ["batch", 2])],
        [helper.make_tensor_value_info("as_float", TensorProto.FLOAT, ["batch", 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "counts.onnx"))
    loaded = SERVER.Model(str(tmp_path / "counts.onnx"), 1)
    features = [{"name": "a", "type": "int"}, {"name": "b", "type": "int", "nullable": True}]
    with pytest.raises(SERVER.FatalError, match="feature 'b' be missing, but input 'counts' is int64"):
        SERVER.DataGuard(_doc(features, [], "counts"), loaded)


def test_a_refusal_names_every_bad_cell_up_to_twenty_and_counts_the_rest() -> None:
    loaded, guard = _guarded()
    rows = [[0.5, 3, 1, 1] for _ in range(40)]
    for r in range(0, 30):
        rows[r] = [2.0, 3, 1, 1] if r % 2 else [0.5, 3, 1, 9]
    rows[31] = [0.5, 3.5, 1, 1]
    refused = _refusal(loaded, guard, rows)
    assert refused.count == 31 and len(refused.cells) == 20
    assert [c["row"] for c in refused.cells] == list(range(20))
    assert {c["rule"] for c in refused.cells} == {"max", "allowed"}
    message = refused.message
    assert message.startswith("features[0][3] (line) = 9 is not one of the allowed values (1, 2, 3); ")
    assert "features[1][0] (level) = 2 is above the contract's maximum 1; " in message
    assert "; and 11 more (31 values in 31 rows); " in message
    metrics = _metrics(guard)  # counted once per request and (feature, rule)
    assert metrics['airgap_out_of_contract_total{feature="level",rule="max"}'] == 1
    assert metrics['airgap_out_of_contract_total{feature="count",rule="int"}'] == 1


def test_a_warn_mode_feature_is_answered_flagged_and_counted() -> None:
    features = [dict(MIXED[0], mode="warn"), *MIXED[1:]]
    loaded, guard = _guarded(features)
    warnings = _check(loaded, guard, [[5.0, 3, 1, 1], [0.5, 3, 1, 1]])
    assert warnings == [("level", "max")]
    assert SERVER.contract_warning_header(warnings) == ("Airgap-Contract-Warning", "level=max")
    assert SERVER.contract_warning_header([]) is None
    assert _metrics(guard)['airgap_contract_warnings_total{feature="level",rule="max"}'] == 1
    refused = _refusal(loaded, guard, [[5.0, 30, 1, 1]])  # an enforced feature still refuses
    assert [c["feature"] for c in refused.cells] == ["count"]
    refused = _refusal(loaded, guard, [[1e39, 3, 1, 1]])  # warn never lets a non-finite value in
    assert refused.code == "bad_dtype"


def test_unseen_categories_are_counted() -> None:
    loaded, guard = _guarded()  # line allows 1, 2, 3; the reference only ever had 1 and 2
    assert _check(loaded, guard, [[0.5, 3, 1, 3], [0.5, 3, 1, 3], [0.5, 3, 1, 1]]) == []
    assert _metrics(guard)['airgap_unseen_categories_total{feature="line"}'] == 2
    features = [*MIXED[:3], dict(MIXED[3], mode="warn")]
    loaded, guard = _guarded(features)
    assert _check(loaded, guard, [[0.5, 3, 1, 7]]) == [("line", "allowed")]
    assert _metrics(guard)['airgap_unseen_categories_total{feature="line"}'] == 1


def test_a_bound_is_compared_in_the_tensors_precision() -> None:
    """float32(0.1) is above the double 0.1: a caller sending the contract's own maximum is not refused."""
    features = [dict(MIXED[0], max=0.1), *MIXED[1:]]
    loaded, guard = _guarded(features)
    assert _check(loaded, guard, [[0.1, 3, 1, 1]]) == []
    assert _refusal(loaded, guard, [[0.1001, 3, 1, 1]]).cells[0]["rule"] == "max"


def test_every_reference_row_passes_the_servers_check() -> None:
    _, rows = dc.read_csv((EXAMPLE / "model" / "reference.csv").read_text(), "reference.csv")
    header = (EXAMPLE / "model" / "reference.csv").read_text().splitlines()[0].split(",")
    doc = dc.derive(header, rows, "features").to_json()
    loaded = SERVER.Model(str(MODEL), 1)
    guard = SERVER.DataGuard(doc, loaded)
    numbers = [[float(c) for c in row] for row in rows]
    for start in range(0, len(numbers), 64):
        assert guard.check(loaded.prepare({"features": numbers[start : start + 64]}, 64)) == []


def test_counters_from_many_threads_lose_no_increment_and_survive_their_threads() -> None:
    import threading

    loaded, guard = _guarded()
    bad = loaded.prepare({"features": [[0.5, 3, 1, 9]]}, 64)
    warned_doc = [*MIXED[:3], dict(MIXED[3], mode="warn")]
    _, warn_guard = _guarded(warned_doc)

    def hammer() -> None:
        for _ in range(500):
            with pytest.raises(SERVER.ApiError):
                guard.check(bad)
            warn_guard.check(bad)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    middle = _metrics(guard)  # a scrape while they run
    for t in threads:
        t.join()
    assert middle.get('airgap_out_of_contract_total{feature="line",rule="allowed"}', 0) <= 4000
    for _ in range(2):  # the ended threads' counts are folded in once, not twice
        assert _metrics(guard)['airgap_out_of_contract_total{feature="line",rule="allowed"}'] == 4000
        assert _metrics(warn_guard)['airgap_contract_warnings_total{feature="line",rule="allowed"}'] == 4000


def test_the_drift_window_holds_the_newest_thousand_rows() -> None:
    loaded, guard = _guarded()
    for _ in range(20):  # 1280 rows below the reference's median edge...
        _check(loaded, guard, [[-0.5, 3, 1, 1]] * 64)
    for _ in range(20):  # ...then 1280 above it: the window is the second population only
        _check(loaded, guard, [[0.5, 3, 1, 1]] * 64)
    metrics = _metrics(guard)
    assert metrics['airgap_feature_drift_window_rows{feature="level"}'] == 1000
    low = guard.drift()
    assert low[0][0] == "level" and low[0][1] > 1.0
    window = guard._window()
    assert len(window) == 1000 and set(window[:, 0].tolist()) == {1}


def test_one_row_requests_and_batches_are_judged_and_binned_alike() -> None:
    """A few rows take a plain loop, a batch the vectorised masks: the same rows, the same verdicts,
    the same drift window."""
    rng = np.random.default_rng(3)
    rows = [
        [
            float(rng.uniform(-1.2, 1.2)) if i % 7 else None,
            int(rng.integers(-1, 12)),
            int(rng.integers(0, 2)),
            int(rng.choice([1, 2, 3])),
        ]
        for i in range(64)
    ]
    one_by_one, batched = _guarded(), _guarded()
    verdicts = []
    for row in rows:
        try:
            verdicts.append(_check(*one_by_one, [row]))
        except SERVER.ApiError as exc:
            verdicts.append(exc.cells[0]["rule"])
    assert {v for v in verdicts if isinstance(v, str)} == {"min", "max"}  # both paths are exercised
    good = [row for row, verdict in zip(rows, verdicts) if verdict == []]
    assert len(good) > 10
    assert _check(*batched, good) == []

    def binned(guard: object) -> list[tuple[int, ...]]:
        return sorted(map(tuple, guard._window().tolist()))

    assert binned(one_by_one[1]) == binned(batched[1])
    for row, verdict in zip(rows, verdicts):
        if isinstance(verdict, str):
            assert _refusal(*batched, [good[0], row]).cells[0]["rule"] == verdict


def test_a_table_with_a_text_column_gets_a_prediction_baseline(tmp_path: Path) -> None:
    """The reference rows are sent as a client sends them, each cell by its feature's type, so a model
    fed a text column has its answers' distribution recorded too (it had none: every cell a float)."""
    from airgap.services.build.datacontract import _prediction_baseline

    loaded, _ = _guarded(TEXT_FEATURES, _text_model(tmp_path), [], "row")
    rows = [["red", "1.5"], ["blue", "3"], ["red", "0.5"], ["red", "2"]]
    (color,) = _prediction_baseline(SERVER, loaded, "row", rows, 64, TEXT_FEATURES)
    assert (color["output"], color["values"], color["shares"]) == ("color", ["red", "blue"], [0.75, 0.25])


def test_the_far_side_acceptance_probes_an_enforced_feature_not_a_warn_mode_one() -> None:
    from airgap.services.deploy.accept import _outside_row

    features = [dict(MIXED[0], mode="warn"), *MIXED[1:]]
    probe = _outside_row(features)
    assert probe is not None and probe[1] == "count"
    loaded, guard = _guarded(features)
    assert [c["feature"] for c in _refusal(loaded, guard, [probe[0]]).cells] == ["count"]


def test_the_running_server_answers_a_text_column_model_4xx_never_500(tmp_path: Path) -> None:
    """Through HTTP: a size of 999999 or "abc" beside a text column is a 400 naming the cell, a null
    size is answered (nullable), and no request reaches the model's failing cast (no 500)."""
    model = _text_model(tmp_path)
    golden = tmp_path / "golden.json"
    golden.write_text(json.dumps({"cases": [{"name": "one", "inputs": {"row": [["red", 1.5]]}}]}))
    contract = tmp_path / "data-contract.json"
    contract.write_text(json.dumps(_doc(TEXT_FEATURES, [], "row")))
    with serving(tmp_path, golden=golden, model=model, contract=contract) as running:
        wait_until_ready(running)
        status, answer = running.predict({"inputs": {"row": [["red", 2.5], ["blue", "7"]]}})
        assert (status, answer["outputs"]["size"]) == (200, [2.5, 7.0])
        for size, rule in ((999999, "above the contract's maximum 10"), ("abc", "is not a number")):
            status, answer = running.predict({"inputs": {"row": [["red", 2.5], ["blue", size]]}})
            assert (status, answer["error"]["code"]) == (400, "out_of_contract"), answer
            assert (
                answer["error"]["message"].startswith("row[1][1] (size) = ")
                and rule in answer["error"]["message"]
            )
        status, answer = running.predict(b'{"inputs": {"row": [["red", 1e400]]}}')  # JSON reads: inf
        assert (status, answer["error"]["code"]) == (400, "out_of_contract")
        metrics = running.metrics()
        assert running.stop() == 0
    assert metrics['airgap_out_of_contract_total{feature="size",rule="type"}'] == 1
    assert metrics['airgap_out_of_contract_total{feature="size",rule="finite"}'] == 1
    assert not any(k.startswith("airgap_requests_total") and 'code="500"' in k for k in metrics)


def test_the_counters_of_ended_connection_threads_are_folded_even_without_a_scrape() -> None:
    """The server runs a thread per connection; their counters must not pile up between scrapes, or
    forever where nobody scrapes."""
    import threading

    loaded, guard = _guarded()
    bad = loaded.prepare({"features": [[0.5, 3, 1, 9]]}, 64)

    def one_connection() -> None:
        with pytest.raises(SERVER.ApiError):
            guard.check(bad)

    for _ in range(300):
        thread = threading.Thread(target=one_connection)
        thread.start()
        thread.join()
    assert len(guard._tallies) <= SERVER.FOLD_AFTER + 1
    assert _metrics(guard)['airgap_out_of_contract_total{feature="line",rule="allowed"}'] == 300


@pytest.mark.parametrize(
    "column",
    [
        [1.0 + i * 1e-13 for i in range(50)],  # a span far below twelve significant digits
        [-1e-300, 0.0, 1e-300],
        [-7.5e9, -7.5e9 + 1.0],
        [42.0] * 5,  # no span at all
        [0.1 * i for i in range(11)],
    ],
)
def test_derived_bounds_admit_every_reference_value(column: list[float]) -> None:
    header, rows = dc.read_csv("x\n" + "".join(f"{v!r}\n" for v in column), "ref.csv")
    (feature,) = dc.derive(header, rows, "features").features
    assert feature.minimum is not None and feature.maximum is not None
    assert feature.minimum <= min(column) and feature.maximum >= max(column), feature
