"""Everything that fetches, builds and stores wheels.

- ``WheelStore``: a content-addressed cache (``sha256/<hex>/<filename>``) shared by all bundles, so a
  second bundle with the same lock downloads nothing.
- ``ImageResolver``: runs pip-compile, pip download and sdist builds *inside the base image*, the
  exact interpreter, glibc and markers of the target (pip-tools resolves for the interpreter it runs
  in). Resolution and downloads use the network with the host's CA bundle and proxies; sdist builds
  run with the network off.
- ``ForeignResolver``: resolves for a probed far-side host whose interpreter we do not have, with
  pip driven by that host's marker environment and tag list.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import (
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)

from airgap.adapters.fs import watch_directory
from airgap.core.profile import PythonFacts
from airgap.core.tags import cpython_abis, interpreter_version, marker_environment, platform_tags
from airgap.core.wheelhouse import WheelFile
from airgap.errors import EnvironmentFailure, IntegrityError, InvalidInputError
from airgap.ports import ContainerRunner, Mount, RunSpec

CHUNK = 1 << 20
MAX_METADATA = 4 << 20
DEFAULT_INDEX = "https://pypi.org/simple"
PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy")


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file, read in chunks so a large wheel costs constant memory; what the lock and the
    store compare."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def default_ca_bundle() -> Path | None:
    """The CA bundle a TLS-inspecting proxy or a private index needs, from the usual variables."""
    for var in ("AIRGAP_CA_BUNDLE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        value = os.environ.get(var)
        if value and Path(value).is_file():
            return Path(value)
    for candidate in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"):
        if Path(candidate).is_file():
            return Path(candidate)
    return None


def read_requires_dist(path: Path) -> tuple[str, ...]:
    """``Requires-Dist`` of a wheel, read from its METADATA without extracting anything."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
            if len(names) != 1:
                raise IntegrityError(f"{path.name} has {len(names)} METADATA files; a wheel has exactly one")
            info = zf.getinfo(names[0])
            if info.file_size > MAX_METADATA:
                raise IntegrityError(f"{path.name}: METADATA of {info.file_size} bytes is implausibly large")
            text = zf.read(info).decode("utf-8", "replace")
    except zipfile.BadZipFile:
        raise IntegrityError(f"{path.name} is not a valid wheel (not a zip archive)") from None
    msg = HeaderParser().parsestr(text)
    return tuple(msg.get_all("Requires-Dist") or ())


