"""`airgap accept` and `install --accept`: the installed model proves its deployment contract where it
runs — data contract, labelled acceptance set, latency under load — and a missed promise is exit 1
with a table of promised against measured."""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airgap.adapters.loadgen import run_load
from airgap.core import acceptance as metrics
from airgap.core.project import parse_project
from tests.conftest import PASSPHRASE, message_lines, run_airgap
from tests.test_server import ROWS, serving, wait_until_ready

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "tabular"
NAME = "tabular-classifier"


# ------------------------------------------------------------------------------ metrics
def test_metrics_agree_with_scikit_learn() -> None:
    from sklearn import metrics as sk

    rng = random.Random(7)
    labels = [rng.choice([0, 1, 2]) for _ in range(300)]
    predicted = [y if rng.random() < 0.8 else rng.choice([0, 1, 2]) for y in labels]
    assert metrics.accuracy(labels, predicted) == pytest.approx(sk.accuracy_score(labels, predicted))
    assert metrics.f1_macro(labels, predicted) == pytest.approx(
        sk.f1_score(labels, predicted, average="macro")
    )
    binary = [y % 2 for y in labels]
    scores = [round(rng.random() * 0.6 + 0.4 * b, 2) for b in binary]  # rounded: ties happen
    assert metrics.roc_auc(binary, scores) == pytest.approx(sk.roc_auc_score(binary, scores))
    truth = [rng.gauss(0, 1) for _ in range(100)]
    guess = [t + rng.gauss(0, 0.3) for t in truth]
    assert metrics.mae(truth, guess) == pytest.approx(sk.mean_absolute_error(truth, guess))
    assert metrics.rmse(truth, guess) == pytest.approx(sk.mean_squared_error(truth, guess) ** 0.5)


def test_percentiles_are_measured_values_by_nearest_rank() -> None:
    lat = metrics.latency([float(i) for i in range(1, 101)])
    assert (lat.p50_ms, lat.p95_ms, lat.p99_ms, lat.max_ms) == (50.0, 95.0, 99.0, 100.0)
    assert metrics.latency([7.0]).p99_ms == 7.0


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("slo:\n  rps: 10\n", r"airgap\.yaml:\d+: slo: promises nothing"),
        ("slo:\n  p95_ms: 90\n  p99_ms: 50\n", r"slo\.p95_ms: 90 ms is above p99_ms 50 ms"),
        ("slo:\n  p99_ms: 50\n  concurrency: 0\n", r"slo\.concurrency: must be an integer from 1 to 256"),
        ("acceptance:\n  data: a.csv\n  thresholds: {accuracy: 1.5}\n", r"accuracy is a share from 0 to 1"),
        ("acceptance:\n  data: a.csv\n  thresholds: {roc_auc: 0.9}\n", r"roc_auc needs acceptance\.scores"),
        ("acceptance:\n  data: a.csv\n  thresholds: {precision: 0.9}\n", r"precision: is not a metric"),
        (
            "acceptance:\n  data: a.json\n  thresholds: {f1: 0.9}\n",
            r"acceptance\.data: 'a\.json' must be a \.csv",
        ),
    ],
)
def test_a_bad_slo_or_acceptance_section_names_the_field_and_its_line(section: str, message: str) -> None:
    text = (EXAMPLE / "airgap.yaml").read_text().split("\nslo:", 1)[0] + "\n" + section
    with pytest.raises(Exception, match=message):
        parse_project(text, "airgap.yaml")


def _project_with(tmp_path: Path, edit: Any) -> Path:
    dest = tmp_path / "p"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("build"))
    edit(dest)
    return dest


