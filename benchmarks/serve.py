"""The model server against a reference server of the same model, measured with wrk in one run:

    python benchmarks/serve.py [--seconds 8] [--rounds 2] [--json]

(a) airgap's model server (bundle_templates/server/airgap_server.py) as the image runs it, with the
    example's data contract checked on every row, drift and Prometheus metrics kept, and every
    request logged;
(b) the reference: the same model served by a small uvicorn + starlette app, run the way a Python
    team runs it in production, ``uvicorn app:app`` with uvicorn's standard extras (httptools for
    HTTP parsing, uvloop for the event loop), one worker, the same onnxruntime session options.

Both servers run side by side for the whole run and take turns: for every round, for one-row and
64-row requests, for 8 and 64 keep-alive connections, ``wrk -t2 -cN -dSs --latency`` loads one and
then the other (the order alternating by round, so that neither always runs second on a warmer or
busier machine). Reported per cell: requests/s and p99 latency as wrk measures them (median over the
rounds), non-2xx answers, and the ratios airgap/reference. Goals: throughput >= 1.0x, p99 <= 1.2x.

wrk is a C load generator: it saturates after both servers do, so the figures are the servers'.
It needs the wrk binary (scripts/setup-env.sh installs it) and the dev environment (uvicorn[standard],
starlette).
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
EXAMPLE = ROOT / "examples" / "tabular" / "model"
MODEL = EXAMPLE / "classifier.onnx"
GOLDEN = EXAMPLE / "golden.json"
REFERENCE_CSV = EXAMPLE / "reference.csv"
SERVER = ROOT / "bundle_templates" / "server" / "airgap_server.py"

REFERENCE_APP = """
import os
os.environ["ORT_DISABLE_TELEMETRY"] = "1"
import numpy as np, onnxruntime as ort
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.concurrency import run_in_threadpool

options = ort.SessionOptions()
options.intra_op_num_threads = 2
options.inter_op_num_threads = 1
session = ort.InferenceSession(os.environ["MODEL"], sess_options=options, providers=["CPUExecutionProvider"])
names = [o.name for o in session.get_outputs()]

async def predict(request):
    body = await request.json()
    features = np.asarray(body["inputs"]["features"], dtype=np.float32)
    out = await run_in_threadpool(session.run, None, {"features": features})
    return JSONResponse({"outputs": {n: v.tolist() for n, v in zip(names, out)}})

app = Starlette(routes=[Route("/v1/predict", predict, methods=["POST"])])
"""

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("AIRGAP_BENCH_BODY"), "rb")
wrk.body = f:read("*a")
f:close()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reference_rows(count: int) -> list[list[float]]:
    """Rows from the example's reference data: inside the data contract, as real traffic would be."""
    with REFERENCE_CSV.open() as f:
        reader = csv.reader(f)
        next(reader)
        rows = [[float(x) for x in row] for row in reader]
    return rows[:count]


def example_contract(directory: Path) -> Path:
    """The example's data contract, derived from its reference data as `airgap bundle` derives it."""
    from airgap.core.datacontract import derive, read_csv

    header, rows = read_csv(REFERENCE_CSV.read_text(), "reference.csv")
    path = directory / "data-contract.json"
    path.write_text(json.dumps(derive(header, rows, "features").to_json()))
    return path


