"""The whole journey of one large external-data model, each phase against what a user would do by hand:

    python benchmarks/big_model.py [--size-gb 10] [--dir DIR] [--keep] [--no-venv] [--json]

A seeded model of ``--size-gb`` GB is written first: ``model.onnx`` (the graph) and
``model.onnx.data`` (float32 initializers of at most 1 GB each, stored as ONNX external data,
streamed from ``numpy.random.default_rng(--seed)`` so that making it costs no memory). Every large
initializer meets the input in a MatMul, so onnxruntime must load and keep each of them as it
would a real model's weights and every answer depends on every byte (0.25 G multiply-adds per
row and GB: cheap at these sizes).
Then the flow of scripts/demo.sh runs on it, each phase timed beside its reference, measured in
the same run on the same bytes (ratio = reference seconds / airgap seconds; above 1, airgap is
faster):

- bundle: `airgap bundle --profile --host-wheelhouse --key --part-size` against `zstd -T0 -3`
  of model.onnx.data and `docker save` of the image a team would carry by hand: the server image
  with the model baked in (`COPY` of the model directory, built by the engine);
- copy: `airgap copy` (writes, flushes and reads back every part) against `cp` of the parts + `sync`;
- verify: `airgap verify` (signature, structure, every byte) against `openssl dgst -sha256` of
  the parts;
- install-docker: `airgap install --to docker` (verify, extract, load, run hardened, golden
  inputs) against `docker load -i` of that image-with-the-model's `docker save` archive;
- install-venv: `airgap install --to venv` against `python -m venv` + `pip install --no-index
  --require-hashes` of the host wheelhouse + `cp -r` of the model;
- smoke: `airgap smoke` of each install (docker: then one HTTP prediction, checked against
  numpy on the same weights);
- serve-venv: `airgap serve` of the venv install, from start to its first right answer, against
  a Python script that opens an onnxruntime InferenceSession on the same model (pre-packing off,
  as the server turns it off for a model of 1 GiB or more) and runs it once.

For every airgap command: the peak RSS of its process tree (the sum of VmRSS over the command and
its descendants, polled every 50 ms; the Docker daemon and containers are not its descendants),
how much of it was anonymous (RssAnon: not the pages of a mapped file), the phase it peaked in,
the largest single process (VmHWM, with its name); the peak extra disk (the least free space of
the work directory's filesystem during the phase, against before it: Docker's storage counts
when it is on that filesystem, other work on the machine adds noise) and the work directory's
own growth. copy and verify are best of ``--repeat`` alternating runs, after the parts were read
once; bundle and install run once (the image is removed from the engine before `docker load` and
before `airgap install`).

Refuses to start with less than 5x ``--size-gb`` free, and warns below what the whole run took
at once at 2 GB (``NEED_FACTOR``: the model sits in the project, the staging directory, twice in
the bundle, twice in its copy, in the far side's content store and in Docker's images). Exit 1,
naming the command, when an airgap command fails. The work directory, and the images, installs
and cached layers made here, are removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

AIRGAP = [sys.executable, "-m", "airgap"]
PASS = "benchmark passphrase"
NAME = "big-model-bench"
VERSION = "1.0.0"
COLS = 1024  # the input's width and each large initializer's rows: every offset is 4 KiB-aligned
FEATURES = 4  # the input columns the small path reads
OUTPUTS = 3
MAX_INIT = 10**9  # bytes per large initializer
POLL = 0.05
NEED_FACTOR = 12  # free space the whole run took at once, as a multiple of the model (11.5 at 2 GB)
LEAST_FREE = [1 << 62]  # the least free space seen in any phase: what the whole run needed at once


def _rows(seed: int, count: int) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    return [[round(float(v), 3) for v in row] for row in rng.uniform(-1, 1, (count, COLS))]


GOLDEN = {
    "cases": [
        {"name": "one_row", "inputs": {"x": _rows(1, 1)}},
        {"name": "two_rows", "inputs": {"x": _rows(2, 2)}},
    ]
}
PREDICT = _rows(3, 1)


class Failed(Exception):
    """An airgap command (or a reference) failed: the message is the line to print."""


# --- the model and the project ---------------------------------------------------------------------


@dataclass
class Model:
    """What was written, and what the model must answer (computed here from the same bytes)."""

    directory: Path
    data_bytes: int
    initializers: int
    small: np.ndarray
    row_means: np.ndarray  # per input column, the sum over the large initializers of its row's mean

    def expected(self, x: list[list[float]]) -> np.ndarray:
        xs = np.asarray(x, np.float64)
        answer: np.ndarray = xs[:, :FEATURES] @ self.small + (xs @ self.row_means)[:, None]
        return answer


def make_model(directory: Path, size: int, seed: int) -> Model:
    """``model.onnx`` + ``model.onnx.data`` of about ``size`` bytes, written in 64 MiB chunks.

    Each large initializer W is [1024, n] and meets the input in a MatMul (x [batch, 1024] @ W,
    then the mean over its n outputs): nothing can be folded away when the session is made, so a
    model server holds every weight as it would a real model's, and each answer touches every
    byte (about 0.25 G multiply-adds per row and GB)."""
    from onnx import TensorProto, helper, numpy_helper

    directory.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    small = rng.standard_normal((FEATURES, OUTPUTS)).astype(np.float32)
    total_cols = max(1, size // (COLS * 4))
    count = max(1, math.ceil(total_cols * COLS * 4 / MAX_INIT))
    widths = [total_cols // count + (1 if i < total_cols % count else 0) for i in range(count)]
    nodes = [
        helper.make_node("Slice", ["x", "zero", "features", "one"], ["xs"]),
        helper.make_node("MatMul", ["xs", "small"], ["h0"]),
    ]
    tensors = []
    row_means = np.zeros(COLS, np.float64)
    offset = 0
    with open(directory / "model.onnx.data", "wb") as fh:
        for i, n in enumerate(widths):
            chunk = max(1, (64 << 20) // (n * 4))
            for k in range(0, COLS, chunk):
                block = rng.standard_normal((min(chunk, COLS - k), n), dtype=np.float32)
                block *= np.float32(0.02)
                row_means[k : k + len(block)] += block.mean(axis=1, dtype=np.float64)
                fh.write(block.tobytes())
            t = TensorProto(name=f"w{i}", dims=[COLS, n], data_type=TensorProto.FLOAT)
            for key, value in (("location", "model.onnx.data"), ("offset", offset), ("length", COLS * n * 4)):
                t.external_data.add(key=key, value=str(value))
            t.data_location = TensorProto.EXTERNAL
            tensors.append(t)
            nodes.append(helper.make_node("MatMul", ["x", f"w{i}"], [f"p{i}"]))
            nodes.append(helper.make_node("ReduceMean", [f"p{i}"], [f"m{i}"], axes=[1], keepdims=1))
            nodes.append(
                helper.make_node("Add", [f"h{i}", f"m{i}"], ["y" if i == count - 1 else f"h{i + 1}"])
            )
            offset += COLS * n * 4
    graph = helper.make_graph(
        nodes,
        "big-external",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", COLS])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", OUTPUTS])],
        initializer=[
            *tensors,
            numpy_helper.from_array(small, "small"),
            numpy_helper.from_array(np.array([0], np.int64), "zero"),
            numpy_helper.from_array(np.array([FEATURES], np.int64), "features"),
            numpy_helper.from_array(np.array([1], np.int64), "one"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (directory / "model.onnx").write_bytes(model.SerializeToString())
    return Model(directory, offset, count, small.astype(np.float64), row_means)


def make_project(root: Path, size: int, seed: int, base_image: str) -> tuple[Path, Model]:
    """The example project's file with the large model as a model directory, golden inputs beside it.
    The container's memory limit grows with the model: onnxruntime holds a packed copy of every
    weight and, while it reads one, that initializer's mapped pages (2.9 GiB for 2 GB in two
    initializers here)."""
    project = root / "project"
    model = make_model(project / "model", size, seed)
    (project / "golden.json").write_text(json.dumps(GOLDEN))
    (project / "requirements.in").write_text("onnxruntime>=1.17\nnumpy>=1.24\n")
    limit_mi = math.ceil((size * 1.2 + MAX_INIT) / 2**20) + 1024
    (project / "airgap.yaml").write_text(
        f"name: {NAME}\n"
        f'version: "{VERSION}"\n'
        "model:\n"
        "  path: model\n"
        "  golden: golden.json\n"
        "requirements: requirements.in\n"
        f"base_image: {base_image}\n"
        "serving:\n"
        "  port: 8080\n"
        "  threads: 2\n"
        "resources:\n"
        "  requests: {cpu: 250m, memory: 256Mi}\n"
        f'  limits: {{cpu: "1", memory: {limit_mi}Mi}}\n'
        "policies:\n"
        "  fail_on: high\n"
    )
    return project, model


# --- measuring a command ----------------------------------------------------------------------------


@dataclass
class Run:
    """One command's wall seconds, its process tree's peak RSS and the phase's peak extra disk."""

    seconds: float
    tree_rss: int = 0  # bytes: the largest sum of VmRSS over the tree at one poll
    rss_at: float = 0.0  # seconds after the start when the tree's RSS peaked
    tree_anon: int = 0  # bytes: the same for RssAnon (what is not file pages, e.g. a mapped model)
    top_rss: int = 0  # bytes: the largest single process (VmHWM, or ru_maxrss of the reaped ones)
    top_name: str = ""
    extra_disk: int = 0  # bytes: the filesystem's free space, against before (all writers)
    work_disk: int = 0  # bytes: the work directory's own growth (hard links once), polled every 0.5 s
    stdout: str = ""
    stderr: str = ""


