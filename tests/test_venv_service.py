"""A virtualenv install as a service: `airgap serve NAME` runs the installed model server in the
foreground with the settings its image would give it (exec: the process is the server, and SIGTERM
stops it cleanly), and install writes a systemd unit that runs it, enabled only when asked."""

from __future__ import annotations

import http.client
import json
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airgap.core.model_layer import model_env
from airgap.core.service_unit import image_settings, unit_name
from airgap.services.deploy.receipts import Installed, Receipt
from airgap.services.deploy.serve import enable_unit, plan, unit_path, write_unit
from airgap.services.state import State
from tests.conftest import ROOT, assert_one_line_error, run_airgap
from tests.fakes import FakeServiceManager

NAME = "tabular-classifier"
# The model image's stage as bundles signed it before the model became its own content: the
# serving settings were the image's ENV, and a virtualenv install still reads them from there.
LEGACY_DOCKERFILE = """\
# --- stage 2: the runtime image: base + venv + server + model, nothing else (no pip, no wheels, no caches)
FROM {{ base_image }}
COPY --from=install /opt/airgap/venv /opt/airgap/venv
COPY server/airgap_server.py /opt/airgap/server/airgap_server.py
COPY model/ /opt/airgap/model/
ENV PATH=/opt/airgap/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1 \\
    AIRGAP_MODEL_PATH=/opt/airgap/model/{{ model_file }} \\
    AIRGAP_GOLDEN_PATH=/opt/airgap/model/golden.json \\
    AIRGAP_MODEL_NAME={{ name }} \\
    AIRGAP_MODEL_VERSION={{ version }} \\
    AIRGAP_PORT={{ port }} \\
    AIRGAP_THREADS={{ threads }} \\
    AIRGAP_MAX_BATCH={{ max_batch }} \\
    AIRGAP_MAX_REQUEST_BYTES={{ max_request_bytes }}
USER {{ uid }}:{{ uid }}
EXPOSE {{ port }}
WORKDIR /tmp
ENTRYPOINT ["/opt/airgap/venv/bin/python", "/opt/airgap/server/airgap_server.py"]
CMD ["serve"]
"""


def _rendered(threads: int = 3, max_batch: int = 16, max_request_bytes: int = 4000, port: int = 8080) -> str:
    """The ENV block of the model image's Dockerfile as airgap renders it."""
    return (
        LEGACY_DOCKERFILE.replace("{{ model_file }}", "classifier.onnx")
        .replace("{{ name }}", NAME)
        .replace("{{ version }}", "1.0.0")
        .replace("{{ port }}", str(port))
        .replace("{{ threads }}", str(threads))
        .replace("{{ max_batch }}", str(max_batch))
        .replace("{{ max_request_bytes }}", str(max_request_bytes))
    )


