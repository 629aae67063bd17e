"""Shared fixtures. Tests run the real CLI in a subprocess and real engines; nothing is mocked."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests import external_models

ROOT = Path(__file__).resolve().parent.parent
BASE_IMAGE = os.environ.get("AIRGAP_TEST_BASE_IMAGE", "127.0.0.1:5000/airgap/python-base:bookworm")
PYENV = Path("/root/.pyenv/versions")
EPOCH = "1700000000"
PASSPHRASE = "correct horse battery staple"
FOREIGN = ROOT / "tests" / "data" / "profiles" / "rocky8-aarch64-py310.json"
CLEAN_IMAGE = "127.0.0.1:5000/airgap/python-openssl:bookworm"
# The release of the test cluster scripts/cluster.sh runs; the session's bundles are rendered for it.
TEST_CLUSTER_KUBERNETES = "1.20"
CLUSTER_SCRIPT = ROOT / "scripts" / "cluster.sh"


# What a run in this process cannot reproduce the way a new process would: colour and width are
# read by the consoles when airgap is first imported, and PYTHONPATH only at start-up.
_PROCESS_ONLY_ENV = frozenset({"NO_COLOR", "FORCE_COLOR", "TERM", "COLUMNS", "LINES", "PYTHONPATH"})


def run_airgap(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 300,
    kill_at: str | None = None,
    process: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Runs the real command line, as a user would, and captures what they would see.

    In this process (``airgap.cli.main(argv)``, the console script's own entry point, with
    stdout and stderr captured as a pipe would carry them) unless a new process is needed:
    ``process=True``, an environment that only takes effect at start-up, or ``kill_at``. A new
    process costs most of a second of imports; the fast tier runs hundreds of commands.

    ``kill_at``: through ``tests.faultrun``, the process is killed (SIGKILL) right after it
    journals that install step.
    """
    if not process and kill_at is None and not (_PROCESS_ONLY_ENV & set(env or {})):
        return _run_in_process(list(args), env or {}, cwd, timeout)
    full_env = dict(os.environ)
    full_env.update(env or {})
    entry = ["-m", "airgap"]
    if kill_at is not None:
        entry = ["-m", "tests.faultrun", kill_at]
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full_env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, *entry, *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
    )


def _run_in_process(
    argv: list[str], env: dict[str, str], cwd: Path | None, timeout: float
) -> subprocess.CompletedProcess[str]:
    """``airgap.cli.main(argv)`` with the environment, directory and standard streams of a child
    process: stdin is empty and not a terminal, stdout and stderr are byte pipes read back as a
    child's would be (universal newlines)."""
    import contextlib
    import io
    import signal

    from airgap.cli import main

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    # An interrupted command leaves its signals ignored (it is reporting): not this process's.
    saved_handlers = {
        sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM)
    }
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    saved_stdin = sys.stdin
    try:
        os.environ.update(env)
        if cwd is not None:
            os.chdir(cwd)
        sys.stdin = io.TextIOWrapper(io.BytesIO(b""), encoding="utf-8")

        def expired(signum: int, frame: object) -> None:
            raise subprocess.TimeoutExpired(["airgap", *argv], timeout)

        # A command that hangs fails its test after ``timeout``, as a child would, rather than
        # stopping the whole run. (main() reports it as an internal error: the test sees 70.)
        signal.signal(signal.SIGALRM, expired)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in saved_handlers.items():
            signal.signal(sig, handler)
        sys.stdin = saved_stdin
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)

    def read(stream: io.TextIOWrapper) -> str:
        raw = stream.buffer.getvalue()  # type: ignore[attr-defined]
        return io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8", newline=None).read()

    return subprocess.CompletedProcess(["airgap", *argv], code, read(out), read(err))


# A progress line written when stderr is not a terminal: "[   1.2s] base image: done in 0.9s".
PROGRESS_LINE = re.compile(r"^\[\s*\d+\.\ds\] ")


