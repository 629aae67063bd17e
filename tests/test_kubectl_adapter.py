"""The real kubectl adapter against a stand-in ``kubectl`` executable that prints what kubectl prints.

No cluster is needed to check airgap's reading of kubectl: the argv it sends, "successfully rolled
out" versus "Waiting for ...", and the local port taken from "Forwarding from 127.0.0.1:N -> M"
(the stand-in really listens there).
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

from airgap.adapters.kubectl import KubectlCli
from airgap.errors import EnvironmentFailure

STAND_IN = """#!{python}
import json, socket, sys, time
args = sys.argv[1:]
with open({log!r}, "a") as fh:
    fh.write(json.dumps({{"argv": args, "stdin": sys.stdin.read() if "-f" in args else None}}) + "\\n")
if args[2:3] == ["version"]:
    print("WARNING: version difference between client (1.32) and server (1.20) exceeds the supported"
          " minor version skew of +/-1", file=sys.stderr)
    client, server = {{"gitVersion": "v1.32.4"}}, {{"gitVersion": "v1.20.2"}}
    print(json.dumps({{"clientVersion": client, "serverVersion": server}}))
elif "rollout" in args and "status" in args:
    if "--watch=false" in args:
        print('Waiting for deployment "m" rollout to finish: 0 of 1 updated replicas are available...')
    else:
        print('deployment "m" successfully rolled out')
elif "port-forward" in args:
    if "deployment/missing" in args:
        print('error: deployments.apps "missing" not found', file=sys.stderr)
        sys.exit(1)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    print(f"Forwarding from 127.0.0.1:{{s.getsockname()[1]}} -> 8080", flush=True)
    time.sleep(60)
elif "apply" in args and "bad" in open({log!r}).read().splitlines()[-1]:
    print('error: error validating "STDIN": unknown field "replicaz"', file=sys.stderr)
    sys.exit(1)
"""


@pytest.fixture
def kubectl(tmp_path: Path) -> tuple[KubectlCli, Path]:
    log = tmp_path / "calls.jsonl"
    exe = tmp_path / "kubectl"
    exe.write_text(STAND_IN.format(python=sys.executable, log=str(log)))
    exe.chmod(0o755)
    return KubectlCli("lab", executable=str(exe)), log


def calls(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_rollout_status_reads_complete_and_not_complete_from_what_kubectl_prints(
    kubectl: tuple[KubectlCli, Path],
) -> None:
    cli, log = kubectl
    waited = cli.rollout_status("ns", "m", 300)
    now = cli.rollout_status("ns", "m", 0)
    assert waited.complete and "successfully rolled out" in waited.message
    assert not now.complete and now.message.startswith("Waiting for deployment")
    argvs = [c["argv"] for c in calls(log)]
    assert argvs == [
        ["--context", "lab", "-n", "ns", "rollout", "status", "deployment/m", "--timeout=300s"],
        ["--context", "lab", "-n", "ns", "rollout", "status", "deployment/m", "--watch=false"],
    ]


def test_port_forward_yields_the_local_port_kubectl_chose_and_stops_the_forward_after(
    kubectl: tuple[KubectlCli, Path],
) -> None:
    cli, log = kubectl
    with cli.port_forward("ns", "m", 8080) as port:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()  # the stand-in listens there
    assert calls(log)[-1]["argv"] == [
        "--context", "lab", "-n", "ns", "port-forward", "--address", "127.0.0.1", "deployment/m", ":8080"
    ]  # fmt: skip
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


def test_a_failed_port_forward_and_a_refused_apply_are_one_line_environment_failures(
    kubectl: tuple[KubectlCli, Path],
) -> None:
    cli, log = kubectl
    with (
        pytest.raises(
            EnvironmentFailure, match='port-forward to deployment/missing failed: .*"missing" not found'
        ),
        cli.port_forward("ns", "missing", 8080),
    ):
        pass
    with pytest.raises(EnvironmentFailure, match='applying the manifests failed: .*unknown field "replicaz"'):
        cli.apply("kind: bad\n")
    assert calls(log)[-1] == {"argv": ["--context", "lab", "apply", "-f", "-"], "stdin": "kind: bad\n"}


def test_server_version_is_read_from_kubectl_version_json_despite_the_skew_warning(
    kubectl: tuple[KubectlCli, Path],
) -> None:
    cli, log = kubectl
    assert cli.server_version() == "v1.20.2"
    assert calls(log)[-1]["argv"] == ["--context", "lab", "version", "-o", "json", "--request-timeout=10s"]