def test_an_older_bundle_s_serving_settings_are_the_ones_its_signed_dockerfile_gives_the_image() -> None:
    settings = image_settings(_rendered(threads=3, max_batch=16, max_request_bytes=4000, port=9000))
    assert settings == {
        "AIRGAP_PORT": "9000",
        "AIRGAP_THREADS": "3",
        "AIRGAP_MAX_BATCH": "16",
        "AIRGAP_MAX_REQUEST_BYTES": "4000",
    }  # the image's paths and names are its own: each installation sets those
    assert image_settings("FROM x\nENV AIRGAP_THREADS 5\n") == {"AIRGAP_THREADS": "5"}
    assert image_settings(None) == {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def installed(tmp_path: Path) -> State:
    """A virtualenv install of the example as the venv target records it, whose interpreter is the
    one running the tests (it has onnxruntime): no wheelhouse to build for the fast tier."""
    state = State(tmp_path / "state")
    content = tmp_path / "content"
    (content / "model").mkdir(parents=True)
    (content / "server").mkdir()
    shutil.copy(ROOT / "bundle_templates" / "server" / "airgap_server.py", content / "server")
    for f in ("classifier.onnx", "golden.json"):
        shutil.copy(ROOT / "examples" / "tabular" / "model" / f, content / "model" / f)
    record = {
        "model": {"file": "model/classifier.onnx"},
        "serving": {"port": 8080, "max_batch": 16},
        "image": {
            "model_image": {
                "manifest_digest": "sha256:" + "1" * 64,
                "config_digest": "sha256:" + "2" * 64,
                "layer": {"digest": "sha256:" + "3" * 64, "size": 10240},
                "env": model_env(
                    NAME,
                    "1.0.0",
                    "model/classifier.onnx",
                    {"port": 8080, "max_batch": 16, "max_request_bytes": 4000},
                ),
            }
        },
    }
    (content / "build.json").write_text(json.dumps(record))
    receipt = Receipt(
        NAME,
        "1.0.0",
        "venv",
        "a" * 64,
        "k",
        "b.airgap.tar",
        "2026-01-01T00:00:00Z",
        str(content),
        port=_free_port(),
        extra={"python": sys.executable, "venv": str(tmp_path / "venv")},
    )
    Installed(state).put(receipt, None)
    return state


def _post(port: int, body: bytes) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/v1/predict", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def _ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            response = conn.getresponse()
            if response.status == 200:
                return dict(json.loads(response.read()))
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("the server never got ready")


def test_the_written_unit_runs_airgap_serve_which_execs_the_server_with_the_image_settings(
    installed: State,
) -> None:
    unit = write_unit(installed, NAME, user=True)
    assert unit == unit_path(installed, NAME) and unit.name == unit_name(NAME)
    text = unit.read_text()
    [exec_start] = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    assert argv[-4:] == ["serve", NAME, "--state-dir", str(installed.directory.resolve())]
    assert "KillSignal=SIGTERM" in text and "WantedBy=default.target" in text

    port = plan(installed, NAME).env["AIRGAP_PORT"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # as systemd would
    try:
        ready = _ready(int(port), proc)
        assert ready["model_version"] == "1.0.0"
        # exec: the process systemd started is the model server itself, so its signals reach it.
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[1].endswith(b"server/airgap_server.py") and cmdline[2] == b"serve"
        # The image's settings hold here too: a body above its 4000-byte limit is refused.
        status, answer = _post(int(port), json.dumps({"inputs": {"features": [[0.5] * 4] * 200}}).encode())
        assert status == 413, answer
        # ...and so does its largest batch (16 here, 64 by default).
        status, answer = _post(int(port), json.dumps({"inputs": {"features": [[0.5] * 4] * 17}}).encode())
        assert status == 400 and answer["error"]["code"] == "batch_too_large", answer  # type: ignore[index]
        assert _post(int(port), json.dumps({"inputs": {"features": [[0.5] * 4] * 16}}).encode())[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_airgap_serve_of_a_name_not_installed_with_venv_is_one_line_exit_4(tmp_path: Path) -> None:
    line = assert_one_line_error(run_airgap("serve", "nothing", "--state-dir", str(tmp_path / "s")), 4)
    assert "not installed with --to venv" in line


def test_the_unit_is_installed_and_enabled_only_when_asked(installed: State, tmp_path: Path) -> None:
    manager = FakeServiceManager(tmp_path / "units")
    written = write_unit(installed, NAME, user=False)
    assert manager.enabled == [] and not (tmp_path / "units").exists()  # written, not installed
    dest = enable_unit(installed, NAME, manager)
    assert dest == tmp_path / "units" / unit_name(NAME)
    assert dest.read_bytes() == written.read_bytes()
    assert manager.enabled == [unit_name(NAME)]


def test_systemd_is_refused_for_a_container_target_before_anything_is_read(tmp_path: Path) -> None:
    proc = run_airgap(
        "install",
        str(tmp_path / "x.airgap.tar"),
        "--to",
        "docker",
        "--systemd",
        "--state-dir",
        str(tmp_path / "s"),
    )
    line = assert_one_line_error(proc, 2)
    assert "--systemd is for" in line
