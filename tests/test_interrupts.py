"""Interrupting `airgap bundle` (and pack) for real: SIGINT, SIGTERM and SIGHUP, at three phases.

Each run is stopped by a real signal while a chosen phase is running — found from the progress
lines `bundle` writes on stderr when it is not in a terminal. Afterwards: the documented exit
code (128 + the signal), one line saying so, no partial directory, no image the build made and
did not ship left dangling, no build container left, and the next run succeeds. A run killed
with SIGKILL cleans up nothing itself; the next run reclaims what it left.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pexpect
import pytest

from tests.bundles import make_key, pass_policy, synthetic_staging
from tests.conftest import EPOCH, PASSPHRASE, ROOT, message_lines, run_airgap
from tests.tty import run_tty

pytestmark = [pytest.mark.docker]

NAME = "kill-classifier"
ENV = {"AIRGAP_KEY_PASSPHRASE": PASSPHRASE, "SOURCE_DATE_EPOCH": EPOCH}
# Where to stop a bundle: the progress line that says the phase started, and how long after it.
PHASES = {
    "wheel resolution": (r"^\[\s*[\d.]+s\]\s+resolve\b", 1.5),
    "image build": (r"^\[\s*[\d.]+s\]\s+docker build \.\.\.", 6.0),
    # the image saved and being converted to the OCI layout that ships (packing itself, seconds
    # long here, is interrupted on its own below)
    "image conversion": (r"^\[\s*[\d.]+s\]\s+convert layers\b", 2.0),
}
SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM, "SIGHUP": signal.SIGHUP}


@pytest.fixture
def kill_project(tmp_path: Path) -> Path:
    """The example under its own name, with a build step that takes a while and is never cached."""
    dest = tmp_path / "kill"
    shutil.copytree(ROOT / "examples" / "tabular", dest, ignore=shutil.ignore_patterns("build"))
    template = (ROOT / "bundle_templates" / "Dockerfile.j2").read_text()
    stage2 = "# --- stage 2"
    assert stage2 in template
    # New last steps of the build stage (the wheelhouse install before them comes from the cache
    # the session's bundles keep warm): every run commits images of its own, and the build lasts.
    token = f'RUN echo "interrupt test {uuid.uuid4().hex}" > /tmp/token\n'
    template = template.replace(stage2, token + "RUN sleep 12\n\n" + stage2)
    (dest / "Dockerfile.j2").write_text(template)
    yaml = dest / "airgap.yaml"
    text = yaml.read_text().replace("name: tabular-classifier", f"name: {NAME}")
    yaml.write_text(text + "\nimage:\n  dockerfile_template: Dockerfile.j2\n")
    return dest


@pytest.fixture
def engine(docker_client: Any):  # type: ignore[no-untyped-def]
    """The engine, and afterwards the images this module tagged removed."""
    yield docker_client
    for image in docker_client.images.list(name=f"airgap/{NAME}"):
        for tag in image.tags:
            docker_client.images.remove(tag)


def dangling(client: Any) -> set[str]:
    return {i.id for i in client.images.list(filters={"dangling": True})}


def build_containers(client: Any) -> list[Any]:
    return list(client.containers.list(all=True, filters={"label": "io.airgap.role=build-step"}))


def run_until(
    argv: list[str], pattern: str, delay: float, sig: int, env: dict[str, str]
) -> tuple[int, str, str]:
    """Starts airgap, waits for a stderr line matching ``pattern``, waits ``delay``, sends ``sig``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "airgap", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    assert proc.stderr is not None and proc.stdout is not None
    seen: list[str] = []
    for line in proc.stderr:
        seen.append(line)
        if re.search(pattern, line):
            time.sleep(delay)
            proc.send_signal(sig)
            break
    else:
        proc.wait(timeout=60)
        pytest.fail(f"the phase never started ({pattern}):\n{''.join(seen)}")
    err = "".join(seen) + proc.stderr.read()
    out = proc.stdout.read()
    code = proc.wait(timeout=180)
    return code, out, err


def bundle_argv(project: Path, cache: Path, key: Path | None) -> list[str]:
    return ["bundle", str(project), "--cache-dir", str(cache), *(["--key", str(key)] if key else [])]


def assert_nothing_left(project: Path, client: Any, before: set[str]) -> None:
    build = project / "build"
    leftovers = (
        [p.name for p in build.iterdir() if ".partial-" in p.name or ".old-" in p.name]
        if build.exists()
        else []
    )
    assert leftovers == []
    assert dangling(client) <= before, "a dangling image was left behind"
    assert build_containers(client) == []


