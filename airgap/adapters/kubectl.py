"""Kubernetes through ``kubectl``: the port the kubernetes install target drives, and its real adapter.

The target needs six things from a cluster: its release, apply manifests, delete them, tell whether
a deployment's rollout is complete, undo a rollout, and a port-forward to the deployment's pods. The
port is a Protocol so that tests can drive the target against a recorded conversation; the real
adapter runs ``kubectl`` (every call through :meth:`KubectlCli._run`) and turns its failures into
one-line EnvironmentFailures (exit 5).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator

from airgap.errors import EnvironmentFailure
from airgap.ports import Kubectl as Kubectl
from airgap.ports import Rollout as Rollout

FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+) -> \d+")
ROLLED_OUT = "successfully rolled out"


class KubectlCli:
    """The real cluster, through the ``kubectl`` on PATH, with ``--context`` when given."""

    def __init__(self, context: str | None = None, executable: str = "kubectl") -> None:
        self.exe = executable
        self.context = ["--context", context] if context else []

    def _argv(self, args: list[str]) -> list[str]:
        if shutil.which(self.exe) is None:
            raise EnvironmentFailure(
                "kubectl is not installed", hint="install kubectl, or choose another --to"
            )
        return [self.exe, *self.context, *args]

    def _run(
        self, args: list[str], what: str, stdin: str | None = None, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        try:
            proc = subprocess.run(
                self._argv(args), input=stdin, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise EnvironmentFailure(f"kubectl: {what} did not finish within {timeout:.0f}s") from None
        if check and proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
            raise EnvironmentFailure(f"kubectl: {what} failed: {lines[-1][:300]}")
        return proc

    def apply(self, manifests: str) -> None:
        """``kubectl apply -f -``: the YAML on stdin, so nothing is written to disk for kubectl."""
        self._run(["apply", "-f", "-"], "applying the manifests", stdin=manifests)

    def delete(self, manifests: str) -> None:
        """``kubectl delete --ignore-not-found -f -``: undo and uninstall can always run it."""
        self._run(["delete", "--ignore-not-found", "-f", "-"], "deleting the manifests", stdin=manifests)

    def rollout_status(self, namespace: str, deployment: str, timeout: float) -> Rollout:
        """``kubectl rollout status``, watching up to ``timeout`` (``--watch=false`` for 0);
        complete only when it exits 0 and says so."""
        args = ["-n", namespace, "rollout", "status", f"deployment/{deployment}"]
        args += [f"--timeout={timeout:.0f}s"] if timeout > 0 else ["--watch=false"]
        proc = self._run(args, "reading the rollout status", check=False, timeout=timeout + 60)
        said = (proc.stdout.strip().splitlines() or proc.stderr.strip().splitlines() or [""])[-1]
        return Rollout(proc.returncode == 0 and ROLLED_OUT in said, said)

    def server_version(self) -> str:
        """``kubectl version -o json``: the API server's gitVersion (a newer kubectl's skew warning
        goes to stderr and is not an error)."""
        proc = self._run(["version", "-o", "json", "--request-timeout=10s"], "asking the cluster its version",
                         timeout=30)  # fmt: skip
        try:
            version = str(json.loads(proc.stdout)["serverVersion"]["gitVersion"])
        except (ValueError, KeyError, TypeError):
            raise EnvironmentFailure("kubectl: the cluster reported no server version") from None
        return version

    def rollout_undo(self, namespace: str, deployment: str) -> None:
        """``kubectl rollout undo``: back to the deployment's previous revision."""
        self._run(["-n", namespace, "rollout", "undo", f"deployment/{deployment}"], "undoing the rollout")

    def ready_pods(self, namespace: str, deployment: str) -> list[tuple[str, str]]:
        """The deployment's pods that are Ready now, selected by its own selector: (name, pod IP)."""
        proc = self._run(
            ["-n", namespace, "get", "deployment", deployment, "-o", "jsonpath={.spec.selector.matchLabels}"],
            "reading the deployment's selector",
        )
        try:
            labels = json.loads(proc.stdout or "{}")
        except ValueError:
            labels = {}
        if not labels:
            raise EnvironmentFailure(f"kubectl: deployment/{deployment} has no label selector for its pods")
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        pods = self._run(["-n", namespace, "get", "pods", "-l", selector, "-o", "json"], "listing the pods")
        out = []
        for pod in json.loads(pods.stdout).get("items", []):
            meta, status = pod.get("metadata") or {}, pod.get("status") or {}
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
            )
            if ready and not meta.get("deletionTimestamp"):
                out.append((str(meta["name"]), str(status.get("podIP") or "")))
        return sorted(out)

    @contextlib.contextmanager
    def port_forward(
        self, namespace: str, deployment: str, remote_port: int, pod: str | None = None
    ) -> Iterator[int]:
        """``kubectl port-forward --address 127.0.0.1 deployment/NAME :PORT`` (or ``pod/POD``, one
        given replica): kubectl picks the local port and says which; the forward is stopped when the
        block ends."""
        resource = f"pod/{pod}" if pod else f"deployment/{deployment}"
        argv = self._argv(
            ["-n", namespace, "port-forward", "--address", "127.0.0.1", resource, f":{remote_port}"]
        )
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            yield self._local_port(proc, resource)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    @staticmethod
    def _local_port(proc: subprocess.Popen[str], resource: str, timeout: float = 60) -> int:
        """The local port kubectl chose, from its "Forwarding from 127.0.0.1:N -> M" line."""
        found: list[int] = []
        announced = threading.Event()

        def read() -> None:
            # Reads to the end: kubectl says "Handling connection for N" on every connection, and
            # must never block on a full pipe.
            assert proc.stdout is not None
            for line in proc.stdout:
                m = FORWARDING.search(line)
                if m and not found:
                    found.append(int(m.group(1)))
                    announced.set()
            announced.set()

        threading.Thread(target=read, daemon=True).start()
        announced.wait(timeout)
        if found:
            return found[0]
        proc.kill()
        _, err = proc.communicate(timeout=10)
        last = (err.strip().splitlines() or ["no output"])[-1][:300]
        raise EnvironmentFailure(f"kubectl: the port-forward to {resource} failed: {last}")
