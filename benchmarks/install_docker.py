"""`airgap install --to docker` against a plain `docker load` of the same image, in the same run:

    python benchmarks/install_docker.py BUNDLE STAGING [--key PUB] [--runs 3] [--json]

BUNDLE is a signed bundle, STAGING its staging directory (for the `docker save` archive that
`docker load` gets). Each run starts with the image absent from the engine. The install figure
includes everything airgap does (verify, extract with re-hashing, load, run hardened, readiness,
smoke test); `docker load` only loads. Goal: ratio <= 1.15 on the load itself.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(argv: list[str]) -> float:
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv[:4])} failed: {proc.stderr.strip()[-400:]}")
    return time.monotonic() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("staging", type=Path)
    ap.add_argument("--key", type=Path, required=True, help="the publisher's public key")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    record = json.loads((args.staging / "build.json").read_text())
    config_id = record["image"]["config_digest"]
    archive = args.staging / "image" / "model-image.tar"
    loads, installs, install_loads = [], [], []
    for _ in range(args.runs):
        subprocess.run(["docker", "rmi", "-f", config_id], capture_output=True)
        loads.append(timed(["docker", "load", "-i", str(archive)]))
        subprocess.run(["docker", "rmi", "-f", config_id], capture_output=True)
        with tempfile.TemporaryDirectory(prefix="airgap-bench-state-") as state:
            timed([sys.executable, "-m", "airgap", "keys", "trust", str(args.key), "--state-dir", state])
            started = time.monotonic()
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "airgap",
                    "--json",
                    "install",
                    str(args.bundle),
                    "--to",
                    "docker",
                    "--port",
                    "18999",
                    "--state-dir",
                    state,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            installs.append(time.monotonic() - started)
            if proc.returncode != 0:
                sys.exit(f"install failed: {proc.stderr.strip()}")
            timed(
                [
                    sys.executable,
                    "-m",
                    "airgap",
                    "uninstall",
                    record["name"],
                    "--to",
                    "docker",
                    "--state-dir",
                    state,
                ]
            )
        # The load alone, as airgap does it (verified layout -> docker-archive stream -> engine).
        subprocess.run(["docker", "rmi", "-f", config_id], capture_output=True)
        install_loads.append(_airgap_load(args.bundle, args.key))
    figures = {
        "docker_load_seconds": round(statistics.median(loads), 2),
        "airgap_load_seconds": round(statistics.median(install_loads), 2),
        "airgap_install_seconds": round(statistics.median(installs), 2),
        "load_ratio": round(statistics.median(install_loads) / statistics.median(loads), 3),
        "install_ratio": round(statistics.median(installs) / statistics.median(loads), 3),
    }
    print(
        json.dumps(figures, indent=2) if args.json else "\n".join(f"{k:<26}{v}" for k, v in figures.items())
    )
    return 0


def _airgap_load(bundle: Path, key: Path) -> float:
    """Extract the image from the verified bundle into a content store, then time only the load."""
    from airgap.adapters import keys
    from airgap.adapters.oci import OciImage, docker_archive_stream
    from airgap.adapters.runtimes import DockerRuntime
    from airgap.services.media.extraction import extract
    from airgap.services.media.verify import VerifyOptions, verify_bundle

    public = keys.load_public(key.read_bytes(), str(key))
    verified = verify_bundle(
        bundle, VerifyOptions(trusted=(keys.TrustedKey(keys.key_id(public), key, public),))
    )
    with tempfile.TemporaryDirectory(prefix="airgap-bench-content-") as tmp:
        root = Path(tmp)
        extract(
            bundle,
            verified,
            lambda p: p.startswith("image/oci/"),
            root / "b",
            root / "oci" / "blobs" / "sha256",
        )
        img = verified.manifest.images[0]
        image = OciImage(
            root / "oci",
            img["manifest_digest"],
            img["config_digest"],
            tuple((x["digest"], int(x["size"])) for x in img["layers"]),
            "",
        )
        started = time.monotonic()
        DockerRuntime().load(docker_archive_stream(image, "airgap-bench/load:1"), "airgap-bench/load:1")
        return time.monotonic() - started


if __name__ == "__main__":
    raise SystemExit(main())