# Every signal is caught by the same handler; what differs is what each phase leaves to clean up.
# So each phase is interrupted by a different signal (all three are also proven during `pack`),
# and the next run after each must succeed.
@pytest.mark.parametrize(("phase", "sig_name"), list(zip(PHASES, SIGNALS)))
def test_signal_during_bundle_leaves_nothing_and_the_next_run_succeeds(
    phase: str, sig_name: str, kill_project: Path, cache: Path, signing_key: Path, engine: Any, tmp_path: Path
) -> None:
    sig = SIGNALS[sig_name]
    # A fresh cache makes resolution take seconds; the other phases use the warm shared cache.
    run_cache = tmp_path / "cold-cache" if phase == "wheel resolution" else cache
    key = signing_key.with_suffix(".key") if phase == "image conversion" else None
    before = dangling(engine)
    pattern, delay = PHASES[phase]

    code, _out, err = run_until(bundle_argv(kill_project, run_cache, key), pattern, delay, sig, ENV)

    assert code == 128 + sig, (code, err)
    # One line about the interrupt; besides it only what finished steps reported (images removed).
    lines = [ln for ln in message_lines(err) if not ln.startswith("removed ")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"airgap: interrupted by {sig_name};"), lines
    assert "Traceback" not in err
    assert re.search(r"interrupted after \d+\.\ds", err), err  # the phase line says where it stopped
    assert_nothing_left(kill_project, engine, before)
    if key is not None:
        assert not list((kill_project / "build").glob("*.airgap.tar*"))
    again = run_airgap(*bundle_argv(kill_project, cache, key), env=ENV, timeout=900)
    assert again.returncode == 0, again.stderr
    assert (kill_project / "build" / f"{NAME}-1.0.0" / "build.json").is_file()
    assert_nothing_left(kill_project, engine, before)


@pytest.mark.parametrize("phase", ["image build", "image conversion"])
def test_after_sigkill_the_next_run_reclaims_the_partial_directory_and_its_images(
    phase: str, kill_project: Path, cache: Path, signing_key: Path, engine: Any
) -> None:
    key = signing_key.with_suffix(".key") if phase == "image conversion" else None
    before = dangling(engine)
    pattern, delay = PHASES[phase]
    code, _, err = run_until(bundle_argv(kill_project, cache, key), pattern, delay, signal.SIGKILL, ENV)
    assert code == -signal.SIGKILL, err
    partial = [p for p in (kill_project / "build").iterdir() if ".partial-" in p.name]
    assert partial, "SIGKILL cannot clean up: this is what the next run must reclaim"

    again = run_airgap(*bundle_argv(kill_project, cache, key), env=ENV, timeout=900)
    assert again.returncode == 0, again.stderr
    assert f"reclaimed {partial[0].name} left by an interrupted earlier run" in again.stderr
    assert_nothing_left(kill_project, engine, before)


def test_ctrl_c_in_a_terminal_prints_one_line_and_exits_130(
    kill_project: Path, cache: Path, engine: Any
) -> None:
    before = dangling(engine)

    def press_ctrl_c_during_the_build(child: pexpect.spawn) -> None:
        child.expect("docker build", timeout=600)
        time.sleep(4)
        child.sendintr()  # the terminal's own Ctrl-C: SIGINT to the whole foreground process group

    screen = run_tty(
        "bundle",
        str(kill_project),
        "--cache-dir",
        str(cache),
        env=ENV,
        columns=120,
        interact=press_ctrl_c_during_the_build,
    )
    assert screen.exit_code == 130, screen.text
    assert "airgap: interrupted by SIGINT; nothing was written and partial work was removed" in screen.text
    assert "Traceback" not in screen.text and "Aborted" not in screen.text
    assert re.search(r"✗ docker build interrupted after", screen.text), screen.text
    assert_nothing_left(kill_project, engine, before)


def test_a_second_bundle_of_the_same_project_leaves_the_running_ones_directory_alone(
    kill_project: Path, cache: Path, engine: Any
) -> None:
    """Reclaiming must not take the partial directory of a run that is still going."""
    from tests.conftest import FOREIGN

    first = subprocess.Popen(
        [sys.executable, "-m", "airgap", "bundle", str(kill_project), "--cache-dir", str(cache)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **ENV},
    )
    assert first.stderr is not None
    for line in first.stderr:
        if "docker build ..." in line:
            break
    running = [p.name for p in (kill_project / "build").iterdir() if ".partial-" in p.name]
    assert len(running) == 1
    # The second run reclaims (after its project phase), then stops at the architecture check.
    second = run_airgap(
        "bundle", str(kill_project), "--profile", str(FOREIGN), "--cache-dir", str(cache), env=ENV
    )
    assert second.returncode == 1 and "AG-TGT-ARCH" in second.stderr, second.stderr
    assert "reclaimed" not in second.stderr
    assert (kill_project / "build" / running[0]).is_dir()
    rest = first.stderr.read()
    assert first.wait(timeout=600) == 0, rest
    assert (kill_project / "build" / f"{NAME}-1.0.0" / "build.json").is_file()


