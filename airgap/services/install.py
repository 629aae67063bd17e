"""`airgap install`, `smoke`, `status`, `rollback`, `uninstall`: the far side.

An install is a journalled sequence of steps. Before any step the bundle is verified exactly as
`airgap verify` does; nothing is loaded or extracted before that passes. Content is then streamed
out of the bundle a second time into the state directory's content store, every file re-hashed
against the verified manifest on the way (the media may have changed in between). The journal
records what each step created, so a run killed at any point is undone cleanly by the next run
— the new container removed, the old one started again, a newly loaded image removed — before
that run does its own work. Only after the smoke test passes is the receipt committed; a failed
smoke test restores the previous version.

    verified → extracted → loaded → created → stopped-old → started → smoke-passed → committed
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import zstandard

from airgap.adapters.archive import TarReader
from airgap.adapters.fs import atomic_write_bytes, write_json
from airgap.adapters.oci import OciImage, docker_archive_stream
from airgap.adapters.runtimes import STATE_LABEL, ContainerSpec, PodmanRuntime, Runtime, port_in_use
from airgap.core import versions
from airgap.core.bundle_format import (
    CONTROL,
    MAX_ZSTD_WINDOW,
    ROOT,
    FileEntry,
    Manifest,
    check_build_record,
)
from airgap.core.smoke import Mismatch, compare_contract, summary
from airgap.errors import AnswerIsNo, EnvironmentFailure, IntegrityError, InvalidInputError, UsageError
from airgap.services.observer import NullObserver, Observer
from airgap.services.state import State
from airgap.services.verify import (
    UnsafeOptionWarning,
    VerifiedBundle,
    VerifyOptions,
    verify_and_audit,
)

TARGETS = ("docker", "podman", "podman-kube", "registry", "kubernetes", "venv")
Answers = tuple[dict[str, dict[str, Any]], dict[str, str]]  # outputs by case; why a case has none
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
FAULT_ENV = "AIRGAP_FAULT_INJECT"  # crash-recovery tests: "step" kills the process at that step
READY_TIMEOUT = 180.0
CHUNK = 1 << 20
LOG_LINES = 20  # of a model server that failed before it was ready, quoted in the error
CONTAINER_TARGETS = ("docker", "podman", "registry")


@dataclass
class Receipt:
    """What is installed for one (name, target): enough to check it, roll back to it, remove it."""

    name: str
    version: str
    target: str
    manifest_sha256: str
    key_id: str
    bundle: str
    installed_at: str
    content: str  # directory in the content store
    image_id: str | None = None
    container: str | None = None
    port: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Receipt:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})  # type: ignore[arg-type]


@dataclass(frozen=True)
class InstallOptions:
    target: str
    port: int | None = None
    registry: str | None = None
    insecure_registry: bool = False
    ca_bundle: Path | None = None
    kube_context: str | None = None
    namespace: str | None = None
    python: str | None = None
    allow_downgrade: bool = False
    allow_expired: bool = False
    trusted: tuple[Any, ...] = ()
    unsafe_install_failed_policy: bool = False


@dataclass(frozen=True)
class InstallResult:
    receipt: Receipt
    nothing_to_do: bool
    recovered: tuple[str, ...]
    smoke: tuple[Mismatch, ...] = ()
    prediction: dict[str, Any] | None = None
    curl: str | None = None  # a shell command that sends the first golden input: paste it to try
    serve: str | None = None  # --to venv: the shell command that serves the model on the port


# --------------------------------------------------------------------------------------- state
class Installed:
    """``installed.json``: receipts per name and target, current and previous."""

    def __init__(self, state: State) -> None:
        self.path = state.directory / "installed.json"

    def load(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return {"names": {}}
        except (OSError, ValueError) as exc:
            raise EnvironmentFailure(f"the state file {self.path} is unreadable: {exc}") from None

    def get(self, name: str, target: str) -> tuple[Receipt | None, Receipt | None]:
        entry = self.load()["names"].get(name, {}).get("targets", {}).get(target, {})
        cur, prev = entry.get("current"), entry.get("previous")
        return (Receipt.from_json(cur) if cur else None, Receipt.from_json(prev) if prev else None)

    def put(self, receipt: Receipt, previous: Receipt | None) -> None:
        data = self.load()
        entry = data["names"].setdefault(receipt.name, {"highest_version": receipt.version, "targets": {}})
        entry["highest_version"] = _highest(entry.get("highest_version"), receipt.version)
        entry.setdefault("manifests", {})[receipt.manifest_sha256] = receipt.version
        entry["targets"][receipt.target] = {
            "current": receipt.to_json(),
            "previous": previous.to_json() if previous else None,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, data)

    def drop(self, name: str, target: str) -> None:
        data = self.load()
        targets = data["names"].get(name, {}).get("targets", {})
        targets.pop(target, None)
        write_json(self.path, data)

    def all(self) -> list[tuple[str, str, Receipt, Receipt | None]]:
        out = []
        for name, entry in sorted(self.load()["names"].items()):
            for target, t in sorted(entry.get("targets", {}).items()):
                if t.get("current"):
                    prev = Receipt.from_json(t["previous"]) if t.get("previous") else None
                    out.append((name, target, Receipt.from_json(t["current"]), prev))
        return out


def _highest(recorded: object, new: str) -> str:
    """The highest version ever installed, in the one order (SemVer precedence) that rollback
    protection uses; a recorded value that is not SemVer is replaced by the new, valid one."""
    if not isinstance(recorded, str) or not versions.is_valid(recorded):
        return new
    return versions.highest(recorded, new)


class Journal:
    """The in-flight install of one (name, target); its presence means the last run did not finish."""

    def __init__(self, state: State, name: str, target: str) -> None:
        # The file is named from these: only a DNS-label name and a known target may name it.
        if not DNS_LABEL.fullmatch(name) or target not in TARGETS:
            raise InvalidInputError(f"no installation is named {name!r} --to {target!r}")
        self.path = state.directory / "journal" / f"{name}--{target}.json"
        self.data: dict[str, Any] = {}

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> dict[str, Any]:
        self.data = json.loads(self.path.read_text())
        return self.data

    def step(self, step: str, **facts: Any) -> None:
        self.data.setdefault("steps", []).append(step)
        self.data.update(facts)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, self.data)
        if os.environ.get(FAULT_ENV) == step:  # crash-recovery tests kill the process here
            os.kill(os.getpid(), signal.SIGKILL)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------- extraction
def extract(
    bundle: Path,
    verified: VerifiedBundle,
    want: Callable[[str], bool],
    dest: Path,
    blobs: Path,
    created: list[Path] | None = None,
) -> None:
    """Streams the chosen files out of the bundle into ``dest`` (OCI blobs into the shared ``blobs``),
    re-hashing each one against the verified manifest, decompressing within the signed size."""
    entries = {f.path: f for f in verified.manifest.files}
    with verified.handle.stream() as stream:
        reader = TarReader(stream, ROOT)
        while True:
            member = reader.next()
            if member is None:
                break
            entry = entries.get(member.name)
            if entry is None and f"{ROOT}/{member.name}" in CONTROL:
                continue
            if entry is None:
                raise IntegrityError(
                    f"{member.name} appeared in the bundle after it was verified: the media changed"
                )
            if not want(entry.content_path):
                continue
            if "/blobs/sha256/" in entry.content_path:
                target = blobs / entry.content_path.rsplit("/", 1)[1]
                # A blob already in the shared store is reused only if its bytes still hash to
                # its name; anything else there is replaced from this verified bundle.
                if target.name == _file_sha256(target):
                    for _ in reader.chunks(member):
                        pass
                    continue
            else:
                target = dest / entry.content_path
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise _disk_error(target.parent, exc) from None
            _write_member(reader, member, entry, target)
            if created is not None:
                created.append(target)


def _model_file(record: dict[str, Any]) -> str:
    """The model file the signed build record names (checked as a safe path at verify time)."""
    file = (record.get("model") or {}).get("file")
    if not isinstance(file, str):
        raise InvalidInputError("the signed build.json names no model.file: there is nothing to serve")
    return file


def _file_sha256(path: Path) -> str | None:
    """The SHA-256 of a regular file, streamed; None when there is no such regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            return None
        h = hashlib.sha256()
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
        return h.hexdigest()


