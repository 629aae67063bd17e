"""The container targets' promote, in the fast tier: the real switch (targets/_container.py) driving
a runtime whose containers are the bundled model server as processes on one port. The new version
starts beside the old one, is smoke-tested on a connection its instance id proves is the new
process, and only then is the old one stopped — under load, with no request failing; a new version
that answers wrongly never stops the old one."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airgap.core.build_record import BuildRecord
from airgap.services.deploy import targets
from airgap.services.deploy.receipts import Installed, Journal, Receipt
from airgap.services.deploy.targets import InstallContext, InstallOptions, Site
from airgap.services.observer import NullObserver
from airgap.services.state import State
from tests.conftest import ROOT
from tests.fakes import ProcessRuntime, fake_adapters
from tests.loadloop import LoadLoop

SERVER = ROOT / "bundle_templates" / "server" / "airgap_server.py"
MODEL = ROOT / "examples" / "tabular" / "model"
NAME = "tabular-classifier"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _contract() -> dict[str, Any]:
    """The golden cases and what the model answers to them, as the bundler records them."""
    proc = subprocess.run(
        [sys.executable, str(SERVER), "check", "--model", str(MODEL / "classifier.onnx"), "--golden",
         str(MODEL / "golden.json")],
        capture_output=True, text=True, check=True,
    )
    golden = json.loads((MODEL / "golden.json").read_text())
    cases = {c["name"]: c for c in json.loads(proc.stdout)["cases"]}
    return {"cases": [{**case, "outputs": cases[case["name"]]["outputs"]} for case in golden["cases"]]}


def _image(version: str) -> dict[str, str]:
    return {
        "AIRGAP_MODEL_PATH": str(MODEL / "classifier.onnx"),
        "AIRGAP_GOLDEN_PATH": str(MODEL / "golden.json"),
        "AIRGAP_MODEL_NAME": NAME,
        "AIRGAP_MODEL_VERSION": version,
        "AIRGAP_DATA_CONTRACT_PATH": "/nonexistent/data-contract.json",
    }


@pytest.fixture
def switch(tmp_path: Path) -> Iterator[tuple[ProcessRuntime, InstallContext]]:
    port = _free_port()
    runtime = ProcessRuntime(SERVER, {"img-old": _image("1.0.0"), "img-new": _image("1.0.1")})
    state = State(tmp_path / "state")
    adapters = fake_adapters(docker=runtime)
    site = Site(state, NullObserver(), Installed(state), tmp_path, "label", targets.find, adapters)
    old = Receipt(NAME, "1.0.0", "docker", "a" * 64, "k", "b", "t", str(tmp_path), "img-old", "old", port)
    new = Receipt(NAME, "1.0.1", "docker", "b" * 64, "k", "b", "t", str(tmp_path), "img-new", "new", port)
    from airgap.ports import ContainerSpec

    runtime.create(ContainerSpec("old", "img-old", port, 1 << 30, 10**9))
    runtime.start("old")
    ctx = InstallContext(
        site, InstallOptions(target="docker"), new, old, BuildRecord.from_json(b"{}"), tmp_path,
        Journal(state, NAME, "docker"),
    )
    try:
        from airgap.services.deploy.smoketest import wait_ready

        wait_ready(port, lambda: runtime.state("old") == "running", timeout=60)
        runtime.events.clear()
        yield runtime, ctx
    finally:
        runtime.close()


def test_promote_starts_the_new_server_beside_the_old_one_and_stops_the_old_one_last_refusing_nothing(
    switch: tuple[ProcessRuntime, InstallContext],
) -> None:
    runtime, ctx = switch
    contract = _contract()
    port = ctx.receipt.port or 0
    body = json.dumps({"inputs": contract["cases"][0]["inputs"]}).encode()
    with LoadLoop(port, body) as load:
        time.sleep(0.5)
        answers, failures = targets.get("docker").promote(ctx, contract)
        time.sleep(0.5)
    assert failures == {} and set(answers) == {c["name"] for c in contract["cases"]}
    assert runtime.events == [("remove", "new"), ("create", "new"), ("start", "new"), ("stop", "old")]
    assert runtime.exit_codes["old"] == 0, "the old server drains and exits cleanly"
    assert ctx.journal.data["steps"] == ["created", "started", "stopped-old"]
    assert load.failures == [], load.failures[:3]
    versions = [v for _, v in load.answered]
    assert versions[0] == "1.0.0" and versions[-1] == "1.0.1" and len(versions) > 100


def test_a_new_version_that_answers_wrongly_never_stops_the_old_one(
    switch: tuple[ProcessRuntime, InstallContext],
) -> None:
    runtime, ctx = switch
    contract = _contract()
    wrong = json.loads(json.dumps(contract))
    first = wrong["cases"][0]["outputs"]
    key = next(iter(first))
    first[key] = [[-1]] if not isinstance(first[key][0], dict) else [{"0": 9.0}]
    answers, _ = targets.get("docker").promote(ctx, wrong)
    assert answers[contract["cases"][0]["name"]] == contract["cases"][0]["outputs"], "asked the new one"
    assert ("stop", "old") not in runtime.events, runtime.events
    assert runtime.state("old") == "running" and "stopped-old" not in ctx.journal.data["steps"]