def message_lines(stderr: str) -> list[str]:
    """What stderr says besides the progress log."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not PROGRESS_LINE.match(ln)]


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int) -> str:
    """The contract for every failure: the documented exit code, one line, no traceback.

    Progress lines (one per task start and end, when stderr is not a terminal) are a log, not
    part of the message.
    """
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = message_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    return lines[0]


def find_python(version: str) -> str | None:
    """A specific CPython on this machine (pyenv builds, or the system's), if present."""
    for candidate in sorted(PYENV.glob(f"{version}.*/bin/python{version}")):
        return str(candidate)
    for name in (f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        if os.access(name, os.X_OK):
            return name
    return None


def packaging_dir() -> str:
    import packaging

    return str(Path(packaging.__file__).resolve().parent.parent)


ORACLE = (
    "import sys, json; sys.path.insert(0, sys.argv[1]); "
    "import packaging.tags as t; print(json.dumps([str(x) for x in t.sys_tags()]))"
)


def sys_tags_of(interpreter: Sequence[str], pkg_dir: str | None = None) -> list[str]:
    """The oracle: packaging's own sys_tags() run *inside* the interpreter under test."""
    out = subprocess.run(
        [*interpreter, "-c", ORACLE, pkg_dir or packaging_dir()],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return list(json.loads(out))


# The fixtures that stand for a real engine: a test that uses one (directly or through a bundle
# fixture) belongs to the engine tier whether or not its module says so, so `--fast` never
# starts an image build by accident.
ENGINE_FIXTURES = frozenset({"docker_client", "base_image", "clean_image"})
# The fixture that stands for the test cluster: a test that uses it belongs to the kubernetes tier
# (and the engine's: the kubelet runs its pods on the same Docker Engine).
CLUSTER_FIXTURES = frozenset({"kube_cluster"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks every test that needs the engine ``docker``: the fast tier is ``-m "not docker and
    not podman"``."""
    for item in items:
        if ENGINE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.docker)
        if CLUSTER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kubernetes)
            item.add_marker(pytest.mark.docker)


@pytest.fixture(scope="session")
def docker_client():  # type: ignore[no-untyped-def]
    """The real Docker Engine. Absent engine is a failure with the fix named, never a skip."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        pytest.fail(f"Docker Engine not reachable ({exc}); run scripts/setup-env.sh first")
    return client


@pytest.fixture(scope="session")
def kube_cluster() -> str:
    """The test cluster's kubeconfig, as ``scripts/cluster.sh env`` names it, once the script says
    the cluster runs. A cluster that is not running is a failure with the fix named, never a skip."""
    status = subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), "status"], capture_output=True, text=True, timeout=60
    )
    if status.returncode != 0:
        pytest.fail(
            f"the test Kubernetes cluster is not running (scripts/cluster.sh status exited "
            f"{status.returncode}); start it with `bash scripts/cluster.sh start` as root "
            f"(scripts/setup-env.sh does)"
        )
    env = subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), "env"], capture_output=True, text=True, timeout=60, check=True
    ).stdout.strip()
    path = env.removeprefix("export KUBECONFIG=")
    if not Path(path).is_file():
        pytest.fail(f"scripts/cluster.sh env names {path!r}, which is not a kubeconfig file")
    return path


@pytest.fixture
def kubeconfig(kube_cluster: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """KUBECONFIG pointed at the test cluster for one test (airgap and kubectl read it)."""
    monkeypatch.setenv("KUBECONFIG", kube_cluster)
    return kube_cluster


@pytest.fixture(scope="session")
def base_image(docker_client) -> str:  # type: ignore[no-untyped-def]
    try:
        docker_client.images.get(BASE_IMAGE)
    except Exception:
        try:
            docker_client.images.pull(BASE_IMAGE)
        except Exception as exc:
            pytest.fail(f"base image {BASE_IMAGE} unavailable ({exc}); run scripts/setup-env.sh first")
    return BASE_IMAGE


def bundle(project: Path, cache: Path, *extra: str) -> dict[str, Any]:
    """`airgap bundle` as the fixtures use it: ``--keep-images`` keeps the engine's build cache
    warm for the next bundle (the removal of unshipped images is proven on its own, in
    test_interrupts)."""
    proc = run_airgap(
        "--json",
        "bundle",
        str(project),
        "--cache-dir",
        str(cache),
        "--keep-images",
        *extra,
        env={"SOURCE_DATE_EPOCH": EPOCH, "AIRGAP_KEY_PASSPHRASE": PASSPHRASE},
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("project") / "tabular"
    shutil.copytree(ROOT / "examples" / "tabular", dest, ignore=shutil.ignore_patterns("build"))
    # The session bundles for the aarch64 profile to prove the host wheelhouse; the x86_64 image is
    # not for that host, which the policy catches, and this project waives in writing.
    # Its manifests are for the test cluster (scripts/cluster.sh): Kubernetes 1.20, which has no Pod
    # Security Admission to label the namespace for, as the policy finds and the project waives.
    text = (dest / "airgap.yaml").read_text()
    (dest / "airgap.yaml").write_text(
        text.replace(
            "  fail_on: high",
            "  fail_on: high\n  waivers:\n    - rule: AG-TGT-ARCH\n      justification: "
            '"The aarch64 edge host runs the host wheelhouse in a virtualenv; the image is for the lab."'
            "\n    - rule: AG-K8S-PSA-ENFORCE-RESTRICTED\n      justification: "
            '"The lab cluster runs Kubernetes 1.20, before Pod Security Admission; the pods meet the'
            ' restricted profile by their own settings (AG-PSS-*)."',
        ).replace("  replicas: 2", f'  replicas: 2\n  version: "{TEST_CLUSTER_KUBERNETES}"')
    )
    return dest


@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real P-384 key pair: ``KEY.key`` (encrypted) and ``KEY.pub``; returns the prefix path."""
    prefix = tmp_path_factory.mktemp("keys") / "publisher"
    proc = run_airgap("keys", "generate", "-o", str(prefix), env={"AIRGAP_KEY_PASSPHRASE": PASSPHRASE})
    assert proc.returncode == 0, proc.stderr
    return prefix


def built_args(signing_key: Path) -> tuple[str, ...]:
    """How the session's bundle is made (besides project and cache): a test that makes it again
    to compare bytes must use exactly these."""
    return ("--profile", str(FOREIGN), "--host-wheelhouse", "--key", str(signing_key.with_suffix(".key")))


@pytest.fixture(scope="session")
def built(project: Path, cache: Path, signing_key: Path, docker_client) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The example bundled once per session from a cold cache, signed: staging + bundle."""
    result = bundle(project, cache, *built_args(signing_key))
    bundle_file = Path(result["bundle"][0])
    result["bundle_sha256"] = hashlib.sha256(bundle_file.read_bytes()).hexdigest()
    return result


@pytest.fixture(scope="session")
def clean_image(docker_client) -> str:  # type: ignore[no-untyped-def]
    try:
        docker_client.images.get(CLEAN_IMAGE)
    except Exception:
        try:
            docker_client.images.pull(CLEAN_IMAGE)
        except Exception as exc:
            pytest.fail(f"{CLEAN_IMAGE} unavailable ({exc}); run scripts/setup-env.sh first")
    return CLEAN_IMAGE


def bundle_for_clean_image(
    project: Path, work: Path, cache: Path, signing_key: Path, clean_image: str
) -> dict[str, Any]:
    """``project`` bundled, signed, for the clean image's own profile (Debian 12's Python 3.11,
    this host's too, so the bundle also installs ``--to venv`` here), into ``work/out``."""
    probe = run_airgap("probe", "--image", clean_image, "-o", str(work / "profile.json"))
    assert probe.returncode == 0, probe.stderr
    return bundle(
        project,
        cache,
        "--profile",
        str(work / "profile.json"),
        "--host-wheelhouse",
        "--key",
        str(signing_key.with_suffix(".key")),
        "-o",
        str(work / "out"),
    )


@pytest.fixture(scope="session")
def clean_image_bundle(
    tmp_path_factory: pytest.TempPathFactory, project: Path, cache: Path, signing_key: Path, clean_image: str
) -> dict[str, Any]:
    """A real signed bundle of the example whose target profile is the clean image's own: its
    host wheelhouse is for Debian 12's Python 3.11, so it installs `--to venv` on this host too."""
    work = tmp_path_factory.mktemp("far-side")
    result = bundle_for_clean_image(project, work, cache, signing_key, clean_image)
    return {
        "bundle": Path(result["bundle"][0]),
        "staging": Path(result["staging"]),
        "record": result["record"],
        "public_key": signing_key.with_suffix(".pub"),
        "work": work,
    }


@pytest.fixture(scope="session")
def built_v110(
    project: Path, cache: Path, signing_key: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Version 1.1.0 of the example, signed by the same key: the upgrade every far-side suite
    installs over 1.0.0 (bundled once per session)."""
    src = tmp_path_factory.mktemp("v110") / "tabular"
    shutil.copytree(project, src, ignore=shutil.ignore_patterns("build"))
    (src / "airgap.yaml").write_text(
        (src / "airgap.yaml").read_text().replace('version: "1.0.0"', 'version: "1.1.0"')
    )
    return Path(bundle(src, cache, "--key", str(signing_key.with_suffix(".key")))["bundle"][0])


# --- a model saved with ONNX external data (tests/external_models.py), bundled once -----------------


@pytest.fixture(scope="session")
def external_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model (graph + 3.5 MiB data file), saved once per session."""
    return external_models.save_external_model(tmp_path_factory.mktemp("external-model") / "model").parent


@pytest.fixture(scope="session")
def external_bundle(
    tmp_path_factory: pytest.TempPathFactory,
    external_model: Path,
    cache: Path,
    signing_key: Path,
    clean_image: str,
    base_image: str,
) -> dict[str, Any]:
    """The model directory bundled once, for the clean image's Python (so it installs to a venv here)."""
    work = tmp_path_factory.mktemp("external-far-side")
    project = external_models.external_project(work, base_image, external_model)
    result = bundle_for_clean_image(project, work, cache, signing_key, clean_image)
    return {
        "bundle": Path(result["bundle"][0]),
        "record": result["record"],
        "staging": Path(result["staging"]),
    }
