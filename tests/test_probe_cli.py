"""`airgap probe` as a user meets it: the real CLI in a subprocess, real interpreters, real engines."""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airgap.core.profile import Profile
from airgap.core.tags import compute_tags
from tests.conftest import assert_one_line_error, find_python, run_airgap, sys_tags_of


def test_probe_writes_a_versioned_profile_with_every_section(tmp_path: Path) -> None:
    out = tmp_path / "site.json"
    proc = run_airgap("probe", "-o", str(out), "--path", str(tmp_path), "--egress-check", "none")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["schema"] == "airgap.target-profile/v1"
    for section in (
        "host",
        "pythons",
        "libc",
        "cpu",
        "memory",
        "disk",
        "fips",
        "security_modules",
        "container_runtimes",
        "kubernetes",
        "gpu",
        "network",
    ):
        assert section in data, section
    assert data["disk"][0]["path"] == str(tmp_path) and data["disk"][0]["free_bytes"] > 0
    assert data["libc"]["family"] == "glibc"
    assert set(data["container_runtimes"]) == {"docker", "podman", "containerd", "crictl"}
    assert data["cpu"]["count"] >= 1 and isinstance(data["cpu"]["flags"], dict)


def test_probe_json_mode_prints_profile_and_warnings_for_machines(tmp_path: Path) -> None:
    proc = run_airgap("--json", "probe", "-o", str(tmp_path / "p.json"), "--egress-check", "none")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["profile"]["schema"] == "airgap.target-profile/v1"
    assert doc["sha256"] == Profile.from_json((tmp_path / "p.json").read_bytes()).digest
    assert isinstance(doc["warnings"], list)