def wait_answering(port: int, body: bytes, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("POST", "/v1/predict", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"nothing answered 200 on port {port}")


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def parse_wrk(text: str) -> dict[str, float]:
    """Requests/s, p50 and p99 (ms) and the non-2xx count from wrk --latency's report."""

    def latency(pct: str) -> float:
        match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        if match is None:
            raise SystemExit(f"wrk printed no {pct}% latency:\n{text}")
        return float(match.group(1)) * UNITS[match.group(2)]

    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if rps is None:
        raise SystemExit(f"wrk printed no Requests/sec:\n{text}")
    return {
        "rps": float(rps.group(1)),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "non_2xx": float(non2xx.group(1)) if non2xx else 0.0,
        "socket_errors": float(sum(int(g) for g in errors.groups())) if errors else 0.0,
    }


def run_wrk(port: int, body_file: Path, script: Path, connections: int, seconds: float) -> dict[str, float]:
    argv = [
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}/v1/predict",
    ]
    env = {**os.environ, "AIRGAP_BENCH_BODY": str(body_file)}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=seconds + 60, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"wrk failed: {proc.stderr.strip()}")
    return parse_wrk(proc.stdout)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far: the cost per request, which a busy machine's
    neighbours disturb far less than they disturb requests per second."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(argv: list[str], env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=log)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def versions() -> dict[str, str]:
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return {
        "python": platform.python_version(),
        "uvicorn": version("uvicorn"),
        "starlette": version("starlette"),
        "httptools": version("httptools"),
        "uvloop": version("uvloop"),
        "onnxruntime": version("onnxruntime"),
        "wrk": (wrk.stdout or wrk.stderr).split()[1] if (wrk.stdout or wrk.stderr) else "?",
        "cpus": str(os.cpu_count()),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="per wrk run (default 8)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds per cell (default 2)")
    ap.add_argument("--connections", default="8,64")
    ap.add_argument("--rows", default="1,64")
    ap.add_argument(
        "--without-contract",
        action="store_true",
        help="serve without the data contract: the HTTP layer alone (a diagnostic; the goals are with it)",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed; run scripts/setup-env.sh (or apt-get install wrk)")
    connections = [int(c) for c in args.connections.split(",")]
    row_counts = [int(r) for r in args.rows.split(",")]

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        script = tmp / "post.lua"
        script.write_text(WRK_SCRIPT)
        bodies = {}
        for rows in row_counts:
            bodies[rows] = tmp / f"rows-{rows}.json"
            bodies[rows].write_bytes(json.dumps({"inputs": {"features": reference_rows(rows)}}).encode())
        (tmp / "refapp.py").write_text(REFERENCE_APP)
        ours_port, ref_port = free_port(), free_port()
        contract = tmp / "none.json" if args.without_contract else example_contract(tmp)
        with (tmp / "airgap.log").open("wb") as ours_log, (tmp / "reference.log").open("wb") as ref_log:
            ours = start(
                [sys.executable, str(SERVER), "serve"],
                {
                    "AIRGAP_MODEL_PATH": str(MODEL),
                    "AIRGAP_GOLDEN_PATH": str(GOLDEN),
                    "AIRGAP_DATA_CONTRACT_PATH": str(contract),
                    "AIRGAP_HOST": "127.0.0.1",
                    "AIRGAP_PORT": str(ours_port),
                    "AIRGAP_THREADS": "2",
                    "AIRGAP_MAX_BATCH": "64",
                },
                ours_log,
            )
            reference = start(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "refapp:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(ref_port),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                    "--loop",
                    "uvloop",
                    "--http",
                    "httptools",
                    "--app-dir",
                    tmp_name,
                ],
                {"MODEL": str(MODEL)},
                ref_log,
            )
            try:
                for port in (ours_port, ref_port):
                    wait_answering(port, bodies[row_counts[0]].read_bytes())
                servers = {"airgap": ours_port, "reference": ref_port}
                runs: dict[tuple[int, int, str], list[dict[str, float]]] = {}
                for round_ in range(args.rounds):
                    order = ["airgap", "reference"] if round_ % 2 == 0 else ["reference", "airgap"]
                    for rows in row_counts:
                        for conns in connections:
                            for name in order:
                                run_wrk(servers[name], bodies[rows], script, conns, 1.0)  # warm-up
                                pid = (ours if name == "airgap" else reference).pid
                                cpu = cpu_seconds(pid)
                                result = run_wrk(servers[name], bodies[rows], script, conns, args.seconds)
                                served = result["rps"] * args.seconds
                                result["cpu_us"] = (cpu_seconds(pid) - cpu) / max(served, 1) * 1e6
                                runs.setdefault((rows, conns, name), []).append(result)
                                if not args.json:
                                    print(
                                        f"round {round_ + 1} rows={rows} c={conns} {name}: "
                                        f"{result['rps']:.0f} req/s p99 {result['p99_ms']:.2f} ms "
                                        f"cpu {result['cpu_us']:.0f} us/req",
                                        file=sys.stderr,
                                    )
            finally:
                stop(ours)
                stop(reference)

    cells = []
    for rows in row_counts:
        for conns in connections:
            cell: dict[str, Any] = {"rows": rows, "connections": conns}
            for name in ("airgap", "reference"):
                measured = runs[(rows, conns, name)]
                cell[name] = {
                    "rps": round(statistics.median(r["rps"] for r in measured), 1),
                    "p99_ms": round(statistics.median(r["p99_ms"] for r in measured), 2),
                    "p50_ms": round(statistics.median(r["p50_ms"] for r in measured), 2),
                    "cpu_us_per_request": round(statistics.median(r["cpu_us"] for r in measured), 1),
                    "non_2xx": int(sum(r["non_2xx"] for r in measured)),
                    "socket_errors": int(sum(r["socket_errors"] for r in measured)),
                    "rounds": [{"rps": r["rps"], "p99_ms": r["p99_ms"]} for r in measured],
                }
            cell["throughput_ratio"] = round(cell["airgap"]["rps"] / cell["reference"]["rps"], 2)
            cell["p99_ratio"] = round(cell["airgap"]["p99_ms"] / cell["reference"]["p99_ms"], 2)
            cells.append(cell)
    report = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "versions": versions(),
        "seconds": args.seconds,
        "data_contract": not args.without_contract,
        "rounds": args.rounds,
        "cells": cells,
        "goals": {"throughput_ratio": ">= 1.0", "p99_ratio": "<= 1.2"},
        "met": all(c["throughput_ratio"] >= 1.0 and c["p99_ratio"] <= 1.2 for c in cells),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        v = report["versions"]
        print(
            f"{report['date']}; reference: uvicorn {v['uvicorn']} (httptools {v['httptools']}, uvloop "
            f"{v['uvloop']}) + starlette {v['starlette']}; Python {v['python']}, onnxruntime "
            f"{v['onnxruntime']}, wrk {v['wrk']}, {v['cpus']} CPUs"
        )
        print(
            "| rows | conns | airgap req/s | reference req/s | ratio | airgap p99 ms | reference p99 ms "
            "| ratio | CPU µs/request airgap / reference |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for c in cells:
            a, r = c["airgap"], c["reference"]
            print(
                f"| {c['rows']} | {c['connections']} | {a['rps']:,.0f} | {r['rps']:,.0f} | "
                f"{c['throughput_ratio']:.2f} | {a['p99_ms']:.2f} | {r['p99_ms']:.2f} | "
                f"{c['p99_ratio']:.2f} | {a['cpu_us_per_request']:.0f} / {r['cpu_us_per_request']:.0f} |"
            )
        errors = sum(c[n]["non_2xx"] + c[n]["socket_errors"] for c in cells for n in ("airgap", "reference"))
        print(f"non-2xx answers and socket errors, both servers, all runs: {errors}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
