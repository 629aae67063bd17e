"""The model server against the floor and a reference server, in the same run, on the example model:

    python benchmarks/serve.py [--clients 8] [--seconds 10] [--json]

(a) the floor: ``InferenceSession.run`` called in-process by CLIENTS threads, one row per call;
(b) airgap's model server (bundle_templates/server/airgap_server.py), as the image runs it;
(c) a reference server of the same model written with uvicorn + starlette (one worker, the same
    onnxruntime session options), the usual way a Python team would serve it.

Both servers get the same closed-loop load: CLIENTS keep-alive connections, each sending the next
one-row request as soon as the last is answered, for SECONDS after a warm-up. Reported: throughput,
p50 and p99 latency, and the ratios server/reference. Goal: p99 at 8 clients within 1.5x of the
reference and throughput at least equal to it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "examples" / "tabular" / "model" / "classifier.onnx"
GOLDEN = ROOT / "examples" / "tabular" / "model" / "golden.json"
SERVER = ROOT / "bundle_templates" / "server" / "airgap_server.py"
ROWS = [[0.64, -1.0, 1.97, -0.71], [-1.51, 1.02, -0.12, 0.4], [0.41, -0.76, -0.73, -0.3]]

REFERENCE_APP = """
import json, os
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    body = json.dumps({"inputs": {"features": [ROWS[0]]}}).encode()
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("POST", "/v1/predict", body, {"Content-Type": "application/json"})
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"nothing answered on port {port}")


def closed_loop(port: int, clients: int, seconds: float) -> dict[str, float]:
    bodies = [json.dumps({"inputs": {"features": [row]}}).encode() for row in ROWS]
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine: list[float] = []
        i = 0
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                conn.request(
                    "POST", "/v1/predict", bodies[i % len(bodies)], {"Content-Type": "application/json"}
                )
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                ok = False
            if ok:
                mine.append((time.perf_counter() - t0) * 1000)
            else:
                with lock:
                    errors[0] += 1
            i += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summarize(latencies, seconds, errors[0])


def summarize(latencies: list[float], seconds: float, errors: int) -> dict[str, float]:
    from airgap.core.acceptance import percentile  # nearest rank, as `airgap accept` reports

    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return percentile(ordered, q)

    return {
        "requests": len(ordered),
        "errors": errors,
        "rps": round(len(ordered) / seconds, 1),
        "p50_ms": round(pct(50), 3),
        "p99_ms": round(pct(99), 3),
    }


def floor(clients: int, seconds: float) -> dict[str, float]:
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(MODEL), sess_options=options, providers=["CPUExecutionProvider"])
    feeds = [{"features": np.asarray([row], dtype=np.float32)} for row in ROWS]
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker() -> None:
        mine = []
        i = 0
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            session.run(None, feeds[i % len(feeds)])
            mine.append((time.perf_counter() - t0) * 1000)
            i += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summarize(latencies, seconds, 0)


def run_server(
    argv: list[str], env: dict[str, str], port: int, clients: int, seconds: float
) -> dict[str, float]:
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=log)
        try:
            wait_listening(port)
            closed_loop(port, clients, 1.0)  # warm-up
            return closed_loop(port, clients, seconds)
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results: dict[str, Any] = {"clients": args.clients, "seconds": args.seconds}
    results["onnxruntime (floor)"] = floor(args.clients, args.seconds)
    port = free_port()
    results["airgap server"] = run_server(
        [sys.executable, str(SERVER), "serve"],
        {
            "AIRGAP_MODEL_PATH": str(MODEL),
            "AIRGAP_GOLDEN_PATH": str(GOLDEN),
            "AIRGAP_HOST": "127.0.0.1",
            "AIRGAP_PORT": str(port),
            "AIRGAP_THREADS": "2",
        },
        port,
        args.clients,
        args.seconds,
    )
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "refapp.py").write_text(REFERENCE_APP)
        port = free_port()
        results["uvicorn + starlette (reference)"] = run_server(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "refapp:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--app-dir",
                tmp,
            ],
            {"MODEL": str(MODEL)},
            port,
            args.clients,
            args.seconds,
        )
    ours, ref = results["airgap server"], results["uvicorn + starlette (reference)"]
    results["ratios"] = {
        "p99 airgap / reference (goal <= 1.5)": round(ours["p99_ms"] / ref["p99_ms"], 2),
        "throughput airgap / reference (goal >= 1.0)": round(ours["rps"] / ref["rps"], 2),
        "throughput airgap / floor": round(ours["rps"] / results["onnxruntime (floor)"]["rps"], 3),
    }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, figures in results.items():
            print(f"{name}: {figures}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
