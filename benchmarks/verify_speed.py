"""`airgap verify` against `openssl dgst -sha256` of the same file, in the same run, start-up included:

    python benchmarks/verify_speed.py --bundle B.airgap.tar --key publisher.pub   # a bundle you have
    python benchmarks/verify_speed.py --size-gb 5 [--dir DIR]                     # a large one, made here

The ratio is openssl's time over airgap's: above 1, airgap verifies the whole bundle (signature,
structure, every member's SHA-256) faster than openssl hashes it once. One stream of SHA-256
runs on one core; airgap hashes a bundle's large members on every core, so on a multi-blob
bundle it can pass the single-stream reference. Goals: >= 0.9 on the example bundle (about
200 MB), >= 1.5 on a large multi-blob bundle on a 2-core machine.

airgap's own bytecode is compiled first, as installing a wheel compiles it: in a checkout
installed editable under PYTHONDONTWRITEBYTECODE (as scripts/dev-install.sh's environment may
be), every run would otherwise compile each of airgap's modules again, some 50 ms of start-up
that no installed airgap pays.

The large bundle is made from benchmarks/transfer.py's staging directory (image-layer-like
blobs of 64 to 512 MB); the staging directory is deleted once packed, so the disk holds the
bundle, then nothing. Runs alternate, each is repeated, and each tool's best time is kept
(neither gets the colder page cache).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PASS = "benchmark passphrase"


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one child process, which must succeed. On a busy
    machine the wall time says how much of a second core was free; the CPU time what it cost."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    took = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv[:4])} failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")
    return took, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def compare(bundle: Path, state: Path, repeat: int) -> dict[str, float]:
    """Best-of-``repeat`` seconds of openssl and of airgap verify on ``bundle``, and their ratio."""
    with open(bundle, "rb") as fh:  # warm the page cache once, for both
        while fh.read(16 << 20):
            pass
    openssl, airgap = [], []
    for _ in range(repeat):
        openssl.append(timed(["openssl", "dgst", "-sha256", str(bundle)]))
        airgap.append(
            timed([sys.executable, "-m", "airgap", "verify", str(bundle), "--state-dir", str(state)])
        )
    wall_o, wall_a = min(w for w, _ in openssl), min(w for w, _ in airgap)
    cpu_o, cpu_a = min(c for _, c in openssl), min(c for _, c in airgap)
    return {
        "bundle_bytes": bundle.stat().st_size,
        "openssl_dgst_sha256_seconds": round(wall_o, 3),
        "airgap_verify_seconds": round(wall_a, 3),
        "ratio": round(wall_o / wall_a, 3),
        "openssl_cpu_seconds": round(cpu_o, 3),
        "airgap_cpu_seconds": round(cpu_a, 3),
        "cpu_ratio": round(cpu_o / cpu_a, 3),
        "load_average": round(os.getloadavg()[0], 1),
    }


def compile_airgap() -> str:
    """Compiles the bytecode of the airgap this interpreter runs (``-m airgap``), as a wheel's
    installation does; returns the package's directory."""
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("airgap")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("airgap is not importable by this interpreter")
    package = next(iter(spec.submodule_search_locations))
    compileall.compile_dir(package, quiet=1)
    return package


def trust(key: Path, state: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "airgap", "keys", "trust", str(key), "--state-dir", str(state)],
        check=True,
        capture_output=True,
    )


def make_bundle(work: Path, size: int) -> Path:
    """A signed bundle of about ``size`` bytes of large blobs, its key trusted in work/state."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from transfer import make_staging

    env = dict(os.environ, AIRGAP_KEY_PASSPHRASE=PASS)
    staging = work / "bench-1.0.0"
    make_staging(staging, size, compressible=0.0)
    subprocess.run(
        [sys.executable, "-m", "airgap", "keys", "generate", "-o", str(work / "k")],
        env=env,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "airgap",
            "pack",
            str(staging),
            "--key",
            str(work / "k.key"),
            "-o",
            str(work / "out"),
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    shutil.rmtree(staging)
    trust(work / "k.pub", work / "state")
    return work / "out" / "bench-1.0.0.airgap.tar"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, help="an existing bundle (with --key)")
    ap.add_argument("--key", type=Path, help="the public key that signed --bundle")
    ap.add_argument("--size-gb", type=float, default=5.0, help="size of the bundle made here")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp dir)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    compile_airgap()
    with tempfile.TemporaryDirectory(prefix="airgap-verify-speed-", dir=args.dir) as tmp:
        work = Path(tmp)
        if args.bundle is not None:
            if args.key is None:
                ap.error("--bundle needs --key")
            trust(args.key, work / "state")
            bundle = args.bundle
        else:
            bundle = make_bundle(work, int(args.size_gb * 1e9))
        figures = {"cores": len(os.sched_getaffinity(0)), **compare(bundle, work / "state", args.repeat)}
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for k, v in figures.items():
            print(f"{k:<30}{v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