class _BoundedFile:
    """The decompressor's output: written to the file, hashed, never past the signed size."""

    def __init__(self, out: Any, entry: FileEntry) -> None:
        self.out = out
        self.entry = entry
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.entry.content_size is None or self.size > self.entry.content_size:
            raise IntegrityError(f"{self.entry.path} inflates past its signed size: a decompression bomb")
        self.hash.update(data)
        self.out.write(data)
        return len(data)


def _write_member(reader: TarReader, member: Any, entry: FileEntry, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.part")
    stored = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            if entry.compression:
                sink = _BoundedFile(out, entry)
                # Output in bounded pieces: memory does not grow with what a frame expands to.
                writer = zstandard.ZstdDecompressor(max_window_size=MAX_ZSTD_WINDOW).stream_writer(
                    cast(IO[bytes], sink), write_size=CHUNK, write_return_read=True, closefd=False
                )
                try:
                    for chunk in reader.chunks(member):
                        stored.update(chunk)
                        writer.write(chunk)
                    writer.flush()  # type: ignore[no-untyped-call]
                except zstandard.ZstdError as exc:
                    raise IntegrityError(f"{entry.path} does not decompress: {exc}") from None
            else:
                for chunk in reader.chunks(member):
                    stored.update(chunk)
                    out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if stored.hexdigest() != entry.sha256:
            raise IntegrityError(f"{entry.path} changed on the media after verification")
        if entry.compression and (
            sink.hash.hexdigest() != entry.content_sha256 or sink.size != entry.content_size
        ):
            raise IntegrityError(f"{entry.path} decompresses to content that differs from the manifest")
        if "/blobs/sha256/" in entry.content_path and target.name != (
            sink.hash.hexdigest() if entry.compression else stored.hexdigest()
        ):
            raise IntegrityError(f"{entry.path} is a blob whose content does not hash to its name")
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _disk_error(target, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _contract(content: Path) -> dict[str, Any]:
    """The golden inputs and outputs the installed model is held to; a bundle without them
    cannot be proved to work here."""
    path = content / "model" / "contract.json"
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise InvalidInputError("the bundle has no model/contract.json: nothing to smoke-test with") from None
    except ValueError as exc:
        raise InvalidInputError(f"the bundle's model/contract.json is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInputError("the bundle's model/contract.json is not an object")
    return data


def _disk_error(path: Path, exc: OSError) -> EnvironmentFailure:
    """A write on the far side failed: the disk is full, read-only, or not ours (exit 5)."""
    reason = exc.strerror or str(exc)
    hint = "free space in the state directory (or choose another --state-dir), then install again"
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        hint = "check the permissions of the state directory (or choose another --state-dir)"
    return EnvironmentFailure(f"cannot write {path}: {reason}", hint=hint)


def check_policy_gate(manifest: Manifest, unsafe: bool) -> str | None:
    """The compliance gate of installing: the signed policy evaluation must have passed.

    Returns the UNSAFE note when ``--unsafe-install-failed-policy`` let a failed (or missing)
    evaluation through; raises AnswerIsNo (exit 1) otherwise.
    """
    failed = manifest.policy_failed
    if failed is False:
        return None
    if failed is None:
        what = "carries no signed policy evaluation"
    else:
        blocking = list(manifest.policy.get("blocking") or [])
        what = (
            f"failed its signed policy evaluation ({len(blocking)} open finding(s) at or above "
            f"{manifest.policy.get('fail_on')}"
            + (f": {', '.join(blocking[:3])}" if blocking else "")
            + ")"
            + (
                "; it was signed with --unsafe-sign-failed-policy"
                if manifest.policy.get("unsafe_signed_failed_policy")
                else ""
            )
        )
    if not unsafe:
        raise AnswerIsNo(
            f"{manifest.name} {manifest.version} {what}: refusing to install it",
            hint="ask the publisher for a bundle that passes its policies "
            "(or --unsafe-install-failed-policy, if the site accepts the risk in writing)",
        )
    return (
        f"UNSAFE: installing {manifest.name} {manifest.version}, which {what} "
        "(--unsafe-install-failed-policy)"
    )


# ------------------------------------------------------------------------------------ smoke
def _http(port: int, path: str, body: Any = None, timeout: float = 10) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, None


def log_tail(text: str, lines: int = LOG_LINES) -> str:
    """The last lines of a model server's log on one line: each JSON record as its event and message
    (the timestamp dropped), repeats of one line counted rather than repeated."""
    shown: list[str] = []
    for raw in text.strip().splitlines()[-lines:]:
        line = raw.strip()
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and "event" in record:
            rest = {k: v for k, v in record.items() if k not in ("ts", "event", "message", "traceback")}
            line = str(record["event"])
            if record.get("message"):
                line += f": {record['message']}"
            elif rest:
                line += " " + " ".join(f"{k}={v}" for k, v in rest.items())
        if not line:
            continue
        if shown and shown[-1].split(" (x")[0] == line:
            count = int(shown[-1].rsplit(" (x", 1)[1][:-1]) if " (x" in shown[-1] else 1
            shown[-1] = f"{line} (x{count + 1})"
        else:
            shown.append(line)
    return " | ".join(shown)


def wait_ready(
    port: int,
    alive: Callable[[], bool],
    timeout: float = READY_TIMEOUT,
    logs: Callable[[], str] | None = None,
    what: str = "the model server",
) -> None:
    """Polls /readyz; when the server dies or never gets ready, the error quotes its last log lines
    (they are gone once the failed container is removed)."""

    def with_logs() -> str:
        if logs is None:
            return ""
        try:
            tail = log_tail(logs())
        except (EnvironmentFailure, OSError):
            tail = ""
        return f"; its last log lines: {tail}" if tail else "; it wrote no log lines"

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if _http(port, "/readyz", timeout=2)[0] == 200:
                return
        except (OSError, ValueError):
            pass
        if not alive():
            raise EnvironmentFailure(
                f"{what} stopped before it was ready on port {port}{with_logs()}",
                hint="fix what the log says, then install again",
            )
        time.sleep(0.5)
    raise EnvironmentFailure(f"{what} on port {port} was not ready within {timeout:.0f}s{with_logs()}")


def http_answers(port: int, contract: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The server's outputs for every golden case; and, for a case it refused, why."""
    answers: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    for case in contract.get("cases", []):
        name = str(case["name"])
        try:
            status, body = _http(port, "/v1/predict", {"inputs": case["inputs"]}, timeout=30)
        except (OSError, ValueError) as exc:
            failures[name] = f"no answer from the model server: {exc}"
            continue
        if status == 200 and isinstance(body, dict) and isinstance(body.get("outputs"), dict):
            answers[name] = dict(body["outputs"])
        else:
            error = body.get("error") if isinstance(body, dict) else None
            said = f": {error.get('code')}: {error.get('message')}" if isinstance(error, dict) else ""
            failures[name] = f"the model server answered HTTP {status}{said}"
    return answers, failures


def venv_answers(python: Path, server: Path, model: Path, golden: Path) -> dict[str, dict[str, Any]]:
    proc = subprocess.run(
        [str(python), str(server), "check", "--model", str(model), "--golden", str(golden)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "ORT_DISABLE_TELEMETRY": "1"},
    )
    if proc.returncode != 0:
        raise EnvironmentFailure(f"the model does not run in the virtualenv: {proc.stderr.strip()[-300:]}")
    doc = json.loads(proc.stdout)
    return {str(c["name"]): dict(c["outputs"]) for c in doc.get("cases", [])}


# ----------------------------------------------------------------------------------- service
def _memory_bytes(q: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "K": 10**3, "M": 10**6, "G": 10**9}
    for suffix, mult in units.items():
        if q.endswith(suffix):
            return int(float(q[: -len(suffix)]) * mult)
    return int(q)


def _nano_cpus(q: str) -> int:
    return int(q[:-1]) * 1_000_000 if q.endswith("m") else int(float(q) * 1e9)


class Installer:
    """One far side: its state directory, and the runtimes it has."""

    def __init__(self, state: State, observer: Observer | None = None) -> None:
        self.state = state
        self.obs = observer or NullObserver()
        self.installed = Installed(state)
        self.content_root = state.directory / "content"
        self.blobs = self.content_root / "oci" / "blobs" / "sha256"
        # Every container this state directory starts carries this label, so that status and
        # uninstall find it even when no receipt or journal names it (an install killed mid-step).
        self.state_label = hashlib.sha256(str(state.directory.resolve()).encode()).hexdigest()[:16]

    def _labels(self, name: str, version: str, target: str) -> dict[str, str]:
        return {
            "io.airgap.name": name,
            "io.airgap.version": version,
            "io.airgap.target": target,
            STATE_LABEL: self.state_label,
        }

    def _started_here(self, **labels: str) -> list[tuple[str, Runtime, str]]:
        """(target, runtime, container) of every container this state directory started that still
        exists, with ``labels`` too; runtimes that are not there have none."""
        found = []
        for runtime_target in ("docker", "podman"):
            try:
                rt = self.runtime(runtime_target)
                names = rt.containers({STATE_LABEL: self.state_label, **labels})
            except EnvironmentFailure:
                continue
            for container in names:
                target = rt.labels(container).get("io.airgap.target") or runtime_target
                found.append((target, rt, container))
        return found

    def _check_port(self, port: int) -> None:
        """Refuses a port something already listens on, naming it and the way out (exit 5)."""
        if not port_in_use(port):
            return
        holders = [
            f"{name} {r.version} (--to {target})"
            for name, target, r, _ in self.installed.all()
            if r.port == port and target != "venv"
        ]
        by = f" by {', '.join(holders)}" if holders else " by another program"
        raise EnvironmentFailure(
            f"port {port} on 127.0.0.1 is already in use{by}",
            hint=f"stop what listens there, or install on a free port with --port N "
            f"(see what holds it: ss -ltnp 'sport = :{port}')",
        )

    def _serve_line(self, receipt: Receipt, record: dict[str, Any], content: Path) -> str:
        """--to venv runs no server; this shell command serves the installed model on its port."""
        env = {
            "AIRGAP_MODEL_PATH": str(content / record["model"]["file"]),
            "AIRGAP_GOLDEN_PATH": str(content / "model" / "golden.json"),
            "AIRGAP_MODEL_NAME": receipt.name,
            "AIRGAP_MODEL_VERSION": receipt.version,
            "AIRGAP_HOST": "127.0.0.1",
            "AIRGAP_PORT": str(receipt.port or 8080),
        }
        python = receipt.extra.get("python") or "python3"
        argv = [str(python), str(content / "server" / "airgap_server.py"), "serve"]
        return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()), *map(shlex.quote, argv)])

    # -- runtimes ------------------------------------------------------------------------------
    def runtime(self, target: str) -> Runtime:
        if target in ("docker", "registry"):
            from airgap.adapters.runtimes import DockerRuntime

            return DockerRuntime()
        if target in ("podman", "podman-kube"):
            return PodmanRuntime()
        raise UsageError(f"--to {target} has no container runtime")

    @staticmethod
    def default_target() -> tuple[str, str]:
        """What this host can do, best first; and why it was chosen."""
        try:
            from airgap.adapters.runtimes import DockerRuntime

            DockerRuntime()
            return "docker", "the Docker Engine answers"
        except EnvironmentFailure:
            pass
        if shutil.which("podman"):
            return "podman", "podman is installed (no Docker Engine answered)"
        return "venv", "no container runtime is usable here"

    # -- install -------------------------------------------------------------------------------
    def install(self, bundle: Path, options: InstallOptions) -> InstallResult:
        if options.target not in TARGETS:
            raise UsageError(f"--to must be one of {', '.join(TARGETS)}")
        verify_opts = VerifyOptions(
            trusted=options.trusted,
            allow_downgrade=options.allow_downgrade,
            allow_expired=options.allow_expired,
            installed_versions=self.state.installed_versions(),
            installed_manifests=self.state.installed_manifests(),
            keep=lambda p, s: p in ("build.json", "model/contract.json") or p.startswith("manifests/"),
        )
        # 1. Verify, as `airgap verify`; nothing is loaded before this returns.
        verified = verify_and_audit(
            bundle, self.state, verify_opts, self.obs, action=f"install --to {options.target}"
        )
        m = verified.manifest
        # 1b. The compliance gate: the signed policy evaluation passed (or the site said otherwise).
        try:
            note = check_policy_gate(m, options.unsafe_install_failed_policy)
        except AnswerIsNo as exc:
            self._audit_refusal(bundle, options.target, m, exc)
            raise
        if note:
            warnings.warn(note, UnsafeOptionWarning, stacklevel=2)
        if options.target not in ("venv",) and not m.images:
            raise InvalidInputError(
                f"{m.name} {m.version} carries no image", hint="install it with --to venv"
            )
        try:
            if "build.json" not in verified.kept:
                raise InvalidInputError(
                    f"{m.name} {m.version} has no signed build.json: it is not installable"
                )
            record = check_build_record(verified.kept["build.json"])
        except InvalidInputError as exc:
            self._audit_refusal(bundle, options.target, m, exc)
            raise
        recovered = self._recover(m.name, options.target)
        current, previous = self.installed.get(m.name, options.target)
        if current and current.manifest_sha256 == verified.manifest_sha256 and self._healthy(current):
            return InstallResult(current, True, recovered)
        journal = Journal(self.state, m.name, options.target)
        content = self.content_root / "bundles" / verified.manifest_sha256
        content_preexisting = content.exists()
        created: list[Path] = []
        port = options.port or int(record.get("serving", {}).get("port", 8080))
        if options.target in (*CONTAINER_TARGETS, "podman-kube") and not (
            current and current.port == port and current.target == options.target
        ):
            self._check_port(port)  # before any slow step; the version being replaced frees its own
        receipt = Receipt(
            name=m.name,
            version=m.version,
            target=options.target,
            manifest_sha256=verified.manifest_sha256,
            key_id=verified.key_id,
            bundle=str(Path(bundle).resolve()),
            installed_at=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            content=str(content),
            port=port,
        )
        try:
            journal.step(
                "verified",
                name=m.name,
                target=options.target,
                new=receipt.to_json(),
                old=current.to_json() if current else None,
            )
            # 2. Stream what this target needs out of the bundle, re-hashing every byte.
            self.obs.begin("extract", None)
            extract(bundle, verified, self._wanted(options.target), content, self.blobs, created)
            self.obs.end("extract")
            journal.step("extracted")
            contract = _contract(content)
            handler = {
                "docker": self._container_target,
                "podman": self._container_target,
                "registry": self._registry_target,
                "podman-kube": self._podman_kube_target,
                "kubernetes": self._kubernetes_target,
                "venv": self._venv_target,
            }[options.target]
            answers, failures = handler(receipt, current, record, m, options, journal, content, contract)
            # 3. The model must answer its golden inputs as it did at bundle time, here.
            mismatches = compare_contract(contract, answers, failures)
            if mismatches:
                restored = f"{current.version} restored" if current else "nothing left installed"
                raise AnswerIsNo(
                    f"smoke test failed, the new version removed and {restored}: {summary(mismatches)}",
                    hint="the model does not answer here as it did at bundle time: "
                    "check the bundle's model and golden outputs, and the target's CPU and libc",
                )
            # 4. Commit: the receipt, then clean up what the old version used and the new one does not.
            journal.step("smoke-passed")
            self.installed.put(receipt, current or previous)
        except KeyboardInterrupt:
            raise  # the journal stays: the next run undoes what this one did
        except BaseException as exc:
            # Fail closed, whatever failed (the smoke test, the engine, a full disk, a bug): undo every
            # step (the previous version runs again) and remove what this run extracted.
            self._undo(journal)
            self._remove_extracted(content, content_preexisting, created)
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                raise _disk_error(self.state.directory, exc) from None
            raise
        journal.step("committed")
        if current and current.container and current.container != receipt.container:
            with _quiet():
                self.runtime(options.target).remove(current.container)
        journal.clear()
        self.state.audit(
            {
                "action": "install",
                "target": options.target,
                "result": "installed",
                "name": m.name,
                "version": m.version,
                "manifest_sha256": verified.manifest_sha256,
            }
        )
        prediction = _prediction(contract, answers)
        curl = _curl_line(receipt.port or 8080, contract)
        serve = self._serve_line(receipt, record, content) if options.target == "venv" else None
        return InstallResult(receipt, False, recovered, (), prediction, curl, serve)

    def _audit_refusal(
        self, bundle: Path, target: str, m: Manifest, exc: AnswerIsNo | InvalidInputError
    ) -> None:
        record = {
            "action": f"install --to {target}",
            "bundle": str(bundle),
            "result": "refused",
            "exit_code": exc.exit_code,
            "name": m.name,
            "version": m.version,
            "reason": exc.one_line(),
        }
        try:
            self.state.audit(record)
        except EnvironmentFailure as audit_exc:
            exc.message = f"{exc.message} (and the audit record could not be written: {audit_exc.message})"

    def _remove_extracted(self, content: Path, preexisting: bool, created: list[Path]) -> None:
        if not preexisting:
            shutil.rmtree(content, ignore_errors=True)
        for path in created:
            if path.is_relative_to(self.blobs):
                path.unlink(missing_ok=True)

    def _wanted(self, target: str) -> Callable[[str], bool]:
        def want(path: str) -> bool:
            if path.startswith(("model/", "manifests/")) or path in ("build.json", "server/airgap_server.py"):
                return True
            if target == "venv":
                return path.startswith("host/")
            return path.startswith("image/oci/")

        return want

    def _image(self, m: Manifest) -> OciImage:
        img = m.images[0]  # validated: digests are sha256:<64 hex>, so they are safe file names
        return OciImage(
            self.content_root / "oci", img.manifest_digest, img.config_digest, img.layers, img.name
        )

    def _load(self, rt: Runtime, m: Any, journal: Journal) -> str:
        image = self._image(m)
        config_id = image.config_digest
        preexisting = rt.has_image(config_id)
        if not preexisting:
            self.obs.begin("load image", None)
            image_id = rt.load(
                docker_archive_stream(image, f"airgap/{m.name}:{m.version}"), f"airgap/{m.name}:{m.version}"
            )
            self.obs.end("load image")
            if image_id.removeprefix("sha256:") != config_id.removeprefix("sha256:"):
                raise IntegrityError(f"the runtime loaded image {image_id}, not the signed {config_id}")
        else:
            rt.tag(config_id, f"airgap/{m.name}:{m.version}")
        journal.step("loaded", image_id=config_id, image_preexisting=preexisting)
        return config_id

    def _switch_container(
        self,
        rt: Runtime,
        name: str,
        image: str,
        port: int,
        record: dict[str, Any],
        labels: dict[str, str],
        old: str | None,
        journal: Journal,
    ) -> None:
        """Creates the new container, stops the old one, starts the new one and waits for it:
        the one sequence every container target and rollback share, journalled step by step."""
        limits = (record.get("resources") or {}).get("limits") or {"cpu": "1", "memory": "1Gi"}
        rt.remove(name)  # a leftover of an undone run
        rt.create(
            ContainerSpec(
                name, image, port, _memory_bytes(limits["memory"]), _nano_cpus(limits["cpu"]), labels
            )
        )
        journal.step("created", container=name)
        if old:
            rt.stop(old)
        journal.step("stopped-old")
        self._check_port(port)  # the old version is stopped: whatever holds the port now is not ours
        rt.start(name)
        journal.step("started")
        wait_ready(
            port,
            lambda: rt.state(name) == "running",
            logs=lambda: rt.logs(name),
            what=f"the model server in container {name}",
        )

    def _container_target(
        self,
        receipt: Receipt,
        current: Receipt | None,
        record: dict[str, Any],
        m: Any,
        options: InstallOptions,
        journal: Journal,
        content: Path,
        contract: dict[str, Any],
    ) -> Answers:
        rt = self.runtime(options.target)
        receipt.image_id = self._load(rt, m, journal)
        receipt.container = f"airgap-{m.name}-{m.version}-{verified_suffix(receipt)}"
        port = receipt.port or 8080
        labels = self._labels(m.name, m.version, options.target)
        old = current.container if current else None
        self._switch_container(rt, receipt.container, receipt.image_id, port, record, labels, old, journal)
        return http_answers(port, contract)

    def _registry_target(
        self,
        receipt: Receipt,
        current: Receipt | None,
        record: dict[str, Any],
        m: Any,
        options: InstallOptions,
        journal: Journal,
        content: Path,
        contract: dict[str, Any],
    ) -> Answers:

        if not options.registry:
            raise UsageError("--to registry needs --registry HOST:PORT")
        image = self._image(m)
        ref = self._push(options, m, image)
        journal.step("pushed", registry_ref=ref)
        manifests = self._rewritten_manifests(content, record, ref)
        (content / "deploy").mkdir(exist_ok=True)
        atomic_write_bytes(
            content / "deploy" / f"manifests-{options.registry.replace(':', '_')}.yaml", manifests.encode()
        )
        receipt.extra = {"registry_ref": ref, "manifests": str(content / "deploy")}
        # Prove the registry serves exactly the signed image: run it from there, by digest.
        rt = self.runtime("registry")
        receipt.container = f"airgap-{m.name}-{m.version}-{verified_suffix(receipt)}-registry"
        receipt.image_id = _docker_pull(ref)
        port = receipt.port or 8080
        old = current.container if current else None
        self._switch_container(
            rt,
            receipt.container,
            ref,
            port,
            record,
            self._labels(m.name, m.version, "registry"),
            old,
            journal,
        )
        return http_answers(port, contract)

    @staticmethod
    def _push(options: InstallOptions, m: Any, image: OciImage) -> str:
        """The signed image's blobs and manifest, byte for byte, to the far side's registry."""
        from airgap.adapters.registry import Registry

        assert options.registry
        return Registry(options.registry, options.insecure_registry, options.ca_bundle).push_image(
            image, f"airgap/{m.name}", m.version
        )

    def _rewritten_manifests(self, content: Path, record: dict[str, Any], ref: str) -> str:
        old = record["manifests"]["image"]
        texts = [
            p.read_text().replace(f"image: {old}", f"image: {ref}")
            for p in sorted((content / "manifests").glob("*.yaml"))
        ]
        return "---\n".join(texts)

    def _podman_kube_target(
        self,
        receipt: Receipt,
        current: Receipt | None,
        record: dict[str, Any],
        m: Any,
        options: InstallOptions,
        journal: Journal,
        content: Path,
        contract: dict[str, Any],
    ) -> Answers:
        import yaml

        from airgap.services.manifests import RenderedFile, for_podman

        rt = PodmanRuntime()
        if options.registry:
            ref = self._push(options, m, self._image(m))
            receipt.extra["registry_ref"] = ref
        else:
            self._load(rt, m, journal)
            ref = f"localhost/airgap/{m.name}:{m.version}"
        text = self._rewritten_manifests(content, record, ref)
        files = [RenderedFile("all.yaml", text, tuple(o for o in yaml.safe_load_all(text) if o))]
        play = yaml.safe_load_all(for_podman(files, "host"))
        docs = [d for d in play if d]
        port = receipt.port or 8080
        for d in docs:
            if d.get("kind") == "Deployment":
                d["spec"]["replicas"] = 1  # one node: one pod, or the port is taken twice
                for c in d["spec"]["template"]["spec"]["containers"]:
                    c.setdefault("env", []).extend(
                        [
                            {"name": "AIRGAP_PORT", "value": str(port)},
                            {"name": "AIRGAP_HOST", "value": "127.0.0.1"},
                        ]
                    )
        play_text = yaml.safe_dump_all(docs, sort_keys=False)
        (content / "deploy").mkdir(exist_ok=True)
        atomic_write_bytes(content / "deploy" / "podman-kube.yaml", play_text.encode())
        receipt.extra["kube_yaml"] = str(content / "deploy" / "podman-kube.yaml")
        if current and current.extra.get("kube_yaml") and Path(current.extra["kube_yaml"]).exists():
            rt.kube_down(Path(current.extra["kube_yaml"]).read_text())
        journal.step("stopped-old", kube_yaml=receipt.extra["kube_yaml"])
        rt.kube_play(play_text, "host")
        journal.step("started")
        wait_ready(port, lambda: True)
        return http_answers(port, contract)

    def _kubernetes_target(
        self,
        receipt: Receipt,
        current: Receipt | None,
        record: dict[str, Any],
        m: Any,
        options: InstallOptions,
        journal: Journal,
        content: Path,
        contract: dict[str, Any],
    ) -> Answers:

        if not options.registry:
            raise UsageError("--to kubernetes needs --registry HOST:PORT (the cluster's registry)")
        ref = self._push(options, m, self._image(m))
        text = self._rewritten_manifests(content, record, ref)
        ctx = ["--context", options.kube_context] if options.kube_context else []
        (content / "deploy").mkdir(exist_ok=True)
        path = content / "deploy" / "kubernetes.yaml"
        atomic_write_bytes(path, text.encode())
        receipt.extra = {"registry_ref": ref, "manifests": str(path)}
        _kubectl([*ctx, "apply", "-f", str(path)], "applying the manifests")
        journal.step("started")
        ns = options.namespace or record.get("manifests", {}).get("namespace") or m.name
        _kubectl(
            [*ctx, "-n", ns, "rollout", "status", f"deployment/{m.name}", "--timeout=300s"],
            "waiting for rollout",
        )
        # Smoke through a port-forward: the service stays cluster-internal.
        port = receipt.port or 8080
        pf = subprocess.Popen(
            ["kubectl", *ctx, "-n", ns, "port-forward", f"deployment/{m.name}", f"{port}:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_ready(port, lambda: pf.poll() is None, timeout=60)
            return http_answers(port, contract)
        finally:
            pf.terminate()

    def _venv_target(
        self,
        receipt: Receipt,
        current: Receipt | None,
        record: dict[str, Any],
        m: Any,
        options: InstallOptions,
        journal: Journal,
        content: Path,
        contract: dict[str, Any],
    ) -> Answers:
        lock = content / "host" / "requirements.lock"
        if not lock.exists():
            raise InvalidInputError(
                "this bundle has no host wheelhouse", hint="bundle it with --profile and --host-wheelhouse"
            )
        python = options.python or sys.executable
        venv = self.state.directory / "venvs" / m.name / f"{m.version}-{receipt.manifest_sha256[:12]}"
        if venv.exists():
            shutil.rmtree(venv)
        venv.parent.mkdir(parents=True, exist_ok=True)
        journal.step("created", venv=str(venv))
        _run([python, "-m", "venv", str(venv)], "creating the virtualenv")
        _run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-index",
                "--require-hashes",
                "--no-cache-dir",
                "--find-links",
                str(content / "host" / "wheels"),
                "-r",
                str(lock),
            ],
            "installing the host wheelhouse offline",
        )
        _run([str(venv / "bin" / "python"), "-m", "pip", "check"], "checking the virtualenv")
        receipt.extra = {"venv": str(venv), "python": str(venv / "bin" / "python")}
        journal.step("started")
        model = content / _model_file(record)
        answers = venv_answers(
            venv / "bin" / "python",
            content / "server" / "airgap_server.py",
            model,
            content / "model" / "golden.json",
        )
        return answers, {}

    # -- health, recovery ----------------------------------------------------------------------
    def _healthy(self, r: Receipt) -> bool:
        try:
            if r.target in ("docker", "podman", "registry"):
                rt = self.runtime(r.target)
                return (
                    bool(r.container)
                    and rt.state(r.container or "") == "running"
                    and _http(r.port or 8080, "/healthz", timeout=3)[0] == 200
                )
            if r.target == "podman-kube":
                return _http(r.port or 8080, "/healthz", timeout=3)[0] == 200
            if r.target == "venv":
                return Path(r.extra.get("python", "")).exists()
            if r.target == "kubernetes":
                return True
        except (OSError, EnvironmentFailure, ValueError):
            return False
        return False

    def _recover(self, name: str, target: str) -> tuple[str, ...]:
        journal = Journal(self.state, name, target)
        if not journal.exists():
            return ()
        data = journal.load()
        steps = data.get("steps", [])
        if "committed" in steps:
            # The receipt was written: only the clean-up was cut short.
            old = data.get("old") or {}
            new = data.get("new") or {}
            if old.get("container") and old.get("container") != new.get("container"):
                with _quiet():
                    self.runtime(target).remove(old["container"])
            journal.clear()
            return (f"completed the interrupted install of {name} {new.get('version')} ({target})",)
        self._undo(journal)
        return (
            f"rolled back an interrupted install of {name} {data.get('new', {}).get('version')} ({target})",
        )

    def _undo(self, journal: Journal) -> None:
        """Puts back what the journalled run changed, newest first; safe to run twice."""
        data = journal.data or (journal.load() if journal.exists() else {})
        if not data:
            return
        target = data.get("target", "")
        steps = data.get("steps", [])
        old = data.get("old") or {}
        with _quiet():
            if target in ("docker", "podman", "registry"):
                rt = self.runtime(target)
                if data.get("container"):
                    rt.remove(data["container"])
                if "stopped-old" in steps and old.get("container"):
                    with _quiet():
                        rt.start(old["container"])
                        # Restored means answering again, not just started.
                        wait_ready(
                            old.get("port") or 8080, lambda: rt.state(old["container"]) == "running", 60
                        )
                if data.get("image_id") and data.get("image_preexisting") is False:
                    used = {r.image_id for _, _, r, p in self.installed.all()} | {
                        p.image_id for _, _, _, p in self.installed.all() if p
                    }
                    if data["image_id"] not in used:
                        rt.remove_image(data["image_id"])
            elif target == "podman-kube":
                rt2 = PodmanRuntime()
                if data.get("kube_yaml") and Path(data["kube_yaml"]).exists():
                    rt2.kube_down(Path(data["kube_yaml"]).read_text())
                if old.get("extra", {}).get("kube_yaml") and Path(old["extra"]["kube_yaml"]).exists():
                    rt2.kube_play(Path(old["extra"]["kube_yaml"]).read_text(), "host")
            elif target == "venv" and data.get("venv"):
                shutil.rmtree(data["venv"], ignore_errors=True)
        journal.clear()

    # -- smoke, status, rollback, uninstall ------------------------------------------------------
    def smoke(self, name: str, target: str) -> tuple[Receipt, list[Mismatch]]:
        current, _ = self.installed.get(name, target)
        if current is None:
            raise InvalidInputError(f"{name} is not installed with --to {target}")
        contract = json.loads((Path(current.content) / "model" / "contract.json").read_text())
        if target == "venv":
            record = json.loads((Path(current.content) / "build.json").read_text())
            answers = venv_answers(
                Path(current.extra["python"]),
                Path(current.content) / "server" / "airgap_server.py",
                Path(current.content) / _model_file(record),
                Path(current.content) / "model" / "golden.json",
            )
        else:
            wait_ready(current.port or 8080, lambda: True, timeout=30)
            answers, failures = http_answers(current.port or 8080, contract)
            return current, compare_contract(contract, answers, failures)
        return current, compare_contract(contract, answers)

    def status(self) -> list[dict[str, Any]]:
        """Every installation, and everything else this state directory started: an install that was
        interrupted before its receipt was written, and containers no receipt or journal names (both
        ``healthy: false``; ``airgap uninstall NAME --to TARGET`` removes them)."""
        out = []
        known: set[str] = set()
        receipts = {(name, target) for name, target, _, _ in self.installed.all()}
        for name, target, cur, prev in self.installed.all():
            known |= {c for c in (cur.container, prev.container if prev else None) if c}
            out.append(
                {
                    "name": name,
                    "target": target,
                    "version": cur.version,
                    "healthy": self._healthy(cur),
                    "container": cur.container,
                    "port": cur.port,
                    "venv": (cur.extra or {}).get("venv"),
                    "installed_at": cur.installed_at,
                    "previous": prev.version if prev else None,
                    "manifest_sha256": cur.manifest_sha256,
                    "interrupted": Journal(self.state, name, target).exists(),
                    "state": "installed",
                }
            )
        for path in sorted((self.state.directory / "journal").glob("*.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            new = data.get("new") or {}
            if data.get("container"):
                known.add(str(data["container"]))
            if (data.get("name"), data.get("target")) in receipts or not data.get("name"):
                continue
            out.append(
                self._loose_row(
                    data["name"],
                    data.get("target", ""),
                    new.get("version"),
                    data.get("container"),
                    new.get("port"),
                    "interrupted",
                )
            )
        for target, rt, container in self._started_here():
            if container in known:
                continue
            labels = rt.labels(container)
            out.append(
                self._loose_row(
                    labels.get("io.airgap.name", "?"),
                    target,
                    labels.get("io.airgap.version"),
                    container,
                    None,
                    "orphaned",
                )
            )
        return out

    @staticmethod
    def _loose_row(
        name: str, target: str, version: str | None, container: str | None, port: int | None, state: str
    ) -> dict[str, Any]:
        return {
            "name": name,
            "target": target,
            "version": version or "?",
            "healthy": False,
            "container": container,
            "port": port,
            "installed_at": "-",
            "previous": None,
            "manifest_sha256": None,
            "interrupted": True,
            "state": state,
        }

    def rollback(self, name: str, target: str, options: InstallOptions) -> InstallResult:
        current, previous = self.installed.get(name, target)
        if current is None or previous is None:
            raise UsageError(f"{name} ({target}) has no previous version to roll back to")
        bundle = Path(previous.bundle)
        content = Path(previous.content)
        if not content.exists():
            raise EnvironmentFailure(
                f"the content of {name} {previous.version} is gone from the state directory"
            )
        journal = Journal(self.state, name, target)
        journal.step("verified", name=name, target=target, new=previous.to_json(), old=current.to_json())
        contract = json.loads((content / "model" / "contract.json").read_text())
        try:
            if target in ("docker", "podman"):
                rt = self.runtime(target)
                if not previous.image_id or not rt.has_image(previous.image_id):
                    raise EnvironmentFailure(
                        f"the image of {name} {previous.version} is no longer loaded",
                        hint=f"install its bundle again: airgap install {bundle}",
                    )
                record = json.loads((content / "build.json").read_text())
                container = previous.container or f"airgap-{name}-{previous.version}"
                labels = self._labels(name, previous.version, target)
                port = previous.port or 8080
                self._switch_container(
                    rt, container, previous.image_id, port, record, labels, current.container, journal
                )
                answers, failures = http_answers(previous.port or 8080, contract)
            elif target == "venv":
                answers, failures = self.smoke_previous_venv(previous, content), {}
            else:
                raise UsageError(f"rollback of --to {target}: install the previous bundle again")
        except BaseException:
            self._undo(journal)
            raise
        mismatches = compare_contract(contract, answers, failures)
        if mismatches:
            self._undo(journal)
            raise AnswerIsNo(f"the previous version fails its smoke test: {summary(mismatches)}")
        self.installed.put(previous, current)
        if target in ("docker", "podman") and current.container:
            with _quiet():
                self.runtime(target).remove(current.container)
        journal.clear()
        self.state.audit(
            {
                "action": "rollback",
                "target": target,
                "name": name,
                "from": current.version,
                "to": previous.version,
                "result": "rolled back",
            }
        )
        return InstallResult(previous, False, ())

    def smoke_previous_venv(self, previous: Receipt, content: Path) -> dict[str, dict[str, Any]]:
        record = json.loads((content / "build.json").read_text())
        return venv_answers(
            Path(previous.extra["python"]),
            content / "server" / "airgap_server.py",
            content / _model_file(record),
            content / "model" / "golden.json",
        )

    def uninstall(self, name: str, target: str) -> list[str]:
        """Removes the installation, an interrupted install of it, and any container this state
        directory started for it that nothing else names."""
        current, previous = self.installed.get(name, target)
        journal = Journal(self.state, name, target)
        strays = self._started_here(**{"io.airgap.name": name, "io.airgap.target": target})
        if current is None and not journal.exists() and not strays:
            raise InvalidInputError(f"{name} is not installed with --to {target}")
        removed = []
        if journal.exists():
            version = (journal.load().get("new") or {}).get("version")
            self._undo(journal)
            removed.append(f"the interrupted install of {version}")
        for r in (current, previous):
            if r is None:
                continue
            with _quiet():
                if target in ("docker", "podman", "registry") and r.container:
                    rt = self.runtime(target)
                    rt.remove(r.container)
                    removed.append(f"container {r.container}")
                    if r.image_id:
                        rt.remove_image(r.image_id)
                        removed.append(f"image {r.image_id[:19]}")
                elif (
                    target == "podman-kube"
                    and r.extra.get("kube_yaml")
                    and Path(r.extra["kube_yaml"]).exists()
                ):
                    PodmanRuntime().kube_down(Path(r.extra["kube_yaml"]).read_text())
                    removed.append("podman pod")
                elif target == "venv" and r.extra.get("venv"):
                    shutil.rmtree(r.extra["venv"], ignore_errors=True)
                    removed.append(f"virtualenv {r.extra['venv']}")
        for _, rt, container in self._started_here(**{"io.airgap.name": name, "io.airgap.target": target}):
            with _quiet():
                rt.remove(container)
                removed.append(f"container {container}")
        self.installed.drop(name, target)
        journal.clear()
        self.state.audit({"action": "uninstall", "target": target, "name": name, "result": "removed"})
        return removed


def verified_suffix(r: Receipt) -> str:
    """Bundle digest and state directory in the name: two state directories never share a container."""
    return f"{r.manifest_sha256[:8]}-{hashlib.sha256(r.content.encode()).hexdigest()[:6]}"


def _curl_line(port: int, contract: dict[str, Any]) -> str | None:
    """A curl command, ready to paste into a POSIX shell, that sends the first golden input."""
    cases = contract.get("cases") or []
    if not cases:
        return None
    body = json.dumps({"inputs": cases[0]["inputs"]}, separators=(",", ":"))
    return (
        f"curl -sS -X POST http://127.0.0.1:{port}/v1/predict "
        f"-H 'Content-Type: application/json' -d {shlex.quote(body)}"
    )


def _prediction(contract: dict[str, Any], answers: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The first golden case and what the installed model answered to it in the smoke test."""
    cases = contract.get("cases") or []
    if not cases:
        return None
    return {"inputs": cases[0]["inputs"], "outputs": answers.get(str(cases[0]["name"]))}


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
        raise EnvironmentFailure(f"{what} failed: {lines[-1][:300]}")


def _kubectl(args: list[str], what: str) -> None:
    if shutil.which("kubectl") is None:
        raise EnvironmentFailure("kubectl is not installed", hint="install kubectl, or choose another --to")
    _run(["kubectl", *args], what)


def _docker_pull(ref: str) -> str:
    from airgap.adapters.docker_engine import DockerEngine

    engine = DockerEngine()
    try:
        image = engine.client.images.pull(ref)
    except Exception as exc:  # the SDK's errors are wrapped into one line here
        raise EnvironmentFailure(f"pulling {ref} back from the registry failed: {exc}") from None
    return str(image.id)


class _quiet:
    """Best-effort clean-up: an error while undoing must not hide the error being handled."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        return kind is not None and issubclass(
            kind, (EnvironmentFailure, OSError, subprocess.SubprocessError)
        )