class WheelStore:
    """Content-addressed files: a file is stored under its own SHA-256 and checked on the way in."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "sha256").mkdir(parents=True, exist_ok=True)

    def find(self, sha: str) -> Path | None:
        """The stored file for a digest, or None. A digest directory holding anything but exactly one file is
        treated as a miss, so a damaged entry is fetched again rather than trusted."""
        d = self.root / "sha256" / sha
        if not d.is_dir():
            return None
        files = [p for p in d.iterdir() if not p.name.startswith(".")]
        return files[0] if len(files) == 1 else None

    def put(self, src: Path, expected: str | None = None) -> tuple[str, Path]:
        """Admits ``src`` under its own digest (refusing it if that is not ``expected``) and returns the
        digest and stored path; a file already stored is not copied again."""
        sha = sha256_file(src)
        if expected is not None and sha != expected:
            raise IntegrityError(f"{src.name} has sha256 {sha}, expected {expected}")
        existing = self.find(sha)
        if existing is not None:
            return sha, existing
        d = self.root / "sha256" / sha
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{src.name}.tmp"
        shutil.copyfile(src, tmp)
        os.replace(tmp, d / src.name)
        return sha, d / src.name

    def fetch_url(self, url: str, filename: str, sha: str, ca: Path | None) -> Path:
        """Downloads one file into the store, verifying its hash before it is admitted."""
        existing = self.find(sha)
        if existing is not None:
            return existing
        d = self.root / "sha256" / sha
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{filename}.part"
        h = hashlib.sha256()
        import ssl

        ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=120) as resp, open(tmp, "wb") as out:
                for block in iter(lambda: resp.read(CHUNK), b""):
                    h.update(block)
                    out.write(block)
        except (urllib.error.URLError, OSError) as exc:
            tmp.unlink(missing_ok=True)
            raise EnvironmentFailure(
                f"downloading {filename} failed: {exc}", hint="check the network, proxy and --ca-bundle"
            ) from None
        if h.hexdigest() != sha:
            tmp.unlink(missing_ok=True)
            raise IntegrityError(f"{filename} from {url} has sha256 {h.hexdigest()}, the index said {sha}")
        os.replace(tmp, d / filename)
        return d / filename


@dataclass(frozen=True)
class ResolverSettings:
    """How to reach the index from a workstation that may sit behind a TLS-inspecting proxy."""

    index_url: str = DEFAULT_INDEX
    ca_bundle: Path | None = None
    source_date_epoch: int = 0

    def pip_args(self, ca_path: str | None) -> list[str]:
        """pip's index and certificate options; ``ca_path`` is the bundle's path where pip will read it (in a
        container, the mount point)."""
        args = ["--index-url", self.index_url, "--disable-pip-version-check"]
        if ca_path:
            args += ["--cert", ca_path]
        return args

    def proxy_env(self) -> dict[str, str]:
        """The proxy variables set on the workstation, passed on to pip so resolving works behind a corporate
        proxy."""
        return {k: os.environ[k] for k in PROXY_VARS if os.environ.get(k)}


def _pip_tools_version() -> str:
    from importlib.metadata import version

    return version("pip-tools")


def _fail_step(what: str, stderr: bytes, hint: str | None = None) -> EnvironmentFailure:
    lines = [ln for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    interesting = [ln for ln in lines if "ERROR" in ln or "error" in ln.lower()] or lines
    return EnvironmentFailure(
        f"{what}: {(interesting[-1] if interesting else 'no output').strip()[:400]}", hint=hint
    )


class ImageResolver:
    """pip-compile, pip download and offline sdist builds, each in a fresh container of the base image."""

    def __init__(self, engine: ContainerRunner, image: str, settings: ResolverSettings, cache: Path) -> None:
        self.engine = engine
        self.image = image
        self.settings = settings
        self.cache = cache
        (cache / "pip").mkdir(parents=True, exist_ok=True)

    def _spec(self, work: Path, script: str, network: str, extra: Sequence[Mount] = ()) -> RunSpec:
        (work / "step.sh").write_text(script)
        mounts = [Mount(work, "/work", read_only=False), *extra]
        env = {
            "HOME": "/tmp",
            "PIP_CONFIG_FILE": "/dev/null",
            "PIP_NO_INPUT": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "SOURCE_DATE_EPOCH": str(self.settings.source_date_epoch),
        }
        if network == "host":
            mounts.append(Mount(self.cache / "pip", "/cache/pip", read_only=False))
            env["PIP_CACHE_DIR"] = "/cache/pip"
            env.update(self.settings.proxy_env())
            if self.settings.ca_bundle is not None:
                mounts.append(Mount(self.settings.ca_bundle.resolve(), "/etc/airgap-ca.pem"))
                env["PIP_CERT"] = env["SSL_CERT_FILE"] = env["REQUESTS_CA_BUNDLE"] = "/etc/airgap-ca.pem"
        else:
            env["PIP_NO_INDEX"] = "1"
            env["PIP_NO_CACHE_DIR"] = "1"
        return RunSpec(
            image=self.image,
            argv=["/bin/sh", "/work/step.sh"],
            network=network,
            mounts=mounts,
            env=env,
            user=f"{os.getuid()}:{os.getgid()}",
            timeout=1800,
        )

    def _pip_flags(self) -> str:
        ca = "/etc/airgap-ca.pem" if self.settings.ca_bundle is not None else None
        return " ".join(f"'{a}'" for a in self.settings.pip_args(ca))

    def compile(self, requirements: Sequence[str]) -> str:
        """pip-compile inside the base image: the lock for exactly that interpreter."""
        with tempfile.TemporaryDirectory(prefix="airgap-resolve-") as tmp:
            work = Path(tmp)
            (work / "requirements.in").write_text("\n".join(requirements) + "\n")
            flags = self._pip_flags()
            script = f"""set -eu
