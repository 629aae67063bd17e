"""A recorded conversation with a Kubernetes cluster: a fake of airgap's kubectl port.

There is no cluster here. The fake keeps what a cluster would (which deployments were applied, with
which image), records every call in ``calls``, says it runs Kubernetes ``version`` (by default the
test cluster's release, which the session's bundles are rendered for), and answers from a script:
``rollouts`` are the next answers to ``rollout status`` (then "successfully rolled out"). Its
port-forward really forwards: ``backend`` starts a real HTTP server on loopback (the bundled model
server, or a stub that answers wrong) and the forward yields that server's ephemeral port — never a
port some other installation publishes on the host. Like a cluster, it refuses to wait for or
forward to a deployment that was never applied.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from airgap.adapters.kubectl import Rollout
from airgap.errors import EnvironmentFailure

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_MODEL = ROOT / "examples" / "tabular" / "model"

Backend = Callable[[], AbstractContextManager[int]]


class RecordedKubectl:
    """Implements ``airgap.ports.Kubectl``; see the module docstring."""

    def __init__(
        self, backend: Backend, rollouts: list[Rollout] | None = None, version: str = "v1.20.2"
    ) -> None:
        self.backend = backend
        self.version = version
        self.rollouts = list(rollouts or [])
        self.calls: list[tuple[Any, ...]] = []
        self.deployments: dict[tuple[str, str], str] = {}  # (namespace, name) -> image
        self.forwarded: list[int] = []

    def apply(self, manifests: str) -> None:
        docs = [d for d in yaml.safe_load_all(manifests) if d]
        self.calls.append(("apply", tuple(f"{d['kind']}/{d['metadata']['name']}" for d in docs)))
        for d in docs:
            if d["kind"] == "Deployment":
                key = (d["metadata"].get("namespace", "default"), d["metadata"]["name"])
                self.deployments[key] = d["spec"]["template"]["spec"]["containers"][0]["image"]

    def delete(self, manifests: str) -> None:
        docs = [d for d in yaml.safe_load_all(manifests) if d]
        self.calls.append(("delete", tuple(f"{d['kind']}/{d['metadata']['name']}" for d in docs)))
        for d in docs:
            if d["kind"] == "Deployment":
                self.deployments.pop((d["metadata"].get("namespace", "default"), d["metadata"]["name"]), None)

    def rollout_status(self, namespace: str, deployment: str, timeout: float) -> Rollout:
        self.calls.append(("rollout status", namespace, deployment, timeout))
        if (namespace, deployment) not in self.deployments:
            return Rollout(False, f'Error from server (NotFound): deployments.apps "{deployment}" not found')
        if self.rollouts:
            return self.rollouts.pop(0)
        return Rollout(True, f'deployment "{deployment}" successfully rolled out')

    def server_version(self) -> str:
        self.calls.append(("version",))
        return self.version

    def rollout_undo(self, namespace: str, deployment: str) -> None:
        self.calls.append(("rollout undo", namespace, deployment))

    def ready_pods(self, namespace: str, deployment: str) -> list[tuple[str, str]]:
        self.calls.append(("ready pods", namespace, deployment))
        return [(f"{deployment}-0", "")] if (namespace, deployment) in self.deployments else []

    @contextlib.contextmanager
    def port_forward(
        self, namespace: str, deployment: str, remote_port: int, pod: str | None = None
    ) -> Iterator[int]:
        resource = f"pod/{pod}" if pod else f"deployment/{deployment}"
        self.calls.append(("port-forward", namespace, resource, remote_port))
        if (namespace, deployment) not in self.deployments:
            said = f'deployments.apps "{deployment}" not found'
            raise EnvironmentFailure(f"kubectl: the port-forward to deployment/{deployment} failed: {said}")
        with self.backend() as port:
            self.forwarded.append(port)
            yield port


@contextlib.contextmanager
def model_server(directory: Path) -> Iterator[int]:
    """The real bundled model server serving the example model on an ephemeral loopback port."""
    from tests.test_server import serving

    directory.mkdir(parents=True, exist_ok=True)
    run = directory / f"run{len(list(directory.iterdir()))}"
    run.mkdir()
    with serving(run, EXAMPLE_MODEL / "golden.json", EXAMPLE_MODEL / "classifier.onnx") as server:
        yield server.port


@contextlib.contextmanager
def wrong_server() -> Iterator[int]:
    """A stub that is ready and answers every prediction, wrongly (label 0, flat probabilities)."""

    class Handler(BaseHTTPRequestHandler):
        def _send(self, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._send({"status": "ok"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            rows = json.loads(self.rfile.read(length))["inputs"]["features"]
            self._send({"outputs": {"label": [0] * len(rows), "probabilities": [[1 / 3] * 3 for _ in rows]}})

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