def _status(pid: int) -> dict[str, int] | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon"):
            out[key] = int(value.split()[0]) * 1024
    return out


def _tree(root: int) -> Iterator[int]:
    todo = [root]
    while todo:
        pid = todo.pop()
        yield pid
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            with contextlib.suppress(OSError):
                todo.extend(int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split())


def _comm(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in argv if a]
    if not words:
        return "?"
    words[0] = Path(words[0]).name
    if len(words) >= 3 and words[1] == "-m":
        rest = [w for w in words[3:] if not w.startswith("-")][:1]
        return " ".join([words[2], *rest])
    if len(words) >= 2 and words[1] == "-c":
        return f"{words[0]} -c"
    return " ".join([words[0], *(Path(w).name for w in words[1:2])])[:40]


def dir_bytes(root: Path) -> int:
    """Bytes allocated under ``root``, each inode counted once (the content store hard-links)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for top, dirs, files in os.walk(root):
        for name in files + dirs:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(top, name))
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
    return total


def _mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def measure(
    argv: list[str],
    where: Path,
    log: Path,
    env: dict[str, str] | None = None,
    until: Callable[[], bool] | None = None,
    limit: float = 3600.0,
) -> Run:
    """Runs ``argv`` to the end, polling its process tree and the free space of ``where``'s
    filesystem every 50 ms. Raises ``Failed`` (with the tail of its stderr) if it fails.
    With ``until`` (a server): the time until ``until()`` is true, then SIGTERM, which must end
    it with 0; it fails if it exits first or ``limit`` seconds pass."""
    free_before = _free(where)
    least_free = free_before
    work_before = dir_bytes(where)
    run = Run(0.0)
    polls = 0
    with open(log, "ab") as err, tempfile.TemporaryFile() as out:
        err.write(f"$ {' '.join(argv)}\n".encode())
        err.flush()
        mark = err.tell()
        started = time.monotonic()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        answered = None
        while True:
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
            if pid:
                break
            if until is not None and answered is None:
                if until():
                    answered = time.monotonic() - started
                    proc.send_signal(signal.SIGTERM)
                elif time.monotonic() - started > limit:
                    proc.kill()
            rss = anon = 0
            for p in _tree(proc.pid):
                s = _status(p)
                if not s:
                    continue
                rss += s.get("VmRSS", 0)
                anon += s.get("RssAnon", 0)
                if s.get("VmHWM", 0) > run.top_rss:
                    run.top_rss, run.top_name = s["VmHWM"], _comm(p)
            if rss > run.tree_rss:
                run.tree_rss, run.rss_at = rss, time.monotonic() - started
            run.tree_anon = max(run.tree_anon, anon)
            least_free = min(least_free, _free(where))
            LEAST_FREE[0] = min(LEAST_FREE[0], least_free)
            polls += 1
            if polls % 10 == 0:
                run.work_disk = max(run.work_disk, dir_bytes(where) - work_before)
            time.sleep(POLL)
        run.seconds = time.monotonic() - started if answered is None else answered
        proc.returncode = os.waitstatus_to_exitcode(status)
        if until is not None and answered is None and proc.returncode == 0:
            proc.returncode = -1  # a server that ended by itself before it answered
        least_free = min(least_free, _free(where))
        # (not wait4's ru_maxrss: a forked child inherits this process's high-water mark)
        run.work_disk = max(run.work_disk, dir_bytes(where) - work_before)
        run.tree_rss = max(run.tree_rss, run.top_rss)
        run.extra_disk = max(0, free_before - least_free)
        out.seek(0)
        run.stdout = out.read().decode(errors="replace")
    with open(log, "rb") as fh:
        fh.seek(mark)
        run.stderr = fh.read().decode(errors="replace")
    if proc.returncode != 0:
        tail = run.stderr.strip().splitlines()[-6:]
        raise Failed(f"`{_short(argv)}` failed (exit {proc.returncode}): " + " | ".join(tail))
    return run


def _short(argv: list[str]) -> str:
    words = ["airgap", *argv[len(AIRGAP) :]] if argv[: len(AIRGAP)] == AIRGAP else list(argv)
    return " ".join(w if len(w) < 50 else "…/" + Path(w).name for w in words)


def sh(argv: list[str], env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    """A setup or clean-up step that must succeed; its output."""
    proc = subprocess.run(argv, env=env, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise Failed(f"`{_short(argv)}` failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}")
    return proc.stdout


def warm(paths: list[Path]) -> None:
    for p in paths:
        with open(p, "rb") as fh:
            while fh.read(16 << 20):
                pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the report --------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table: an airgap phase beside one reference (phases may have several)."""

    phase: str
    command: str
    run: Run
    bytes: int
    reference: str = "none"
    reference_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def doc(self) -> dict[str, Any]:
        ratio = self.reference_seconds / self.run.seconds if self.reference_seconds is not None else None
        return {
            "phase": self.phase,
            "command": self.command,
            "seconds": round(self.run.seconds, 2),
            "reference": self.reference,
            "reference_seconds": None if self.reference_seconds is None else round(self.reference_seconds, 2),
            "ratio": None if ratio is None else round(ratio, 3),
            "peak_rss_mib": round(self.run.tree_rss / 2**20, 1),
            "peak_rss_anon_mib": round(self.run.tree_anon / 2**20, 1),
            "largest_process_rss_mib": round(self.run.top_rss / 2**20, 1),
            "largest_process": self.run.top_name,
            "peak_rss_in_phase": phase_at(self.run.stderr, self.run.rss_at),
            "peak_extra_disk_gib": round(self.run.extra_disk / 2**30, 2),
            "peak_work_dir_growth_gib": round(self.run.work_disk / 2**30, 2),
            "bytes": self.bytes,
            **self.extra,
        }