python3 -m venv /tmp/tools
/tmp/tools/bin/python -m pip install --quiet {flags} 'pip-tools=={_pip_tools_version()}'
cd /work
/tmp/tools/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-header \\
  --no-annotate --no-emit-index-url --cache-dir /cache/pip/pip-tools --pip-args "{flags}" \\
  --output-file /work/requirements.lock /work/requirements.in
"""
            res = self.engine.run(self._spec(work, script, "host"))
            if res.exit_code != 0:
                err = res.stderr.decode("utf-8", "replace")
                if "No matching distribution" in err or "Could not find a version" in err:
                    missing = [
                        ln
                        for ln in err.splitlines()
                        if "No matching distribution" in ln or "Could not find" in ln
                    ]
                    raise InvalidInputError(
                        f"a requirement cannot be resolved for {self.image}: {missing[-1].strip()[:300]}",
                        hint="check the name and version range in requirements",
                    )
                raise _fail_step(
                    f"pip-compile in {self.image} failed", res.stderr, "check network, proxy and --ca-bundle"
                )
            return (work / "requirements.lock").read_text()

    def download(
        self, lock_text: str, dest: Path, on_bytes: Callable[[int], None] | None = None
    ) -> list[Path]:
        """pip download of the given pins (one file each, hash-checked) with the image's own pip.

        ``on_bytes`` hears how much has arrived, from a watch on the download directory: pip runs
        in a container and reports nothing else a progress bar could use.
        """
        with tempfile.TemporaryDirectory(prefix="airgap-download-") as tmp:
            work = Path(tmp)
            (work / "pins.lock").write_text(lock_text)
            (work / "dl").mkdir()
            script = f"""set -eu
python3 -m venv /tmp/tools
/tmp/tools/bin/python -m pip download --quiet --no-deps --require-hashes {self._pip_flags()} \\
  --dest /work/dl -r /work/pins.lock
"""
            with watch_directory(work / "dl", on_bytes):
                res = self.engine.run(self._spec(work, script, "host"))
            if res.exit_code != 0:
                raise _fail_step(f"pip download in {self.image} failed", res.stderr)
            out = []
            for f in sorted((work / "dl").iterdir()):
                target = dest / f.name
                shutil.move(str(f), target)
                out.append(target)
            return out

    def build_sdists(self, sdists: Sequence[Path], dest: Path) -> list[Path]:
        """Builds wheels from sdists in the base image with the network off.

        Build requirements are fetched first (network on, wheels only); the build itself cannot
        reach anything, which proves the wheel needs nothing but what we ship.
        """
        built: list[Path] = []
        with tempfile.TemporaryDirectory(prefix="airgap-build-") as tmp:
            work = Path(tmp)
            (work / "src").mkdir()
            (work / "deps").mkdir()
            (work / "out").mkdir()
            requires: set[str] = {"setuptools>=40.8.0", "wheel"}
            for sdist in sdists:
                shutil.copyfile(sdist, work / "src" / sdist.name)
                requires.update(build_requires(sdist))
            # The requirements come from the sdists (foreign text): they reach pip as a file, never
            # through the shell that runs with the network on.
            (work / "build-requires.txt").write_text("".join(f"{r}\n" for r in sorted(requires)))
            fetch = f"""set -eu
python3 -m venv /tmp/tools
/tmp/tools/bin/python -m pip download --quiet --only-binary=:all: {self._pip_flags()} --dest /work/deps \\
  -r /work/build-requires.txt
"""
            res = self.engine.run(self._spec(work, fetch, "host"))
            if res.exit_code != 0:
                raise _fail_step("fetching build requirements for sdists failed", res.stderr)
            build = """set -eu