def test_a_label_flipped_acceptance_set_is_refused_at_bundle_time_with_exit_1(tmp_path: Path) -> None:
    def flip(dest: Path) -> None:
        lines = (dest / "model" / "acceptance.csv").read_text().splitlines()
        flipped = [lines[0]] + [
            ",".join([*ln.split(",")[:-1], str((int(ln.split(",")[-1]) + 1) % 3)]) for ln in lines[1:]
        ]
        (dest / "model" / "acceptance.csv").write_text("\n".join(flipped) + "\n")

    proc = run_airgap("bundle", str(_project_with(tmp_path, flip)), "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 1, proc.stderr
    lines = message_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert "misses its acceptance thresholds on this workstation: accuracy 0 (promised ≥ 0.99)" in lines[0]
    assert not (tmp_path / "p" / "build").exists() or not list((tmp_path / "p" / "build").iterdir())


def test_an_acceptance_row_outside_the_data_contract_is_refused_naming_its_line(tmp_path: Path) -> None:
    def stretch(dest: Path) -> None:
        path = dest / "model" / "acceptance.csv"
        lines = path.read_text().splitlines()
        lines[5] = "0.1,0.2,99,0.3,1"
        path.write_text("\n".join(lines) + "\n")

    proc = run_airgap("bundle", str(_project_with(tmp_path, stretch)), "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 4, proc.stderr
    assert "model/acceptance.csv:6: vibration = 99 is above the contract's maximum" in proc.stderr


# ------------------------------------------------------------------------------ the load generator
def test_the_load_generator_keeps_the_rate_and_counts_every_request(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        wait_until_ready(server)
        body = json.dumps({"inputs": {"features": ROWS}}).encode()
        result = run_load(server.port, [body], rps=100, concurrency=4, duration_s=1.5)
        assert server.stop() == 0
    assert (result.planned, result.sent, result.errors) == (150, 150, 0)
    assert result.statuses == {"200": 150}
    assert 1.4 <= result.elapsed_s < 4.0  # open loop: the schedule, not the server, sets the pace
    assert len(result.latencies_ms) == 150 and min(result.latencies_ms) > 0


def test_a_load_run_against_nothing_counts_every_request_as_an_error_at_its_timeout() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    result = run_load(port, [b"{}"], rps=50, concurrency=2, duration_s=0.2, timeout=2.0)
    assert (result.sent, result.errors, result.statuses) == (10, 10, {"error": 10})
    # Refused at once, but a request that got no answer is no faster than one that timed out.
    assert len(result.latencies_ms) == 10 and min(result.latencies_ms) >= 2000


FAKE_SERVER = r"""
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
delay, status = float(sys.argv[1]), int(sys.argv[2])
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(delay)
        body = json.dumps({"model": "m", "model_version": "1", "outputs": {"label": [1]}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
server = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@contextlib.contextmanager
def fake_model_server(delay_s: float = 0.0, status: int = 200) -> Iterator[int]:
    """A model server's /v1/predict in a process of its own (so a starved test process does not
    starve it): answers ``status`` after ``delay_s``; yields its port."""
    proc = subprocess.Popen(
        [sys.executable, "-c", FAKE_SERVER, str(delay_s), str(status)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def starved_interpreter(threads: int = 4) -> Iterator[None]:
    """Threads that spin in this interpreter: every other thread here (the load generator's) gets
    the CPU late, as on a host whose cores are busy with something else."""
    stop = threading.Event()

    def spin() -> None:
        n = 0
        while not stop.is_set():
            n += 1

    spinners = [threading.Thread(target=spin, daemon=True) for _ in range(threads)]
    for t in spinners:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in spinners:
            t.join()


SLO = {"p95_ms": 20, "p99_ms": 30, "rps": 200, "concurrency": 4, "duration_s": 1.5, "max_error_rate": 0.0}
GOLDEN = {"cases": [{"name": "one", "inputs": {"features": [[0.1, 0.2, 0.3, 0.4]]}}]}


def _slo(port: int, slo: dict[str, Any] = SLO) -> tuple[list[Any], dict[str, Any]]:
    from airgap.services.deploy.accept import _slo_promises
    from airgap.services.observer import NullObserver

    return _slo_promises(port, slo, None, GOLDEN, NullObserver())


def test_a_starved_load_generator_is_reported_inconclusive_never_a_miss() -> None:
    from airgap.services.deploy.accept import outcome_of

    with fake_model_server() as port, starved_interpreter():
        promises, load = _slo(port)
    generator = load["generator"]
    assert generator["kept_up"] is False and "load generator" in generator["why_not"]
    missed = [p for p in promises if not p.ok]
    assert missed, "a starved generator measures itself: some figure must look bad"
    assert all(p.inconclusive and not p.missed for p in missed), [p.to_json() for p in missed]
    assert promises[-1].what == "the load generator kept up" and promises[-1].inconclusive
    assert outcome_of(promises) == "inconclusive"


def test_a_slow_server_with_a_generator_that_keeps_up_is_a_miss_not_inconclusive() -> None:
    from airgap.services.deploy.accept import outcome_of

    slow = {**SLO, "rps": 40, "concurrency": 2, "duration_s": 1.5}  # 2 connections x 100 ms: 20 req/s at most
    with fake_model_server(delay_s=0.1) as port:
        promises, load = _slo(port, slow)
    assert load["generator"]["kept_up"] is True, load["generator"]
    p95 = next(p for p in promises if p.what.startswith("p95"))
    assert p95.missed and not p95.inconclusive
    assert outcome_of(promises) == "not accepted"
    assert load["generator"]["waiting_for_server_s"] > load["generator"]["busy_in_generator_s"]


def test_errors_count_in_the_latency_figures_and_the_error_rate() -> None:
    with fake_model_server(delay_s=0.03, status=500) as port:
        promises, load = _slo(port, {**SLO, "rps": 50, "duration_s": 1.0})
    assert load["errors"] == load["sent"] == 50 and load["statuses"] == {"500": 50}
    assert load["latency_ms"]["p50"] >= 30  # the 500s' own latency, not an empty list's
    error_rate = next(p for p in promises if p.what == "error rate")
    assert error_rate.missed and error_rate.measured.startswith("100.00%")


def test_an_inconclusive_accept_exits_6_with_one_line_and_a_missed_one_exits_1(tmp_path: Path) -> None:
    from airgap.cli.accept import fail_if_missed
    from airgap.errors import AnswerIsNo, Inconclusive
    from airgap.services.deploy.accept import AcceptReport, Promise

    behind = Promise("slo", "the load generator kept up", "send lag p99 ≤ 10 ms", "starved", False, True)
    slow = Promise("slo", "p95 latency", "≤ 20 ms", "80.0 ms", False, True)
    kept = Promise("data", "serves the signed contract", "=", "identical", True)

    def report(*promises: Promise) -> AcceptReport:
        where = (tmp_path / "r.json", tmp_path / "r.md")
        return AcceptReport("m", "1", "docker", "0" * 64, promises, {}, *where)

    with pytest.raises(Inconclusive) as inconclusive:
        fail_if_missed(report(kept, slow, behind))
    assert inconclusive.value.exit_code == 6 and "could not be judged" in inconclusive.value.one_line()
    assert "\n" not in inconclusive.value.one_line()
    missed = Promise("data", "refuses x outside its range", "HTTP 400", "HTTP 200", False)
    with pytest.raises(AnswerIsNo):  # a real miss wins over an inconclusive figure
        fail_if_missed(report(missed, slow, behind))
    fail_if_missed(report(kept))


# ------------------------------------------------------------------------------ on the engines
@pytest.fixture
def far_side(tmp_path: Path, built: dict[str, Any], signing_key: Path):  # type: ignore[no-untyped-def]
    state = tmp_path / "state"
    trust = run_airgap("keys", "trust", str(signing_key.with_suffix(".pub")), "--state-dir", str(state))
    assert trust.returncode == 0, trust.stderr
    yield state
    for row in json.loads(run_airgap("--json", "status", "--state-dir", str(state)).stdout or "[]"):
        run_airgap("uninstall", row["name"], "--to", row["target"], "--state-dir", str(state))


@pytest.mark.parametrize(("target", "port"), [("docker", 18310), ("podman", 18311)])
def test_install_accept_proves_the_contract_and_writes_the_report(
    target: str, port: int, far_side: Path, built: dict[str, Any]
) -> None:
    bundle = built["bundle"][0]
    proc = run_airgap(
        "install",
        bundle,
        "--to",
        target,
        "--port",
        str(port),
        "--accept",
        "--state-dir",
        str(far_side),
        env={"COLUMNS": "200"},  # a log is wide: each promise on one line of the table
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "MISSED" not in proc.stdout
    for promise in (
        "serves the signed contract",
        "accuracy on 200 labelled rows",
        "p95 latency at 40 req/s",
        "error rate",
    ):
        assert promise in proc.stdout, proc.stdout
    reports = list((far_side / "acceptance").glob(f"{NAME}-1.0.0-{target}-*.md"))
    assert len(reports) == 1 and "**ACCEPTED**" in reports[0].read_text()
    again = run_airgap("--json", "accept", NAME, "--to", target, "--state-dir", str(far_side), timeout=300)
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert doc["accepted"] is True
    assert doc["figures"]["acceptance"]["metrics"] == {"accuracy": 1.0, "f1": 1.0}
    assert doc["figures"]["load"]["sent"] == 200 and doc["figures"]["load"]["errors"] == 0
    assert '"action": "accept --to ' + target + '"' in (far_side / "audit.log").read_text()
    # each run left an attestation of what it measured, for `airgap evidence export` to carry back
    assert len(list((far_side / "attestations").glob(f"*-accept-{NAME}-*"))) == 2
    assert doc["attestations"] and Path(doc["attestations"][0]).is_file()


def _flipped_bundle(built: dict[str, Any], signing_key: Path, out: Path) -> Path:
    """The example with its signed acceptance labels rotated: the model is fine, the promise is not."""
    staging = out / "staging"
    shutil.copytree(built["staging"], staging, ignore=shutil.ignore_patterns("model-image.tar"))
    path = staging / "model" / "acceptance.json"
    doc = json.loads(path.read_text())
    doc["labels"] = [(int(y) + 1) % 3 for y in doc["labels"]]
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    packed = run_airgap(
        "pack",
        str(staging),
        "--key",
        str(signing_key.with_suffix(".key")),
        "-o",
        str(out / "media"),
        env={"AIRGAP_KEY_PASSPHRASE": PASSPHRASE},
    )
    assert packed.returncode == 0, packed.stderr
    return next((out / "media").glob("*.airgap.tar"))


def test_a_wrong_acceptance_set_and_a_cpu_starved_server_each_miss_their_promise_with_exit_1(
    far_side: Path, built: dict[str, Any], signing_key: Path, tmp_path: Path
) -> None:
    bundle = _flipped_bundle(built, signing_key, tmp_path)
    proc = run_airgap(
        "install", str(bundle), "--to", "docker", "--port", "18312", "--state-dir", str(far_side), timeout=600
    )
    assert proc.returncode == 0, proc.stderr  # the golden outputs still match: installed

    missed = run_airgap("accept", NAME, "--to", "docker", "--state-dir", str(far_side), timeout=300)
    assert missed.returncode == 1, missed.stdout + missed.stderr
    assert "MISSED" in missed.stdout
    line = message_lines(missed.stderr)[-1]
    assert (
        "missed its contract: acceptance: accuracy on 200 labelled rows: promised ≥ 0.99, measured 0.0000"
        in line
    )

    container = json.loads(run_airgap("--json", "status", "--state-dir", str(far_side)).stdout)[0][
        "container"
    ]
    subprocess.run(["docker", "update", "--cpus", "0.01", container], check=True, capture_output=True)
    starved = run_airgap(
        "--json", "accept", NAME, "--to", "docker", "--state-dir", str(far_side), timeout=300
    )
    assert starved.returncode == 1, starved.stderr
    doc = json.loads(starved.stdout)
    assert doc["exit_code"] == 1 and doc["ok"] is False
    slo = {p["what"].split(" ")[0]: p for p in doc["promises"] if p["section"] == "slo"}
    assert slo["p95"]["ok"] is False and slo["p99"]["ok"] is False, slo
    assert float(slo["p99"]["measured"].split()[0]) > 100


def _run(latency_ms: float, own_lag_ms: float, n: int = 100) -> Any:
    from airgap.adapters.loadgen import LoadResult

    return LoadResult(
        planned=n,
        latencies_ms=[latency_ms] * n,
        statuses={"200": n},
        elapsed_s=n / SLO["rps"],
        send_lag_ms=[own_lag_ms] * n,
        own_lag_ms=[own_lag_ms] * n,
        queue_ms=[0.0] * n,
        client_s=0.001 * n,
        server_s=(latency_ms - own_lag_ms) / 1000 * n,
        wake_lag_ms=[0.1] * n,
    )


def test_a_latency_miss_made_only_by_the_generators_own_lateness_is_inconclusive() -> None:
    from airgap.services.deploy.accept import judge_load, outcome_of

    # 60 ms measured against a 30 ms p99, but the generator sent each request 40 ms late with a
    # connection free: the server answered in 20.
    promises, load = judge_load(SLO, _run(60.0, 40.0))
    p99 = next(p for p in promises if p.what.startswith("p99"))
    assert p99.inconclusive and not p99.missed
    assert "late by itself" in promises[-1].measured and outcome_of(promises) == "inconclusive"
    assert load["generator"]["latency_without_own_lag_ms"]["p99"] == 20.0
    # The same 60 ms with the generator on time is the server's: a miss.
    promises, _ = judge_load(SLO, _run(60.0, 0.5))
    assert next(p for p in promises if p.what.startswith("p99")).missed
    assert outcome_of(promises) == "not accepted"
    # And 60 ms of which the generator's lateness explains only part: still the server's miss.
    promises, _ = judge_load(SLO, _run(60.0, 20.0))
    assert outcome_of(promises) == "not accepted"