def test_exported_script_is_python_3_6_and_its_profile_round_trips(tmp_path: Path) -> None:
    script = tmp_path / "airgap-probe.py"
    assert run_airgap("probe", "--export-script", str(script)).returncode == 0
    src = script.read_text()
    ast.parse(src, feature_version=(3, 6))
    assert "import airgap" not in src and "from airgap" not in src
    py36 = find_python("3.6")
    assert py36, "python3.6 (RHEL 8's python3) must be on the test machine; pyenv provides it"
    out = tmp_path / "site.json"
    # Run it as a reviewer would on a bare host: no airgap, no site-packages, only the file.
    proc = subprocess.run(
        [py36, "-I", str(script), "-o", str(out), "--egress-check", "none"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["collector_python"].startswith("3.6")
    shown = run_airgap("--json", "profile", str(out))
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    prof = Profile.from_json(out.read_bytes())
    assert doc["sha256"] == prof.digest
    host_py = next(p for p in doc["pythons"] if p["path"] == prof.primary_python().path)
    assert host_py["tags"] == [str(t) for t in compute_tags(prof.primary_python())]


def test_exported_script_profile_equals_the_builtin_probe_in_shape(tmp_path: Path) -> None:
    script = tmp_path / "probe.py"
    run_airgap("probe", "--export-script", str(script))
    proc = subprocess.run(
        [sys.executable, "-I", str(script), "--egress-check", "none"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    exported = json.loads(proc.stdout)
    builtin = json.loads(
        run_airgap("--json", "probe", "-o", str(tmp_path / "b.json"), "--egress-check", "none").stdout
    )["profile"]
    assert set(builtin) - {"source"} == set(exported)


def _stopped_docker_socket(tmp_path: Path) -> str:
    """What a stopped dockerd leaves behind: a socket file nobody listens on."""
    path = tmp_path / "docker.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()
    return f"unix://{path}"


def test_probe_with_docker_stopped_and_no_route_out_finishes_fast_and_says_so(tmp_path: Path) -> None:
    out = tmp_path / "gap.json"
    env = dict(os.environ, DOCKER_HOST=_stopped_docker_socket(tmp_path))
    started = time.monotonic()
    # A fresh network namespace has only a down loopback: no DNS, no route, as on a real air gap.
    proc = subprocess.run(
        ["unshare", "--net", sys.executable, "-m", "airgap", "probe", "-o", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert took < 10, f"probe took {took:.1f}s"
    data = json.loads(out.read_text())
    docker = data["container_runtimes"]["docker"]
    assert docker["daemon_answers"] is False and docker["usable_by_user"] is False
    net = data["network"]
    assert net["dns"]["resolves"] is False
    assert net["tcp"]["connects"] is False
    assert net["egress_blocked"] is True
    assert "egress-open" not in proc.stdout


def test_a_hung_runtime_cannot_stall_the_probe(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("docker", "podman", "kubectl"):
        tool = bindir / name
        tool.write_text("#!/bin/sh\nsleep 120\n")
        tool.chmod(0o755)
    env = {"PATH": f"{bindir}:{os.environ['PATH']}"}
    started = time.monotonic()
    proc = run_airgap("probe", "-o", str(tmp_path / "p.json"), "--egress-check", "none", env=env)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 10
    data = json.loads((tmp_path / "p.json").read_text())
    assert "did not answer" in data["container_runtimes"]["docker"]["detail"]["unknown"]
    assert "did not answer" in data["kubernetes"]["kubectl"]["unknown"]


def test_probe_warns_when_egress_is_open(tmp_path: Path) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        proc = run_airgap(
            "--json", "probe", "-o", str(tmp_path / "p.json"), "--egress-check", f"127.0.0.1:{port}"
        )
    finally:
        server.close()
    codes = [w["code"] for w in json.loads(proc.stdout)["warnings"]]
    assert "egress-open" in codes


def test_bad_arguments_exit_2() -> None:
    assert run_airgap("probe", "--no-such-flag").returncode == 2
    assert run_airgap("probe", "--egress-check", "no-port-here").returncode == 2
    assert run_airgap("probe", "--budget", "0").returncode == 2
    assert run_airgap("no-such-command").returncode == 2


def test_unwritable_output_exits_5_with_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    target = tmp_path / "missing-dir" / "p.json"
    line = assert_one_line_error(run_airgap("probe", "-o", str(target), "--egress-check", "none"), 5)
    assert str(target) in line and "No such file or directory" in line
    if os.getuid() == 0:
        # root ignores directory modes; a read-only bind of /proc is a real unwritable place
        line = assert_one_line_error(
            run_airgap("probe", "-o", "/proc/airgap.json", "--egress-check", "none"), 5
        )
    else:
        locked.chmod(0o500)
        line = assert_one_line_error(
            run_airgap("probe", "-o", str(locked / "p.json"), "--egress-check", "none"), 5
        )
    assert "cannot write" in line
    assert list(locked.iterdir()) == []


def test_verbose_shows_the_traceback_only_when_asked(tmp_path: Path) -> None:
    proc = run_airgap("--verbose", "probe", "-o", str(tmp_path / "nope" / "p.json"), "--egress-check", "none")
    assert proc.returncode == 5 and "Traceback" in proc.stderr


def test_a_file_that_is_not_a_profile_exits_4(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "something-else"}))
    line = assert_one_line_error(run_airgap("profile", str(bad)), 4)
    assert "not an airgap target profile" in line
    bad.write_text("{not json")
    assert_one_line_error(run_airgap("profile", str(bad)), 4)
    assert_one_line_error(run_airgap("profile", str(tmp_path / "absent.json")), 4)


def test_a_profile_with_a_tampered_python_entry_names_the_field(tmp_path: Path) -> None:
    good = json.loads(
        run_airgap("--json", "probe", "-o", str(tmp_path / "p.json"), "--egress-check", "none").stdout
    )
    prof = good["profile"]
    prof["pythons"][0]["markers"].pop("python_full_version")
    (tmp_path / "t.json").write_text(json.dumps(prof))
    line = assert_one_line_error(run_airgap("profile", str(tmp_path / "t.json")), 4)
    assert "pythons[0].markers lacks python_full_version" in line


def test_version_and_help_on_every_command() -> None:
    assert run_airgap("--version").stdout.startswith("airgap ")
    for cmd in (["--help"], ["probe", "--help"], ["profile", "--help"]):
        proc = run_airgap(*cmd)
        assert proc.returncode == 0 and "Usage" in proc.stdout


def test_python_dash_m_and_console_script_agree() -> None:
    import shutil

    exe = shutil.which("airgap")
    assert exe, "the airgap console script must be installed (pip install -e .)"
    assert (
        subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
        == run_airgap("--version").stdout
    )


@pytest.mark.docker
def test_image_probe_tags_equal_sys_tags_inside_the_container(
    base_image: str, docker_client, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "base.json"
    proc = run_airgap("probe", "--image", base_image, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    prof = Profile.from_json(out.read_bytes())
    assert prof.source["kind"] == "image" and prof.source["image"] == base_image
    py = prof.primary_python()
    computed = [str(t) for t in compute_tags(py)]
    # Oracle: packaging's sys_tags() run by the container's own python3, packaging mounted read-only.
    from tests.conftest import packaging_dir

    inside = sys_tags_of(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "--read-only",
            "-v",
            f"{packaging_dir()}/packaging:/oracle/packaging:ro",
            base_image,
            "python3",
        ],
        pkg_dir="/oracle",
    )
    assert computed == inside
    assert prof.libc is not None and prof.libc.family == "glibc"


@pytest.mark.docker
def test_image_probe_runs_without_network_and_leaves_no_container(
    base_image: str, docker_client, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    before = {c.id for c in docker_client.containers.list(all=True)}
    proc = run_airgap("--json", "probe", "--image", base_image, "-o", str(tmp_path / "b.json"))
    assert proc.returncode == 0, proc.stderr
    net = json.loads(proc.stdout)["profile"]["network"]
    assert net["egress_check"] is None
    assert {c.id for c in docker_client.containers.list(all=True)} == before


@pytest.mark.docker
def test_image_that_does_not_exist_says_where_it_looked(docker_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    line = assert_one_line_error(
        run_airgap(
            "probe", "--image", "127.0.0.1:5000/airgap/no-such-image:1", "-o", str(tmp_path / "x.json")
        ),
        4,
    )
    assert "127.0.0.1:5000" in line
    assert not (tmp_path / "x.json").exists()