python3 -m venv /tmp/tools
for s in /work/src/*; do
  /tmp/tools/bin/python -m pip wheel --quiet --use-pep517 --no-deps --no-index --find-links /work/deps \\
    --wheel-dir /work/out "$s"
done
"""
            res = self.engine.run(self._spec(work, build, "none"))
            if res.exit_code != 0:
                names = ", ".join(s.name for s in sdists)
                raise _fail_step(
                    f"building {names} offline in {self.image} failed",
                    res.stderr,
                    "the package needs a compiler or system libraries the base image lacks: choose a base "
                    "image with them, or a version of the package that publishes wheels for the target",
                )
            for f in sorted((work / "out").iterdir()):
                target = dest / f.name
                shutil.move(str(f), target)
                built.append(target)
        return built


def build_requires(sdist: Path) -> list[str]:
    """``build-system.requires`` of an sdist, read from its pyproject.toml without extracting it.

    Each entry must parse as a PEP 508 requirement: the list is foreign text that pip reads with
    the network on, so anything else (an option, a URL with shell syntax) is refused here.
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.9/3.10 workstations
        import tomli as tomllib

    reqs: list[object] = []
    try:
        with tarfile.open(sdist) as tf:
            for member in tf:
                parts = member.name.split("/")
                if (
                    len(parts) == 2
                    and parts[1] == "pyproject.toml"
                    and member.isfile()
                    and member.size < 1 << 20
                ):
                    fh = tf.extractfile(member)
                    if fh is None:
                        break
                    data = tomllib.loads(fh.read().decode("utf-8", "replace"))
                    system = data.get("build-system", {})
                    found = system.get("requires", []) if isinstance(system, dict) else []
                    reqs = found if isinstance(found, list) else []
                    break
    except (tarfile.TarError, tomllib.TOMLDecodeError, OSError):
        return []
    out: list[str] = []
    for r in reqs:
        try:
            out.append(str(Requirement(r if isinstance(r, str) else repr(r))))
        except InvalidRequirement:
            raise InvalidInputError(
                f"{sdist.name} declares a build requirement that is not a PEP 508 requirement: {r!r}",
                hint="use a release of the package that publishes wheels, or report it to its maintainers",
            ) from None
    return out


# The marker environment pip evaluates is the running interpreter's (pypa/pip#11664). Replace it with
# the target's before pip starts, so every marker — top-level and transitive — is the target's.
_SHIM = r"""
import json, sys
env = json.loads(sys.argv[1])
import pip._vendor.packaging.markers as _markers
_markers.default_environment = lambda: dict(env)
from pip._internal.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


@dataclass(frozen=True)
class ResolvedFile:
    """One file pip chose for the target, with the URL and the SHA-256 the index published, so it can be
    downloaded and checked without pip."""

    name: str
    version: str
    url: str
    filename: str
    sha256: str


class ForeignResolver:
    """Resolves for an interpreter we do not have: its tags bound the files, its markers the graph."""

    def __init__(self, settings: ResolverSettings) -> None:
        self.settings = settings

    def platform_args(self, py: PythonFacts) -> list[str]:
        """pip's ``--platform``/``--abi``/``--python-version`` options for the target, so pip picks only files
        that install there."""
        args: list[str] = []
        for plat in platform_tags(py):
            args += ["--platform", plat]
        for abi in [*cpython_abis(py), "abi3", "none"]:
            args += ["--abi", abi]
        args += ["--python-version", interpreter_version(py), "--implementation", "cp"]
        return args

    def resolve(self, requirements: Sequence[str], py: PythonFacts) -> list[ResolvedFile]:
        """Resolves ``requirements`` to wheels for ``py`` with ``pip install --dry-run --report``, its marker
        environment swapped for the target's. Only binary wheels: an sdist would have to be built for a
        machine we do not have. Every file must come with an index SHA-256, or it is refused."""
        if py.implementation != "cpython":
            raise InvalidInputError(f"resolving for {py.implementation} hosts is not supported; use CPython")
        with tempfile.TemporaryDirectory(prefix="airgap-foreign-") as tmp:
            work = Path(tmp)
            (work / "requirements.in").write_text("\n".join(requirements) + "\n")
            ca = str(self.settings.ca_bundle) if self.settings.ca_bundle else None
            argv = [
                sys.executable,
                "-c",
                _SHIM,
                json.dumps(marker_environment(py)),
                "install",
                "--quiet",
                "--isolated",
                "--dry-run",
                "--ignore-installed",
                "--only-binary=:all:",
                "--target",
                str(work / "target"),
                "--report",
                str(work / "report.json"),
                *self.settings.pip_args(ca),
                *self.platform_args(py),
                "-r",
                str(work / "requirements.in"),
            ]
            env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
            env["PIP_CONFIG_FILE"] = os.devnull
            proc = subprocess.run(argv, capture_output=True, env=env, timeout=1800)
            if proc.returncode != 0:
                err = proc.stderr.decode("utf-8", "replace")
                best = platform_tags(py)[0]
                if "No matching distribution" in err or "Could not find a version" in err:
                    line = next(
                        (ln for ln in err.splitlines() if "No matching distribution" in ln),
                        err.strip().splitlines()[-1],
                    )
                    raise InvalidInputError(
                        f"no wheel for the target (Python {py.version_str}, {best}): {line.strip()[:300]}",
                        hint="pick a version that publishes wheels for this platform, or install with a "
                        "container runtime on the far side",
                    )
                raise _fail_step("resolving the host wheelhouse failed", proc.stderr)
            report = json.loads((work / "report.json").read_text())
        out: list[ResolvedFile] = []
        for item in report.get("install", []):
            info = item.get("download_info", {})
            sha = ((info.get("archive_info") or {}).get("hashes") or {}).get("sha256")
            url = info.get("url", "")
            meta = item.get("metadata", {})
            if not sha or not url:
                raise IntegrityError(f"the index gave no sha256 for {meta.get('name')}; refusing to lock it")
            out.append(
                ResolvedFile(
                    name=str(canonicalize_name(meta["name"])),
                    version=str(meta["version"]),
                    url=url,
                    filename=wheel_file_name(url),
                    sha256=sha,
                )
            )
        return sorted(out, key=lambda r: r.name)


def wheel_file_name(url: str) -> str:
    """The file name a wheel is stored under, from the URL an index gave.

    Index URLs percent-encode (``torch-2.3.0%2Bcpu-...whl``), and the name becomes a path in the
    wheel store: it must decode to one plain wheel file name, never ``..`` or a directory.
    """
    path = urllib.parse.urlsplit(url).path
    name = urllib.parse.unquote(path.rsplit("/", 1)[-1])
    try:
        parse_wheel_filename(name)
    except InvalidWheelFilename:
        raise IntegrityError(
            f"the index gave {url[:200]!r}, which does not name a wheel file",
            hint="check the index URL (--index-url) and that it is the index you trust",
        ) from None
    if "/" in name or "\\" in name or name.startswith(".") or "\x00" in name:
        raise IntegrityError(f"the index gave a wheel file name that is not a plain name: {name[:200]!r}")
    return name


def describe_files(paths: Iterable[Path], hashes: Mapping[str, str] | None = None) -> list[WheelFile]:
    """WheelFile values (name, digest, Requires-Dist) for the files of a wheelhouse."""
    out = []
    for p in sorted(paths):
        sha = (hashes or {}).get(p.name) or sha256_file(p)
        requires = read_requires_dist(p) if p.name.endswith(".whl") else ()
        out.append(WheelFile(p.name, sha, requires))
    return out


def project_of(filename: str) -> str:
    """The canonical project name of a wheel or sdist file name."""
    if filename.endswith(".whl"):
        return str(parse_wheel_filename(filename)[0])
    return str(parse_sdist_filename(filename)[0])