def table(rows: list[Row]) -> str:
    head = (
        f"{'phase':<17}{'airgap s':>9}  {'reference':<36}{'ref s':>8}{'ratio':>7}"
        f"{'RSS MiB':>8}{'anon':>6}{'disk GiB':>9}{'work':>6}{'GB':>6}  largest process (MiB)"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        d = r.doc()
        ref_s = "-" if d["reference_seconds"] is None else f"{d['reference_seconds']:.2f}"
        ratio = "-" if d["ratio"] is None else f"{d['ratio']:.2f}"
        lines.append(
            f"{d['phase']:<17}{d['seconds']:>9.2f}  {d['reference']:<36}{ref_s:>8}{ratio:>7}"
            f"{d['peak_rss_mib']:>8.0f}{d['peak_rss_anon_mib']:>6.0f}{d['peak_extra_disk_gib']:>9.2f}"
            f"{d['peak_work_dir_growth_gib']:>6.2f}{d['bytes'] / 1e9:>6.2f}  "
            f"{d['largest_process']} ({d['largest_process_rss_mib']:.0f})"
            + (f", tree peak in {d['peak_rss_in_phase']}" if d["peak_rss_in_phase"] else "")
        )
    return "\n".join(lines)


# --- the journey -------------------------------------------------------------------------------------


class Bench:
    """The work directory, the environment of every airgap command and what it made, to clean up."""

    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        self.work = work
        self.args = args
        self.env = dict(os.environ, AIRGAP_KEY_PASSPHRASE=PASS)
        self.log = work / "commands.log"
        self.state = work / "far-side" / "state"
        self.rows: list[Row] = []
        self.facts: dict[str, Any] = {}
        self.images: set[str] = set()
        self.layers: set[str] = set()
        self.cache = Path(os.environ.get("AIRGAP_CACHE_DIR") or Path.home() / ".cache" / "airgap")
        blobs = self.cache / "layers" / "blobs"
        self.cached_before = set(os.listdir(blobs)) if blobs.is_dir() else set()
        self.installed: list[str] = []

    def airgap(self, *words: str) -> Run:
        return measure([*AIRGAP, *words], self.work, self.log, self.env)

    def ref(self, argv: list[str]) -> Run:
        return measure(argv, self.work, self.log, self.env)

    def best(
        self, first: list[str], second: list[str], before: Callable[[int], None] | None = None
    ) -> tuple[Run, Run]:
        """Best of ``--repeat`` alternating runs of the two commands (the peaks: the largest);
        ``before(0)`` or ``before(1)`` runs before each run of the first or the second."""
        a: list[Run] = []
        b: list[Run] = []
        for _ in range(self.args.repeat):
            for i, (argv, runs) in enumerate(((first, a), (second, b))):
                if before is not None:
                    before(i)
                runs.append(measure(argv, self.work, self.log, self.env))
        return _best(a), _best(b)

    def run(self) -> None:
        args, work = self.args, self.work
        size = int(args.size_gb * 1e9)
        started = time.monotonic()
        project, model = make_project(work, size, args.seed, args.base_image)
        self.model = model
        self.facts.update(
            model_seconds=round(time.monotonic() - started, 1),
            model_data_bytes=model.data_bytes,
            initializers=model.initializers,
            seed=args.seed,
        )
        ws, media = work / "workstation", work / "media"
        ws.mkdir()
        media.mkdir()
        sh([*AIRGAP, "keys", "generate", "-o", str(ws / "publisher")], self.env)
        profile = work / "far-side" / "target-profile.json"
        profile.parent.mkdir()
        sh([*AIRGAP, "probe", "-o", str(profile)], self.env)

        # bundle
        b = self.airgap(
            "--json", "bundle", str(project), "--profile", str(profile), "--host-wheelhouse",
            "--output", str(ws), "--key", str(ws / "publisher.key"), "--part-size", args.part_size,
            "--expires", "90d",
        )  # fmt: skip
        doc = json.loads(b.stdout)
        staging = Path(doc["staging"])
        files = [Path(p) for p in doc["bundle"]]
        index = next((p for p in files if p.name.endswith(".parts.sha256")), files[0])
        parts = [p for p in files if ".part-" in p.name] or [index]
        carried = files  # everything the bundle command wrote, as demo.sh carries it
        bundle_bytes = sum(p.stat().st_size for p in carried)
        record = json.loads((staging / "build.json").read_text())
        image = record["image"]
        tag = image["tag"]
        engine_id = sh(["docker", "image", "inspect", "-f", "{{.Id}}", tag]).strip()
        self.images.update((engine_id, image["config_digest"]))
        self.layers.update(x["digest"] for x in image["layers"])
        data = model.directory / "model.onnx.data"
        zst = work / "ref-model.onnx.data.zst"
        z = self.ref(["zstd", "-q", "-T0", "-3", "-f", str(data), "-o", str(zst)])
        self.facts["zstd_ratio"] = round(zst.stat().st_size / data.stat().st_size, 4)
        zst.unlink()
        # The by-hand way a team carries a model: baked into its image (the server image plus a
        # COPY of the model, built by the engine), `docker save` here and `docker load` there.
        baked = f"airgap-bench-baked/{NAME}:{record['version']}"
        sh(
            ["docker", "build", "-q", "-t", baked, "-f", "-", str(staging / "model")],
            self.env,
            stdin=f"FROM {engine_id}\nCOPY . /opt/airgap/model/\n",
        )
        self.images.add(sh(["docker", "image", "inspect", "-f", "{{.Id}}", baked]).strip())
        saved = work / "ref-docker-save.tar"
        s = self.ref(["docker", "save", "-o", str(saved), baked])
        saved_bytes = saved.stat().st_size
        self.facts.update(
            bundle_files=len(carried), image_archive_bytes=saved_bytes, bundle_phases=phases(b.stderr)
        )
        cmd = "airgap bundle --profile --host-wheelhouse --key --part-size " + args.part_size
        self.rows.append(Row("bundle", cmd, b, bundle_bytes, "zstd -T0 -3 model.onnx.data", z.seconds))
        self.rows.append(Row("bundle", cmd, b, bundle_bytes, "docker save IMAGE+MODEL -o FILE", s.seconds))

        # copy
        dest, ref_dest = media / "usb", media / "cp"
        pub = ws / "publisher.pub"
        warm(carried)

        def empty(which: int) -> None:  # airgap copy keeps parts already there: start from nothing
            shutil.rmtree((dest, ref_dest)[which], ignore_errors=True)
            ref_dest.mkdir(parents=True, exist_ok=True)

        cp = ["sh", "-c", 'cp "$@" && sync', "cp", *map(str, carried), str(ref_dest)]
        c, r = self.best([*AIRGAP, "copy", str(index), str(dest), "--key", str(pub)], cp, before=empty)
        shutil.rmtree(ref_dest)
        self.rows.append(Row("copy", "airgap copy", c, bundle_bytes, "cp PARTS DEST && sync", r.seconds))
        bundle = dest / index.name

        # verify
        sh([*AIRGAP, "keys", "trust", str(pub), "--state-dir", str(self.state)], self.env)
        on_media = sorted(dest / p.name for p in parts)
        warm(on_media)
        v, o = self.best(
            [*AIRGAP, "verify", str(bundle), "--state-dir", str(self.state)],
            ["openssl", "dgst", "-sha256", *map(str, on_media)],
        )
        self.rows.append(
            Row("verify", "airgap verify", v, bundle_bytes, "openssl dgst -sha256 PARTS", o.seconds)
        )

        # install to docker, against docker load of the docker save archive
        archive = saved  # the image with the model baked in, as `docker save` wrote it
        self.forget_images()
        warm([archive])
        load = self.ref(["docker", "load", "-i", str(archive)])
        self.forget_images()
        archive.unlink()
        port = free_port()
        self.installed.append("docker")
        i = self.airgap(
            "--json",
            "install",
            str(bundle),
            "--to",
            "docker",
            "--port",
            str(port),
            "--state-dir",
            str(self.state),
        )
        self.rows.append(
            Row("install-docker", "airgap install --to docker", i, bundle_bytes,
                "docker load -i IMAGE+MODEL.tar", load.seconds, {"image_archive_bytes": saved_bytes})
        )  # fmt: skip
        self.smoke("docker", port)
        self.facts.update(image_tag=tag, install_docker_phases=phases(i.stderr))
        # the container holds the model in memory: stop it before the venv server loads it again
        u = self.airgap("uninstall", NAME, "--to", "docker", "--state-dir", str(self.state))
        self.installed.remove("docker")
        self.rows.append(Row("uninstall-docker", "airgap uninstall --to docker", u, 0))

        if not args.no_venv:
            vport = free_port()
            by_hand = work / "ref-venv"
            script = (
                'set -e; "$1" -m venv "$2"; "$2/bin/pip" -q install --no-index --require-hashes '
                '--find-links "$3/host/wheels" -r "$3/host/requirements.lock"; cp -r "$3/model" "$2/model"'
            )
            hand = self.ref(["sh", "-c", script, "venv", sys.executable, str(by_hand), str(staging)])
            shutil.rmtree(by_hand)
            self.installed.append("venv")
            iv = self.airgap(
                "--json", "install", str(bundle), "--to", "venv", "--port", str(vport),
                "--state-dir", str(self.state),
            )  # fmt: skip
            self.rows.append(
                Row("install-venv", "airgap install --to venv", iv, bundle_bytes,
                    "venv + pip install --no-index + cp -r", hand.seconds)
            )  # fmt: skip
            self.smoke("venv", None)  # a venv install runs no server: the smoke test runs the model
            self.serve_venv(vport)

    def smoke(self, target: str, port: int | None) -> None:
        """`airgap smoke`, then (with a port: a running server) one prediction over HTTP,
        compared with numpy on the same weights."""
        sm = self.airgap("smoke", NAME, "--to", target, "--state-dir", str(self.state))
        extra: dict[str, Any] = {}
        if port is not None:
            started = time.monotonic()
            got = self.predict(port)
            if got is None:
                raise Failed(f"{target}: the installed model does not answer on port {port}")
            extra = {"prediction_seconds": round(time.monotonic() - started, 3), "prediction": got.tolist()}
        self.rows.append(Row(f"smoke-{target}", "airgap smoke", sm, 0, extra=extra))

    def predict(self, port: int) -> np.ndarray | None:
        """One prediction over HTTP (None if nothing answers), checked against numpy."""
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/predict",
            data=json.dumps({"inputs": {"x": PREDICT}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            answer = json.loads(urllib.request.urlopen(req, timeout=60).read())
        except OSError:
            return None
        got = np.asarray(answer["outputs"]["y"], np.float32)
        want = self.model.expected(PREDICT)
        if not np.allclose(got, want, rtol=1e-4, atol=1e-5):
            raise Failed(f"the installed model answered {got.tolist()}, numpy says {want.tolist()}")
        return got

    def serve_venv(self, port: int) -> None:
        """`airgap serve` of the virtualenv install, from start to its first right answer (then
        SIGTERM), against onnxruntime loading the same model and answering once in a script."""
        script = (
            "import sys, numpy as np, onnxruntime as ort\n"
            "o = ort.SessionOptions()\n"
            # as the server does for a model this size: pre-packing would copy every weight
            "o.add_session_config_entry('session.disable_prepacking', '1')\n"
            "s = ort.InferenceSession(sys.argv[1], sess_options=o, providers=['CPUExecutionProvider'])\n"
            f"s.run(None, {{'x': np.array({PREDICT!r}, np.float32)}})\n"
        )
        graph = self.model.directory / "model.onnx"
        warm([self.model.directory / "model.onnx.data"])
        ref = self.ref([sys.executable, "-c", script, str(graph)])
        run = measure(
            [*AIRGAP, "serve", NAME, "--port", str(port), "--state-dir", str(self.state)],
            self.work,
            self.log,
            self.env,
            until=lambda: self.predict(port) is not None,
            limit=600,
        )
        self.rows.append(
            Row("serve-venv", "airgap serve (to 1st answer)", run, self.model.data_bytes,
                "python: ort session (no prepack) + run", ref.seconds,
                {"reference_peak_rss_mib": round(ref.tree_rss / 2**20, 1)})
        )  # fmt: skip

    def forget_images(self) -> None:
        """Removes the model image this run built or loaded (by its ids; nothing else)."""
        for image_id in self.images:
            subprocess.run(["docker", "rmi", "-f", image_id], capture_output=True, check=False)

    def forget_cached_layers(self) -> None:
        """`bundle` keeps every converted layer in the user's cache (CACHE/layers), the model's
        too: removes the blobs of this run's image that were not there before, and their records."""
        blobs = self.cache / "layers" / "blobs"
        added = 0
        for digest in self.layers:
            hexdigest = digest.split(":", 1)[1]
            if hexdigest in self.cached_before or not (blobs / hexdigest).exists():
                continue
            added += (blobs / hexdigest).stat().st_size
            (blobs / hexdigest).unlink()
            for record in (self.cache / "layers").glob("v*/*.json"):
                with contextlib.suppress(OSError, ValueError):
                    if json.loads(record.read_text()).get("digest") == digest:
                        record.unlink()
        self.facts["layer_cache_added_bytes"] = added

    def cleanup(self) -> None:
        for target in reversed(self.installed):
            subprocess.run(
                [*AIRGAP, "uninstall", NAME, "--to", target, "--state-dir", str(self.state)],
                capture_output=True,
                env=self.env,
                check=False,
            )
        self.forget_images()
        self.forget_cached_layers()


def phase_at(stderr: str, at: float) -> str:
    """The top-level phase an airgap command had started last ``at`` seconds after its start."""
    name, done = "", False
    for m in re.finditer(r"^\[\s*([\d.]+)s\] (\S[^:\n]*?)( \.\.\.|: done in .*)$", stderr, re.M):
        if float(m.group(1)) > at:
            break
        phase = re.sub(r" \(.*\)$", "", m.group(2))
        if m.group(3) == " ...":
            name, done = phase, False
        elif phase == name:
            done = True
    return f"after {name}" if name and done else name


def phases(stderr: str) -> dict[str, float]:
    """The top-level phases of an airgap command's progress lines (``[  4.5s] model image: done
    in 56.8s``), in seconds: where the time of a phase went."""
    out: dict[str, float] = {}
    for m in re.finditer(r"^\[\s*[\d.]+s\] (\S[^:\n]*): done in ([\d.]+)s", stderr, re.M):
        out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def _best(runs: list[Run]) -> Run:
    """The least time of several runs of one command, with the largest of their peaks."""
    best = min(runs, key=lambda r: r.seconds)
    top = max(runs, key=lambda r: r.top_rss)
    tree = max(runs, key=lambda r: r.tree_rss)
    return Run(
        seconds=best.seconds,
        tree_rss=tree.tree_rss,
        rss_at=tree.rss_at,
        tree_anon=max(r.tree_anon for r in runs),
        top_rss=top.top_rss,
        top_name=top.top_name,
        extra_disk=max(r.extra_disk for r in runs),
        work_disk=max(r.work_disk for r in runs),
        stdout=best.stdout,
        stderr=tree.stderr,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gb", type=float, default=10.0, help="model data size, decimal GB (10)")
    ap.add_argument("--dir", type=Path, default=None, help="where the work directory goes (default /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory, images and installs")
    ap.add_argument("--seed", type=int, default=20261205)
    ap.add_argument("--repeat", type=int, default=2, help="alternating runs of copy and verify (2)")
    ap.add_argument("--part-size", default="4G", help="media part size for bundle (4G: FAT32)")
    ap.add_argument("--base-image", default="127.0.0.1:5000/airgap/python-base:bookworm")
    ap.add_argument("--no-venv", action="store_true", help="skip install --to venv")
    ap.add_argument("--json", action="store_true", help="the JSON document on stdout (the table on stderr)")
    args = ap.parse_args()
    parent = args.dir or Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    need = 5 * args.size_gb * 1e9
    free = _free(parent)
    if free < need:
        print(
            f"big_model: refusing: {parent} has {free / 1e9:.1f} GB free, less than 5 x {args.size_gb:g} GB "
            f"= {need / 1e9:.1f} GB (the model, the image, the bundle, its copy and the install all "
            "take room at once)",
            file=sys.stderr,
        )
        return 1
    if free < NEED_FACTOR * args.size_gb * 1e9:
        print(
            f"big_model: warning: {free / 1e9:.1f} GB free; at 2 GB this run needed about "
            f"{NEED_FACTOR}x the model size at once (bundle, copy, installs and Docker's images)",
            file=sys.stderr,
        )
    available = _mem_available()
    if available < args.size_gb * 1e9 + 2 * MAX_INIT:
        print(
            f"big_model: warning: {available / 1e9:.1f} GB of memory available; onnxruntime holds the "
            f"whole model ({args.size_gb:g} GB) and a mapped initializer in `airgap bundle` (project "
            "phase), in the bundle's model contract container and in each model server",
            file=sys.stderr,
        )
    work = Path(tempfile.mkdtemp(prefix="airgap-big-model-", dir=parent))
    bench = Bench(work, args)
    code = 0
    try:
        bench.run()
    except Failed as e:
        print(f"big_model: {e}", file=sys.stderr)
        code = 1
    finally:
        if not args.keep:
            bench.cleanup()
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"big_model: kept {work} (log: {bench.log})", file=sys.stderr)
    facts = {
        "size_gb": args.size_gb,
        "peak_total_extra_disk_gb": round(max(0, free - LEAST_FREE[0]) / 1e9, 1),
        "cores": len(os.sched_getaffinity(0)),
        "load_average": round(os.getloadavg()[0], 1),
        "free_gb_at_start": round(free / 1e9, 1),
        **bench.facts,
    }
    # with --json the document goes to stdout and the table to stderr, so one run gives both
    text = sys.stderr if args.json else sys.stdout
    print(table(bench.rows), file=text)
    for k, v in facts.items():
        print(f"{k:<26}{v}", file=text)
    if args.json:
        print(
            json.dumps({"facts": facts, "phases": [r.doc() for r in bench.rows], "ok": code == 0}, indent=2)
        )
    return code


if __name__ == "__main__":
    raise SystemExit(main())
