"""The ``promote`` thresholds in ``airgap.yaml`` and how a candidate is judged against them (pure)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from airgap.core.contractspec import PromoteSpec
from airgap.core.project import parse_project
from airgap.core.promotion import (
    MIN_LATENCY_SAMPLES,
    Labelled,
    bootstrap_drop,
    disagreement,
    judge,
    mcnemar,
    metric_drop,
    spec_from_json,
)
from airgap.errors import InvalidInputError
from tests.conftest import ROOT, assert_one_line_error, run_airgap

EXAMPLE = (ROOT / "examples" / "tabular" / "airgap.yaml").read_text()


def test_promote_thresholds_are_read_with_defaults_for_what_is_left_out() -> None:
    project = parse_project(EXAMPLE + "\npromote:\n  min_agreement: 0.99\n", "airgap.yaml")
    assert project.promote == PromoteSpec(min_agreement=0.99, max_metric_drop=0.02, max_p95_ratio=1.5)
    assert parse_project(EXAMPLE, "airgap.yaml").promote is None
    assert spec_from_json(None) == PromoteSpec()
    assert spec_from_json(PromoteSpec(0.9, 0.1, 3).to_json()) == PromoteSpec(0.9, 0.1, 3)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            "promote:\n  min_agreement: 1.5\n",
            r"airgap\.yaml:\d+: promote\.min_agreement: must be a number from 0 to 1",
        ),
        (
            "promote:\n  max_p95_ratio: 0.5\n",
            r"airgap\.yaml:\d+: promote\.max_p95_ratio: must be a number from 1",
        ),
        ("promote:\n  max_metric_drop: yes\n", r"promote\.max_metric_drop: must be a number"),
        ("promote:\n  agreement: 0.9\n", r"promote"),
    ],
)
def test_a_bad_promote_section_names_the_field_and_its_line(section: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_project(EXAMPLE + "\n" + section, "airgap.yaml")


def test_answers_disagree_on_the_predicted_class_not_on_scores_within_tolerance() -> None:
    a = {"label": [1], "probabilities": [[0.2, 0.8]]}
    assert (
        disagreement("row 1", a, {"label": [1], "probabilities": [[0.3, 0.7]]}, "label", 1e-4, 1e-5) is None
    )
    said = disagreement("row 1", a, {"label": [0], "probabilities": [[0.6, 0.4]]}, "label", 1e-4, 1e-5)
    assert said is not None and "row 1" in said and "label" in said
    # With no labelled output named, every output must agree within the tolerance.
    assert disagreement("golden x", a, {"label": [1], "probabilities": [[0.3, 0.7]]}, None, 1e-4, 1e-5)


def test_a_candidate_is_judged_on_agreement_metric_drop_and_p95_ratio() -> None:
    spec = PromoteSpec(min_agreement=0.95, max_metric_drop=0.02, max_p95_ratio=1.5)
    fast, slow = [10.0] * MIN_LATENCY_SAMPLES, [30.0] * MIN_LATENCY_SAMPLES
    checks = judge(spec, 99, 100, {"accuracy": 0.9, "mae": 1.0}, {"accuracy": 0.89, "mae": 1.5}, fast, slow)
    by = {c.what.split(" ")[0]: c for c in checks}
    assert by["agreement"].ok and by["agreement"].measured.startswith("99.00%")
    assert by["accuracy"].ok  # dropped 0.01, within 0.02
    assert not by["mae"].ok  # an error metric got worse by 0.5
    assert not by["p95"].ok and by["p95"].measured.startswith("3.00×")
    assert not judge(spec, 90, 100, {}, {}, fast, fast)[0].ok
    assert metric_drop("rmse", 1.0, 0.5) == -0.5 and metric_drop("f1", 0.9, 0.8) == pytest.approx(0.1)


def test_a_tripled_p95_misses_however_small_and_too_few_samples_never_pass() -> None:
    spec = PromoteSpec(max_p95_ratio=1.5)
    rng = random.Random(3)
    current = [rng.uniform(0.2, 0.5) for _ in range(MIN_LATENCY_SAMPLES)]
    tripled = [3 * x for x in current]
    [p95] = [c for c in judge(spec, 1, 1, {}, {}, current, tripled) if c.what.startswith("p95")]
    assert not p95.ok and "95 % CI" in p95.measured and f"{MIN_LATENCY_SAMPLES} keep-alive" in p95.what
    [same] = [c for c in judge(spec, 1, 1, {}, {}, current, list(current)) if c.what.startswith("p95")]
    assert same.ok
    [few] = [c for c in judge(spec, 1, 1, {}, {}, current[:50], current[:50]) if c.what.startswith("p95")]
    assert not few.ok and "too few samples" in few.measured


def test_an_error_metric_drop_is_relative_to_the_current_value() -> None:
    # An MAE in dollars: 1000 -> 1010 is 1 % worse (an absolute 0.02 would fail any retrain).
    assert metric_drop("mae", 1000.0, 1010.0) == pytest.approx(0.01)
    spec = PromoteSpec(max_metric_drop=0.02)
    [mae] = [c for c in judge(spec, 1, 1, {"mae": 1000.0}, {"mae": 1010.0}, [], []) if "mae" in c.what]
    assert mae.ok and mae.measured == "+1.00%" and "relative" in mae.threshold
    [worse] = [c for c in judge(spec, 1, 1, {"mae": 1000.0}, {"mae": 1030.0}, [], []) if "mae" in c.what]
    assert not worse.ok


def test_a_retrained_regression_agrees_within_the_promote_tolerance_not_the_golden_one() -> None:
    a, b = {"value": [[100.0]]}, {"value": [[101.0]]}  # 1 % apart
    assert disagreement("row 1", a, b, "value", 0.05, 0.0, by_class=False) is None
    assert disagreement("row 1", a, b, "value", 1e-4, 1e-5, by_class=False) is not None
    assert disagreement("row 1", a, {"value": [[110.0]]}, "value", 0.05, 0.0, by_class=False) is not None


def test_mcnemar_fails_a_significantly_worse_classifier_and_not_a_few_flips() -> None:
    labels = [i % 3 for i in range(200)]
    worse = [(y + 1) % 3 if i < 20 else y for i, y in enumerate(labels)]  # wrong on 20 more rows
    b, c, p = mcnemar(labels, labels, worse)
    assert (b, c) == (20, 0) and p < 1e-5
    flips = [(y + 1) % 3 if i in (3, 7, 11) else y for i, y in enumerate(labels)]
    flips[50] = labels[50]
    current = list(labels)
    current[50] = (labels[50] + 1) % 3  # the current one is wrong once where the candidate is right
    b, c, p = mcnemar(labels, current, flips)
    assert (b, c) == (3, 1) and p == pytest.approx(0.625)

    def rows(candidate: list[int]) -> Labelled:
        return Labelled(labels, labels, candidate, [], [], ("accuracy",))

    spec = PromoteSpec(max_metric_drop=0.2)  # a lenient drop: significance still catches it
    checks = judge(spec, 180, 200, {"accuracy": 1.0}, {"accuracy": 0.9}, [], [], rows(worse))
    by = {c.what.split(" ")[0]: c for c in checks}
    assert by["accuracy"].ok and "95 % CI" in by["accuracy"].measured
    assert not by["McNemar"].ok and by["McNemar"].measured.startswith("p = ")
    assert judge(spec, 197, 200, {"accuracy": 1.0}, {"accuracy": 0.985}, [], [], rows(flips))[-1].ok


def test_the_bootstrap_interval_of_a_metric_drop_contains_the_drop() -> None:
    rng = random.Random(5)
    labels = [rng.gauss(0, 1) for _ in range(150)]
    current = [y + rng.gauss(0, 0.3) for y in labels]
    candidate = [y + rng.gauss(0, 0.45) for y in labels]
    rows = Labelled(labels, current, candidate, [], [], ("mae",))
    low, high = bootstrap_drop("mae", rows)
    from airgap.core import acceptance as metrics

    drop = metric_drop("mae", metrics.mae(labels, current), metrics.mae(labels, candidate))
    assert low < drop < high and low > 0  # clearly worse: the whole interval is above no change


@pytest.mark.parametrize("target", ["registry", "podman-kube"])
def test_a_target_that_cannot_promote_in_place_refuses_a_candidate_before_reading_the_bundle(
    target: str, tmp_path: Path
) -> None:
    proc = run_airgap(
        "install",
        str(tmp_path / "missing.airgap.tar"),
        "--to",
        target,
        "--candidate",
        "--state-dir",
        str(tmp_path),
    )
    line = assert_one_line_error(proc, 2)
    assert f"--to {target} cannot run a candidate" in line


def test_a_candidate_is_not_accepted_at_install_time(tmp_path: Path) -> None:
    proc = run_airgap(
        "install",
        str(tmp_path / "x.airgap.tar"),
        "--to",
        "venv",
        "--candidate",
        "--accept",
        "--state-dir",
        str(tmp_path),
    )
    assert "airgap compare" in assert_one_line_error(proc, 2)


def test_compare_stops_when_the_port_answers_as_another_model_or_version() -> None:
    """A stale server on the candidate's port (here: one answering as 0.9.0) must not be judged
    as the candidate: compare would pass or fail on the wrong model."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from airgap.errors import EnvironmentFailure
    from airgap.services.deploy.compare import _ask, _new_connection
    from airgap.services.deploy.receipts import Receipt

    class Stale(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"model": "clf", "model_version": "0.9.0", "outputs": {"label": [1]}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Stale)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:

        def receipt(version: str) -> Receipt:
            return Receipt("clf", version, "docker", "0" * 64, "k", "b", "t", "/nowhere", port=port)

        send = _new_connection(port)
        assert _ask(send, port, "current", receipt("0.9.0"), {"x": [[1.0]]}) == {"label": [1]}
        with pytest.raises(
            EnvironmentFailure, match=r"answers as clf 0\.9\.0, not as the candidate clf 1\.0\.1"
        ):
            _ask(send, port, "candidate", receipt("1.0.1"), {"x": [[1.0]]})
    finally:
        server.shutdown()
        server.server_close()
