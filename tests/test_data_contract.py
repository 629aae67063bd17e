"""The data contract: derived from reference data, refused when it contradicts the model or the golden
inputs, enforced by the running server (400 naming feature, value and rule) and watched for drift."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from airgap.core import datacontract as dc
from airgap.core.project import parse_project
from airgap.errors import InvalidInputError
from airgap.services.build.datacontract import prepare_data_contract
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