# --------------------------------------------------------------------------------------- pack
@pytest.mark.parametrize("sig_name", list(SIGNALS))
def test_signal_during_pack_exits_128_plus_n_and_writes_no_bundle(sig_name: str, tmp_path: Path) -> None:
    staging = synthetic_staging(tmp_path / "staging")
    # a few seconds of work: half-random text zstd makes smaller, so the hash phase compresses it
    (staging / "model" / "big.txt").write_text(os.urandom(150 * 1000 * 1000).hex())
    (staging / "build.json").write_text(
        f'{{"name": "demo", "version": "1.0.0", "source_date_epoch": {EPOCH}}}'
    )
    pass_policy(staging)
    make_key(tmp_path, "k")
    out = tmp_path / "out"
    code, _, err = run_until(
        ["pack", str(staging), "--key", str(tmp_path / "k.key"), "-o", str(out)],
        r"^\[\s*[\d.]+s\]\s+hash\b",
        0.3,
        SIGNALS[sig_name],
        ENV,
    )
    assert code == 128 + SIGNALS[sig_name], err
    assert len(message_lines(err)) == 1 and f"airgap: interrupted by {sig_name}" in err, err
    assert re.search(r"hash: interrupted after", err), err
    assert not out.exists() or list(out.iterdir()) == []


# ------------------------------------------------------------------------------ re-bundling
@pytest.fixture
def plain_project(tmp_path: Path) -> Path:
    dest = tmp_path / "plain"
    shutil.copytree(ROOT / "examples" / "tabular", dest, ignore=shutil.ignore_patterns("build"))
    yaml = dest / "airgap.yaml"
    yaml.write_text(yaml.read_text().replace("name: tabular-classifier", f"name: {NAME}"))
    return dest


def _bundle_at(project: Path, cache: Path, epoch: int, *extra: str) -> subprocess.CompletedProcess[str]:
    # The server image does not change with SOURCE_DATE_EPOCH (its runtime fixes it): the project's
    # own Dockerfile template carries the epoch as a label, so each run builds another image.
    template = (ROOT / "bundle_templates" / "Dockerfile.j2").read_text()
    (project / "Dockerfile.j2").write_text(
        template.replace("WORKDIR /tmp", f'LABEL test.run="{epoch}"\nWORKDIR /tmp')
    )
    yaml = project / "airgap.yaml"
    if "dockerfile_template" not in yaml.read_text():
        yaml.write_text(yaml.read_text() + "\nimage:\n  dockerfile_template: Dockerfile.j2\n")
    proc = run_airgap(
        "bundle",
        str(project),
        "--cache-dir",
        str(cache),
        *extra,
        env={**ENV, "SOURCE_DATE_EPOCH": str(epoch)},
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def test_rebundling_removes_the_replaced_image_and_says_so_unless_told_to_keep_it(
    plain_project: Path, cache: Path, engine: Any
) -> None:
    """Three bundles of one project, each with another label in its Dockerfile template (so another
    server image under the same tag): the second removes the first's image and says so; the third,
    with --keep-images, keeps the second's."""
    _bundle_at(plain_project, cache, 1700000000)
    before = dangling(engine)
    old = engine.images.get(f"airgap/{NAME}:1.0.0").id
    second = _bundle_at(plain_project, cache, 1700000100)
    new = engine.images.get(f"airgap/{NAME}:1.0.0").id
    assert new != old
    assert dangling(engine) <= before
    assert re.search(
        r"^removed \d+ image\(s\) the build made or replaced and did not ship", second.stderr, re.M
    )
    with pytest.raises(Exception, match="(?i)no such image|not found"):
        engine.images.get(old)
    # a CI log shows every phase start and end, with its duration
    for phase in ("project", "base image", "image wheelhouse", "model image", "save image", "oci image"):
        assert re.search(rf"^\[\s*[\d.]+s\] {phase} \.\.\.$", second.stderr, re.M), phase
        assert re.search(rf"^\[\s*[\d.]+s\] {phase}: done in \d+\.\ds", second.stderr, re.M), phase

    kept = _bundle_at(plain_project, cache, 1700000300, "--keep-images")
    try:
        assert "removed" not in kept.stderr
        assert engine.images.get(new).id == new
        assert engine.images.get(f"airgap/{NAME}:1.0.0").id != new
    finally:
        engine.images.remove(new)  # this test made it
